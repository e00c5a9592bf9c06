// The throw-away users the security suites are built on: made, switched to,
// and removed again.
#include "tests/support/os_users.h"

#include <grp.h>
#include <pwd.h>

#include <gtest/gtest.h>

namespace dsb::testing {
namespace {

using std::chrono::milliseconds;

TEST(OsUsers, AChildRunsAsTheUserWithItsGroupsAndTheUserGoesAway) {
  std::string why;
  auto group = TempGroup::Create(&why);
  if (!group) GTEST_SKIP() << why;
  std::string user_name;
  {
    auto user = TempUser::Create(&why, {group->gid()});
    ASSERT_NE(user, nullptr) << why;
    user_name = user->name();
    ASSERT_NE(::getpwnam(user_name.c_str()), nullptr);
    const Outcome o = RunProgramAs(user->identity(), {"/usr/bin/id"}, milliseconds(10000));
    ASSERT_EQ(o.exit_code, 0) << o.output;
    EXPECT_NE(o.output.find("uid=" + std::to_string(user->uid()) + "("), std::string::npos)
        << o.output;
    EXPECT_NE(o.output.find(std::to_string(group->gid()) + "(" + group->name() + ")"),
              std::string::npos)
        << o.output;
  }
  EXPECT_EQ(::getpwnam(user_name.c_str()), nullptr) << user_name << " was not removed";
}

TEST(OsUsers, ALongRunningProcessIsStoppedByPidAndItsOutputRead) {
  std::string why;
  auto user = TempUser::Create(&why);
  if (!user) GTEST_SKIP() << why;
  ProcessAs p(user->identity(), {"/bin/sh", "-c", "echo ready; exec sleep 30"});
  ASSERT_GT(p.pid(), 0);
  ASSERT_TRUE(p.WaitForOutput("ready", milliseconds(10000))) << p.output();
  EXPECT_EQ(p.Wait(milliseconds(50)), -1);  // still running
  EXPECT_EQ(p.Stop(SIGTERM), 128 + SIGTERM);
}

TEST(OsUsers, ATimedOutProgramIsKilled) {
  std::string why;
  auto user = TempUser::Create(&why);
  if (!user) GTEST_SKIP() << why;
  const Outcome o =
      RunProgramAs(user->identity(), {"/bin/sleep", "30"}, milliseconds(300));
  EXPECT_TRUE(o.timed_out);
  EXPECT_EQ(o.exit_code, 128 + SIGKILL);
}

}  // namespace
}  // namespace dsb::testing
