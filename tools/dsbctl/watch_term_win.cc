// dsbctl watch's loop on Windows (watch.h: Run). Smaller than the POSIX one
// (watch_term_posix.cc): no raw keys, no alternate screen, no Ctrl-Z.
// - --once: one frame, exit 0 if the broker answered, 1 if not (as on POSIX).
// - Otherwise a frame every interval. On a console that takes virtual-terminal sequences
//   (Windows 10: ENABLE_VIRTUAL_TERMINAL_PROCESSING) each frame is redrawn in place with
//   the same escape sequences as on POSIX, in colour unless NO_COLOR is set; into a pipe or
//   a file, plain frames follow one another (a blank line between), as on POSIX.
// - Ctrl-C, Ctrl-Break or the console closing end it with exit 0 (a console control handler
//   sets an event the loop waits on instead of sleeping); `q` is not read (no raw keys).
#include <io.h>
#include <windows.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tools/dsbctl/watch.h"
#include "tools/dsbctl/watch_term.h"

namespace dsb::ctl::watch {

namespace {

HANDLE g_stop = nullptr;  // manual-reset event: set by the console control handler

BOOL WINAPI OnConsoleControl(DWORD type) {
  if (type == CTRL_C_EVENT || type == CTRL_BREAK_EVENT || type == CTRL_CLOSE_EVENT) {
    if (g_stop != nullptr) ::SetEvent(g_stop);
    return TRUE;
  }
  return FALSE;
}

// Writes all of `s` to stdout; false if it is gone.
bool WriteAll(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size()) return false;
  return std::fflush(stdout) == 0;
}

// The console's size, or nullopt-like {0, 0} when stdout is no console.
Size ConsoleSize(HANDLE out) {
  CONSOLE_SCREEN_BUFFER_INFO info{};
  if (!::GetConsoleScreenBufferInfo(out, &info)) return {0, 0};
  return {info.srWindow.Right - info.srWindow.Left + 1, info.srWindow.Bottom - info.srWindow.Top + 1};
}

}  // namespace

int Run(const WatchOptions& options, const Call& call) {
  const HANDLE out = ::GetStdHandle(STD_OUTPUT_HANDLE);
  DWORD mode = 0;
  const bool console = out != INVALID_HANDLE_VALUE && ::GetConsoleMode(out, &mode) != 0;
  // Redraw in place only where the console understands the escape sequences.
  const bool vt = console && ::SetConsoleMode(out, mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING) != 0;
  const char* no_color = std::getenv("NO_COLOR");
  const Style style = !vt ? Style::kPlain
                      : no_color != nullptr && *no_color != '\0' ? Style::kMono
                                                                  : Style::kColor;
  const bool redraw = vt && !options.once;
  const auto size = [&]() -> Size {
    if (console) {
      const Size s = ConsoleSize(out);
      if (s.width > 0 && s.height > 0) return s;
    }
    return {PlainWidth(), 0};
  };
  ::_setmode(::_fileno(stdout), 0x8000);  // _O_BINARY: frames end in "\n" as on POSIX

  if (options.once) {
    const Model m = Fetch(call, Model{}, options.interval);
    std::string text;
    for (const std::string& l : Render(m, {}, {size().width, 0, style})) text += l + "\n";
    WriteAll(text);
    return m.connected ? 0 : 1;
  }

  g_stop = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
  ::SetConsoleCtrlHandler(OnConsoleControl, TRUE);
  if (redraw) WriteAll("\x1b[?1049h\x1b[?25l\x1b[2J");  // the alternate screen, as on POSIX
  using Clock = ChangeTracker::Clock;
  ChangeTracker tracker;
  Model current;
  for (;;) {
    current = Fetch(call, current, options.interval);
    const Clock::time_point now = Clock::now();
    tracker.Observe(current, now);
    const Size sz = size();
    const std::vector<std::string> lines =
        Render(current, tracker.Highlighted(now), {sz.width, redraw ? sz.height : 0, style});
    const std::string frame = FrameText(lines, redraw, /*clear=*/false);
    if (!WriteAll(frame)) break;  // stdout is gone
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(
        std::max(options.interval - (Clock::now() - now), Clock::duration::zero()));
    if (g_stop == nullptr) {
      ::Sleep(static_cast<DWORD>(wait.count()));
    } else if (::WaitForSingleObject(g_stop, static_cast<DWORD>(wait.count())) == WAIT_OBJECT_0) {
      break;  // Ctrl-C: the ordinary way out
    }
  }
  if (redraw) WriteAll("\x1b[0m\x1b[?25h\x1b[?1049l");
  return 0;
}

}  // namespace dsb::ctl::watch
