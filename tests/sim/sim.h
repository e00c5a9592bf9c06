// Deterministic simulation of the lease protocol (DESIGN sections 7 and 10).
//
// The real Ledger (coordinator) and LeaseAgent (one per broker) run against a
// simulated real-time clock; every node reads its own drifting clock
// (rate 1 + ppm/1e6, |ppm| <= eps * 1e6). Messages cross a simulated network
// that can lose, delay, duplicate and reorder them and cut a broker off.
// Brokers and the coordinator crash and restart (a restarted coordinator starts
// without state, i.e. in learning mode; a restarted broker gets a new epoch and
// its first report counts every slot still held). Clients are DigiScope
// instances with action threads: a thread waits for an action slot, holds it
// for the action, and yields within H when its broker's capacity falls below
// what it holds (should_yield) or its broker dies (socket EOF).
//
// After EVERY event the simulation checks S against the sessions actually
// open: sum over brokers of (registered clients + open action sessions) <=
// L - r, and measures over-grant (sum of valid leases above the pool).
// Everything derives from SimConfig::seed: the same config replays exactly.
//
// Thread rule: single-threaded; a Simulation is used by one thread.
#ifndef DSB_TESTS_SIM_SIM_H_
#define DSB_TESTS_SIM_SIM_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/lease/agent.h"
#include "broker/lease/ledger.h"

namespace dsb::sim {

using lease::Duration;
using RealTime = std::int64_t;  // nanoseconds of simulated real time since the start
inline constexpr RealTime kNever = INT64_MAX;

inline constexpr RealTime Ms(std::int64_t ms) { return ms * 1'000'000; }
inline constexpr RealTime Sec(double s) { return static_cast<RealTime>(s * 1e9); }

struct BrokerSpec {
  std::uint32_t system_slots = 1;
  std::uint32_t floor = 0;
  std::uint32_t weight = 1;
  std::int64_t clock_ppm = 0;   // this broker's clock runs at 1 + ppm/1e6
  RealTime start_at = 0;        // first start of the broker
  Duration renew_interval{};    // 0 = D/3
  std::uint32_t instances = 1;  // DigiScope instances registered at start (<= system_slots)
  std::uint32_t demand = 0;     // action threads wanting a session at start
};

struct NetworkSpec {
  double loss = 0;        // probability a message is lost
  double duplicate = 0;   // probability a message is delivered twice
  double long_delay = 0;  // probability of a long delay (reorders)
  RealTime min_delay = Ms(1);
  RealTime max_delay = Ms(1);
  RealTime long_delay_max = 0;
};

// Random faults (random workloads only). Mean seconds between events; 0 = never.
struct FaultSpec {
  double partition_every = 0;
  double broker_crash_every = 0;
  double coordinator_crash_every = 0;
  double revoke_every = 0;
};

struct SimConfig {
  std::uint64_t seed = 1;
  std::uint32_t limit = 12;   // L of the one simulated target
  std::uint32_t reserve = 0;  // r
  std::vector<BrokerSpec> brokers;
  std::int64_t coordinator_ppm = 0;
  Duration term = std::chrono::seconds(6);   // D
  Duration drain = std::chrono::seconds(2);  // H
  double eps = 1e-3;
  lease::ProtocolSwitches switches;
  // At t = 0 no lease exists anywhere, so the first coordinator may skip
  // learning mode; every restart learns (unless the C3 switch is off).
  bool fresh_cluster = true;
  // Brokers renew early when their report changes (LeaseAgent's fast renew);
  // off = strictly every renew_interval (the targeted scenarios script request
  // ids by time, so they turn it off).
  bool early_renew = true;
  NetworkSpec net;
  // Clients: with adversarial_clients a session lasts until it must yield and
  // yields exactly H - 1 us after should_yield turns true (the worst case the
  // rules allow). Otherwise sessions last [session_min, session_max] and yield
  // after a random part of H.
  bool adversarial_clients = true;
  RealTime session_min = Ms(50);
  RealTime session_max = Sec(2);
  // Random demand changes per broker (0 = demand changes only by script).
  double demand_change_every = 0;
  std::uint32_t max_demand = 0;
  FaultSpec faults;
  RealTime run_for = Sec(60);
  bool verbose = false;
};

// What a network hook sees of a message.
struct MsgInfo {
  enum Kind { kRequest, kGrant, kNotice } kind = kRequest;
  int broker = 0;
  std::uint64_t epoch = 0;
  std::uint64_t request_id = 0;
  bool resend = false;       // a request resent with the same id
  bool learning = false;     // a learning reply
  std::uint32_t amount = 0;  // granted amount (grants)
};

// A hook's decision for one message: drop it, or deliver it at a given time.
struct Fate {
  bool drop = false;
  std::optional<RealTime> deliver_at;
};
// Returns std::nullopt to leave the message to the random network.
using NetworkHook = std::function<std::optional<Fate>(const MsgInfo&, RealTime now)>;

struct SimStats {
  std::uint64_t events = 0;
  std::uint64_t s_violations = 0;    // events after which S did not hold
  std::uint32_t max_over_grant = 0;  // max of (sum of valid leases - pool), 0 if never above
  std::uint32_t max_slots_used = 0;  // max of sum(registered + actions)
  std::uint64_t messages = 0, dropped = 0;
  std::uint64_t grants_applied_check = 0;
  double utilization = 0;            // time-avg min(pool held, P) / min(pool demand, P)
  double saturated_utilization = 0;  // time-avg pool held / P while pool demand >= P
  double saturated_seconds = 0;
  std::string first_violation;  // empty if none
};

class Simulation {
 public:
  explicit Simulation(SimConfig config);

