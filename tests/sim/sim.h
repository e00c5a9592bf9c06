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
// Issue 8 (docs/simulation.md): messages may be delayed past D and past D + H,
// partitions may be one-way, links may degrade (slow grants, lost requests),
// brokers and the coordinator may be stopped (SIGSTOP: timers do not fire,
// messages wait in the socket buffer), DigiScope instances register and exit
// at any time, wall clocks step (they matter only with wall-clock epochs,
// SimConfig::epoch_source), brokers crash in loops. The broker glue that S
// depends on is modelled: the slot table keeps what the broker last set and
// clients fence it to the floor at the lease deadline (GlueSwitches), so a
// stopped broker's table still shrinks on time.
//
// After EVERY event the simulation checks S against the sessions actually
// open: sum over brokers of (registered clients + open action sessions) <=
// L - r, and measures over-grant (sum of valid leases above the pool).
// Everything derives from SimConfig::seed: the same config replays exactly.
//
// Server model (SimConfig::server, off by default; DESIGN section 8, issue 7):
// the account's server counts every session it has not yet let go of: each
// broker's registered DigiScope instances (one long-lived session each), open
// action sessions, closed ones still within `close_lag`, and other tools'
// sessions (not through dsb). It refuses an open when it already counts >= C
// (its real cap, which may be below the configured L). A refused thread gives
// its slot back, backs off and reports the refusal; the report crosses the
// simulated network to the coordinator, which runs one LimitPolicy for the
// target and applies each change with Ledger::SetLimit (C2). Checks added:
// refusals until convergence, S against the REAL cap after convergence (see
// SimStats), and the limit never below C minus other tools' sessions.
// With the model off the simulation is exactly the lease-only one (same events,
// same random draws).
//
// etcd mode (SimConfig::etcd.enabled, issue 13; tests/sim/etcd_model.h):
// there is no coordinator. Every broker, for each renew request its agent
// sends, runs what the real broker runs (broker/etcd/etcd_ledger.h): keepalive
// its instance's store lease, read the whole store at one revision into a
// lease::StoreView, lease::ApplyRenew, then ONE compare-and-swap transaction
// of the changed keys guarded by the read mod_revisions and its own live
// key's lease; a lost compare -> read again and redo (bounded); a call
// unanswered within call_timeout -> read again and redo (a write that timed
// out may have committed: the ledger answers the duplicate with the stored
// reply); a renew not done within renew_budget is abandoned (the agent resends).
// Every store call and reply crosses the simulated network (loss, delay,
// duplication, partitions between a broker and the store). The store's faults
// replace the coordinator's: CrashCoordinator = the leader is lost (no writes,
// no expiry), RestartCoordinator = a new leader (every lease reset to its full
// TTL on the new leader's clock), PauseCoordinator = quorum lost until then,
// plus WipeStore (the data lost: the ledger starts again, C3). Writes waiting
// at a leader loss commit after the next election with probability
// commit_late, after their client gave up. S is checked after every event as
// in the embedded mode.
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

#include "broker/lease/account_held.h"
#include "broker/lease/agent.h"
#include "broker/lease/ledger.h"
#include "broker/lease/limit_policy.h"
#include "broker/lease/shared_ledger.h"
#include "tests/sim/etcd_model.h"

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
  // Probability of a delay past D: uniform in [D, late_max] (0 = 2D + H, so
  // some are past D + H too). A grant that late has lapsed on arrival (B1); a
  // request that late may reach a coordinator that forgot its sender (C2).
  double late = 0;
  RealTime late_max = 0;
};

// How a broker's epoch is made (rule R0). kWallClock: the broker's wall clock
// in microseconds at start, as the product did before R0 (a wall clock stepped
// back makes a restarted broker's epoch older than its previous one);
// kCounter: a counter kept in state_dir (R0), which only grows.
enum class EpochSource { kCounter, kWallClock };

// The broker glue around the lease agent that S depends on (broker/cluster.cc,
// the slot table's lease fence), as test switches like lease::ProtocolSwitches.
struct GlueSwitches {
  // Clients fence the slot table themselves: the broker writes the lease
  // deadline (its own monotonic clock) into the segment and every client
  // treats capacity above the floor as gone from then on, retiring held
  // slots above it (they come back within H). Off: only the broker's timer
  // shrinks the table, so a stopped broker's table keeps its capacity.
  bool client_fence = true;
  // The fence applies AT the deadline. Off: kLateFence after it (the product
  // before issue 8: a 50 ms delay plus 50 ms polling, 63.5 ms measured).
  bool fence_on_time = true;
  bool operator==(const GlueSwitches&) const = default;
};
inline constexpr RealTime kLateFence = 63'500'000;

