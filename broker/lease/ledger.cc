#include "broker/lease/ledger.h"

#include <algorithm>
#include <set>

#include "broker/lease/fair_share.h"
#include "broker/lease/time_math.h"
#include "common/check.h"

namespace dsb::lease {

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kAccepted: return "accepted";
    case Verdict::kPending: return "pending";
    case Verdict::kRefused: return "refused";
    case Verdict::kRemoved: return "removed";
    case Verdict::kSuperseded: return "superseded";
  }
  return "?";
}

const char* GateName(Gate g) {
  switch (g) {
    case Gate::kOpen: return "open";
    case Gate::kWaiting: return "waiting for the previous coordinator";
    case Gate::kSuperseded: return "superseded";
  }
  return "?";
}

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
    if ((!b.system_slots.empty() && b.system_slots.size() != config.targets.size()) ||
        (!b.floors.empty() && b.floors.size() != config.targets.size())) {
      return {Errc::kConfig, "lease ledger: broker '" + b.id +
                                 "' has allowances for a different number of targets"};
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

namespace {
std::uint32_t At(const std::vector<std::uint32_t>& v, std::size_t i) {
  return i < v.size() ? v[i] : 0;
}
std::uint32_t Clamp32(std::uint64_t v) {
  return v > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(v);
}
}  // namespace

Ledger::Ledger(LedgerConfig config, TimePoint now) : config_(std::move(config)) {
  const Status valid = Validate(config_);
  DSB_CHECK(valid.ok(), "%s", valid.message().c_str());
  // The (1 + eps) factor: a fast coordinator clock must still wait D + H of real
  // time. The switch drops it (tests only).
  silence_ = config_.switches.c2_silence_eps
                 ? StretchByEps(config_.term + config_.drain, config_.eps)
                 : config_.term + config_.drain;
  learning_until_ = config_.switches.c3_learning ? now + silence_ : now;
  learning_ = config_.switches.c3_learning;
  const std::size_t nt = config_.targets.size();
  file_allowance_.assign(nt, 0);
  for (const auto& b : config_.brokers) {
    for (std::size_t t = 0; t < nt; ++t) {
      file_allowance_[t] += At(b.system_slots, t) + At(b.floors, t);
    }
  }
  room_.resize(nt);
  for (std::size_t t = 0; t < nt; ++t) room_[t] = config_.targets[t].pool + file_allowance_[t];
  configured_pool_.resize(nt);
  for (std::size_t t = 0; t < nt; ++t) configured_pool_[t] = config_.targets[t].pool;
  for (std::size_t i = 0; i < config_.brokers.size(); ++i) {
    BrokerState b;
    b.id = config_.brokers[i].id;
    b.config_index = i;
    for (std::size_t t = 0; t < nt; ++t) {
      b.base.push_back(At(config_.brokers[i].system_slots, t) + At(config_.brokers[i].floors, t));
    }
    brokers_.push_back(std::move(b));
  }
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

Ledger::BrokerState& Ledger::BrokerFor(std::string_view id) {
  for (auto& b : brokers_) {
    if (b.id == id) return b;
  }
  BrokerState b;
  b.id = std::string(id);
  b.base.assign(config_.targets.size(), 0);
  brokers_.push_back(std::move(b));
  return brokers_.back();
}

bool Ledger::Silent(const BrokerState& b, const Instance& in, TimePoint now) const {
  // Liveness mode: the store's lease (TTL >= Silence() after the instance's
  // last keepalive) measures the silence, not this clock.
  if (config_.liveness) return !config_.liveness(b.id, in.epoch, in.instance);
  return now - in.last_heard >= silence_;
}

void Ledger::ForgetSilent(TimePoint now) {
  // C2: silence of (D + H)(1 + eps) means every lease of that instance has
  // lapsed and its slots are back: it is forgotten with its grants. The
  // allowance (base) is not: a dead broker's clients may keep their sessions,
  // and a removed broker cut off from the coordinator keeps using what it
  // accepted (R1); R2 lets it leave the count only by its erased report or an
  // operator's confirmation (ForceRevoke). Each forgetting is logged: it is
  // how a dead workstation first shows in the coordinator's log.
  for (auto& b : brokers_) {
    for (const Instance& in : b.instances) {
      if (!Silent(b, in, now)) continue;
      std::string owed;
      for (std::size_t t = 0; t < config_.targets.size(); ++t) {
        owed += (owed.empty() ? "" : ", ") + config_.targets[t].name + " " +
                std::to_string(InstanceOwed(in, t));
      }
      std::string allowance;
      for (std::size_t t = 0; t < config_.targets.size(); ++t) {
        if (At(b.base, t) == 0) continue;
        allowance += (allowance.empty() ? "" : ", ") + config_.targets[t].name + " " +
                     std::to_string(At(b.base, t));
      }
      std::string rest;
      if (!allowance.empty()) {
        rest = b.config_index
                   ? "; its allowance (system_slots + floor: " + allowance +
                         ") stays counted, as its cluster file entry says"
                   : "; it is not in the cluster file, yet its last accepted allowance (" +
                         allowance + ") stays counted until it reports that it erased it, or "
                         "until an operator who knows the workstation is dead runs `dsbctl "
                         "revoke " + b.id + " --force --confirm-dead`";
      }
      const std::string silent_for =
          config_.liveness
              ? "'s live key expired in the store (its lease TTL >= S = (D + H)(1 + eps))"
              : " sent no request for " +
                    std::to_string(
                        std::chrono::duration_cast<std::chrono::milliseconds>(silence_).count()) +
                    " ms (S = (D + H)(1 + eps))";
      notices_.push_back(
          "broker '" + b.id + "' (epoch " + std::to_string(in.epoch) + ")" + silent_for +
          ": forgotten" + (in.goodbye ? " after its goodbye" : "") +
          " with what it was owed (" + owed + "), now back in the pool" + rest);
    }
    std::erase_if(b.instances, [&](const Instance& in) { return Silent(b, in, now); });
  }
  std::erase_if(brokers_, [](const BrokerState& b) {
    return !b.config_index.has_value() && b.instances.empty() &&
           std::all_of(b.base.begin(), b.base.end(), [](std::uint32_t v) { return v == 0; });
  });
}

std::uint32_t Ledger::InstanceOwed(const Instance& in, std::size_t t) const {
  const TargetReportState& r = in.reports[t];
  std::uint32_t owed = r.pool_held;
  if (config_.switches.c1_owed_counts_unacked_grants) {
    for (auto it = in.grants.lower_bound(r.applied); it != in.grants.end(); ++it) {
      owed = std::max(owed, it->second[t]);
    }
  } else if (!in.grants.empty()) {
    owed = std::max(owed, in.grants.rbegin()->second[t]);
  }
  return owed;
}

std::uint32_t Ledger::Counted(const BrokerState& b, const Instance& in, std::size_t t) const {
  const std::uint32_t registered = in.reports[t].registered;
  if (in.goodbye) return At(in.handed, t);
  switch (in.verdict) {
    case Verdict::kAccepted:
      return std::max(At(in.system_slots, t), registered) + At(in.floors, t);
    case Verdict::kPending:
      if (b.config_index) {
        const LedgerBroker& c = config_.brokers[*b.config_index];
        return std::max(At(c.system_slots, t), registered) + At(c.floors, t);
      }
      return registered;
    default:
      return registered;
  }
}

std::uint32_t Ledger::BrokerCounted(const BrokerState& b, std::size_t t, TimePoint now) const {
  std::uint64_t live = 0;
  for (const auto& in : b.instances) {
    if (!Silent(b, in, now)) live += Counted(b, in, t);
  }
  if (!config_.switches.r2_count_unheard) return Clamp32(live);  // broken on purpose
  return Clamp32(std::max<std::uint64_t>(live, At(b.base, t)));
}

std::uint64_t Ledger::SumCounted(std::size_t t, TimePoint now) const {
  std::uint64_t sum = 0;
  for (const auto& b : brokers_) sum += BrokerCounted(b, t, now);
  return sum;
}

std::uint64_t Ledger::SumOwed(std::size_t t, const Instance* except, TimePoint now) const {
  std::uint64_t sum = 0;
  for (const auto& b : brokers_) {
    for (const auto& in : b.instances) {
      if (&in != except && !Silent(b, in, now)) sum += InstanceOwed(in, t);
    }
  }
  return sum;
}

std::uint32_t Ledger::PoolNow(std::size_t t, TimePoint now) const {
  const std::uint64_t counted = SumCounted(t, now);
  return counted >= room_[t] ? 0 : static_cast<std::uint32_t>(room_[t] - counted);
}

bool Ledger::Fits(TimePoint now) const {
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    if (SumCounted(t, now) + SumOwed(t, nullptr, now) > room_[t]) return false;
  }
  return true;
}

std::uint32_t Ledger::Owed(std::size_t broker_index, std::size_t target_index,
                           TimePoint now) const {
  DSB_CHECK(broker_index < config_.brokers.size() && target_index < config_.targets.size(),
            "broker %zu, target %zu", broker_index, target_index);
  std::uint64_t owed = 0;
  for (const auto& in : brokers_[broker_index].instances) {
    if (!Silent(brokers_[broker_index], in, now)) owed += InstanceOwed(in, target_index);
  }
  return Clamp32(owed);
}

AcceptanceRecord Ledger::RecordOf(const BrokerState& b, const Instance& in) const {
  AcceptanceRecord r;
  r.broker_id = b.id;
  r.epoch = in.epoch;
  r.instance = in.instance;
  r.generation = config_.generation;
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    r.targets.push_back(config_.targets[t].name);
    r.system_slots.push_back(At(in.system_slots, t));
    r.floors.push_back(At(in.floors, t));
  }
  return r;
}

