// The pieces of issue 9's connection limits that need no running broker: the
// admission policy (admission.h), who may use the local socket
// (peer_access.h), fitting max_clients under the file limit (file_limit.h) and
// the accept loop's guard against running out of descriptors (accept_guard.h).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "broker/accept_guard.h"
#include "broker/admission.h"
#include "broker/file_limit.h"
#include "broker/peer_access.h"

namespace dsb::broker {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;
using Policy = Admission<int>;
const Policy::Clock::time_point t0{};

Policy::Clock::time_point At(int ms) { return t0 + milliseconds(ms); }

TEST(Admission, AdmitsUpToTheBoundsThenTheBusiestSourceGivesWay) {
  Policy p({/*total=*/4, /*per_source=*/3});
  // Source 1 fills three places, source 2 one.
  EXPECT_TRUE(p.Admit(1, 10, At(0)).admit);
  EXPECT_TRUE(p.Admit(1, 11, At(1)).admit);
  EXPECT_TRUE(p.Admit(1, 12, At(2)).admit);
  auto d = p.Admit(2, 20, At(3));
  EXPECT_TRUE(d.admit);
  EXPECT_FALSE(d.evict);
  EXPECT_EQ(p.size(), 4u);
  // Full: a newcomer of source 3 evicts source 1's longest idle connection.
  d = p.Admit(3, 30, At(4));
  EXPECT_TRUE(d.admit);
  ASSERT_TRUE(d.evict);
  EXPECT_EQ(*d.evict, 10u);
  EXPECT_FALSE(p.Waiting(10));
  EXPECT_EQ(p.CountOf(1), 2u);
  EXPECT_EQ(p.size(), 4u);
}

TEST(Admission, ASourceAtItsBoundGivesWayToItsOwnNewestConnection) {
  Policy p({10, 2});
  EXPECT_TRUE(p.Admit(7, 1, At(0)).admit);
  EXPECT_TRUE(p.Admit(7, 2, At(1)).admit);
  p.Touch(1, At(5));  // 1 answered a request since: 2 is now the longest idle
  auto d = p.Admit(7, 3, At(6));
  EXPECT_TRUE(d.admit);
  ASSERT_TRUE(d.evict);
  EXPECT_EQ(*d.evict, 2u);
  EXPECT_EQ(p.CountOf(7), 2u);
}

TEST(Admission, RefusesWhenEverySourceIsAtItsFairShare) {
  Policy p({2, 2});
  EXPECT_TRUE(p.Admit(1, 1, At(0)).admit);
  EXPECT_TRUE(p.Admit(2, 2, At(1)).admit);
  // Source 1 already holds as many as the busiest source (one each).
  auto d = p.Admit(1, 3, At(2));
  EXPECT_FALSE(d.admit);
  EXPECT_FALSE(d.evict);
  EXPECT_EQ(p.size(), 2u);
  // A source with none gets in: the longest idle of the busiest gives way.
  d = p.Admit(3, 4, At(3));
  EXPECT_TRUE(d.admit);
  ASSERT_TRUE(d.evict);
  EXPECT_EQ(*d.evict, 1u);
  // A connection that proved itself leaves the bound: room again.
  p.Leave(2);
  EXPECT_TRUE(p.Admit(1, 3, At(4)).admit);
  p.Leave(999);  // unknown: no effect
  EXPECT_EQ(p.size(), 2u);
}

TEST(Admission, AFloodOfOneSourceNeverKeepsAnotherOut) {
  Policy p({64, 16});
  std::uint64_t id = 1;
  for (int i = 0; i < 1100; ++i) ASSERT_TRUE(p.Admit(1000, id++, At(i)).admit);
  EXPECT_EQ(p.CountOf(1000), 16u);
  for (int uid = 0; uid < 3; ++uid) {
    EXPECT_TRUE(p.Admit(uid, id++, At(2000)).admit) << uid;
  }
  EXPECT_EQ(p.CountOf(1000), 16u);
}

TEST(PeerAccess, ReadsTheGroupsLineOfProcStatus) {
  const auto g = ParseStatusGroups("Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 24 1001 \nNgid:\t0\n");
  ASSERT_TRUE(g);
  EXPECT_EQ(*g, (std::vector<gid_t>{4, 24, 1001}));
  const auto none = ParseStatusGroups("Groups:\n");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(ParseStatusGroups("Name:\tx\n"));
}

config::BrokerConfig WithGroup(std::uint32_t gid) {
  config::BrokerConfig c;
  c.group = config::GroupRef{"dsbg", gid};
  return c;
}

TEST(PeerAccess, RootTheBrokersUidAndMembersPrimaryOrSupplementaryMayUseTheBroker) {
  const auto c = WithGroup(500);
  struct Case {
    const char* what;
    PeerCredentials peer;
    bool allowed;
  } cases[] = {
      {"root", {1, 0, 0, {}, true}, true},
      {"the broker's uid", {1, 42, 42, {}, true}, true},
      {"primary group", {1, 1001, 500, {1001}, true}, true},
      {"supplementary group", {1, 1002, 1002, {1002, 500}, true}, true},
      {"outsider", {1, 1003, 1003, {1003, 7}, true}, false},
      {"groups unknown, not primary", {1, 1004, 1004, {}, false}, false},
  };
  for (const Case& k : cases) {
    const auto refusal = RefuseLocalPeer(k.peer, 42, c);
    EXPECT_EQ(!refusal.has_value(), k.allowed) << k.what;
  }
  const auto refusal = RefuseLocalPeer({77, 1003, 1003, {1003}, true}, 42, c);
  ASSERT_TRUE(refusal);
  EXPECT_THAT(*refusal, HasSubstr("uid 1003 (pid 77) may not use this broker"));
  EXPECT_THAT(*refusal, HasSubstr("members of group 'dsbg' (gid 500, primary or supplementary)"));
  EXPECT_THAT(*refusal, HasSubstr("add the user to that group"));
  // Without a group only root and the broker's uid.
  config::BrokerConfig none;
  const auto r2 = RefuseLocalPeer({1, 1002, 500, {500}, true}, 42, none);
  ASSERT_TRUE(r2);
  EXPECT_THAT(*r2, HasSubstr("set broker.group"));
}

// Sets RLIMIT_NOFILE for the test's scope; restores it after (root may raise it back).
class FileLimitScope {
 public:
  FileLimitScope(rlim_t soft, rlim_t hard) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit l{soft, hard};
    ok_ = ::setrlimit(RLIMIT_NOFILE, &l) == 0;
  }
  ~FileLimitScope() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  bool ok() const { return ok_; }
  // Lowering the hard limit is permanent without CAP_SYS_RESOURCE.
  static bool CanRestore() { return ::geteuid() == 0; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

config::BrokerConfig OneTarget(int max_clients) {
  config::BrokerConfig c;
  c.max_clients = max_clients;
  c.targets.resize(1);
  return c;
}

TEST(FileLimit, RaisesTheSoftLimitAsFarAsNeededWhenTheHardLimitAllows) {
  if (!FileLimitScope::CanRestore()) GTEST_SKIP() << "needs root to restore the hard limit";
  FileLimitScope scope(256, 8192);
  ASSERT_TRUE(scope.ok());
  auto c = OneTarget(1024);
  auto b = FitFileLimit(c, /*raise=*/true);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(b->soft_before, 256u);
  EXPECT_EQ(b->soft, b->needed);
  EXPECT_FALSE(b->lowered);
  EXPECT_EQ(c.max_clients, 1024);
  EXPECT_THAT(b->note, HasSubstr("raised from 256"));
  rlimit now{};
  ::getrlimit(RLIMIT_NOFILE, &now);
  EXPECT_EQ(now.rlim_cur, b->needed);
}

TEST(FileLimit, LowersMaxClientsThatDoNotFitAndSaysWhatToChange) {
  if (!FileLimitScope::CanRestore()) GTEST_SKIP() << "needs root to restore the hard limit";
  FileLimitScope scope(512, 1024);
  ASSERT_TRUE(scope.ok());
  auto c = OneTarget(1024);
  const std::uint64_t fixed = FixedDescriptors(c);
  auto b = FitFileLimit(c, /*raise=*/true);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(b->soft, 1024u);  // raised to the hard limit, still short
  EXPECT_TRUE(b->lowered);
  EXPECT_EQ(static_cast<std::uint64_t>(c.max_clients), 1024 - fixed);
  EXPECT_THAT(b->note, HasSubstr("broker.max_clients lowered from 1024 to " +
                                 std::to_string(1024 - fixed)));
  EXPECT_THAT(b->note, HasSubstr("raise the limit (LimitNOFILE="));
  // Without raising, the soft limit decides.
  auto c2 = OneTarget(1024);
  FileLimitScope low(300, 1024);
  auto b2 = FitFileLimit(c2, /*raise=*/false);
  ASSERT_TRUE(b2.ok());
  EXPECT_EQ(static_cast<std::uint64_t>(c2.max_clients), 300 - fixed);
}

TEST(FileLimit, RefusesALimitWithNoRoomForAClient) {
  if (!FileLimitScope::CanRestore()) GTEST_SKIP() << "needs root to restore the hard limit";
  FileLimitScope scope(64, 64);
  ASSERT_TRUE(scope.ok());
  auto c = OneTarget(10);
  auto b = FitFileLimit(c, /*raise=*/true);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("too small for any client"));
  EXPECT_THAT(b.status().message(), HasSubstr("broker.max_unregistered = 64"));
}

TEST(AcceptGuard, BacksOffFrom10MsDoublingTo1SAndResetsAfterASuccess) {
  AcceptGuard g("test listener");
  const auto ec = std::make_error_code(std::errc::no_buffer_space);
  std::vector<long> delays;
  for (int i = 0; i < 9; ++i) delays.push_back(g.Failed(ec, At(i)).count());
  EXPECT_EQ(delays, (std::vector<long>{10, 20, 40, 80, 160, 320, 640, 1000, 1000}));
  g.Succeeded();
  EXPECT_EQ(g.Failed(ec, At(10)).count(), 10);
  EXPECT_EQ(g.failures(), 10u);
}

TEST(AcceptGuard, WhenOutOfDescriptorsAWaitingPeerIsAnsweredThroughTheSpare) {
  if (!FileLimitScope::CanRestore()) GTEST_SKIP() << "needs root to restore the file limit";
  // A listener with one waiting peer.
  const std::string path = "/tmp/dsb-accept-guard-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 8), 0);
  const int peer = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(peer, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  AcceptGuard g("test listener");  // holds its spare
  std::vector<int> filler;
  int accepted = -1;
  int accept_errno = 0;
  bool shed = false;
  {
    // Use up every descriptor: accept() now fails with EMFILE.
    rlimit cur{};
    ::getrlimit(RLIMIT_NOFILE, &cur);
    const int lowest_free = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(lowest_free, 0);
    ::close(lowest_free);
    FileLimitScope scope(static_cast<rlim_t>(lowest_free), cur.rlim_max);
    for (int i = 0; i < 4096; ++i) {
      const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      filler.push_back(fd);
    }
    accepted = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    accept_errno = errno;
    if (accepted < 0) shed = g.ShedOne(listener, "broker full");
  }
  for (int fd : filler) ::close(fd);
  EXPECT_LT(accepted, 0);
  EXPECT_EQ(accept_errno, EMFILE);
  EXPECT_TRUE(shed);
  char buf[32] = {};
  const ssize_t n = ::recv(peer, buf, sizeof buf - 1, 0);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), "broker full");
  ::close(peer);
  ::close(listener);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace dsb::broker
