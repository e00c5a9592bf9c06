// Deterministic simulation of the reconfiguration and identity rules R0-R5
// (DESIGN section 7; issue 8 item 3: generations, two would-be coordinators,
// clones).
//
// A second, smaller world next to tests/sim/sim.h: that one drifts clocks and
// attacks the lease core's messages; this one attacks its *identity*: which
// file a broker runs, which instance speaks, who coordinates. It runs the real
// Ledger and LeaseAgent. Per machine:
//   - a cluster file: generation, coordinator id, per broker id its allowance
//     (system_slots, floor), the limit L; its hash is its whole content;
//   - a simulated state_dir: the epoch counter (R0, bumped and "synced" on
//     every start), the coordinator's acceptance records (R2) and superseded
//     mark (R3); a clone is a new machine with a COPY of another's disk and
//     file (same broker id);
//   - a random instance id per start (R0), never stored (a switch stores it,
//     so a clone copies it);
//   - one broker process: a LeaseAgent; if its file names its id as the
//     coordinator, a Ledger too (records adopted from its disk, the mark read;
//     generation > 1: gate closed until every broker of its file and every
//     older coordinator they name answered its hello, R3); hellos every second;
//   - DigiScope clients: registrations and action threads that keep their
//     slots through a broker restart (adopted) and yield H - 1 us after the
//     capacity falls below what they hold (the worst the rules allow).
// A clean stop freezes the capacity, sends a Goodbye (R5), and the next
// instance starts after a gap. S is checked after every event against the
// sessions actually held: sum over machines of (registered + actions) <= L.
// Everything derives from the seed; a failing seed replays exactly.
//
// Simplifications (see docs/simulation.md): clocks do not drift (sim.h does
// that), one target, messages are delayed 1-20 ms and lost only by
// partitions, brokers send only to the coordinator their own file names.
//
// Thread rule: single-threaded.
#ifndef DSB_TESTS_SIM_RECONFIG_H_
#define DSB_TESTS_SIM_RECONFIG_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "broker/lease/agent.h"
#include "broker/lease/ledger.h"
#include "tests/sim/scenarios.h"
#include "tests/sim/sim.h"

namespace dsb::sim::reconfig {

struct Allowance {
  std::uint32_t system_slots = 1;
  std::uint32_t floor = 0;
  bool operator==(const Allowance&) const = default;
};

struct ClusterFile {
  std::uint64_t generation = 1;
  std::string coordinator = "b0";
  std::map<std::string, Allowance> brokers;
  std::uint32_t limit = 12;
  // The whole content (what the product hashes).
  std::string Hash() const;
  std::uint32_t SumAllowance() const;
};

// Switches of rules the lease core does not hold (the glue's part), next to
// lease::ProtocolSwitches.
struct ReconfigSwitches {
  lease::ProtocolSwitches protocol;
  // R3: a coordinator that stepped down writes "superseded by g" to its
  // state_dir and, restarted, finds it and never grants. Off: nothing is
  // written (an old coordinator forgets it stepped down).
  bool superseded_mark = true;
  // R0: the instance id is drawn fresh at every start. Off: drawn once and
  // stored in state_dir (so a disk image copies it).
  bool fresh_instance_id = true;
  // R5: a clean stop freezes admission BEFORE it reads what it hands over.
  // Off: it reads, sends the goodbye, and a waiting thread is admitted before
  // the freeze.
  bool freeze_before_goodbye = true;
  // R2: the coordinator's acceptances are recorded in its state_dir and
  // adopted when it starts. Off: a restarted coordinator knows only its file
  // ("last accepted" read from a file instead of a record).
  bool records_on_disk = true;
  bool operator==(const ReconfigSwitches&) const = default;
};

struct ReconfigConfig {
  std::uint64_t seed = 1;
  std::uint32_t limit = 12;  // L (the server's; every file must keep sum(allowance) <= L)
  ClusterFile file;          // the first file, on every machine
  std::vector<std::string> machines;  // broker id per machine (clones come later)
  Duration term = std::chrono::seconds(3);   // D
  Duration drain = std::chrono::seconds(1);  // H
  double eps = 1e-3;
  ReconfigSwitches switches;
  RealTime max_delay = Ms(20);
  // Per machine at start: registered DigiScope instances wanted, action threads.
  std::vector<std::uint32_t> registrations, demand;
  // Random reconfiguration events (RandomReconfig): mean seconds between; 0 = none.
  double events_every = 0;
  RealTime run_for = Sec(60);
  bool verbose = false;
};

struct ReconfigStats {
  std::uint64_t events = 0;
  std::uint64_t s_violations = 0;
  std::uint32_t max_used = 0;
  std::string first_violation;
  std::uint64_t reconfig_events = 0;  // random operator events injected
  std::uint64_t warnings = 0;         // ledger warnings (clones, refusals, step-downs)
  std::uint64_t accepted = 0;         // acceptances seen by agents
};

class ReconfigSim {
 public:
  explicit ReconfigSim(ReconfigConfig config);

