#include "broker/state_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace dsb::broker {

namespace json = boost::json;

namespace {

constexpr std::int64_t kStateVersion = 1;

Status Bad(const std::filesystem::path& path, const std::string& why) {
  return {Errc::kConfig, "state file " + path.string() + ": " + why};
}

Status Failed(const std::filesystem::path& path, const std::string& step) {
  return {Errc::kInternal,
          "state file " + path.string() + ": " + step + " failed: " + std::strerror(errno)};
}

}  // namespace

std::filesystem::path StateFilePath(const std::filesystem::path& dir, const std::string& id) {
  return dir / (id + ".state");
}

Result<std::optional<BrokerState>> ReadState(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<BrokerState>{};
  std::ifstream in(path, std::ios::binary);
  if (!in) return Bad(path, std::string("cannot read: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > 1 << 20) return Bad(path, "larger than 1 MiB");
  json::error_code jec;
  json::value v = json::parse(text.str(), jec);
  if (jec) return Bad(path, "not JSON: " + jec.message());
  const json::object* o = v.if_object();
  if (o == nullptr) return Bad(path, "not a JSON object");
  const json::value* version = o->if_contains("version");
  if (version == nullptr || !version->is_int64() || version->as_int64() != kStateVersion) {
    return Bad(path, "\"version\" must be " + std::to_string(kStateVersion));
  }
  BrokerState state;
  if (const json::value* pid = o->if_contains("pid"); pid != nullptr && pid->is_int64()) {
    state.pid = pid->as_int64();
  }
  const json::value* clean = o->if_contains("clean");
  if (clean == nullptr || !clean->is_bool()) return Bad(path, "\"clean\" must be true or false");
  state.clean = clean->as_bool();
  const json::value* targets = o->if_contains("targets");
  if (targets == nullptr || !targets->is_object()) return Bad(path, "\"targets\" must be an object");
  for (const auto& [name, t] : targets->as_object()) {
    const json::value* hw = t.is_object() ? t.as_object().if_contains("capacity_high_water")
                                          : nullptr;
    if (hw == nullptr || !hw->is_int64() || hw->as_int64() < 0 || hw->as_int64() > 65535) {
      return Bad(path, "targets." + std::string(name) +
                           ".capacity_high_water must be an integer 0 ... 65535");
    }
    state.capacity_high_water[std::string(name)] = static_cast<std::uint32_t>(hw->as_int64());
  }
  return std::optional<BrokerState>(std::move(state));
}

Status WriteState(const std::filesystem::path& path, const BrokerState& state) {
  json::object targets;
  for (const auto& [name, hw] : state.capacity_high_water) {
    targets[name] = json::object{{"capacity_high_water", hw}};
  }
  const std::string text = json::serialize(json::object{{"version", kStateVersion},
                                                        {"pid", state.pid},
                                                        {"clean", state.clean},
                                                        {"targets", std::move(targets)}}) +
                           "\n";
  return WriteFileSynced(path, text);
}

Status WriteFileSynced(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return Failed(tmp, "open");
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status st = Failed(tmp, "write");
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Status st = Failed(tmp, "fsync");
    ::close(fd);
    ::unlink(tmp.c_str());
    return st;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = Failed(path, "rename");
    ::unlink(tmp.c_str());
    return st;
  }
  const int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
  return Status::Ok();
}

}  // namespace dsb::broker
