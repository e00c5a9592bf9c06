// SecureFs on POSIX (secure_fs.h): modes, owners by uid, O_NOFOLLOW.
#include "broker/secure_fs.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace dsb::broker {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kWhatToDo = "use a folder only this broker can write, e.g. /run/dsb";

std::string Errno(int err) { return std::strerror(err); }

// "a file", "a socket", ... for messages about something that is not a folder.
std::string KindOf(mode_t mode) {
  if (S_ISREG(mode)) return "a file";
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISFIFO(mode)) return "a FIFO";
  return "a device or other special file";
}

std::string OwnerAndMode(const struct stat& st) {
  return "owner " + DescribeOwner(st.st_uid) + ", mode " + DescribeMode(st.st_mode);
}

// "<what> <folder>: <why>; [<fix>, or ]use a folder only this broker can write, ..."
Status Refuse(std::string_view what, const fs::path& folder, const std::string& why,
              const std::string& fix = "") {
  return {Errc::kConfig, std::string(what) + " " + folder.string() + ": " + why + "; " +
                             (fix.empty() ? "" : fix + ", or ") + std::string(kWhatToDo)};
}

// realpath(3) of an existing path. Failure: errno.
std::optional<fs::path> Resolve(const fs::path& p, int* err) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) == nullptr) {
    *err = errno;
    return std::nullopt;
  }
  return fs::path(buf);
}

// Every component of `resolved` (absolute, no symbolic links) from `/` down.
std::vector<fs::path> Prefixes(const fs::path& resolved) {
  std::vector<fs::path> out;
  fs::path cur;
  for (const fs::path& part : resolved) {
    cur /= part;
    out.push_back(cur);
  }
  return out;
}

enum class Last {
  kPrivate,   // the folder itself: owned by the broker's euid, not group/other writable
  kParent,    // an ancestor the broker builds in: trusted owner; writable only if sticky
};

// Checks each component of `resolved` (see the header's rules); `last` is
// the rule for its final component.
Status CheckChain(const fs::path& resolved, std::string_view what, const fs::path& folder,
                  Last last) {
  const std::vector<fs::path> parts = Prefixes(resolved);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const fs::path& p = parts[i];
    const bool is_last = i + 1 == parts.size();
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) {
      return Refuse(what, folder, p.string() + " cannot be examined: " + Errno(errno));
    }
    if (S_ISLNK(st.st_mode)) {
      // realpath resolved every link: one appeared since.
      return Refuse(what, folder, p.string() + " became a symbolic link while it was checked");
    }
    if (!S_ISDIR(st.st_mode)) {
      return Refuse(what, folder, p.string() + " is " + KindOf(st.st_mode) + ", not a folder");
    }
    const bool mine = st.st_uid == ::geteuid();
    if (!IsTrustedOwner(st.st_uid) || (is_last && last == Last::kPrivate && !mine)) {
      return Refuse(what, folder,
                    p.string() + " is owned by " + DescribeOwner(st.st_uid) + " (mode " +
                        DescribeMode(st.st_mode) + "), not by this broker (" +
                        DescribeOwner(::geteuid()) + (is_last ? "" : ") or root") +
                        (is_last ? ")" : "") +
                        ": that user could replace the files the broker keeps there");
    }
    const bool writable_by_others = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
    if (!writable_by_others) continue;
    if (is_last && last == Last::kPrivate) {
      return Refuse(what, folder,
                    p.string() + " is writable by group or others (" + OwnerAndMode(st) +
                        "): they could replace the files the broker keeps there",
                    "run `chmod go-w " + p.string() + "`");
    }
    if ((st.st_mode & S_ISVTX) == 0) {
      return Refuse(what, folder,
                    p.string() + " is writable by group or others and not sticky (" +
                        OwnerAndMode(st) + "): they could rename what is below it");
    }
    // Sticky (like /tmp): others cannot rename or remove the next component,
    // whose owner the next round checks.
  }
  return Status::Ok();
}

