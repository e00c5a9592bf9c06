#include "broker/lease/ledger.h"

#include <algorithm>
#include <set>

#include "broker/lease/fair_share.h"
#include "broker/lease/time_math.h"
#include "common/check.h"

namespace dsb::lease {

const char* BrokerModeName(BrokerMode m) {
  switch (m) {
    case BrokerMode::kActive:
      return "active";
    case BrokerMode::kDrained:
      return "drained";
    case BrokerMode::kRevoked:
      return "revoked";
  }
  return "?";
}

Status Ledger::Validate(const LedgerConfig& config) {
  if (config.targets.empty()) return {Errc::kConfig, "lease ledger: no targets"};
  if (config.brokers.empty()) return {Errc::kConfig, "lease ledger: no brokers"};
  std::set<std::string> names;
  for (const auto& t : config.targets) {
    if (t.name.empty()) return {Errc::kConfig, "lease ledger: a target has an empty name"};
    if (!names.insert(t.name).second) {
      return {Errc::kConfig, "lease ledger: target '" + t.name + "' is listed twice"};
    }
    if (t.limit != 0 && t.limit < t.pool) {
      return {Errc::kConfig, "lease ledger: target '" + t.name + "' has pool " +
                                 std::to_string(t.pool) + " above its limit " +
                                 std::to_string(t.limit)};
    }
  }
  names.clear();
  for (const auto& b : config.brokers) {
    if (b.id.empty()) return {Errc::kConfig, "lease ledger: a broker has an empty id"};
    if (!names.insert(b.id).second) {
      return {Errc::kConfig, "lease ledger: broker '" + b.id + "' is listed twice"};
    }
    if (b.weight < 1 || b.weight > kMaxWeight) {
      return {Errc::kConfig, "lease ledger: broker '" + b.id + "' has weight " +
                                 std::to_string(b.weight) + "; use 1.." +
                                 std::to_string(kMaxWeight)};
    }
  }
  if (config.term <= Duration::zero()) return {Errc::kConfig, "lease ledger: term D must be > 0"};
  if (config.drain <= Duration::zero()) return {Errc::kConfig, "lease ledger: drain H must be > 0"};
  if (!(config.eps >= 0.0 && config.eps < 0.1)) {
    return {Errc::kConfig,
            "lease ledger: eps " + std::to_string(config.eps) + " is outside [0, 0.1)"};
  }
  return Status::Ok();
}

Ledger::Ledger(LedgerConfig config, TimePoint now) : config_(std::move(config)) {
  const Status valid = Validate(config_);
  DSB_CHECK(valid.ok(), "%s", valid.message().c_str());
  // The (1 + eps) factor: a fast coordinator clock must still wait D + H of real
  // time. The switch drops it (tests only).
  silence_ = config_.switches.c2_silence_eps
                 ? StretchByEps(config_.term + config_.drain, config_.eps)
                 : config_.term + config_.drain;
  learning_until_ = config_.switches.c3_learning ? now + silence_ : now;
  brokers_.resize(config_.brokers.size());
  for (auto& b : brokers_) b.reports.resize(config_.targets.size());
}

std::optional<std::size_t> Ledger::BrokerIndex(std::string_view id) const {
  for (std::size_t i = 0; i < config_.brokers.size(); ++i) {
    if (config_.brokers[i].id == id) return i;
  }
  return std::nullopt;
}

std::optional<std::size_t> Ledger::TargetIndex(std::string_view name) const {
  for (std::size_t i = 0; i < config_.targets.size(); ++i) {
    if (config_.targets[i].name == name) return i;
  }
  return std::nullopt;
}

bool Ledger::Silent(const BrokerState& b, TimePoint now) const {
  return b.last_heard.has_value() && now - *b.last_heard >= silence_;
}

void Ledger::ForgetSilent(TimePoint now) {
  for (auto& b : brokers_) {
    if (!b.known || !Silent(b, now)) continue;
    // C2: silence of (D + H)(1 + eps) means every lease of this broker has lapsed
    // and its slots are back: owed falls to 0 and its grants are forgotten.
    b.known = false;
    b.grants.clear();
    for (auto& r : b.reports) r = TargetReportState{};
    b.last_grant_at.reset();
  }
}

std::uint32_t Ledger::Owed(std::size_t broker_index, std::size_t target_index,
                           TimePoint now) const {
  DSB_CHECK(broker_index < brokers_.size() && target_index < config_.targets.size(),
            "broker %zu, target %zu", broker_index, target_index);
  const BrokerState& b = brokers_[broker_index];
  if (!b.known || Silent(b, now)) return 0;
  const TargetReportState& r = b.reports[target_index];
  std::uint32_t owed = r.pool_held;
  if (config_.switches.c1_owed_counts_unacked_grants) {
    for (auto it = b.grants.lower_bound(r.applied); it != b.grants.end(); ++it) {
      owed = std::max(owed, it->second[target_index]);
    }
  } else if (!b.grants.empty()) {
    owed = std::max(owed, b.grants.rbegin()->second[target_index]);
  }
  return owed;
}

void Ledger::RecordGrant(std::size_t broker, const Grant& grant) {
  BrokerState& b = brokers_[broker];
  std::vector<std::uint32_t> amounts(config_.targets.size(), 0);
  for (const auto& tg : grant.targets) {
    if (auto ti = TargetIndex(tg.target)) amounts[*ti] = tg.amount;
  }
  b.grants[grant.request_id] = std::move(amounts);
  b.known = true;
}

Grant Ledger::ComputeGrant(std::size_t broker, const RenewRequest& request, TimePoint now) {
  Grant g;
  g.broker_id = request.broker_id;
  g.epoch = request.epoch;
  g.request_id = request.request_id;
  g.term = config_.term;
  const std::size_t n = brokers_.size();
  std::vector<std::uint32_t> demands(n, 0);
  std::vector<std::uint32_t> weights(n, 1);
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    const std::uint32_t pool = config_.targets[t].pool;
    std::uint32_t amount = 0;
    if (brokers_[broker].mode == BrokerMode::kActive) {
      std::uint64_t owed_by_others = 0;
      for (std::size_t j = 0; j < n; ++j) {
        const BrokerState& o = brokers_[j];
        weights[j] = config_.brokers[j].weight;
        const bool live = o.known && !Silent(o, now) && o.mode == BrokerMode::kActive;
        demands[j] = live ? o.reports[t].wanted : 0;
        if (j != broker) owed_by_others += Owed(j, t, now);
      }
      const std::uint32_t fair = FairShares(pool, demands, weights)[broker];
      amount = std::min(fair, MaxGrant(pool, owed_by_others));
    }
    g.targets.push_back({config_.targets[t].name, amount});
  }
  return g;
}

