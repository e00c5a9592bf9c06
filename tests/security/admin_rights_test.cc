// Issue 9: a group member may use the broker and read what it shows, but not
// change what every DigiScope instance may use. set-limit and confirm-stopped
// are for root, the broker's own user and (issue 11) members of
// broker.admin_group.
// A real broker, dsbctl run as a throw-away member of broker.group.
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

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
  EXPECT_THAT(set.output, HasSubstr("only root, the broker's user"));
  EXPECT_THAT(set.output, HasSubstr("set broker.admin_group"));
  EXPECT_TRUE(broker.WaitForLog("refused set_limit from uid " + std::to_string(member->uid()) +
                                " (" + member->name() + ")"))
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

// Issue 11: broker.admin_group. A member of it (here through a supplementary
// group) may change the limit; a member of broker.group outside it reads but
// is refused with the op, who it is and the group to join; root may. Every
// change is logged with the uid, the user name and the pid.
TEST(AdminRights, AdminGroupMembersMayChangeTheLimitOtherGroupMembersOnlyRead) {
  std::string why;
  auto group = TempGroup::Create(&why);
  if (!group) GTEST_SKIP() << why;
  auto admins = TempGroup::Create(&why);
  ASSERT_NE(admins, nullptr) << why;
  auto admin = TempUser::Create(&why, {group->gid(), admins->gid()});
  ASSERT_NE(admin, nullptr) << why;
  auto reader = TempUser::Create(&why, {group->gid()});
  ASSERT_NE(reader, nullptr) << why;
  ScratchDir scratch("dsbadmg");
  ASSERT_EQ(::chmod(scratch.path().c_str(), 0755), 0);  // members reach the socket's folder
  const fs::path run = scratch.path() / "run";
  fs::create_directory(run);
  BrokerProcess broker(run, UniqueName("adg").substr(0, 12), {BrokerTarget{"exch01", 8}},
                       "group = \"" + group->name() + "\"\nadmin_group = \"" + admins->name() +
                           "\"\n");
  ASSERT_TRUE(broker.Start()) << broker.log();
  const std::string dsbctl = BinPath("dsbctl");
  const std::string socket = broker.socket().string();
  auto as = [&](const TempUser& who, std::vector<std::string> args) {
    args.insert(args.begin(), {dsbctl, "--socket", socket});
    return RunProgramAs(who.identity(), args, milliseconds(10000));
  };

  const Outcome read = as(*reader, {"status"});
  EXPECT_EQ(read.exit_code, 0) << read.output;
  EXPECT_THAT(read.output, HasSubstr("exch01"));
  const Outcome refused = as(*reader, {"set-limit", "exch01", "3"});
  EXPECT_NE(refused.exit_code, 0) << refused.output;
  EXPECT_THAT(refused.output, HasSubstr("set_limit changes what every client may use"));
  // The reply names the uid, not the account (no NSS lookup for a refusal).
  EXPECT_THAT(refused.output, HasSubstr("uid " + std::to_string(reader->uid()) + ", pid "));
  EXPECT_THAT(refused.output, HasSubstr("join admin group '" + admins->name() + "'"));
  const Outcome unchanged = as(*reader, {"status", "--json"});
  EXPECT_THAT(unchanged.output, Not(HasSubstr("\"operator\""))) << unchanged.output;

  const Outcome set = as(*admin, {"set-limit", "exch01", "3"});
  EXPECT_EQ(set.exit_code, 0) << set.output;
  EXPECT_TRUE(broker.WaitForLog("set_limit requested by uid " + std::to_string(admin->uid()) +
                                " (" + admin->name() + "), pid "))
      << broker.log();
  EXPECT_TRUE(broker.WaitForLog("member of admin group '" + admins->name() + "'")) << broker.log();
  const Outcome after = as(*reader, {"status", "--json"});
  EXPECT_THAT(after.output, HasSubstr("\"operator\"")) << after.output;

  const Outcome root_set = RunProgramAs(Identity{0, 0, {}},
                                        {dsbctl, "--socket", socket, "set-limit", "exch01", "5"},
                                        milliseconds(10000));
  EXPECT_EQ(root_set.exit_code, 0) << root_set.output;
  EXPECT_TRUE(broker.WaitForLog("set_limit requested by uid 0 (root)")) << broker.log();
}

// Issue 11: admin_group is reloaded by SIGHUP. A member of the new admin
// group is refused before the reload and may change the limit after it.
TEST(AdminRights, AnAdminGroupAddedBySighupGivesItsMembersTheRight) {
  std::string why;
  auto group = TempGroup::Create(&why);
  if (!group) GTEST_SKIP() << why;
  auto admins = TempGroup::Create(&why);
  ASSERT_NE(admins, nullptr) << why;
  auto admin = TempUser::Create(&why, {group->gid(), admins->gid()});
  ASSERT_NE(admin, nullptr) << why;
  ScratchDir scratch("dsbadmr");
  ASSERT_EQ(::chmod(scratch.path().c_str(), 0755), 0);  // members reach the socket's folder
  const fs::path run = scratch.path() / "run";
  fs::create_directory(run);
  const std::string group_key = "group = \"" + group->name() + "\"\n";
  BrokerProcess broker(run, UniqueName("adr").substr(0, 12), {BrokerTarget{"exch01", 8}},
                       group_key);
  ASSERT_TRUE(broker.Start()) << broker.log();
  const std::string dsbctl = BinPath("dsbctl");
  const std::string socket = broker.socket().string();
  auto set_limit = [&] {
    return RunProgramAs(admin->identity(), {dsbctl, "--socket", socket, "set-limit", "exch01", "3"},
                        milliseconds(10000));
  };
  const Outcome before = set_limit();
  EXPECT_NE(before.exit_code, 0) << before.output;
  EXPECT_THAT(before.output, HasSubstr("set broker.admin_group"));

  // Add admin_group to the file (written aside, then renamed over it).
  std::string text;
  {
    std::ifstream in(broker.config_path());
    std::stringstream s;
    s << in.rdbuf();
    text = s.str();
  }
  text.replace(text.find(group_key), group_key.size(),
               group_key + "admin_group = \"" + admins->name() + "\"\n");
  const fs::path tmp = broker.config_path().string() + ".new";
  std::ofstream(tmp) << text;
  fs::rename(tmp, broker.config_path());
  ASSERT_EQ(::kill(broker.pid(), SIGHUP), 0);
  ASSERT_TRUE(broker.WaitForLog("applied: admin_group: none -> \"" + admins->name() + "\""))
      << broker.log();

  const Outcome after = set_limit();
  EXPECT_EQ(after.exit_code, 0) << after.output;
  EXPECT_TRUE(broker.WaitForLog("set_limit requested by uid " + std::to_string(admin->uid())))
      << broker.log();
}

}  // namespace
}  // namespace dsb::testing
