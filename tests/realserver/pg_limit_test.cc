// PostgreSQL, a server nobody here wrote, judges dsb: role `digiscope` has CONNECTION LIMIT 12;
// 3 dsb-load instances x 8 action threads (each instance also holds one system connection)
// open a connection per action, run `SELECT pg_sleep(hold)` and close it. The judge is
// PostgreSQL's own log ("too many connections for role", SQLSTATE 53300) and pg_stat_activity.
//
// DSB_PG_SECONDS sets the length of the long runs (default 30 s). For a long mode run the
// binary itself (DSB_PG_SECONDS=600 bin/pg_limit_test): CTest stops each test after 300 s.
#include <signal.h>

#include <cstdio>
#include <thread>

#include "tests/realserver/pg_fixture.h"

namespace dsb::realserver {
namespace {

using namespace std::chrono_literals;

constexpr double kWarmupS = 2.0;  // broker + 3 instances registered and connected

void Print(const char* what, const Judgement& j, const boost::json::object& load) {
  std::printf(
      "%s: PostgreSQL refused %llu; sessions sampled %llu times: peak %d, mean %.2f of 12 "
      "(utilization %.3f); dsb-load: actions %.0f (%.0f/s), refusals seen %.0f, errors %s\n",
      what, static_cast<unsigned long long>(j.refusals),
      static_cast<unsigned long long>(j.sessions.samples), j.sessions.peak, j.sessions.mean,
      j.utilization, Num(load, "actions"),
      Num(load, "actions") / std::max(Num(load, "elapsed_s"), 1e-9), Num(load, "refusals"),
      load.contains("errors") ? boost::json::serialize(load.at("errors")).c_str() : "?");
  std::fflush(stdout);
}

using PgLimit = PgFixture;

// The problem dsb solves, on a real server: 24 threads + 3 system connections want 27
// sessions of a role capped at 12.
TEST_F(PgLimit, WithoutDsbTheSameLoadIsRefusedByPostgres) {
  const double seconds = 5;
  const std::uint64_t before = server_.RoleRefusals();
  auto run = StartLoad(nullptr, seconds);
  // Awaited, not assumed: the first refusal in PostgreSQL's log. (Waiting to see all 12
  // sessions at one sample instead failed on a loaded CI box: the 5 s load can end before
  // a poll of pg_stat_activity happens to catch the role at its cap.)
  const bool refused =
      tools_test::WaitUntil([&] { return server_.RoleRefusals() > before; }, 20s);
  const Judgement j = Judge(std::chrono::milliseconds(static_cast<long>((seconds - 2) * 1000)));
  const auto load = FinishLoad(*run);
  Print("no dsb", j, load);
  EXPECT_TRUE(refused) << "PostgreSQL refused nothing: the load did not exceed the cap\n"
                       << server_.Log();
  // No bound on the sampled peak: pg_stat_activity can show 13 here. An exiting backend leaves
  // the process array (what the role limit counts) before its pg_stat_activity entry goes, so
  // the view briefly lists one backend more than the server admits. The log is the judge.
}

// One broker, limit = 12, no reserve, confirmed close (the default): PostgreSQL refuses nobody
// over the whole run, warm-up and end included.
TEST_F(PgLimit, OneBrokerWithConfirmedCloseIsNeverRefused) {
  testing::BrokerProcess& broker = StartBroker(TargetToml(kCap, 0, "0s"));
  ASSERT_TRUE(broker.running()) << broker.log();
  const double seconds = PgSeconds(30);
  const std::uint64_t before = server_.RoleRefusals();
  auto run = StartLoad(&broker, seconds, {"--close", "confirmed"});
  ASSERT_TRUE(WaitForSessions(kCap - 2)) << server_.Log();
  const Judgement j = Judge(
      std::chrono::milliseconds(static_cast<long>(std::max(1.0, seconds - kWarmupS - 1.0) * 1000)));
  const auto load = FinishLoad(*run);
  const std::uint64_t refusals = server_.RoleRefusals() - before;
  Print("one broker, confirmed close", j, load);
  EXPECT_EQ(refusals, 0u) << "PostgreSQL refused sessions dsb handed out; log:\n" << server_.Log();
  EXPECT_EQ(Num(load, "refusals"), 0);
  EXPECT_GT(Num(load, "actions"), 0);
  // Utilization is printed, not asserted: it depends on the machine (libpq's connect is CPU
  // work on 2 shared cores). docs/realserver.md has the measured figures.
}

// The same with PQfinish then release: PostgreSQL still counts the backend for a moment after
// the close, so the next thread's connect can be refused at held <= 12. Printed, not asserted
// (it depends on timing): it shows what the confirmed close fixes.
TEST_F(PgLimit, PlainCloseShowsWhyTheConfirmIsNeeded) {
  testing::BrokerProcess& broker = StartBroker(TargetToml(kCap, 0, "0s"));
  ASSERT_TRUE(broker.running()) << broker.log();
  const double seconds = PgSeconds(30);
  const std::uint64_t before = server_.RoleRefusals();
  auto run = StartLoad(&broker, seconds, {"--close", "plain"});
  ASSERT_TRUE(WaitForSessions(kCap - 2)) << server_.Log();
  const Judgement j = Judge(
      std::chrono::milliseconds(static_cast<long>(std::max(1.0, seconds - kWarmupS - 1.0) * 1000)));
  const auto load = FinishLoad(*run);
  std::printf("plain close: PostgreSQL refused %llu over the whole run of %.0f s\n",
              static_cast<unsigned long long>(server_.RoleRefusals() - before), seconds);
  Print("one broker, plain close", j, load);
}

// A dsb-load instance SIGKILLed while its backends are inside `pg_sleep`: the backends keep
// their slots on the server until the statement ends (PostgreSQL notices the dead client only
// when it next talks to it, or at client_connection_check_interval). Holds here are 50-200 ms,
// so a quarantine of 300 ms covers the longest statement plus the backend's exit; with it,
// PostgreSQL refuses nobody.
class PgKill : public PgFixture {
 protected:
  // Transactions the server committed in database postgres so far (0 if the query failed).
  std::uint64_t Commits() const {
    std::string value, error;
    if (!server_.Query("select xact_commit from pg_stat_database where datname = 'postgres'",
                       value, error)) {
      return 0;
    }
    return value.empty() ? 0 : std::stoull(value);
  }
  // Kills instance 0 once the load is warm; returns PostgreSQL's refusals from the kill to the
  // end of the run.
  std::uint64_t RefusalsAfterKill(const std::string& quarantine, boost::json::object& load,
                                  const std::string& hold_min = "50",
                                  const std::string& hold_max = "200") {
    testing::BrokerProcess& broker = StartBroker(TargetToml(kCap, 0, quarantine));
    EXPECT_TRUE(broker.running()) << broker.log();
    if (!broker.running()) return ~0ull;
    auto run = StartLoad(&broker, 8,
                         {"--hold-ms-min", hold_min, "--hold-ms-max", hold_max, "--backoff-ms-min",
                          "5", "--backoff-ms-max", "10"});
    const pid_t victim = InstancePid(*run, 0);
    EXPECT_GT(victim, 0);
    EXPECT_TRUE(WaitForSessions(kCap - 1)) << server_.Log();
    // The threads start together; after a few holds their statements are out of step, so
    // the victim's backends are at random points of their statements when it dies. Wait
    // until PostgreSQL has committed about 3 s worth of statements per thread (at least 3).
    const std::uint64_t per_thread = static_cast<std::uint64_t>(std::max(3, 3000 / std::stoi(hold_max)));
    const std::uint64_t start = Commits();
    EXPECT_TRUE(tools_test::WaitUntil([&] { return Commits() >= start + per_thread * 24; }, 60s))
        << server_.Log();
    const std::uint64_t before = server_.RoleRefusals();
    if (victim > 0) ::kill(victim, SIGKILL);
    EXPECT_TRUE(broker.WaitForLog("reclaimed")) << broker.log();
    load = FinishLoad(*run);
    return server_.RoleRefusals() - before;
  }
};

TEST_F(PgKill, QuarantineCoveringTheLongestStatementGivesNoRefusal) {
  boost::json::object load;
  const std::uint64_t refusals = RefusalsAfterKill("300ms", load);
  std::printf("SIGKILL with quarantine 300ms: PostgreSQL refused %llu after the kill\n",
              static_cast<unsigned long long>(refusals));
  EXPECT_EQ(refusals, 0u) << server_.Log();
}

// The contrast (printed, not asserted): with no quarantine the dead instance's slots go to the
// other instances while its backends still sleep.
TEST_F(PgKill, NoQuarantineLetsOthersInWhileTheDeadClientsBackendsStillCount) {
  boost::json::object load;
  const std::uint64_t refusals = RefusalsAfterKill("0s", load);
  std::printf("SIGKILL with quarantine 0s: PostgreSQL refused %llu after the kill\n",
              static_cast<unsigned long long>(refusals));
}

// With client_connection_check_interval set, a backend notices its dead client during a long
// statement (it polls the socket) and ends within the interval: the quarantine then needs to
// cover the interval, not the longest statement. Statements of 0.6-1.2 s, interval 100 ms,
// quarantine 300 ms: no refusal (without the setting 300 ms would be far too short).
class PgKillChecked : public PgKill {
 protected:
  std::vector<std::string> ServerSettings() const override {
    return {"client_connection_check_interval=100ms"};
  }
};

TEST_F(PgKillChecked, ConnectionCheckIntervalBoundsTheQuarantineForLongStatements) {
  boost::json::object load;
  const std::uint64_t refusals = RefusalsAfterKill("300ms", load, "600", "1200");
  std::printf(
      "SIGKILL, statements 0.6-1.2 s, client_connection_check_interval 100ms, "
      "quarantine 300ms: PostgreSQL refused %llu after the kill\n",
      static_cast<unsigned long long>(refusals));
  EXPECT_EQ(refusals, 0u) << server_.Log();
}

TEST_F(PgKill, LongStatementsOutliveAShortQuarantineWithoutTheCheckInterval) {
  boost::json::object load;
  const std::uint64_t refusals = RefusalsAfterKill("300ms", load, "600", "1200");
  std::printf(
      "SIGKILL, statements 0.6-1.2 s, no check interval, quarantine 300ms: "
      "PostgreSQL refused %llu after the kill\n",
      static_cast<unsigned long long>(refusals));
}

}  // namespace
}  // namespace dsb::realserver