  // Schedules `fn` at real time `t` (scripts of targeted scenarios).
  void At(RealTime t, std::function<void()> fn);
  void SetNetworkHook(NetworkHook hook) { hook_ = std::move(hook); }
  // Runs events up to and including real time `t`.
  void RunUntil(RealTime t);
  // Runs until config.run_for.
  void Run() { RunUntil(config_.run_for); }

  // Script actions, effective at now().
  void SetDemand(int b, std::uint32_t threads);
  void Partition(int b, bool cut);
  void CrashBroker(int b);
  void RestartBroker(int b);
  void CrashCoordinator();
  void RestartCoordinator();
  void Revoke(int b);
  void Resume(int b);
  void ForceRenew(int b);
  // Registers one more DigiScope instance at broker b if B1 admits it.
  bool RegisterClient(int b);

  RealTime now() const { return now_; }
  std::uint32_t actions(int b) const;
  std::uint32_t registered(int b) const;
  std::uint32_t lease(int b) const;  // valid lease at now (0 if down)
  std::uint64_t epoch(int b) const;
  std::uint32_t pool() const { return pool_; }
  const SimStats& stats() const;
  const SimConfig& config() const { return config_; }

 private:
  enum class Ev { kWake, kToCoordinator, kToBroker, kSessionEnd, kScript, kDemand, kChaos };
  struct Event {
    RealTime at;
    std::uint64_t seq;
    Ev kind;
    int broker;
    std::uint64_t a, b;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  struct Message {
    MsgInfo info;
    lease::RenewRequest request;
    lease::Grant grant;
    lease::RevokeNotice notice;
  };
  struct Session {
    RealTime end = kNever;
    std::uint64_t version = 0;
    bool yielding = false;
  };
  struct Broker {
    BrokerSpec spec;
    std::string id;
    bool up = false;
    bool cut = false;
    std::uint64_t epoch = 0;
    std::unique_ptr<lease::LeaseAgent> agent;
    std::uint32_t registered = 0;
    std::uint32_t demand = 0;
    std::map<std::uint64_t, Session> sessions;
    std::uint64_t wake_seq = 0;
    std::uint64_t last_sent_epoch = 0, last_sent_id = 0;
    // The agent's lease as of its last step (for the per-event over-grant check).
    std::uint32_t lease_amount = 0;
    RealTime lease_until = 0;
  };

  void Push(RealTime at, Ev kind, int broker, std::uint64_t a = 0, std::uint64_t b = 0);
  void Dispatch(const Event& e);
  void Check();
  void Account(RealTime until);
  void Log(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));

  lease::TimePoint BrokerClock(int b) const;
  lease::TimePoint CoordinatorClock() const;
  RealTime RealAt(std::int64_t ppm, lease::TimePoint local) const;

  std::vector<lease::TargetUsage> Usage(int b) const;
  void StartBroker(int b);
  void HandleStep(int b, const lease::AgentStep& step);
  void Enforce(int b);
  // Admits waiting threads; true if any was admitted.
  bool Admit(int b);
  // Usage changed: let the agent look at it now (it may renew early).
  void Poke(int b);
  void EndSession(int b, std::uint64_t id);
  void Send(Message m);
  void OnCoordinatorMessage(const Message& m);
  void OnBrokerMessage(int b, const Message& m);
  void Chaos();
  lease::LedgerConfig LedgerCfg(bool first_start) const;

  double Uniform();                      // [0, 1)
  std::uint64_t Below(std::uint64_t n);  // [0, n)
  RealTime Between(RealTime lo, RealTime hi);
  RealTime Exponential(double mean_seconds);

  SimConfig config_;
  std::uint32_t pool_ = 0;
  std::mt19937_64 rng_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> queue_;
  std::uint64_t seq_ = 0;
  RealTime now_ = 0;
  RealTime accounted_ = 0;
  std::vector<Broker> brokers_;
  std::unique_ptr<lease::Ledger> ledger_;
  bool coordinator_up_ = true;
  std::unordered_map<std::uint64_t, Message> in_flight_;
  std::uint64_t next_msg_ = 1;
  std::uint64_t next_session_ = 1;
  std::vector<std::function<void()>> scripts_;
  NetworkHook hook_;
  mutable SimStats stats_;
  double util_num_ = 0, util_den_ = 0, sat_num_ = 0, sat_den_ = 0;
};

}  // namespace dsb::sim

#endif  // DSB_TESTS_SIM_SIM_H_