// The symbolic links on the way to `abs` (absolute, existing), followed as
// the kernel follows them: each link must be owned by root or the broker,
// in a folder others cannot write (or a sticky one of root's or the
// broker's), or whoever may change it could later point the broker's files
// elsewhere (the broker keeps using the configured path, not its target).
Status CheckLinks(const fs::path& abs, std::string_view what, const fs::path& folder,
                  int depth = 0) {
  if (depth > 40) return Refuse(what, folder, "too many levels of symbolic links");
  fs::path cur = "/";
  for (auto it = std::next(abs.begin()); it != abs.end(); ++it) {
    const fs::path next = cur / *it;
    struct stat st {};
    if (::lstat(next.c_str(), &st) != 0) return Status::Ok();  // the rest is created later
    if (!S_ISLNK(st.st_mode)) {
      cur = next;
      continue;
    }
    struct stat dir {};
    if (::lstat(cur.c_str(), &dir) != 0) {
      return Refuse(what, folder, cur.string() + " cannot be examined: " + Errno(errno));
    }
    const bool others_write = (dir.st_mode & (S_IWGRP | S_IWOTH)) != 0;
    const bool dir_safe =
        IsTrustedOwner(dir.st_uid) && (!others_write || (dir.st_mode & S_ISVTX) != 0);
    if (!IsTrustedOwner(st.st_uid) || !dir_safe) {
      return Refuse(what, folder,
                    next.string() + " is a symbolic link owned by " + DescribeOwner(st.st_uid) +
                        " in " + cur.string() + " (" + OwnerAndMode(dir) +
                        "): whoever may change it could point the broker's files elsewhere",
                    "name the folder it points to instead");
    }
    char target[PATH_MAX];
    const ssize_t n = ::readlink(next.c_str(), target, sizeof target - 1);
    if (n < 0) return Refuse(what, folder, next.string() + " cannot be read: " + Errno(errno));
    fs::path rest;
    for (auto r = std::next(it); r != abs.end(); ++r) rest /= *r;
    const fs::path to(std::string(target, static_cast<std::size_t>(n)));
    const fs::path joined = ((to.is_absolute() ? to : cur / to) / rest).lexically_normal();
    return CheckLinks(joined, what, folder, depth + 1);
  }
  return Status::Ok();
}

// The deepest existing ancestor of `abs` (itself included), following links.
fs::path DeepestExisting(const fs::path& abs) {
  fs::path p = abs;
  struct stat st {};
  while (::stat(p.c_str(), &st) != 0 && p.has_relative_path()) p = p.parent_path();
  return p;
}

Status CheckFolder(const fs::path& folder, std::string_view what, Last last) {
  const fs::path abs = fs::absolute(folder).lexically_normal();
  if (Status st = CheckLinks(abs, what, folder); !st.ok()) return st;
  int err = 0;
  const std::optional<fs::path> resolved = Resolve(abs, &err);
  if (!resolved) {
    return Refuse(what, folder, err == ENOENT ? "does not exist" : "cannot be resolved: " +
                                                                       Errno(err));
  }
  return CheckChain(*resolved, what, folder, last);
}

// Opens folder `p` (no link followed) and gives it `mode` and `group`.
Status SetFolderMode(const fs::path& p, mode_t mode, std::optional<gid_t> group,
                     std::string_view what, const fs::path& folder) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Refuse(what, folder, "cannot open the new folder " + p.string() + ": " +
                                              Errno(errno));
  int rc = 0;
  std::string step;
  if (group && ::fchown(fd, static_cast<uid_t>(-1), *group) != 0) {
    rc = errno;
    step = "give it to group " + std::to_string(*group);
  }
  if (rc == 0 && ::fchmod(fd, mode) != 0) {  // after chown: chown may clear set-id bits
    rc = errno;
    step = "set its mode to " + DescribeMode(mode);
  }
  ::close(fd);
  if (rc != 0) return Refuse(what, folder, "cannot " + step + " (" + p.string() + "): " + Errno(rc));
  return Status::Ok();
}

}  // namespace

