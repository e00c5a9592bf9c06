#include "broker/accept_guard.h"

#ifndef _WIN32
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cerrno>
#include <spdlog/spdlog.h>

namespace dsb::broker {

AcceptGuard::AcceptGuard(std::string what) : what_(std::move(what)) { OpenSpare(); }

// Windows (issue 12): no descriptor limit and no spare; the named pipe's
// accept errors are backed off (Failed) like any other.
#ifdef _WIN32
AcceptGuard::~AcceptGuard() = default;
void AcceptGuard::OpenSpare() {}
bool AcceptGuard::ShedOne(int, const std::string&) { return false; }
#else
AcceptGuard::~AcceptGuard() {
  if (spare_ >= 0) ::close(spare_);
}

void AcceptGuard::OpenSpare() {
  if (spare_ < 0) spare_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}
#endif

bool AcceptGuard::OutOfDescriptors(const std::error_code& ec) {
  return ec == std::errc::too_many_files_open ||
         ec == std::errc::too_many_files_open_in_system;
}

#ifndef _WIN32
bool AcceptGuard::ShedOne(int listen_fd, const std::string& reply) {
  if (spare_ < 0) {
    OpenSpare();  // perhaps a descriptor was freed meanwhile
    return false;
  }
  ::close(spare_);
  spare_ = -1;
  const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) {
    // Best effort: a fresh socket's send buffer takes a short reply whole.
    (void)::send(fd, reply.data(), reply.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    ::close(fd);
  }
  OpenSpare();
  return fd >= 0 && spare_ >= 0;
}
#endif

std::chrono::milliseconds AcceptGuard::Failed(const std::error_code& ec, Clock::time_point now) {
  ++failures_;
  ++failures_unlogged_;
  delay_ = delay_.count() == 0 ? kFirstDelay : std::min(kMaxDelay, delay_ * 2);
  if (!failure_logged_once_ || now - failure_logged_ >= kLogEvery) {
    spdlog::warn("{}: accept failed: {} ({} failure(s) since the last such line; retrying "
                 "after {} ms, backing off to at most {} ms{}); check the broker's file limit "
                 "(ulimit -n, LimitNOFILE=) and broker.max_clients",
                 what_, ec.message(), failures_unlogged_, delay_.count(), kMaxDelay.count(),
                 spare_ < 0 ? "; no spare descriptor to answer over-limit peers" : "");
    failures_unlogged_ = 0;
    failure_logged_ = now;
    failure_logged_once_ = true;
  }
  return delay_;
}

void AcceptGuard::Refused(const std::string& why, Clock::time_point now) {
  ++refusals_;
  ++refusals_unlogged_;
  if (!refusal_logged_once_ || now - refusal_logged_ >= kLogEvery) {
    spdlog::warn("{}: {} ({} connection(s) refused or evicted as 'broker full' since the last "
                 "such line; at most one line per {} s)",
                 what_, why, refusals_unlogged_, kLogEvery.count());
    refusals_unlogged_ = 0;
    refusal_logged_ = now;
    refusal_logged_once_ = true;
  }
}

}  // namespace dsb::broker
