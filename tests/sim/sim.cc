#include "tests/sim/sim.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>

#include "common/check.h"

namespace dsb::sim {
namespace {

__extension__ using Int128 = __int128;

constexpr std::int64_t kMillion = 1'000'000;
constexpr RealTime kYieldMargin = 1000;  // clients yield at most H - 1 us after should_yield
const char* const kTarget = "t";

// floor(real * (1 + ppm / 1e6)): a node's local clock reading at a real time.
std::int64_t LocalNs(std::int64_t ppm, RealTime real) {
  return static_cast<std::int64_t>(static_cast<Int128>(real) * (kMillion + ppm) / kMillion);
}

}  // namespace

Simulation::Simulation(SimConfig config) : config_(std::move(config)), rng_(config_.seed) {
  std::uint64_t reserved = config_.reserve;
  for (const auto& b : config_.brokers) reserved += b.system_slots + b.floor;
  DSB_CHECK(reserved <= config_.limit, "L = %u below r + sum(system_slots + floor) = %llu",
            config_.limit, static_cast<unsigned long long>(reserved));
  pool_ = static_cast<std::uint32_t>(config_.limit - reserved);
  const double max_ppm = config_.eps * 1e6 + 0.5;
  DSB_CHECK(std::fabs(static_cast<double>(config_.coordinator_ppm)) <= max_ppm,
            "coordinator drift beyond eps");
  brokers_.resize(config_.brokers.size());
  for (std::size_t i = 0; i < brokers_.size(); ++i) {
    Broker& b = brokers_[i];
    b.spec = config_.brokers[i];
    DSB_CHECK(std::fabs(static_cast<double>(b.spec.clock_ppm)) <= max_ppm,
              "broker %zu drift beyond eps", i);
    b.id = "b" + std::to_string(i);
    // Wall clocks start somewhere in 2026 (microseconds since 1970), apart.
    b.wall_offset = Sec(1'780'000'000) + Sec(static_cast<double>(i));
    b.demand = b.spec.demand;
    const int bi = static_cast<int>(i);
    At(b.spec.start_at, [this, bi] {
      Broker& br = brokers_[static_cast<std::size_t>(bi)];
      StartBroker(bi);
      br.registered = std::min(br.spec.instances, br.spec.system_slots);
      Admit(bi);
    });
    if (config_.demand_change_every > 0)
      Push(Exponential(config_.demand_change_every), Ev::kDemand, bi);
  }
  ledger_ = std::make_unique<lease::Ledger>(LedgerCfg(true), CoordinatorClock());
  if (config_.etcd.enabled) EtcdStart();
  if (config_.server.enabled) {
    const ServerSpec& sv = config_.server;
    cap_ = sv.cap != 0 ? sv.cap : config_.limit;
    others_reserved_total_ = reserved - config_.reserve;
    const RealTime extra = sv.close == ServerSpec::Close::kConfirmed  ? sv.close_lag
                           : sv.close == ServerSpec::Close::kCooldown ? sv.cooldown
                                                                      : 0;
    DSB_CHECK(extra + kYieldMargin < config_.drain.count(),
              "a yielding client's release (confirmation or cooldown) must fit in H");
    DSB_CHECK(sv.refusal_backoff > 0, "a refused thread must back off");
    stats_.cap = cap_;
    stats_.limit = stats_.min_limit = config_.limit;
    StartPolicy();
    if (sv.other_every > 0) Push(Exponential(sv.other_every), Ev::kOtherTool, 0);
  }
  const FaultSpec& f = config_.faults;
  if (f.partition_every > 0 || f.broker_crash_every > 0 || f.coordinator_crash_every > 0 ||
      f.revoke_every > 0 || f.broker_pause_every > 0 || f.coordinator_pause_every > 0 ||
      f.register_every > 0 || f.clock_step_every > 0 || f.slow_link_every > 0 ||
      (config_.etcd.enabled && f.store_wipe_every > 0)) {
    Push(Exponential(5), Ev::kChaos, 0);
  }
}

lease::LedgerConfig Simulation::LedgerCfg(bool first_start) const {
  lease::LedgerConfig c;
  c.targets = {{kTarget, pool_, config_.limit}};
  for (const auto& b : brokers_) {
    lease::LedgerBroker lb;  // by field: the struct grows (R0-R5)
    lb.id = b.id;
    lb.weight = b.spec.weight;
    c.brokers.push_back(std::move(lb));
  }
  c.term = config_.term;
  c.drain = config_.drain;
  c.eps = config_.eps;
  c.switches = config_.switches;
  if (first_start && config_.fresh_cluster) c.switches.c3_learning = false;
  return c;
}

// ---- randomness (own distributions: identical on every standard library) ----

double Simulation::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }
std::uint64_t Simulation::Below(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
RealTime Simulation::Between(RealTime lo, RealTime hi) {
  if (hi <= lo) return lo;
  return lo + static_cast<RealTime>(Below(static_cast<std::uint64_t>(hi - lo) + 1));
}
RealTime Simulation::Exponential(double mean_seconds) {
  const double u = 1.0 - Uniform();  // (0, 1]
  return now_ + static_cast<RealTime>(-std::log(u) * mean_seconds * 1e9);
}

// ---- clocks ----

lease::TimePoint Simulation::BrokerClock(int b) const {
  return lease::TimePoint{} +
         Duration(LocalNs(brokers_[static_cast<std::size_t>(b)].spec.clock_ppm, now_));
}

std::int64_t Simulation::LocalNow(std::int64_t ppm) const { return LocalNs(ppm, now_); }

lease::TimePoint Simulation::CoordinatorClock() const {
  return lease::TimePoint{} + Duration(LocalNs(config_.coordinator_ppm, now_));
}

// The earliest real time at which a clock with `ppm` reads at least `local`.
RealTime Simulation::RealAt(std::int64_t ppm, lease::TimePoint local) const {
  const std::int64_t l = local.time_since_epoch().count();
  RealTime r = static_cast<RealTime>(static_cast<Int128>(l) * kMillion / (kMillion + ppm));
  while (LocalNs(ppm, r) < l) ++r;
  while (r > 0 && LocalNs(ppm, r - 1) >= l) --r;
  return std::max(r, now_);
}

// ---- event loop ----

void Simulation::Push(RealTime at, Ev kind, int broker, std::uint64_t a, std::uint64_t b) {
  queue_.push(Event{std::max(at, now_), seq_++, kind, broker, a, b});
}

void Simulation::At(RealTime t, std::function<void()> fn) {
  scripts_.push_back(std::move(fn));
  Push(t, Ev::kScript, 0, scripts_.size() - 1);
}

void Simulation::RunUntil(RealTime t) {
  while (!queue_.empty() && queue_.top().at <= t) {
    const Event e = queue_.top();
    queue_.pop();
    Account(e.at);
    now_ = e.at;
    Dispatch(e);
    ++stats_.events;
    Check();
  }
  Account(t);
  now_ = std::max(now_, t);
}

void Simulation::Dispatch(const Event& e) {
  switch (e.kind) {
    case Ev::kWake: {
      Broker& b = brokers_[static_cast<std::size_t>(e.broker)];
      if (!b.up || e.a != b.wake_seq || Paused(e.broker)) return;
      HandleStep(e.broker, b.agent->Tick(BrokerClock(e.broker), Usage(e.broker)));
      return;
    }
    case Ev::kToCoordinator:
    case Ev::kToBroker: {
      auto it = in_flight_.find(e.a);
      DSB_CHECK(it != in_flight_.end(), "message %llu lost by the simulator",
                static_cast<unsigned long long>(e.a));
      const Message m = std::move(it->second);
      in_flight_.erase(it);
      const Broker& br = brokers_[static_cast<std::size_t>(m.info.broker)];
      if (e.kind == Ev::kToCoordinator ? br.cut_up : br.cut_down) {
        ++stats_.dropped;
        if (m.info.kind == MsgInfo::kRefusal) ++stats_.reports_lost;
        return;
      }
      Deliver(e.broker, e.kind, m);
      return;
    }
    case Ev::kFence: {
      Broker& b = brokers_[static_cast<std::size_t>(e.broker)];
      if (e.a != b.fence_seq) return;
      // The clients' watchdog: capacity above the floor is gone; held slots
      // above it are retired and come back within H.
      Log("%s: lease fence in the slot table (broker %s)", b.id.c_str(),
          !b.up ? "down" : Paused(e.broker) ? "stopped" : "running");
      Enforce(e.broker);
      return;
    }
    case Ev::kResume:
      if (e.broker < 0) {
        ResumeStoppedCoordinator();
      } else {
        ResumeStopped(e.broker);
      }
      return;
    case Ev::kSessionEnd: {
      Broker& b = brokers_[static_cast<std::size_t>(e.broker)];
      auto it = b.sessions.find(e.a);
      if (it == b.sessions.end() || it->second.version != e.b) return;
      if (!config_.server.enabled) {
        b.sessions.erase(it);
      } else if (!it->second.closing) {
        CloseSession(e.broker, e.a, /*thinks=*/true);
      } else {
        // The confirmation came, or the cooldown is over: the slot is free.
        const Session s = it->second;
        b.sessions.erase(it);
        const ServerSpec& sv = config_.server;
        if (sv.close == ServerSpec::Close::kCooldown) --b.cooling;
        if (s.server_end > now_) lingering_.push_back(s.server_end);
        if (sv.close == ServerSpec::Close::kConfirmed && sv.think > 0) {
          ThreadWaits(e.broker, now_ + sv.think);
        }
      }
      Admit(e.broker);
      Poke(e.broker);
      return;
    }
    case Ev::kWaitEnd: {
      Broker& b = brokers_[static_cast<std::size_t>(e.broker)];
      if (b.waiting_threads.erase(e.a) == 0) return;
      Admit(e.broker);
      Poke(e.broker);
      return;
    }
    case Ev::kOtherTool: {
      const ServerSpec& sv = config_.server;
      const auto k = 1 + static_cast<std::uint32_t>(Below(sv.other_max_sessions));
      OtherToolSession(k, Between(sv.other_hold_min, sv.other_hold_max));
      Push(Exponential(sv.other_every), Ev::kOtherTool, 0);
      return;
    }
    case Ev::kScript:
      scripts_[e.a]();
      return;
    case Ev::kDemand: {
      const Broker& br = brokers_[static_cast<std::size_t>(e.broker)];
      const std::uint32_t d =
          config_.demand_bursts ? (br.demand == 0 ? config_.max_demand : 0)
          : Below(5) == 0       ? 0
                                : static_cast<std::uint32_t>(Below(config_.max_demand + 1));
      SetDemand(e.broker, d);
      Push(Exponential(config_.demand_change_every), Ev::kDemand, e.broker);
      return;
    }
    case Ev::kChaos:
      Chaos();
      return;
    case Ev::kStoreTick:
      if (e.a == store_tick_seq_) StoreTick();
      return;
    case Ev::kLinkTimeout:
      if (e.a == brokers_[static_cast<std::size_t>(e.broker)].link.timer_seq) LinkTimeout(e.broker);
      return;
    case Ev::kElect:
      if (e.a == election_seq_) ElectLeader();
      return;
  }
}

void Simulation::Account(RealTime until) {
  if (until <= accounted_) return;
  const double dt = static_cast<double>(until - accounted_);
  std::uint64_t held = 0, demand = 0;
  for (const auto& b : brokers_) {
    const std::uint32_t a = static_cast<std::uint32_t>(b.sessions.size());
    held += a > b.spec.floor ? a - b.spec.floor : 0;
    demand += b.demand > b.spec.floor ? b.demand - b.spec.floor : 0;
  }
  const double p = pool_;
  util_num_ += dt * std::min<double>(static_cast<double>(held), p);
  util_den_ += dt * std::min<double>(static_cast<double>(demand), p);
  if (pool_ > 0 && demand >= pool_) {
    sat_num_ += dt * std::min<double>(static_cast<double>(held), p) / p;
    sat_den_ += dt;
  }
  if (config_.server.enabled) {
    server_num_ += dt * static_cast<double>(DsbServerCount()) / static_cast<double>(cap_);
    server_den_ += dt;
    limit_num_ += dt * static_cast<double>(effective_limit());
  }
  accounted_ = until;
}

void Simulation::Check() {
  std::uint64_t used = 0;
  std::uint64_t leases = 0;
  for (std::size_t i = 0; i < brokers_.size(); ++i) {
    const Broker& b = brokers_[i];
    used += b.registered + b.sessions.size();
    leases += lease(static_cast<int>(i));
  }
  stats_.max_slots_used = std::max(stats_.max_slots_used, static_cast<std::uint32_t>(used));
  if (leases > pool_) {
    stats_.max_over_grant =
        std::max(stats_.max_over_grant, static_cast<std::uint32_t>(leases - pool_));
  }
  if (used > config_.limit - config_.reserve) {
    ++stats_.s_violations;
    if (stats_.first_violation.empty()) {
      std::string s = "seed " + std::to_string(config_.seed) +
                      ": S violated at t=" + std::to_string(static_cast<double>(now_) / 1e9) +
                      " s: " + std::to_string(used) +
                      " slots > L - r = " + std::to_string(config_.limit - config_.reserve) + " (";
      for (std::size_t i = 0; i < brokers_.size(); ++i) {
        const Broker& b = brokers_[i];
        s += b.id + ": registered " + std::to_string(b.registered) + " actions " +
             std::to_string(b.sessions.size()) + " lease " +
             std::to_string(lease(static_cast<int>(i))) + (b.up ? "" : " DOWN") +
             (i + 1 < brokers_.size() ? "; " : ")");
      }
      stats_.first_violation = s;
      Log("%s", s.c_str());
    }
  }
}

const SimStats& Simulation::stats() const {
  stats_.utilization = util_den_ > 0 ? util_num_ / util_den_ : 1.0;
  stats_.saturated_utilization = sat_den_ > 0 ? sat_num_ / sat_den_ : 1.0;
  stats_.saturated_seconds = sat_den_ / 1e9;
  if (config_.server.enabled) {
    stats_.server_utilization = server_den_ > 0 ? server_num_ / server_den_ : 0;
    stats_.mean_limit = server_den_ > 0 ? limit_num_ / server_den_ : config_.limit;
    const double silence =
        static_cast<double>((config_.term + config_.drain).count()) * (1 + config_.eps);
    const RealTime converged =
        last_change_ + static_cast<RealTime>(std::ceil(silence)) + config_.server.close_lag;
    stats_.refusals_until_convergence = stats_.refusals_after_convergence = 0;
    stats_.real_cap_violations = 0;
    // Converged only once the limit is at or below the real cap: above it, dsb
    // may meet a full server whenever it is busy (the owed bound's slack).
    const bool done = converged <= now_ && stats_.limit <= cap_;
    stats_.converged_at = done ? static_cast<double>(converged) / 1e9 : -1;
    for (const RefusalRecord& r : refusal_log_) {
      if (!done || r.at < converged) {
        ++stats_.refusals_until_convergence;
        continue;
      }
      ++stats_.refusals_after_convergence;
      if (r.others == 0) {
        if (stats_.real_cap_violations++ == 0) {
          stats_.first_real_violation =
              "seed " + std::to_string(config_.seed) + ": refused at t=" +
              std::to_string(static_cast<double>(r.at) / 1e9) +
              " s with no other tool on the account, after convergence at " +
              std::to_string(stats_.converged_at) + " s (limit " + std::to_string(stats_.limit) +
              ", C = " + std::to_string(cap_) + ")";
        }
      }
    }
  }
  return stats_;
}

void Simulation::Log(const char* fmt, ...) const {
  if (!config_.verbose) return;
  std::fprintf(stderr, "[%10.6f] ", static_cast<double>(now_) / 1e9);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

// ---- brokers and clients ----

std::vector<lease::TargetUsage> Simulation::Usage(int b) const {
  const Broker& br = brokers_[static_cast<std::size_t>(b)];
  const auto actions = static_cast<std::uint32_t>(br.sessions.size());
  return {lease::TargetUsage{actions, br.demand > actions ? br.demand - actions : 0}};
}

void Simulation::StartBroker(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  br.up = true;
  br.lease_amount = 0;
  br.refusal_clamp.reset();
  br.paused_until = 0;
  br.inbox.clear();
  br.link = EtcdLink{};  // a new instance: a new store lease and live key
  if (config_.epoch_source == EpochSource::kCounter) {
    ++br.epoch;
  } else {
    // Wall-clock microseconds, as the product did before R0.
    br.epoch = static_cast<std::uint64_t>(std::max<RealTime>(1, (now_ + br.wall_offset) / 1000));
  }
  lease::AgentConfig c;
  c.broker_id = br.id;
  c.epoch = br.epoch;
  lease::AgentTarget target;  // by field: the struct grows (R0-R5)
  target.name = kTarget;
  target.system_slots = br.spec.system_slots;
  target.floor = br.spec.floor;
  c.targets = {target};
  c.term = config_.term;
  c.renew_interval = br.spec.renew_interval;
  if (!config_.early_renew) c.fast_renew_interval = config_.term;
  c.eps = config_.eps;
  c.switches = config_.switches;
  br.agent = std::make_unique<lease::LeaseAgent>(std::move(c), BrokerClock(b));
  Log("%s starts, epoch %llu, still holding %zu", br.id.c_str(),
      static_cast<unsigned long long>(br.epoch), br.sessions.size());
  ++br.wake_seq;
  Push(now_, Ev::kWake, b, br.wake_seq);
}

void Simulation::HandleStep(int b, const lease::AgentStep& step) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  const lease::TargetCapacity& cap = step.targets[0];
  br.lease_amount = cap.lease;
  br.lease_until = cap.lease_valid_until ? RealAt(br.spec.clock_ppm, *cap.lease_valid_until) : 0;
  // The broker writes its capacity and the lease deadline into the slot
  // table; the clients' fence fires at the deadline (or late, with the switch).
  br.table_cap = std::max(cap.action_capacity, br.spec.floor + TrustLease(b));
  RealTime fence_at = cap.lease_valid_until && cap.lease > 0 ? br.lease_until : kNever;
  if (TrustLease(b) > 0) {
    fence_at = std::max(fence_at == kNever ? 0 : fence_at, br.link.trust_until);
  }
  if (fence_at != br.fence_at) {
    br.fence_at = fence_at;
    ++br.fence_seq;
    if (fence_at != kNever && config_.glue.client_fence) {
      Push(fence_at + (config_.glue.fence_on_time ? 0 : kLateFence), Ev::kFence, b,
           br.fence_seq);
    }
  }
  if (step.send) {
    Message m;
    m.info.kind = MsgInfo::kRequest;
    m.info.broker = b;
    m.info.epoch = step.send->epoch;
    m.info.request_id = step.send->request_id;
    m.info.resend =
        step.send->epoch == br.last_sent_epoch && step.send->request_id == br.last_sent_id;
    br.last_sent_epoch = step.send->epoch;
    br.last_sent_id = step.send->request_id;
    m.request = *step.send;
    const auto& t = step.send->targets[0];
    Log("%s sends request e%llu#%llu%s pool_held %u applied %llu wanted %u", br.id.c_str(),
        static_cast<unsigned long long>(m.info.epoch),
        static_cast<unsigned long long>(m.info.request_id), m.info.resend ? " (resend)" : "",
        t.pool_held, static_cast<unsigned long long>(t.applied), t.wanted);
    if (config_.etcd.enabled) {
      LinkSend(b, m.request);
    } else {
      Send(std::move(m));
    }
  }
  Enforce(b);
  const bool admitted = Admit(b);
  ++br.wake_seq;
  Push(admitted ? now_ : RealAt(br.spec.clock_ppm, step.deadline), Ev::kWake, b, br.wake_seq);
}

void Simulation::Poke(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up || Paused(b)) return;
  HandleStep(b, br.agent->Tick(BrokerClock(b), Usage(b)));
}

void Simulation::Enforce(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  const std::uint32_t cap = TableCapacity(b);
  std::size_t not_yielding = 0;
  for (const auto& entry : br.sessions) not_yielding += entry.second.yielding ? 0 : 1;
  if (not_yielding <= cap) return;
  std::vector<std::pair<RealTime, std::uint64_t>> keep;  // non-yielding (end, id)
  keep.reserve(not_yielding);
  for (const auto& [id, s] : br.sessions) {
    if (!s.yielding) keep.emplace_back(s.end, id);
  }
  std::sort(keep.begin(), keep.end(), std::greater<>());  // latest end yields first
  const std::size_t excess = keep.size() - cap;
  RealTime h = config_.drain.count() - kYieldMargin;
  if (config_.server.enabled) {
    // The client's release (confirmation or cooldown) is part of its yield.
    const ServerSpec& sv = config_.server;
    if (sv.close == ServerSpec::Close::kConfirmed) h -= sv.close_lag;
    if (sv.close == ServerSpec::Close::kCooldown) h -= sv.cooldown;
  }
  for (std::size_t k = 0; k < excess; ++k) {
    Session& s = br.sessions[keep[k].second];
    s.yielding = true;
    const RealTime delay = config_.adversarial_clients ? h : Between(0, h);
    const RealTime end = std::min(s.end, now_ + delay);
    if (end != s.end) {
      s.end = end;
      ++s.version;
      Push(end, Ev::kSessionEnd, b, keep[k].second, s.version);
    }
  }
  Log("%s capacity %u: %zu sessions must yield", br.id.c_str(), cap, excess);
}

bool Simulation::Admit(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up || br.registered == 0) return false;
  bool admitted = false;
  while (br.demand > Busy(br) && TableAdmitsAction(b)) {
    if (br.refusal_clamp && br.sessions.size() >= *br.refusal_clamp) break;
    if (config_.server.enabled && ServerCount() >= cap_) {
      Refuse(b);
      admitted = true;  // usage changed: the agent looks again
      continue;
    }
    const std::uint64_t id = next_session_++;
    const RealTime end = config_.adversarial_clients
                             ? kNever
                             : now_ + Between(config_.session_min, config_.session_max);
    br.sessions[id] = Session{end, 0, false};
    if (end != kNever) Push(end, Ev::kSessionEnd, b, id, 0);
    admitted = true;
  }
  return admitted;
}

