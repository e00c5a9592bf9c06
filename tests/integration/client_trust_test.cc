// Issue 9: clients (and dsbctl) believe only the real broker, and their
// timeouts hold whatever the broker or another client does.
//
// An impostor (tests/integration/fake_broker.cc) listens at the socket path,
// run as a throw-away user who owns the socket's folder (the user who renamed
// the real socket away): the client and dsbctl refuse it by its SO_PEERCRED
// uid, send it nothing and take no slot. A listener that is trusted but hands
// out a segment owned by someone else, or open to others, is refused too. A
// real root broker with a client that is a member of its group works.
// Timing: Connect and Acquire return by their timeouts (plus a bound no slow
// machine reaches) while a SIGSTOPped process holds the queue mutex, when the
// mutex word is garbage, and when the listener never answers or never
// accepts.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/local_frame.h"
#include "dsb/client.h"
#include "shm/segment_layout.h"
#include "shm/slot_table.h"
#include "tests/support/segment_tamper.h"
#include "tests/support/broker_process.h"
#include "tests/support/os_users.h"
#include "tests/support/unique_name.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using testing::BinPath;
using testing::BrokerProcess;
using testing::BrokerTarget;
using testing::Identity;
using testing::ProcessAs;
using testing::RunProgramAs;
using testing::ScratchDir;
using testing::TempGroup;
using testing::TempUser;
using testing::UniqueName;
namespace json = boost::json;
using Ms = std::chrono::duration<double, std::milli>;

// A bound on top of a timeout that only a wedged call exceeds: a loaded
// 2-core CI box is late by milliseconds, not by 1.5 s.
constexpr auto kSlack = 1500ms;

Identity Root() { return Identity{0, 0, {}}; }

struct Timed {
  std::unique_ptr<Client> client;
  std::error_code ec;
  std::string message;
  double ms = 0;
};

Timed ConnectTimed(const std::string& socket, std::chrono::milliseconds timeout,
                   const std::string& broker_user = "") {
  ClientOptions o;
  o.socket_path = socket;
  o.target = "exch01";
  o.name = "trust-test";
  o.connect_timeout = timeout;
  o.broker_user = broker_user;
  Timed t;
  const auto start = std::chrono::steady_clock::now();
  t.client = Client::Connect(o, t.ec, &t.message);
  t.ms = Ms(std::chrono::steady_clock::now() - start).count();
  return t;
}

// Slots held in `segment`, read directly (root may map any segment).
shm::Counts SegmentCounts(const std::string& segment) {
  auto t = shm::SlotTable::Attach(segment);
  EXPECT_TRUE(t.ok()) << t.status().message();
  return t.ok() ? (*t)->Count() : shm::Counts{};
}

// Sends one request straight to the listener (no trust check: the test is
// the attacker's accomplice here) so the fake prints "received <op>": once
// that line is in its output, everything it printed before has been read.
void Mark(const std::string& socket, ProcessAs& fake, const std::string& op) {
  auto fd = ConnectLocal(socket);
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  ASSERT_TRUE(WriteFrame(*fd, json::serialize(json::object{{"op", op}})).ok());
  (void)ReadFrame(*fd, 5000ms);
  ::close(*fd);
  ASSERT_TRUE(fake.WaitForOutput("received " + op, 20s)) << fake.output();
}

class ClientTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Other users must reach folders below the scratch folder.
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  }
  void TearDown() override {
    for (const auto& s : segments_) (void)shm::SlotTable::Remove(s);
  }
  std::string NewSegment() {
    segments_.push_back("dsb-" + UniqueName("fake") + "-exch01");
    return segments_.back();
  }
  // A folder owned by `uid` (mode 0755) for a socket of its own.
  std::filesystem::path FolderOf(uid_t uid, gid_t gid) {
    auto f = dir_.path() / UniqueName("sock");
    EXPECT_EQ(::mkdir(f.c_str(), 0755), 0);
    EXPECT_EQ(::chown(f.c_str(), uid, gid), 0);
    return f;
  }
  std::unique_ptr<TempUser> MakeUser() {
    std::string why;
    if (!testing::CanSwitchUsers(&why)) return nullptr;
    auto u = TempUser::Create(&why);
    EXPECT_TRUE(u) << why;
    return u;
  }

  ScratchDir dir_;
  std::vector<std::string> segments_;
};

