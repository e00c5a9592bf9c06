#include "broker/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "broker/secure_fs.h"

namespace dsb::broker {

namespace {

// The pid a broker wrote into its own lock file; "unknown" unless the text is
// a plain decimal number (never quoted as it is: the file may be from an
// older version that let the group write it).
std::string ReadPid(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "unknown";
  std::string s(buf, static_cast<std::size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return instance_lock_detail::QuotablePid(s);
}

}  // namespace

std::filesystem::path InstanceLock::ForSegment(const std::string& segment) {
  return std::filesystem::path("/dev/shm") / (".dsb-lock-" + segment);
}

std::filesystem::path InstanceLock::Beside(const std::filesystem::path& file) {
  std::filesystem::path p = file;
  p += ".lock";
  return p;
}

Result<InstanceLock> InstanceLock::Acquire(const std::filesystem::path& path,
                                           const std::string& what) {
  // A few rounds cover a concurrent RemoveFile(); more means something is
  // replacing the file in a loop.
  for (int round = 0; round < 8; ++round) {
    // Open an existing file without O_CREAT: with fs.protected_regular, O_CREAT
    // on another user's file in a sticky folder (/dev/shm) fails. O_NONBLOCK:
    // a FIFO planted at the name must not block the start.
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT) {
      fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0 && errno == EEXIST) continue;  // another broker created it just now
    }
    if (fd < 0) {
      const int err = errno;
      return Status{Errc::kBrokerUnavailable,
                    "cannot open lock file " + path.string() + " for " + what + ": " +
                        (err == ELOOP ? std::string("it is a symbolic link, not made by this "
                                                    "broker: remove it as root")
                                      : std::string(std::strerror(err)))};
    }
    // Only a file this broker's user made is trusted: another user's file
    // could be held (flock) by that user forever, or carry any text.
    struct stat locked {};
    std::string why;
    if (::fstat(fd, &locked) != 0) {
      why = std::string("cannot examine it: ") + std::strerror(errno);
    } else if (!S_ISREG(locked.st_mode)) {
      why = "it is not a regular file: remove it as root";
    } else if (locked.st_uid != ::geteuid()) {
      why = "it was made by " + DescribeOwner(locked.st_uid) + ", not by this broker (" +
            DescribeOwner(::geteuid()) + "): remove it as root";
    } else if (locked.st_nlink != 1) {
      // A hard link to another file of ours (a segment a group member may
      // link): truncating it to write the pid would destroy that file.
      why = "it has " + std::to_string(locked.st_nlink) +
            " names (a hard link to another file): remove this name as root";
    }
    if (!why.empty()) {
      ::close(fd);
      return Status{Errc::kBrokerUnavailable,
                    "lock file " + path.string() + " for " + what + ": " + why};
    }
    // Nobody else may open it (an open descriptor is all flock needs): files
    // of older versions were 0660.
    if ((locked.st_mode & 07777) != 0600) (void)::fchmod(fd, 0600);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      const std::string holder = err == EWOULDBLOCK ? ReadPid(fd) : "";
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return Status{Errc::kBrokerUnavailable,
                      what + " is in use by another broker (pid " + holder + ", lock " +
                          path.string() + "); if it is stopping, start again once it has "
                          "exited, else stop it or give this broker its own id, socket and "
                          "shm_prefix"};
      }
      return Status{Errc::kBrokerUnavailable,
                    "cannot lock " + path.string() + " for " + what + ": " + std::strerror(err)};
    }
    struct stat named {};
    if (::lstat(path.c_str(), &named) != 0 || locked.st_ino != named.st_ino ||
        locked.st_dev != named.st_dev) {
      ::close(fd);  // unlinked or replaced under us: lock the file that is there now
      continue;
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) == 0) {
      (void)!::pwrite(fd, pid.data(), pid.size(), 0);
    }
    return InstanceLock(fd, path);
  }
  return Status{Errc::kBrokerUnavailable,
                "cannot lock " + path.string() + " for " + what + ": the file keeps changing"};
}

InstanceLock::InstanceLock(InstanceLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

InstanceLock& InstanceLock::operator=(InstanceLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

InstanceLock::~InstanceLock() {
  if (fd_ >= 0) ::close(fd_);
}

void InstanceLock::RemoveFile() noexcept {
  if (fd_ >= 0) ::unlink(path_.c_str());
}

}  // namespace dsb::broker