void Simulation::SetDemand(int b, std::uint32_t threads) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  br.demand = threads;
  if (config_.server.enabled) {
    // Threads that quit: waiting ones first, then open actions (closed as
    // the mode says), the one that would run longest first.
    while (Busy(br) > threads && !br.waiting_threads.empty()) {
      br.waiting_threads.erase(br.waiting_threads.begin());
    }
    while (Busy(br) > threads) {
      std::optional<std::uint64_t> victim;
      for (const auto& [id, s] : br.sessions) {
        if (s.closing) continue;
        if (!victim) {
          victim = id;
          continue;
        }
        const Session& v = br.sessions[*victim];
        if (s.yielding != v.yielding ? s.yielding : s.end > v.end) victim = id;
      }
      if (!victim) break;  // the rest wait for a confirmation
      CloseSession(b, *victim, /*thinks=*/false);
    }
    Log("%s demand %u", br.id.c_str(), threads);
    Admit(b);
    Poke(b);
    return;
  }
  while (br.sessions.size() > threads) {
    // Threads that quit end their action now: yielding ones first, then the
    // one that would run longest.
    auto victim = br.sessions.begin();
    for (auto it = br.sessions.begin(); it != br.sessions.end(); ++it) {
      if (it->second.yielding != victim->second.yielding) {
        if (it->second.yielding) victim = it;
      } else if (it->second.end > victim->second.end) {
        victim = it;
      }
    }
    br.sessions.erase(victim);
  }
  Log("%s demand %u", br.id.c_str(), threads);
  Admit(b);
  Poke(b);
}