std::vector<AcceptanceRecord> Ledger::Records() const {
  std::vector<AcceptanceRecord> out;
  for (const auto& b : brokers_) {
    for (const auto& in : b.instances) {
      // Every instance with a recorded allowance (accepted here, or restored /
      // handed over and since refused or removed): a successor must count it
      // too until the broker reports it no longer uses it (R2).
      if (!in.goodbye && (in.verdict == Verdict::kAccepted || !in.floors.empty())) {
        out.push_back(RecordOf(b, in));
      }
    }
    // The base survives the ledger: a stopped broker's clients keep their
    // sessions, and a successor must count them until that broker reports a
    // newer acceptance (R2).
    if (std::any_of(b.base.begin(), b.base.end(), [](std::uint32_t v) { return v > 0; })) {
      AcceptanceRecord base;
      base.broker_id = b.id;
      base.generation = config_.generation;
      for (std::size_t t = 0; t < config_.targets.size(); ++t) {
        base.targets.push_back(config_.targets[t].name);
        base.system_slots.push_back(0);
        base.floors.push_back(At(b.base, t));
      }
      out.push_back(std::move(base));
    }
  }
  return out;
}

void Ledger::AdoptRecords(const std::vector<AcceptanceRecord>& records, TimePoint now) {
  for (const auto& r : records) {
    BrokerState& b = BrokerFor(r.broker_id);
    b.max_epoch = std::max(b.max_epoch, r.epoch);
    for (std::size_t k = 0; k < r.targets.size(); ++k) {
      if (const auto t = TargetIndex(r.targets[k])) {
        b.base[*t] = std::max(b.base[*t], At(r.system_slots, k) + At(r.floors, k));
      }
    }
    if (r.epoch == 0 && r.instance == 0) continue;  // a base record: no instance
    const bool known = std::any_of(b.instances.begin(), b.instances.end(), [&](const Instance& in) {
      return in.epoch == r.epoch && in.instance == r.instance;
    });
    if (known) continue;
    Instance in;
    in.epoch = r.epoch;
    in.instance = r.instance;
    // An acceptance under another file does not carry over (R1): a broker no
    // longer in this file is removed, one accepted under an older generation
    // runs that older file and is refused. Its recorded allowance stays
    // counted (base) until it reports that it no longer uses it.
    if (!b.config_index) {
      in.verdict = Verdict::kRemoved;
      in.reason = "broker '" + b.id + "' is not in the coordinator's cluster file (generation " +
                  std::to_string(config_.generation) + ")";
    } else if (r.generation < config_.generation) {
      in.verdict = Verdict::kRefused;
      in.reason = "accepted under cluster file generation " + std::to_string(r.generation) +
                  ", the coordinator runs generation " + std::to_string(config_.generation) +
                  "; restart it with the new file";
    } else {
      in.verdict = Verdict::kAccepted;
    }
    in.last_heard = now;
    in.reports.resize(config_.targets.size());
    in.system_slots.assign(config_.targets.size(), 0);
    in.floors.assign(config_.targets.size(), 0);
    for (std::size_t k = 0; k < r.targets.size(); ++k) {
      const auto t = TargetIndex(r.targets[k]);
      if (!t) continue;
      in.system_slots[*t] = At(r.system_slots, k);
      in.floors[*t] = At(r.floors, k);
    }
    b.instances.push_back(std::move(in));
  }
}