// Switches of the etcd mode's broker side (they change nothing in the
// embedded mode).
struct EtcdSwitches {
  // B1 in etcd mode: the broker's lease counts on its OWN clock from t_sent,
  // whatever the store's leases do. Off: the broker trusts its store lease
  // instead: it keeps the applied grant until its store lease ends as the
  // store reported it (when the keepalive's answer arrived, plus the TTL left,
  // minus H so its clients can yield in time). A deposed leader's answer or a
  // leader's TTL reset then outlives what the store really keeps.
  bool b1_own_clock = true;
  bool operator==(const EtcdSwitches&) const = default;
};

// The etcd mode (see the file comment).
struct EtcdSpec {
  bool enabled = false;
  // Members' clock drift (ppm, within eps): the leader's clock measures every
  // lease's TTL. Leaders are taken in turn (member i + 1 after member i).
  std::vector<std::int64_t> member_ppm = {0, 0, 0};
  RealTime call_timeout = 0;  // 0 = D/12 on the broker's clock
  RealTime renew_budget = 0;  // 0 = D/3 on the broker's clock
  std::uint32_t max_lost_compares = 8;
  double commit_late = 0.5;  // a write waiting at a leader loss commits later with this
  // Random leader changes (FaultSpec::coordinator_crash_every): the new leader
  // is elected election_min..election_max later; the deposed leader answers
  // keepalives for up to stale_leader_max (0..) from its own lessor (cut off
  // from the majority, not yet stepped down).
  RealTime election_min = Ms(200);
  RealTime election_max = Sec(2);
  RealTime stale_leader_max = Sec(1);
};

// Every switch the simulation knows: the protocol's clauses and the glue.
struct SimSwitches {
  lease::ProtocolSwitches protocol;
  GlueSwitches glue;
  EtcdSwitches etcd;
  bool operator==(const SimSwitches&) const = default;
};

// Random faults (random workloads only). Mean seconds between events; 0 = never.
struct FaultSpec {
  double partition_every = 0;  // both ways, or one way (either direction) when one_way
  double broker_crash_every = 0;
  double coordinator_crash_every = 0;
  double revoke_every = 0;
  bool one_way = false;            // partitions are one-way in 2 of 3 cases
  double broker_pause_every = 0;   // SIGSTOP of a broker for up to pause_max
  double coordinator_pause_every = 0;
  RealTime pause_max = 0;          // 0 = 3D
  double register_every = 0;       // a DigiScope instance starts (or one leaves)
  double clock_step_every = 0;     // a broker's wall clock steps by up to +-120 s
  // A degraded link (gray failure) for 1 s to 2D + H: the broker's requests
  // are lost while what the coordinator sends it is delayed D/12 to D/2 more.
  double slow_link_every = 0;
  // A broker crash is a crash loop (2-4 quick restarts) with this probability.
  double crash_loop = 0;
  // etcd mode only: the store's data lost (the cluster rebuilt empty).
  double store_wipe_every = 0;
};