bool Simulation::RegisterClient(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  // A registration needs the broker itself (it accepts the socket).
  if (!br.up || Paused(b) || !br.agent->MayAdmitRegistration(0, br.registered)) return false;
  ++br.registered;
  Log("%s registers client %u", br.id.c_str(), br.registered);
  return true;
}

std::uint32_t Simulation::actions(int b) const {
  return static_cast<std::uint32_t>(brokers_[static_cast<std::size_t>(b)].sessions.size());
}
std::uint32_t Simulation::registered(int b) const {
  return brokers_[static_cast<std::size_t>(b)].registered;
}
std::uint64_t Simulation::epoch(int b) const { return brokers_[static_cast<std::size_t>(b)].epoch; }
std::uint32_t Simulation::lease(int b) const {
  const Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up) return 0;
  // Cached from the agent's last step; the lease lapses at a real time we know.
  return std::max(now_ < br.lease_until ? br.lease_amount : 0, TrustLease(b));
}

// ---- network ----

void Simulation::Send(Message m) {
  ++stats_.messages;
  const int b = m.info.broker;
  std::optional<Fate> fate;
  if (hook_) fate = hook_(m.info, now_);
  std::vector<RealTime> deliveries;
  if (fate) {
    if (fate->drop) {
      ++stats_.dropped;
      if (m.info.kind == MsgInfo::kRefusal) ++stats_.reports_lost;
      Log("network drops message for %s (scripted)",
          brokers_[static_cast<std::size_t>(b)].id.c_str());
      return;
    }
    deliveries.push_back(fate->deliver_at ? *fate->deliver_at : now_ + config_.net.min_delay);
  } else {
    const Broker& br = brokers_[static_cast<std::size_t>(b)];
    const bool up = m.info.kind == MsgInfo::kRequest || m.info.kind == MsgInfo::kRefusal ||
                    m.info.kind == MsgInfo::kStoreCall;
    if ((up ? br.cut_up : br.cut_down) || Uniform() < config_.net.loss) {
      ++stats_.dropped;
      if (m.info.kind == MsgInfo::kRefusal) ++stats_.reports_lost;
      return;
    }
    const NetworkSpec& n = config_.net;
    auto delay = [&] {
      if (n.late > 0 && Uniform() < n.late) {
        const RealTime d = config_.term.count();
        const RealTime late_max = n.late_max > 0 ? n.late_max : 2 * d + config_.drain.count();
        return Between(d, std::max(d, late_max));
      }
      if (Uniform() < n.long_delay)
        return Between(n.max_delay, std::max(n.max_delay, n.long_delay_max));
      return Between(n.min_delay, n.max_delay);
    };
    const RealTime slow = up ? 0 : br.slow_down;
    deliveries.push_back(now_ + slow + delay());
    if (Uniform() < n.duplicate) deliveries.push_back(now_ + slow + delay());
  }
  const Ev kind = m.info.kind == MsgInfo::kRequest || m.info.kind == MsgInfo::kRefusal ||
                          m.info.kind == MsgInfo::kStoreCall
                      ? Ev::kToCoordinator
                      : Ev::kToBroker;
  for (RealTime t : deliveries) {
    const std::uint64_t id = next_msg_++;
    in_flight_.emplace(id, m);
    Push(t, kind, b, id);
  }
}

