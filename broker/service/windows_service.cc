// The Windows service (windows_service.h): install and uninstall through the
// SCM, the service mode's dispatcher, control handler and Event Log.
#include "broker/service/windows_service.h"

#include <windows.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "broker/service/control.h"
#include "broker/service/service_notify.h"

namespace dsb::broker {
namespace {

std::wstring Wide(const std::string& s) {
  if (s.empty()) return {};
  const int n = ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring out(static_cast<std::size_t>(n), L'\0');
  ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), out.data(), n);
  return out;
}

std::string Narrow(const std::wstring& s) {
  if (s.empty()) return {};
  const int n = ::WideCharToMultiByte(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0,
                                      nullptr, nullptr);
  std::string out(static_cast<std::size_t>(n), '\0');
  ::WideCharToMultiByte(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), out.data(), n, nullptr,
                        nullptr);
  return out;
}

// "Access is denied. (5)": the system's text for a Windows error code.
std::string ErrorText(DWORD code) {
  wchar_t* text = nullptr;
  const DWORD n = ::FormatMessageW(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, code, 0, reinterpret_cast<wchar_t*>(&text), 0, nullptr);
  std::wstring w = n > 0 && text ? std::wstring(text, n) : L"";
  if (text) ::LocalFree(text);
  while (!w.empty() && (w.back() == L'\n' || w.back() == L'\r' || w.back() == L' ')) w.pop_back();
  std::string s = Narrow(w);
  return (s.empty() ? "Windows error" : s) + " (" + std::to_string(code) + ")";
}

Status Fail(const std::string& what) {
  return Status(Errc::kInternal, what + ": " + ErrorText(::GetLastError()));
}

// A service handle closed on scope exit.
struct ScHandle {
  SC_HANDLE h = nullptr;
  explicit ScHandle(SC_HANDLE handle) : h(handle) {}
  ~ScHandle() {
    if (h) ::CloseServiceHandle(h);
  }
  ScHandle(const ScHandle&) = delete;
  ScHandle& operator=(const ScHandle&) = delete;
  explicit operator bool() const { return h != nullptr; }
};

// An argument for a command line, quoted by the rules of CommandLineToArgvW:
// backslashes before a quote doubled, the quote escaped.
std::wstring Quote(const std::wstring& arg) {
  std::wstring out = L"\"";
  std::size_t slashes = 0;
  for (wchar_t c : arg) {
    if (c == L'\\') {
      ++slashes;
      continue;
    }
    out.append(c == L'"' ? slashes * 2 + 1 : slashes, L'\\');
    slashes = 0;
    out.push_back(c);
  }
  out.append(slashes * 2, L'\\');
  out.push_back(L'"');
  return out;
}

std::wstring EventLogKey(const std::string& name) {
  return L"SYSTEM\\CurrentControlSet\\Services\\EventLog\\Application\\" + Wide(name);
}

Status RegisterEventSource(const std::string& name) {
  HKEY key = nullptr;
  LSTATUS rc = ::RegCreateKeyExW(HKEY_LOCAL_MACHINE, EventLogKey(name).c_str(), 0, nullptr, 0,
                                 KEY_SET_VALUE, nullptr, &key, nullptr);
  if (rc != ERROR_SUCCESS) {
    return Status(Errc::kInternal, "cannot register the Event Log source " + name + ": " +
                                       ErrorText(static_cast<DWORD>(rc)));
  }
  // No message file: the viewer shows each entry's text as its insertion
  // string (with a note that the description of event 0 is missing).
  const DWORD types = EVENTLOG_ERROR_TYPE | EVENTLOG_WARNING_TYPE | EVENTLOG_INFORMATION_TYPE;
  rc = ::RegSetValueExW(key, L"TypesSupported", 0, REG_DWORD, reinterpret_cast<const BYTE*>(&types),
                        sizeof(types));
  ::RegCloseKey(key);
  if (rc != ERROR_SUCCESS) {
    return Status(Errc::kInternal, "cannot register the Event Log source " + name + ": " +
                                       ErrorText(static_cast<DWORD>(rc)));
  }
  return Status::Ok();
}

// ---- The service mode ----------------------------------------------------

// The one service this process runs (SERVICE_WIN32_OWN_PROCESS).
struct Running {
  std::string name;
  std::function<int()> serve;
  int exit_code = 0;
};
Running* g_running = nullptr;

