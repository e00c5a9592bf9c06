// Client library against a real dsb-broker process: registration, the slot
// fast path, death of a client (kill -9), quarantine, broker restart with
// adoption, credentials, and bad input on the admin socket.
#include "dsb/client.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/local_frame.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/wait.h"
#include "tests/support/unique_name.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using testing::BrokerProcess;
using testing::BrokerTarget;
using testing::ScratchDir;
using testing::UniqueName;
namespace json = boost::json;

json::object Ask(const std::filesystem::path& socket, const json::object& req) {
  json::object r = testing::AskBroker(socket, req);
  EXPECT_FALSE(r.empty()) << "no answer from the broker at " << socket;
  return r;
}

json::object TargetStatus(const BrokerProcess& b, const std::string& target = "exch01") {
  json::object s = Ask(b.socket(), {{"op", "status"}});
  for (auto& t : s["targets"].as_array()) {
    if (t.as_object().at("name").as_string() == target) return t.as_object();
  }
  return {};
}

std::int64_t Num(const json::object& o, const char* key) {
  return o.contains(key) ? o.at(key).to_number<std::int64_t>() : -1;
}

class ClientTest : public ::testing::Test {
 protected:
  void StartBroker(std::vector<BrokerTarget> targets = {BrokerTarget{}},
                   const std::string& extra = "") {
    prefix_ = UniqueName("ct");
    broker_ = std::make_unique<BrokerProcess>(dir_.path(), prefix_, std::move(targets), extra);
    ASSERT_TRUE(broker_->Start()) << broker_->log();
  }
  std::unique_ptr<Client> Connect(const std::string& target = "exch01") {
    ClientOptions o;
    o.socket_path = broker_->socket().string();
    o.target = target;
    o.name = "test";
    o.connect_timeout = 10s;
    std::error_code ec;
    std::string msg;
    auto c = Client::Connect(o, ec, &msg);
    EXPECT_TRUE(c) << msg;
    return c;
  }
  ScratchDir dir_;
  std::string prefix_;
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(ClientTest, ConnectChargesTheSystemSlotAndPermitsFillTheRest) {
  StartBroker({BrokerTarget{"exch01", 5}});
  auto c = Connect();
  ASSERT_TRUE(c);
  EXPECT_EQ(Num(TargetStatus(*broker_), "held_system"), 1);
  std::vector<Permit> permits;
  std::error_code ec;
  for (int i = 0; i < 4; ++i) {
    permits.push_back(c->TryAcquire(ec));
    ASSERT_FALSE(ec) << ec.message();
  }
  Permit none = c->TryAcquire(ec);
  EXPECT_EQ(ec, Errc::kCapacityExhausted);
  EXPECT_FALSE(none.valid());
  Permit timed = c->Acquire(20ms, ec);
  EXPECT_EQ(ec, Errc::kTimeout);
  EXPECT_EQ(Num(TargetStatus(*broker_), "held"), 5);
  permits.pop_back();
  Permit again = c->TryAcquire(ec);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(again.valid());
  EXPECT_FALSE(again.ShouldYield());
}

TEST_F(ClientTest, UnknownTargetIsAClearError) {
  StartBroker();
  ClientOptions o;
  o.socket_path = broker_->socket().string();
  o.target = "exch99";
  std::error_code ec;
  std::string msg;
  EXPECT_EQ(Client::Connect(o, ec, &msg), nullptr);
  EXPECT_EQ(ec, Errc::kUnknownTarget);
  EXPECT_NE(msg.find("exch99"), std::string::npos);
  EXPECT_NE(msg.find("exch01"), std::string::npos) << msg;
}

TEST_F(ClientTest, NoBrokerIsBrokerUnavailableNamingTheSocket) {
  ClientOptions o;
  o.socket_path = (dir_.path() / "absent.sock").string();
  o.target = "exch01";
  o.connect_timeout = 300ms;  // Connect retries an absent broker until then
  std::error_code ec;
  std::string msg;
  EXPECT_EQ(Client::Connect(o, ec, &msg), nullptr);
  EXPECT_EQ(ec, Errc::kBrokerUnavailable);
  EXPECT_NE(msg.find("absent.sock"), std::string::npos) << msg;
}

TEST_F(ClientTest, SystemSlotWaitsWhenTheTargetIsFull) {
  StartBroker({BrokerTarget{"exch01", 2}});
  auto a = Connect();
  std::error_code ec;
  Permit p = a->TryAcquire(ec);
  ASSERT_FALSE(ec);
  ClientOptions o;
  o.socket_path = broker_->socket().string();
  o.target = "exch01";
  o.connect_timeout = 50ms;
  std::string msg;
  EXPECT_EQ(Client::Connect(o, ec, &msg), nullptr);
  EXPECT_EQ(ec, Errc::kTimeout);
  EXPECT_NE(msg.find("system connection"), std::string::npos) << msg;
}

// A child process registers, takes `n` permits, reports through a pipe, then
// blocks until killed.
pid_t SpawnHolder(const std::string& socket, int n, int quarantine_pipe_wr = -1) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ClientOptions o;
    o.socket_path = socket;
    o.target = "exch01";
    o.name = "holder";
    std::error_code ec;
    auto c = Client::Connect(o, ec);
    if (!c) _exit(3);
    std::vector<Permit> held;
    for (int i = 0; i < n; ++i) {
      held.push_back(c->Acquire(5s, ec));
      if (ec) _exit(4);
    }
    char ok = 'k';
    if (::write(fds[1], &ok, 1) != 1) _exit(5);
    (void)quarantine_pipe_wr;
    for (;;) ::pause();
  }
  ::close(fds[1]);
  char c = 0;
  EXPECT_EQ(::read(fds[0], &c, 1), 1) << "holder child failed";
  ::close(fds[0]);
  return pid;
}

