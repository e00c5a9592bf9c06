#include "broker/start_checks.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "broker/secure_fs.h"
#include "broker/wire/auth.h"

namespace dsb::broker {

Status CheckStartPaths(const config::BrokerConfig& config) {
  if (Status st = CheckPrivateFolderOrCreatable(config.socket.parent_path(),
                                                "broker.socket's folder");
      !st.ok()) {
    return st;
  }
  struct stat st {};
  if (::lstat(config.socket.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
    return {Errc::kConfig, "broker.socket " + config.socket.string() +
                               " exists and is not a socket: remove it or choose another path"};
  }
  if (config.state_dir) {
    if (Status s = CheckPrivateFolderOrCreatable(*config.state_dir, "broker.state_dir"); !s.ok()) {
      return s;
    }
  }
  if (config.log_file) {
    const std::filesystem::path& f = *config.log_file;
    // A folder named as the file is the likelier mistake: say that first.
    if (Status s = CheckWritableFileSlot(f, "broker.log_file"); !s.ok()) return s;
    if (Status s = CheckPrivateFolderOrCreatable(f.parent_path(), "broker.log_file's folder");
        !s.ok()) {
      return s;
    }
  }
  if (config.key_file) {
    auto key = wire::ClusterKey::LoadFile(*config.key_file);
    if (!key.ok()) return {Errc::kConfig, "broker.key_file: " + key.status().message()};
  }
  return Status::Ok();
}

Status CheckOperatorFiles(const std::filesystem::path& broker_file,
                          const config::BrokerConfig& config) {
  std::vector<std::filesystem::path> files{broker_file};
  if (config.cluster_file) files.push_back(*config.cluster_file);
  for (const std::filesystem::path& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      return {Errc::kConfig, f.string() + ": cannot open: " + std::strerror(errno)};
    }
    Status st = CheckOperatorFile(fd, f, "config file", FileSecrecy::kConfig);
    ::close(fd);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace dsb::broker