  void At(RealTime t, std::function<void()> fn);
  void RunUntil(RealTime t);
  void Run() { RunUntil(config_.run_for); }
  RealTime now() const { return now_; }

  // Operator and fault actions, effective now.
  void Crash(int m);                      // kill -9
  void Start(int m);                      // start (or restart) the broker on machine m
  void CleanStop(int m);                  // R5: freeze, goodbye, exit
  void Restart(int m, RealTime gap);      // clean stop, start again after `gap`
  void SetFile(int m, ClusterFile file);  // install a file (takes effect at the next start)
  // A new machine with a copy of machine m's disk and file (same broker id),
  // started now, with `registrations` DigiScope instances wanting to register
  // and `demand` action threads. Returns its index.
  // With start = false the image waits on disk until Start(index).
  int Clone(int m, std::uint32_t registrations, std::uint32_t demand, bool start = true);
  void Partition(int m, bool cut);
  // Cuts (or heals) the link between machines a and b only.
  void CutLink(int a, int b, bool cut);
  // A powered-off machine boots again (no clients yet) and starts its broker.
  void Reboot(int m, std::uint32_t registrations, std::uint32_t demand);
  void SetDemand(int m, std::uint32_t threads);
  void SetRegistrations(int m, std::uint32_t wanted);
  // Removed from the cluster for good: the machine is turned off (its clients
  // with it).
  void PowerOff(int m);

  const ClusterFile& file(int m) const { return machines_[static_cast<std::size_t>(m)].file; }
  std::uint32_t used(int m) const;
  bool accepted(int m) const;
  bool up(int m) const { return machines_[static_cast<std::size_t>(m)].up; }
  int machines() const { return static_cast<int>(machines_.size()); }
  const ReconfigStats& stats() const { return stats_; }
  const ReconfigConfig& config() const { return config_; }