void Simulation::OnCoordinatorMessage(const Message& m) {
  if (!coordinator_up_) {
    ++stats_.dropped;
    if (m.info.kind == MsgInfo::kRefusal) ++stats_.reports_lost;
    return;
  }
  if (m.info.kind == MsgInfo::kRefusal) {
    OnRefusalReport(m);
    return;
  }
  if (recent_owed_) recent_owed_->Observe(*ledger_, CoordinatorClock());
  auto reply = ledger_->OnRequest(CoordinatorClock(), m.request);
  if (recent_owed_) recent_owed_->Observe(*ledger_, CoordinatorClock());
  DSB_CHECK(reply.ok(), "%s", reply.status().message().c_str());
  if (!reply.value()) {
    Log("coordinator ignores stale request %s e%llu#%llu", m.request.broker_id.c_str(),
        static_cast<unsigned long long>(m.request.epoch),
        static_cast<unsigned long long>(m.request.request_id));
    return;
  }
  Message g;
  g.info.kind = MsgInfo::kGrant;
  g.info.broker = m.info.broker;
  g.info.epoch = reply.value()->epoch;
  g.info.request_id = reply.value()->request_id;
  g.info.learning = reply.value()->learning;
  g.info.amount = reply.value()->targets.empty() ? 0 : reply.value()->targets[0].amount;
  g.grant = *reply.value();
  Log("coordinator grants %s e%llu#%llu: %s%u (owed %u)", m.request.broker_id.c_str(),
      static_cast<unsigned long long>(g.info.epoch),
      static_cast<unsigned long long>(g.info.request_id), g.info.learning ? "learning " : "",
      g.info.amount, ledger_->Owed(static_cast<std::size_t>(m.info.broker), 0, CoordinatorClock()));
  Send(std::move(g));
}

