// Issue 9: a group member may use the broker and read what it shows, but not
// change what every DigiScope instance may use. set-limit and confirm-stopped
// are for root and the broker's own user (issue 11 adds an admin group).
// A real broker, dsbctl run as a throw-away member of broker.group.
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "tests/support/broker_process.h"
#include "tests/support/os_users.h"
#include "tests/support/unique_name.h"

namespace dsb::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using std::chrono::milliseconds;

TEST(AdminRights, AGroupMemberReadsButCannotChangeTheLimitAndRootCan) {
  std::string why;
  auto group = TempGroup::Create(&why);
  if (!group) GTEST_SKIP() << why;
  auto member = TempUser::Create(&why, {group->gid()});
  ASSERT_NE(member, nullptr) << why;
  ScratchDir scratch("dsbadmin");
  ASSERT_EQ(::chmod(scratch.path().c_str(), 0755), 0);  // members reach the socket's folder
  const fs::path run = scratch.path() / "run";
  fs::create_directory(run);
  BrokerProcess broker(run, UniqueName("adm").substr(0, 12), {BrokerTarget{"exch01", 8}},
                       "group = \"" + group->name() + "\"\n");
  ASSERT_TRUE(broker.Start()) << broker.log();
  const std::string dsbctl = BinPath("dsbctl");
  const std::string socket = broker.socket().string();
  auto as_member = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {dsbctl, "--socket", socket});
    return RunProgramAs(member->identity(), args, milliseconds(10000));
  };

  const Outcome status = as_member({"status"});
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_THAT(status.output, HasSubstr("exch01"));

  const Outcome set = as_member({"set-limit", "exch01", "3"});
  EXPECT_NE(set.exit_code, 0) << set.output;
  EXPECT_THAT(set.output, HasSubstr("only root or the broker's user"));
  EXPECT_TRUE(broker.WaitForLog("refused set_limit from uid " + std::to_string(member->uid())))
      << broker.log();
  const Outcome after = as_member({"status", "--json"});
  ASSERT_EQ(after.exit_code, 0) << after.output;
  EXPECT_THAT(after.output, Not(HasSubstr("\"operator\""))) << "the member's change took effect";

  const Outcome root_set = RunProgramAs(Identity{0, 0, {}},
                                        {dsbctl, "--socket", socket, "set-limit", "exch01", "3"},
                                        milliseconds(10000));
  EXPECT_EQ(root_set.exit_code, 0) << root_set.output;
  const Outcome root_after = as_member({"status", "--json"});
  EXPECT_THAT(root_after.output, HasSubstr("\"operator\"")) << root_after.output;
}

}  // namespace
}  // namespace dsb::testing
