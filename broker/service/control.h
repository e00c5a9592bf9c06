// How a running broker is asked to stop or to reload, per platform (issue 12).
//
//   POSIX    stop: SIGTERM, SIGINT                 reload: SIGHUP
//            (asio::signal_set on the broker's io_context; control_posix.cc)
//   Windows  stop: Ctrl-C, Ctrl-Break, the console closed, the user logging
//                  off (console mode only: a service outlives its logons),
//                  the system shutting down (SetConsoleCtrlHandler); the
//                  service control manager's STOP, PRESHUTDOWN, SHUTDOWN
//            reload: the service control PARAMCHANGE
//            (control_win.cc; the service handler in windows_service.cc
//            calls RequestStop / RequestReload)
//
// Every stop takes the same path (Broker::Impl::Shutdown): the clean stop of
// SIGTERM, segments kept for adoption while clients hold slots.
//
// Requests that arrive before a ControlEvents exists (the broker is still
// starting) are held, not lost and not given their default action (which
// would end the process): HoldControlEvents(), called first in main(),
// arranges that; a held stop is delivered to the first ControlEvents that
// waits for one. ReleaseHeldControlEvents() lets the default actions back for
// what no ControlEvents waits for (POSIX: unblocks the signals).
//
// Thread rule: ControlEvents' methods on its io_context's thread; the free
// functions from any thread.
#ifndef DSB_BROKER_SERVICE_CONTROL_H_
#define DSB_BROKER_SERVICE_CONTROL_H_

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>

namespace dsb::broker {

// Call first in main(), before any thread is started: holds stop and reload
// requests until a ControlEvents waits for them (see above).
void HoldControlEvents();

// Once the broker's ControlEvents exists (Broker::Create returned): POSIX
// unblocks the held signals, which are then delivered to its signal_sets;
// Windows needs nothing (held requests wait in the process for it).
void ReleaseHeldControlEvents();

// Windows: the service control handler (windows_service.cc) asks for a stop
// or a reload; `what` names the request in the log ("service control STOP").
// Thread-safe; held until a ControlEvents waits (see above). POSIX: unused.
void RequestStop(const std::string& what);
void RequestReload(const std::string& what);

// Windows: during a stop asked by closing the console, logging off or a
// system shutdown, the process ends when the console handler returns; the
// handler waits for NotifyStopped() (called when the broker has finished its
// clean stop) for a bounded time. POSIX: does nothing.
void NotifyStopped();

// Windows: in service mode the console's logoff event is not a stop (a
// service keeps running when a user logs off). POSIX: does nothing.
void SetServiceMode(bool service);

class ControlEvents {
 public:
  // Starts listening on `io` (POSIX: the signal_sets exist from here on).
  explicit ControlEvents(boost::asio::io_context& io);
  ~ControlEvents();
  ControlEvents(const ControlEvents&) = delete;
  ControlEvents& operator=(const ControlEvents&) = delete;

  // Calls `on_stop(what)` on the io_context at the next stop request, once;
  // `what` names it for the log ("signal 15", "console Ctrl-C", "service
  // control STOP"). A stop held from before is delivered at once (posted).
  void OnStop(std::function<void(const std::string& what)> on_stop);
  // Calls `on_reload(what)` on the io_context at the next reload request,
  // once (call again to wait for the next one); `what`: "SIGHUP", "service
  // control PARAMCHANGE".
  void OnReload(std::function<void(const std::string& what)> on_reload);
  // Stops waiting: the pending callbacks are never called.
  void Cancel();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;  // shared with the handlers posted to the io_context (Windows)
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_SERVICE_CONTROL_H_