void Ledger::WaitForPrevious() {
  if (!config_.switches.r3_step_down) return;  // broken on purpose
  if (gate_ == Gate::kOpen) gate_ = Gate::kWaiting;
}

void Ledger::OpenGate(TimePoint now) {
  if (gate_ != Gate::kWaiting) return;
  gate_ = Gate::kOpen;
  // C3 again: grants the previous coordinator sent before it stopped lapse
  // within D + H of its stop, which came before this call.
  learning_until_ = config_.switches.c3_learning ? now + silence_ : now;
  learning_ = config_.switches.c3_learning;
}

void Ledger::Supersede(std::uint64_t by_generation, std::string successor) {
  gate_ = Gate::kSuperseded;
  if (!successor.empty()) successor_ = std::move(successor);
  newer_generation_ = std::max(newer_generation_, by_generation);
}

std::vector<std::string> Ledger::TakeWarnings() {
  std::vector<std::string> out;
  out.swap(warnings_);
  return out;
}

std::vector<std::string> Ledger::TakeNotices() {
  std::vector<std::string> out;
  out.swap(notices_);
  return out;
}

Ledger::Instance Ledger::NewInstance(BrokerState& b, const RenewRequest& request) {
  Instance in;
  in.epoch = request.epoch;
  in.instance = request.instance;
  in.reports.resize(config_.targets.size());
  const std::string who = "broker '" + b.id + "' (epoch " + std::to_string(request.epoch) + ")";
  if (!b.config_index) {
    in.verdict = Verdict::kRemoved;
    in.reason = "broker '" + b.id + "' is not in the coordinator's cluster file (generation " +
                std::to_string(config_.generation) + ")";
  } else if (!config_.switches.r1_refuse_other_file) {
    // Broken on purpose: any file is taken for this one.
  } else if (request.generation > config_.generation) {
    in.reason = "runs cluster file generation " + std::to_string(request.generation) +
                ", newer than this coordinator's " + std::to_string(config_.generation) +
                ": waiting for the coordinator that file names";
    in.newer_file = true;
  } else if (request.generation < config_.generation) {
    in.verdict = Verdict::kRefused;
    in.reason = "cluster file generation " + std::to_string(request.generation) +
                " is older than the coordinator's " + std::to_string(config_.generation);
  } else if (request.generation == config_.generation && !config_.file_hash.empty() &&
             request.file_hash != config_.file_hash) {
    in.verdict = Verdict::kRefused;
    in.reason = "cluster file differs from the coordinator's at generation " +
                std::to_string(config_.generation) + " (hash " + request.file_hash.substr(0, 12) +
                " vs " + config_.file_hash.substr(0, 12) +
                "); install the coordinator's file, or raise `generation` in the new one";
  } else if (request.epoch < b.max_epoch) {
    in.verdict = Verdict::kRefused;
    in.reason = "epoch " + std::to_string(request.epoch) + " is older than epoch " +
                std::to_string(b.max_epoch) + " of the same broker id (a delayed message, or a "
                "copy of an old state_dir); restart it";
  }
  if (in.verdict != Verdict::kPending) {
    warnings_.push_back(who + " " + VerdictName(in.verdict) + ": " + in.reason);
  }
  b.max_epoch = std::max(b.max_epoch, request.epoch);
  return in;
}