Result<std::optional<Grant>> Ledger::OnRequest(TimePoint now, const RenewRequest& request) {
  const auto bi = BrokerIndex(request.broker_id);
  if (!bi) {
    return Status(Errc::kConflict, "lease request from broker '" + request.broker_id +
                                       "', which is not in the cluster file");
  }
  ForgetSilent(now);
  BrokerState& b = brokers_[*bi];
  b.last_heard = now;  // every request moves the silence timer, even a stale one

  const bool newer = !b.has_newest || request.epoch > b.epoch ||
                     (request.epoch == b.epoch && request.request_id > b.newest_id);
  if (!newer && config_.switches.request_staleness) {
    const bool duplicate = request.epoch == b.epoch && request.request_id == b.newest_id;
    if (!duplicate || !b.last_reply) return std::optional<Grant>();
    // Same grant again. It is sent again, so it enters the ledger again (it may
    // have been forgotten by silence meanwhile; re-entering is conservative).
    if (!b.last_reply->learning) RecordGrant(*bi, *b.last_reply);
    return std::optional<Grant>(*b.last_reply);
  }

  if (!b.has_newest || request.epoch != b.epoch) {
    // C1: a request from a newer epoch drops the grants sent to older epochs;
    // the old epoch's `applied` ids mean nothing in the new one.
    b.grants.clear();
    for (auto& r : b.reports) r.applied = 0;
    b.epoch = request.epoch;
    b.last_grant_at.reset();
  }
  b.has_newest = true;
  b.newest_id = request.request_id;
  b.known = true;
  for (const auto& tr : request.targets) {
    const auto ti = TargetIndex(tr.target);
    if (!ti) continue;
    b.reports[*ti] = {tr.pool_held, tr.applied, tr.held, tr.waiting, tr.wanted};
  }
  // Grants below every target's applied id can never count again.
  std::uint64_t min_applied = UINT64_MAX;
  for (const auto& r : b.reports) min_applied = std::min(min_applied, r.applied);
  b.grants.erase(b.grants.begin(), b.grants.lower_bound(min_applied));

  if (Learning(now)) {
    Grant g;
    g.broker_id = request.broker_id;
    g.epoch = request.epoch;
    g.request_id = request.request_id;
    g.term = config_.term;
    g.learning = true;
    b.last_reply = g;
    return std::optional<Grant>(std::move(g));
  }
  Grant g = ComputeGrant(*bi, request, now);
  RecordGrant(*bi, g);
  b.last_reply = g;
  b.last_grant_at = now;
  return std::optional<Grant>(std::move(g));
}

