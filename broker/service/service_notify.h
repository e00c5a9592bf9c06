// Tells a service manager (systemd, Type=notify) where the broker is in its
// life, through sd_notify(3): READY=1 once the local socket is bound and
// listening, STOPPING=1 when the broker begins to stop.
//
// Windows (service_notify_win.cc): the service control manager instead, in
// service mode (windows_service.h): Ready reports SERVICE_RUNNING, Stopping
// STOP_PENDING with a wait hint; in console mode the calls do nothing.
//
// Without $NOTIFY_SOCKET (started by hand, by a test, or by a manager that
// does not listen) every call does nothing. A build without libsystemd
// (DSB_HAVE_LIBSYSTEMD undefined: libsystemd-dev missing at build time)
// does nothing either; ServiceNotifyBuiltIn() says which build this is.
//
// Thread rule: any thread. Failures to notify are logged (warn) and
// otherwise ignored: the broker serves whether or not a manager hears it;
// a manager that waits for READY=1 and never gets it fails the start on its
// own timeout, which names the unit.
#ifndef DSB_BROKER_SERVICE_SERVICE_NOTIFY_H_
#define DSB_BROKER_SERVICE_SERVICE_NOTIFY_H_

#include <string_view>

namespace dsb::broker {

// Sends "READY=1", "MAINPID=<getpid()>" and "STATUS=<status>" (one line,
// e.g. "serving 2 target(s) on /run/dsb/dsb.sock") in one message.
// REQUIRES: the local socket is bound and listening (Broker::Create
// returned it), so a unit ordered after this one can connect at once.
void NotifyServiceReady(std::string_view status);

// Sends "STOPPING=1" and "STATUS=<status>". Called once the broker has
// begun to stop (a signal, Broker::Stop); a second call sends again.
void NotifyServiceStopping(std::string_view status);

// True when the broker was built with libsystemd (the calls above can send);
// always true on Windows (the SCM is part of the system).
bool ServiceNotifyBuiltIn();

#ifdef _WIN32
// The SCM's side, for windows_service.cc. `handle` is the service's
// SERVICE_STATUS_HANDLE; until it is attached (console mode) every report
// does nothing. Each report raises the checkpoint of a pending state, so the
// SCM sees progress. Thread-safe (the control handler and the service thread
// both report).
void AttachServiceStatus(void* handle);
void ReportServiceStartPending();
void ReportServiceStopPending();
// INTERROGATE: the last status again.
void ReportServiceStatusAgain();
// SERVICE_STOPPED with `exit_code`: 0 as NO_ERROR, else as a service-specific
// error code. The last report: the SCM may end the process after it.
void ReportServiceStopped(int exit_code);
#endif

}  // namespace dsb::broker

#endif  // DSB_BROKER_SERVICE_SERVICE_NOTIFY_H_
