// InstanceLock: one broker per resource on a machine.
//
// A broker takes an exclusive advisory lock (flock) on a small file for its
// socket and for each shm segment it manages, before it touches either. The
// kernel drops the lock when the process ends, however it ends (SIGKILL
// included), so a lock never outlives its broker and needs no cleanup to be
// correct. A second broker whose config overlaps a running one (same socket,
// or a segment name in common through shm_prefix and target) is refused with
// the holder's pid before it attaches, bumps, re-shapes or frees anything.
//
// Contract
//  - Acquire() never blocks: it fails with kBrokerUnavailable naming the
//    resource and the holding pid when another process holds the lock (a
//    broker that is still stopping holds it until it exits).
//  - The lock file holds the holder's pid (text) for that message only;
//    correctness rests on the flock alone. It is quoted only from a file of
//    this broker's user, and only if it is a plain number.
//  - Lock files are mode 0600, owned by the broker's effective uid: nobody
//    else can open one, and an open descriptor is all flock needs. An
//    existing lock file of another user (or a symbolic link, FIFO, ...) is
//    refused naming its owner ("made by uid N (name), not by this broker:
//    remove it as root"); one of ours with wider bits (older versions made
//    0660) is narrowed to 0600.
//  - Where they live: the socket's lock beside the socket and the state
//    file's beside it, in private folders (secure_fs.h). Segment locks stay
//    in /dev/shm, next to the segments, so that two brokers with the same
//    shm_prefix but different socket folders still exclude each other. In
//    that sticky folder anyone can create the name first: that start is
//    refused with the planter named (a denial of service by a local user,
//    as planting the segment itself is, never a takeover).
//  - RemoveFile() unlinks the file while the lock is still held. Acquire()
//    checks that the file it locked is still the one at the path, so a broker
//    that opened the file just before it was unlinked cannot hold a lock on a
//    dead inode while a third broker locks a new one.
//
// Windows (instance_lock_win.cc): the lock is the file itself, opened with
// CreateFileW sharing only FILE_SHARE_READ: a second opener for writing gets
// ERROR_SHARING_VIOLATION until the holder's handle closes, which the OS
// does when the process ends, TerminateProcess included. Others may still
// open it to read the pid. The file must be no reparse point (no link) and
// owned by this broker's account, SYSTEM or Administrators. ForSegment and
// Beside for a named pipe ("\\.\pipe\dsb-ws1") give files in the lock
// folder %ProgramData%\dsb\run (config/paths.h), made private if missing;
// RemoveFile marks the file delete-on-close through the held handle.
#ifndef DSB_BROKER_INSTANCE_LOCK_H_
#define DSB_BROKER_INSTANCE_LOCK_H_

#include <filesystem>
#include <optional>
#include <string>

#include "common/status.h"

namespace dsb::broker {

class InstanceLock {
 public:
  // `what` names the resource in errors, e.g. "segment dsb-ws1-exch01". A
  // file this call creates is made mode 0600 (O_CREAT | O_EXCL | O_NOFOLLOW).
  // Failure (kBrokerUnavailable): held by another process (its pid, if ours
  // and a number), a file not made by this broker's user (its owner named),
  // a symbolic link or special file, or the file cannot be opened or locked.
  static Result<InstanceLock> Acquire(const std::filesystem::path& path, const std::string& what);

  // Where a broker locks segment `segment` (a hidden file next to the
  // segments; segment names start with "dsb-", so it never collides).
  static std::filesystem::path ForSegment(const std::string& segment);
  // Where a broker locks a file of its own (its socket, its state file): the
  // path with ".lock" appended.
  static std::filesystem::path Beside(const std::filesystem::path& file);

  // A lock comes only from Acquire (held). A moved-from one holds nothing:
  // its destructor and RemoveFile do nothing.
  InstanceLock(InstanceLock&& other) noexcept;
  InstanceLock& operator=(InstanceLock&& other) noexcept;
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;
  ~InstanceLock();  // releases the lock (the file stays unless RemoveFile ran)

  void RemoveFile() noexcept;
  const std::filesystem::path& path() const { return path_; }

 private:
#ifdef _WIN32
  using Native = void*;  // HANDLE; nullptr: none
  static constexpr Native kNone = nullptr;
#else
  using Native = int;  // descriptor; -1: none
  static constexpr Native kNone = -1;
#endif
  InstanceLock(Native fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  Native fd_ = kNone;
  std::filesystem::path path_;
};

namespace instance_lock_detail {

// The holder's pid as quoted in InstanceLock's messages, from a lock file's
// text with its line end already taken off (each platform file reads it its
// own way): the text when it is a plain decimal number of at most 10 digits,
// else "unknown" (never the text as it is: the file may be from an older
// version that let the group write it).
inline std::string QuotablePid(const std::string& text) {
  if (text.empty() || text.size() > 10) return "unknown";
  for (char c : text) {
    if (c < '0' || c > '9') return "unknown";
  }
  return text;
}

}  // namespace instance_lock_detail

}  // namespace dsb::broker

#endif  // DSB_BROKER_INSTANCE_LOCK_H_
