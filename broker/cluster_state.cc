#include "broker/cluster_state.h"

#ifndef _WIN32
#include <fcntl.h>
#include <unistd.h>
#endif

#include <boost/json.hpp>
#include <charconv>
#include <chrono>
#include "broker/crypto/crypto.h"
#include "common/account.h"
#include "broker/secure_fs.h"
#include "broker/state_file.h"

namespace dsb::broker {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

fs::path FileOf(const fs::path& dir, const std::string& id, const char* suffix) {
  return dir / (id + suffix);
}

// nullopt if the file does not exist; the text otherwise (at most 1 MiB).
Result<std::optional<std::string>> ReadSmall(const fs::path& path) {
  return ReadFileNoFollow(path, 1u << 20);  // no link followed (secure_fs.h)
}

Result<std::optional<std::uint64_t>> ReadNumber(const fs::path& path) {
  auto text = ReadSmall(path);
  if (!text.ok()) return text.status();
  if (!text->has_value()) return std::optional<std::uint64_t>();
  std::string s = **text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return Status(Errc::kConfig, path.string() + ": not a decimal number (" +
                                     std::to_string(s.size()) + " bytes); it is this broker's "
                                     "own file: restore it from a backup or remove it");
  }
  return std::optional<std::uint64_t>(v);
}

#ifdef _WIN32
// Nothing to do on Windows: a folder cannot be opened for FlushFileBuffers
// without backup rights, and NTFS journals the rename itself (state_file's
// replace is MoveFileExW with MOVEFILE_WRITE_THROUGH, which returns once the
// rename is on disk).
void SyncDir(const fs::path&) {}
#else
void SyncDir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}
#endif

std::uint32_t U32(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_int64() || v->as_int64() < 0 || v->as_int64() > 65535) {
    throw std::invalid_argument(std::string(key) + " must be an integer 0..65535");
  }
  return static_cast<std::uint32_t>(v->as_int64());
}

std::uint64_t U64(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) throw std::invalid_argument(std::string(key) + " missing");
  std::uint64_t x = 0;
  const std::string s(v->as_string());
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc() || end != s.data() + s.size()) {
    throw std::invalid_argument(std::string(key) + " is not a decimal string");
  }
  return x;
}

}  // namespace

Result<std::uint64_t> NextEpoch(const fs::path& dir, const std::string& id) {
  const fs::path path = FileOf(dir, id, ".epoch");
  auto last = ReadNumber(path);
  if (!last.ok()) return last.status();
  std::uint64_t next = 0;
  if (last->has_value()) {
    if (**last == UINT64_MAX) {
      return Status(Errc::kConfig, path.string() + ": the epoch counter is at its maximum; "
                                                   "write 1 into it and restart the coordinator "
                                                   "too");
    }
    next = **last + 1;
  } else {
    next = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
    if (next == 0) next = 1;
  }
  if (Status s = WriteFileSynced(path, std::to_string(next) + "\n"); !s.ok()) return s;
  return next;
}

std::uint64_t RandomInstanceId() {
  std::uint64_t v = 0;
  while (v == 0) {
    if (!crypto::RandomBytes(std::span(reinterpret_cast<std::uint8_t*>(&v), sizeof v))) {
      // The CSPRNG failed: fall back to a mix that differs per process and start.
      const auto pid = static_cast<std::uint64_t>(CurrentProcessId());
      const auto now =
          static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
      v = (pid * std::uint64_t{0x9E3779B97F4A7C15}) ^ now;
    }
  }
  return v;
}

Status WriteAccepted(const fs::path& dir, const std::string& id, const AcceptedConfig& a) {
  const json::object o{{"version", 1},
                       {"generation", std::to_string(a.generation)},
                       {"coordinator", a.coordinator},
                       {"epoch", std::to_string(a.epoch)},
                       {"system_slots", a.system_slots},
                       {"floor", a.floor}};
  return WriteFileSynced(FileOf(dir, id, ".accepted"), json::serialize(o) + "\n");
}

