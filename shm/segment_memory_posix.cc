// SegmentMemory on POSIX: a shared memory object under /dev/shm (moved from
// slot_table.cc unchanged in behaviour and messages; see segment_memory.h).
#include "shm/segment_memory.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cctype>
#include <cstdio>
#include <cstring>

#include "shm/segment_layout.h"

namespace dsb::shm {
namespace bip = boost::interprocess;

struct SegmentMemory::Impl {
  bip::mapped_region region;
};

SegmentMemory::SegmentMemory() = default;
SegmentMemory::~SegmentMemory() = default;

const void* SegmentMemory::object_security() const noexcept { return nullptr; }

std::string SegmentMemory::Where(const std::string& name) { return "/dev/shm/" + name; }

bool SegmentMemory::ValidName(const std::string& name) {
  if (name.empty() || name.size() > 200) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  }
  return true;
}

bool SegmentMemory::Exists(const std::string& name) {
  struct stat st {};
  return ::stat(Where(name).c_str(), &st) == 0;
}

Status SegmentMemory::Remove(const std::string& name) {
  if (!ValidName(name)) {
    return {Errc::kInvalidArgument, "invalid segment name '" + name + "'"};
  }
  bip::shared_memory_object::remove(name.c_str());
  return Status::Ok();
}

namespace {

Status OpenError(const bip::interprocess_exception& e, const std::string& name, bool create,
                 bool created) {
  const bool exists = e.get_error_code() == bip::already_exists_error;
  const bool missing = e.get_error_code() == bip::not_found_error;
  std::string why = e.what();
  if (e.get_native_error() != 0) why = std::strerror(e.get_native_error());
  if (exists) why = "it already exists (another broker with the same shm_prefix?)";
  if (missing) why = "it does not exist (is the broker running?)";
  if (created) {
    // Boost's truncate reserves the pages itself (posix_fallocate): a full
    // /dev/shm fails here.
    if (e.get_native_error() == ENOSPC) {
      why += " (/dev/shm is full: free space there or lower the target's slots)";
    }
    why += "; the half-made segment was removed";
  }
  return Status{Errc::kSegmentUnavailable, "segment " + name + " (" +
                                               SegmentMemory::Where(name) + "): cannot " +
                                               (create ? "create" : "open") + ": " + why};
}

}  // namespace

Result<std::unique_ptr<SegmentMemory>> SegmentMemory::Create(const std::string& name,
                                                             std::size_t size,
                                                             const std::optional<GroupId>& group) {
  if (!ValidName(name)) {
    return Status{Errc::kInvalidArgument,
                  "invalid segment name '" + name + "' (letters, digits, '-', '_', '.')"};
  }
  auto out = std::unique_ptr<SegmentMemory>(new SegmentMemory());
  // Set once this call made the file: every failure after that removes it,
  // so a failed create never leaves a half-made segment behind (a 0-byte
  // one used to block every later start).
  bool created = false;
  try {
    bip::permissions perms(0660);
    // create_only is shm_open(O_CREAT | O_EXCL): never opens a file someone
    // else made under this name (it fails with already_exists_error).
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write, perms);
    created = true;
    shm.truncate(static_cast<bip::offset_t>(size));
    const int fd = shm.get_mapping_handle().handle;
    // Reserve the pages now: on a full /dev/shm a sparse segment would
    // SIGBUS whoever first touches a page (the broker writing the header,
    // or a client taking a slot); ENOSPC here is a clean error instead.
    // (Boost 1.81's truncate already falls back to posix_fallocate on
    // Linux; this call makes it explicit and independent of the version.)
    if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); err != 0) {
      bip::shared_memory_object::remove(name.c_str());
      return Status{Errc::kSegmentUnavailable,
                    "segment " + name + " (" + Where(name) + "): cannot reserve " +
                        std::to_string(size) + " bytes: " + std::strerror(err) +
                        (err == ENOSPC ? " (/dev/shm is full: free space there or lower "
                                         "the target's slots)"
                                       : "") +
                        "; the half-made segment was removed"};
    }
    ::fchmod(fd, 0660);  // umask may have narrowed the create mode
    if (group && ::fchown(fd, static_cast<uid_t>(-1), *group) != 0) {
      const int err = errno;
      bip::shared_memory_object::remove(name.c_str());
      return Status{Errc::kSegmentUnavailable, "segment " + name + ": cannot give it to group " +
                                                   std::to_string(*group) + ": " +
                                                   std::strerror(err)};
    }
    out->impl_ = std::make_unique<Impl>(Impl{bip::mapped_region(shm, bip::read_write, 0, size)});
  } catch (const bip::interprocess_exception& e) {
    if (created) bip::shared_memory_object::remove(name.c_str());
    return OpenError(e, name, true, created);
  }
  out->address_ = out->impl_->region.get_address();
  out->size_ = size;
  return out;
}

Result<std::unique_ptr<SegmentMemory>> SegmentMemory::Open(const std::string& name,
                                                           const std::optional<AccountId>& owner,
                                                           const std::optional<GroupId>& /*group*/,
                                                           bool /*adopt*/) {
  if (!ValidName(name)) {
    return Status{Errc::kInvalidArgument,
                  "invalid segment name '" + name + "' (letters, digits, '-', '_', '.')"};
  }
  auto out = std::unique_ptr<SegmentMemory>(new SegmentMemory());
  std::size_t size = 0;
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    if (owner) {
      // On the open descriptor (shm_open does not follow symlinks): the
      // file checked is the file mapped.
      struct stat st {};
      if (::fstat(shm.get_mapping_handle().handle, &st) != 0) {
        return Status{Errc::kSegmentInvalid,
                      "segment " + name + ": cannot stat it: " + std::strerror(errno)};
      }
      if (!S_ISREG(st.st_mode) || st.st_uid != *owner || (st.st_mode & 0007) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return Status{Errc::kSegmentInvalid,
                      "segment " + name + " (" + Where(name) + ") is owned by uid " +
                          std::to_string(st.st_uid) + " with mode " + mode + ", not by uid " +
                          std::to_string(*owner) +
                          " without access for others: it was not made by the broker; "
                          "refused and left alone"};
      }
      if (st.st_nlink != 1) {
        // Another name for some segment (a group member may hard-link
        // one): adopting or using it would share one table between two
        // brokers' books.
        return Status{Errc::kSegmentInvalid,
                      "segment " + name + " (" + Where(name) + ") has " +
                          std::to_string(st.st_nlink) +
                          " names: a hard link to a segment, not one the broker made "
                          "under this name; refused and left alone (remove the extra name)"};
      }
    }
    bip::offset_t s = 0;
    if (!shm.get_size(s) || s < 0) {
      return Status{Errc::kSegmentInvalid, "segment " + name + ": cannot read its size"};
    }
    size = static_cast<std::size_t>(s);
    if (size < HeaderBytes()) {
      return Status{Errc::kSegmentInvalid,
                    "segment " + name + " is " + std::to_string(size) +
                        " bytes, smaller than a dsb slot-table header (" +
                        std::to_string(HeaderBytes()) + "): not a dsb segment"};
    }
    out->impl_ = std::make_unique<Impl>(Impl{bip::mapped_region(shm, bip::read_write, 0, size)});
  } catch (const bip::interprocess_exception& e) {
    return OpenError(e, name, false, false);
  }
  out->address_ = out->impl_->region.get_address();
  out->size_ = size;
  return out;
}

}  // namespace dsb::shm
