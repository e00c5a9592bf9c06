#include "broker/lease/agent.h"

#include <algorithm>
#include <set>

#include "broker/lease/time_math.h"
#include "common/check.h"

namespace dsb::lease {
namespace {
// How many sent requests we remember (a grant for an older one is ignored as
// "unknown request", which is always safe).
constexpr std::size_t kMaxRemembered = 64;
}  // namespace

Status LeaseAgent::Validate(const AgentConfig& config) {
  if (config.broker_id.empty()) return {Errc::kConfig, "lease agent: empty broker id"};
  if (config.targets.empty()) return {Errc::kConfig, "lease agent: no targets"};
  std::set<std::string> names;
  for (const auto& t : config.targets) {
    if (t.name.empty()) return {Errc::kConfig, "lease agent: a target has an empty name"};
    if (!names.insert(t.name).second) {
      return {Errc::kConfig, "lease agent: target '" + t.name + "' is listed twice"};
    }
  }
  if (config.term <= Duration::zero()) return {Errc::kConfig, "lease agent: term D must be > 0"};
  if (!(config.eps >= 0.0 && config.eps < 0.1)) {
    return {Errc::kConfig,
            "lease agent: eps " + std::to_string(config.eps) + " is outside [0, 0.1)"};
  }
  if (config.renew_interval < Duration::zero() || config.renew_interval >= config.term) {
    return {Errc::kConfig, "lease agent: renew interval must be in [0, D)"};
  }
  if (config.resend_interval < Duration::zero() || config.resend_interval >= config.term) {
    return {Errc::kConfig, "lease agent: resend interval must be in [0, D)"};
  }
  if (config.fast_renew_interval < Duration::zero()) {
    return {Errc::kConfig, "lease agent: fast renew interval must be >= 0"};
  }
  return Status::Ok();
}

LeaseAgent::LeaseAgent(AgentConfig config, TimePoint now) : config_(std::move(config)) {
  const Status valid = Validate(config_);
  DSB_CHECK(valid.ok(), "%s", valid.message().c_str());
  renew_interval_ =
      config_.renew_interval > Duration::zero() ? config_.renew_interval : config_.term / 3;
  resend_interval_ =
      config_.resend_interval > Duration::zero() ? config_.resend_interval : config_.term / 12;
  fast_renew_interval_ = config_.fast_renew_interval > Duration::zero()
                             ? config_.fast_renew_interval
                             : config_.term / 24;
  lease_span_ =
      config_.switches.b1_eps_margin ? ShrinkByEps(config_.term, config_.eps) : config_.term;
  next_renew_ = now;
  leases_.resize(config_.targets.size());
  frozen_.assign(config_.targets.size(), kUnset);
  accepted_ = !config_.switches.r1_nothing_until_accepted;  // off: broken on purpose
}

std::uint32_t LeaseAgent::Floor(std::size_t target) const {
  return accepted_ ? config_.targets[target].floor : 0;
}

TargetCapacity LeaseAgent::Capacity(std::size_t target, TimePoint now) const {
  DSB_CHECK(target < leases_.size(), "target %zu of %zu", target, leases_.size());
  const Lease& l = leases_[target];
  TargetCapacity c;
  c.applied = l.applied;
  c.registration_capacity = accepted_ ? config_.targets[target].system_slots : 0;
  if (l.amount > 0 && now < l.valid_until) {
    c.lease = l.amount;
    c.lease_valid_until = l.valid_until;
  }
  // R1: until accepted, adopted action slots are kept (never more than were
  // held, ratcheting down as they are released) until the previous instance's
  // lease deadline; nothing new is admitted.
  const auto& inherited = config_.targets[target].inherited_until;
  const std::uint32_t frozen = frozen_[target] == kUnset ? 0 : frozen_[target];
  if (!accepted_ && inherited && now < *inherited && frozen > c.lease) {
    c.lease = frozen;
    c.lease_valid_until = *inherited;
  }
  c.action_capacity = Floor(target) + c.lease;
  return c;
}

bool LeaseAgent::MayAdmitRegistration(std::size_t target, std::uint32_t registered) const {
  DSB_CHECK(target < leases_.size(), "target %zu of %zu", target, leases_.size());
  return accepted_ && registered < config_.targets[target].system_slots;
}

bool LeaseAgent::MayAdmitAction(std::size_t target, std::uint32_t registered, std::uint32_t actions,
                                TimePoint now) const {
  const TargetCapacity c = Capacity(target, now);
  if (config_.switches.b1_two_counters) return actions < c.action_capacity;
  // Broken on purpose (tests only): one shared capacity, so an action may use
  // an idle system slot.
  return std::uint64_t{registered} + actions <
         std::uint64_t{config_.targets[target].system_slots} + c.action_capacity;
}

AgentStep LeaseAgent::Step(TimePoint now) {
  AgentStep step;
  step.deadline = next_renew_;
  if (outstanding_ && !outstanding_answered_) step.deadline = std::min(step.deadline, next_resend_);
  if (early_renew_at_) step.deadline = std::min(step.deadline, *early_renew_at_);
  for (std::size_t t = 0; t < leases_.size(); ++t) {
    TargetCapacity c = Capacity(t, now);
    c.shrunk = c.action_capacity < leases_[t].last_capacity;
    leases_[t].last_capacity = c.action_capacity;
    if (c.lease_valid_until) step.deadline = std::min(step.deadline, *c.lease_valid_until);
    step.targets.push_back(c);
  }
  return step;
}

RenewRequest LeaseAgent::BuildRequest(std::span<const TargetUsage> usage) {
  RenewRequest r;
  r.broker_id = config_.broker_id;
  r.epoch = config_.epoch;
  r.instance = config_.instance;
  r.generation = config_.generation;
  r.file_hash = config_.file_hash;
  r.erased = erased_;
  r.request_id = next_id_++;
  for (std::size_t t = 0; t < usage.size(); ++t) {
    const std::uint32_t floor = Floor(t);
    const TargetUsage& u = usage[t];
    // B2: pool_held and applied from one instant (this call). The switch reads
    // pool_held as of the previous renew instead (tests only).
    const std::uint32_t actions_now = std::max(u.actions, u.actions_upper_bound);
    const std::uint32_t actions_for_report =
        (!config_.switches.b2_one_instant && !previous_usage_.empty()) ? previous_usage_[t].actions
                                                                       : actions_now;
    TargetReport tr;
    tr.target = config_.targets[t].name;
    tr.pool_held = actions_for_report > floor ? actions_for_report - floor : 0;
    tr.applied = leases_[t].applied;
    tr.held = u.actions;
    tr.waiting = u.waiting;
    tr.registered = u.registered;
    const std::uint64_t demand = std::uint64_t{u.actions} + u.waiting;
    tr.wanted =
        demand > floor
            ? static_cast<std::uint32_t>(std::min<std::uint64_t>(demand - floor, UINT32_MAX))
            : 0;
    r.targets.push_back(std::move(tr));
  }
  return r;
}

bool LeaseAgent::ReportChanged(TimePoint now, std::span<const TargetUsage> usage) const {
  if (!sent_any_ || fast_renew_interval_ >= renew_interval_) return false;
  if (shrink_unacked_) return true;
  for (std::size_t t = 0; t < usage.size(); ++t) {
    const std::uint32_t floor = Floor(t);
    const TargetUsage& u = usage[t];
    const TargetReport& last = last_report_[t];
    const std::uint32_t pool_held = u.actions > floor ? u.actions - floor : 0;
    const std::uint64_t demand = std::uint64_t{u.actions} + u.waiting;
    const std::uint64_t wanted = demand > floor ? demand - floor : 0;
    if (wanted != last.wanted || pool_held < last.pool_held) return true;
    if (u.waiting > 0 && u.actions >= Capacity(t, now).action_capacity) return true;
  }
  return false;
}

AgentStep LeaseAgent::Tick(TimePoint now, std::span<const TargetUsage> usage) {
  DSB_CHECK(usage.size() == config_.targets.size(), "%zu usages for %zu targets", usage.size(),
            config_.targets.size());
  std::optional<RenewRequest> send;
  if (!accepted_) {
    for (std::size_t t = 0; t < usage.size(); ++t) frozen_[t] = std::min(frozen_[t], usage[t].actions);
  }
  early_renew_at_.reset();
  bool early = false;
  if (now < next_renew_ && ReportChanged(now, usage)) {
    if (now >= last_send_ + fast_renew_interval_) {
      early = true;
    } else {
      early_renew_at_ = last_send_ + fast_renew_interval_;
    }
  }
  if (now >= next_renew_ || early) {
    RenewRequest r = BuildRequest(usage);
    sent_[r.request_id] = SentRequest{now, now};
    while (sent_.size() > kMaxRemembered) sent_.erase(sent_.begin());
    outstanding_ = r;
    outstanding_answered_ = false;
    next_resend_ = now + resend_interval_;
    next_renew_ = now + renew_interval_;
    previous_usage_.assign(usage.begin(), usage.end());
    last_report_ = r.targets;
    last_send_ = now;
    sent_any_ = true;
    shrink_unacked_ = false;
    send = std::move(r);
  } else if (outstanding_ && !outstanding_answered_ && now >= next_resend_) {
    // A resend keeps the request id and (B1) the first send time.
    auto it = sent_.find(outstanding_->request_id);
    if (it != sent_.end()) {
      it->second.last_sent = now;
      if (!config_.switches.b1_first_t_sent) it->second.first_sent = now;  // broken on purpose
    }
    next_resend_ = now + resend_interval_;
    send = *outstanding_;
  }
  AgentStep step = Step(now);
  step.send = std::move(send);
  return step;
}

AgentStep LeaseAgent::OnGrant(TimePoint now, const Grant& grant) {
  const bool ours = grant.broker_id == config_.broker_id &&
                    ((grant.epoch == config_.epoch && grant.instance == config_.instance) ||
                     !config_.switches.b1a_epoch);
  const auto it = ours ? sent_.find(grant.request_id) : sent_.end();
  if (it == sent_.end()) {
    ++ignored_grants_;  // other broker, epoch or instance, or a request we never sent
    return Step(now);
  }
  if (outstanding_ && outstanding_->request_id == grant.request_id) outstanding_answered_ = true;
  // R1: the verdict applies even to a learning reply (it only ever names a
  // refusal, or an acceptance this ledger recorded earlier), but only a reply
  // to a newer request than the one that set it: a delayed older "accepted"
  // must not undo a refusal.
  if (grant.request_id >= verdict_request_) {
    verdict_request_ = grant.request_id;
    verdict_ = grant.verdict;
    reason_ = grant.reason;
    successor_ = grant.successor;
    if (grant.verdict == Verdict::kAccepted) {
      accepted_ = true;
    } else if (grant.verdict != Verdict::kPending) {
      accepted_ = false;  // floor 0, no new registration; the lease lapses on its own
    }
  }
  // C3 (learning), or no acceptance: no amount is applied.
  if (grant.learning || grant.verdict != Verdict::kAccepted || !accepted_) return Step(now);

  const TimePoint t_sent = it->second.first_sent;
  Duration span = lease_span_;
  if (grant.term > Duration::zero() && grant.term < config_.term) {
    span = config_.switches.b1_eps_margin ? ShrinkByEps(grant.term, config_.eps) : grant.term;
  }
  bool applied_any = false;
  for (const auto& tg : grant.targets) {
    std::size_t t = 0;
    while (t < config_.targets.size() && config_.targets[t].name != tg.target) ++t;
    if (t == config_.targets.size()) continue;
    Lease& l = leases_[t];
    if (config_.switches.b1a_order && grant.request_id <= l.applied) continue;
    if (tg.amount < Capacity(t, now).lease) shrink_unacked_ = true;
    l.applied = grant.request_id;
    l.amount = tg.amount;
    l.valid_until = t_sent + span;
    applied_any = true;
  }
  if (!applied_any) ++ignored_grants_;
  if (config_.switches.b1a_order) {
    std::uint64_t min_applied = UINT64_MAX;
    for (const auto& l : leases_) min_applied = std::min(min_applied, l.applied);
    sent_.erase(sent_.begin(), sent_.upper_bound(min_applied));
  }
  return Step(now);
}

AgentStep LeaseAgent::OnRevokeNotice(TimePoint now, const RevokeNotice& notice) {
  if (notice.broker_id == config_.broker_id && notice.epoch == config_.epoch) {
    next_renew_ = std::min(next_renew_, now);
  }
  return Step(now);
}

AgentStep LeaseAgent::DropLease(TimePoint now) {
  for (Lease& l : leases_) {
    if (l.amount > 0 && l.valid_until > now) shrink_unacked_ = true;
    l.amount = 0;
    l.valid_until = now;
  }
  next_renew_ = std::min(next_renew_, now);
  return Step(now);
}

}  // namespace dsb::lease
