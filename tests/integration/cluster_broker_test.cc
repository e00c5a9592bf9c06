// One broker in cluster mode (its own coordinator): how registrations are
// admitted, kept across a restart, and quarantined. Regression tests for
// review findings: owner ids are per target; a clean stop must not remove a
// segment a registered client still uses; an idle client is re-adopted after
// a restart and no newcomer takes its system slot meanwhile; a dead client's
// registration stays counted for the quarantine.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "dsb/client.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/ports.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using testing::BrokerProcess;

class ClusterBrokerTest : public ::testing::Test {
 protected:
  void Write(const std::string& quarantine, const std::string& extra = "") {
    const auto dir = scratch_.path();
    std::ofstream(dir / "key") << std::string(64, 'b');
    ::chmod((dir / "key").c_str(), 0600);
    std::ofstream(dir / "cluster.toml")
        << "[cluster]\ncoordinator = \"solo\"\nterm = \"1s\"\ndrain = \"1s\"\n"
        << "[[brokers]]\nid = \"solo\"\naddress = \"" << port_.address()
        << "\"\nsystem_slots = 1\nfloor = 2\n"
        << "[[targets]]\nname = \"exA\"\nlimit = 8\nquarantine = \"" << quarantine << "\"\n"
        << target_keys_
        << "[[targets]]\nname = \"exB\"\nlimit = 8\nquarantine = \"" << quarantine << "\"\n"
        << target_keys_;
    prefix_ = testing::UniqueName("cb");
    std::ofstream(dir / "solo.toml") << "[broker]\nid = \"solo\"\nsocket = \""
                                     << (dir / "solo.sock").string() << "\"\nshm_prefix = \""
                                     << prefix_ << "\"\ncluster = \"cluster.toml\"\n"
                                     << "key_file = \"key\"\nadopt_grace = \"2s\"\n"
                                     << (extra.find("state_dir") == std::string::npos
                                             ? "state_dir = \"" + (dir / "state").string() + "\"\n"
                                             : std::string())
                                     << extra;
    broker_ = std::make_unique<BrokerProcess>(
        dir / "solo.toml", dir / "solo.sock",
        std::vector<std::string>{"dsb-" + prefix_ + "-exA", "dsb-" + prefix_ + "-exB"});
  }
  std::unique_ptr<Client> Connect(const std::string& target, std::error_code& ec,
                                  std::string* msg = nullptr,
                                  std::chrono::milliseconds timeout = 5s) {
    ClientOptions o;
    o.socket_path = (scratch_.path() / "solo.sock").string();
    o.target = target;
    o.connect_timeout = timeout;
    return Client::Connect(o, ec, msg);
  }
  testing::ScratchDir scratch_;
  // The cluster listener's port, held until the test ends (the broker binds it with SO_REUSEADDR).
  testing::PortReservation port_;
  std::string prefix_;
  std::string target_keys_;  // more keys for each [[targets]] table
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(ClusterBrokerTest, SystemSlotsAreCountedPerTarget) {
  Write("0s");
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  std::error_code ec;
  auto a = Connect("exA", ec);
  ASSERT_TRUE(a) << ec.message();
  auto b = Connect("exB", ec);  // same owner id 1 in its own segment
  ASSERT_TRUE(b) << ec.message();
  std::string msg;
  auto a2 = Connect("exA", ec, &msg, 200ms);
  EXPECT_FALSE(a2);
  EXPECT_EQ(ec, Errc::kTooManyClients) << msg;
  b.reset();  // exB's client leaving must not free exA's registration
  auto a3 = Connect("exA", ec, &msg, 200ms);
  EXPECT_FALSE(a3);
  EXPECT_EQ(ec, Errc::kTooManyClients) << msg;
}

TEST_F(ClusterBrokerTest, IdleClientSurvivesARestartAndKeepsItsSystemSlot) {
  Write("0s");
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  std::error_code ec;
  auto idle = Connect("exA", ec);
  ASSERT_TRUE(idle) << ec.message();
  broker_->Stop(SIGTERM);  // clean stop with a registered (idle) client
  struct stat st {};
  EXPECT_EQ(::stat(("/dev/shm/dsb-" + prefix_ + "-exA").c_str(), &st), 0)
      << "segment removed while a client was registered";
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  ASSERT_TRUE(broker_->WaitForLog("adopted owner")) << broker_->log();
  // A newcomer waits out the grace, then finds the system slot taken.
  std::string msg;
  auto newcomer = Connect("exA", ec, &msg, 8s);
  EXPECT_FALSE(newcomer);
  EXPECT_EQ(ec, Errc::kTooManyClients) << msg;
  // The idle client still works: it can take its floor.
  Permit p = idle->Acquire(5s, ec);
  EXPECT_FALSE(ec) << ec.message();
}

TEST_F(ClusterBrokerTest, DeadClientsRegistrationStaysCountedDuringQuarantine) {
  Write("3s");
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  const pid_t child = ::fork();
  if (child == 0) {
    std::error_code e;
    auto c = Connect("exA", e);
    if (!c) _exit(3);
    ::kill(::getpid(), SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child could not register";
  ASSERT_TRUE(broker_->WaitForLog("gone")) << broker_->log();
  std::error_code ec;
  std::string msg;
  auto again = Connect("exA", ec, &msg, 200ms);
  EXPECT_FALSE(again);
  EXPECT_EQ(ec, Errc::kTooManyClients);
  EXPECT_NE(msg.find("1 of them a dead client's, in quarantine"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("cooling"), std::string::npos) << msg;
  std::unique_ptr<Client> later;  // admitted once the quarantine (3 s) ends
  EXPECT_TRUE(testing::WaitUntil([&] { return (later = Connect("exA", ec, &msg, 200ms)) != nullptr; },
                                 20s))
      << "quarantine never ended: " << msg;
}

// A clean exit's registration only cools (release_cooldown): the refusal
// must say so, not "in quarantine" (an operator would wait for the quarantine).
TEST_F(ClusterBrokerTest, CleanExitsRegistrationCoolsAndTheRefusalSaysSo) {
  target_keys_ = "release_cooldown = \"6s\"\n";  // long enough to be seen on a slow machine
  Write("1h");  // were it quarantined, no registration would pass within the test
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  std::error_code ec;
  auto first = Connect("exA", ec);
  ASSERT_TRUE(first) << ec.message();
  first.reset();  // says goodbye holding nothing: a clean exit
  ASSERT_TRUE(broker_->WaitForLog("left cleanly")) << broker_->log();
  std::string msg;
  auto again = Connect("exA", ec, &msg, 200ms);
  EXPECT_FALSE(again);
  EXPECT_EQ(ec, Errc::kTooManyClients) << msg;
  EXPECT_NE(msg.find("1 of them a client's that exited cleanly, cooling for release_cooldown "
                     "(6000 ms; retry after it)"),
            std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("quarantine"), std::string::npos) << msg;
  std::unique_ptr<Client> later;  // admitted once the cooldown (6 s) ends
  EXPECT_TRUE(testing::WaitUntil([&] { return (later = Connect("exA", ec, &msg, 200ms)) != nullptr; },
                                 20s))
      << "the cooldown never ended: " << msg;
}

std::int64_t Field(const boost::json::object& o, const char* key) {
  return o.contains(key) ? o.at(key).to_number<std::int64_t>() : -1;
}

// Status of target `name` and this broker's row of the ledger for it.
boost::json::object TargetRow(const std::filesystem::path& socket, const std::string& name) {
  boost::json::object s = testing::AskBroker(socket, local_protocol::Op::kStatus);
  if (!s.contains("targets")) return {};
  for (auto& t : s["targets"].as_array()) {
    if (t.as_object().at("name").as_string() == name) return t.as_object();
  }
  return {};
}

// What this broker last reported as held (B2) for `name`, as the ledger has it.
std::int64_t ReportedHeld(const std::filesystem::path& socket, const std::string& name) {
  boost::json::object l = testing::AskBroker(socket, local_protocol::Op::kLeases);
  const boost::json::value* ledger = l.if_contains("ledger");
  if (ledger == nullptr || !ledger->is_object()) return -1;
  const boost::json::value* targets = ledger->as_object().if_contains("targets");
  if (targets == nullptr || !targets->is_array()) return -1;
  for (const auto& t : targets->as_array()) {
    if (t.as_object().at("target").as_string() != name) continue;
    for (const auto& b : t.as_object().at("brokers").as_array()) {
      if (b.as_object().at("broker").as_string() == "solo") return Field(b.as_object(), "held");
    }
  }
  return -1;
}

// After a machine restart (segments gone) that followed an unclean end, the
// sessions of the earlier clients may still be open on the server: the slots
// are held back in quarantine, reported to the coordinator as held (B2), and
// the registration is counted.
TEST_F(ClusterBrokerTest, UncleanEndThenLostSegmentsReportsTheHeldBackSlots) {
  Write("1h", "state_dir = \"" + (scratch_.path() / "state").string() + "\"\n");
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  std::error_code ec;
  {
    auto a = Connect("exA", ec);
    ASSERT_TRUE(a) << ec.message();
    std::vector<Permit> permits;  // floor 2 + a lease of at least 2
    for (int i = 0; i < 4; ++i) {
      permits.push_back(a->Acquire(20s, ec));
      ASSERT_FALSE(ec) << ec.message();
    }
    broker_->Stop(SIGKILL);
  }
  broker_->RemoveSegments();  // what a reboot does to /dev/shm
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  EXPECT_NE(broker_->log().find("ended without a clean stop"), std::string::npos)
      << broker_->log();
  const std::int64_t held_back = Field(TargetRow(broker_->socket(), "exA"), "quarantined");
  EXPECT_GE(held_back, 4) << "4 slots were in use before; state file: " << [&] {
    std::ifstream in(scratch_.path() / "state" / "solo.state");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }() << broker_->log();
  // R1: the restarted broker admits no registration until the coordinator
  // accepted it; then the held-back registration fills its one system slot.
  std::string msg;
  auto c = Connect("exA", ec, &msg, 200ms);
  EXPECT_FALSE(c);
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        const auto r = testing::AskBroker(broker_->socket(), local_protocol::Op::kLeases);
        const auto* agent = r.if_contains("agent");
        return agent != nullptr && agent->is_object() &&
               agent->as_object().at("verdict").as_string() == "accepted";
      },
      20s))
      << "never accepted: " << broker_->log();
  c = Connect("exA", ec, &msg, 200ms);
  EXPECT_FALSE(c);
  EXPECT_EQ(ec, Errc::kTooManyClients) << msg;
  EXPECT_TRUE(testing::WaitUntil(
      [&] { return ReportedHeld(broker_->socket(), "exA") >= held_back; }, 10s))
      << "the coordinator never saw the held-back slots: "
      << boost::json::serialize(testing::AskBroker(broker_->socket(), local_protocol::Op::kLeases));
}

}  // namespace
}  // namespace dsb