void Ledger::TryAccept(BrokerState& b, Instance& in, TimePoint now) {
  if (in.verdict != Verdict::kPending || !b.config_index || in.newer_file) return;
  // R2: only a raise needs the fit test. An allowance no larger than what the
  // broker is counted with already (its base), with no other live instance of
  // it, replaces that count: accepting it never adds, and refusing it could
  // leave a lowered broker (and every raise waiting for it) pending for good.
  const LedgerBroker& file = config_.brokers[*b.config_index];
  bool within_base = true;
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    within_base = within_base && At(file.system_slots, t) + At(file.floors, t) <= At(b.base, t);
  }
  for (const auto& other : b.instances) {
    if (&other != &in && !other.goodbye && !Silent(b, other, now)) within_base = false;
  }
  if (config_.switches.r2_fit_test && !within_base && !Fits(now)) {
    in.reason = "waiting until the allowance fits: sum of counted allowances and owed exceeds "
                "L - r (an older instance of this or another broker is still counted)";
    return;
  }
  const LedgerBroker& c = config_.brokers[*b.config_index];
  Instance accepted = in;
  accepted.verdict = Verdict::kAccepted;
  accepted.system_slots.assign(config_.targets.size(), 0);
  accepted.floors.assign(config_.targets.size(), 0);
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    accepted.system_slots[t] = At(c.system_slots, t);
    accepted.floors[t] = At(c.floors, t);
  }
  if (config_.persist) {
    std::vector<AcceptanceRecord> records = Records();
    records.push_back(RecordOf(b, accepted));
    if (!config_.persist(records)) {
      in.reason = "the acceptance could not be recorded in the coordinator's state_dir";
      warnings_.push_back("broker '" + b.id + "' stays pending: " + in.reason);
      return;
    }
  }
  in.verdict = Verdict::kAccepted;
  in.reason.clear();
  in.system_slots = std::move(accepted.system_slots);
  in.floors = std::move(accepted.floors);
  // R2: from now on the broker's last accepted allowance is this one (older
  // instances still count on their own while they are heard).
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    b.base[t] = in.system_slots[t] + in.floors[t];
  }
}