DWORD WINAPI OnServiceControl(DWORD control, DWORD, void*, void*) {
  switch (control) {
    case SERVICE_CONTROL_STOP:
      ReportServiceStopPending();
      RequestStop("service control STOP");
      return NO_ERROR;
    case SERVICE_CONTROL_PRESHUTDOWN:
      ReportServiceStopPending();
      RequestStop("service control PRESHUTDOWN");
      return NO_ERROR;
    case SERVICE_CONTROL_SHUTDOWN:
      ReportServiceStopPending();
      RequestStop("service control SHUTDOWN");
      return NO_ERROR;
    case SERVICE_CONTROL_PARAMCHANGE:
      RequestReload("service control PARAMCHANGE");
      return NO_ERROR;
    case SERVICE_CONTROL_INTERROGATE:
      ReportServiceStatusAgain();
      return NO_ERROR;
    default:
      return ERROR_CALL_NOT_IMPLEMENTED;
  }
}

void WINAPI ServiceMain(DWORD, LPWSTR*) {
  Running& r = *g_running;
  SERVICE_STATUS_HANDLE handle =
      ::RegisterServiceCtrlHandlerExW(Wide(r.name).c_str(), OnServiceControl, nullptr);
  if (!handle) {
    ReportToEventLog(r.name, true, "cannot register the service control handler: " +
                                       ErrorText(::GetLastError()));
    r.exit_code = 1;
    return;
  }
  AttachServiceStatus(handle);
  ReportServiceStartPending();
  r.exit_code = r.serve();
  ReportToEventLog(r.name, r.exit_code != 0,
                   "dsb-broker stopped, exit code " + std::to_string(r.exit_code));
  ReportServiceStopped(r.exit_code);  // the last call: the SCM may end the process after it
}

}  // namespace

Result<std::vector<std::string>> InstallService(const std::string& name,
                                                const std::string& config_path) {
  std::vector<wchar_t> exe(32768);
  const DWORD n = ::GetModuleFileNameW(nullptr, exe.data(), static_cast<DWORD>(exe.size()));
  if (n == 0 || n >= exe.size()) return Fail("cannot read this program's path");
  std::error_code ec;
  const std::filesystem::path config = std::filesystem::absolute(config_path, ec);
  if (ec) {
    return Status(Errc::kConfig, "cannot make the config path " + config_path + " absolute: " +
                                     ec.message());
  }
  const std::wstring command = Quote(std::wstring(exe.data(), n)) + L" --service --service-name " +
                               Quote(Wide(name)) + L" --config " + Quote(config.wstring());

  ScHandle scm(::OpenSCManagerW(nullptr, nullptr, SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE));
  if (!scm) return Fail("cannot open the service control manager (run as an Administrator)");
  const std::wstring display = L"DigiScope session broker (" + Wide(name) + L")";
  ScHandle svc(::CreateServiceW(scm.h, Wide(name).c_str(), display.c_str(),
                                SERVICE_ALL_ACCESS, SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START,
                                SERVICE_ERROR_NORMAL, command.c_str(), nullptr, nullptr, nullptr,
                                nullptr /* LocalSystem */, nullptr));
  if (!svc) return Fail("cannot create the service " + name);

  // Everything after CreateServiceW: a failure deletes the service again.
  auto undo = [&](Status st) -> Result<std::vector<std::string>> {
    ::DeleteService(svc.h);
    return st;
  };
  // The settings below are part of what makes a good service, not of what
  // makes one run: an SCM that does not know one (ERROR_INVALID_LEVEL: Wine 8
  // has no SERVICE_CONFIG_FAILURE_ACTIONS_FLAG) gets a note, not a failure.
  std::vector<std::string> notes;
  auto config2 = [&](DWORD level, void* info, const char* what) -> Status {
    if (::ChangeServiceConfig2W(svc.h, level, info)) return Status::Ok();
    const DWORD err = ::GetLastError();
    if (err == ERROR_INVALID_LEVEL || err == ERROR_CALL_NOT_IMPLEMENTED) {
      notes.push_back(std::string("not set: ") + what + ": " + ErrorText(err));
      return Status::Ok();
    }
    return Fail(std::string("cannot set the ") + what + " of " + name);
  };
  std::wstring text =
      L"Shares the DigiScope server's session limit among the programs of this workstation "
      L"(dsb). Config: " + config.wstring();
  SERVICE_DESCRIPTIONW description{text.data()};
  if (Status st = config2(SERVICE_CONFIG_DESCRIPTION, &description, "description"); !st.ok()) {
    return undo(st);
  }
  SERVICE_PRESHUTDOWN_INFO preshutdown{static_cast<DWORD>(
      std::chrono::duration_cast<std::chrono::milliseconds>(kPreshutdownTimeout).count())};
  if (Status st = config2(SERVICE_CONFIG_PRESHUTDOWN_INFO, &preshutdown, "preshutdown timeout");
      !st.ok()) {
    return undo(st);
  }
  SC_ACTION actions[std::size(kRestartDelays)];
  for (std::size_t i = 0; i < std::size(kRestartDelays); ++i) {
    actions[i].Type = SC_ACTION_RESTART;
    actions[i].Delay = static_cast<DWORD>(
        std::chrono::duration_cast<std::chrono::milliseconds>(kRestartDelays[i]).count());
  }
  SERVICE_FAILURE_ACTIONSW failure{};
  failure.dwResetPeriod = 24 * 60 * 60;  // seconds
  failure.cActions = static_cast<DWORD>(std::size(actions));
  failure.lpsaActions = actions;
  if (Status st = config2(SERVICE_CONFIG_FAILURE_ACTIONS, &failure, "failure actions"); !st.ok()) {
    return undo(st);
  }
  // A non-zero exit code reported with SERVICE_STOPPED is a failure too.
  SERVICE_FAILURE_ACTIONS_FLAG flag{TRUE};
  if (Status st = config2(SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, &flag,
                          "failure actions flag (restart after a non-zero exit code)");
      !st.ok()) {
    return undo(st);
  }
  if (Status st = RegisterEventSource(name); !st.ok()) return undo(st);
  return notes;
}

