// Three brokers in cluster mode (one coordinates) share role `digiscope`'s CONNECTION LIMIT 12
// on one PostgreSQL: one dsb-load instance of 8 threads per broker, confirmed close, no
// reserve. PostgreSQL's log is the judge.
#include <cstdio>

#include "tests/realserver/pg_fixture.h"

namespace dsb::realserver {
namespace {

using PgCluster = PgFixture;

TEST_F(PgCluster, ThreeBrokersWithConfirmedCloseAreNeverRefused) {
  StartCluster(TargetToml(kCap, 0, "0s"));
  ASSERT_EQ(brokers_.size(), 3u);
  const double seconds = PgSeconds(20);
  const std::uint64_t before = server_.RoleRefusals();
  std::vector<std::unique_ptr<LoadRun>> loads;
  for (auto& b : brokers_) loads.push_back(StartLoadOn(b->socket(), 1, seconds));
  ASSERT_TRUE(WaitForSessions(kCap - 3)) << server_.Log();
  const Judgement j =
      Judge(std::chrono::milliseconds(static_cast<long>(std::max(1.0, seconds - 4.0) * 1000)));
  double actions = 0, seen = 0;
  for (auto& l : loads) {
    const auto load = FinishLoad(*l);
    actions += Num(load, "actions");
    seen += Num(load, "refusals");
  }
  const std::uint64_t refusals = server_.RoleRefusals() - before;
  std::printf(
      "three brokers, confirmed close: PostgreSQL refused %llu over %.0f s; sessions "
      "sampled %llu times: peak %d, mean %.2f of 12 (utilization %.3f); dsb-load: "
      "actions %.0f, refusals seen %.0f\n",
      static_cast<unsigned long long>(refusals), seconds,
      static_cast<unsigned long long>(j.sessions.samples), j.sessions.peak, j.sessions.mean,
      j.utilization, actions, seen);
  EXPECT_EQ(refusals, 0u) << server_.Log();
  EXPECT_GT(actions, 0);
}

}  // namespace
}  // namespace dsb::realserver
