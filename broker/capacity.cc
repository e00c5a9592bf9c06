// Each target's capacity while the broker runs: the effective limit in
// single-machine mode (ApplyLimit, ApplySingleCapacity), the lease in cluster
// mode (ApplyLease, and the hooks the cluster node calls), and the hold after
// a client's session-limit refusal (HoldAfterRefusal, ActiveHold,
// ArmHoldTimer). A raise is written ahead to the state file (RecordCapacity,
// state_policy.cc).
#include "broker/broker_impl.h"

namespace dsb::broker {

ClusterNode::Hooks Broker::Impl::ClusterHooks() {
  ClusterNode::Hooks hooks;
  hooks.usage = [this] {
    std::vector<lease::TargetUsage> usage;
    for (Target* t : ordered) {
      const shm::Counts c = t->Counts();
      // Quarantined and cooling slots count as held: the server may still
      // have them (B2). The B2 report uses every slot not disabled (free
      // ones included): a scan racing clients can undercount held slots,
      // never those.
      // Registrations (R2): system slots marked in the table (adopted
      // owners that have not reconnected yet included), and dead clients'
      // registrations still in quarantine.
      const std::uint32_t registered =
          std::max(c.held_system, RegisteredOn(t->config().name)) +
          t->quarantined_registrations();
      usage.push_back(lease::TargetUsage{c.held_action + c.quarantined + c.cooling, c.waiters,
                                         c.enabled + c.retiring + c.cooling_retiring,
                                         registered});
    }
    return usage;
  };
  // R5: a clean stop admits nothing new before its goodbye counts what is held.
  hooks.freeze = [this] {
    for (Target* t : ordered) t->FreezeAtHeld();
  };
  // R1: adopted action slots are kept until the previous broker's lease deadline.
  for (Target* t : ordered) {
    hooks.inherited.push_back(t->adopted_segment() ? t->lease_deadline() : std::nullopt);
  }
  hooks.apply = [this](std::size_t i, const lease::TargetCapacity& cap) {
    if (i >= ordered.size()) return;
    lease_caps.resize(ordered.size());
    CountLeaseEvents(i, lease_caps[i], cap, Clock::now());  // metrics_collect.cc
    lease_caps[i] = cap;
    ApplyLease(i);
  };
  return hooks;
}

void Broker::Impl::ApplyLease(std::size_t i) {
  if (i >= lease_caps.size()) return;
  const lease::TargetCapacity& cap = lease_caps[i];
  const std::uint32_t floor = cap.action_capacity - cap.lease;
  std::uint32_t wanted = cap.action_capacity;
  if (const RefusalHold* h = ActiveHold(i, Clock::now())) {
    wanted = std::max(floor, std::min(wanted, h->capacity));
  }
  // Write-ahead: the high water is on disk before a client can use it;
  // if it cannot be written, capacity stays at what is on disk.
  const std::uint32_t capacity = std::max(floor, RecordCapacity(*ordered[i], wanted));
  ordered[i]->SetLeaseCapacity(capacity, floor, cap.lease_valid_until);
}

const Broker::Impl::RefusalHold* Broker::Impl::ActiveHold(std::size_t index,
                                                          Clock::time_point now) {
  holds.resize(ordered.size());
  std::optional<RefusalHold>& h = holds[index];
  if (!h) return nullptr;
  const bool same_grant = cluster && index < lease_caps.size() &&
                          h->applied == lease_caps[index].applied;
  if (now < h->until || same_grant) return &*h;
  h.reset();  // the hold is over (cluster: and a newer grant decided)
  return nullptr;
}

std::size_t Broker::Impl::IndexOf(const Target& t) const {
  return static_cast<std::size_t>(std::find(ordered.begin(), ordered.end(), &t) - ordered.begin());
}

void Broker::Impl::ApplyLimit(std::size_t index, const lease::LimitChange&) {
  ApplySingleCapacity(index);
}

void Broker::Impl::ApplySingleCapacity(std::size_t index) {
  if (index >= ordered.size() || !limits) return;
  Target& tg = *ordered[index];
  const auto reserve = static_cast<std::uint32_t>(tg.config().reserve);
  const std::uint32_t limit = limits->limit(index);
  std::uint32_t wanted = limit > reserve ? limit - reserve : 0;
  if (const RefusalHold* h = ActiveHold(index, Clock::now())) {
    wanted = std::min(wanted, h->capacity);
  }
  // A raise is written ahead to the state file (see RecordCapacity); a shrink
  // retires held slots above it (they come back as their holders release).
  const std::uint32_t capacity = wanted > tg.capacity() ? RecordCapacity(tg, wanted) : wanted;
  if (capacity != tg.capacity()) tg.SetCapacity(capacity);
}

void Broker::Impl::ArmHoldTimer(Clock::time_point at) {
  hold_timer.expires_at(at);
  hold_timer.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping) return;
    for (std::size_t i = 0; i < ordered.size(); ++i) {
      if (cluster) {
        ApplyLease(i);
      } else {
        ApplySingleCapacity(i);
      }
    }
  });
}

void Broker::Impl::HoldAfterRefusal(std::size_t index, std::uint32_t in_use) {
  if (index >= ordered.size()) return;
  const auto now = Clock::now();
  std::uint32_t cap = in_use;
  if (const RefusalHold* h = ActiveHold(index, now)) cap = std::min(cap, h->capacity);
  RefusalHold next{cap, now + kRefusalHold, 0};
  if (cluster) {
    if (index >= lease_caps.size()) return;
    next.applied = lease_caps[index].applied;  // ApplyLease keeps the floor
    holds[index] = next;
    ApplyLease(index);
  } else {
    // Never below one system and one action slot (the single-machine minimum,
    // less the reserve): a client reporting fake refusals must not close the
    // target for everyone.
    const config::TargetConfig& t = ordered[index]->config();
    next.capacity = std::max(next.capacity, std::min<std::uint32_t>(
                                                static_cast<std::uint32_t>(t.limit - t.reserve), 2));
    holds[index] = next;
    ApplySingleCapacity(index);
  }
  ArmHoldTimer(now + kRefusalHold);
}

}  // namespace dsb::broker