Status EraseAccepted(const fs::path& dir, const std::string& id) {
  std::error_code ec;
  fs::remove(FileOf(dir, id, ".accepted"), ec);
  if (ec) {
    return Status(Errc::kInternal,
                  FileOf(dir, id, ".accepted").string() + ": cannot remove: " + ec.message());
  }
  SyncDir(dir);
  return Status::Ok();
}

std::optional<AcceptedConfig> ReadAccepted(const fs::path& dir, const std::string& id) {
  auto text = ReadSmall(FileOf(dir, id, ".accepted"));
  if (!text.ok() || !text->has_value()) return std::nullopt;
  boost::system::error_code ec;
  json::value v = json::parse(**text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  try {
    const json::object& o = v.as_object();
    AcceptedConfig a;
    a.generation = U64(o, "generation");
    a.epoch = U64(o, "epoch");
    const json::value* c = o.if_contains("coordinator");
    if (c != nullptr && c->is_string()) a.coordinator = std::string(c->as_string());
    a.system_slots = U32(o, "system_slots");
    a.floor = U32(o, "floor");
    return a;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

Status WriteRecords(const fs::path& dir, const std::string& id,
                    const std::vector<lease::AcceptanceRecord>& records) {
  json::array list;
  for (const auto& r : records) {
    json::array targets;
    for (std::size_t i = 0; i < r.targets.size(); ++i) {
      targets.push_back(json::object{{"target", r.targets[i]},
                                     {"system_slots", r.system_slots.at(i)},
                                     {"floor", r.floors.at(i)}});
    }
    list.push_back(json::object{{"broker", r.broker_id},
                                {"epoch", std::to_string(r.epoch)},
                                {"instance", std::to_string(r.instance)},
                                {"generation", std::to_string(r.generation)},
                                {"targets", std::move(targets)}});
  }
  return WriteFileSynced(FileOf(dir, id, ".acceptances"),
                         json::serialize(json::object{{"version", 1}, {"records", list}}) + "\n");
}

Result<std::vector<lease::AcceptanceRecord>> ReadRecords(const fs::path& dir,
                                                         const std::string& id) {
  const fs::path path = FileOf(dir, id, ".acceptances");
  auto text = ReadSmall(path);
  if (!text.ok()) return text.status();
  std::vector<lease::AcceptanceRecord> out;
  if (!text->has_value()) return out;
  boost::system::error_code ec;
  json::value v = json::parse(**text, ec);
  const json::value* records = !ec && v.is_object() ? v.as_object().if_contains("records") : nullptr;
  if (records == nullptr || !records->is_array()) {
    return Status(Errc::kConfig, path.string() + ": not a records file (JSON with \"records\")");
  }
  try {
    for (const json::value& e : records->as_array()) {
      if (!e.is_object()) throw std::invalid_argument("a record is not an object");
      const json::object& o = e.as_object();
      lease::AcceptanceRecord r;
      const json::value* b = o.if_contains("broker");
      if (b == nullptr || !b->is_string()) throw std::invalid_argument("broker missing");
      r.broker_id = std::string(b->as_string());
      r.epoch = U64(o, "epoch");
      r.instance = U64(o, "instance");
      r.generation = U64(o, "generation");
      const json::value* ts = o.if_contains("targets");
      if (ts == nullptr || !ts->is_array()) throw std::invalid_argument("targets missing");
      for (const json::value& t : ts->as_array()) {
        if (!t.is_object() || !t.as_object().contains("target") ||
            !t.as_object().at("target").is_string()) {
          throw std::invalid_argument("a target entry is malformed");
        }
        r.targets.emplace_back(t.as_object().at("target").as_string());
        r.system_slots.push_back(U32(t.as_object(), "system_slots"));
        r.floors.push_back(U32(t.as_object(), "floor"));
      }
      out.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return Status(Errc::kConfig, path.string() + ": " + e.what());
  }
  return out;
}

Status WriteMark(const fs::path& dir, const std::string& id, const char* suffix,
                 std::uint64_t generation) {
  return WriteFileSynced(FileOf(dir, id, suffix), std::to_string(generation) + "\n");
}

Result<std::optional<std::uint64_t>> ReadMark(const fs::path& dir, const std::string& id,
                                              const char* suffix) {
  return ReadNumber(FileOf(dir, id, suffix));
}

}  // namespace dsb::broker