TEST_F(ClientTrustTest, AClientAndDsbctlRefuseABrokerRunByAnotherUserAndSendItNothing) {
  std::string why;
  if (!testing::CanSwitchUsers(&why)) GTEST_SKIP() << why;
  auto mallory = MakeUser();
  ASSERT_TRUE(mallory);
  const auto folder = FolderOf(mallory->uid(), mallory->gid());
  const std::string socket = (folder / "dsb.sock").string();
  const std::string segment = NewSegment();
  ProcessAs fake(mallory->identity(), {BinPath("fake_broker"), "--socket", socket, "--mode",
                                       "register", "--segment", segment});
  ASSERT_TRUE(fake.WaitForOutput("fake broker ready", 20s)) << fake.output();

  // The client: refused at once (not retried until the timeout), named.
  Timed t = ConnectTimed(socket, 5000ms);
  EXPECT_FALSE(t.client);
  EXPECT_EQ(t.ec, Errc::kPermissionDenied) << t.message;
  EXPECT_LT(t.ms, 2000) << "an untrusted broker is refused, not retried";
  EXPECT_NE(t.message.find(socket), std::string::npos) << t.message;
  EXPECT_NE(t.message.find("uid " + std::to_string(mallory->uid()) + " (" + mallory->name() + ")"),
            std::string::npos)
      << t.message;
  EXPECT_NE(t.message.find("DSB_BROKER_USER"), std::string::npos) << t.message;
  std::printf("client: %s\n", t.message.c_str());

  // dsbctl: refuses too, for a read and for an admin command.
  const auto status = RunProgramAs(Root(), {BinPath("dsbctl"), "--socket", socket, "status"}, 20s);
  EXPECT_FALSE(status.timed_out);
  EXPECT_NE(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("refusing the broker at socket " + socket), std::string::npos)
      << status.output;
  EXPECT_NE(status.output.find("--broker-user"), std::string::npos) << status.output;
  const auto set = RunProgramAs(
      Root(), {BinPath("dsbctl"), "--socket", socket, "set-limit", "exch01", "1"}, 20s);
  EXPECT_NE(set.exit_code, 0) << set.output;
  std::printf("dsbctl: %s", status.output.c_str());

  // Nothing reached the impostor and no slot was taken in its segment.
  Mark(socket, fake, "ping");
  EXPECT_EQ(fake.output().find("received register"), std::string::npos) << fake.output();
  EXPECT_EQ(fake.output().find("received status"), std::string::npos) << fake.output();
  EXPECT_EQ(fake.output().find("received set_limit"), std::string::npos) << fake.output();
  const shm::Counts c = SegmentCounts(segment);
  EXPECT_EQ(c.held_system + c.held_action, 0u);

  // The check is what refused it: naming the user trusts it (its segment is
  // its own, 0660), through the option and through DSB_BROKER_USER.
  Timed trusted = ConnectTimed(socket, 5000ms, mallory->name());
  ASSERT_TRUE(trusted.client) << trusted.message;
  EXPECT_EQ(SegmentCounts(segment).held_system, 1u);
  trusted.client.reset();
  // A DigiScope run as another user (not root; in mallory's group, so it
  // could open the segment once it trusts her): refused, then trusted
  // through DSB_BROKER_USER.
  auto alice = TempUser::Create(&why, {mallory->gid()});
  ASSERT_TRUE(alice) << why;
  const std::vector<std::string> client_argv = {BinPath("trust_client"), socket, "exch01", "5000"};
  const auto refused = RunProgramAs(alice->identity(), client_argv, 30s);
  EXPECT_EQ(refused.exit_code, 3) << refused.output;
  EXPECT_NE(refused.output.find("error permission_denied: refusing the broker at socket " +
                                socket),
            std::string::npos)
      << refused.output;
  EXPECT_NE(refused.output.find("not as root or this process's uid " +
                                std::to_string(alice->uid()) + " (" + alice->name() + ")"),
            std::string::npos)
      << refused.output;
  const auto via_env = RunProgramAs(alice->identity(), client_argv, 30s,
                                    {"DSB_BROKER_USER=" + mallory->name()});
  EXPECT_EQ(via_env.exit_code, 0) << via_env.output;
  EXPECT_NE(via_env.output.find("acquired slot="), std::string::npos) << via_env.output;
  const auto named = RunProgramAs(Root(), {BinPath("dsbctl"), "--socket", socket, "--json", "status"}, 20s,
                                  {"DSB_BROKER_USER=" + std::to_string(mallory->uid())});
  EXPECT_EQ(named.exit_code, 0) << named.output;
  EXPECT_TRUE(fake.WaitForOutput("received status", 20s)) << fake.output();
}

