// Windows stop and reload requests (control.h): console control events
// (SetConsoleCtrlHandler) and the service control handler's requests
// (windows_service.cc), posted to the broker's io_context.
#include <windows.h>

#include <boost/asio/post.hpp>
#include <mutex>
#include <optional>

#include "broker/service/control.h"

namespace dsb::broker {

// What one ControlEvents waits for; shared with the handlers it posts (they
// may be destroyed unrun with the io_context).
struct ControlEvents::Impl {
  explicit Impl(boost::asio::io_context& io) : io(io) {}
  boost::asio::io_context& io;
  // On the io thread only.
  std::function<void(const std::string&)> on_stop;
  std::function<void(const std::string&)> on_reload;
  std::optional<std::string> pending_stop;  // arrived before OnStop
  std::optional<std::string> pending_reload;
  bool cancelled = false;
  bool stop_delivered = false;
};

namespace {

// Process-wide: the console handler and the service handler run on threads
// of their own, and a request may come before the broker exists.
struct Shared {
  std::mutex mu;
  std::shared_ptr<ControlEvents::Impl> current;  // guarded by mu
  std::optional<std::string> held_stop;          // guarded by mu
  std::optional<std::string> held_reload;        // guarded by mu
  bool service = false;                          // guarded by mu
  // Manual-reset, set by NotifyStopped: the broker's clean stop is done.
  HANDLE stopped = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
};

Shared& TheShared() {
  static Shared* s = new Shared;  // never destroyed: handler threads may outlive main
  return *s;
}

// On the io thread.
void DeliverStop(const std::shared_ptr<ControlEvents::Impl>& impl, const std::string& what) {
  if (impl->cancelled || impl->stop_delivered) return;
  if (!impl->on_stop) {
    if (!impl->pending_stop) impl->pending_stop = what;
    return;
  }
  impl->stop_delivered = true;
  auto f = std::move(impl->on_stop);
  impl->on_stop = nullptr;
  f(what);
}

void DeliverReload(const std::shared_ptr<ControlEvents::Impl>& impl, const std::string& what) {
  if (impl->cancelled) return;
  if (!impl->on_reload) {
    impl->pending_reload = what;
    return;
  }
  auto f = std::move(impl->on_reload);
  impl->on_reload = nullptr;
  f(what);
}

// How long a console handler for close, logoff or shutdown waits for the
// clean stop before it returns (and the system ends the process). Windows
// itself ends a process about 5 s after a close event, 20 s after a system
// shutdown's: the bound is theirs, this one only keeps the thread finite.
constexpr DWORD kStopWaitMs = 30'000;

BOOL WINAPI OnConsoleControl(DWORD event) {
  const char* what = nullptr;
  bool process_ends = false;  // the system ends us when this handler returns
  switch (event) {
    case CTRL_C_EVENT: what = "console Ctrl-C"; break;
    case CTRL_BREAK_EVENT: what = "console Ctrl-Break"; break;
    case CTRL_CLOSE_EVENT: what = "console closed"; process_ends = true; break;
    case CTRL_LOGOFF_EVENT: {
      std::lock_guard lock(TheShared().mu);
      // A service keeps running when a user logs off.
      if (TheShared().service) return TRUE;
      what = "user logoff";
      process_ends = true;
      break;
    }
    case CTRL_SHUTDOWN_EVENT: what = "system shutdown"; process_ends = true; break;
    default: return FALSE;
  }
  RequestStop(what);
  if (process_ends) ::WaitForSingleObject(TheShared().stopped, kStopWaitMs);
  return TRUE;
}

}  // namespace

void HoldControlEvents() {
  (void)TheShared();
  ::SetConsoleCtrlHandler(OnConsoleControl, TRUE);
}

void ReleaseHeldControlEvents() {}

void RequestStop(const std::string& what) {
  Shared& s = TheShared();
  std::lock_guard lock(s.mu);
  if (!s.current) {
    if (!s.held_stop) s.held_stop = what;
    return;
  }
  boost::asio::post(s.current->io, [impl = s.current, what] { DeliverStop(impl, what); });
}

void RequestReload(const std::string& what) {
  Shared& s = TheShared();
  std::lock_guard lock(s.mu);
  if (!s.current) {
    s.held_reload = what;
    return;
  }
  boost::asio::post(s.current->io, [impl = s.current, what] { DeliverReload(impl, what); });
}

void NotifyStopped() { ::SetEvent(TheShared().stopped); }

void SetServiceMode(bool service) {
  std::lock_guard lock(TheShared().mu);
  TheShared().service = service;
}

ControlEvents::ControlEvents(boost::asio::io_context& io) {
  auto impl = std::make_shared<Impl>(io);
  Shared& s = TheShared();
  std::lock_guard lock(s.mu);
  impl->pending_stop = std::exchange(s.held_stop, std::nullopt);
  impl->pending_reload = std::exchange(s.held_reload, std::nullopt);
  s.current = impl;
  impl_ = impl;
}

ControlEvents::~ControlEvents() {
  Shared& s = TheShared();
  std::lock_guard lock(s.mu);
  if (s.current == impl_) s.current = nullptr;
}

void ControlEvents::OnStop(std::function<void(const std::string&)> on_stop) {
  Impl& impl = *impl_;
  if (impl.stop_delivered || impl.cancelled) return;
  impl.on_stop = std::move(on_stop);
  if (impl.pending_stop) {
    std::string what = *std::exchange(impl.pending_stop, std::nullopt);
    boost::asio::post(impl.io, [impl = impl_, what] { DeliverStop(impl, what); });
  }
}

void ControlEvents::OnReload(std::function<void(const std::string&)> on_reload) {
  Impl& impl = *impl_;
  if (impl.cancelled) return;
  impl.on_reload = std::move(on_reload);
  if (impl.pending_reload) {
    std::string what = *std::exchange(impl.pending_reload, std::nullopt);
    boost::asio::post(impl.io, [impl = impl_, what] { DeliverReload(impl, what); });
  }
}

void ControlEvents::Cancel() {
  impl_->cancelled = true;
  impl_->on_stop = nullptr;
  impl_->on_reload = nullptr;
}

}  // namespace dsb::broker