void Simulation::OnBrokerMessage(int b, const Message& m) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up) {
    ++stats_.dropped;
    return;
  }
  if (m.info.kind == MsgInfo::kGrant) {
    const std::uint64_t applied_before = br.agent->Capacity(0, BrokerClock(b)).applied;
    const lease::AgentStep step = br.agent->OnGrant(BrokerClock(b), m.grant);
    if (step.targets[0].applied != applied_before) {
      br.refusal_clamp.reset();
      br.link.trust_amount = step.targets[0].lease;
    }
    Log("%s receives grant e%llu#%llu %u: %s, capacity %u", br.id.c_str(),
        static_cast<unsigned long long>(m.info.epoch),
        static_cast<unsigned long long>(m.info.request_id), m.info.amount,
        step.targets[0].applied != applied_before ? "applied" : "ignored",
        step.targets[0].action_capacity);
    HandleStep(b, step);
  } else if (m.info.kind == MsgInfo::kStoreReply) {
    OnStoreReply(b, m);
  } else {
    HandleStep(b, br.agent->OnRevokeNotice(BrokerClock(b), m.notice));
  }
}

// ---- faults and admin ----

void Simulation::Partition(int b, bool cut) { PartitionOneWay(b, cut, cut); }

void Simulation::PartitionOneWay(int b, bool up, bool down) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  br.cut_up = up;
  br.cut_down = down;
  Log("%s %s", br.id.c_str(),
      up && down ? "cut off"
      : up       ? "cut off one way (its requests are lost)"
      : down     ? "cut off one way (grants to it are lost)"
                 : "reconnected");
}

bool Simulation::Paused(int b) const {
  return now_ < brokers_[static_cast<std::size_t>(b)].paused_until;
}

bool Simulation::Fenced(int b) const {
  const Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!config_.glue.client_fence || br.fence_at == kNever) return false;
  return now_ >= br.fence_at + (config_.glue.fence_on_time ? 0 : kLateFence);
}

std::uint32_t Simulation::TableCapacity(int b) const {
  const Broker& br = brokers_[static_cast<std::size_t>(b)];
  // A dead broker's clients see EOF: everything above the floor must go.
  if (!br.up) return br.spec.floor;
  // A running broker sets the table from its agent at every step; a stopped
  // one leaves what it last wrote.
  std::uint32_t cap =
      Paused(b) ? br.table_cap : br.agent->Capacity(0, BrokerClock(b)).action_capacity;
  if (!Paused(b)) cap = std::max(cap, br.spec.floor + TrustLease(b));
  if (Fenced(b)) cap = std::min(cap, br.spec.floor);
  return cap;
}

bool Simulation::TableAdmitsAction(int b) const {
  const Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up) return false;
  const auto actions = static_cast<std::uint32_t>(br.sessions.size());
  // A running broker admits by its agent's B1 rule (two counters, or one
  // with the switch off); the table's fence applies on top of it.
  if (!Paused(b) && TrustLease(b) == 0 &&
      !br.agent->MayAdmitAction(0, br.registered, actions, BrokerClock(b))) {
    return false;
  }
  const std::uint32_t cap = TableCapacity(b);
  if (config_.switches.b1_two_counters) return actions < cap;
  return std::uint64_t{br.registered} + actions < std::uint64_t{br.spec.system_slots} + cap;
}

void Simulation::PauseBroker(int b, RealTime until) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up || until <= now_) return;
  const bool was = Paused(b);
  br.paused_until = std::max(br.paused_until, until);
  Log("%s stopped until t=%.3f", br.id.c_str(), static_cast<double>(br.paused_until) / 1e9);
  if (!was || br.paused_until == until) Push(br.paused_until, Ev::kResume, b);
}

void Simulation::ResumeStopped(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up || Paused(b) || br.paused_until == 0) return;
  br.paused_until = 0;
  Log("%s runs again (%zu messages waiting)", br.id.c_str(), br.inbox.size());
  std::vector<Message> inbox = std::move(br.inbox);
  br.inbox.clear();
  for (const Message& m : inbox) {
    if (!br.up || Paused(b)) break;
    OnBrokerMessage(b, m);
  }
  // Its timers fire now, late.
  if (br.up && !Paused(b)) HandleStep(b, br.agent->Tick(BrokerClock(b), Usage(b)));
}

