// InstanceLock on Windows (instance_lock.h): a file opened without write
// sharing is the lock; the OS closes the handle when the process ends.
#include <windows.h>

#include <string>
#include <utility>

#include "broker/config/paths.h"
#include "broker/instance_lock.h"
#include "broker/secure_fs.h"

namespace dsb::broker {

namespace {

std::string ErrorText(DWORD code) {
  char* text = nullptr;
  const DWORD n = FormatMessageA(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, code, 0, reinterpret_cast<char*>(&text), 0, nullptr);
  std::string out = n > 0 && text != nullptr ? std::string(text, n) : std::string("error");
  if (text != nullptr) LocalFree(text);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == '.')) {
    out.pop_back();
  }
  return out + " (" + std::to_string(code) + ")";
}

// The pid the holder wrote; "unknown" unless the text is a plain number.
std::string ReadPid(const std::filesystem::path& path) {
  HANDLE h = CreateFileW(path.wstring().c_str(), GENERIC_READ,
                         FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                         OPEN_EXISTING, FILE_FLAG_OPEN_REPARSE_POINT, nullptr);
  if (h == INVALID_HANDLE_VALUE) return "unknown";
  char buf[32] = {};
  DWORD n = 0;
  const BOOL ok = ReadFile(h, buf, sizeof buf - 1, &n, nullptr);
  CloseHandle(h);
  if (!ok || n == 0) return "unknown";
  std::string s(buf, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return instance_lock_detail::QuotablePid(s);
}

}  // namespace

std::filesystem::path InstanceLock::ForSegment(const std::string& segment) {
  // Segment names may carry a namespace ("Local\dsb-ws1-exch01"): keep the
  // last part, which holds the broker's prefix and the target.
  const std::size_t slash = segment.find_last_of("\\/");
  const std::string name = slash == std::string::npos ? segment : segment.substr(slash + 1);
  return config::DefaultPaths().lock_dir / (".dsb-lock-" + name);
}

std::filesystem::path InstanceLock::Beside(const std::filesystem::path& file) {
  if (config::IsNamedPipePath(file)) {
    // A pipe has no folder to put a file in: the lock folder instead.
    return config::DefaultPaths().lock_dir / (file.filename().string() + ".lock");
  }
  std::filesystem::path p = file;
  p += ".lock";
  return p;
}

Result<InstanceLock> InstanceLock::Acquire(const std::filesystem::path& path,
                                           const std::string& what) {
  // The lock folder (segments, pipes) is made on first use, private as
  // state_dir is; a file beside the state file finds its folder made already.
  // An existing folder is checked too: one another user made first (and
  // owns) could hold a lock file of its own, a denial of service.
  if (const std::filesystem::path folder = path.parent_path(); !folder.empty()) {
    if (Status st = EnsurePrivateFolder(folder, "lock folder", {}); !st.ok()) {
      return Status{Errc::kBrokerUnavailable, "cannot lock " + path.string() + " for " + what +
                                                  ": " + st.message()};
    }
  }
  // Share read only: others may read the pid; nobody may open it to write
  // (a second broker) or delete or rename it while this handle is open.
  HANDLE h = CreateFileW(path.wstring().c_str(), GENERIC_READ | GENERIC_WRITE | DELETE,
                         FILE_SHARE_READ, nullptr, OPEN_ALWAYS,
                         FILE_FLAG_OPEN_REPARSE_POINT | FILE_ATTRIBUTE_NORMAL, nullptr);
  if (h == INVALID_HANDLE_VALUE) {
    const DWORD err = GetLastError();
    if (err == ERROR_SHARING_VIOLATION) {
      return Status{Errc::kBrokerUnavailable,
                    what + " is in use by another broker (pid " + ReadPid(path) + ", lock " +
                        path.string() + "); if it is stopping, start again once it has "
                        "exited, else stop it or give this broker its own id, socket and "
                        "shm_prefix"};
    }
    return Status{Errc::kBrokerUnavailable,
                  "cannot open lock file " + path.string() + " for " + what + ": " + ErrorText(err)};
  }
  std::string why;
  BY_HANDLE_FILE_INFORMATION info{};
  if (!GetFileInformationByHandle(h, &info)) {
    why = "cannot examine it: " + ErrorText(GetLastError());
  } else if ((info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
    why = "it is a symbolic link, not made by this broker: remove it as an administrator";
  } else if ((info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0) {
    why = "it is not a regular file: remove it as an administrator";
  } else if (info.nNumberOfLinks != 1) {
    why = "it has " + std::to_string(info.nNumberOfLinks) +
          " names (a hard link to another file): remove this name as an administrator";
  } else if (Status st = CheckWritableFileSlot(path, "lock file"); !st.ok()) {
    why = st.message();  // owned by another account
  }
  if (!why.empty()) {
    CloseHandle(h);
    return Status{Errc::kBrokerUnavailable,
                  "lock file " + path.string() + " for " + what + ": " + why};
  }
  const std::string pid = std::to_string(GetCurrentProcessId()) + "\n";
  LARGE_INTEGER zero{};
  DWORD written = 0;
  if (SetFilePointerEx(h, zero, nullptr, FILE_BEGIN) && SetEndOfFile(h)) {
    (void)WriteFile(h, pid.data(), static_cast<DWORD>(pid.size()), &written, nullptr);
  }
  return InstanceLock(h, path);
}

InstanceLock::InstanceLock(InstanceLock&& other) noexcept
    : fd_(std::exchange(other.fd_, kNone)), path_(std::move(other.path_)) {}

InstanceLock& InstanceLock::operator=(InstanceLock&& other) noexcept {
  if (this != &other) {
    if (fd_ != kNone) CloseHandle(fd_);
    fd_ = std::exchange(other.fd_, kNone);
    path_ = std::move(other.path_);
  }
  return *this;
}

InstanceLock::~InstanceLock() {
  if (fd_ != kNone) CloseHandle(fd_);
}

void InstanceLock::RemoveFile() noexcept {
  if (fd_ == kNone) return;
  // Through the held handle (opened with DELETE): the name goes when it
  // closes, and no other broker can open it in between (no write sharing).
  FILE_DISPOSITION_INFO dispose{};
  dispose.DeleteFile = TRUE;
  (void)SetFileInformationByHandle(fd_, FileDispositionInfo, &dispose, sizeof dispose);
}

}  // namespace dsb::broker
