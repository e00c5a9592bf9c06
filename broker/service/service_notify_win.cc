// service_notify.h on Windows: the service control manager's status, in
// service mode (windows_service.cc attaches the handle); nothing in console mode.
#include <windows.h>

#include <mutex>
#include <spdlog/spdlog.h>

#include "broker/service/service_notify.h"

namespace dsb::broker {
namespace {

// How long the SCM should wait for the next report of a pending state before
// it counts the service as hung. The start reports once it is bound (well
// under this); the stop takes well under a second but may wait for a cluster
// goodbye (bounded by its own timeouts).
constexpr DWORD kStartWaitHintMs = 30'000;
constexpr DWORD kStopWaitHintMs = 15'000;

struct Scm {
  std::mutex mu;
  SERVICE_STATUS_HANDLE handle = nullptr;  // guarded by mu
  SERVICE_STATUS status{};                 // guarded by mu: the last report
};

Scm& TheScm() {
  static Scm* scm = new Scm;  // the control handler's thread may outlive main's statics
  return *scm;
}

// REQUIRES: mu held.
void Report(Scm& scm, DWORD state, DWORD wait_hint) {
  if (!scm.handle) return;
  SERVICE_STATUS& s = scm.status;
  s.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
  const bool pending = state == SERVICE_START_PENDING || state == SERVICE_STOP_PENDING;
  s.dwCheckPoint = pending && s.dwCurrentState == state ? s.dwCheckPoint + 1 : (pending ? 1 : 0);
  s.dwCurrentState = state;
  s.dwWaitHint = wait_hint;
  // A running service takes stop, preshutdown and paramchange; a pending one
  // none (the SCM refuses controls it would not be able to act on yet).
  s.dwControlsAccepted = state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_PRESHUTDOWN |
                                                        SERVICE_ACCEPT_PARAMCHANGE
                                                  : 0;
  if (!::SetServiceStatus(scm.handle, &s)) {
    spdlog::warn("cannot report the service status {} to the service control manager: error {}",
                 state, ::GetLastError());
  }
}

}  // namespace

void NotifyServiceReady(std::string_view status) {
  Scm& scm = TheScm();
  std::lock_guard lock(scm.mu);
  if (scm.status.dwCurrentState == SERVICE_STOP_PENDING) return;  // a stop came first
  (void)status;  // the SCM has no status text; the log has "broker ... ready"
  Report(scm, SERVICE_RUNNING, 0);
}

void NotifyServiceStopping(std::string_view) { ReportServiceStopPending(); }

bool ServiceNotifyBuiltIn() { return true; }

void AttachServiceStatus(void* handle) {
  Scm& scm = TheScm();
  std::lock_guard lock(scm.mu);
  scm.handle = static_cast<SERVICE_STATUS_HANDLE>(handle);
}

void ReportServiceStartPending() {
  Scm& scm = TheScm();
  std::lock_guard lock(scm.mu);
  Report(scm, SERVICE_START_PENDING, kStartWaitHintMs);
}

void ReportServiceStopPending() {
  Scm& scm = TheScm();
  std::lock_guard lock(scm.mu);
  Report(scm, SERVICE_STOP_PENDING, kStopWaitHintMs);
}

void ReportServiceStatusAgain() {
  Scm& scm = TheScm();
  std::lock_guard lock(scm.mu);
  if (scm.handle) ::SetServiceStatus(scm.handle, &scm.status);
}

void ReportServiceStopped(int exit_code) {
  Scm& scm = TheScm();
  std::lock_guard lock(scm.mu);
  scm.status.dwWin32ExitCode = exit_code == 0 ? NO_ERROR : ERROR_SERVICE_SPECIFIC_ERROR;
  scm.status.dwServiceSpecificExitCode = static_cast<DWORD>(exit_code);
  Report(scm, SERVICE_STOPPED, 0);
}

}  // namespace dsb::broker