bool IsTrustedOwner(const AccountId& uid) { return uid == 0 || uid == ::geteuid(); }

std::string DescribeOwner(const AccountId& uid) {
  std::string name = "no such user";
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::string buf(hint > 0 ? static_cast<std::size_t>(hint) : 16384, '\0');
  struct passwd pw {};
  struct passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    name = found->pw_name;
  }
  return "uid " + std::to_string(uid) + " (" + name + ")";
}

std::string DescribeMode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

Status CheckPrivateFolder(const fs::path& folder, std::string_view what) {
  return CheckFolder(folder, what, Last::kPrivate);
}

Status EnsurePrivateFolder(const fs::path& folder, std::string_view what,
                           const PrivateFolderSpec& spec, std::vector<fs::path>* created) {
  const fs::path abs = fs::absolute(folder).lexically_normal();
  const fs::path base = DeepestExisting(abs);
  if (Status st = CheckLinks(abs, what, folder); !st.ok()) return st;
  int err = 0;
  const std::optional<fs::path> resolved_base = Resolve(base, &err);
  if (!resolved_base) return Refuse(what, folder, base.string() + " cannot be resolved: " + Errno(err));
  if (base != abs) {
    // Build only inside a chain nobody else controls.
    if (Status st = CheckChain(*resolved_base, what, folder, Last::kParent); !st.ok()) return st;
    fs::path cur = *resolved_base;
    const fs::path rest = abs.lexically_relative(base);
    for (auto it = rest.begin(); it != rest.end(); ++it) {
      cur /= *it;
      const bool is_last = std::next(it) == rest.end();
      if (::mkdir(cur.c_str(), 0700) == 0) {
        if (created) created->push_back(cur);
        if (Status st = SetFolderMode(cur, is_last ? spec.mode : 0755,
                                      is_last ? spec.group : std::nullopt, what, folder);
            !st.ok()) {
          return st;
        }
      } else if (errno != EEXIST) {
        // Typically a plain user's broker under /run: an administrator makes it once.
        return {Errc::kConfig, std::string(what) + " " + folder.string() + ": cannot create " +
                                   cur.string() + ": " + Errno(errno) +
                                   "; make it as root for this broker's user (`install -d -o " +
                                   std::to_string(::geteuid()) + " -m 0750 " + abs.string() +
                                   "`) or use a folder this broker can create"};
      } else if (Status st = CheckChain(cur, what, folder, Last::kParent); !st.ok()) {
        // Made by someone else since the check (a link, another user's folder):
        // build nothing below it.
        return st;
      }
    }
  }
  return CheckPrivateFolder(folder, what);
}