Status UninstallService(const std::string& name, std::chrono::milliseconds wait) {
  ScHandle scm(::OpenSCManagerW(nullptr, nullptr, SC_MANAGER_CONNECT));
  if (!scm) return Fail("cannot open the service control manager (run as an Administrator)");
  ScHandle svc(::OpenServiceW(scm.h, Wide(name).c_str(),
                              SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE));
  if (!svc) return Fail("cannot open the service " + name);
  SERVICE_STATUS status{};
  bool stopped = true;
  if (::QueryServiceStatus(svc.h, &status) && status.dwCurrentState != SERVICE_STOPPED) {
    stopped = false;
    if (status.dwCurrentState != SERVICE_STOP_PENDING &&
        !::ControlService(svc.h, SERVICE_CONTROL_STOP, &status) &&
        ::GetLastError() != ERROR_SERVICE_NOT_ACTIVE) {
      return Fail("cannot stop the service " + name);
    }
    const auto deadline = std::chrono::steady_clock::now() + wait;
    // The SCM has no wait for a state change but NotifyServiceStatusChange,
    // which needs an alertable thread; a 100 ms poll of the status is enough
    // for a command run by hand.
    while (std::chrono::steady_clock::now() < deadline) {
      if (!::QueryServiceStatus(svc.h, &status)) break;
      if (status.dwCurrentState == SERVICE_STOPPED) {
        stopped = true;
        break;
      }
      ::Sleep(100);
    }
  }
  if (!::DeleteService(svc.h) && ::GetLastError() != ERROR_SERVICE_MARKED_FOR_DELETE) {
    return Fail("cannot delete the service " + name);
  }
  ::RegDeleteKeyW(HKEY_LOCAL_MACHINE, EventLogKey(name).c_str());
  if (!stopped) {
    return Status(Errc::kInternal, "the service " + name + " did not stop within " +
                                       std::to_string(wait.count()) +
                                       " ms; it is marked for deletion and goes when it stops");
  }
  return Status::Ok();
}

int RunAsService(const std::string& name, std::function<int()> serve) {
  static Running running;
  running.name = name;
  running.serve = std::move(serve);
  g_running = &running;
  SetServiceMode(true);
  std::wstring wname = Wide(name);
  SERVICE_TABLE_ENTRYW table[] = {{wname.data(), ServiceMain}, {nullptr, nullptr}};
  // Returns when the service has stopped (ServiceMain returned).
  if (!::StartServiceCtrlDispatcherW(table)) {
    const DWORD err = ::GetLastError();
    std::fprintf(stderr, "dsb-broker: --service: cannot connect to the service control manager: %s%s\n",
                 ErrorText(err).c_str(),
                 err == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT
                     ? " (the SCM starts --service; run the broker without it in a console)"
                     : "");
    return 1;
  }
  return running.exit_code;
}

void ReportToEventLog(const std::string& name, bool error, const std::string& text) {
  HANDLE source = ::RegisterEventSourceW(nullptr, Wide(name).c_str());
  if (!source) return;
  const std::wstring w = Wide(text);
  const wchar_t* strings[] = {w.c_str()};
  ::ReportEventW(source, error ? EVENTLOG_ERROR_TYPE : EVENTLOG_INFORMATION_TYPE, 0, 0, nullptr, 1,
                 0, strings, nullptr);
  ::DeregisterEventSource(source);
}

}  // namespace dsb::broker