 private:
  struct Disk {
    std::uint64_t epoch = 0;
    std::uint64_t stored_instance = 0;  // only with fresh_instance_id off
    std::uint64_t superseded = 0;
    std::vector<lease::AcceptanceRecord> records;
  };
  struct Session {
    bool yielding = false;
  };
  struct Machine {
    std::string id;
    ClusterFile file;
    Disk disk;
    bool up = false;
    bool powered = true;
    bool cut = false;
    bool frozen = false;  // clean stop under way: admits nothing new
    std::uint64_t life = 0;  // bumped on every start and stop: stale timers die
    std::unique_ptr<lease::LeaseAgent> agent;
    std::unique_ptr<lease::Ledger> ledger;
    std::set<int> hello_waiting;
    // A superseded coordinator named its successor: report there (R3).
    std::string report_to;
    std::uint32_t want_registered = 0, registered = 0, demand = 0;
    std::map<std::uint64_t, Session> sessions;
    // The slot table's lease deadline (real time) and the floor it keeps
    // while no broker runs (the last instance's accepted floor).
    std::optional<RealTime> lease_deadline;
    std::uint32_t lease_amount = 0;
    std::uint32_t floor_in_table = 0;
  };
  struct Event {
    RealTime at;
    std::uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  lease::TimePoint Clock() const { return lease::TimePoint{} + Duration(now_); }
  void Log(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void Check();
  Machine& M(int m) { return machines_[static_cast<std::size_t>(m)]; }
  const Machine& M(int m) const { return machines_[static_cast<std::size_t>(m)]; }
  int Find(const std::string& id, int except = -1) const;  // an up-or-down machine with that id
  RealTime Delay();
  void Send(int from, int to, std::function<void()> deliver);
  void Wake(int m);
  void Step(int m, const lease::AgentStep& step);
  std::uint32_t Capacity(int m) const;
  void Enforce(int m);
  void Admit(int m);
  std::vector<lease::TargetUsage> Usage(int m) const;
  void OnRequest(int coord, int from, const lease::RenewRequest& r);
  void OnGrant(int m, std::uint64_t life, const lease::Grant& g);
  void StartCoordinator(int m);
  void Hellos(int m, std::uint64_t life);
  void AnswerHello(int m, int from, std::uint64_t generation, const std::string& hash);
  void StepDown(int m, std::uint64_t by, const std::string& successor = {});
  void DrainWarnings(int m);
  void RandomEvent();
  ClusterFile NextFile(const ClusterFile& f);

  double Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }
  std::uint64_t Below(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  RealTime Between(RealTime lo, RealTime hi) {
    return hi <= lo ? lo : lo + static_cast<RealTime>(Below(static_cast<std::uint64_t>(hi - lo) + 1));
  }

  ReconfigConfig config_;
  std::mt19937_64 rng_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> queue_;
  std::uint64_t seq_ = 0;
  RealTime now_ = 0;
  std::vector<Machine> machines_;
  std::uint64_t next_session_ = 1;
  std::set<std::pair<int, int>> cut_links_;
  bool first_coordinator_start_ = true;
  std::uint64_t issued_generation_ = 1;  // operators never issue two files with one generation
  ReconfigStats stats_;
};

// Named scenarios: each the failure of DESIGN's first wording (or the issue's
// case) it guards, the switch whose absence breaks S, and a run.
struct ReconfigScenario {
  const char* name;
  const char* what;
  const char* switch_name;  // as in ReconfigSwitchInfo
  ReconfigStats (*run)(const ReconfigSwitches& switches, bool verbose);
};
const std::vector<ReconfigScenario>& ReconfigScenarios();

struct ReconfigSwitchInfo {
  const char* name;  // dsb-sim --reconfig --break NAME
  const char* rule;
  void (*turn_off)(ReconfigSwitches&);
};
const std::vector<ReconfigSwitchInfo>& ReconfigSwitchList();
const ReconfigSwitchInfo* FindReconfigSwitch(const std::string& name);

// A random cluster (3-5 machines, small L) and a stream of operator events:
// files with a bumped generation installed and brokers restarted one at a
// time in random order (floors and system slots moved, raised, lowered, the
// coordinator moved, a broker added or removed), crashes and clean restarts,
// coordinator crashes, clones, partitions, demand and registration changes,
// and now and then an operator's mistake (a floor raised without a new
// generation).
ReconfigConfig RandomReconfig(std::uint64_t seed, RealTime run_for);

// One row of the catch table for a reconfiguration switch.
CatchRow CatchReconfigSwitch(const ReconfigSwitchInfo& sw, std::uint64_t first,
                             std::uint64_t seeds, RealTime run_for, bool stop_at_first);

}  // namespace dsb::sim::reconfig

#endif  // DSB_TESTS_SIM_RECONFIG_H_