TEST_F(ClientTest, KilledClientsSlotsComeBackAtOnce) {
  StartBroker({BrokerTarget{"exch01", 6}});
  auto me = Connect();
  const pid_t child = SpawnHolder(broker_->socket().string(), 4);  // 1 system + 4 actions
  EXPECT_EQ(Num(TargetStatus(*broker_), "held"), 6);
  std::error_code ec;
  Permit none = me->TryAcquire(ec);
  ASSERT_EQ(ec, Errc::kCapacityExhausted);
  std::thread killer([child] { ::kill(child, SIGKILL); });
  // Blocked until the broker sees the death and frees the child's slots.
  std::vector<Permit> mine;
  for (int i = 0; i < 5; ++i) {
    mine.push_back(me->Acquire(20s, ec));
    ASSERT_FALSE(ec) << ec.message();
  }
  killer.join();
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(broker_->WaitForLog("5 slot(s) reclaimed")) << broker_->log();
  EXPECT_EQ(Num(TargetStatus(*broker_), "held"), 6);
}

TEST_F(ClientTest, ReclaimedSlotsStayQuarantined) {
  StartBroker({BrokerTarget{"exch01", 4, 0, "1500ms"}});
  const pid_t child = SpawnHolder(broker_->socket().string(), 2);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(broker_->WaitForLog("quarantined for 1500 ms")) << broker_->log();
  const auto start = std::chrono::steady_clock::now();
  json::object t = TargetStatus(*broker_);
  auto me = Connect();  // takes the 1 free slot as system slot
  std::error_code ec;
  Permit p = me->Acquire(20s, ec);  // only a quarantined slot can serve this
  ASSERT_FALSE(ec);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1000ms);
  // 3 slots were reclaimed; right after, none of them is usable.
  EXPECT_EQ(Num(t, "held"), 0);
  EXPECT_GE(Num(t, "quarantined"), 1);
}

TEST_F(ClientTest, CancelTokenStopsAWaitingAcquire) {
  StartBroker({BrokerTarget{"exch01", 1}});
  auto c = Connect();
  CancelToken token;
  std::error_code ec;
  std::thread t([&] {
    Permit p = c->Acquire(60s, ec, &token);
  });
  ASSERT_TRUE(testing::WaitUntil([&] { return Num(TargetStatus(*broker_), "waiting") == 1; }));
  token.Cancel();
  t.join();
  EXPECT_EQ(ec, Errc::kCancelled);
}

