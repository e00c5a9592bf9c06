// children.h on Windows: the same executable is started again per instance with
// "--instance-child I --seed S" appended to the parent's own arguments (there is no fork).
//
// - Reports: the child's stdout is the write end of an anonymous pipe; the parent reads each
//   child's pipe on a thread of its own (anonymous pipes cannot be polled together) into the
//   child's buffer, under one mutex; the main thread splits lines, prints progress, and
//   notices when every pipe has reached EOF (every child has exited or closed its stdout).
// - Handles: only the pipe's write end and a copy of stderr are made inheritable, and only for
//   the CreateProcess of that child (PROC_THREAD_ATTRIBUTE_HANDLE_LIST), so no child holds
//   another child's pipe open.
// - Stop: Ctrl-C / Ctrl-Break reach every process of the console, the children included
//   (instance_os_win.cc); the parent's own handler only says so. Past the grace the parent
//   calls TerminateProcess (the role of SIGKILL).
// - A killed parent takes its instances along: every child is put in a job object created with
//   JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, whose only handle is the parent's (PR_SET_PDEATHSIG's
//   role). If the job cannot be made, the run goes on without it and says so.
#include <fcntl.h>
#include <io.h>
#include <windows.h>
// shellapi after windows.h (it needs its types).
#include <shellapi.h>

#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

#include "common/win_spawn.h"
#include "tools/load/children.h"

namespace dsb::load {

namespace {

using Clock = std::chrono::steady_clock;

// Quotes one argument for CommandLineToArgvW / the CRT's parser (the MSDN rules:
// backslashes are literal unless they precede a quote).
std::wstring Quote(const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos) return arg;
  std::wstring out = L"\"";
  for (std::size_t i = 0;; ++i) {
    std::size_t backslashes = 0;
    while (i < arg.size() && arg[i] == L'\\') {
      ++i;
      ++backslashes;
    }
    if (i == arg.size()) {
      out.append(backslashes * 2, L'\\');
      break;
    }
    if (arg[i] == L'"') {
      out.append(backslashes * 2 + 1, L'\\');
    } else {
      out.append(backslashes, L'\\');
    }
    out.push_back(arg[i]);
  }
  out.push_back(L'"');
  return out;
}

// The parent's command line without any --seed (the children get the parent's seed, which
// may have been drawn), ready for " --seed S --instance-child I" to be appended.
std::wstring ChildCommandLineBase() {
  int argc = 0;
  LPWSTR* argv = ::CommandLineToArgvW(::GetCommandLineW(), &argc);
  std::wstring line;
  if (argv == nullptr) return line;
  for (int i = 0; i < argc; ++i) {
    const std::wstring arg = argv[i];
    if (arg == L"--seed") {
      ++i;  // and its value
      continue;
    }
    if (arg.rfind(L"--seed=", 0) == 0) continue;
    if (!line.empty()) line += L' ';
    line += Quote(arg);
  }
  ::LocalFree(argv);
  return line;
}

std::string ErrorText(DWORD err) { return "error " + std::to_string(err); }

struct Proc {
  HANDLE process = nullptr;
  HANDLE pipe = nullptr;  // read end; the reader thread owns it
  std::thread reader;
  bool eof = false;  // under the mutex
};

BOOL WINAPI OnConsoleControl(DWORD type) {
  if (type == CTRL_C_EVENT || type == CTRL_BREAK_EVENT) {
    std::fprintf(stderr, "dsb-load: stop requested, the instances are stopping\n");
    return TRUE;  // the instances got the same event: wait for their results
  }
  return FALSE;
}

// Starts one child; its stdout is `write_end`. Returns its process handle and id, or nullptr.
HANDLE StartChild(const std::wstring& command_line, HANDLE write_end, DWORD& pid) {
  HANDLE err_copy = nullptr;
  ::DuplicateHandle(::GetCurrentProcess(), ::GetStdHandle(STD_ERROR_HANDLE),
                    ::GetCurrentProcess(), &err_copy, 0, TRUE, DUPLICATE_SAME_ACCESS);
  HANDLE inherit[2] = {write_end, err_copy};
  const DWORD n_inherit = err_copy != nullptr ? 2 : 1;
  SIZE_T size = 0;
  ::InitializeProcThreadAttributeList(nullptr, 1, 0, &size);
  std::unique_ptr<char[]> storage(new char[size]);
  auto* attrs = reinterpret_cast<LPPROC_THREAD_ATTRIBUTE_LIST>(storage.get());
  HANDLE process = nullptr;
  if (::InitializeProcThreadAttributeList(attrs, 1, 0, &size) &&
      ::UpdateProcThreadAttribute(attrs, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, inherit,
                                  n_inherit * sizeof(HANDLE), nullptr, nullptr)) {
    STARTUPINFOEXW si{};
    si.StartupInfo.cb = sizeof(si);
    si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    si.StartupInfo.hStdInput = nullptr;
    si.StartupInfo.hStdOutput = write_end;
    si.StartupInfo.hStdError = err_copy;
    si.lpAttributeList = attrs;
    std::wstring mutable_line = command_line;  // CreateProcessW may write into it
    PROCESS_INFORMATION pi{};
    if (win::StartRetryingWine([&] {
          return ::CreateProcessW(nullptr, mutable_line.data(), nullptr, nullptr, TRUE,
                                  EXTENDED_STARTUPINFO_PRESENT, nullptr, nullptr,
                                  &si.StartupInfo, &pi);
        })) {
      ::CloseHandle(pi.hThread);
      process = pi.hProcess;
      pid = pi.dwProcessId;
    } else {
      std::fprintf(stderr, "dsb-load: CreateProcess failed (%s)\n",
                   ErrorText(::GetLastError()).c_str());
    }
    ::DeleteProcThreadAttributeList(attrs);
  } else {
    std::fprintf(stderr, "dsb-load: cannot set up the child's handles (%s)\n",
                 ErrorText(::GetLastError()).c_str());
  }
  if (err_copy != nullptr) ::CloseHandle(err_copy);
  return process;
}

}  // namespace

