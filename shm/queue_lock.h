// QueueLock: the lock of a segment's waiter queue (the platform seam under
// SlotTable::LockQueue/UnlockQueue/CheckQueue; issue 12).
//
// POSIX (queue_lock_posix.cc): the robust process-shared pthread mutex stored
// in the segment header (SegmentHeader::queue_mutex). A holder that dies is
// reported to the next locker as EOWNERDEAD by the kernel's robust list.
// Windows (queue_lock_win.cc): a named kernel mutex beside the segment
// ("<ns>dsb-<instance id>-q", made by the segment's creator with the
// segment's group admitted). A holder that dies (TerminateProcess included)
// leaves it abandoned: the next wait returns WAIT_ABANDONED, which is
// reported exactly as EOWNERDEAD is, so the same repair path runs. The header
// storage then only records the holder's ids (QueueLockStorage).
//
// Both are non-recursive as seen by the caller: a thread that holds the lock
// and locks again gets kBusy (a Windows mutex itself would let it in). On
// Windows "this thread holds it" is this process's own record (thread-local),
// never the ids in the segment, which any group member can write and which
// outlive a dead holder (and Windows reuses thread ids).
//
// Thread rule: every method is safe from any thread; Unlock and
// MarkConsistent only by the thread that holds the lock.
#ifndef DSB_SHM_QUEUE_LOCK_H_
#define DSB_SHM_QUEUE_LOCK_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/account.h"
#include "common/status.h"
#include "shm/futex.h"
#include "shm/segment_layout.h"

namespace dsb::shm {

class QueueLock {
 public:
  // `storage` is the header's queue_mutex (REQUIRES: mapped for this
  // object's life). kCreate: the segment is new; POSIX initialises the
  // mutex in `storage`, Windows creates the named mutex `object_name` with
  // `security` (SECURITY_ATTRIBUTES*), failing if it already exists.
  // Otherwise POSIX does nothing; Windows opens `object_name`, and with
  // kAdopt re-creates it with `security` if it is gone (its creator, the
  // broker, ended and nobody held it). A client (kOpen) never creates it.
  // Failure: kSegmentUnavailable naming the object and the OS error.
  static Result<std::unique_ptr<QueueLock>> Make(QueueLockStorage* storage,
                                                 const std::string& object_name,
                                                 const void* security, ObjectMode mode);
  ~QueueLock();
  QueueLock(const QueueLock&) = delete;
  QueueLock& operator=(const QueueLock&) = delete;

  enum class Outcome {
    kLocked,     // the caller holds it
    kOwnerDied,  // the caller holds it; the last holder died inside: repair
                 // what it guarded, MarkConsistent(), then Unlock()
    kBusy,       // held by someone else past `bound` (or by this thread)
    kUnusable,   // garbage (POSIX: a lock word no kernel path can recover)
  };
  // Takes the lock within `bound` (0: one try, no clock read). POSIX waits
  // on CLOCK_MONOTONIC (a wall-clock step cannot stretch it); Windows waits
  // in whole milliseconds, rounded up.
  Outcome Lock(std::chrono::nanoseconds bound) noexcept;
  // After kOwnerDied, once the guarded state is repaired.
  void MarkConsistent() noexcept;
  void Unlock() noexcept;

  // What Inspect() found. Never waits.
  struct Inspection {
    enum State {
      kAcquired,           // the caller now holds it (Unlock it)
      kAcquiredOwnerDied,  // the caller now holds it, as Outcome::kOwnerDied
      kHeld,               // a live thread holds it: left alone
      kUnusable,           // garbage: nobody can be inside; Reinit() it
    } state = kAcquired;
    ProcessId holder = 0;         // kHeld/kUnusable: the thread id recorded, if any
    bool holder_stopped = false;  // kHeld: the holder is stopped (POSIX only)
    std::string why;              // kUnusable: what is wrong
  };
  Inspection Inspect() noexcept;
  // Makes the lock afresh. REQUIRES: Inspect() said kUnusable.
  void Reinit() noexcept;

 private:
  QueueLock() = default;
  QueueLockStorage* storage_ = nullptr;
  void* handle_ = nullptr;  // Windows: the mutex handle
  std::string name_;        // Windows: the mutex name
  const void* security_ = nullptr;  // Windows: for a re-made mutex (kCreate, kAdopt)
  bool may_create_ = false;         // Windows: kCreate or kAdopt (the broker)
  std::uint32_t number_ = 0;        // Windows: the mutex's number in this process
};

}  // namespace dsb::shm

#endif  // DSB_SHM_QUEUE_LOCK_H_