// The account's server and the discovery loop (off by default).
struct ServerSpec {
  bool enabled = false;
  std::uint32_t cap = 0;  // C: an open is refused when the server counts >= C; 0 = L
  // How a session's end reaches the server and the slot table:
  //   kImmediate  the slot is free at once; the server counts the session for
  //               close_lag more (PostgreSQL's backend exit, issue 7)
  //   kConfirmed  the client waits for the server (close_lag) before it releases
  //   kCooldown   the slot is free for the thread at once, but the broker keeps it
  //               unusable for `cooldown` (release_cooldown); the server counts
  //               the session for close_lag
  enum class Close { kImmediate, kConfirmed, kCooldown };
  Close close = Close::kImmediate;
  RealTime close_lag = 0;
  RealTime cooldown = 0;
  // A refused thread releases its slot (a cooling slot in kCooldown: the broker
  // cannot tell) and asks again after this long.
  RealTime refusal_backoff = Ms(50);
  // Broker-side back-pressure (a proposal, off by default): after a refusal the
  // broker admits no action above what it then holds until it applies its next
  // grant. Lowering one broker's own capacity never endangers S.
  bool hold_after_refusal = false;
  // EXPERIMENT (not the estimate the coordinator uses): others counted with
  // system_slots + their last reported action slots held instead of floor +
  // recent owed. Not an upper bound; shows what the bound's slack costs.
  bool estimate_from_reports = false;
  // RecentOwed's horizon: the longest a refusal report may take to arrive
  // (0 = D). 1 ns = owed now only (the lead's first wording; late reports may
  // then lower the limit below C).
  Duration report_horizon{0};
  // A thread waits this long after an action before it asks for the next one
  // (0 = at once, the lease-only model's behaviour).
  RealTime think = 0;
  // Other tools' sessions on the account, random arrivals (scripts may add
  // more with OtherToolSession): mean seconds between arrivals, 0 = none.
  double other_every = 0;
  std::uint32_t other_max_sessions = 1;  // 1..this many sessions per arrival
  RealTime other_hold_min = Ms(10);
  RealTime other_hold_max = Ms(200);
  // The coordinator's LimitPolicy (broker/lease/limit_policy.h).
  bool discover = true;
  Duration window = std::chrono::seconds(60);
  std::uint32_t confirmations = 2;
  bool ratchet = false;  // the test switch: every refusal below the limit lowers it
  // Rule F2a: a one-burst lowering is provisional this long (0 = final at
  // once, the switch that shows F2a is needed).
  Duration probation = std::chrono::seconds(60);
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
  GlueSwitches glue;
  EtcdSwitches etcd_switches;
  EtcdSpec etcd;
  EpochSource epoch_source = EpochSource::kCounter;
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
  // Demand changes alternate between 0 and max_demand (batches that start and
  // stop) instead of random levels.
  bool demand_bursts = false;
  FaultSpec faults;
  ServerSpec server;
  RealTime run_for = Sec(60);
  bool verbose = false;
};

// What a network hook sees of a message.
struct MsgInfo {
  // kStoreCall / kStoreReply: etcd mode, a broker's call to the store and
  // its answer (epoch and request_id: the renew it serves; store_op below).
  enum Kind { kRequest, kGrant, kNotice, kRefusal, kStoreCall, kStoreReply } kind = kRequest;
  enum StoreOp { kNoOp, kLeaseGrant, kPutLive, kKeepAlive, kRange, kTxn } store_op = kNoOp;
  bool committed = false;  // kStoreReply of a kTxn: the transaction committed
  int broker = 0;
  std::uint64_t epoch = 0;
  std::uint64_t request_id = 0;
  bool resend = false;       // a request resent with the same id
  bool learning = false;     // a learning reply
  std::uint32_t amount = 0;  // granted amount (grants)
  std::uint32_t held = 0;    // refusals: the reporter's exact count at the refusal
  std::int64_t refused_at = 0;  // refusals: real time of the refusal (for the checks only)
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

  // etcd mode only.
  std::uint64_t store_txns = 0;      // transactions committed with a change
  std::uint64_t lost_compares = 0;   // transactions whose compare failed
  std::uint64_t store_timeouts = 0;  // store calls a broker gave up waiting for
  std::uint64_t late_commits = 0;    // writes committed after a leader loss
  std::uint64_t leader_changes = 0;
  std::uint64_t live_keys_expired = 0;  // broker instances the store declared silent
  std::uint64_t abandoned_renews = 0;   // renews given up (budget or lost compares)

