// PgFixture: what every PostgreSQL real-server test needs — a PostgreSQL server started in a
// temporary folder (role `digiscope` capped at kCap), real dsb-broker processes, real dsb-load
// processes, and the server's own judgement: refusals counted from its log, sessions sampled
// from pg_stat_activity. dsb's own counters are printed, never used to judge.
//
// Tests for limit discovery ("limit = 20 converges to 12"), limit_command, `dsbctl probe` and
// cluster mode are meant to be written next to pg_limit_test.cc with these helpers:
//   StartBroker(TargetToml(...))  one broker with a hand-written target (any config key)
//   StartLoad(broker, seconds, extra_flags) / FinishLoad(run)
//   Judge(...)                    refusals in the server's log + sampled sessions over a window
//   server_.SetRoleLimit(n), server_.RoleLimitCommand(), server_.RoleUrl()
#ifndef DSB_TESTS_REALSERVER_PG_FIXTURE_H_
#define DSB_TESTS_REALSERVER_PG_FIXTURE_H_

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/pg_server.h"
#include "tests/tools/process.h"

namespace dsb::realserver {

// Run length of the long phases, in seconds: DSB_PG_SECONDS (a float, e.g. 300 for a long
// mode), else `fallback`.
double PgSeconds(double fallback);

// A number from a JSON summary; -1 when missing or not a number.
double Num(const boost::json::object& o, const char* key);

struct LoadRun {
  tools_test::ChildProcess process;
  std::string out;  // stdout file (the last line is the summary JSON)
  std::string err;  // stderr file (progress, "instance I pid P")
  double seconds = 0;
};

// What PostgreSQL says about a window of time.
struct Judgement {
  std::uint64_t refusals = 0;  // "too many connections for role" lines in its log
  testing::PgSampler::Stats sessions;
  double utilization = 0;  // sessions.mean / cap
};

class PgFixture : public ::testing::Test {
 protected:
  static constexpr int kCap = 12;

  // Skips (with the reason) when PostgreSQL cannot run here; else starts it with
  // CONNECTION LIMIT kCap and the settings of ServerSettings().
  void SetUp() override;
  void TearDown() override;

  // Extra server settings ("name=value"); a fixture derived for one setting overrides it.
  virtual std::vector<std::string> ServerSettings() const { return {}; }

  // One [[targets]] table, target "pg", for a config file.
  static std::string TargetToml(int limit, int reserve, const std::string& quarantine,
                                const std::string& extra_keys = "");
  // Starts a single-machine broker whose config holds `targets_toml`; ASSERTs it got ready.
  testing::BrokerProcess& StartBroker(const std::string& targets_toml);

  // Starts `dsb-load --server <role url> --instances 3 --threads 8 --duration <seconds>`
  // through `broker` (nullptr: --no-broker), plus `extra` flags.
  std::unique_ptr<LoadRun> StartLoad(testing::BrokerProcess* broker, double seconds,
                                     const std::vector<std::string>& extra = {});
  // The same with `instances` instances through the broker at `socket` (target "pg").
  std::unique_ptr<LoadRun> StartLoadOn(const std::filesystem::path& socket, int instances,
                                       double seconds, const std::vector<std::string>& extra = {});
  // Waits for the run's end and returns its summary (ASSERT-style failure when missing).
  boost::json::object FinishLoad(LoadRun& run);
  // The pid of instance `index` of a running load (from its stderr), or -1 after 10 s.
  pid_t InstancePid(const LoadRun& run, int index);

  // Waits until PostgreSQL counts at least `sessions` of the role (warm-up), at most 20 s.
  bool WaitForSessions(int sessions);
  // Samples pg_stat_activity for `window` and counts the server's refusals over it.
  Judgement Judge(std::chrono::milliseconds window);

  // Starts three brokers ws1..ws3 in cluster mode (ws1 coordinates; term and drain 1 s;
  // system_slots 1, floor 0 each) sharing `targets_toml` (target "pg"), and waits until the
  // coordinator has left learning mode. The brokers are brokers_[0..2].
  void StartCluster(const std::string& targets_toml);

  tools_test::ScratchDir dir_;
  testing::PgServer server_;
  std::vector<std::unique_ptr<testing::BrokerProcess>> brokers_;
};

}  // namespace dsb::realserver

#endif  // DSB_TESTS_REALSERVER_PG_FIXTURE_H_
