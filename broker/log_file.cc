#include "broker/log_file.h"

#ifdef _WIN32
#include <io.h>
#else
#include <unistd.h>
#endif

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <vector>
#include <spdlog/sinks/base_sink.h>

#include "broker/secure_fs.h"

namespace dsb::broker {

namespace {

// Writes each formatted message to `fd` (O_APPEND): unbuffered, so nothing
// is lost when the process is killed.
class FdSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  ~FdSink() override { ::close(fd_); }
  FdSink(const FdSink&) = delete;
  FdSink& operator=(const FdSink&) = delete;

  // Writes go to `fd` from now on; the old descriptor is closed. Under the
  // sink's mutex: a line being written finishes on the old file.
  void Switch(int fd) {
    int old = -1;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      old = fd_;
      fd_ = fd;
    }
    ::close(old);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    const char* p = buf.data();
    std::size_t left = buf.size();
    while (left > 0) {
#ifdef _WIN32
      // The CRT's _write takes an unsigned count (a log line is far smaller).
      const ssize_t n = ::_write(fd_, p, static_cast<unsigned>(std::min<std::size_t>(left, 1u << 30)));
#else
      const ssize_t n = ::write(fd_, p, left);
#endif
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // a full disk must not take the broker down
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void flush_() override {}

 private:
  int fd_;
};

// The descriptor of a log file opened by the rules of OpenLogFile.
Result<int> OpenLogFd(const std::filesystem::path& file) {
  const std::filesystem::path folder =
      file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  // Folders made here go again if the file cannot be opened (nothing is left
  // behind by a refused start).
  std::vector<std::filesystem::path> created;
  if (Status st = EnsurePrivateFolder(folder, "broker.log_file's folder",
                                      {.mode = 0755, .group = std::nullopt}, &created);
      !st.ok()) {
    RemoveCreatedFolders(created);
    return st;
  }
  Result<int> fd = OpenForAppendNoFollow(file, "broker.log_file", 0640);
  if (!fd.ok()) {
    RemoveCreatedFolders(created);
    return fd.status();
  }
  return *fd;
}

}  // namespace

Result<std::shared_ptr<spdlog::sinks::sink>> OpenLogFile(const std::filesystem::path& file) {
  Result<int> fd = OpenLogFd(file);
  if (!fd.ok()) return fd.status();
  return std::shared_ptr<spdlog::sinks::sink>(std::make_shared<FdSink>(*fd));
}

Status ReopenLogFile(spdlog::logger& logger, const std::filesystem::path& file) {
  for (const spdlog::sink_ptr& sink : logger.sinks()) {
    if (auto fd_sink = std::dynamic_pointer_cast<FdSink>(sink)) {
      Result<int> fd = OpenLogFd(file);
      if (!fd.ok()) return fd.status();
      fd_sink->Switch(*fd);
      return Status::Ok();
    }
  }
  return Status(Errc::kInvalidArgument, "the broker logs to stderr, not to a log file");
}

}  // namespace dsb::broker
