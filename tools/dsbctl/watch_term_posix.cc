// dsbctl watch's terminal loop on POSIX (watch.h: Run): raw keys, the alternate screen,
// signals through a self-pipe, Ctrl-Z. Moved unchanged out of watch.cc for the Windows port
// (watch_term_win.cc); the model, the rendering and Fetch stay in watch.cc.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string_view>

#include "tools/dsbctl/watch.h"
#include "tools/dsbctl/watch_term.h"

namespace dsb::ctl::watch {

namespace {

int g_signal_pipe = -1;  // write end, for the handler

// What Ctrl-Z must undo and redo (OnStop): set by RawKeys and AltScreen.
volatile sig_atomic_t g_raw_on = 0;
volatile sig_atomic_t g_alt_on = 0;
termios g_saved_termios{};
termios g_raw_termios{};
constexpr char kEnterAlt[] = "\x1b[?1049h\x1b[?25l\x1b[2J";
constexpr char kLeaveAlt[] = "\x1b[0m\x1b[?25h\x1b[?1049l";

void WriteFromHandler(const char* s, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(STDOUT_FILENO, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

extern "C" void OnSignal(int sig) {
  const int saved = errno;
  const unsigned char c = static_cast<unsigned char>(sig);
  if (g_signal_pipe >= 0) {
    [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe, &c, 1);
  }
  errno = saved;
}

// Ctrl-Z, done in the handler (async-signal-safe calls only) so the stop
// happens when the signal does: the terminal goes back to the shell as it
// was, the default action stops us, and after fg (SIGCONT) we take it again.
// Doing it later from the loop would race with a quick fg: a SIGCONT before
// our own stop would leave us stopped for good. The loop blocks SIGTSTP while
// it writes a frame, so this never cuts an escape sequence in two.
extern "C" void OnStop(int) {
  const int saved = errno;
  const bool alt = g_alt_on != 0;
  const bool raw = g_raw_on != 0;
  // SIGTTOU held while the terminal is given back: in a job whose leader
  // stops first (a subshell, a pipeline) the shell may already own the
  // terminal, and the default SIGTTOU of tcsetattr would stop us halfway
  // (termios and screen not restored; after fg we would stop again).
  sigset_t ttou, before;
  sigemptyset(&ttou);
  sigaddset(&ttou, SIGTTOU);
  ::sigprocmask(SIG_BLOCK, &ttou, &before);
  if (alt) WriteFromHandler(kLeaveAlt, sizeof kLeaveAlt - 1);
  if (raw) ::tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_termios);
  ::sigprocmask(SIG_SETMASK, &before, nullptr);
  struct sigaction dfl {}, ours {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGTSTP, &dfl, &ours);
  sigset_t tstp;
  sigemptyset(&tstp);
  sigaddset(&tstp, SIGTSTP);
  ::sigprocmask(SIG_UNBLOCK, &tstp, nullptr);
  ::raise(SIGTSTP);  // stopped here until SIGCONT
  ::sigprocmask(SIG_BLOCK, &tstp, nullptr);
  ::sigaction(SIGTSTP, &ours, nullptr);
  if (raw) ::tcsetattr(STDIN_FILENO, TCSANOW, &g_raw_termios);
  if (alt) WriteFromHandler(kEnterAlt, sizeof kEnterAlt - 1);
  if (g_signal_pipe >= 0) {  // a full redraw
    const unsigned char c = SIGCONT;
    [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe, &c, 1);
  }
  errno = saved;
}

// SIGTSTP held back for its lifetime (a frame being written, the teardown).
class HoldStop {
 public:
  HoldStop() {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTSTP);
    ::sigprocmask(SIG_BLOCK, &s, &old_);
  }
  ~HoldStop() { ::sigprocmask(SIG_SETMASK, &old_, nullptr); }
  HoldStop(const HoldStop&) = delete;
  HoldStop& operator=(const HoldStop&) = delete;

 private:
  sigset_t old_{};
};

// Installs the handlers for its lifetime and restores the previous ones.
class SignalPipe {
 public:
  SignalPipe() {
    if (::pipe(fds_) != 0) {
      fds_[0] = fds_[1] = -1;
      return;
    }
    for (int fd : fds_) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    g_signal_pipe = fds_[1];
    struct sigaction sa {};
    sa.sa_handler = &OnSignal;
    sigemptyset(&sa.sa_mask);
    for (std::size_t i = 0; i < std::size(kSignals); ++i) {
      ::sigaction(kSignals[i], &sa, &old_[i]);
    }
    struct sigaction stop {};
    stop.sa_handler = &OnStop;
    sigemptyset(&stop.sa_mask);
    ::sigaction(SIGTSTP, &stop, &old_tstp_);
    // A closed stdout is a failed write (EPIPE), handled as a quit, not a
    // death by SIGPIPE that would leave the terminal raw.
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    ::sigaction(SIGPIPE, &ign, &old_pipe_);
  }
  ~SignalPipe() {
    for (std::size_t i = 0; i < std::size(kSignals); ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
    ::sigaction(SIGTSTP, &old_tstp_, nullptr);
    g_signal_pipe = -1;
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  SignalPipe(const SignalPipe&) = delete;
  SignalPipe& operator=(const SignalPipe&) = delete;
  int read_fd() const { return fds_[0]; }

 private:
  static constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGCONT};
  int fds_[2] = {-1, -1};
  struct sigaction old_[std::size(kSignals)] {};
  struct sigaction old_pipe_ {};
  struct sigaction old_tstp_ {};
};

// Writes all of `s`; false if stdout is gone (EPIPE, EIO, a closed fd).
bool WriteAll(std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(STDOUT_FILENO, s.data(), s.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    s.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Keys without Enter and without echo, for its lifetime, if stdin is the
// terminal and we are in its foreground (a background job changing the
// terminal would be stopped by SIGTTOU). Ctrl-C keeps sending SIGINT (ISIG).
class RawKeys {
 public:
  RawKeys() {
    if (!::isatty(STDIN_FILENO) || ::tcgetpgrp(STDIN_FILENO) != ::getpgrp()) return;
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    g_saved_termios = saved_;
    g_raw_termios = raw;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    g_raw_on = active_ ? 1 : 0;
  }
  ~RawKeys() {
    g_raw_on = 0;
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  RawKeys(const RawKeys&) = delete;
  RawKeys& operator=(const RawKeys&) = delete;
  bool active() const { return active_; }

 private:
  termios saved_{};
  bool active_ = false;
};

// The alternate screen with the cursor hidden, for its lifetime: what was on
// the terminal before comes back when the view ends.
class AltScreen {
 public:
  explicit AltScreen(bool on) : on_(on) {
    if (!on_) return;
    HoldStop hold;
    WriteAll(kEnterAlt);
    g_alt_on = 1;
  }
  ~AltScreen() {
    if (!on_) return;
    HoldStop hold;
    g_alt_on = 0;
    WriteAll(kLeaveAlt);
  }
  AltScreen(const AltScreen&) = delete;
  AltScreen& operator=(const AltScreen&) = delete;

 private:
  bool on_;
};


// The terminal's size (stdout), or 80x24 if it has none.
Size TerminalSize() {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    return {ws.ws_col, ws.ws_row};
  }
  return {};
}




}  // namespace

int Run(const WatchOptions& options, const Call& call) {
  const bool out_tty = ::isatty(STDOUT_FILENO) != 0;
  const char* term = std::getenv("TERM");
  const bool dumb = term == nullptr || *term == '\0' || std::string_view(term) == "dumb";
  const char* no_color = std::getenv("NO_COLOR");
  const Style style = !out_tty || dumb ? Style::kPlain
                      : no_color != nullptr && *no_color != '\0' ? Style::kMono
                                                                  : Style::kColor;
  // Redraw in place only on a terminal that understands it.
  const bool redraw = style != Style::kPlain && !options.once;
  const auto size = [&]() -> Size {
    if (out_tty) return TerminalSize();
    return {PlainWidth(), 0};
  };

  if (options.once) {
    const Model m = Fetch(call, Model{}, options.interval);
    std::string text;
    for (const std::string& l : Render(m, {}, {size().width, 0, style})) text += l + "\n";
    WriteAll(text);
    return m.connected ? 0 : 1;
  }

  SignalPipe signals;
  RawKeys keys;
  AltScreen screen(redraw);
  using Clock = ChangeTracker::Clock;
  ChangeTracker tracker;
  Model current;
  Size sz = size();
  bool clear = true;
  Clock::time_point next_fetch = Clock::now();
  bool stdin_open = keys.active();
  for (;;) {
    Clock::time_point now = Clock::now();
    bool draw = redraw;  // a redraw ends highlights and shows a resize
    if (now >= next_fetch) {
      current = Fetch(call, current, options.interval);
      now = Clock::now();
      tracker.Observe(current, now);
      next_fetch += options.interval;
      if (next_fetch <= now) next_fetch = now + options.interval;  // a slow broker: no burst
      draw = true;
    }
    if (draw) {
      const std::vector<std::string> lines =
          Render(current, tracker.Highlighted(now), {sz.width, redraw ? sz.height : 0, style});
      const std::string frame = FrameText(lines, redraw, clear);
      clear = false;
      HoldStop hold;  // Ctrl-Z waits until the frame is whole
      if (!WriteAll(frame)) return 0;  // stdout is gone (a closed pipe, a hung-up terminal)
    }

    Clock::time_point wake = next_fetch;
    if (redraw) {
      if (auto e = tracker.NextExpiry(now); e && *e < wake) wake = *e;
    }
    const auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(wake - Clock::now());
    pollfd fds[2] = {{signals.read_fd(), POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
    const nfds_t nfds = stdin_open ? 2 : 1;
    const int n = ::poll(fds, nfds, static_cast<int>(std::max<std::int64_t>(0, wait_ms.count())));
    if (n <= 0) continue;  // the timeout, or EINTR (the handler wrote to the pipe)
    if ((fds[0].revents & POLLIN) != 0) {
      unsigned char sigs[16];
      const ssize_t got = ::read(signals.read_fd(), sigs, sizeof sigs);
      for (ssize_t i = 0; i < got; ++i) {
        switch (sigs[i]) {
          case SIGINT: return 0;  // Ctrl-C: the ordinary way out, like q
          case SIGTERM: return 128 + SIGTERM;
          case SIGHUP: return 128 + SIGHUP;
          case SIGWINCH:
          case SIGCONT:  // after fg (OnStop): the screen may have been used meanwhile
            sz = size();
            clear = true;
            break;
          default: break;
        }
      }
    }
    if (nfds > 1 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      char buf[64];
      const ssize_t got = ::read(STDIN_FILENO, buf, sizeof buf);
      if (got <= 0) {
        if (got == 0 || (errno != EINTR && errno != EAGAIN)) stdin_open = false;
        continue;
      }
      for (ssize_t i = 0; i < got; ++i) {
        // q, or Ctrl-C arriving as a byte (a terminal with ISIG off).
        if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == '\x03') return 0;
      }
    }
  }
}

}  // namespace dsb::ctl::watch