// The default broker user (DSB_DEFAULT_BROKER_USER, compiled in; the seam is
// ResolveBrokerTrust's default_user): a broker run as a user of that name is
// trusted without DSB_BROKER_USER or broker_user; a default that names no user
// adds nothing, and a broker of any other user is still refused.
TEST_F(ClientTrustTest, ABrokerRunAsTheDefaultBrokerUserIsTrustedIfThatUserExists) {
  std::string why;
  if (!testing::CanSwitchUsers(&why)) GTEST_SKIP() << why;
  ASSERT_EQ(::unsetenv(kBrokerUserEnv), 0);
  auto dsb_user = MakeUser();  // stands for "dsb": a user root made
  ASSERT_TRUE(dsb_user);
  const auto folder = FolderOf(dsb_user->uid(), dsb_user->gid());
  const std::string socket = (folder / "dsb.sock").string();
  ProcessAs fake(dsb_user->identity(), {BinPath("fake_broker"), "--socket", socket, "--mode",
                                        "silent"});
  ASSERT_TRUE(fake.WaitForOutput("fake broker ready", 20s)) << fake.output();
  const auto connect = [&](std::string_view default_user) {
    auto trust = ResolveBrokerTrust("", "broker_user", "name it", default_user);
    EXPECT_TRUE(trust.ok()) << trust.status().message();
    auto c = ConnectBroker(socket, *trust, std::chrono::steady_clock::now() + 10s);
    if (c.ok()) ::close(c->fd);
    return c.ok() ? Status::Ok() : c.status();
  };

  // Named as the default: trusted, with nothing else named.
  EXPECT_TRUE(connect(dsb_user->name()).ok());
  // A default that is no user of this machine: refused, nothing added.
  Status none = connect("no-such-user-dsb9");
  EXPECT_EQ(none.code(), Errc::kPermissionDenied) << none.message();
  EXPECT_NE(none.message().find("(no broker user is named)"), std::string::npos) << none.message();
  EXPECT_EQ(none.message().find("default broker user"), std::string::npos) << none.message();
  // The default is another user that exists: this broker is still refused,
  // and the message says whom it would have trusted.
  auto other = MakeUser();
  ASSERT_TRUE(other);
  Status refused = connect(other->name());
  EXPECT_EQ(refused.code(), Errc::kPermissionDenied) << refused.message();
  EXPECT_NE(refused.message().find("the default broker user uid " + std::to_string(other->uid()) +
                                   " (" + other->name() + ")"),
            std::string::npos)
      << refused.message();
  std::printf("other default: %s\n", refused.message().c_str());
  // Empty default: none.
  auto empty = ResolveBrokerTrust("", "broker_user", "name it", "");
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->default_uid);
}

TEST_F(ClientTrustTest, ABrokerUserThatIsNoUserIsRefusedNamingIt) {
  Timed t = ConnectTimed("/nonexistent/dsb.sock", 1000ms, "no-such-user-dsb9");
  EXPECT_EQ(t.ec, Errc::kInvalidArgument) << t.message;
  EXPECT_NE(t.message.find("ClientOptions::broker_user 'no-such-user-dsb9'"), std::string::npos)
      << t.message;
}

