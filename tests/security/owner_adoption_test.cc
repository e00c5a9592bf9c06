// Issue 9: after a broker restart only the uid that registered an owner may
// adopt it. The owner id is in every held word of the segment and the
// instance id in its header, both readable by any group member: without the
// broker's record (broker/owner_records.h) user B could re-register user A's
// owner first, and when B closed, A's slots were reclaimed while A's sessions
// were still open. A real broker restarted with SIGKILL; A and B are
// throw-away members of broker.group.
#include <signal.h>
#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <string>

#include "common/local_frame.h"
#include "shm/slot_table.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/os_users.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace dsb::testing {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using ::testing::HasSubstr;
using std::chrono::milliseconds;

// The target's row of the broker's status (empty if unavailable).
json::object TargetRow(const fs::path& socket) {
  const json::object s = AskBroker(socket, local_protocol::Op::kStatus);
  if (const json::value* ts = s.if_contains("targets"); ts != nullptr && ts->is_array()) {
    for (const json::value& t : ts->as_array()) {
      if (t.as_object().at("name").as_string() == "exch01") return t.as_object();
    }
  }
  return {};
}

std::int64_t Num(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr ? v->to_number<std::int64_t>() : -1;
}

TEST(OwnerAdoption, AnotherGroupMemberCannotAdoptAnOwnerTheRealClientStillCan) {
  std::string why;
  auto group = TempGroup::Create(&why);
  if (!group) GTEST_SKIP() << why;
  auto a = TempUser::Create(&why, {group->gid()});
  ASSERT_NE(a, nullptr) << why;
  auto b = TempUser::Create(&why, {group->gid()});
  ASSERT_NE(b, nullptr) << why;
  ScratchDir scratch("dsbadopt");
  ASSERT_EQ(::chmod(scratch.path().c_str(), 0755), 0);  // members reach the socket's folder
  const fs::path run = scratch.path() / "run";
  fs::create_directory(run);
  BrokerProcess broker(run, UniqueName("ado").substr(0, 12), {BrokerTarget{"exch01", 6}},
                       "group = \"" + group->name() + "\"\nadopt_grace = \"4s\"\n");
  ASSERT_TRUE(broker.Start()) << broker.log();
  const std::string peer = BinPath("adopt_peer");
  const std::string socket = broker.socket().string();

  ProcessAs holder(a->identity(), {peer, "hold", socket, "exch01"});
  ASSERT_TRUE(holder.WaitForOutput("holding owner=", milliseconds(15000))) << holder.output();
  const std::string out = holder.output();
  const auto at = out.find("holding owner=") + std::string("holding owner=").size();
  const std::uint32_t owner = static_cast<std::uint32_t>(std::stoul(out.substr(at)));
  const std::int64_t held_before = Num(TargetRow(broker.socket()), "held");
  ASSERT_EQ(held_before, 2) << "A's system slot and its action slot";
  const fs::path owners_file = fs::path(socket + ".owners");
  ASSERT_TRUE(fs::exists(owners_file));
  EXPECT_EQ(fs::status(owners_file).permissions() & fs::perms::others_all, fs::perms::none);

  // What B can read from the segment: the instance id in its header.
  auto table = shm::SlotTable::Attach(broker.segment("exch01"));
  ASSERT_TRUE(table.ok()) << table.status().message();
  const std::string instance = std::to_string((*table)->instance_id());

  // A is frozen so that B gets to the new broker first (the reported race).
  ASSERT_EQ(::kill(holder.pid(), SIGSTOP), 0);
  broker.Stop(SIGKILL);
  ASSERT_TRUE(broker.Start()) << broker.log();
  ASSERT_TRUE(broker.WaitForLog("adopted existing segment")) << broker.log();

  const json::object hijack{{"op", "register"},      {"version", kLocalProtocolVersion},
                            {"target", "exch01"},    {"name", "hijack"},
                            {"owner", owner},        {"instance", instance}};
  const Outcome refused =
      RunProgramAs(b->identity(), {peer, "ask", socket, json::serialize(hijack)},
                   milliseconds(15000));
  ASSERT_EQ(refused.exit_code, 0) << refused.output;
  EXPECT_THAT(refused.output, HasSubstr("\"ok\":false"));
  EXPECT_THAT(refused.output, HasSubstr("not_registered"));
  EXPECT_THAT(refused.output, HasSubstr("owner " + std::to_string(owner) + " of target 'exch01' "
                                        "was registered by uid " + std::to_string(a->uid())));
  EXPECT_THAT(refused.output, HasSubstr("uid " + std::to_string(b->uid())));
  EXPECT_TRUE(broker.WaitForLog("refused adoption by pid")) << broker.log();
  EXPECT_EQ(broker.log().find("(hijack) after broker restart"), std::string::npos)
      << broker.log();
  EXPECT_EQ(Num(TargetRow(broker.socket()), "pending_adoption"), 1) << "B's attempt took it";

  // A's own client re-registers and keeps its slot past the grace.
  ASSERT_EQ(::kill(holder.pid(), SIGCONT), 0);
  EXPECT_TRUE(broker.WaitForLog("adopted owner " + std::to_string(owner) + " (pid " +
                                std::to_string(holder.pid())))
      << broker.log();
  // Every owner came back, so the grace ends silently: wait for the status.
  ASSERT_TRUE(WaitUntil(
      [&] {
        const json::object st = AskBroker(broker.socket(), local_protocol::Op::kStatus);
        const json::value* g = st.if_contains("adoption_grace");
        return g != nullptr && g->is_bool() && !g->as_bool();
      },
      milliseconds(20000)))
      << broker.log();
  const json::object after = TargetRow(broker.socket());
  EXPECT_EQ(Num(after, "held"), held_before) << json::serialize(after);
  EXPECT_EQ(Num(after, "clients"), 1) << json::serialize(after);
  EXPECT_EQ(broker.log().find("owner(s) did not come back"), std::string::npos) << broker.log();
  EXPECT_EQ(broker.log().find("slot(s) reclaimed"), std::string::npos) << broker.log();
}

}  // namespace
}  // namespace dsb::testing
