// Futex-like wait/wake on 32-bit words in shared memory: the platform seam of
// the wait path. The word is the truth; these calls only sleep and wake.
//
// POSIX (futex_posix.cc): the Linux futex (never the PRIVATE variants), which
// keys on the physical page, so a wake crosses processes whatever address
// each process maps the segment at.
// Windows (futex_win.cc): an address does not cross processes there
// (WaitOnAddress is per process). A SlotTable registers its waiter entries'
// words as a WaitWordRange; a word in a registered range sleeps and wakes on
// a named auto-reset event per entry, "<stem><index>", created by the
// segment's creator with its security (see ObjectMode) and opened lazily
// (then cached) by every other process. Any other word (a thread's own word, in-process only)
// uses WaitOnAddress. Only the slow path calls these: the fast path (a free
// slot, a release with nobody waiting) makes no system call on either OS.
#ifndef DSB_SHM_FUTEX_H_
#define DSB_SHM_FUTEX_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace dsb::shm {

// Sleeps while *word == expected, at most `timeout` (negative = forever).
// Returns on wake, on value change, on timeout or on a signal: callers re-check.
// A wake may also come early or spuriously (Windows: a wake left over from an
// earlier waiter of the same entry): callers re-check.
void FutexWait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
               std::chrono::nanoseconds timeout);

// Wakes up to `count` sleepers on `word` (Windows, a registered word: its
// one waiter; an event set while nobody sleeps wakes the next sleep at once).
void FutexWake(std::atomic<std::uint32_t>* word, int count);

// How a process treats the kernel objects beside a segment (Windows: the
// waiter events and the queue mutex; nothing on POSIX).
enum class ObjectMode {
  // The segment's creator: make every object now with the segment's
  // security; one that already exists (a squatter: the names come from a
  // fresh random instance id) fails the create, naming the object.
  kCreate,
  // The broker adopting a segment after a restart: open each object, and
  // re-create one that is gone (its last handle closed) with the segment's
  // security (SYSTEM, this account, the group: never the default DACL).
  kAdopt,
  // A client: open each object when first needed, never create one. A
  // failed open (missing, access denied) is retried on a later use.
  kOpen,
};

// How long a wait sleeps at most when its event cannot be opened (Windows):
// the waiter re-checks its word, as SlotTable's waiter poll does anyway.
inline constexpr std::chrono::milliseconds kUnwiredWaitPoll{10};

// Registers `count` words, `stride` bytes apart from `first`, for
// cross-process wake (Windows; nothing on POSIX) until destroyed. Windows:
// the event of word i is "<stem><i>". `security` (SECURITY_ATTRIBUTES*) is
// used by kCreate and kAdopt; it may be null only in tests.
// Failure (Windows, kCreate only): kSegmentUnavailable naming the event that
// already exists or cannot be made. kAdopt and kOpen do not fail: an event
// that cannot be opened or made now is tried again on its next use.
// REQUIRES: the words stay mapped for the object's life; ranges do not
// overlap.
class WaitWordRange {
 public:
  static Result<std::unique_ptr<WaitWordRange>> Make(std::atomic<std::uint32_t>* first,
                                                     std::size_t stride, std::uint32_t count,
                                                     std::string stem, const void* security,
                                                     ObjectMode mode);
  ~WaitWordRange();
  WaitWordRange(const WaitWordRange&) = delete;
  WaitWordRange& operator=(const WaitWordRange&) = delete;

  struct Impl;

 private:
  WaitWordRange();
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsb::shm

#endif  // DSB_SHM_FUTEX_H_