void Ledger::RecordGrant(Instance& in, const Grant& grant) {
  std::vector<std::uint32_t> amounts(config_.targets.size(), 0);
  for (const auto& tg : grant.targets) {
    if (auto ti = TargetIndex(tg.target)) amounts[*ti] = tg.amount;
  }
  in.grants[grant.request_id] = std::move(amounts);
}

Grant Ledger::ReplyBase(const RenewRequest& request, const Instance& in) const {
  Grant g;
  g.broker_id = request.broker_id;
  g.epoch = request.epoch;
  g.instance = request.instance;
  g.request_id = request.request_id;
  g.term = config_.term;
  g.generation = config_.generation;
  g.verdict = gate_ == Gate::kSuperseded ? Verdict::kSuperseded : in.verdict;
  g.reason = gate_ == Gate::kSuperseded
                 ? "this coordinator was superseded by generation " +
                       std::to_string(newer_generation_)
                 : in.reason;
  if (gate_ == Gate::kSuperseded) g.successor = successor_;
  if (g.reason.empty() && in.clone_logged) {
    // Sticky (clone_logged stays set): worded as what was seen, not as now.
    // The common cause first (a restart of this broker soon after a crash or
    // a refusal, while its previous instance was still heard), the rare one
    // (a clone) last: operators read the first cause as the verdict.
    g.reason = "another live instance of broker id '" + request.broker_id +
               "' was counted beside this one: most likely this broker's previous instance "
               "(a restart soon after a crash, a kill or a refusal; it is forgotten after " +
               std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(silence_).count()) +
               " ms of silence); else a cloned workstation: give each machine its own id";
  }
  return g;
}

Grant Ledger::ComputeGrant(const BrokerState& b, const Instance& in, const RenewRequest& request,
                           TimePoint now) {
  Grant g = ReplyBase(request, in);
  std::vector<const Instance*> members;
  std::vector<const BrokerState*> member_brokers;  // parallel to members
  std::vector<std::uint32_t> weights;
  std::size_t self = 0;
  for (const auto& o : brokers_) {
    for (const auto& oi : o.instances) {
      // A pending instance takes part in the shares (it gets nothing until
      // accepted), so the others' grants shrink and owed falls until it fits.
      const bool member = (oi.verdict == Verdict::kAccepted || oi.verdict == Verdict::kPending) &&
                          !oi.goodbye && !Silent(o, oi, now) && o.mode == BrokerMode::kActive &&
                          o.config_index.has_value();
      if (!member && &oi != &in) continue;
      if (&oi == &in) self = members.size();
      members.push_back(&oi);
      member_brokers.push_back(&o);
      weights.push_back(o.config_index ? config_.brokers[*o.config_index].weight : 1);
    }
  }
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    std::uint32_t amount = 0;
    if (b.mode == BrokerMode::kActive && !b.TargetRevoked(t) &&
        in.verdict == Verdict::kAccepted) {
      const std::uint32_t pool = PoolNow(t, now);
      std::vector<std::uint32_t> demands;
      // A broker revoked for this target alone asks nothing of its shares.
      for (std::size_t m = 0; m < members.size(); ++m) {
        demands.push_back(member_brokers[m]->TargetRevoked(t) ? 0 : members[m]->reports[t].wanted);
      }
      const std::uint32_t fair = FairShares(pool, demands, weights)[self];
      amount = std::min(fair, MaxGrant(pool, SumOwed(t, &in, now)));
    }
    g.targets.push_back({config_.targets[t].name, amount});
  }
  return g;
}

