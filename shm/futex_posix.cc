#include "shm/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace dsb::shm {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

void FutexWait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
               std::chrono::nanoseconds timeout) {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout.count() >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
    tsp = &ts;
  }
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected, tsp, nullptr,
          0);
}

void FutexWake(std::atomic<std::uint32_t>* word, int count) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count, nullptr, nullptr,
          0);
}

}  // namespace dsb::shm

namespace dsb::shm {

// A futex keys on the physical page: nothing to register.
struct WaitWordRange::Impl {};

WaitWordRange::WaitWordRange() = default;

Result<std::unique_ptr<WaitWordRange>> WaitWordRange::Make(std::atomic<std::uint32_t>* /*first*/,
                                                           std::size_t /*stride*/,
                                                           std::uint32_t /*count*/,
                                                           std::string /*stem*/,
                                                           const void* /*security*/,
                                                           ObjectMode /*mode*/) {
  return std::unique_ptr<WaitWordRange>(new WaitWordRange());
}

WaitWordRange::~WaitWordRange() = default;

}  // namespace dsb::shm
