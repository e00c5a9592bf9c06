// EtcdWorld: the world of the etcd integration and chaos tests (issue 13, docs/etcd.md "What the
// etcd tests prove"): real etcd members (tests/support/etcd_cluster.h) on loopback ports the
// harness picked, real dsb-broker processes whose cluster file says ledger = "etcd" (no
// coordinator broker at all), DigiScope-like dsb-load processes, and dsb-simserver as the judge.
// The server is started with a cap far above the account's limit, so it measures rather than
// enforces: its `peak` is the most sessions it saw at once, the server-side measure of S.
//
// Everything it starts it stops by PID (the brokers and loads are testing::Process children that
// also die with the test; the etcd members are the harness's).
//
// Thread rule: one test thread uses an EtcdWorld.
#ifndef DSB_TESTS_INTEGRATION_ETCD_WORLD_H_
#define DSB_TESTS_INTEGRATION_ETCD_WORLD_H_

#include <sys/types.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/etcd_cluster.h"
#include "tests/support/ports.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace dsb::etcdit {

inline constexpr const char* kUser = "svc-digiscope";
inline constexpr const char* kTarget = "exch01";

struct WorldSpec {
  int members = 3;          // etcd members (1 or 3)
  int brokers = 3;          // ws1..wsN, every one an equal peer (no coordinator)
  int limit = 24;           // the account's limit in the cluster file
  int system_slots = 1;     // per broker
  int floor = 0;            // per broker
  std::chrono::milliseconds term{1000};   // D
  std::chrono::milliseconds drain{1000};  // H
  // Per target: a dead client's slots stay out of use this long, covering the moment the
  // server needs to see its connections close (as the chaos suite does).
  std::string quarantine = "1s";
  std::string adopt_grace = "2s";
  std::string stem;  // unique per test (shm prefixes, the etcd prefix)
};

// What a broker's `status` says of its lease on the first target (AgentView, broker/cluster.cc).
struct AgentTarget {
  bool ok = false;        // the broker answered with a lease view
  std::int64_t lease = -1;
  std::int64_t action_capacity = -1;
  std::int64_t lease_left_ms = -1;  // -1: no lease running
  std::string applied;              // request id of the grant applied ("0": none)
  std::string verdict;              // "accepted", "pending", ...
  std::string epoch, instance;      // this instance (R0)
  std::int64_t held = -1;           // slots held (system and action) at the broker
};

class EtcdWorld {
 public:
  EtcdWorld();
  ~EtcdWorld();
  EtcdWorld(const EtcdWorld&) = delete;
  EtcdWorld& operator=(const EtcdWorld&) = delete;

  // Starts etcd, the judge, and writes the files; then starts every broker (StartBrokers).
  // Returns "" when all is up. `*skip` is set (and the reason returned) only when this
  // machine has no /usr/bin/etcd; any other failure is a failure.
  std::string Start(const WorldSpec& spec, bool* skip);

  const WorldSpec& spec() const { return spec_; }
  const std::filesystem::path& dir() const { return scratch_.path(); }
  testing::EtcdCluster& etcd() { return *etcd_; }
  int brokers() const { return static_cast<int>(brokers_.size()); }
  testing::BrokerProcess& broker(int i) { return *brokers_.at(static_cast<std::size_t>(i)); }
  std::string id(int i) const { return "ws" + std::to_string(i + 1); }
  std::string prefix() const { return prefix_; }
  // The pool shared by leases: limit - brokers x (system_slots + floor).
  int pool() const;
  // What every broker may always hold together: brokers x (system_slots + floor).
  int floors() const { return spec_.limit - pool(); }

  // ---- brokers ----
  boost::json::object Status(int i);
  AgentTarget Agent(int i);
  // True when every broker is accepted and holds a lease above 0.
  bool AllLeased();
  // For a failure message: each broker's agent (verdict, epoch, lease, capacity, applied,
  // held), one line each; with `with_keys` also the keys under prefix() (etcdctl: left out
  // when it fails, e.g. without quorum).
  std::string Dump(bool with_keys);

  // ---- loads (dsb-load: `instances` DigiScope processes of `threads` action threads) ----
  testing::Process* StartLoad(int i, int instances, int threads, double seconds,
                              int hold_ms_min = 10, int hold_ms_max = 60);
  // SIGTERM to every load still running (each ends its instances), then reaped (bounded).
  void StopLoads();
  // The DigiScope processes (dsb-load instances) of broker i's loads that still run, by the
  // "dsb-load: instance I pid P" lines of their logs; a pid counts only while its load is its
  // parent, so a reused pid is never taken for one.
  std::vector<pid_t> LiveInstances(int i);
  // Slots held at every broker together (-1 if one does not answer).
  std::int64_t HeldEverywhere();

  // ---- the judge ----
  boost::json::object ServerUser();
  double ServerPeak();
  double ServerCurrent();  // -1 if the server does not answer
  // STATS RESET: a new measuring window (peak restarts at the current count).
  void ServerReset();

  // ---- etcd, read with etcdctl (a process of its own, no dsb code on the path) ----
  // Keys under prefix() + `suffix` (without the prefix); nullopt if etcdctl failed (no quorum).
  std::optional<std::vector<std::string>> Keys(const std::string& suffix);

  // Seconds since Start() (for the time stamps a run prints).
  double Seconds() const;

 private:
  // The server's STATS for kUser (empty object: never seen); nullopt if it does not answer.
  std::optional<boost::json::object> ServerStatsOfUser();

  WorldSpec spec_;
  testing::ScratchDir scratch_{"dsbetcd"};
  std::unique_ptr<testing::EtcdCluster> etcd_;
  std::vector<testing::PortReservation> ports_;
  std::vector<std::unique_ptr<testing::BrokerProcess>> brokers_;
  std::unique_ptr<testing::Process> server_;
  std::string server_address_;
  struct Load {
    int broker = 0;
    std::unique_ptr<testing::Process> process;
    std::filesystem::path log;
  };
  std::vector<Load> loads_;
  std::string prefix_;
  std::chrono::steady_clock::time_point t0_;
};

// A number from a JSON object (-1 when missing or null).
std::int64_t Int(const boost::json::object& o, const char* key);

}  // namespace dsb::etcdit

#endif  // DSB_TESTS_INTEGRATION_ETCD_WORLD_H_