  // Server model only (all 0 when it is off).
  std::uint64_t refusals = 0;            // opens the server refused to dsb
  std::uint64_t reports_lost = 0;        // refusal reports that never reached a coordinator
  std::uint64_t reports_late = 0;        // reports that arrived after the report horizon
  std::uint64_t evidence = 0;            // reports whose estimate was below the limit (F1)
  std::uint64_t refusals_by_lag = 0;     // refused while dsb's slot tables held < C and no
                                         // other tool had a session: closed sessions lingering
  std::uint64_t other_sessions = 0;      // other tools' sessions opened
  std::uint32_t max_other = 0;           // most other-tool sessions at one time
  std::uint32_t cap = 0;                 // C
  std::uint32_t limit = 0;               // the coordinator's effective limit at the end
  std::uint32_t min_limit = 0;           // lowest effective limit seen
  std::uint64_t limit_changes = 0;
  // Converged: from the last limit change (or the start) plus (D + H)(1 + eps) +
  // close_lag: by then every grant made before the change has lapsed, its slots
  // are back, and the server has let go of their sessions. -1 = the run ended
  // before that.
  double converged_at = -1;              // seconds of simulated time
  std::uint64_t refusals_until_convergence = 0;
  std::uint64_t refusals_after_convergence = 0;
  // S against the REAL cap: after convergence dsb never meets a full server
  // unless another tool holds a session at that moment (so a refusal after
  // convergence with no other tool present is a violation).
  std::uint64_t real_cap_violations = 0;
  // The limit fell below C - max_other (what other tools could take) at a change.
  std::uint64_t limit_below_cap_violations = 0;
  double server_utilization = 0;  // time-avg of dsb's sessions on the server / C
  double mean_limit = 0;          // time-avg of the effective limit
  std::string first_real_violation;
};

