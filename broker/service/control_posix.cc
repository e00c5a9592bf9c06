// POSIX stop and reload requests (control.h): SIGTERM and SIGINT stop, SIGHUP
// reloads, through asio::signal_sets on the broker's io_context.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <boost/asio/signal_set.hpp>

#include "broker/service/control.h"

namespace dsb::broker {
namespace {

sigset_t HeldSignals() {
  sigset_t held;
  sigemptyset(&held);
  for (int sig : {SIGHUP, SIGTERM, SIGINT}) sigaddset(&held, sig);
  return held;
}

}  // namespace

// SIGHUP, SIGTERM and SIGINT are held back until the broker's signal_sets
// exist (Broker::Create): a logrotate HUP in the first milliseconds after
// exec would otherwise end the broker by the default action. Held, not lost:
// delivered to the signal_sets once unblocked (a SIGTERM during the start
// then stops the broker cleanly). Child processes (limit_command) are spawned
// with an empty mask (limit_command.cc).
void HoldControlEvents() {
  const sigset_t held = HeldSignals();
  pthread_sigmask(SIG_BLOCK, &held, nullptr);
}

void ReleaseHeldControlEvents() {
  const sigset_t held = HeldSignals();
  pthread_sigmask(SIG_UNBLOCK, &held, nullptr);
}

// The signals themselves: what a stop or reload request is on POSIX.
void RequestStop(const std::string&) { ::kill(::getpid(), SIGTERM); }
void RequestReload(const std::string&) { ::kill(::getpid(), SIGHUP); }
void NotifyStopped() {}
void SetServiceMode(bool) {}

struct ControlEvents::Impl {
  explicit Impl(boost::asio::io_context& io) : stop(io, SIGTERM, SIGINT), reload(io, SIGHUP) {}
  boost::asio::signal_set stop;
  boost::asio::signal_set reload;
};

ControlEvents::ControlEvents(boost::asio::io_context& io) : impl_(std::make_shared<Impl>(io)) {}
ControlEvents::~ControlEvents() = default;

void ControlEvents::OnStop(std::function<void(const std::string&)> on_stop) {
  impl_->stop.async_wait([f = std::move(on_stop)](boost::system::error_code ec, int sig) {
    if (!ec) f("signal " + std::to_string(sig));
  });
}

void ControlEvents::OnReload(std::function<void(const std::string&)> on_reload) {
  impl_->reload.async_wait([f = std::move(on_reload)](boost::system::error_code ec, int) {
    if (!ec) f("SIGHUP");
  });
}

void ControlEvents::Cancel() {
  boost::system::error_code ec;
  impl_->stop.cancel(ec);
  impl_->reload.cancel(ec);
}

}  // namespace dsb::broker
