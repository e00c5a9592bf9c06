// What an accept loop needs so that running out of file descriptors (or
// kernel buffers) can never make it spin, shared by the local socket and the
// cluster port.
//
//  - A spare descriptor (the classic reserve-fd trick): when accept() fails
//    with EMFILE/ENFILE, the spare is closed, the waiting connection is
//    accepted into its place, told "broker full" and closed, and the spare is
//    reopened. Over-limit peers get an answer instead of sitting in the
//    backlog (where a client would wait for its whole connect timeout).
//  - A backoff for errors that no accept can clear (the spare could not be
//    used, ENOBUFS, ENOMEM, ...): 10 ms, doubling to 1 s, back to 10 ms after
//    a successful accept. Never a busy loop.
//  - A rate-limited log: the first failure of a run is logged at once, then at
//    most one line per 10 s with the number of failures since.
//
// Thread rule: one AcceptGuard per accept loop, used on its io_context.
#ifndef DSB_BROKER_ACCEPT_GUARD_H_
#define DSB_BROKER_ACCEPT_GUARD_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <system_error>

namespace dsb::broker {

class AcceptGuard {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kFirstDelay{10};
  static constexpr std::chrono::milliseconds kMaxDelay{1000};
  static constexpr std::chrono::seconds kLogEvery{10};

  // `what` names the listener in log lines ("local socket /run/dsb/dsb.sock").
  // Opens the spare descriptor (/dev/null, O_CLOEXEC); if that fails the guard
  // works without it (and says so in its log lines).
  explicit AcceptGuard(std::string what);
  ~AcceptGuard();
  AcceptGuard(const AcceptGuard&) = delete;
  AcceptGuard& operator=(const AcceptGuard&) = delete;

  // True for the errors of running out of descriptors (EMFILE, ENFILE).
  static bool OutOfDescriptors(const std::error_code& ec);

  // After accept() failed with EMFILE/ENFILE on `listen_fd`: frees the spare,
  // accepts one waiting connection (non-blocking), writes `reply` to it
  // (non-blocking, best effort), closes it and reopens the spare.
  // Returns true if a connection was taken off the backlog this way (the
  // caller may accept again at once); false if not (no spare, nothing waiting,
  // or the spare could not be reopened): the caller must back off.
  bool ShedOne(int listen_fd, const std::string& reply);

  // Records a failed accept at `now` (logs it, rate-limited) and returns how
  // long to wait before the next accept.
  std::chrono::milliseconds Failed(const std::error_code& ec, Clock::time_point now);
  // Records a successful accept: the next failure starts at kFirstDelay.
  void Succeeded() { delay_ = std::chrono::milliseconds(0); }

  // Counts an over-limit connection refused with "broker full" (logged like
  // failures: the first at once, then one line per kLogEvery with the count).
  void Refused(const std::string& why, Clock::time_point now);

  std::uint64_t failures() const { return failures_; }
  std::uint64_t refusals() const { return refusals_; }

 private:
  void OpenSpare();

  std::string what_;
  int spare_ = -1;
  std::chrono::milliseconds delay_{0};
  std::uint64_t failures_ = 0;
  std::uint64_t failures_unlogged_ = 0;
  Clock::time_point failure_logged_{};
  bool failure_logged_once_ = false;
  std::uint64_t refusals_ = 0;
  std::uint64_t refusals_unlogged_ = 0;
  Clock::time_point refusal_logged_{};
  bool refusal_logged_once_ = false;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_ACCEPT_GUARD_H_
