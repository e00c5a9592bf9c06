#include "tests/sim/reconfig.h"

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>

#include "common/check.h"

namespace dsb::sim::reconfig {
namespace {

const char* const kTarget = "t";
constexpr RealTime kYieldMargin = 1000;

}  // namespace

std::string ClusterFile::Hash() const {
  std::string h = "g" + std::to_string(generation) + ";c" + coordinator + ";L" +
                  std::to_string(limit);
  for (const auto& [id, a] : brokers) {
    h += ";" + id + ":" + std::to_string(a.system_slots) + "/" + std::to_string(a.floor);
  }
  return h;
}

std::uint32_t ClusterFile::SumAllowance() const {
  std::uint32_t s = 0;
  for (const auto& [id, a] : brokers) s += a.system_slots + a.floor;
  return s;
}

ReconfigSim::ReconfigSim(ReconfigConfig config) : config_(std::move(config)), rng_(config_.seed) {
  DSB_CHECK(config_.file.SumAllowance() <= config_.limit, "file allowance above L");
  for (std::size_t i = 0; i < config_.machines.size(); ++i) {
    Machine m;
    m.id = config_.machines[i];
    m.file = config_.file;
    m.want_registered = i < config_.registrations.size() ? config_.registrations[i] : 1;
    m.demand = i < config_.demand.size() ? config_.demand[i] : 0;
    machines_.push_back(std::move(m));
  }
  for (std::size_t i = 0; i < machines_.size(); ++i) {
    const int mi = static_cast<int>(i);
    At(0, [this, mi] { Start(mi); });
  }
  if (config_.events_every > 0) {
    At(Sec(1) + Between(0, Sec(config_.events_every)), [this] { RandomEvent(); });
  }
}

void ReconfigSim::Log(const char* fmt, ...) const {
  if (!config_.verbose) return;
  std::fprintf(stderr, "[%10.6f] ", static_cast<double>(now_) / 1e9);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

void ReconfigSim::At(RealTime t, std::function<void()> fn) {
  queue_.push(Event{std::max(t, now_), seq_++, std::move(fn)});
}

void ReconfigSim::RunUntil(RealTime t) {
  while (!queue_.empty() && queue_.top().at <= t) {
    Event e = queue_.top();
    queue_.pop();
    now_ = e.at;
    e.fn();
    ++stats_.events;
    Check();
  }
  now_ = std::max(now_, t);
}

void ReconfigSim::Check() {
  std::uint64_t used = 0;
  for (const Machine& m : machines_) used += m.registered + m.sessions.size();
  stats_.max_used = std::max(stats_.max_used, static_cast<std::uint32_t>(used));
  if (used <= config_.limit) return;
  ++stats_.s_violations;
  if (!stats_.first_violation.empty()) return;
  std::string s = "seed " + std::to_string(config_.seed) + ": S violated at t=" +
                  std::to_string(static_cast<double>(now_) / 1e9) + " s: " +
                  std::to_string(used) + " > L = " + std::to_string(config_.limit) + " (";
  for (std::size_t i = 0; i < machines_.size(); ++i) {
    const Machine& m = machines_[i];
    s += "m" + std::to_string(i) + "=" + m.id + " g" + std::to_string(m.file.generation) +
         ": reg " + std::to_string(m.registered) + " act " + std::to_string(m.sessions.size()) +
         (m.up ? (m.agent->accepted() ? " accepted" : " not-accepted") : " DOWN") +
         (m.ledger ? std::string(" coord:") + lease::GateName(m.ledger->gate()) : "") +
         (i + 1 < machines_.size() ? "; " : ")");
  }
  stats_.first_violation = s;
  Log("%s", s.c_str());
}

int ReconfigSim::Find(const std::string& id, int except) const {
  for (std::size_t i = 0; i < machines_.size(); ++i) {
    if (static_cast<int>(i) != except && machines_[i].id == id && machines_[i].powered) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

RealTime ReconfigSim::Delay() { return Between(Ms(1), config_.max_delay); }

void ReconfigSim::Send(int from, int to, std::function<void()> deliver) {
  auto cut = [this, from, to] {
    return from != to && (M(from).cut || M(to).cut ||
                          cut_links_.count({std::min(from, to), std::max(from, to)}) > 0);
  };
  if (to < 0 || cut()) return;
  At(now_ + Delay(), [this, to, cut, deliver = std::move(deliver)] {
    if (!M(to).up || cut()) return;
    deliver();
  });
}

// ---- brokers ----

std::vector<lease::TargetUsage> ReconfigSim::Usage(int mi) const {
  const Machine& m = M(mi);
  const auto actions = static_cast<std::uint32_t>(m.sessions.size());
  lease::TargetUsage u;
  u.actions = actions;
  u.waiting = m.demand > actions ? m.demand - actions : 0;
  u.registered = m.registered;
  return {u};
}

void ReconfigSim::Start(int mi) {
  Machine& m = M(mi);
  if (m.up || !m.powered) return;
  m.up = true;
  m.frozen = false;
  m.report_to.clear();
  ++m.life;
  // R0: the counter is written and synced before use.
  const std::uint64_t epoch = ++m.disk.epoch;
  std::uint64_t instance = rng_() | 1;
  if (!config_.switches.fresh_instance_id) {
    if (m.disk.stored_instance == 0) m.disk.stored_instance = instance;
    instance = m.disk.stored_instance;
  }
  lease::AgentConfig c;
  c.broker_id = m.id;
  c.epoch = epoch;
  c.instance = instance;
  c.generation = m.file.generation;
  c.file_hash = m.file.Hash();
  lease::AgentTarget t;
  t.name = kTarget;
  const auto it = m.file.brokers.find(m.id);
  t.system_slots = it != m.file.brokers.end() ? it->second.system_slots : 0;
  t.floor = it != m.file.brokers.end() ? it->second.floor : 0;
  // R1: adopted action slots are kept until the previous instance's deadline.
  if (m.lease_deadline && *m.lease_deadline > now_) {
    t.inherited_until = lease::TimePoint{} + Duration(*m.lease_deadline);
  }
  c.targets = {t};
  c.term = config_.term;
  c.eps = config_.eps;
  c.switches = config_.switches.protocol;
  m.agent = std::make_unique<lease::LeaseAgent>(std::move(c), Clock());
  Log("m%d (%s) starts: epoch %llu instance %016llx, file generation %llu, holding %u+%zu", mi,
      m.id.c_str(), static_cast<unsigned long long>(epoch),
      static_cast<unsigned long long>(instance),
      static_cast<unsigned long long>(m.file.generation), m.registered, m.sessions.size());
  if (m.file.coordinator == m.id) StartCoordinator(mi);
  Wake(mi);
}

void ReconfigSim::StartCoordinator(int mi) {
  Machine& m = M(mi);
  lease::LedgerConfig lc;
  const std::uint32_t sum = m.file.SumAllowance();
  lc.targets = {{kTarget, m.file.limit > sum ? m.file.limit - sum : 0, m.file.limit}};
  for (const auto& [id, a] : m.file.brokers) {
    lease::LedgerBroker b;
    b.id = id;
    b.system_slots = {a.system_slots};
    b.floors = {a.floor};
    lc.brokers.push_back(std::move(b));
  }
  lc.term = config_.term;
  lc.drain = config_.drain;
  lc.eps = config_.eps;
  lc.switches = config_.switches.protocol;
  if (first_coordinator_start_) lc.switches.c3_learning = false;  // nothing granted yet anywhere
  first_coordinator_start_ = false;
  lc.generation = m.file.generation;
  lc.file_hash = m.file.Hash();
  lc.persist = [this, mi](const std::vector<lease::AcceptanceRecord>& records) {
    if (config_.switches.records_on_disk) M(mi).disk.records = records;
    return true;
  };
  m.ledger = std::make_unique<lease::Ledger>(lc, Clock());
  if (!m.disk.records.empty()) m.ledger->AdoptRecords(m.disk.records, Clock());
  if (m.disk.superseded > m.file.generation) m.ledger->Supersede(m.disk.superseded);
  m.hello_waiting.clear();
  for (const auto& [id, a] : m.file.brokers) {
    if (id == m.id) continue;
    for (std::size_t i = 0; i < machines_.size(); ++i) {
      if (machines_[i].id == id && machines_[i].powered) m.hello_waiting.insert(static_cast<int>(i));
    }
  }
  if (m.file.generation > 1 && !m.hello_waiting.empty()) m.ledger->WaitForPrevious();
  Log("m%d coordinates generation %llu (gate %s, %zu records)", mi,
      static_cast<unsigned long long>(m.file.generation), lease::GateName(m.ledger->gate()),
      m.disk.records.size());
  Hellos(mi, m.life);
}

void ReconfigSim::Hellos(int mi, std::uint64_t life) {
  Machine& m = M(mi);
  if (!m.up || m.life != life || !m.ledger) return;
  std::set<int> ask = m.hello_waiting;
  for (const auto& [id, a] : m.file.brokers) {
    for (std::size_t i = 0; i < machines_.size(); ++i) {
      if (machines_[i].id == id && static_cast<int>(i) != mi) ask.insert(static_cast<int>(i));
    }
  }
  const std::uint64_t g = m.file.generation;
  const std::string hash = m.file.Hash();
  for (int to : ask) {
    if (!M(to).powered) {
      m.hello_waiting.erase(to);  // nothing listens there (connection refused)
      continue;
    }
    Send(mi, to, [this, to, mi, g, hash] { AnswerHello(to, mi, g, hash); });
  }
  if (m.ledger->gate() == lease::Gate::kWaiting && m.hello_waiting.empty()) {
    m.ledger->OpenGate(Clock());
    Log("m%d: every broker answered its hello: learning from now", mi);
  }
  At(now_ + Sec(1), [this, mi, life] { Hellos(mi, life); });
}

void ReconfigSim::StepDown(int mi, std::uint64_t by, const std::string& successor) {
  Machine& m = M(mi);
  if (!m.ledger) return;
  m.ledger->Supersede(by, successor);
  if (config_.switches.superseded_mark) m.disk.superseded = std::max(m.disk.superseded, by);
  Log("m%d: coordinator of generation %llu steps down for %llu", mi,
      static_cast<unsigned long long>(m.file.generation), static_cast<unsigned long long>(by));
}

void ReconfigSim::AnswerHello(int mi, int from, std::uint64_t generation,
                              const std::string& hash) {
  Machine& m = M(mi);
  const std::uint64_t mine = m.file.generation;
  bool stopped = false;
  std::vector<lease::AcceptanceRecord> records;
  if (m.ledger && mine < generation && config_.switches.protocol.r3_step_down) {
    StepDown(mi, generation, M(from).id);
  }
  const bool conflict = m.ledger && mine == generation && hash != m.file.Hash();
  if (conflict) {
    // Two coordinators of one generation with different files: both stop.
    Log("m%d: coordinator m%d runs generation %llu with another file: both stop", mi, from,
        static_cast<unsigned long long>(generation));
    m.ledger->Supersede(generation);
  }
  if (m.ledger && mine < generation) {
    stopped = true;  // switch off: it says so, and keeps granting (the broken rule)
    records = m.ledger->Records();
  }
  const bool is_coord = m.ledger != nullptr;
  const std::string names = m.file.coordinator;
  Send(mi, from, [this, from, mi, mine, stopped, is_coord, names, records, conflict] {
    Machine& c = M(from);
    if (!c.ledger) return;
    if (conflict) {
      c.ledger->Supersede(mine);
      return;
    }
    if (mine > c.file.generation && config_.switches.protocol.r3_step_down) {
      StepDown(from, mine);
      return;
    }
    if (is_coord && mine < c.file.generation) {
      if (!stopped) return;
      c.ledger->AdoptRecords(records, Clock());
    }
    if (!is_coord && mine < c.file.generation && names != c.file.coordinator) {
      const int older = Find(names);
      if (older >= 0 && older != from && c.hello_waiting.insert(older).second) {
        Log("m%d: m%d's file names coordinator %s: waiting for it too", from, mi, names.c_str());
      }
      if (older >= 0 && !M(older).up) {
        // Not running: it must be asked when it runs (it may start granting).
      }
    }
    c.hello_waiting.erase(mi);
    if (c.ledger->gate() == lease::Gate::kWaiting && c.hello_waiting.empty()) {
      c.ledger->OpenGate(Clock());
      Log("m%d: every broker answered its hello: learning from now", from);
    }
  });
}

void ReconfigSim::DrainWarnings(int mi) {
  Machine& m = M(mi);
  if (!m.ledger) return;
  for (const auto& w : m.ledger->TakeWarnings()) {
    ++stats_.warnings;
    Log("m%d coordinator warns: %s", mi, w.c_str());
  }
}

void ReconfigSim::Wake(int mi) {
  Machine& m = M(mi);
  if (!m.up) return;
  Step(mi, m.agent->Tick(Clock(), Usage(mi)));
}

void ReconfigSim::Step(int mi, const lease::AgentStep& step) {
  Machine& m = M(mi);
  const lease::TargetCapacity& cap = step.targets[0];
  m.lease_amount = cap.lease;
  m.lease_deadline = cap.lease_valid_until
                         ? std::optional<RealTime>(cap.lease_valid_until->time_since_epoch().count())
                         : std::nullopt;
  m.floor_in_table = cap.action_capacity - cap.lease;
  if (step.send) {
    const lease::RenewRequest r = *step.send;
    const int coord = Find(m.report_to.empty() ? m.file.coordinator : m.report_to);
    Send(mi, coord, [this, coord, mi, r] { OnRequest(coord, mi, r); });
  }
  Enforce(mi);
  Admit(mi);
  const std::uint64_t life = m.life;
  const RealTime at = std::max(now_ + 1, step.deadline.time_since_epoch().count());
  At(at, [this, mi, life] {
    if (M(mi).up && M(mi).life == life) Wake(mi);
  });
}

void ReconfigSim::OnRequest(int ci, int from, const lease::RenewRequest& r) {
  Machine& c = M(ci);
  if (!c.ledger) return;
  const lease::Gate before = c.ledger->gate();
  auto reply = c.ledger->OnRequest(Clock(), r);
  DSB_CHECK(reply.ok(), "%s", reply.status().message().c_str());
  if (before != lease::Gate::kSuperseded && c.ledger->gate() == lease::Gate::kSuperseded) {
    StepDown(ci, c.ledger->newer_generation_seen());
  }
  DrainWarnings(ci);
  if (!reply.value()) return;
  const lease::Grant g = *reply.value();
  if (config_.verbose) {
    const lease::LedgerSnapshot snap = c.ledger->Snapshot(Clock());
    std::string line;
    for (const auto& b : snap.targets[0].brokers) {
      line += " " + b.broker_id + "[n" + std::to_string(b.instances) + " c" +
              std::to_string(b.counted) + " o" + std::to_string(b.owed) + " h" +
              std::to_string(b.pool_held) + "]";
    }
    Log("m%d ledger answers %s #%llu %s %u; pool %u owed %llu:%s", ci, r.broker_id.c_str(),
        static_cast<unsigned long long>(r.request_id), lease::VerdictName(g.verdict),
        g.targets.empty() ? 0U : g.targets[0].amount, snap.targets[0].pool,
        static_cast<unsigned long long>(snap.targets[0].owed_total), line.c_str());
  }
  const std::uint64_t life = M(from).life;
  Send(ci, from, [this, from, life, g] { OnGrant(from, life, g); });
}

void ReconfigSim::OnGrant(int mi, std::uint64_t life, const lease::Grant& g) {
  Machine& m = M(mi);
  if (!m.up || m.life != life) return;
  const bool was = m.agent->accepted();
  const lease::AgentStep step = m.agent->OnGrant(Clock(), g);
  Log("m%d (%s) gets #%llu: %s%s %u", mi, m.id.c_str(),
      static_cast<unsigned long long>(g.request_id), lease::VerdictName(g.verdict),
      g.learning ? " learning" : "", g.targets.empty() ? 0U : g.targets[0].amount);
  if (!was && m.agent->accepted()) {
    ++stats_.accepted;
    Log("m%d (%s) accepted", mi, m.id.c_str());
  }
  if (g.verdict == lease::Verdict::kSuperseded && !g.successor.empty() &&
      g.successor != m.report_to) {
    m.report_to = g.successor;  // R3: the successor counts our registrations from now on
    Log("m%d (%s) reports to %s from now on", mi, m.id.c_str(), g.successor.c_str());
  }
  if (g.verdict == lease::Verdict::kRemoved && !m.agent->config().targets.empty()) {
    // R1: a removed broker erases its acceptance (written and synced) first.
    m.agent->MarkErased();
  }
  Step(mi, step);
}

std::uint32_t ReconfigSim::Capacity(int mi) const {
  const Machine& m = M(mi);
  if (m.up) {
    const std::uint32_t cap = m.agent->Capacity(0, Clock()).action_capacity;
    return m.frozen ? std::min<std::uint32_t>(cap, static_cast<std::uint32_t>(m.sessions.size()))
                    : cap;
  }
  // No broker: the slot table keeps the floor it was given, plus the lease
  // until its deadline (the clients' fence).
  const bool lease_ok = m.lease_deadline && now_ < *m.lease_deadline;
  return m.floor_in_table + (lease_ok ? m.lease_amount : 0);
}

void ReconfigSim::Enforce(int mi) {
  Machine& m = M(mi);
  const std::uint32_t cap = Capacity(mi);
  std::uint32_t keep = 0;
  for (auto& [id, s] : m.sessions) {
    if (s.yielding) continue;
    if (keep < cap) {
      ++keep;
      continue;
    }
    s.yielding = true;
    const std::uint64_t sid = id;
    At(now_ + config_.drain.count() - kYieldMargin, [this, mi, sid] {
      M(mi).sessions.erase(sid);
      Admit(mi);
      if (M(mi).up) Wake(mi);
    });
  }
}

void ReconfigSim::Admit(int mi) {
  Machine& m = M(mi);
  if (!m.up || m.frozen) return;
  const lease::TimePoint now = Clock();
  while (m.registered < m.want_registered &&
         m.agent->MayAdmitRegistration(0, m.registered)) {
    ++m.registered;
    Log("m%d registers client %u", mi, m.registered);
  }
  bool any = false;
  while (m.sessions.size() < m.demand && m.registered > 0 &&
         m.agent->MayAdmitAction(0, m.registered, static_cast<std::uint32_t>(m.sessions.size()),
                                 now) &&
         m.sessions.size() < Capacity(mi)) {
    m.sessions[next_session_++] = Session{};
    any = true;
  }
  if (any) {
    const std::uint64_t life = m.life;
    At(now_, [this, mi, life] {
      if (M(mi).up && M(mi).life == life) Wake(mi);
    });
  }
}

// ---- operator and faults ----

void ReconfigSim::Crash(int mi) {
  Machine& m = M(mi);
  if (!m.up) return;
  m.up = false;
  ++m.life;
  m.agent.reset();
  m.ledger.reset();
  Log("m%d (%s) crashes holding %u+%zu", mi, m.id.c_str(), m.registered, m.sessions.size());
  Enforce(mi);
  if (m.lease_deadline && *m.lease_deadline > now_) {
    const std::uint64_t life = m.life;
    At(*m.lease_deadline, [this, mi, life] {
      if (M(mi).life == life) Enforce(mi);
    });
  }
}

void ReconfigSim::CleanStop(int mi) {
  Machine& m = M(mi);
  if (!m.up) return;
  auto read = [&] {
    lease::Goodbye bye;
    bye.broker_id = m.id;
    bye.epoch = m.agent->epoch();
    bye.instance = m.agent->instance();
    const auto actions = static_cast<std::uint32_t>(m.sessions.size());
    const std::uint32_t floor = m.agent->config().targets[0].floor;
    bye.targets.push_back({kTarget, actions > floor ? actions - floor : 0, actions, m.registered});
    return bye;
  };
  std::optional<lease::Goodbye> bye;
  // On: freeze first, then read what is handed over. Off: read and send
  // first; the broker admits for kShutdown more (threads that ask then get a
  // slot the goodbye did not name), then freezes.
  constexpr RealTime kShutdown = Ms(50);
  if (config_.switches.freeze_before_goodbye) m.frozen = true;
  if (m.agent->accepted()) bye = read();
  const int coord = Find(m.report_to.empty() ? m.file.coordinator : m.report_to);
  if (bye) {
    Send(mi, coord, [this, coord, bye = *bye] {
      if (M(coord).ledger) M(coord).ledger->OnGoodbye(Clock(), bye);
    });
  }
  Log("m%d (%s) stops cleanly%s holding %u+%zu", mi, m.id.c_str(), bye ? " (goodbye)" : "",
      m.registered, m.sessions.size());
  // The process exits: its clients keep their slots for the next instance.
  if (config_.switches.freeze_before_goodbye) {
    Crash(mi);
  } else {
    const std::uint64_t life = m.life;
    At(now_ + kShutdown, [this, mi, life] {
      if (M(mi).life == life) Crash(mi);
    });
  }
}

void ReconfigSim::Restart(int mi, RealTime gap) {
  CleanStop(mi);
  At(now_ + gap, [this, mi] { Start(mi); });
}

void ReconfigSim::SetFile(int mi, ClusterFile file) {
  DSB_CHECK(file.SumAllowance() <= config_.limit, "an operator's file above L");
  M(mi).file = std::move(file);
  Log("m%d: file generation %llu installed (%s)", mi,
      static_cast<unsigned long long>(M(mi).file.generation), M(mi).file.Hash().c_str());
}

int ReconfigSim::Clone(int mi, std::uint32_t registrations, std::uint32_t demand, bool start) {
  Machine c;
  c.id = M(mi).id;
  c.file = M(mi).file;
  c.disk = M(mi).disk;  // the disk image: epoch counter (and a stored instance id)
  c.want_registered = registrations;
  c.demand = demand;
  machines_.push_back(std::move(c));
  const int ci = static_cast<int>(machines_.size()) - 1;
  Log("m%d: a clone of m%d (%s)", ci, mi, M(mi).id.c_str());
  if (start) Start(ci);
  return ci;
}

void ReconfigSim::CutLink(int a, int b, bool cut) {
  const std::pair<int, int> key{std::min(a, b), std::max(a, b)};
  if (cut) {
    cut_links_.insert(key);
  } else {
    cut_links_.erase(key);
  }
  Log("link m%d-m%d %s", a, b, cut ? "cut" : "healed");
}

void ReconfigSim::Reboot(int mi, std::uint32_t registrations, std::uint32_t demand) {
  Machine& m = M(mi);
  if (m.powered) return;
  m.powered = true;
  m.want_registered = registrations;
  m.demand = demand;
  m.lease_deadline.reset();
  m.floor_in_table = 0;
  Log("m%d reboots", mi);
  Start(mi);
}

void ReconfigSim::Partition(int mi, bool cut) {
  M(mi).cut = cut;
  Log("m%d %s", mi, cut ? "cut off" : "reconnected");
}

void ReconfigSim::SetDemand(int mi, std::uint32_t threads) {
  Machine& m = M(mi);
  m.demand = threads;
  while (m.sessions.size() > threads) m.sessions.erase(std::prev(m.sessions.end()));
  Admit(mi);
  if (m.up) Wake(mi);
}

void ReconfigSim::SetRegistrations(int mi, std::uint32_t wanted) {
  Machine& m = M(mi);
  m.want_registered = wanted;
  if (m.registered > wanted) m.registered = wanted;
  Admit(mi);
  if (m.up) Wake(mi);
}

void ReconfigSim::PowerOff(int mi) {
  Machine& m = M(mi);
  Crash(mi);
  m.powered = false;
  m.registered = 0;
  m.want_registered = 0;
  m.demand = 0;
  m.sessions.clear();
  Log("m%d powered off", mi);
}

std::uint32_t ReconfigSim::used(int mi) const {
  return M(mi).registered + static_cast<std::uint32_t>(M(mi).sessions.size());
}

bool ReconfigSim::accepted(int mi) const { return M(mi).up && M(mi).agent->accepted(); }

}  // namespace dsb::sim::reconfig

namespace dsb::sim::reconfig {

// ---- random operator events ----

ClusterFile ReconfigSim::NextFile(const ClusterFile& f) {
  ClusterFile n = f;
  issued_generation_ = std::max(issued_generation_, f.generation) + 1;
  n.generation = issued_generation_;
  std::vector<std::string> ids;
  for (const auto& [id, a] : n.brokers) ids.push_back(id);
  auto pick = [&] { return ids[Below(ids.size())]; };
  const auto changes = 1 + Below(2);
  for (std::uint64_t k = 0; k < changes; ++k) {
    switch (Below(6)) {
      case 0: {  // move floor between brokers
        const std::string a = pick(), b = pick();
        const std::uint32_t moved = std::min<std::uint32_t>(n.brokers[a].floor, 1 + static_cast<std::uint32_t>(Below(3)));
        n.brokers[a].floor -= moved;
        n.brokers[b].floor += moved;
        break;
      }
      case 1:  // raise a floor
        if (n.SumAllowance() < n.limit) n.brokers[pick()].floor += 1;
        break;
      case 2: {  // lower a floor
        auto& fl = n.brokers[pick()].floor;
        fl = fl > 0 ? fl - 1 : 0;
        break;
      }
      case 3:  // move the coordinator
        n.coordinator = pick();
        break;
      case 4: {  // add a broker
        if (n.SumAllowance() + 1 <= n.limit && n.brokers.size() < 6) {
          std::string id;
          for (int i = 0; id.empty() || n.brokers.count(id) > 0; ++i) id = "b" + std::to_string(i);
          n.brokers[id] = Allowance{1, 0};
          ids.push_back(id);
        }
        break;
      }
      default: {  // remove a broker (not the coordinator)
        const std::string a = pick();
        if (a != n.coordinator && n.brokers.size() > 2) {
          n.brokers.erase(a);
          std::erase(ids, a);
        }
        break;
      }
    }
  }
  return n;
}

void ReconfigSim::RandomEvent() {
  ++stats_.reconfig_events;
  const RealTime d = config_.term.count();
  const auto powered = [this] {
    std::vector<int> out;
    for (int i = 0; i < machines(); ++i) {
      if (M(i).powered) out.push_back(i);
    }
    return out;
  }();
  const int mi = powered[Below(powered.size())];
  switch (Below(12)) {
    case 10: {  // a straggler: the coordinator takes a file that lowers a broker that is
                // then cut off from it (still using its old allowance), the rest follow
      const ClusterFile* newest = &M(powered[0]).file;
      for (int i : powered) {
        if (M(i).file.generation > newest->generation) newest = &M(i).file;
      }
      ClusterFile next = *newest;
      issued_generation_ = std::max(issued_generation_, next.generation) + 1;
      next.generation = issued_generation_;
      const int c = Find(next.coordinator);
      std::vector<int> lowered;
      for (int i : powered) {
        auto it = next.brokers.find(M(i).id);
        if (i != c && it != next.brokers.end() && it->second.floor > 0) lowered.push_back(i);
      }
      if (c < 0 || lowered.empty()) break;
      const int a = lowered[Below(lowered.size())];
      std::vector<std::string> ids;
      for (const auto& [id, al] : next.brokers) {
        if (id != M(a).id) ids.push_back(id);
      }
      next.brokers[ids[Below(ids.size())]].floor += next.brokers[M(a).id].floor;
      next.brokers[M(a).id].floor = 0;
      Restart(c, Ms(30));
      SetFile(c, next);
      const RealTime cut_for = Between(2 * d, 4 * d);
      At(now_ + Ms(150), [this, a, c, cut_for] {
        CutLink(a, c, true);
        At(now_ + cut_for, [this, a, c] { CutLink(a, c, false); });
      });
      RealTime t = now_ + Between(d, 3 * d);
      for (int i : powered) {
        if (i == c || next.brokers.count(M(i).id) == 0) continue;
        const RealTime at = i == a ? now_ + cut_for + Between(Ms(200), d) : (t += Between(Ms(50), d));
        At(at, [this, i, next] {
          CleanStop(i);
          SetFile(i, next);
        });
        At(at + Between(Ms(10), Ms(300)), [this, i] { Start(i); });
      }
      break;
    }
    case 11: {  // a coordinator that stepped down restarts, isolated, with its old file
      int old = -1;
      for (int i : powered) {
        if (M(i).ledger && M(i).ledger->gate() == lease::Gate::kSuperseded) old = i;
      }
      if (old < 0) break;
      Partition(old, true);
      Crash(old);
      At(now_ + Ms(100), [this, old] { Start(old); });
      At(now_ + Between(3 * d, 6 * d), [this, old] { Partition(old, false); });
      break;
    }
    case 0:
    case 1: {  // a new generation, brokers restarted one at a time in random order
      const ClusterFile* newest = &M(powered[0]).file;
      for (int i : powered) {
        if (M(i).file.generation > newest->generation) newest = &M(i).file;
      }
      const ClusterFile next = NextFile(*newest);
      std::vector<int> order;
      for (int i : powered) {
        if (next.brokers.count(M(i).id) > 0) order.push_back(i);
      }
      // A broker new to the file: a new machine.
      for (const auto& [id, a] : next.brokers) {
        if (Find(id) >= 0) continue;
        Machine m;
        m.id = id;
        m.file = next;
        m.want_registered = a.system_slots;
        m.demand = static_cast<std::uint32_t>(Below(4));
        machines_.push_back(std::move(m));
        order.push_back(machines() - 1);
      }
      for (std::size_t k = order.size(); k > 1; --k) std::swap(order[k - 1], order[Below(k)]);
      // The coordinator moves: now and then the old one is updated last and,
      // meanwhile, restarts isolated with its old file (after a power cut).
      const int old_coord = Find(newest->coordinator);
      const int new_coord = Find(next.coordinator);
      const bool isolate =
          old_coord >= 0 && new_coord >= 0 && old_coord != new_coord && Below(2) == 0;
      if (isolate) {
        std::erase(order, old_coord);
        std::erase(order, new_coord);
        order.insert(order.begin(), new_coord);
        order.push_back(old_coord);
      }
      RealTime t = now_;
      for (int i : order) {
        t += Between(Ms(50), 2 * d);
        const bool clean = Below(3) != 0;
        At(t, [this, i, next, clean] {
          if (!M(i).powered) return;
          if (clean) CleanStop(i); else Crash(i);
          SetFile(i, next);
        });
        At(t + Between(Ms(10), Ms(500)), [this, i] { Start(i); });
      }
      if (isolate) {
        const RealTime first = now_ + Ms(50) + Ms(600);
        At(first + Between(Sec(1), 2 * d), [this, old_coord, d] {
          Partition(old_coord, true);
          Crash(old_coord);
          At(now_ + Ms(100), [this, old_coord] { Start(old_coord); });
          At(now_ + Between(3 * d, 6 * d), [this, old_coord] { Partition(old_coord, false); });
        });
      }
      // Removed brokers: turned off some time later, or left running on the old file.
      for (int i : powered) {
        if (next.brokers.count(M(i).id) == 0 && Below(2) == 0) {
          At(t + Between(0, 4 * d), [this, i] { PowerOff(i); });
        }
      }
      break;
    }
    case 2: {  // an operator's mistake: a floor raised without a new generation
      ClusterFile f = M(mi).file;
      auto it = f.brokers.find(M(mi).id);
      if (it != f.brokers.end() && f.SumAllowance() < f.limit) {
        it->second.floor += 1;
        const bool clean = Below(2) == 0;
        if (clean) CleanStop(mi); else Crash(mi);
        SetFile(mi, f);
        At(now_ + Between(Ms(10), Ms(500)), [this, mi] { Start(mi); });
      }
      break;
    }
    case 3:  // kill -9 and restart
      Crash(mi);
      At(now_ + Between(Ms(10), d), [this, mi] { Start(mi); });
      break;
    case 4:  // planned restart (goodbye)
      Restart(mi, Between(Ms(10), Sec(1)));
      break;
    case 5: {  // a cloned workstation, running for a while
      if (Below(2) == 0) {
        const int c = Clone(mi, 1, static_cast<std::uint32_t>(Below(4)));
        At(now_ + Between(Sec(1), 4 * d), [this, c] { PowerOff(c); });
      } else {
        // The image is copied now and booted after the original restarted.
        const int c = Clone(mi, 1, static_cast<std::uint32_t>(Below(4)), false);
        Restart(mi, Between(Ms(10), Ms(300)));
        At(now_ + Between(Ms(400), d), [this, c] { Start(c); });
        At(now_ + Between(2 * d, 6 * d), [this, c] { PowerOff(c); });
      }
      break;
    }
    case 6: {  // a partition (whole machine, or one link)
      if (Below(2) == 0) {
        Partition(mi, true);
        At(now_ + Between(Ms(100), 2 * d), [this, mi] { Partition(mi, false); });
      } else {
        const int other = powered[Below(powered.size())];
        if (other != mi) {
          CutLink(mi, other, true);
          At(now_ + Between(Ms(100), 3 * d), [this, mi, other] { CutLink(mi, other, false); });
        }
      }
      break;
    }
    case 7:
      SetRegistrations(mi, static_cast<std::uint32_t>(Below(4)));
      break;
    default:
      SetDemand(mi, static_cast<std::uint32_t>(Below(8)));
      break;
  }
  const double mean = config_.events_every;
  At(now_ + static_cast<RealTime>(mean * 1e9 * (0.2 + 1.6 * Uniform())), [this] { RandomEvent(); });
}

ReconfigConfig RandomReconfig(std::uint64_t seed, RealTime run_for) {
  std::mt19937_64 r(seed * 0x9E3779B97F4A7C15ULL + 7);
  auto below = [&r](std::uint64_t n) { return r() % n; };
  ReconfigConfig c;
  c.seed = seed;
  const auto n = 3 + below(3);
  ClusterFile f;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::string id = "b" + std::to_string(i);
    f.brokers[id] = Allowance{1 + static_cast<std::uint32_t>(below(2)),
                              static_cast<std::uint32_t>(below(3))};
    c.machines.push_back(id);
    c.registrations.push_back(f.brokers[id].system_slots);
    c.demand.push_back(static_cast<std::uint32_t>(below(6)));
  }
  f.coordinator = "b" + std::to_string(below(n));
  c.limit = f.SumAllowance() + 2 + static_cast<std::uint32_t>(below(5));
  f.limit = c.limit;
  c.file = f;
  c.events_every = 1.0 + static_cast<double>(below(3));
  c.run_for = run_for;
  return c;
}

// ---- switches ----

const std::vector<ReconfigSwitchInfo>& ReconfigSwitchList() {
  static const std::vector<ReconfigSwitchInfo> list = {
      {"r1-nothing-until-accepted", "R1: a started instance uses nothing until accepted",
       [](ReconfigSwitches& s) { s.protocol.r1_nothing_until_accepted = false; }},
      {"r1-refuse-other-file", "R1: a file that differs at one generation (or older) is refused",
       [](ReconfigSwitches& s) { s.protocol.r1_refuse_other_file = false; }},
      {"r2-fit-test", "R2: a raise or a new instance is accepted only when it fits",
       [](ReconfigSwitches& s) { s.protocol.r2_fit_test = false; }},
      {"r2-count-unheard", "R2: a broker no instance of which is heard still counts",
       [](ReconfigSwitches& s) { s.protocol.r2_count_unheard = false; }},
      {"r2-records", "R2: acceptances are recorded durably and adopted at a restart",
       [](ReconfigSwitches& s) { s.records_on_disk = false; }},
      {"r3-step-down", "R3: a coordinator that learns of a newer generation stops granting",
       [](ReconfigSwitches& s) { s.protocol.r3_step_down = false; }},
      {"r3-superseded-mark", "R3: the durable superseded mark",
       [](ReconfigSwitches& s) { s.superseded_mark = false; }},
      {"r4-keep-older", "R4: an older instance's owed is kept until it is silent",
       [](ReconfigSwitches& s) { s.protocol.r4_keep_older = false; }},
      {"r0-fresh-instance", "R0: a fresh random instance id per start (never stored)",
       [](ReconfigSwitches& s) { s.fresh_instance_id = false; }},
      {"r5-freeze-first", "R5: a clean stop admits nothing new before its goodbye",
       [](ReconfigSwitches& s) { s.freeze_before_goodbye = false; }},
  };
  return list;
}

const ReconfigSwitchInfo* FindReconfigSwitch(const std::string& name) {
  for (const auto& s : ReconfigSwitchList()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

CatchRow CatchReconfigSwitch(const ReconfigSwitchInfo& sw, std::uint64_t first,
                             std::uint64_t seeds, RealTime run_for, bool stop_at_first) {
  CatchRow row;
  row.name = sw.name;
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    ReconfigConfig c = RandomReconfig(seed, run_for);
    sw.turn_off(c.switches);
    ReconfigSim sim(c);
    sim.Run();
    ++row.seeds_run;
    row.events += sim.stats().events;
    if (sim.stats().s_violations > 0) {
      // Caught only if the same seed keeps S with every switch on (seeds
      // that break S with all switches on are findings, not catches).
      ReconfigSim control(RandomReconfig(seed, run_for));
      control.Run();
      if (control.stats().s_violations > 0) continue;
      ++row.s_broken;
      if (row.first_failing == 0) row.first_failing = seed;
      if (stop_at_first) break;
    }
  }
  row.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return row;
}

}  // namespace dsb::sim::reconfig