void Simulation::PauseCoordinator(RealTime until) {
  if (config_.etcd.enabled) {
    // Quorum lost until then (a leader elected then: every TTL reset).
    if (until > now_) LeaderChange(until - now_);
    return;
  }
  if (!coordinator_up_ || until <= now_) return;
  const bool was = now_ < coordinator_paused_until_;
  coordinator_paused_until_ = std::max(coordinator_paused_until_, until);
  Log("coordinator stopped until t=%.3f", static_cast<double>(coordinator_paused_until_) / 1e9);
  if (!was || coordinator_paused_until_ == until) Push(coordinator_paused_until_, Ev::kResume, -1);
}

void Simulation::ResumeStoppedCoordinator() {
  if (!coordinator_up_ || now_ < coordinator_paused_until_ || coordinator_paused_until_ == 0) {
    return;
  }
  coordinator_paused_until_ = 0;
  Log("coordinator runs again (%zu messages waiting)", coordinator_inbox_.size());
  std::vector<Message> inbox = std::move(coordinator_inbox_);
  coordinator_inbox_.clear();
  for (const Message& m : inbox) OnCoordinatorMessage(m);
  if (policy_) TickPolicy();
}

void Simulation::Deliver(int b, Ev kind, const Message& m) {
  if (kind == Ev::kToCoordinator && m.info.kind == MsgInfo::kStoreCall) {
    OnStoreCall(m);
    return;
  }
  if (kind == Ev::kToCoordinator) {
    if (coordinator_up_ && now_ < coordinator_paused_until_) {
      coordinator_inbox_.push_back(m);
      return;
    }
    OnCoordinatorMessage(m);
    return;
  }
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (br.up && Paused(b)) {
    br.inbox.push_back(m);
    return;
  }
  OnBrokerMessage(b, m);
}

void Simulation::StepWallClock(int b, RealTime delta) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  br.wall_offset += delta;
  Log("%s wall clock steps by %+.3f s", br.id.c_str(), static_cast<double>(delta) / 1e9);
}

void Simulation::SlowLink(int b, RealTime extra) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  br.slow_down = extra;
  Log("%s: link %s", br.id.c_str(), extra > 0 ? "degraded" : "normal again");
}

void Simulation::UnregisterClient(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (br.registered <= 1) return;  // the sim keeps one instance for the action threads
  --br.registered;
  Log("%s: a DigiScope instance exits (%u registered)", br.id.c_str(), br.registered);
}

void Simulation::CrashBroker(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up) return;
  br.up = false;
  br.agent.reset();
  br.lease_amount = 0;
  br.paused_until = 0;  // kill -9 ends a stopped process too
  br.inbox.clear();
  br.fence_at = kNever;
  ++br.fence_seq;
  ++br.wake_seq;
  // Its store lease stays until it expires (the ledger counts it until then).
  br.link = EtcdLink{};
  Log("%s crashes holding %zu", br.id.c_str(), br.sessions.size());
  Enforce(b);
}

void Simulation::RestartBroker(int b) {
  if (brokers_[static_cast<std::size_t>(b)].up) return;
  StartBroker(b);
}

void Simulation::CrashCoordinator() {
  if (config_.etcd.enabled) {
    LeaderChange(kNever);
    return;
  }
  if (!coordinator_up_) return;
  coordinator_up_ = false;
  coordinator_paused_until_ = 0;
  coordinator_inbox_.clear();
  ledger_.reset();
  policy_.reset();
  recent_owed_.reset();
  Log("coordinator crashes");
}

void Simulation::RestartCoordinator() {
  if (config_.etcd.enabled) {
    ElectLeader();
    return;
  }
  if (coordinator_up_) return;
  ledger_ = std::make_unique<lease::Ledger>(LedgerCfg(false), CoordinatorClock());
  coordinator_up_ = true;
  if (config_.server.enabled) {
    // A coordinator without state starts from the configured limit again: what
    // was discovered must be discovered again (its refusals count).
    StartPolicy();
    NoteLimit(config_.limit);
  }
  Log("coordinator restarts without state (learning: %s)",
      ledger_->Learning(CoordinatorClock()) ? "yes" : "no");
}

void Simulation::Revoke(int b) {
  if (config_.etcd.enabled) {
    EtcdRevoke(b, false);
    return;
  }
  if (!coordinator_up_ || now_ < coordinator_paused_until_) return;
  const Broker& br = brokers_[static_cast<std::size_t>(b)];
  DSB_CHECK(ledger_->Revoke(br.id, CoordinatorClock()).ok(), "revoke %s", br.id.c_str());
  const lease::LedgerSnapshot snap = ledger_->Snapshot(CoordinatorClock());
  Message m;
  m.info.kind = MsgInfo::kNotice;
  m.info.broker = b;
  m.info.epoch = snap.targets[0].brokers[static_cast<std::size_t>(b)].epoch;
  m.notice = {br.id, m.info.epoch};
  Log("admin revokes %s", br.id.c_str());
  Send(std::move(m));
}

void Simulation::Resume(int b) {
  if (config_.etcd.enabled) {
    EtcdRevoke(b, true);
    return;
  }
  if (!coordinator_up_ || now_ < coordinator_paused_until_) return;
  DSB_CHECK(ledger_->Resume(brokers_[static_cast<std::size_t>(b)].id, CoordinatorClock()).ok(),
            "resume");
}

void Simulation::ForceRenew(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up) return;
  HandleStep(b, br.agent->OnRevokeNotice(BrokerClock(b), {br.id, br.epoch}));
}