Status Ledger::SetMode(std::string_view broker_id, BrokerMode mode, TimePoint now) {
  const auto bi = BrokerIndex(broker_id);
  if (!bi) {
    return {Errc::kConflict, "broker '" + std::string(broker_id) + "' is not in the cluster file"};
  }
  ForgetSilent(now);
  BrokerState& b = brokers_[*bi];
  b.mode = mode;
  if (mode != BrokerMode::kActive && !config_.switches.c2_revoke_keeps_owed) {
    // Broken on purpose (tests only): owed falls at once.
    b.grants.clear();
    for (auto& r : b.reports) r.pool_held = 0;
  }
  return Status::Ok();
}

Status Ledger::Revoke(std::string_view broker_id, TimePoint now) {
  return SetMode(broker_id, BrokerMode::kRevoked, now);
}

Status Ledger::Drain(std::string_view broker_id, TimePoint now) {
  return SetMode(broker_id, BrokerMode::kDrained, now);
}

Status Ledger::Resume(std::string_view broker_id, TimePoint now) {
  return SetMode(broker_id, BrokerMode::kActive, now);
}

Status Ledger::ForceRevoke(std::string_view broker_id, TimePoint now) {
  const auto bi = BrokerIndex(broker_id);
  if (!bi) {
    return {Errc::kConflict, "broker '" + std::string(broker_id) + "' is not in the cluster file"};
  }
  ForgetSilent(now);
  BrokerState& b = brokers_[*bi];
  b.mode = BrokerMode::kRevoked;
  b.known = false;
  b.grants.clear();
  for (auto& r : b.reports) r = TargetReportState{};
  b.last_grant_at.reset();
  return Status::Ok();
}

Status Ledger::SetPool(std::string_view target, std::uint32_t pool, TimePoint now) {
  const auto ti = TargetIndex(target);
  if (!ti) return {Errc::kUnknownTarget, "no target '" + std::string(target) + "' in the ledger"};
  ForgetSilent(now);
  LedgerTarget& t = config_.targets[*ti];
  if (t.limit != 0) {
    // Keep L - P (= r + sum(system_slots + floor)) fixed.
    const std::uint32_t base = t.limit - t.pool;
    t.limit = base + pool;
  }
  t.pool = pool;
  return Status::Ok();
}

Status Ledger::SetLimit(std::string_view target, std::uint32_t limit, TimePoint now) {
  const auto ti = TargetIndex(target);
  if (!ti) return {Errc::kUnknownTarget, "no target '" + std::string(target) + "' in the ledger"};
  LedgerTarget& t = config_.targets[*ti];
  if (t.limit == 0) {
    return {Errc::kInvalidArgument,
            "target '" + t.name + "' was configured without its limit L; set the pool instead"};
  }
  const std::uint32_t base = t.limit - t.pool;
  if (limit < base) {
    return {Errc::kInvalidArgument,
            "limit " + std::to_string(limit) + " for target '" + t.name +
                "' is below r + sum(system_slots + floor) = " + std::to_string(base)};
  }
  return SetPool(target, limit - base, now);
}

LedgerSnapshot Ledger::Snapshot(TimePoint now) const {
  LedgerSnapshot s;
  s.learning = Learning(now);
  s.learning_left = s.learning ? learning_until_ - now : Duration::zero();
  s.term = config_.term;
  s.drain = config_.drain;
  s.silence = silence_;
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    TargetLeaseView tv;
    tv.target = config_.targets[t].name;
    tv.limit = config_.targets[t].limit;
    tv.pool = config_.targets[t].pool;
    for (std::size_t i = 0; i < brokers_.size(); ++i) {
      const BrokerState& b = brokers_[i];
      const bool live = b.known && !Silent(b, now);
      BrokerLeaseView v;
      v.broker_id = config_.brokers[i].id;
      v.weight = config_.brokers[i].weight;
      v.mode = b.mode;
      v.known = live;
      v.epoch = b.epoch;
      v.newest_request = b.newest_id;
      v.owed = Owed(i, t, now);
      if (live) {
        const TargetReportState& r = b.reports[t];
        v.pool_held = r.pool_held;
        v.applied = r.applied;
        v.held = r.held;
        v.waiting = r.waiting;
        v.wanted = r.wanted;
        if (!b.grants.empty()) v.granted = b.grants.rbegin()->second[t];
        if (b.last_grant_at && *b.last_grant_at + config_.term > now) {
          v.lease_left = *b.last_grant_at + config_.term - now;
        }
        v.silence_left = *b.last_heard + silence_ - now;
      }
      if (b.last_heard) v.last_seen_ago = now - *b.last_heard;
      tv.owed_total += v.owed;
      tv.brokers.push_back(std::move(v));
    }
    tv.free = tv.owed_total >= tv.pool ? 0 : static_cast<std::uint32_t>(tv.pool - tv.owed_total);
    s.targets.push_back(std::move(tv));
  }
  return s;
}

}  // namespace dsb::lease
