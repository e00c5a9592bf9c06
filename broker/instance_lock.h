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
//    correctness rests on the flock alone.
//  - RemoveFile() unlinks the file while the lock is still held. Acquire()
//    checks that the file it locked is still the one at the path, so a broker
//    that opened the file just before it was unlinked cannot hold a lock on a
//    dead inode while a third broker locks a new one.
#ifndef DSB_BROKER_INSTANCE_LOCK_H_
#define DSB_BROKER_INSTANCE_LOCK_H_

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "common/status.h"

namespace dsb::broker {

class InstanceLock {
 public:
  // `what` names the resource in errors, e.g. "segment dsb-ws1-exch01". A
  // file this call creates is made mode 0660 and, with `group`, given to that
  // group (like the segments), so brokers of the group can lock it later.
  static Result<InstanceLock> Acquire(const std::filesystem::path& path, const std::string& what,
                                      std::optional<gid_t> group = std::nullopt);

  // Where a broker locks segment `segment` (a hidden file next to the
  // segments; segment names start with "dsb-", so it never collides).
  static std::filesystem::path ForSegment(const std::string& segment);
  // Where a broker locks a file of its own (its socket, its state file): the
  // path with ".lock" appended.
  static std::filesystem::path Beside(const std::filesystem::path& file);

  InstanceLock() = default;  // holds nothing
  InstanceLock(InstanceLock&& other) noexcept;
  InstanceLock& operator=(InstanceLock&& other) noexcept;
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;
  ~InstanceLock();  // releases the lock (the file stays unless RemoveFile ran)

  void RemoveFile() noexcept;
  const std::filesystem::path& path() const { return path_; }

 private:
  InstanceLock(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::filesystem::path path_;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_INSTANCE_LOCK_H_
