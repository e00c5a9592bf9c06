#include "broker/limit_command.h"

// Running a limit_command on POSIX (moved unchanged from limit_command.cc).

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <boost/asio.hpp>
#include <memory>

#include "broker/config/quote.h"

extern char** environ;

namespace dsb::broker {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxKept = 4096;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// One running command: two pipes read to EOF, a deadline, a child to reap.
struct Run : LimitCommandRun, std::enable_shared_from_this<Run> {
  Run(const asio::any_io_executor& ex, std::function<void(Result<std::uint32_t>)> cb)
      : out(ex), err(ex), timer(ex), done(std::move(cb)) {}

  asio::posix::stream_descriptor out;
  asio::posix::stream_descriptor err;
  asio::steady_timer timer;
  std::function<void(Result<std::uint32_t>)> done;
  pid_t pid = -1;
  std::string stdout_text, stderr_text;
  std::array<char, 512> out_buf{}, err_buf{};
  int open_pipes = 2;
  bool timed_out = false;
  bool finished = false;
  bool exited = false;  // the shell was reaped
  int status = -1;
  Clock::time_point exited_at;
  Clock::time_point deadline;

  // Reads `pipe` to EOF into `text` (keeping at most kMaxKept bytes).
  void ReadAll(asio::posix::stream_descriptor& pipe, std::array<char, 512>& buf,
               std::string& text) {
    pipe.async_read_some(asio::buffer(buf), [self = shared_from_this(), &pipe, &buf, &text](
                                                boost::system::error_code ec, std::size_t n) {
      if (ec) {
        self->PipeClosed();
        return;
      }
      if (text.size() < kMaxKept) text.append(buf.data(), std::min(n, kMaxKept - text.size()));
      self->ReadAll(pipe, buf, text);
    });
  }
  void PipeClosed() { --open_pipes; }
  void ArmDeadline() {
    timer.expires_at(deadline);
    timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->finished) return;
      self->timed_out = true;
      self->KillGroup();
    });
  }
  // Its own process group: the shell and whatever it started, nothing else.
  // Only while a member may remain (the shell not reaped yet, or a pipe still
  // held by one of its children), so the group id cannot be someone else's.
  void Kill() override {
    if (finished) return;
    timed_out = true;
    KillGroup();
  }
  void KillGroup() {
    if (!exited || open_pipes > 0) ::kill(-pid, SIGKILL);
    boost::system::error_code ignored;
    out.close(ignored);
    err.close(ignored);
  }
  // Polls the shell's exit every 5 ms without blocking the loop. The answer
  // is the shell's exit status and what it printed: once it has exited, a
  // child it left in the background holding the pipes gets 100 ms, then the
  // group is killed (its output would never end otherwise).
  void Poll() {
    if (finished) return;
    const auto now = Clock::now();
    if (!exited) {
      int st = 0;
      const pid_t r = ::waitpid(pid, &st, WNOHANG);
      if (r == pid || r < 0) {
        exited = true;
        status = r == pid ? st : -1;
        exited_at = now;
      }
    }
    if (exited && open_pipes > 0 && now - exited_at >= std::chrono::milliseconds(100)) {
      KillGroup();
    }
    if (exited && open_pipes == 0) {
      finished = true;
      timer.cancel();
      Finish(status);
      return;
    }
    auto poll = std::make_shared<asio::steady_timer>(timer.get_executor());
    poll->expires_after(std::chrono::milliseconds(5));
    poll->async_wait([self = shared_from_this(), poll](boost::system::error_code) { self->Poll(); });
  }
  std::string StderrLine() const {
    std::string_view e = stderr_text;
    while (!e.empty() && IsSpace(e.front())) e.remove_prefix(1);
    e = e.substr(0, e.find('\n'));
    return e.empty() ? std::string() : "; stderr: " + config::Printable(e, 200);
  }
  void Finish(int status) {
    if (timed_out) {
      done(Status{Errc::kTimeout, "did not finish within limit_command_timeout and was killed" +
                                      StderrLine()});
    } else if (status == -1) {
      done(Status{Errc::kInternal, "could not be waited for"});
    } else if (WIFSIGNALED(status)) {
      done(Status{Errc::kInternal,
                  "was killed by signal " + std::to_string(WTERMSIG(status)) + StderrLine()});
    } else if (WEXITSTATUS(status) != 0) {
      done(Status{Errc::kInternal, "exited with status " + std::to_string(WEXITSTATUS(status)) +
                                       StderrLine()});
    } else {
      done(ParseLimitOutput(stdout_text));
    }
  }
};

}  // namespace

std::shared_ptr<LimitCommandRun> RunLimitCommand(const asio::any_io_executor& executor,
                                                std::string command,
                                                std::chrono::nanoseconds timeout,
                                                std::function<void(Result<std::uint32_t>)> done) {
  auto run = std::make_shared<Run>(executor, std::move(done));
  int out_pipe[2] = {-1, -1};
  int err_pipe[2] = {-1, -1};
  auto fail = [&](const std::string& what) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) {
      if (fd >= 0) ::close(fd);
    }
    auto cb = std::move(run->done);
    asio::post(executor, [cb = std::move(cb), what] { cb(Status{Errc::kInternal, what}); });
  };
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    fail(std::string("cannot make a pipe: ") + std::strerror(errno));
    return nullptr;
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  // Its own process group, so a timeout can kill exactly what it started;
  // default signal dispositions and an empty mask (the broker blocks none,
  // but be explicit).
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    fail(std::string("cannot start /bin/sh: ") + std::strerror(rc));
    return nullptr;
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  run->pid = pid;
  run->out.assign(out_pipe[0]);
  run->err.assign(err_pipe[0]);
  run->deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  run->ArmDeadline();
  run->ReadAll(run->out, run->out_buf, run->stdout_text);
  run->ReadAll(run->err, run->err_buf, run->stderr_text);
  run->Poll();
  return run;
}

}  // namespace dsb::broker
