// QueueLock on Windows: a named kernel mutex beside the segment (see
// queue_lock.h). WAIT_ABANDONED (the last holder ended without releasing it:
// TerminateProcess, a crash, a thread exit) is reported as kOwnerDied, the
// role EOWNERDEAD plays on POSIX, so SlotTable repairs the queue the same way.
// The mutex lives in the kernel, not in the segment, so a client cannot
// scribble it into garbage (kUnusable only if the handle itself fails); a
// client can still hold it forever, which CheckQueue reports as kHeld.
#include "shm/queue_lock.h"

#include <windows.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include "common/account_win.h"

namespace dsb::shm {

namespace {

// Names and the system's error text: the one copy in common/account_win.h.
using win::ErrorText;
using win::Widen;

// Whether this thread holds a queue mutex is this process's own record,
// never the holder ids in the segment (a report only: any group member can
// write them, a dead holder's stay behind, thread ids are reused). Each
// mutex name gets a process-wide number (one name is one kernel mutex,
// whichever QueueLock object or mapping took it); each thread keeps the
// numbers it holds in a trivially destructible thread_local array (no TLS
// destructor: child processes end with ExitProcess from any thread). A
// thread that ends holding a mutex takes its record with it; the kernel
// abandons the mutex.
std::uint32_t NameNumber(const std::string& name) {
  static std::mutex m;
  static auto* numbers = new std::map<std::string, std::uint32_t>();  // never freed
  std::lock_guard lock(m);
  const auto [it, added] =
      numbers->try_emplace(name, static_cast<std::uint32_t>(numbers->size() + 1));
  return it->second;
}

constexpr int kMaxHeld = 16;  // queue mutexes one thread holds at once (1 in practice)
thread_local std::uint32_t tl_held[kMaxHeld] = {};

bool HeldByThisThread(std::uint32_t number) noexcept {
  for (std::uint32_t h : tl_held) {
    if (h == number) return true;
  }
  return false;
}

// Records that this thread now holds `number`. False if the record is full:
// the caller releases the mutex and reports it busy.
bool NoteHeld(std::uint32_t number) noexcept {
  for (std::uint32_t& h : tl_held) {
    if (h == 0) {
      h = number;
      return true;
    }
  }
  return false;
}

void NoteReleased(std::uint32_t number) noexcept {
  for (std::uint32_t& h : tl_held) {
    if (h == number) {
      h = 0;
      return;
    }
  }
}

}  // namespace

Result<std::unique_ptr<QueueLock>> QueueLock::Make(QueueLockStorage* storage,
                                                   const std::string& object_name,
                                                   const void* security, ObjectMode mode) {
  const bool create = mode == ObjectMode::kCreate;
  auto lock = std::unique_ptr<QueueLock>(new QueueLock());
  lock->storage_ = storage;
  lock->name_ = object_name;
  lock->number_ = NameNumber(object_name);
  lock->security_ = security;
  lock->may_create_ = mode != ObjectMode::kOpen;
  const std::wstring wname = Widen(object_name);
  auto* sa = static_cast<SECURITY_ATTRIBUTES*>(const_cast<void*>(security));
  HANDLE h = nullptr;
  if (create) {
    h = ::CreateMutexW(sa, FALSE, wname.c_str());
    if (h != nullptr && ::GetLastError() == ERROR_ALREADY_EXISTS) {
      // Named from a fresh random instance id: someone planted it.
      ::CloseHandle(h);
      return Status{Errc::kSegmentUnavailable,
                    "the queue mutex " + object_name +
                        " already exists before its segment was made; refused"};
    }
    storage->holder_pid.store(0, std::memory_order_relaxed);
    storage->holder_tid.store(0, std::memory_order_relaxed);
  } else {
    h = ::OpenMutexW(SYNCHRONIZE | MUTEX_MODIFY_STATE, FALSE, wname.c_str());
    if (h == nullptr && ::GetLastError() == ERROR_FILE_NOT_FOUND) {
      if (mode == ObjectMode::kAdopt) {
        // Its creator (an earlier broker) ended and no client held it: the
        // adopting broker makes it again with the segment's security.
        h = ::CreateMutexW(sa, FALSE, wname.c_str());
      } else {
        // A client never makes it (it would carry the client's default DACL
        // and shut the group's other accounts out).
        return Status{Errc::kSegmentUnavailable,
                      "the queue mutex " + object_name +
                          " does not exist: the broker that made the segment has ended; "
                          "attach again once it runs"};
      }
    }
  }
  if (h == nullptr) {
    return Status{Errc::kSegmentUnavailable, "cannot " +
                                                 std::string(create ? "create" : "open") +
                                                 " the queue mutex " + object_name + ": " +
                                                 ErrorText(::GetLastError())};
  }
  lock->handle_ = h;
  return lock;
}

QueueLock::~QueueLock() {
  if (handle_ != nullptr) ::CloseHandle(static_cast<HANDLE>(handle_));
}

QueueLock::Outcome QueueLock::Lock(std::chrono::nanoseconds bound) noexcept {
  // A Windows mutex is recursive; the slot table's lock is not (a pthread
  // mutex says EBUSY to its own holder): refuse a second entry.
  if (HeldByThisThread(number_)) return Outcome::kBusy;
  DWORD ms = 0;
  if (bound.count() > 0) {
    ms = static_cast<DWORD>(
        std::min<std::int64_t>((bound.count() + 999'999) / 1'000'000, INFINITE - 1));
  }
  const DWORD rc = ::WaitForSingleObject(static_cast<HANDLE>(handle_), ms);
  if (rc == WAIT_OBJECT_0 || rc == WAIT_ABANDONED) {
    if (!NoteHeld(number_)) {
      ::ReleaseMutex(static_cast<HANDLE>(handle_));
      return Outcome::kBusy;
    }
    // For reports only (CheckQueue names the holder).
    storage_->holder_pid.store(::GetCurrentProcessId(), std::memory_order_relaxed);
    storage_->holder_tid.store(::GetCurrentThreadId(), std::memory_order_release);
    return rc == WAIT_OBJECT_0 ? Outcome::kLocked : Outcome::kOwnerDied;
  }
  return rc == WAIT_TIMEOUT ? Outcome::kBusy : Outcome::kUnusable;
}

// An abandoned mutex is an ordinary one again once acquired.
void QueueLock::MarkConsistent() noexcept {}

void QueueLock::Unlock() noexcept {
  NoteReleased(number_);
  storage_->holder_tid.store(0, std::memory_order_relaxed);
  storage_->holder_pid.store(0, std::memory_order_release);
  ::ReleaseMutex(static_cast<HANDLE>(handle_));
}

QueueLock::Inspection QueueLock::Inspect() noexcept {
  Inspection r;
  if (!HeldByThisThread(number_)) {
    const DWORD rc = ::WaitForSingleObject(static_cast<HANDLE>(handle_), 0);
    if ((rc == WAIT_OBJECT_0 || rc == WAIT_ABANDONED) && !NoteHeld(number_)) {
      ::ReleaseMutex(static_cast<HANDLE>(handle_));
      r.state = Inspection::kHeld;
      return r;
    }
    if (rc == WAIT_OBJECT_0 || rc == WAIT_ABANDONED) {
      storage_->holder_pid.store(::GetCurrentProcessId(), std::memory_order_relaxed);
      storage_->holder_tid.store(::GetCurrentThreadId(), std::memory_order_release);
      r.state = rc == WAIT_OBJECT_0 ? Inspection::kAcquired : Inspection::kAcquiredOwnerDied;
      return r;
    }
    if (rc != WAIT_TIMEOUT) {
      r.state = Inspection::kUnusable;
      r.why = "waiting on " + name_ + " fails: " + ErrorText(::GetLastError());
      return r;
    }
  }
  // Held by a live thread: the kernel abandons the mutex of a dead one. Its
  // id is what the holder recorded (Windows does not tell a mutex's owner).
  r.state = Inspection::kHeld;
  r.holder = storage_->holder_tid.load(std::memory_order_acquire);
  return r;
}

void QueueLock::Reinit() noexcept {
  // Only a failing handle gets here: open the mutex afresh.
  HANDLE h = ::OpenMutexW(SYNCHRONIZE | MUTEX_MODIFY_STATE, FALSE, Widen(name_).c_str());
  if (h == nullptr && may_create_) {
    // The broker: with the segment's security, never the default DACL.
    h = ::CreateMutexW(static_cast<SECURITY_ATTRIBUTES*>(const_cast<void*>(security_)), FALSE,
                       Widen(name_).c_str());
  }
  if (h == nullptr) return;
  if (handle_ != nullptr) ::CloseHandle(static_cast<HANDLE>(handle_));
  handle_ = h;
  storage_->holder_tid.store(0, std::memory_order_relaxed);
  storage_->holder_pid.store(0, std::memory_order_release);
}

}  // namespace dsb::shm