TEST_F(ClientTest, BrokerRestartAdoptsLiveClientsAndKeepsTheirSlots) {
  StartBroker({BrokerTarget{"exch01", 5}}, "adopt_grace = \"10s\"\n");
  // The client's own word that it re-registered: the broker logs the adoption
  // before the client has read the reply, and a client destroyed before that
  // has no broker to say goodbye to (its end is then taken for a death).
  std::mutex mu;
  std::condition_variable cv;
  bool re_registered = false;
  SetLogSink([&](LogLevel, std::string_view m) {
    if (m.find("re-registered") == std::string_view::npos) return;
    std::lock_guard lock(mu);
    re_registered = true;
    cv.notify_all();
  });
  struct ResetSink {
    ~ResetSink() { SetLogSink({}); }
  } reset_sink;
  auto c = Connect();
  std::error_code ec;
  std::vector<Permit> permits;
  for (int i = 0; i < 3; ++i) permits.push_back(c->TryAcquire(ec));
  ASSERT_FALSE(ec);
  broker_->Stop(SIGKILL);
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  ASSERT_TRUE(broker_->WaitForLog("adopted owner")) << broker_->log();
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 20s, [&] { return re_registered; })) << broker_->log();
  }
  json::object t = TargetStatus(*broker_);
  EXPECT_EQ(Num(t, "held"), 4);  // never two holders: the 4 stay taken
  auto other = Connect();        // the last free slot becomes its system slot
  ASSERT_TRUE(other);
  Permit none = other->TryAcquire(ec);
  EXPECT_EQ(ec, Errc::kCapacityExhausted);
  for (auto& p : permits) EXPECT_FALSE(p.ShouldYield());
  permits.clear();
  Permit p = other->TryAcquire(ec);
  EXPECT_FALSE(ec);
  // The adopted client's end is still seen by the new broker (a clean close here).
  c.reset();
  EXPECT_TRUE(broker_->WaitForLog("left cleanly")) << broker_->log();
  EXPECT_EQ(Num(TargetStatus(*broker_), "clients"), 1);
}

TEST_F(ClientTest, OwnersThatDoNotReturnWithinGraceAreFreed) {
  StartBroker({BrokerTarget{"exch01", 4}}, "adopt_grace = \"1s\"\n");
  const pid_t child = SpawnHolder(broker_->socket().string(), 2);
  broker_->Stop(SIGKILL);
  ::kill(child, SIGKILL);  // dies while no broker watches
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  json::object during = TargetStatus(*broker_);
  EXPECT_EQ(Num(during, "held"), 3);  // kept until the grace ends
  EXPECT_EQ(Num(during, "pending_adoption"), 1);
  ASSERT_TRUE(broker_->WaitForLog("adoption grace over")) << broker_->log();
  json::object after = TargetStatus(*broker_);
  EXPECT_EQ(Num(after, "held"), 0);
  EXPECT_EQ(Num(after, "free"), 4);
}