Status CheckPrivateFolderOrCreatable(const fs::path& folder, std::string_view what) {
  const fs::path abs = fs::absolute(folder).lexically_normal();
  struct stat st {};
  if (::stat(abs.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return {Errc::kConfig, std::string(what) + " " + folder.string() + " is " +
                                 KindOf(st.st_mode) + ", not a folder"};
    }
    return CheckPrivateFolder(folder, what);
  }
  const fs::path base = DeepestExisting(abs);
  if (::stat(base.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    return {Errc::kConfig, std::string(what) + " " + folder.string() + ": " + base.string() +
                               " is " + KindOf(st.st_mode) + ", not a folder"};
  }
  if (Status st = CheckLinks(abs, what, folder); !st.ok()) return st;
  int err = 0;
  const std::optional<fs::path> resolved_base = Resolve(base, &err);
  if (!resolved_base) return Refuse(what, folder, base.string() + " cannot be resolved: " + Errno(err));
  return CheckChain(*resolved_base, what, folder, Last::kParent);
}

std::vector<fs::path> RemoveCreatedFolders(const std::vector<fs::path>& created) {
  std::vector<fs::path> removed;
  for (auto it = created.rbegin(); it != created.rend(); ++it) {
    if (::rmdir(it->c_str()) == 0) removed.push_back(*it);
  }
  return removed;
}

Status WriteFileAtomically(const fs::path& path, std::string_view text, mode_t mode,
                           bool durable) {
  std::string tmpl = path.string() + ".tmp.XXXXXX";
  // mkostemp: O_CREAT | O_EXCL (a link at the name is never followed) under
  // a random name, so nobody can plant anything there in advance.
  const int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  auto failed = [&](const fs::path& p, const char* step, int e) {
    return Status{Errc::kInternal, p.string() + ": " + step + " failed: " + Errno(e)};
  };
  if (fd < 0) return failed(tmpl, "create", errno);
  auto discard = [&](const char* step) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    return failed(tmpl, step, e);
  };
  if (::fchmod(fd, mode) != 0) return discard("chmod");
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return discard("write");
    }
    done += static_cast<std::size_t>(n);
  }
  if (durable && ::fsync(fd) != 0) return discard("fsync");
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmpl.c_str());
    return failed(tmpl, "close", e);
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmpl.c_str());
    return failed(path, "rename", e);
  }
  if (!durable) return Status::Ok();
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

Result<std::optional<std::string>> ReadFileNoFollow(const fs::path& path, std::size_t max_bytes) {
  auto bad = [&](const std::string& why) {
    return Status{Errc::kConfig, path.string() + ": " + why};
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    if (errno == ELOOP) {
      return bad("is a symbolic link; the broker follows no link to its own files: remove it");
    }
    return bad("cannot open: " + Errno(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return bad("cannot stat: " + Errno(errno));
  if (!S_ISREG(st.st_mode)) return bad("is " + KindOf(st.st_mode) + ", not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    return bad("larger than " + std::to_string(max_bytes) + " bytes");
  }
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return bad("cannot read: " + Errno(errno));
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > max_bytes) return bad("larger than " + std::to_string(max_bytes) + " bytes");
  }
  return std::optional<std::string>(std::move(text));
}

Result<int> OpenForAppendNoFollow(const fs::path& path, std::string_view what, mode_t mode) {
  auto bad = [&](const std::string& why) {
    return Status{Errc::kConfig, std::string(what) + " " + path.string() + ": " + why};
  };
  const int fd = ::open(path.c_str(),
                        O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == ELOOP) return bad("is a symbolic link; the broker follows none: remove it");
    if (errno == EISDIR) return bad("is a folder, not a file");
    return bad("cannot open: " + Errno(errno));
  }
  struct stat st {};
  std::string why;
  if (::fstat(fd, &st) != 0) {
    why = "cannot stat: " + Errno(errno);
  } else if (!S_ISREG(st.st_mode)) {
    why = "is " + KindOf(st.st_mode) + ", not a regular file";
  } else if (!IsTrustedOwner(st.st_uid)) {
    why = "is owned by " + DescribeOwner(st.st_uid) + ", not by this broker (" +
          DescribeOwner(::geteuid()) + ") or root: remove it";
  } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    why = "is writable by group or others (mode " + DescribeMode(st.st_mode) + "); run `chmod 640 " +
          path.string() + "`";
  } else if (::fcntl(fd, F_SETFL, O_WRONLY | O_APPEND) != 0) {
    why = "cannot clear O_NONBLOCK: " + Errno(errno);
  }
  if (!why.empty()) {
    ::close(fd);
    return bad(why);
  }
  return fd;
}

