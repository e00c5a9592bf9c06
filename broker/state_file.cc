#include "broker/state_file.h"

#include <boost/json.hpp>

#include "broker/secure_fs.h"

namespace dsb::broker {

namespace json = boost::json;

namespace {

constexpr std::int64_t kStateVersion = 1;

Status Bad(const std::filesystem::path& path, const std::string& why) {
  return {Errc::kConfig, "state file " + path.string() + ": " + why};
}

}  // namespace

std::filesystem::path StateFilePath(const std::filesystem::path& dir, const std::string& id) {
  return dir / (id + ".state");
}

Result<std::optional<BrokerState>> ReadState(const std::filesystem::path& path) {
  Result<std::optional<std::string>> text = ReadFileNoFollow(path, 1 << 20);
  if (!text.ok()) return Status{Errc::kConfig, "state file " + text.status().message()};
  if (!text->has_value()) return std::optional<BrokerState>{};
  json::error_code jec;
  json::value v = json::parse(**text, jec);
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
  return WriteFileAtomically(path, text, 0600);
}

}  // namespace dsb::broker