void Simulation::Chaos() {
  const FaultSpec& f = config_.faults;
  auto rate = [](double every) { return every > 0 ? 1 / every : 0.0; };
  constexpr int kKinds = 10;
  const double rates[kKinds] = {
      rate(f.partition_every),         rate(f.broker_crash_every),
      rate(f.coordinator_crash_every), rate(f.revoke_every),
      rate(f.broker_pause_every),      rate(f.coordinator_pause_every),
      rate(f.register_every),          rate(f.clock_step_every),
      rate(f.slow_link_every),         config_.etcd.enabled ? rate(f.store_wipe_every) : 0.0};
  double total = 0;
  for (double r : rates) total += r;
  double pick = Uniform() * total;
  int kind = 0;
  while (kind < kKinds - 1 && pick >= rates[kind]) pick -= rates[kind++];
  if (kind == kKinds - 1 && rates[kind] == 0) kind = kKinds - 2;  // rounding: as before
  const EtcdSpec& es = config_.etcd;
  const int b = static_cast<int>(Below(brokers_.size()));
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  const RealTime d = config_.term.count();
  const RealTime h = config_.drain.count();
  const RealTime pause_max = f.pause_max > 0 ? f.pause_max : 3 * d;
  switch (kind) {
    case 0:
      if (!br.cut_up && !br.cut_down) {
        // One-way partitions (either direction) in 2 of 3 cases when enabled.
        const std::uint64_t way = f.one_way ? Below(3) : 0;
        PartitionOneWay(b, way != 2, way != 1);
        At(now_ + Between(Ms(100), 2 * d + h), [this, b] { Partition(b, false); });
      }
      break;
    case 1:
      if (br.up && f.crash_loop > 0 && Uniform() < f.crash_loop) {
        // A crash loop: each instance lives 0.1-2 s, restarts after 10-300 ms.
        RealTime t = now_;
        const auto loops = 2 + Below(3);
        for (std::uint64_t i = 0; i < loops; ++i) {
          At(t, [this, b] { CrashBroker(b); });
          t += Between(Ms(10), Ms(300));
          At(t, [this, b] {
            RestartBroker(b);
            Admit(b);
          });
          t += Between(Ms(100), Sec(2));
        }
      } else if (br.up) {
        CrashBroker(b);
        At(now_ + Between(Ms(10), 2 * d), [this, b] {
          RestartBroker(b);
          Admit(b);
        });
      }
      break;
    case 2:
      if (es.enabled) {
        // The store's leader is lost (killed or cut off; the deposed one may
        // answer keepalives a while); a new one is elected later.
        if (store_has_leader()) {
          LeaderChange(Between(es.election_min, es.election_max), Between(0, es.stale_leader_max));
        }
      } else if (coordinator_up_) {
        CrashCoordinator();
        At(now_ + Between(0, d), [this] { RestartCoordinator(); });
      }
      break;
    case 3:
      Revoke(b);
      At(now_ + Between(Sec(1), d), [this, b] { Resume(b); });
      break;
    case 4:
      PauseBroker(b, now_ + Between(Ms(10), pause_max));
      break;
    case 5:
      if (es.enabled) {
        // Quorum lost for up to pause_max (two of three members down).
        if (store_has_leader()) {
          LeaderChange(Between(Ms(10), pause_max), Between(0, es.stale_leader_max));
        }
      } else {
        PauseCoordinator(now_ + Between(Ms(10), pause_max));
      }
      break;
    case 9:
      WipeStore();
      break;
    case 6:
      // A DigiScope instance starts (B1 decides) or, at the allowance, one exits.
      if (!RegisterClient(b)) UnregisterClient(b);
      Admit(b);
      break;
    case 7:
      StepWallClock(b, Between(-Sec(120), Sec(120)));
      break;
    default:
      if (!br.cut_up && !br.cut_down && br.slow_down == 0) {
        // The link slows first; its requests are lost from a moment later
        // (a request that arrived before then is answered slowly, and its
        // resends are lost: the lease must count from the first send, B1).
        SlowLink(b, Between(d / 12, d / 2));
        At(now_ + Between(0, d / 3), [this, b] {
          if (brokers_[static_cast<std::size_t>(b)].slow_down > 0) PartitionOneWay(b, true, false);
        });
        At(now_ + Between(Sec(1), 2 * d + h), [this, b] {
          Partition(b, false);
          SlowLink(b, 0);
        });
      }
      break;
  }
  Push(Exponential(1 / total), Ev::kChaos, 0);
}

}  // namespace dsb::sim

namespace dsb::sim {

// ---- server model ----

std::uint32_t Simulation::Busy(const Broker& br) const {
  return static_cast<std::uint32_t>(br.sessions.size() - br.cooling + br.waiting_threads.size());
}

void Simulation::ThreadWaits(int b, RealTime until) {
  const std::uint64_t id = next_wait_++;
  brokers_[static_cast<std::size_t>(b)].waiting_threads[id] = until;
  Push(until, Ev::kWaitEnd, b, id);
}

void Simulation::CloseSession(int b, std::uint64_t id, bool thinks) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  auto it = br.sessions.find(id);
  DSB_CHECK(it != br.sessions.end() && !it->second.closing, "closing an unknown session");
  const ServerSpec& sv = config_.server;
  const RealTime server_end = now_ + sv.close_lag;
  RealTime held_for = 0;  // how long the slot stays taken
  if (sv.close == ServerSpec::Close::kConfirmed) held_for = sv.close_lag;
  if (sv.close == ServerSpec::Close::kCooldown) held_for = sv.cooldown;
  if (held_for == 0) {
    br.sessions.erase(it);
    if (server_end > now_) lingering_.push_back(server_end);
  } else {
    Session& s = it->second;
    s.closing = true;
    s.yielding = true;
    s.server_end = server_end;
    s.end = now_ + held_for;
    ++s.version;
    if (sv.close == ServerSpec::Close::kCooldown) ++br.cooling;
    Push(s.end, Ev::kSessionEnd, b, id, s.version);
  }
  // In kConfirmed the thread thinks once the confirmation came (kSessionEnd).
  if (thinks && sv.think > 0 && (sv.close != ServerSpec::Close::kConfirmed || held_for == 0)) {
    ThreadWaits(b, now_ + sv.think);
  }
}

std::uint32_t Simulation::DsbServerCount() const {
  std::uint64_t n = 0;
  for (const Broker& br : brokers_) {
    n += br.registered;
    for (const auto& entry : br.sessions) n += entry.second.server_end > now_ ? 1 : 0;
  }
  for (RealTime end : lingering_) n += end > now_ ? 1 : 0;
  return static_cast<std::uint32_t>(n);
}

std::uint32_t Simulation::OthersNow() const {
  std::uint32_t n = 0;
  for (RealTime end : others_) n += end > now_ ? 1 : 0;
  return n;
}

std::uint32_t Simulation::ServerCount() {
  std::erase_if(lingering_, [this](RealTime end) { return end <= now_; });
  std::erase_if(others_, [this](RealTime end) { return end <= now_; });
  return DsbServerCount() + OthersNow();
}

std::uint32_t Simulation::effective_limit() const {
  return policy_ ? policy_->limit() : stats_.limit;
}

std::uint32_t Simulation::OtherToolSession(std::uint32_t sessions, RealTime hold) {
  DSB_CHECK(config_.server.enabled, "other tools need the server model");
  std::uint32_t opened = 0;
  for (std::uint32_t i = 0; i < sessions && ServerCount() < cap_; ++i) {
    others_.push_back(now_ + hold);
    ++opened;
  }
  stats_.other_sessions += opened;
  stats_.max_other = std::max(stats_.max_other, OthersNow());
  Log("another tool opens %u of %u session(s) for %.3f s (server counts %u of %u)", opened,
      sessions, static_cast<double>(hold) / 1e9, ServerCount(), cap_);
  return opened;
}