TEST_F(ClientTrustTest, ASegmentNotOwnedByTheBrokerOrOpenToOthersIsRefused) {
  std::string why;
  if (!testing::CanSwitchUsers(&why)) GTEST_SKIP() << why;
  auto other = MakeUser();
  ASSERT_TRUE(other);
  struct Case {
    const char* what;
    std::vector<std::string> extra;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"owned by another user", {"--segment-owner", std::to_string(other->uid())},
       "is owned by uid " + std::to_string(other->uid())},
      {"open to others", {"--segment-mode", "0666"}, "with mode 0666"},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.what);
    const auto folder = FolderOf(0, 0);
    const std::string socket = (folder / "dsb.sock").string();
    const std::string segment = NewSegment();
    std::vector<std::string> argv = {BinPath("fake_broker"), "--socket", socket, "--mode",
                                     "register",            "--segment", segment};
    argv.insert(argv.end(), k.extra.begin(), k.extra.end());
    ProcessAs fake(Root(), argv);  // trusted by uid: root
    ASSERT_TRUE(fake.WaitForOutput("fake broker ready", 20s)) << fake.output();
    Timed t = ConnectTimed(socket, 5000ms);
    EXPECT_FALSE(t.client);
    EXPECT_EQ(t.ec, Errc::kSegmentInvalid) << t.message;
    EXPECT_NE(t.message.find(segment), std::string::npos) << t.message;
    EXPECT_NE(t.message.find(k.expect), std::string::npos) << t.message;
    std::printf("%s: %s\n", k.what, t.message.c_str());
    const shm::Counts c = SegmentCounts(segment);
    EXPECT_EQ(c.held_system + c.held_action, 0u);
  }
}

TEST_F(ClientTrustTest, AGroupMemberUsesTheRealRootBroker) {
  std::string why;
  if (!testing::CanSwitchUsers(&why)) GTEST_SKIP() << why;
  auto group = TempGroup::Create(&why);
  ASSERT_TRUE(group) << why;
  auto member = TempUser::Create(&why, {}, group.get());
  ASSERT_TRUE(member) << why;
  const std::string prefix = UniqueName("trust");
  BrokerProcess broker(dir_.path(), prefix, {BrokerTarget{"exch01", 4}},
                       "group = \"" + group->name() + "\"");
  ASSERT_TRUE(broker.Start()) << broker.log();
  const auto out = RunProgramAs(member->identity(),
                                {BinPath("trust_client"), broker.socket().string(), "exch01",
                                 "10000"},
                                30s);
  EXPECT_FALSE(out.timed_out);
  EXPECT_EQ(out.exit_code, 0) << out.output << "\n" << broker.log();
  EXPECT_NE(out.output.find("connected owner="), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("acquired slot="), std::string::npos) << out.output;
  broker.Stop();
  broker.RemoveSegments();
}

// After a broker restart the client re-registers under the same rule: while
// an impostor holds the socket path it is sent nothing (the client keeps its
// slots and keeps trying); the real broker, once back, adopts it.
TEST_F(ClientTrustTest, ReRegistrationAfterABrokerRestartSendsAnImpostorNothing) {
  std::string why;
  if (!testing::CanSwitchUsers(&why)) GTEST_SKIP() << why;
  auto mallory = MakeUser();
  ASSERT_TRUE(mallory);
  const auto folder = FolderOf(0, 0);
  BrokerProcess broker(folder, UniqueName("rereg"), {BrokerTarget{"exch01", 5}},
                       "adopt_grace = \"10s\"\n");
  ASSERT_TRUE(broker.Start()) << broker.log();
  const std::string socket = broker.socket().string();
  Timed c = ConnectTimed(socket, 10000ms);
  ASSERT_TRUE(c.client) << c.message;
  std::error_code ec;
  Permit held = c.client->TryAcquire(ec);
  ASSERT_TRUE(held.valid()) << ec.message();
  broker.Stop(SIGKILL);
  // Mallory gets the folder and listens at the path.
  ASSERT_EQ(::chown(folder.c_str(), mallory->uid(), mallory->gid()), 0);
  ::unlink(socket.c_str());
  const std::string segment = NewSegment();
  {
    ProcessAs fake(mallory->identity(), {BinPath("fake_broker"), "--socket", socket, "--mode",
                                         "register", "--segment", segment});
    ASSERT_TRUE(fake.WaitForOutput("fake broker ready", 20s)) << fake.output();
    // The client's reconnect loop connects (every 100 ms) and hangs up.
    ASSERT_TRUE(fake.WaitForOutput("accepted a connection", 20s)) << fake.output();
    ASSERT_TRUE(fake.WaitForOutput("accepted a connection\naccepted a connection", 20s))
        << fake.output();
    Mark(socket, fake, "ping");
    EXPECT_EQ(fake.output().find("received register"), std::string::npos) << fake.output();
    const shm::Counts k = SegmentCounts(segment);
    EXPECT_EQ(k.held_system + k.held_action, 0u);
    EXPECT_FALSE(held.ShouldYield());
    fake.Stop(SIGKILL);
  }
  ::unlink(socket.c_str());
  ASSERT_EQ(::chown(folder.c_str(), 0, 0), 0);
  ASSERT_TRUE(broker.Start()) << broker.log();
  ASSERT_TRUE(broker.WaitForLog("adopted owner")) << broker.log();
  EXPECT_FALSE(held.ShouldYield());
  Permit more = c.client->Acquire(5000ms, ec);
  EXPECT_TRUE(more.valid()) << ec.message();
  more.Release();
  held.Release();
  c.client.reset();
  broker.Stop();
  broker.RemoveSegments();
}