int RunInstanceChild(const LoadOptions& o, int index) {
  ::_setmode(1, _O_BINARY);  // report lines end in "\n", not "\r\n"
  return RunInstance(o, index, 1);
}

int RunChildren(const LoadOptions& o, Clock::time_point start, std::vector<Child>& children,
                ErrorCounts& errors) {
  ::SetConsoleCtrlHandler(OnConsoleControl, TRUE);
  const HANDLE job = ::CreateJobObjectW(nullptr, nullptr);
  if (job != nullptr) {
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits{};
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    ::SetInformationJobObject(job, JobObjectExtendedLimitInformation, &limits, sizeof(limits));
  } else {
    std::fprintf(stderr, "dsb-load: no job object (%s): instances outlive a killed dsb-load "
                         "until their --duration ends\n", ErrorText(::GetLastError()).c_str());
  }
  const std::wstring base = ChildCommandLineBase();
  children.assign(static_cast<std::size_t>(o.instances), Child{});
  std::vector<Proc> procs(children.size());
  std::mutex mu;  // guards every Child::buffer and Proc::eof while readers run
  std::condition_variable cv;

  auto kill_all = [&] {
    for (Proc& p : procs) {
      if (p.process != nullptr) ::TerminateProcess(p.process, 1);
    }
  };
  auto finish = [&] {
    for (Proc& p : procs) {
      if (p.reader.joinable()) p.reader.join();
    }
  };

  for (int i = 0; i < o.instances; ++i) {
    SECURITY_ATTRIBUTES sa{sizeof(sa), nullptr, TRUE};
    HANDLE read_end = nullptr, write_end = nullptr;
    if (!::CreatePipe(&read_end, &write_end, &sa, 0) ||
        !::SetHandleInformation(read_end, HANDLE_FLAG_INHERIT, 0)) {
      std::fprintf(stderr, "dsb-load: CreatePipe failed (%s)\n",
                   ErrorText(::GetLastError()).c_str());
      kill_all();
      finish();
      return 1;
    }
    const std::wstring line = base + L" --seed " + std::to_wstring(o.seed) +
                              L" --instance-child " + std::to_wstring(i);
    DWORD pid = 0;
    const HANDLE process = StartChild(line, write_end, pid);
    ::CloseHandle(write_end);  // the child holds the only write end now: EOF = it is gone
    if (process == nullptr) {
      ::CloseHandle(read_end);
      kill_all();
      finish();
      return 1;
    }
    if (job != nullptr) ::AssignProcessToJobObject(job, process);
    const std::size_t k = static_cast<std::size_t>(i);
    children[k].pid = pid;
    procs[k].process = process;
    procs[k].pipe = read_end;
    procs[k].reader = std::thread([&, k] {
      char chunk[8192];
      for (;;) {
        DWORD got = 0;
        if (!::ReadFile(procs[k].pipe, chunk, sizeof(chunk), &got, nullptr) || got == 0) break;
        std::lock_guard lock(mu);
        children[k].buffer.append(chunk, got);
      }
      ::CloseHandle(procs[k].pipe);
      {
        std::lock_guard lock(mu);
        procs[k].eof = true;
      }
      cv.notify_all();
    });
    std::fprintf(stderr, "dsb-load: instance %d pid %lu\n", i, static_cast<unsigned long>(pid));
  }

  WaitClock wait_clock(o, start);
  for (;;) {
    std::unique_lock lock(mu);
    const bool all_eof = cv.wait_for(lock, std::chrono::milliseconds(250), [&] {
      for (const Proc& p : procs) {
        if (!p.eof) return false;
      }
      return true;
    });
    for (Child& c : children) TakeLines(c, errors);
    lock.unlock();
    if (all_eof) break;
    if (wait_clock.Turn(children)) kill_all();
  }
  finish();
  for (std::size_t i = 0; i < children.size(); ++i) {
    // Its pipe reached EOF, so it has exited or is exiting; one that still runs after 10 s
    // (it closed its stdout and hangs) is ended, so the run is bounded.
    if (::WaitForSingleObject(procs[i].process, 10'000) != WAIT_OBJECT_0) {
      ::TerminateProcess(procs[i].process, 1);
    }
    DWORD code = 0;
    if (::WaitForSingleObject(procs[i].process, 5'000) == WAIT_OBJECT_0 &&
        ::GetExitCodeProcess(procs[i].process, &code)) {
      children[i].exited = true;
      children[i].exit_code = static_cast<int>(code);
    }
    ::CloseHandle(procs[i].process);
  }
  if (job != nullptr) ::CloseHandle(job);
  return 0;
}

}  // namespace dsb::load
