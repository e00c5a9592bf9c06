// What survives a machine restart (broker.state_dir, state_file.h) and what
// the broker makes of it: OpenState() reads the previous life's state file,
// HoldBackAfterUncleanEnd() quarantines what an unclean end may have left open
// on the server, RecordCapacity() writes a capacity raise ahead to the file.
#include "broker/broker_impl.h"

namespace dsb::broker {

Status Broker::Impl::OpenState(std::optional<UncleanEnd>* unclean) {
  if (!config.state_dir) {
    bool quarantines = false;
    for (const config::TargetConfig& t : config.targets) quarantines |= t.quarantine.count() > 0;
    if (quarantines) {
      spdlog::warn("broker.state_dir is not set: after a machine restart this broker cannot know "
                   "that sessions of its earlier clients may still be open on the server, and "
                   "will not quarantine them");
    }
    return Status::Ok();
  }
  // Only this broker may write there (secure_fs.h): nothing is written
  // through a link another user planted.
  if (Status st = EnsurePrivateFolder(*config.state_dir, "broker.state_dir",
                                      {.mode = 0700, .group = std::nullopt});
      !st.ok()) {
    return st;
  }
  state_path = StateFilePath(*config.state_dir, config.id);
  auto lock = InstanceLock::Acquire(InstanceLock::Beside(*state_path),
                                    "state file " + state_path->string() +
                                                   " (broker id " + config.id + ")");
  if (!lock.ok()) return lock.status();
  state_lock.emplace(std::move(lock).value());
  auto read = ReadState(*state_path);
  if (!read.ok()) {
    // Our own file, damaged: assume the worst (an unclean end at full capacity).
    spdlog::warn("{}; assuming the previous broker ended uncleanly at full capacity (the file "
                 "is rewritten now)",
                 read.status().message());
    *unclean = UncleanEnd{"the previous broker", std::nullopt};
    return Status::Ok();
  }
  const std::optional<BrokerState>& previous = *read;
  if (previous && !previous->clean) {
    *unclean = UncleanEnd{"the previous broker (pid " + std::to_string(previous->pid) + ")",
                          previous->capacity_high_water};
  }
  return Status::Ok();
}

void Broker::Impl::HoldBackAfterUncleanEnd(Target& tg, const UncleanEnd& unclean,
                                           Clock::time_point now) {
  const config::TargetConfig& t = tg.config();
  const std::uint32_t slots = unclean.For(t);
  const std::uint32_t registrations =
      config.cluster_mode() ? static_cast<std::uint32_t>(config.self().system_slots) : 0;
  if (slots + registrations == 0) return;
  if (t.quarantine.count() <= 0) {
    spdlog::warn("target {}: {} ended without a clean stop and segment {} is gone (machine "
                 "restart?); its clients' sessions may still be open on the server, but "
                 "quarantine is 0 for this target: nothing held back",
                 t.name, unclean.who, tg.segment_name());
    return;
  }
  const std::uint32_t held_back = tg.HoldBackAfterUncleanEnd(slots, registrations, now);
  spdlog::warn("target {}: {} ended without a clean stop and segment {} is gone (machine "
               "restart?): up to {} session(s) of its clients may still be open on the server; "
               "{} slot(s){} held in quarantine for {} ms",
               t.name, unclean.who, tg.segment_name(), slots + registrations, held_back,
               registrations > 0 ? " and " + std::to_string(registrations) + " registration(s)"
                                 : std::string(),
               std::chrono::duration_cast<std::chrono::milliseconds>(t.quarantine).count());
}

std::uint32_t Broker::Impl::RecordCapacity(const Target& tg, std::uint32_t capacity) {
  if (!state_path) return capacity;
  const std::uint32_t hw = state.capacity_high_water[tg.name()];
  if (capacity <= hw || stopping) return std::min(capacity, hw);
  BrokerState next = state;
  next.capacity_high_water[tg.name()] = capacity;
  if (Status st = WriteState(*state_path, next); !st.ok()) {
    spdlog::error("target {}: {}; capacity stays at {} (what the state file records) instead of "
                  "{}",
                  tg.name(), st.message(), hw, capacity);
    return hw;
  }
  state = std::move(next);
  return capacity;
}

}  // namespace dsb::broker