void Simulation::Refuse(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  const ServerSpec& sv = config_.server;
  // The reporter's exact count: registered system slots + action slots held
  // (cooling ones included: they are taken in its slot table).
  const auto exact = static_cast<std::uint32_t>(br.registered + br.sessions.size());
  std::uint64_t dsb_slots = 0;
  for (const Broker& o : brokers_) dsb_slots += o.registered + o.sessions.size();
  const std::uint32_t others = OthersNow();
  ++stats_.refusals;
  if (others == 0 && dsb_slots < cap_) ++stats_.refusals_by_lag;
  refusal_log_.push_back({now_, others});
  Log("%s refused by the server (counts %u of %u; %s holds %u, dsb %llu, other tools %u)",
      br.id.c_str(), ServerCount(), cap_, br.id.c_str(), exact,
      static_cast<unsigned long long>(dsb_slots), others);
  if (sv.close == ServerSpec::Close::kCooldown && sv.cooldown > 0) {
    // The thread releases the slot it was given; the broker cannot tell that
    // no session was opened, so the slot cools like any other.
    const std::uint64_t id = next_session_++;
    br.sessions[id] = Session{now_ + sv.cooldown, 0, true, true, now_};
    ++br.cooling;
    Push(now_ + sv.cooldown, Ev::kSessionEnd, b, id, 0);
  }
  ThreadWaits(b, now_ + sv.refusal_backoff);
  if (sv.hold_after_refusal) br.refusal_clamp = static_cast<std::uint32_t>(br.sessions.size());
  Message m;
  m.info.kind = MsgInfo::kRefusal;
  m.info.broker = b;
  m.info.epoch = br.epoch;
  m.info.held = exact;
  m.info.refused_at = now_;
  Send(std::move(m));
}

void Simulation::StartPolicy() {
  const ServerSpec& sv = config_.server;
  lease::LimitPolicyConfig c;
  c.ceiling = config_.limit;
  c.minimum = static_cast<std::uint32_t>(others_reserved_total_) + config_.reserve + 1;
  c.discover = sv.discover;
  c.window = sv.window;
  c.confirmations = sv.confirmations;
  c.ratchet = sv.ratchet;
  c.probation = sv.probation;
  const Status ok = lease::LimitPolicy::Validate(c);
  DSB_CHECK(ok.ok(), "%s", ok.message().c_str());
  policy_ = std::make_unique<lease::LimitPolicy>(c, CoordinatorClock());
  // The product's horizon unless a run sets one (broker/lease/account_held.h).
  report_horizon_ = sv.report_horizon > Duration::zero() ? sv.report_horizon
                                                         : lease::RefusalReportHorizon(config_.term);
  recent_owed_ = std::make_unique<RecentOwed>(brokers_.size(), 0, report_horizon_);
}

void Simulation::ArmPolicyTick() {
  if (!policy_ || !coordinator_up_) return;
  const lease::TimePoint next = policy_->NextTick();
  if (next == lease::TimePoint::max()) return;
  const RealTime at = std::max(now_, RealAt(config_.coordinator_ppm, next));
  if (at >= config_.run_for) return;
  const std::uint64_t seq = ++policy_tick_seq_;
  At(at, [this, seq] {
    if (seq == policy_tick_seq_) TickPolicy();
  });
}

void Simulation::TickPolicy() {
  if (!policy_ || !coordinator_up_ || now_ < coordinator_paused_until_) return;
  const lease::TimePoint now = CoordinatorClock();
  const auto change = policy_->Tick(now);
  if (change) {
    Log("coordinator: limit %u -> %u (%s)", change->from, change->to, change->cause.c_str());
    const Status ok = ledger_->SetLimit(kTarget, change->to, now);
    DSB_CHECK(ok.ok(), "%s", ok.message().c_str());
    recent_owed_->Observe(*ledger_, now);
    NoteLimit(change->to);
  }
  ArmPolicyTick();
}

void Simulation::NoteLimit(std::uint32_t limit) {
  if (limit != stats_.limit) {
    ++stats_.limit_changes;
    last_change_ = now_;
  }
  stats_.limit = limit;
  stats_.min_limit = std::min(stats_.min_limit, limit);
  if (cap_ > stats_.max_other && limit < cap_ - stats_.max_other) {
    ++stats_.limit_below_cap_violations;
    if (stats_.first_real_violation.empty()) {
      stats_.first_real_violation =
          "seed " + std::to_string(config_.seed) + ": limit lowered to " + std::to_string(limit) +
          " at t=" + std::to_string(static_cast<double>(now_) / 1e9) + " s, below C - " +
          std::to_string(stats_.max_other) + " other-tool session(s) = " +
          std::to_string(cap_ - stats_.max_other);
    }
  }
}

void Simulation::OnRefusalReport(const Message& m) {
  const auto b = static_cast<std::size_t>(m.info.broker);
  const BrokerSpec& spec = brokers_[b].spec;
  const lease::TimePoint now = CoordinatorClock();
  if (now_ - m.info.refused_at > report_horizon_.count()) ++stats_.reports_late;
  recent_owed_->Observe(*ledger_, now);
  std::uint32_t held =
      HeldAtRefusal(*ledger_, *recent_owed_, b, m.info.held,
                    others_reserved_total_ - spec.system_slots - spec.floor, now);
  if (config_.server.estimate_from_reports && held != UINT32_MAX) {
    const lease::LedgerSnapshot snap = ledger_->Snapshot(now);
    std::uint64_t h = m.info.held;
    for (std::size_t i = 0; i < brokers_.size(); ++i) {
      if (i == b) continue;
      h += brokers_[i].spec.system_slots;
      if (snap.targets[0].brokers[i].known) h += snap.targets[0].brokers[i].held;
    }
    held = static_cast<std::uint32_t>(std::min<std::uint64_t>(h, UINT32_MAX));
  }
  if (held < policy_->limit()) ++stats_.evidence;
  const auto change = policy_->OnRefusal(now, held);
  ArmPolicyTick();  // a refusal moves the probation's quiet period
  Log("coordinator: refusal reported by %s at %u held (estimate %u); limit %u%s",
      brokers_[b].id.c_str(), m.info.held, held, policy_->limit(),
      change ? (" <- " + change->cause).c_str() : "");
  if (!change) return;
  const Status ok = ledger_->SetLimit(kTarget, change->to, now);
  DSB_CHECK(ok.ok(), "%s", ok.message().c_str());
  recent_owed_->Observe(*ledger_, now);
  NoteLimit(change->to);
}

}  // namespace dsb::sim