Status CheckWritableFileSlot(const fs::path& path, std::string_view what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return {Errc::kConfig, std::string(what) + " " + path.string() + ": cannot be examined: " +
                               Errno(errno)};
  }
  std::string why;
  if (S_ISDIR(st.st_mode)) {
    why = "is a folder, not a file";
  } else if (S_ISLNK(st.st_mode)) {
    why = "is a symbolic link; the broker follows none: remove it";
  } else if (!S_ISREG(st.st_mode)) {
    why = "is " + KindOf(st.st_mode) + ", not a regular file";
  } else if (!IsTrustedOwner(st.st_uid)) {
    why = "is owned by " + DescribeOwner(st.st_uid) + ", not by this broker (" +
          DescribeOwner(::geteuid()) + ") or root: remove it";
  }
  if (why.empty()) return Status::Ok();
  return {Errc::kConfig, std::string(what) + " " + path.string() + " " + why};
}

Status CheckOperatorFile(int fd, const fs::path& path, std::string_view what,
                         FileSecrecy secrecy) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return {Errc::kConfig, path.string() + ": cannot stat " + std::string(what) + ": " +
                               Errno(errno)};
  }
  const std::string name = path.string();
  if (!S_ISREG(st.st_mode)) {
    return {Errc::kConfig, name + ": " + std::string(what) + " is " + KindOf(st.st_mode) +
                               ", not a regular file"};
  }
  if (!IsTrustedOwner(st.st_uid)) {
    return {Errc::kConfig, name + ": " + std::string(what) + " is owned by " +
                               DescribeOwner(st.st_uid) + " (mode " + DescribeMode(st.st_mode) +
                               "): only root or the broker's user (" +
                               DescribeOwner(::geteuid()) +
                               ") may own it, or that user could change it; run `chown " +
                               std::to_string(::geteuid()) + " " + name + " && chmod 600 " + name +
                               "`"};
  }
  const mode_t forbidden =
      secrecy == FileSecrecy::kSecret ? mode_t{077} : mode_t{S_IWGRP | S_IWOTH};
  if ((st.st_mode & forbidden) != 0) {
    return {Errc::kConfig,
            name + ": " + std::string(what) + " has mode " + DescribeMode(st.st_mode) +
                (secrecy == FileSecrecy::kSecret ? ": group or others may access it"
                                                 : ": group or others may change it") +
                " (owner " + DescribeOwner(st.st_uid) + "); run `chmod 600 " + name + "`"};
  }
  return Status::Ok();
}

Result<std::vector<std::uint8_t>> ReadSecretFile(const fs::path& path, std::string_view what,
                                                 std::size_t max_bytes) {
  const std::string name = path.string();
  const std::string file = std::string(what) + " " + name;
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Status(Errc::kConfig, "cannot open " + file + ": " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return Status(Errc::kConfig, "cannot stat " + file + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return Status(Errc::kConfig, file + " is not a regular file");
  }
  if (!IsTrustedOwner(st.st_uid)) {
    // Its owner could change the key (or read it): only root or the broker's user.
    return Status(Errc::kConfig, file + " is owned by " + DescribeOwner(st.st_uid) +
                                     ", not by root or the broker's user (" +
                                     DescribeOwner(::geteuid()) + "); run `chown " +
                                     std::to_string(::geteuid()) + " " + name + " && chmod 600 " +
                                     name + "`");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status(Errc::kConfig, file + " has mode " + mode +
                                     ": group or others may access it; run `chmod 600 " + name +
                                     "` (and make it owned by the broker's user)");
  }
  if (st.st_size > static_cast<off_t>(max_bytes)) {
    return Status(Errc::kConfig, file + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  std::vector<std::uint8_t> contents(max_bytes + 1);
  std::size_t got = 0;
  while (got < contents.size()) {
    const ssize_t n = ::read(fd, contents.data() + got, contents.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::explicit_bzero(contents.data(), contents.size());
      return Status(Errc::kConfig, "cannot read " + file + ": " + std::strerror(err));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  // Shrinking keeps the bytes past `got` zero (never written).
  contents.resize(got);
  return contents;
}

}  // namespace dsb::broker
