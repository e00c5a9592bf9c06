// QueueLock on POSIX: the robust process-shared pthread mutex in the segment
// header (moved from slot_table.cc unchanged in behaviour; see queue_lock.h).
#include "shm/queue_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace dsb::shm {

namespace {

// The bounded queue lock waits on CLOCK_MONOTONIC (pthread_mutex_clocklock),
// so a wall-clock step cannot stretch it. GCC 12's ThreadSanitizer does not
// intercept clocklock (it then reports every unlock as unpaired): TSan
// builds use pthread_mutex_timedlock on the wall clock instead.
#if defined(__SANITIZE_THREAD__)
#define DSB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DSB_TSAN 1
#endif
#endif
#ifndef DSB_TSAN
#define DSB_TSAN 0
#endif
constexpr clockid_t kLockClock = DSB_TSAN ? CLOCK_REALTIME : CLOCK_MONOTONIC;

void InitQueueMutex(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
}

// The state letter of thread `tid` ('R', 'S', 'T' stopped, ...), or 0 if no
// such thread exists. /proc/<tid> resolves for any thread, not only leaders.
char ThreadState(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(tid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return '?';
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');
  return p != nullptr && p[1] == ' ' && p[2] != 0 ? p[2] : '?';
}

std::string Hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Result<std::unique_ptr<QueueLock>> QueueLock::Make(QueueLockStorage* storage,
                                                   const std::string& /*object_name*/,
                                                   const void* /*security*/, ObjectMode mode) {
  const bool create = mode == ObjectMode::kCreate;
  auto lock = std::unique_ptr<QueueLock>(new QueueLock());
  lock->storage_ = storage;
  if (create) InitQueueMutex(storage);
  return lock;
}

QueueLock::~QueueLock() = default;

QueueLock::Outcome QueueLock::Lock(std::chrono::nanoseconds bound) noexcept {
  // A try first: the common, uncontended case reads no clock.
  int rc = pthread_mutex_trylock(storage_);
  if (rc == EBUSY && bound.count() > 0) {
    timespec until{};
    ::clock_gettime(kLockClock, &until);
    const std::int64_t ns = std::int64_t{until.tv_nsec} + bound.count();
    until.tv_sec += static_cast<time_t>(ns / 1000000000);
    until.tv_nsec = static_cast<long>(ns % 1000000000);
#if DSB_TSAN
    rc = pthread_mutex_timedlock(storage_, &until);
#else
    rc = pthread_mutex_clocklock(storage_, CLOCK_MONOTONIC, &until);
#endif
  }
  if (rc == 0) return Outcome::kLocked;
  if (rc == EOWNERDEAD) return Outcome::kOwnerDied;
  if (rc == EBUSY || rc == ETIMEDOUT) return Outcome::kBusy;
  return Outcome::kUnusable;  // CheckQueue repairs that
}

void QueueLock::MarkConsistent() noexcept { pthread_mutex_consistent(storage_); }

void QueueLock::Unlock() noexcept { pthread_mutex_unlock(storage_); }

QueueLock::Inspection QueueLock::Inspect() noexcept {
  Inspection r;
  pthread_mutex_t& m = *storage_;
  pthread_mutex_t fresh;
  InitQueueMutex(&fresh);
  // glibc's robust mutex: __lock holds the owner's tid (FUTEX_TID_MASK) plus
  // FUTEX_WAITERS / FUTEX_OWNER_DIED; __kind what init made of the attributes.
  const int kind = __atomic_load_n(&m.__data.__kind, __ATOMIC_ACQUIRE);
  if (kind != fresh.__data.__kind) {
    r.state = Inspection::kUnusable;
    r.why = "its kind field is " + std::to_string(kind) + ", not " +
            std::to_string(fresh.__data.__kind) + " (garbage)";
    return r;
  }
  const int rc = pthread_mutex_trylock(&m);
  if (rc == 0) return r;
  if (rc == EOWNERDEAD) {
    r.state = Inspection::kAcquiredOwnerDied;
    return r;
  }
  const auto word =
      static_cast<std::uint32_t>(__atomic_load_n(&m.__data.__lock, __ATOMIC_ACQUIRE));
  const auto tid = static_cast<pid_t>(word & FUTEX_TID_MASK);
  r.holder = tid;
  if (rc == EBUSY && tid != 0) {
    if (const char st = ThreadState(tid); st != 0) {
      r.state = Inspection::kHeld;
      r.holder_stopped = st == 'T' || st == 't';
      return r;
    }
    r.why = "its lock word " + Hex(word) + " names thread " + std::to_string(tid) +
            ", which does not exist (garbage: a dead holder is recovered by the kernel)";
  } else {
    r.why = "locking it fails (" + std::string(std::strerror(rc)) + ", lock word " + Hex(word) +
            ")";
  }
  r.state = Inspection::kUnusable;
  return r;
}

void QueueLock::Reinit() noexcept {
  // Clients blocked in a timed lock on the old word time out and retry.
  InitQueueMutex(storage_);
}

}  // namespace dsb::shm