Result<std::optional<Grant>> Ledger::OnRequest(TimePoint now, const RenewRequest& request) {
  ForgetSilent(now);
  // A renew of a newer generation does not make this ledger step down (R3 is
  // the hello of the coordinator the newer file names: a staged or mistyped
  // file on one broker must not stop the cluster); that instance waits as
  // pending (NewInstance) until its own coordinator takes over.
  BrokerState& b = BrokerFor(request.broker_id);
  auto it = std::find_if(b.instances.begin(), b.instances.end(), [&](const Instance& in) {
    return in.epoch == request.epoch && in.instance == request.instance;
  });
  const bool first = it == b.instances.end();
  if (first) {
    if (!config_.switches.r4_keep_older) {
      // Broken on purpose (the pre-R4 rule): a new instance drops the others.
      std::erase_if(b.instances, [](const Instance&) { return true; });
    }
    b.instances.push_back(NewInstance(b, request));
    it = std::prev(b.instances.end());
  }
  Instance& in = *it;
  in.last_heard = now;  // every request moves the silence timer, even a stale one
  if (in.goodbye) {
    // It said goodbye (it admits nothing and hands its clients over), yet it
    // still renews: a bug or a forged goodbye. Count it in full again and
    // never accept it again.
    in.goodbye = false;
    in.handed.clear();
    in.verdict = Verdict::kRefused;
    in.reason = "this instance said goodbye and must not renew; restart it";
    warnings_.push_back("broker '" + b.id + "' (epoch " + std::to_string(in.epoch) +
                        ") renews after its goodbye: refused and counted in full");
  }
  b.last_heard = now;

  // R4: another live instance of this id heard within D is a clone (or a
  // restart while the old instance still talks): both are counted.
  for (auto& other : b.instances) {
    if (&other == &in || other.goodbye || in.clone_logged || !other.has_newest) continue;
    // Liveness mode: "heard within D" reads "both alive" (the requester is).
    const bool recent = config_.liveness ? !Silent(b, other, now)
                                         : now - other.last_heard < config_.term;
    if (recent && !first) {
      in.clone_logged = true;
      // Likely causes in order: a restart within D of the previous instance's
      // last renew (crash, kill, refusal: systemd restarts it in a second) is
      // common and ends by itself after S; a clone is rare and does not end.
      const auto ms = [](Duration d) {
        return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
      };
      warnings_.push_back(
          "two live instances of broker '" + b.id + "' (epochs " + std::to_string(other.epoch) +
          " and " + std::to_string(in.epoch) + "), both counted. Likely causes, the common "
          "first: broker '" + b.id + "' restarted within the term (" + ms(config_.term) +
          " ms) of its previous instance's last renew (after a crash, a kill or a refusal): "
          "nothing to do, the previous instance is forgotten after " + ms(silence_) +
          " ms of silence; a cloned workstation, if `dsbctl leases` still lists two instances "
          "of '" + b.id + "' after that: give each machine its own broker id");
    }
  }

  const bool newer = !in.has_newest || request.request_id > in.newest_id;
  if (!newer && config_.switches.request_staleness) {
    const bool duplicate = request.request_id == in.newest_id;
    if (!duplicate || !in.last_reply) return std::optional<Grant>();
    // Same grant again. It is sent again, so it enters the ledger again (it may
    // have been forgotten by silence meanwhile; re-entering is conservative).
    if (gate_ == Gate::kSuperseded || in.last_reply->verdict != in.verdict) {
      // The verdict changed since (stepped down, refused): say so, grant nothing.
      Grant g = ReplyBase(request, in);
      g.learning = true;
      return std::optional<Grant>(std::move(g));
    }
    if (!in.last_reply->learning && in.last_reply->verdict == Verdict::kAccepted) {
      RecordGrant(in, *in.last_reply);
    }
    return std::optional<Grant>(*in.last_reply);
  }
  in.has_newest = true;
  in.newest_id = request.request_id;
  for (const auto& tr : request.targets) {
    const auto ti = TargetIndex(tr.target);
    if (!ti) continue;
    in.reports[*ti] = {tr.pool_held, tr.applied, tr.held, tr.waiting, tr.wanted, tr.registered};
  }
  // Grants below every target's applied id can never count again.
  std::uint64_t min_applied = UINT64_MAX;
  for (const auto& r : in.reports) min_applied = std::min(min_applied, r.applied);
  in.grants.erase(in.grants.begin(), in.grants.lower_bound(min_applied));

  if (first) {
    // R5: a predecessor that said goodbye handed its clients to this instance,
    // whose first report counts them (B2).
    std::erase_if(b.instances, [&](const Instance& o) {
      return o.goodbye && (o.epoch < in.epoch);
    });
    it = std::find_if(b.instances.begin(), b.instances.end(), [&](const Instance& o) {
      return o.epoch == request.epoch && o.instance == request.instance;
    });
  }
  Instance& me = *it;
  if (me.verdict == Verdict::kRemoved && request.erased) {
    bool empty = true;
    for (const auto& r : me.reports) empty = empty && r.pool_held == 0 && r.registered == 0 && r.held == 0;
    if (empty) {
      Grant g = ReplyBase(request, me);
      warnings_.push_back("removed broker '" + b.id + "' erased its acceptance and holds "
                          "nothing: no longer counted");
      std::erase_if(b.instances, [&](const Instance& o) { return &o == &me; });
      if (b.instances.empty()) b.base.assign(config_.targets.size(), 0);
      ForgetSilent(now);  // drops the broker entry if it was its last instance
      // The records on disk still hold its allowance: rewrite them, or a
      // coordinator restart would count it again (safe, only wasteful).
      if (config_.persist && !config_.persist(Records())) {
        warnings_.push_back("the acceptance records could not be rewritten without removed "
                            "broker '" + std::string(request.broker_id) +
                            "': a coordinator restart counts it again until it reports again");
      }
      return std::optional<Grant>(std::move(g));
    }
  }

  if (Learning(now)) {
    Grant g = ReplyBase(request, me);
    g.learning = true;
    me.last_reply = g;
    return std::optional<Grant>(std::move(g));
  }
  TryAccept(b, me, now);
  Grant g = ComputeGrant(b, me, request, now);
  if (g.verdict == Verdict::kAccepted) {
    RecordGrant(me, g);
    me.last_grant_at = now;
  }
  me.last_reply = g;
  return std::optional<Grant>(std::move(g));
}

