// SegmentMemory: the memory of one slot-table segment, mapped read-write in
// this process (the platform seam under SlotTable::Create/Attach; issue 12).
//
// POSIX (segment_memory_posix.cc): a POSIX shared memory object
// "/dev/shm/<name>" (Boost.Interprocess shared_memory_object), mode 0660,
// optionally chowned to a group; it outlives every process until Remove().
//
// Windows (segment_memory_win.cc): a pagefile-backed section (CreateFileMapping
// with SEC_COMMIT: the pages are charged at creation, so a full commit limit
// is a clean error, like posix_fallocate on Linux) named "Local\<name>", or
// "Global\<name>" when the name is given with that prefix (creating a
// section in Global\ needs SeCreateGlobalPrivilege, which services and
// administrators have). Its DACL admits SYSTEM and the creating account (full access) and the
// configured group (read/write mapping), nobody else. A section has no name of
// its own once its last handle closes: the creator (the broker) keeps its
// handle for the object's life, and every attached process holds one too.
//
// Thread rule: an object is used by one thread at a time (SlotTable makes it
// once and only reads address()/size() afterwards).
#ifndef DSB_SHM_SEGMENT_MEMORY_H_
#define DSB_SHM_SEGMENT_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/account.h"
#include "common/status.h"

namespace dsb::shm {

class SegmentMemory {
 public:
  // Makes a new segment of `size` bytes, zero-filled, and maps it.
  // Success: the mapping. Failures (each message names the segment):
  //  kSegmentUnavailable: it already exists (another broker with the same
  //    name), no space (/dev/shm full, or the Windows commit limit), the
  //    group cannot be given access (unknown gid; on Windows a group that
  //    is no SID string "S-1-...", or a broad one such as Everyone,
  //    Authenticated Users, Users, Guests, Anonymous or Interactive: the
  //    message names the value), or the OS refused.
  //  kInvalidArgument: the name is not ValidName().
  // A failed create leaves no half-made segment behind.
  static Result<std::unique_ptr<SegmentMemory>> Create(const std::string& name, std::size_t size,
                                                       const std::optional<GroupId>& group);
  // Maps an existing segment read-write. With `owner`: on POSIX the file must
  // belong to that uid, give others no access and have one name; on Windows
  // the section's owner SID must be `owner` and its DACL an allow list: an
  // access-granting ACE only for SYSTEM, `owner` and `group` (a null DACL,
  // or any other account, or an ACE type that grants to a SID not read
  // here, is refused). Without `group` (a client, which is not told the
  // broker's group): at most one other SID, not a broad one. `adopt` (Windows, the broker after a restart):
  // object_security() then gives the objects it re-creates the segment's
  // descriptor (SYSTEM and this account: all; `group`: use). POSIX ignores
  // `group` and `adopt`.
  // Failures: kSegmentUnavailable (missing, or the OS refused: the message
  // says which), kSegmentInvalid (owner/access checks, or smaller than a
  // segment header: nothing in it was read; with `adopt`, a group that
  // Create would refuse), kInvalidArgument (bad name).
  static Result<std::unique_ptr<SegmentMemory>> Open(const std::string& name,
                                                     const std::optional<AccountId>& owner,
                                                     const std::optional<GroupId>& group = {},
                                                     bool adopt = false);
  // POSIX: unlinks the name (mappings stay valid); OK if it does not exist.
  // Windows: a section cannot be removed by name: it goes with its last
  // handle. OK if no section of that name exists (any more). While one does
  // (a client, or this process, still maps it): kSegmentUnavailable saying
  // so, and nothing done. So on Windows a broker cannot re-make a segment
  // in place ("reset; Remove; Create") while clients map it: it must check
  // Remove's status and, if not OK, keep the segment it has (or refuse the
  // target, telling the user to stop its clients), never call Create (which
  // would fail with "already exists").
  static Status Remove(const std::string& name);
  static bool Exists(const std::string& name);
  // Letters, digits, '-', '_', '.' (1..200 characters). Windows also takes a
  // leading "Local\" or "Global\" (the kernel object namespace).
  static bool ValidName(const std::string& name);
  // Where the segment lives, for messages: "/dev/shm/<name>", "Local\<name>".
  static std::string Where(const std::string& name);

  ~SegmentMemory();
  SegmentMemory(const SegmentMemory&) = delete;
  SegmentMemory& operator=(const SegmentMemory&) = delete;

  void* address() const noexcept { return address_; }
  std::size_t size() const noexcept { return size_; }

  // Windows: the kernel object namespace of the segment ("Local\" or
  // "Global\"): the waiter events and the queue mutex live beside it, named
  // from the segment's instance id. POSIX: empty (unused).
  const std::string& object_namespace() const noexcept { return object_namespace_; }
  // Windows: the SECURITY_ATTRIBUTES* for those objects when this process
  // created the segment (SYSTEM and this account: all; the group:
  // synchronize, modify state), else nullptr (the default DACL). POSIX:
  // nullptr.
  const void* object_security() const noexcept;

 private:
  struct Impl;
  SegmentMemory();
  std::unique_ptr<Impl> impl_;
  void* address_ = nullptr;
  std::size_t size_ = 0;
  std::string object_namespace_;
};

}  // namespace dsb::shm

#endif  // DSB_SHM_SEGMENT_MEMORY_H_
