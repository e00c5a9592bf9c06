// dsb-broker as a Windows service (issue 12): install, uninstall, and the
// service mode run by the service control manager (SCM). Windows only.
//
// The service runs `dsb-broker.exe --service --service-name NAME --config
// PATH`. In that mode main() hands the broker's start-serve-stop body to
// RunAsService, which runs it on the SCM's service thread:
//   start    START_PENDING until the local endpoint is bound and listening,
//            then RUNNING (service_notify.h: NotifyServiceReady);
//   STOP, PRESHUTDOWN, SHUTDOWN
//            STOP_PENDING with a wait hint, and the broker's clean stop, the
//            same as SIGTERM's on Linux (control.h RequestStop): segments
//            kept for adoption while clients hold slots;
//   PARAMCHANGE  a reload, SIGHUP's role (control.h RequestReload);
//   INTERROGATE  the current status again;
//   end      STOPPED with the broker's exit code: 0 is NO_ERROR, anything
//            else ERROR_SERVICE_SPECIFIC_ERROR with the code (2: a config
//            error a restart cannot fix, 1: a runtime failure).
// The Event Log gets the start, the stop and fatal errors under a source of
// the service's name (registered by InstallService); the broker's own log
// goes to its log_file as in console mode.
#ifndef DSB_BROKER_SERVICE_WINDOWS_SERVICE_H_
#define DSB_BROKER_SERVICE_WINDOWS_SERVICE_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace dsb::broker {

inline constexpr const char* kDefaultServiceName = "dsb-broker";
// How long the SCM waits for a clean stop before a system shutdown goes on
// (SERVICE_CONFIG_PRESHUTDOWN_INFO); the stop itself takes well under 1 s.
inline constexpr std::chrono::seconds kPreshutdownTimeout{30};
// Failure actions: restarts after these delays; the count resets after a day
// without failure. A config error (exit 2) is a failure too: the SCM has no
// RestartPreventExitStatus, so a bad config is retried at these delays.
inline constexpr std::chrono::seconds kRestartDelays[] = {std::chrono::seconds(5),
                                                          std::chrono::seconds(30),
                                                          std::chrono::seconds(60)};

// Registers the service `name` with the SCM: auto start, own process, the
// command line above with this executable's full path and `config_path`
// made absolute (a service starts in %SystemRoot%\System32), a description,
// the preshutdown timeout, failure actions restarting with kRestartDelays
// (also on a non-zero exit code), and an Event Log source `name` under
// HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application.
// Account: LocalSystem (the broker's segments and pipe admit the configured
// group; see docs/windows.md).
// Returns notes on settings the SCM does not know (ERROR_INVALID_LEVEL: Wine
// 8 has no failure actions flag), which are skipped; empty on Windows.
// Failures (kInternal, the message names the step and the Windows error):
// no right to open the SCM (run as an Administrator), the service exists
// already, the executable's path unreadable; kConfig: the config path cannot
// be made absolute. Nothing is left half-made: a failure after CreateServiceW
// deletes the service again.
Result<std::vector<std::string>> InstallService(const std::string& name,
                                                const std::string& config_path);

// Stops `name` if it runs (STOP, then waits up to `wait` for STOPPED), then
// deletes it and its Event Log source. Failures (kInternal): no such service,
// no right, or it did not stop within `wait` (it is then marked for deletion
// anyway: the SCM deletes it once it stops).
Status UninstallService(const std::string& name,
                        std::chrono::milliseconds wait = std::chrono::seconds(30));

// The service mode: connects to the SCM (StartServiceCtrlDispatcherW) and
// runs `serve` on the service's thread; `serve` returns the broker's exit
// code, reported to the SCM with SERVICE_STOPPED. Returns that code, or 1
// with a message on stderr when the process was not started by the SCM
// (ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: run it without --service).
int RunAsService(const std::string& name, std::function<int()> serve);

// The service's Event Log (the source InstallService registered; nothing if
// it cannot be opened): `error` true for an error entry, else information.
void ReportToEventLog(const std::string& name, bool error, const std::string& text);

}  // namespace dsb::broker

#endif  // DSB_BROKER_SERVICE_WINDOWS_SERVICE_H_
