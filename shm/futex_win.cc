// Futex-like wait/wake on Windows (see futex.h).
//
// A waiter entry's word in the segment is the truth; a named auto-reset event
// per entry carries the wake across processes. The protocol is the futex's:
// the waiter stores 0, re-checks its state, then FutexWait(word, 0) sleeps
// only if the word is still 0; a waker stores 1 then FutexWake sets the
// event. If the wake comes between the waiter's check and its wait, the event
// stays set (auto-reset: until one wait consumes it), so no wake is lost. A
// wake nobody consumed makes the entry's next sleep return at once: a
// spurious wake, which every caller handles by re-checking.
#include "shm/futex.h"

#include <windows.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace dsb::shm {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

struct WaitWordRange::Impl {
  std::uintptr_t first = 0;
  std::size_t stride = 0;
  std::uint32_t count = 0;
  std::string stem;
  ObjectMode mode = ObjectMode::kOpen;
  SECURITY_ATTRIBUTES* security = nullptr;  // kCreate, kAdopt
  // One handle per entry, made or opened on first use (nullptr: not yet).
  // A failure is not cached: the next use tries again (the object may be
  // re-created by an adopting broker, or the failure may pass).
  std::vector<std::atomic<HANDLE>> events;

  HANDLE EventFor(std::uint32_t index) noexcept {
    std::atomic<HANDLE>& slot = events[index];
    HANDLE h = slot.load(std::memory_order_acquire);
    if (h != nullptr) return h;
    const std::wstring name = Name(index);
    HANDLE made = ::OpenEventW(SYNCHRONIZE | EVENT_MODIFY_STATE, FALSE, name.c_str());
    if (made == nullptr && mode == ObjectMode::kAdopt &&
        ::GetLastError() == ERROR_FILE_NOT_FOUND) {
      // Gone with its last handle while no broker ran: the adopting broker
      // makes it again with the segment's security. A client never does (it
      // would get the client's default DACL and shut other accounts out).
      made = ::CreateEventW(security, FALSE, FALSE, name.c_str());
    }
    if (made == nullptr) return INVALID_HANDLE_VALUE;  // not cached: retried next time
    HANDLE expected = nullptr;
    if (!slot.compare_exchange_strong(expected, made, std::memory_order_acq_rel)) {
      ::CloseHandle(made);  // another thread won
      return expected;
    }
    return made;
  }

  std::wstring Name(std::uint32_t index) const {
    const std::string n = stem + std::to_string(index);
    return std::wstring(n.begin(), n.end());  // ASCII (SegmentMemory::ValidName)
  }
};