bool Ledger::OnGoodbye(TimePoint now, const Goodbye& goodbye) {
  ForgetSilent(now);
  for (auto& b : brokers_) {
    if (b.id != goodbye.broker_id) continue;
    for (auto& in : b.instances) {
      if (in.epoch != goodbye.epoch || in.instance != goodbye.instance) continue;
      // From now on it counts exactly what it handed over: registrations and the
      // floor part of its actions as "counted", the rest as owed (its report).
      const std::size_t nt = config_.targets.size();
      std::vector<std::uint32_t> handed(nt, 0);
      for (auto& r : in.reports) r = TargetReportState{};
      for (const auto& gt : goodbye.targets) {
        const auto t = TargetIndex(gt.target);
        if (!t) continue;
        const std::uint32_t pool_held = std::min(gt.pool_held, gt.actions);
        handed[*t] = gt.registered + (gt.actions - pool_held);
        in.reports[*t].pool_held = pool_held;
        in.reports[*t].registered = gt.registered;
        in.reports[*t].held = gt.actions;
      }
      in.handed = std::move(handed);
      in.grants.clear();
      in.goodbye = true;
      in.last_heard = now;
      return true;
    }
  }
  return false;
}

Status Ledger::SetMode(std::string_view broker_id, BrokerMode mode, TimePoint now) {
  const auto bi = BrokerIndex(broker_id);
  if (!bi) {
    return {Errc::kConflict, "broker '" + std::string(broker_id) + "' is not in the cluster file"};
  }
  ForgetSilent(now);
  BrokerState& b = brokers_[*bi];
  b.mode = mode;
  if (mode == BrokerMode::kActive) b.revoked_targets.clear();
  if (mode != BrokerMode::kActive && !config_.switches.c2_revoke_keeps_owed) {
    // Broken on purpose (tests only): owed falls at once.
    for (auto& in : b.instances) {
      in.grants.clear();
      for (auto& r : in.reports) r.pool_held = 0;
    }
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

Status Ledger::RevokeTarget(std::string_view broker_id, std::string_view target,
                            TimePoint now) {
  const auto bi = BrokerIndex(broker_id);
  if (!bi) {
    return {Errc::kConflict, "broker '" + std::string(broker_id) + "' is not in the cluster file"};
  }
  const auto ti = TargetIndex(target);
  if (!ti) return {Errc::kUnknownTarget, "no target '" + std::string(target) + "' in the ledger"};
  ForgetSilent(now);
  BrokerState& b = brokers_[*bi];
  b.revoked_targets.resize(config_.targets.size(), false);
  b.revoked_targets[*ti] = true;
  return Status::Ok();
}

Status Ledger::ForceRevoke(std::string_view broker_id, TimePoint now) {
  ForgetSilent(now);
  for (auto& b : brokers_) {
    if (b.id != broker_id) continue;
    if (!b.config_index) {
      // R2: a removed broker confirmed dead leaves the count. The records go
      // to disk first: if they cannot, nothing changes (a restart would count
      // it again while this ledger did not).
      if (config_.persist) {
        std::vector<AcceptanceRecord> records = Records();
        std::erase_if(records, [&](const AcceptanceRecord& r) { return r.broker_id == b.id; });
        if (!config_.persist(records)) {
          return {Errc::kInternal, "broker '" + b.id + "' is still counted: the acceptance "
                                   "records could not be rewritten without it (see the log)"};
        }
      }
      b.instances.clear();
      b.base.assign(config_.targets.size(), 0);
      ForgetSilent(now);  // drops the entry: no instance, no base, not in the file
      return Status::Ok();
    }
    b.mode = BrokerMode::kRevoked;
    b.instances.clear();
    ForgetSilent(now);
    return Status::Ok();
  }
  return {Errc::kConflict, "broker '" + std::string(broker_id) + "' is not known to the ledger"};
}

bool Ledger::Knows(std::string_view broker_id) const {
  return std::any_of(brokers_.begin(), brokers_.end(),
                     [&](const BrokerState& b) { return b.id == broker_id; });
}

BrokerMode Ledger::ModeOf(std::string_view broker_id, std::size_t target_index) const {
  for (const auto& b : brokers_) {
    if (b.id != broker_id) continue;
    if (b.mode == BrokerMode::kActive && b.TargetRevoked(target_index)) return BrokerMode::kRevoked;
    return b.mode;
  }
  return BrokerMode::kActive;
}

Status Ledger::SetPool(std::string_view target, std::uint32_t pool, TimePoint now) {
  const auto ti = TargetIndex(target);
  if (!ti) return {Errc::kUnknownTarget, "no target '" + std::string(target) + "' in the ledger"};
  LedgerTarget& t = config_.targets[*ti];
  if (pool > configured_pool_[*ti]) {
    return {Errc::kInvalidArgument,
            "pool " + std::to_string(pool) + " for target '" + t.name +
                "' is above the configured pool " + std::to_string(configured_pool_[*ti]) +
                " (the cluster file's is the ceiling of every other source)"};
  }
  ForgetSilent(now);
  if (t.limit != 0) {
    // Keep L - P (= r + sum(system_slots + floor)) fixed.
    const std::uint32_t base = t.limit - t.pool;
    t.limit = base + pool;
  }
  t.pool = pool;
  room_[*ti] = pool + file_allowance_[*ti];
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
  // S: the configured limit is the ceiling (a limit keeper or an operator on
  // an older cluster file must not raise a lowered server's limit back).
  const std::uint32_t ceiling = base + configured_pool_[*ti];
  if (limit > ceiling) {
    return {Errc::kInvalidArgument,
            "limit " + std::to_string(limit) + " for target '" + t.name +
                "' is above the ceiling " + std::to_string(ceiling) +
                " (the configured limit of the ledger's cluster file, generation " +
                std::to_string(config_.generation) + ")"};
  }
  return SetPool(target, limit - base, now);
}

LedgerSnapshot Ledger::Snapshot(TimePoint now) const {
  LedgerSnapshot s;
  s.gate = gate_;
  s.generation = config_.generation;
  s.learning = Learning(now);
  // Liveness mode: the store knows the time left (its leases), this ledger not.
  s.learning_left = !config_.liveness && gate_ == Gate::kOpen && now < learning_until_
                        ? learning_until_ - now
                        : Duration::zero();
  s.term = config_.term;
  s.drain = config_.drain;
  s.silence = silence_;
  for (std::size_t t = 0; t < config_.targets.size(); ++t) {
    TargetLeaseView tv;
    tv.target = config_.targets[t].name;
    tv.limit = config_.targets[t].limit;
    tv.pool = PoolNow(t, now);
    for (const auto& b : brokers_) {
      BrokerLeaseView v;
      v.broker_id = b.id;
      v.in_file = b.config_index.has_value();
      v.weight = b.config_index ? config_.brokers[*b.config_index].weight : 1;
      v.mode = b.mode == BrokerMode::kActive && b.TargetRevoked(t) ? BrokerMode::kRevoked : b.mode;
      const Instance* newest = nullptr;
      const std::optional<TimePoint> last_heard = b.last_heard;
      std::uint64_t owed = 0;
      for (const auto& in : b.instances) {
        if (Silent(b, in, now)) continue;
        ++v.instances;
        owed += InstanceOwed(in, t);
        if (!in.goodbye && (newest == nullptr || in.epoch > newest->epoch ||
                            (in.epoch == newest->epoch && !config_.liveness &&
                             in.last_heard > newest->last_heard))) {
          newest = &in;
        }
      }
      v.owed = Clamp32(owed);
      v.counted = BrokerCounted(b, t, now);
      v.known = newest != nullptr;
      if (newest != nullptr) {
        const TargetReportState& r = newest->reports[t];
        v.verdict = newest->verdict;
        v.epoch = newest->epoch;
        v.newest_request = newest->newest_id;
        v.pool_held = r.pool_held;
        v.applied = r.applied;
        v.held = r.held;
        v.waiting = r.waiting;
        v.wanted = r.wanted;
        if (!newest->grants.empty()) v.granted = newest->grants.rbegin()->second[t];
        if (!config_.liveness && newest->last_grant_at &&
            *newest->last_grant_at + config_.term > now) {
          v.lease_left = *newest->last_grant_at + config_.term - now;
        }
      }
      if (last_heard && !config_.liveness) {
        v.last_seen_ago = now - *last_heard;
        if (v.instances > 0) v.silence_left = *last_heard + silence_ - now;
      }
      if (!v.in_file && v.instances == 0 && v.counted == 0) continue;
      tv.owed_total += v.owed;
      tv.brokers.push_back(std::move(v));
    }
    tv.free = tv.owed_total >= tv.pool ? 0 : static_cast<std::uint32_t>(tv.pool - tv.owed_total);
    s.targets.push_back(std::move(tv));
  }
  return s;
}

}  // namespace dsb::lease