// Closing a client while it re-registers with a listener that never answers
// does not wait for that attempt (5 s) nor for a goodbye nobody can take.
TEST_F(ClientTrustTest, ClosingAClientDuringAReRegistrationReturnsPromptly) {
  const auto folder = FolderOf(0, 0);
  BrokerProcess broker(folder, UniqueName("close"), {BrokerTarget{"exch01", 5}});
  ASSERT_TRUE(broker.Start()) << broker.log();
  const std::string socket = broker.socket().string();
  Timed c = ConnectTimed(socket, 10000ms);
  ASSERT_TRUE(c.client) << c.message;
  broker.Stop(SIGKILL);
  ::unlink(socket.c_str());
  ProcessAs fake(Root(), {BinPath("fake_broker"), "--socket", socket, "--mode", "silent"});
  ASSERT_TRUE(fake.WaitForOutput("fake broker ready", 20s)) << fake.output();
  ASSERT_TRUE(fake.WaitForOutput("accepted a connection", 20s)) << fake.output();
  const auto start = std::chrono::steady_clock::now();
  c.client.reset();
  const double ms = Ms(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(ms, 1000) << "closing waited for the re-registration attempt";
  std::printf("closing during a re-registration: %.1f ms\n", ms);
  fake.Stop(SIGKILL);
  broker.RemoveSegments();
}

// Writes `word` into the first four bytes of the segment's queue mutex.
void WriteMutexWord(const std::string& segment, std::uint32_t word) {
  const int fd = ::shm_open(("/" + segment).c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  void* base = ::mmap(nullptr, shm::HeaderBytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(base, MAP_FAILED);
  std::memcpy(&static_cast<shm::SegmentHeader*>(base)->queue_mutex, &word, sizeof word);
  ::munmap(base, shm::HeaderBytes());
}

// With the target full, Connect waits for a system slot and Acquire for an
// action slot; both must give up at their own timeouts, whatever state the
// queue mutex is in.
TEST_F(ClientTrustTest, ConnectAndAcquireReturnByTheirTimeoutsWhateverTheQueueMutex) {
  const std::string prefix = UniqueName("tto");
  BrokerProcess broker(dir_.path(), prefix, {BrokerTarget{"exch01", 2}});
  ASSERT_TRUE(broker.Start()) << broker.log();
  const std::string segment = broker.segment("exch01");
  Timed a = ConnectTimed(broker.socket().string(), 10000ms);
  ASSERT_TRUE(a.client) << a.message;
  std::error_code ec;
  Permit held = a.client->TryAcquire(ec);  // the system slot + this one: full
  ASSERT_TRUE(held.valid()) << ec.message();

  auto check = [&](const char* state) {
    SCOPED_TRACE(state);
    const auto start = std::chrono::steady_clock::now();
    Permit p = a.client->Acquire(1000ms, ec);
    const double acquire_ms = Ms(std::chrono::steady_clock::now() - start).count();
    EXPECT_FALSE(p.valid());
    EXPECT_EQ(ec, Errc::kTimeout) << ec.message();
    EXPECT_GE(acquire_ms, 990);
    EXPECT_LT(acquire_ms, Ms(1000ms + kSlack).count());
    Timed b = ConnectTimed(broker.socket().string(), 2000ms);
    EXPECT_FALSE(b.client);
    EXPECT_EQ(b.ec, Errc::kTimeout) << b.message;
    EXPECT_NE(b.message.find("system connection"), std::string::npos) << b.message;
    EXPECT_LT(b.ms, Ms(2000ms + kSlack).count()) << b.message;
    std::printf("%s: Acquire(1000 ms) %.1f ms, Connect(2000 ms) %.1f ms: %s\n", state, acquire_ms,
                b.ms, b.message.c_str());
  };
  check("queue mutex free");
  {
    testing::StoppedHolder holder(segment);
    ASSERT_TRUE(holder.ok()) << "the holder did not stop holding the queue mutex";
    check("queue mutex held by a stopped process");
    // With a slot free, registering is not held up by the stopped holder.
    held.Release();
    Timed b = ConnectTimed(broker.socket().string(), 2000ms);
    EXPECT_TRUE(b.client) << b.message;
    EXPECT_LT(b.ms, 2000);
    std::printf("a free slot, the mutex held by a stopped process: Connect %.1f ms\n", b.ms);
    b.client.reset();  // gives its system slot back
    held = a.client->TryAcquire(ec);
    ASSERT_TRUE(held.valid()) << ec.message();
  }
  // Four bytes of garbage naming no thread (a tid above any pid_max).
  WriteMutexWord(segment, 0x3FFFFFF0u);
  check("garbage in the mutex word");
  held.Release();
  a.client.reset();
  broker.Stop();
  broker.RemoveSegments();
}

TEST_F(ClientTrustTest, AListenerThatNeverAnswersOrNeverAcceptsCannotHoldConnect) {
  // Trusted by uid (root), so only the timeouts stand between it and us.
  for (const char* mode : {"silent", "noaccept"}) {
    SCOPED_TRACE(mode);
    const auto folder = FolderOf(0, 0);
    const std::string socket = (folder / "dsb.sock").string();
    ProcessAs fake(Root(), {BinPath("fake_broker"), "--socket", socket, "--mode", mode});
    ASSERT_TRUE(fake.WaitForOutput("fake broker ready", 20s)) << fake.output();
    std::vector<int> filler;
    if (std::string(mode) == "noaccept") {
      // Fill the listen backlog so that a blocking connect() would wait
      // forever (bounded: a backlog of 0 holds one or two).
      for (int i = 0; i < 64; ++i) {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, socket.data(), socket.size());
        if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
          ::close(fd);
          break;
        }
        filler.push_back(fd);
      }
      ASSERT_LT(filler.size(), 64u) << "the backlog never filled";
    }
    Timed t = ConnectTimed(socket, 1500ms);
    EXPECT_FALSE(t.client);
    EXPECT_EQ(t.ec, Errc::kTimeout) << t.message;
    EXPECT_NE(t.message.find(socket), std::string::npos) << t.message;
    EXPECT_LT(t.ms, Ms(1500ms + kSlack).count());
    std::printf("%s: Connect(1500 ms) %.1f ms: %s\n", mode, t.ms, t.message.c_str());
    const auto start = std::chrono::steady_clock::now();
    const auto ctl = RunProgramAs(
        Root(), {BinPath("dsbctl"), "--socket", socket, "--timeout-ms", "1000", "status"}, 20s);
    const double ctl_ms = Ms(std::chrono::steady_clock::now() - start).count();
    EXPECT_FALSE(ctl.timed_out);
    EXPECT_NE(ctl.exit_code, 0) << ctl.output;
    EXPECT_LT(ctl_ms, Ms(1000ms + kSlack + 1000ms).count()) << ctl.output;  // + process start
    for (int fd : filler) ::close(fd);
  }
}

// A broker that answered the registration and then stops reading: a report
// (which waits for the answer) returns by the connect timeout.
TEST_F(ClientTrustTest, AReportToABrokerThatStoppedReadingReturnsByTheTimeout) {
  const auto folder = FolderOf(0, 0);
  const std::string socket = (folder / "dsb.sock").string();
  const std::string segment = NewSegment();
  ProcessAs fake(Root(), {BinPath("fake_broker"), "--socket", socket, "--mode", "deaf",
                          "--segment", segment});
  ASSERT_TRUE(fake.WaitForOutput("fake broker ready", 20s)) << fake.output();
  Timed t = ConnectTimed(socket, 1000ms);
  ASSERT_TRUE(t.client) << t.message;
  const auto start = std::chrono::steady_clock::now();
  const std::error_code ec = t.client->ReportSessionLimit("refused");
  const double ms = Ms(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ec, Errc::kTimeout) << ec.message();
  EXPECT_LT(ms, Ms(1000ms + kSlack).count());
  std::printf("report to a deaf broker: %.1f ms\n", ms);
}

}  // namespace
}  // namespace dsb