namespace {

// Every live range of this process. Looked up only on the slow path (a wait
// or a wake), under a shared lock.
std::shared_mutex& RangesMutex() {
  static std::shared_mutex m;
  return m;
}
std::vector<WaitWordRange::Impl*>& Ranges() {
  static std::vector<WaitWordRange::Impl*> v;
  return v;
}

// The event of `word` if it is in a registered range, else nullptr.
// INVALID_HANDLE_VALUE: registered but its event cannot be opened now.
HANDLE FindEvent(const std::atomic<std::uint32_t>* word) {
  const auto at = reinterpret_cast<std::uintptr_t>(word);
  std::shared_lock lock(RangesMutex());
  for (WaitWordRange::Impl* r : Ranges()) {
    if (at < r->first) continue;
    const std::uintptr_t off = at - r->first;
    if (off % r->stride != 0 || off / r->stride >= r->count) continue;
    return r->EventFor(static_cast<std::uint32_t>(off / r->stride));
  }
  return nullptr;
}

// Milliseconds for a wait of `timeout` (negative: forever), rounded up so a
// short timed wait does not become a busy poll.
DWORD Millis(std::chrono::nanoseconds timeout) {
  if (timeout.count() < 0) return INFINITE;
  const std::int64_t ms = (timeout.count() + 999'999) / 1'000'000;
  return static_cast<DWORD>(std::min<std::int64_t>(ms, INFINITE - 1));
}

}  // namespace

WaitWordRange::WaitWordRange() : impl_(std::make_unique<Impl>()) {}

Result<std::unique_ptr<WaitWordRange>> WaitWordRange::Make(std::atomic<std::uint32_t>* first,
                                                           std::size_t stride,
                                                           std::uint32_t count, std::string stem,
                                                           const void* security,
                                                           ObjectMode mode) {
  auto range = std::unique_ptr<WaitWordRange>(new WaitWordRange());
  Impl& r = *range->impl_;
  r.first = reinterpret_cast<std::uintptr_t>(first);
  r.stride = stride;
  r.count = count;
  r.stem = std::move(stem);
  r.mode = mode;
  r.security = static_cast<SECURITY_ATTRIBUTES*>(const_cast<void*>(security));
  r.events = std::vector<std::atomic<HANDLE>>(count);
  if (mode == ObjectMode::kCreate) {
    // The creator makes every event now with the segment's security, so
    // clients of the group can open them. The names come from a fresh
    // random instance id: an event that exists already was planted
    // (it could steal or forge wakes), so the create fails.
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::wstring name = r.Name(i);
      HANDLE h = ::CreateEventW(r.security, FALSE, FALSE, name.c_str());
      const DWORD err = ::GetLastError();
      if (h == nullptr || err == ERROR_ALREADY_EXISTS) {
        if (h != nullptr) ::CloseHandle(h);
        const std::string n(name.begin(), name.end());
        return Status{Errc::kSegmentUnavailable,
                      err == ERROR_ALREADY_EXISTS
                          ? "the waiter event " + n +
                                " already exists before its segment was made; refused"
                          : "cannot create the waiter event " + n + " (error " +
                                std::to_string(err) + ")"};
      }
      r.events[i].store(h, std::memory_order_relaxed);
    }
  }
  if (mode == ObjectMode::kAdopt) {
    // Every event now, so that waiting clients find them; one that cannot
    // be opened or made now is tried again on its first use.
    for (std::uint32_t i = 0; i < count; ++i) (void)r.EventFor(i);
  }
  {
    std::unique_lock lock(RangesMutex());
    Ranges().push_back(range->impl_.get());
  }
  return range;
}

WaitWordRange::~WaitWordRange() {
  {
    std::unique_lock lock(RangesMutex());
    auto& v = Ranges();
    v.erase(std::remove(v.begin(), v.end(), impl_.get()), v.end());
  }
  for (auto& e : impl_->events) {
    HANDLE h = e.load(std::memory_order_relaxed);
    if (h != nullptr) ::CloseHandle(h);
  }
}

void FutexWait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
               std::chrono::nanoseconds timeout) {
  HANDLE event = FindEvent(word);
  if (event == nullptr) {
    // A word of this process only (a poll's own word, an interrupt's).
    std::uint32_t compare = expected;
    ::WaitOnAddress(word, &compare, sizeof compare, Millis(timeout));
    return;
  }
  if (word->load(std::memory_order_seq_cst) != expected) return;
  if (event == INVALID_HANDLE_VALUE) {
    // No event to sleep on (yet: the open is tried again next time): sleep
    // up to the waiter poll interval, the caller re-checks its word.
    ::Sleep(std::min<DWORD>(Millis(timeout), static_cast<DWORD>(kUnwiredWaitPoll.count())));
    return;
  }
  ::WaitForSingleObject(event, Millis(timeout));
}

void FutexWake(std::atomic<std::uint32_t>* word, int count) {
  HANDLE event = FindEvent(word);
  if (event == nullptr) {
    if (count == 1) {
      ::WakeByAddressSingle(word);
    } else {
      ::WakeByAddressAll(word);
    }
    return;
  }
  if (event != INVALID_HANDLE_VALUE) ::SetEvent(event);
}

}  // namespace dsb::shm