// RecentOwed and HeldAtRefusal live in broker/lease/account_held.h: the real
// coordinator uses the same estimate.
using lease::HeldAtRefusal;
using lease::RecentOwed;

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
  // One-way partition: `up` cuts broker -> coordinator, `down` the other way.
  void PartitionOneWay(int b, bool up, bool down);
  // SIGSTOP until real time `until`: the process's timers do not fire and the
  // messages sent to it wait in its socket buffer until it runs again. A
  // stopped broker's clients keep running on the slot table (the fence there
  // still applies at the lease deadline, GlueSwitches).
  void PauseBroker(int b, RealTime until);
  void PauseCoordinator(RealTime until);
  // Steps broker b's wall clock (only wall-clock epochs read it).
  void StepWallClock(int b, RealTime delta);
  // A DigiScope instance at broker b exits (its registration is freed).
  void UnregisterClient(int b);
  // Coordinator -> broker b messages take `extra` longer (0 = normal).
  void SlowLink(int b, RealTime extra);
  void CrashBroker(int b);
  void RestartBroker(int b);
  void CrashCoordinator();
  void RestartCoordinator();
  void Revoke(int b);
  void Resume(int b);
  void ForceRenew(int b);
  // etcd mode. The leader is lost now; the deposed leader still answers
  // keepalives (without effect) until now + stale_for; a new leader is
  // elected at now + election (kNever: not until ElectLeader).
  void LeaderChange(RealTime election, RealTime stale_for = 0);
  void ElectLeader();
  void WipeStore();
  bool store_has_leader() const { return store_ && store_->has_leader(); }
  // Registers one more DigiScope instance at broker b if B1 admits it.
  bool RegisterClient(int b);
  // Server model: another tool opens `sessions` sessions for `hold`; each is
  // refused (and not opened) if the server already counts >= C. Returns how
  // many opened.
  std::uint32_t OtherToolSession(std::uint32_t sessions, RealTime hold);
  // Server model: what the server counts now (dsb + lingering + other tools).
  std::uint32_t ServerCount();
  std::uint32_t effective_limit() const;  // the coordinator's (config limit if down)

  RealTime now() const { return now_; }
  std::uint32_t actions(int b) const;
  std::uint32_t registered(int b) const;
  std::uint32_t lease(int b) const;  // valid lease at now (0 if down)
  std::uint64_t epoch(int b) const;
  std::uint32_t pool() const { return pool_; }
  const SimStats& stats() const;
  const SimConfig& config() const { return config_; }

 private:
  enum class Ev {
    kWake,
    kToCoordinator,
    kToBroker,
    kSessionEnd,
    kScript,
    kDemand,
    kChaos,
    kWaitEnd,
    kOtherTool,
    kFence,        // the clients' lease fence of broker `broker` (a = fence_seq)
    kResume,       // a stopped broker (broker >= 0) or coordinator (-1) runs again
    kStoreTick,    // etcd mode: the store's next lease expiry (a = store_tick_seq_)
    kLinkTimeout,  // etcd mode: broker `broker`'s call timer (a = link.timer_seq)
    kElect         // etcd mode: a new leader (a = election_seq_)
  };
  struct Event {
    RealTime at;
    std::uint64_t seq;
    Ev kind;
    int broker;
    std::uint64_t a, b;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  // etcd mode: one call of a broker's store client and its answer.
  struct StoreCall {
    std::uint64_t call_id = 0;  // the link's, to match the answer
    std::int64_t lease = 0;     // kKeepAlive, kPutLive
    std::int64_t ttl = 0;       // kLeaseGrant (seconds)
    std::string key, value;     // kPutLive
    EtcdTxn txn;                // kTxn
  };
  struct StoreReply {
    std::uint64_t call_id = 0;
    std::int64_t lease = 0;           // kLeaseGrant: the new lease
    std::optional<std::int64_t> ttl;  // kKeepAlive: TTL left; nullopt = lease gone
    EtcdRange range;                  // kRange
    EtcdTxnResult txn;                // kTxn, kPutLive
  };
  struct Message {
    MsgInfo info;
    lease::RenewRequest request;
    lease::Grant grant;
    lease::RevokeNotice notice;
    StoreCall call;
    StoreReply reply;
  };
  // etcd mode: a broker's store client running one renew at a time.
  struct EtcdLink {
    enum class Phase { kIdle, kLeaseGrant, kPutLive, kKeepAlive, kRange, kLearnGrant, kTxn };
    Phase phase = Phase::kIdle;
    std::int64_t lease = 0;    // this instance's store lease (0: none yet, or gone)
    bool lease_fresh = false;  // granted in this renew (after t_sent): no keepalive needed
    std::optional<lease::RenewRequest> current, queued;
    std::uint64_t call_id = 0;
    std::uint64_t timer_seq = 0;
    RealTime budget_end = 0;  // real time the current renew is abandoned
    std::uint32_t lost_compares = 0;
    std::map<std::string, std::int64_t> read_mod;  // ledger keys as read: mod_revision
    std::optional<lease::RenewStep> step;
    std::int64_t learning_lease = 0;
    // EtcdSwitches::b1_own_clock off: the grant kept until the store lease
    // ends as the broker reads it.
    RealTime trust_until = 0;
    std::uint32_t trust_amount = 0;
  };
  struct Session {
    RealTime end = kNever;
    std::uint64_t version = 0;
    bool yielding = false;
    // Server model: closed by its client; the slot is held until `end`
    // (confirmation or cooldown) and the server counts it until server_end.
    bool closing = false;
    RealTime server_end = kNever;
  };
  struct Broker {
    BrokerSpec spec;
    std::string id;
    bool up = false;
    bool cut_up = false;    // broker -> coordinator messages are lost
    bool cut_down = false;  // coordinator -> broker messages are lost
    RealTime slow_down = 0;  // extra delay of coordinator -> broker messages
    RealTime paused_until = 0;  // SIGSTOPped while now < paused_until
    std::vector<Message> inbox;  // arrived while stopped, delivered on resume
    RealTime wall_offset = 0;    // wall clock = real time + this (wall-clock epochs)
    // The slot table as the broker last set it, and the lease deadline written
    // into it (real time; kNever if no lease above the floor).
    std::uint32_t table_cap = 0;
    RealTime fence_at = kNever;
    std::uint64_t fence_seq = 0;
    std::uint64_t epoch = 0;
    std::unique_ptr<lease::LeaseAgent> agent;
    std::uint32_t registered = 0;
    std::uint32_t demand = 0;
    std::map<std::uint64_t, Session> sessions;
    std::uint32_t cooling = 0;  // closing sessions whose thread is free (kCooldown)
    std::optional<std::uint32_t> refusal_clamp;  // hold_after_refusal: admit below this only
    // Threads backing off after a refusal or thinking: id -> when they ask again.
    std::map<std::uint64_t, RealTime> waiting_threads;
    std::uint64_t wake_seq = 0;
    std::uint64_t last_sent_epoch = 0, last_sent_id = 0;
    // The agent's lease as of its last step (for the per-event over-grant check).
    std::uint32_t lease_amount = 0;
    RealTime lease_until = 0;
    EtcdLink link;  // etcd mode
  };

  void Push(RealTime at, Ev kind, int broker, std::uint64_t a = 0, std::uint64_t b = 0);
  void Dispatch(const Event& e);
  void Check();
  void Account(RealTime until);
  void Log(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));

  lease::TimePoint BrokerClock(int b) const;
  lease::TimePoint CoordinatorClock() const;
  std::int64_t LocalNow(std::int64_t ppm) const;  // a clock with `ppm` at now, in ns
  RealTime RealAt(std::int64_t ppm, lease::TimePoint local) const;

  std::vector<lease::TargetUsage> Usage(int b) const;
  void StartBroker(int b);
  void HandleStep(int b, const lease::AgentStep& step);
  void Enforce(int b);
  // What the slot table lets clients use at now (the broker's capacity, or
  // the table's when it is stopped, cut to the floor by the fence).
  bool Paused(int b) const;
  bool Fenced(int b) const;
  bool TableAdmitsAction(int b) const;
  std::uint32_t TableCapacity(int b) const;
  void ResumeStopped(int b);
  void ResumeStoppedCoordinator();
  void Deliver(int b, Ev kind, const Message& m);
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
  // etcd mode (sim_etcd.cc).
  void EtcdStart();
  void LinkSend(int b, const lease::RenewRequest& request);
  void LinkBegin(int b);
  void LinkCall(int b, MsgInfo::StoreOp op, StoreCall call);
  void LinkEnd(int b, bool done);
  void LinkRetry(int b);  // re-read and redo (a timeout or a lost lease)
  void LinkTimeout(int b);
  void OnStoreCall(const Message& m);
  void OnStoreReply(int b, const Message& m);
  void ExecuteStoreCall(const Message& m, bool late);
  void ArmStoreTick();
  void StoreTick();
  void EtcdRevoke(int b, bool resume);
  std::int64_t LeaderNow() const;
  std::int64_t StoreTtlSeconds() const;
  std::uint32_t TrustLease(int b) const;  // EtcdSwitches::b1_own_clock off
  // Server model.
  std::uint32_t Busy(const Broker& br) const;  // threads that hold or await something
  // The client ends its action now (thinks: the thread then thinks before it asks again).
  void CloseSession(int b, std::uint64_t id, bool thinks);
  void Refuse(int b);                          // the server refused an open at b
  void OnRefusalReport(const Message& m);
  void StartPolicy();
  // Schedules the policy's next Tick (F2a probation, F4) on the coordinator's
  // clock; a later call supersedes an earlier one.
  void ArmPolicyTick();
  void TickPolicy();
  void NoteLimit(std::uint32_t limit);
  std::uint32_t DsbServerCount() const;  // dsb's sessions the server counts now
  std::uint32_t OthersNow() const;
  void ThreadWaits(int b, RealTime until);

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
  // etcd mode.
  std::unique_ptr<EtcdModel> store_;
  std::size_t leader_member_ = 0;
  std::size_t deposed_member_ = 0;
  RealTime stale_until_ = 0;             // the deposed leader answers keepalives until then
  std::vector<Message> waiting_writes_;  // arrived without a leader
  std::uint64_t store_tick_seq_ = 0;
  std::uint64_t election_seq_ = 0;
  std::uint64_t store_call_seq_ = 0;
  bool store_wiped_ = false;
  bool coordinator_up_ = true;
  RealTime coordinator_paused_until_ = 0;
  std::vector<Message> coordinator_inbox_;
  std::unordered_map<std::uint64_t, Message> in_flight_;
  std::uint64_t next_msg_ = 1;
  std::uint64_t next_session_ = 1;
  std::vector<std::function<void()>> scripts_;
  NetworkHook hook_;
  // Server model.
  std::uint32_t cap_ = 0;
  std::unique_ptr<lease::LimitPolicy> policy_;
  std::uint64_t policy_tick_seq_ = 0;
  std::unique_ptr<RecentOwed> recent_owed_;
  Duration report_horizon_{};
  std::uint64_t others_reserved_total_ = 0;  // sum(system_slots + floor)
  std::vector<RealTime> lingering_;        // server ends of sessions dsb has let go
  std::vector<RealTime> others_;           // ends of other tools' sessions
  std::uint64_t next_wait_ = 1;
  RealTime last_change_ = 0;
  struct RefusalRecord {
    RealTime at;
    std::uint32_t others;
  };
  std::vector<RefusalRecord> refusal_log_;
  double limit_num_ = 0, server_num_ = 0, server_den_ = 0;
  mutable SimStats stats_;
  double util_num_ = 0, util_den_ = 0, sat_num_ = 0, sat_den_ = 0;
};

}  // namespace dsb::sim

#endif  // DSB_TESTS_SIM_SIM_H_