TEST_F(ClientTest, PeerOfAnotherUidIsRefused) {
  StartBroker();
  ::chmod(dir_.path().c_str(), 0755);
  ::chmod(broker_->socket().c_str(), 0666);  // let it reach SO_PEERCRED
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(10);
    ClientOptions o;
    o.socket_path = broker_->socket().string();
    o.target = "exch01";
    std::error_code ec;
    std::string msg;
    auto c = Client::Connect(o, ec, &msg);
    _exit(!c && ec == Errc::kPermissionDenied && msg.find("uid 65534") != std::string::npos
              ? 0
              : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(broker_->WaitForLog("refused local peer")) << broker_->log();
  EXPECT_EQ(Num(TargetStatus(*broker_), "clients"), 0);
}

TEST_F(ClientTest, OversizedAndMalformedRequestsChangeNothing) {
  StartBroker();
  auto c = Connect();
  {
    auto fd = ConnectLocal(broker_->socket().string());
    ASSERT_TRUE(fd.ok());
    const std::string big = FrameHeader(10 * 1024 * 1024);
    ASSERT_EQ(::send(*fd, big.data(), big.size(), MSG_NOSIGNAL), 4);
    auto reply = ReadFrame(*fd, 10s);
    ASSERT_TRUE(reply.ok()) << reply.status().message();
    EXPECT_NE(reply->find("\"protocol\""), std::string::npos);
    EXPECT_EQ(ReadFrame(*fd, 10s).status().code(), Errc::kBrokerUnavailable);  // closed
    ::close(*fd);
  }
  for (std::string bad : {std::string("{not json"), std::string("[1,2]"),
                          std::string(R"({"op":42})"), std::string(R"({"op":"register"})"),
                          std::string(R"({"op":"register","target":"exch01","owner":"x"})"),
                          std::string(R"({"op":"register","target":"exch01","owner":99,"instance":"1"})"),
                          std::string("\0\0\0", 3)}) {
    auto fd = ConnectLocal(broker_->socket().string());
    ASSERT_TRUE(fd.ok());
    ASSERT_TRUE(WriteFrame(*fd, bad).ok());
    auto reply = ReadFrame(*fd, 10s);
    ASSERT_TRUE(reply.ok()) << bad;
    EXPECT_NE(reply->find("\"ok\":false"), std::string::npos) << bad << " -> " << *reply;
    ::close(*fd);
  }
  json::object t = TargetStatus(*broker_);
  EXPECT_EQ(Num(t, "held"), 1);
  EXPECT_EQ(Num(t, "clients"), 1);
}

TEST_F(ClientTest, CorruptSegmentStopsTheBrokerWithAClearError) {
  prefix_ = UniqueName("ct");
  BrokerProcess b(dir_.path(), prefix_, {BrokerTarget{}});
  {
    std::ofstream f("/dev/shm/" + b.segment("exch01"), std::ios::binary);
    f << std::string(100000, 'Z');
  }
  // The broker's own file (this test runs as the broker's user), closed to
  // others: trusted for adoption, so the contents are what gets refused.
  ASSERT_EQ(::chmod(("/dev/shm/" + b.segment("exch01")).c_str(), 0600), 0);
  std::string out;
  EXPECT_EQ(BrokerProcess::RunToExit(b.config_path(), &out), 1);
  EXPECT_NE(out.find(b.segment("exch01")), std::string::npos) << out;
  EXPECT_NE(out.find("wrong magic"), std::string::npos) << out;
}

TEST_F(ClientTest, BadConfigValueNamesFileKeyAndReason) {
  const auto path = dir_.path() / "bad.toml";
  std::ofstream(path) << "[broker]\nid = \"x\"\nsocket = \"/tmp/x.sock\"\nshm_prefix = \"x\"\n"
                         "[[targets]]\nname = \"exch01\"\nlimit = -3\n";
  std::string out;
  EXPECT_EQ(BrokerProcess::RunToExit(path, &out), 2);
  EXPECT_NE(out.find("bad.toml"), std::string::npos) << out;
  EXPECT_NE(out.find("targets[0].limit"), std::string::npos) << out;
}

TEST_F(ClientTest, SecondBrokerOnTheSameSocketIsRefused) {
  StartBroker();
  std::string out;
  EXPECT_NE(BrokerProcess::RunToExit(broker_->config_path(), &out), 0);
  EXPECT_NE(out.find("socket " + broker_->socket().string() + " is in use by another broker "
                     "(pid " + std::to_string(broker_->pid())),
            std::string::npos)
      << out;
}

// Same shm_prefix, another socket: without a lock the second broker would
// adopt the running broker's segment and, after its grace, free the slots of
// clients it never saw (two holders per slot). It must be refused before it
// touches the segment.
TEST_F(ClientTest, SecondBrokerSharingASegmentIsRefusedAndChangesNothing) {
  StartBroker({BrokerTarget{"exch01", 5}});
  auto c = Connect();
  ASSERT_TRUE(c);
  std::error_code ec;
  Permit p = c->TryAcquire(ec);
  ASSERT_FALSE(ec) << ec.message();
  ScratchDir other;
  const auto config = other.path() / "second.toml";
  std::ofstream(config) << "[broker]\nid = \"second\"\nsocket = \""
                        << (other.path() / "dsb.sock").string() << "\"\nshm_prefix = \""
                        << prefix_ << "\"\nadopt_grace = \"100ms\"\n"
                        << "[[targets]]\nname = \"exch01\"\nlimit = 5\n";
  // No segments listed: its clean-up must not remove the running broker's.
  BrokerProcess second(config, other.path() / "dsb.sock", {});
  EXPECT_FALSE(second.Start(10s)) << "a second broker ran on segment " << broker_->segment("exch01");
  const std::string log = second.log();
  EXPECT_NE(log.find("segment " + broker_->segment("exch01")), std::string::npos) << log;
  EXPECT_NE(log.find("pid " + std::to_string(broker_->pid())), std::string::npos) << log;
  EXPECT_EQ(log.find("adopted existing segment"), std::string::npos) << log;
  // The running broker and its client are untouched.
  json::object t = TargetStatus(*broker_);
  EXPECT_EQ(Num(t, "held"), 2);
  EXPECT_EQ(Num(t, "capacity"), 5);
  EXPECT_TRUE(p.valid());
  EXPECT_FALSE(p.ShouldYield());
  std::vector<Permit> more;
  for (int i = 0; i < 3; ++i) {
    more.push_back(c->TryAcquire(ec));
    EXPECT_FALSE(ec) << ec.message();
  }
  EXPECT_EQ(Num(TargetStatus(*broker_), "held"), 5);
  more.clear();
}

TEST_F(ClientTest, SocketFolderIsCreated) {
  prefix_ = UniqueName("ct");
  const auto socket = dir_.path() / "not" / "yet" / "dsb.sock";
  const auto config = dir_.path() / "b.toml";
  std::ofstream(config) << "[broker]\nid = \"b\"\nsocket = \"" << socket.string()
                        << "\"\nshm_prefix = \"" << prefix_
                        << "\"\n[[targets]]\nname = \"exch01\"\nlimit = 2\n";
  BrokerProcess b(config, socket, {"dsb-" + prefix_ + "-exch01"});
  ASSERT_TRUE(b.Start()) << b.log();
  EXPECT_TRUE(std::filesystem::exists(socket));
}

TEST_F(ClientTest, BrokerLockIsReleasedWhenTheBrokerIsKilled) {
  StartBroker();
  EXPECT_EQ(broker_->Stop(SIGKILL) & 0x7f, SIGKILL);
  // The kernel dropped the flock with the process: a new broker starts and
  // adopts the segment at once.
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  EXPECT_TRUE(broker_->WaitForLog("adopted existing segment", 5s)) << broker_->log();
}

// A machine restart wipes /dev/shm but not the server's sessions. With
// state_dir, a broker that finds no segment after an unclean end holds its
// earlier capacity back for the target's quarantine.
TEST_F(ClientTest, UncleanEndThenLostSegmentHoldsCapacityBackForTheQuarantine) {
  const std::string extra = "state_dir = \"" + (dir_.path() / "state").string() + "\"\n";
  StartBroker({BrokerTarget{"exch01", 4, 0, "3s"}}, extra);
  {
    auto c = Connect();
    ASSERT_TRUE(c);
    std::error_code ec;
    Permit p = c->TryAcquire(ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(broker_->Stop(SIGKILL) & 0x7f, SIGKILL);
  }
  broker_->RemoveSegments();  // what a reboot does to /dev/shm
  const auto before_start = std::chrono::steady_clock::now();
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  EXPECT_NE(broker_->log().find("ended without a clean stop"), std::string::npos)
      << broker_->log();
  json::object t = TargetStatus(*broker_);
  EXPECT_EQ(Num(t, "quarantined"), 4);
  EXPECT_EQ(Num(t, "free"), 0);
  // Registration needs the system slot: it waits for the quarantine to end.
  auto c = Connect();
  ASSERT_TRUE(c);
  EXPECT_GE(std::chrono::steady_clock::now() - before_start, 3s);
  EXPECT_EQ(Num(TargetStatus(*broker_), "quarantined"), 0);
}

// A clean close (dsb_close / ~Client) gives the system slot back, says goodbye, then closes
// the socket: the broker logs a departure, quarantines nothing, and its own next stop is
// clean. Before the goodbye the socket closed first and the broker took it for a death.
TEST_F(ClientTest, CleanCloseIsNotADeath) {
  const std::string extra = "state_dir = \"" + (dir_.path() / "state").string() + "\"\n";
  StartBroker({BrokerTarget{"exch01", 4, 0, "1h"}}, extra);
  {
    auto c = Connect();
    ASSERT_TRUE(c);
    std::error_code ec;
    Permit p = c->TryAcquire(ec);
    ASSERT_FALSE(ec) << ec.message();
  }  // permit released, then the client closed
  ASSERT_TRUE(broker_->WaitForLog("left cleanly")) << broker_->log();
  EXPECT_EQ(broker_->log().find(" gone; "), std::string::npos) << broker_->log();
  const json::object t = TargetStatus(*broker_);
  EXPECT_EQ(Num(t, "quarantined"), 0);
  EXPECT_EQ(Num(t, "held"), 0);
  EXPECT_EQ(broker_->Stop(SIGTERM), 0);
  EXPECT_NE(broker_->log().find("nothing held, segments removed"), std::string::npos)
      << broker_->log();
}

// An operator's limit survives a broker restart: with state_dir it is restored with its
// source; without, an adopted segment keeps the capacity the previous broker left (never
// raised back to the configured limit, which would send clients into refusals).
TEST_F(ClientTest, EffectiveLimitSurvivesABrokerRestart) {
  for (const bool with_state : {true, false}) {
    SCOPED_TRACE(with_state ? "with state_dir" : "without state_dir");
    const std::string extra =
        with_state ? "state_dir = \"" + (dir_.path() / "state").string() + "\"\n" : "";
    StartBroker({BrokerTarget{"exch01", 8}}, extra);
    json::object r = Ask(broker_->socket(), {{"op", "set_limit"}, {"target", "exch01"}, {"limit", 4}});
    ASSERT_TRUE(r.contains("ok") && r.at("ok").as_bool()) << json::serialize(r);
    auto c = Connect();  // holds the system slot: the segment is kept across the restart
    ASSERT_TRUE(c);
    ASSERT_EQ(broker_->Stop(SIGTERM), 0);
    ASSERT_TRUE(broker_->Start()) << broker_->log();
    const json::object t = TargetStatus(*broker_);
    EXPECT_EQ(Num(t, "limit"), 4) << json::serialize(t);
    EXPECT_EQ(Num(t, "capacity"), 4) << json::serialize(t);
    EXPECT_EQ(json::value_to<std::string>(t.at("limit_source")),
              with_state ? "operator" : "discovered");
    c.reset();
    broker_->Stop(SIGTERM);
  }
}

// A client killed with its system slot held is still a death: quarantined.
TEST_F(ClientTest, KilledClientIsStillADeathAfterGoodbyeExists) {
  StartBroker({BrokerTarget{"exch01", 4, 0, "1h"}});
  const pid_t child = SpawnHolder(broker_->socket().string(), 1);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(broker_->WaitForLog(" gone; ")) << broker_->log();
  EXPECT_EQ(broker_->log().find("left cleanly"), std::string::npos) << broker_->log();
  EXPECT_GE(Num(TargetStatus(*broker_), "quarantined"), 1);
}

TEST_F(ClientTest, CleanStopThenLostSegmentHoldsNothingBack) {
  const std::string extra = "state_dir = \"" + (dir_.path() / "state").string() + "\"\n";
  StartBroker({BrokerTarget{"exch01", 4, 0, "1h"}}, extra);
  EXPECT_EQ(broker_->Stop(SIGTERM), 0);
  EXPECT_NE(broker_->log().find("nothing held, segments removed"), std::string::npos)
      << broker_->log();
  broker_->RemoveSegments();
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  EXPECT_EQ(broker_->log().find("ended without a clean stop"), std::string::npos)
      << broker_->log();
  EXPECT_EQ(Num(TargetStatus(*broker_), "quarantined"), 0);
  std::error_code ec;
  auto c = Connect();
  ASSERT_TRUE(c);
  Permit p = c->TryAcquire(ec);
  EXPECT_FALSE(ec) << ec.message();
}

TEST_F(ClientTest, TwoBrokersWithTheSameIdAndStateDirAreRefused) {
  const auto state = dir_.path() / "state";
  StartBroker({BrokerTarget{}}, "state_dir = \"" + state.string() + "\"\n");
  ScratchDir other;
  const auto config = other.path() / "b.toml";
  const std::string other_prefix = UniqueName("ct");
  std::ofstream(config) << "[broker]\nid = \"" << prefix_ << "\"\nsocket = \""
                        << (other.path() / "dsb.sock").string() << "\"\nshm_prefix = \""
                        << other_prefix << "\"\nstate_dir = \"" << state.string() << "\"\n"
                        << "[[targets]]\nname = \"exch01\"\nlimit = 5\n";
  BrokerProcess second(config, other.path() / "dsb.sock", {"dsb-" + other_prefix + "-exch01"});
  EXPECT_FALSE(second.Start(10s)) << "two brokers share one state file";
  EXPECT_NE(second.log().find("state file " + (state / (prefix_ + ".state")).string()),
            std::string::npos)
      << second.log();
  EXPECT_NE(second.log().find("pid " + std::to_string(broker_->pid())), std::string::npos)
      << second.log();
}

TEST_F(ClientTest, UnwritableStateDirRefusesTheStart) {
  std::ofstream(dir_.path() / "plain-file") << "x";
  prefix_ = UniqueName("ct");
  broker_ = std::make_unique<BrokerProcess>(
      dir_.path(), prefix_, std::vector<BrokerTarget>{{"exch01", 4, 0, "1h"}},
      "state_dir = \"" + (dir_.path() / "plain-file" / "state").string() + "\"\n");
  std::string out;
  // 2: a config error a restart cannot fix (systemd's RestartPreventExitStatus=2).
  EXPECT_EQ(BrokerProcess::RunToExit(broker_->config_path(), &out), 2);
  // Refused naming the key and the component in the way (secure_fs.h).
  EXPECT_NE(out.find("broker.state_dir " + (dir_.path() / "plain-file" / "state").string() +
                     ": " + (dir_.path() / "plain-file").string() + " is a file, not a folder"),
            std::string::npos)
      << out;
  struct stat st {};
  EXPECT_NE(::stat(("/dev/shm/" + broker_->segment("exch01")).c_str(), &st), 0)
      << "a segment was made before the state could be written";
}

// A crash, then a config change of the segment's shape: the old segment is
// re-created because it showed nothing held; that is not a lost segment.
TEST_F(ClientTest, ReshapedSegmentAfterACrashHoldsNothingBack) {
  const std::string extra = "state_dir = \"" + (dir_.path() / "state").string() + "\"\n";
  StartBroker({BrokerTarget{"exch01", 4, 0, "1h"}}, extra);
  EXPECT_EQ(broker_->Stop(SIGKILL) & 0x7f, SIGKILL);
  std::string text;
  {
    std::ifstream in(broker_->config_path());
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(broker_->config_path()) << text << "slots = 80\n";
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  EXPECT_NE(broker_->log().find("re-creating it with 80 slots"), std::string::npos)
      << broker_->log();
  EXPECT_EQ(broker_->log().find("ended without a clean stop"), std::string::npos)
      << broker_->log();
  EXPECT_EQ(Num(TargetStatus(*broker_), "quarantined"), 0);
}

// A clean stop that keeps segments (quarantined slots) is not a clean end:
// if the machine then restarts, those sessions may still be open.
TEST_F(ClientTest, StopWithQuarantinedSlotsThenRebootHoldsBack) {
  const std::string extra = "state_dir = \"" + (dir_.path() / "state").string() + "\"\n";
  StartBroker({BrokerTarget{"exch01", 4, 0, "1h"}}, extra);
  const pid_t child = SpawnHolder(broker_->socket().string(), 2);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(broker_->WaitForLog("quarantined for")) << broker_->log();
  EXPECT_EQ(broker_->Stop(SIGTERM), 0);
  EXPECT_NE(broker_->log().find("segments kept"), std::string::npos) << broker_->log();
  broker_->RemoveSegments();  // the reboot
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  EXPECT_NE(broker_->log().find("ended without a clean stop"), std::string::npos)
      << broker_->log();
  EXPECT_EQ(Num(TargetStatus(*broker_), "quarantined"), 4);
}

// Restarting a broker must not restart the quarantines it finds: the segment
// records when they end.
TEST_F(ClientTest, BrokerRestartDoesNotExtendAQuarantine) {
  StartBroker({BrokerTarget{"exch01", 4, 0, "1h"}});
  const pid_t child = SpawnHolder(broker_->socket().string(), 2);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(broker_->WaitForLog("quarantined for")) << broker_->log();
  const auto reclaimed_by = std::chrono::steady_clock::now();  // the quarantine began before
  EXPECT_EQ(broker_->Stop(SIGTERM), 0);
  // The operator doubles the quarantine before the restart: a quarantine the
  // new broker restarted would end ~2h from now, one it kept ends by the record.
  std::string text;
  {
    std::ifstream in(broker_->config_path());
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto at = text.find("quarantine = \"1h\"");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, std::string("quarantine = \"1h\"").size(), "quarantine = \"2h\"");
  std::ofstream(broker_->config_path()) << text;
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  // Taken before the request: the broker's "now" is later, so what it has
  // left is at most the bound (taken after, the bound was short by the
  // request's time: failed by 1 ms once).
  const auto asked = std::chrono::steady_clock::now();
  json::object t = TargetStatus(*broker_);
  EXPECT_EQ(Num(t, "quarantined"), 3);  // the system slot and 2 actions
  const auto bound = std::chrono::ceil<std::chrono::milliseconds>(reclaimed_by + 1h - asked);
  EXPECT_LE(Num(t, "quarantine_left_ms"), bound.count() + 1)
      << "quarantine restarted at the broker restart";
  EXPECT_GT(Num(t, "quarantine_left_ms"), (1h - 1min) / 1ms);
}

TEST_F(ClientTest, DamagedStateFileAssumesTheWorst) {
  const auto state = dir_.path() / "state";
  std::filesystem::create_directories(state);
  prefix_ = UniqueName("ct");
  std::ofstream(state / (prefix_ + ".state")) << "{not json";
  broker_ = std::make_unique<BrokerProcess>(dir_.path(), prefix_,
                                            std::vector<BrokerTarget>{{"exch01", 4, 1, "1h"}},
                                            "state_dir = \"" + state.string() + "\"\n");
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  EXPECT_NE(broker_->log().find(prefix_ + ".state: not JSON"), std::string::npos)
      << broker_->log();
  EXPECT_EQ(Num(TargetStatus(*broker_), "quarantined"), 3);  // limit - reserve
}

TEST_F(ClientTest, SocketAndSegmentBelongToTheConfiguredGroup) {
  group* g = ::getgrnam("nogroup");
  if (g == nullptr) GTEST_SKIP() << "no group 'nogroup' on this machine";
  const gid_t gid = g->gr_gid;
  StartBroker({BrokerTarget{}}, "group = \"nogroup\"\n");
  struct stat sock {}, seg {};
  ASSERT_EQ(::stat(broker_->socket().c_str(), &sock), 0);
  ASSERT_EQ(::stat(("/dev/shm/" + broker_->segment("exch01")).c_str(), &seg), 0);
  EXPECT_EQ(sock.st_gid, gid);
  EXPECT_EQ(seg.st_gid, gid);
  EXPECT_EQ(sock.st_mode & 0777, 0660u);
  EXPECT_EQ(seg.st_mode & 0777, 0660u);
}

TEST_F(ClientTest, CApiProgramRuns) {
  StartBroker({BrokerTarget{"exch01", 3}});
  const testing::Outcome r = testing::RunProgram(
      {testing::BinPath("c_api_test_prog"), broker_->socket().string()}, 60s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// A broker whose one target ("exch01") has a release cooldown.
class CoolingClientTest : public ClientTest {
 protected:
  void StartCoolingBroker(int limit, const std::string& cooldown) {
    prefix_ = UniqueName("ctc");
    const auto socket = dir_.path() / (prefix_ + ".sock");
    const auto config = dir_.path() / (prefix_ + ".toml");
    std::ofstream f(config);
    f << "[broker]\nid = \"" << prefix_ << "\"\nsocket = \"" << socket.string()
      << "\"\nshm_prefix = \"" << prefix_ << "\"\n\n[[targets]]\nname = \"exch01\"\nlimit = "
      << limit << "\nreserve = 0\nquarantine = \"0s\"\nrelease_cooldown = \"" << cooldown
      << "\"\n"
      // The refusal reports below must not lower the limit.
      << "discover = false\n";
    f.close();
    broker_ = std::make_unique<BrokerProcess>(config, socket,
                                              std::vector<std::string>{"dsb-" + prefix_ + "-exch01"});
    ASSERT_TRUE(broker_->Start()) << broker_->log();
  }
};

TEST_F(CoolingClientTest, ReleasedSlotCoolsBeforeItCanBeTakenAgain) {
  StartCoolingBroker(2, "300ms");  // the system slot + 1 action slot
  auto c = Connect();
  ASSERT_TRUE(c);
  json::object st = TargetStatus(*broker_);
  EXPECT_EQ(Num(st, "release_cooldown_ms"), 300);
  EXPECT_EQ(Num(st, "cooling"), 0);
  std::error_code ec;
  Permit p = c->TryAcquire(ec);
  ASSERT_FALSE(ec) << ec.message();
  const auto released = std::chrono::steady_clock::now();
  p.Release();
  Permit again = c->TryAcquire(ec);
  EXPECT_EQ(ec, Errc::kCapacityExhausted);  // not reusable at once
  EXPECT_FALSE(again.valid());
  st = TargetStatus(*broker_);
  EXPECT_EQ(Num(st, "cooling"), 1);
  EXPECT_EQ(Num(st, "held_action"), 0);
  // The event: a waiting Acquire returns when the cooldown ends.
  Permit after = c->Acquire(10s, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_GE(std::chrono::steady_clock::now() - released, 300ms);
  EXPECT_EQ(Num(TargetStatus(*broker_), "cooling"), 0);
  // The destructor keeps the cooldown too.
  { Permit moved = std::move(after); }
  EXPECT_EQ(Num(TargetStatus(*broker_), "cooling"), 1);
}

TEST_F(CoolingClientTest, ReleaseConfirmedFreesTheSlotAtOnce) {
  StartCoolingBroker(2, "1h");
  auto c = Connect();
  ASSERT_TRUE(c);
  std::error_code ec;
  Permit p = c->TryAcquire(ec);
  ASSERT_FALSE(ec) << ec.message();
  p.ReleaseConfirmed();
  EXPECT_FALSE(p.valid());
  p.ReleaseConfirmed();  // idempotent
  Permit again = c->TryAcquire(ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(again.valid());
  EXPECT_EQ(Num(TargetStatus(*broker_), "cooling"), 0);
}

TEST_F(CoolingClientTest, RefusalReportNamingThePermitIsAcceptedThenReleasedConfirmed) {
  StartCoolingBroker(2, "1h");
  auto c = Connect();
  ASSERT_TRUE(c);
  std::error_code ec;
  Permit p = c->TryAcquire(ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_FALSE(c->ReportSessionLimit(p, "53300 too many connections for role"));
  EXPECT_FALSE(c->ReportSessionLimit(Permit{}, "no permit: the plain report"));
  EXPECT_FALSE(c->ReportSessionLimit("the old overload"));
  EXPECT_EQ(Num(TargetStatus(*broker_), "session_limit_reports"), 3);
  p.ReleaseConfirmed();
  EXPECT_TRUE(c->TryAcquire(ec).valid());
}

TEST_F(CoolingClientTest, CApiProgramRunsWithACooldown) {
  StartCoolingBroker(3, "300ms");
  const testing::Outcome r = testing::RunProgram(
      {testing::BinPath("c_api_test_prog"), broker_->socket().string(), "cooldown"}, 60s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace dsb
