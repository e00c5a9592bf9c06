// Issue 9, connections: a flood of idle connections to the local socket or
// the cluster port neither spins the broker, floods its log, nor keeps out
// honest clients and dsbctl; connections beyond the bounds are told "broker
// full"; idle unregistered ones are closed; access follows broker.group,
// primary or supplementary. Real broker processes, real sockets, throw-away
// users (skipped with the reason where they cannot be made).
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/local_frame.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/os_users.h"
#include "tests/support/test_cluster.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace dsb::testing {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using ::testing::HasSubstr;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kFlood = 1100;  // above a service's default soft file limit of 1024

// The test process holds (or its flooding child inherits) 1,100+ descriptors.
bool RaiseOwnFileLimit(rlim_t want, std::string* why) {
  rlimit l{};
  ::getrlimit(RLIMIT_NOFILE, &l);
  if (l.rlim_cur >= want) return true;
  if (l.rlim_max < want && ::geteuid() == 0) l.rlim_max = want;
  if (l.rlim_max < want) {
    *why = "the hard file limit (" + std::to_string(l.rlim_max) + ") is below " +
           std::to_string(want);
    return false;
  }
  l.rlim_cur = want;
  if (::setrlimit(RLIMIT_NOFILE, &l) != 0) {
    *why = std::string("setrlimit: ") + std::strerror(errno);
    return false;
  }
  return true;
}

// User + system CPU time of `pid` in clock ticks (/proc/<pid>/stat fields 14, 15).
long CpuTicks(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(text.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string t; rest >> t;) fields.push_back(t);
  if (fields.size() < 13) return -1;
  return std::stol(fields[11]) + std::stol(fields[12]);  // after ')': field 3 is fields[0]
}

// Starts `broker` as under a service manager's default soft file limit of
// 1024 (the limit of the finding; the hard limit stays): the broker
// raises it itself. The test's own limit is restored after.
bool StartUnderServiceLimit(BrokerProcess& broker) {
  rlimit l{};
  ::getrlimit(RLIMIT_NOFILE, &l);
  rlimit service{1024, l.rlim_max};
  if (::setrlimit(RLIMIT_NOFILE, &service) != 0) return false;
  const bool started = broker.Start();
  ::setrlimit(RLIMIT_NOFILE, &l);
  return started;
}

double TicksToSeconds(long ticks) {
  return static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

sockaddr_un UnixAddress(const fs::path& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  return a;
}

// A child process running `body` as `who` (fork, setgroups, setgid, setuid).
// `body` runs after fork in a process that may have had threads: it uses
// system calls only (no allocation, no locks). Returns the child's pid.
pid_t ForkAs(const Identity& who, const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  if (::setgroups(who.groups.size(), who.groups.data()) != 0 || ::setgid(who.gid) != 0 ||
      ::setuid(who.uid) != 0) {
    ::_exit(100);
  }
  ::_exit(body());
}

int WaitChild(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Reads exactly `n` bytes from `fd` within `timeout_ms` (poll); false on EOF/timeout.
bool ReadExactly(int fd, void* buf, std::size_t n, int timeout_ms) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, timeout_ms) <= 0) return false;
    const ssize_t r = ::read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// Flood body (system calls only): opens `n` connections to `addr` (each
// connect bounded by a 5 s send timeout), writes how many it opened to
// `ready_fd`, then holds them until `hold_fd` reaches EOF.
int HoldConnections(const sockaddr* addr, socklen_t len, int family, int n, int ready_fd,
                    int hold_fd) {
  int opened = 0;
  for (int i = 0; i < n; ++i) {
    const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, addr, len) != 0) {
      ::close(fd);
      break;
    }
    ++opened;
  }
  if (::write(ready_fd, &opened, sizeof opened) != sizeof opened) return 2;
  char c;
  while (::read(hold_fd, &c, 1) > 0) {
  }
  return 0;
}

// A flood of idle connections held by a child process (as `who`).
class Flood {
 public:
  Flood(const Identity& who, const sockaddr* addr, socklen_t len, int family, int n) {
    int ready[2];
    int hold[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(hold, O_CLOEXEC) != 0) return;
    pid_ = ForkAs(who, [&] {
      // Keep only this flood's two pipe ends (moved above every descriptor
      // the parent holds): a copy of another flood's hold pipe would keep
      // that one from ever seeing EOF.
      const int r = ::fcntl(ready[1], F_DUPFD_CLOEXEC, 3000);
      const int h = ::fcntl(hold[0], F_DUPFD_CLOEXEC, 3000);
      if (r < 0 || h < 0) return 3;
      ::close_range(3, 2999, 0);
      return HoldConnections(addr, len, family, n, r, h);
    });
    ::close(ready[1]);
    ::close(hold[0]);
    ready_fd_ = ready[0];
    hold_fd_ = hold[1];
  }
  ~Flood() { End(); }
  // How many connections the child opened (-1: it did not say within `timeout_ms`).
  int WaitOpened(int timeout_ms) {
    int opened = -1;
    if (!ReadExactly(ready_fd_, &opened, sizeof opened, timeout_ms)) return -1;
    return opened;
  }
  // Lets the child close its connections and exit; its exit code.
  int End() {
    if (pid_ <= 0) return -1;
    ::close(hold_fd_);
    ::close(ready_fd_);
    const int code = WaitChild(pid_);
    pid_ = -1;
    return code;
  }

 private:
  pid_t pid_ = -1;
  int ready_fd_ = -1;
  int hold_fd_ = -1;
};

json::object Parse(const std::string& frame) {
  boost::system::error_code ec;
  json::value v = json::parse(frame, ec);
  return !ec && v.is_object() ? v.as_object() : json::object{};
}

// One request on an open connection; the reply (empty object on failure).
json::object Ask(int fd, const json::object& request, milliseconds timeout = seconds(10)) {
  if (!WriteFrame(fd, json::serialize(request)).ok()) return {};
  auto frame = ReadFrame(fd, timeout);
  return frame.ok() ? Parse(*frame) : json::object{};
}

std::string ErrorOf(const json::object& reply) {
  const json::value* e = reply.if_contains("error");
  return e != nullptr && e->is_string() ? std::string(e->as_string()) : std::string();
}
std::string MessageOf(const json::object& reply) {
  const json::value* e = reply.if_contains("message");
  return e != nullptr && e->is_string() ? std::string(e->as_string()) : std::string();
}
bool Ok(const json::object& reply) {
  const json::value* ok = reply.if_contains("ok");
  return ok != nullptr && ok->is_bool() && ok->as_bool();
}

json::object RegisterRequest(const std::string& name) {
  return {{"op", "register"}, {"target", "exch01"}, {"name", name}};
}

// A broker whose socket folder group members can reach: <scratch>/run, root
// 0750 with the group (created here so BrokerProcess can write its config).
class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(scratch_.path().empty());
    ASSERT_EQ(::chmod(scratch_.path().c_str(), 0755), 0);
    std::string why;
    if (!RaiseOwnFileLimit(4096, &why)) GTEST_SKIP() << why;
  }
  // Makes the group and starts the broker with `extra` [broker] keys.
  void StartBroker(const std::string& extra) {
    std::string why;
    group_ = TempGroup::Create(&why);
    if (!group_) GTEST_SKIP() << why;
    run_ = scratch_.path() / "run";
    fs::create_directory(run_);
    ASSERT_EQ(::chown(run_.c_str(), 0, group_->gid()), 0);
    ASSERT_EQ(::chmod(run_.c_str(), 0750), 0);
    broker_ = std::make_unique<BrokerProcess>(
        run_, UniqueName("cl").substr(0, 12), std::vector<BrokerTarget>{{"exch01", 64}},
        "group = \"" + group_->name() + "\"\n" + extra);
    ASSERT_TRUE(StartUnderServiceLimit(*broker_)) << broker_->log();
    EXPECT_THAT(broker_->log(), HasSubstr("(raised from 1024)"));
  }
  std::unique_ptr<TempUser> MakeUser(std::vector<gid_t> supplementary,
                                     const TempGroup* primary = nullptr) {
    std::string why;
    auto u = TempUser::Create(&why, std::move(supplementary), primary);
    EXPECT_NE(u, nullptr) << why;
    return u;
  }
  // Runs dsbctl status as root; its exit code and output.
  Outcome DsbctlStatus() {
    return RunProgramAs(Identity{0, 0, {}},
                        {BinPath("dsbctl"), "--socket", broker_->socket().string(), "status"},
                        milliseconds(10000));
  }

  ScratchDir scratch_{"dsbconn"};
  fs::path run_;
  std::unique_ptr<TempGroup> group_;
  std::unique_ptr<BrokerProcess> broker_;
};

// The finding: 1,100 idle connections (above a service's soft limit of 1024)
// made the accept loop spin (a core busy, 377 MB of log in 12 s) and locked
// out every honest client.
TEST_F(LimitsTest, AnIdleFloodOfAGroupMemberNeitherSpinsNorKeepsOutHonestClientsOrDsbctl) {
  StartBroker("");  // defaults: max_unregistered 64, 16 per uid, idle_timeout 5 s
  if (!broker_) return;
  // A member through its primary group: admitted before issue 9 too (the
  // finding's setting), so this flood reaches the accept loop either way.
  auto attacker = MakeUser({}, group_.get());
  ASSERT_NE(attacker, nullptr);
  const long cpu_before = CpuTicks(broker_->pid());
  const std::size_t log_before = broker_->log().size();
  const sockaddr_un addr = UnixAddress(broker_->socket());
  const auto t0 = std::chrono::steady_clock::now();
  Flood flood(attacker->identity(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr,
              AF_UNIX, kFlood);
  ASSERT_EQ(flood.WaitOpened(60000), kFlood) << broker_->log();
  const auto flood_window = std::chrono::steady_clock::now() - t0;
  const long cpu_flooded = CpuTicks(broker_->pid());
  // A measurement window with the 1,100 connections held: a spinning accept
  // loop would burn a whole core here.
  std::this_thread::sleep_for(seconds(2));
  const long cpu_quiet = CpuTicks(broker_->pid());
  std::printf("flood of %d connections: %.2f s wall, broker CPU %.2f s; then 2 s held: CPU %.2f s\n",
              kFlood, std::chrono::duration<double>(flood_window).count(),
              TicksToSeconds(cpu_flooded - cpu_before), TicksToSeconds(cpu_quiet - cpu_flooded));
  // Spinning is a whole core (2 s); the bound is half a core, so a broker that is only
  // renewing and answering passes under a sanitizer on a loaded machine too.
  EXPECT_LT(TicksToSeconds(cpu_quiet - cpu_flooded), 1.0);
  EXPECT_LT(TicksToSeconds(cpu_flooded - cpu_before), 5.0);

  // Honest clients get in and register (root: another uid than the flood's).
  std::vector<int> honest;
  for (int i = 0; i < 3; ++i) {
    auto fd = ConnectLocal(broker_->socket().string());
    ASSERT_TRUE(fd.ok()) << fd.status().message();
    honest.push_back(*fd);
    const json::object r = Ask(*fd, RegisterRequest("honest" + std::to_string(i)));
    EXPECT_TRUE(Ok(r)) << json::serialize(r);
  }
  // The flooding user's own new client gets in too (its idle ones give way).
  const Outcome own = RunProgramAs(attacker->identity(),
                                   {BinPath("dsbctl"), "--socket", broker_->socket().string(),
                                    "status"},
                                   milliseconds(10000));
  EXPECT_EQ(own.exit_code, 0) << own.output;
  const Outcome status = DsbctlStatus();
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_THAT(status.output, HasSubstr("exch01"));
  // The log stays small: evictions are counted, one line per 10 s.
  const std::size_t log_growth = broker_->log().size() - log_before;
  std::printf("log grew by %zu bytes during the flood:\n%s\n", log_growth,
              broker_->log().substr(log_before, 3000).c_str());
  EXPECT_LT(log_growth, 64u * 1024) << broker_->log().substr(log_before, 4000);
  // The per-uid bound did it: the flooding user's own idle connections gave way.
  EXPECT_THAT(broker_->log(), HasSubstr("the longest idle connection of uid " +
                                        std::to_string(attacker->uid()) +
                                        " (pid "));
  EXPECT_THAT(broker_->log(), HasSubstr("was told 'broker full' and closed"));
  for (int fd : honest) ::close(fd);
  EXPECT_EQ(flood.End(), 0);
}

TEST_F(LimitsTest, ConnectionsBeyondTheBoundAreToldBrokerFullAndRegisteredOnesStay) {
  StartBroker("max_unregistered = 8\nmax_unregistered_per_uid = 4\nidle_timeout = \"60s\"\n");
  if (!broker_) return;
  // One registered client first: it is never counted or evicted.
  auto reg = ConnectLocal(broker_->socket().string());
  ASSERT_TRUE(reg.ok());
  ASSERT_TRUE(Ok(Ask(*reg, RegisterRequest("registered"))));
  // Ten idle connections of one uid (root): its oldest six give way.
  std::vector<int> fds;
  for (int i = 0; i < 10; ++i) {
    auto fd = ConnectLocal(broker_->socket().string());
    ASSERT_TRUE(fd.ok()) << fd.status().message();
    fds.push_back(*fd);
    // Accepted in order: wait until the broker has it (a ping answered on the
    // newest would make it the most recently active: ask nothing; the
    // broker's accept order is the connect order of one listener queue).
  }
  for (int i = 0; i < 6; ++i) {
    auto frame = ReadFrame(fds[static_cast<std::size_t>(i)], seconds(10));
    ASSERT_TRUE(frame.ok()) << "connection " << i << ": " << frame.status().message();
    const json::object r = Parse(*frame);
    EXPECT_EQ(ErrorOf(r), "too_many_clients") << json::serialize(r);
    EXPECT_THAT(MessageOf(r), HasSubstr("broker full"));
    EXPECT_THAT(MessageOf(r), HasSubstr("broker.max_unregistered_per_uid = 4"));
  }
  // The newest four are served.
  for (int i = 6; i < 10; ++i) {
    EXPECT_TRUE(Ok(Ask(fds[static_cast<std::size_t>(i)], {{"op", "ping"}}))) << i;
  }
  // Another uid gets in while root holds its four (total bound 8 not reached).
  auto member = MakeUser({group_->gid()});
  ASSERT_NE(member, nullptr);
  const Outcome o = RunProgramAs(member->identity(),
                                 {BinPath("dsbctl"), "--socket", broker_->socket().string(),
                                  "status"},
                                 milliseconds(10000));
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_TRUE(Ok(Ask(*reg, {{"op", "ping"}})));
  for (int fd : fds) ::close(fd);
  ::close(*reg);
}

TEST_F(LimitsTest, AnUnregisteredConnectionThatSendsNothingIsClosedAfterTheIdleTimeout) {
  StartBroker("idle_timeout = \"1s\"\n");
  if (!broker_) return;
  auto reg = ConnectLocal(broker_->socket().string());
  ASSERT_TRUE(reg.ok());
  ASSERT_TRUE(Ok(Ask(*reg, RegisterRequest("registered"))));
  auto admin = ConnectLocal(broker_->socket().string());
  ASSERT_TRUE(admin.ok());
  EXPECT_TRUE(Ok(Ask(*admin, {{"op", "ping"}})));  // an answered request restarts the clock
  auto idle = ConnectLocal(broker_->socket().string());
  ASSERT_TRUE(idle.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto frame = ReadFrame(*idle, seconds(20));
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(frame.ok()) << frame.status().message();
  const json::object r = Parse(*frame);
  EXPECT_EQ(ErrorOf(r), "timeout") << json::serialize(r);
  EXPECT_THAT(MessageOf(r), HasSubstr("broker.idle_timeout (1000 ms)"));
  EXPECT_GE(waited, 0.9);
  // Then EOF.
  char c;
  EXPECT_EQ(::read(*idle, &c, 1), 0);
  // The admin connection (silent since its ping) went the same way; the
  // registered one, older than both, is still served.
  auto admin_frame = ReadFrame(*admin, seconds(20));
  ASSERT_TRUE(admin_frame.ok());
  EXPECT_EQ(ErrorOf(Parse(*admin_frame)), "timeout");
  EXPECT_TRUE(Ok(Ask(*reg, {{"op", "ping"}})));
  ::close(*idle);
  ::close(*admin);
  ::close(*reg);
}

// A register request sent by a child running as `who`; the raw reply frame
// body ("" if none). System calls only in the child.
std::string RegisterAs(const Identity& who, const fs::path& socket, int* connect_errno) {
  const std::string body = json::serialize(RegisterRequest("as-user"));
  const std::string frame = FrameHeader(body.size()) + body;
  const sockaddr_un addr = UnixAddress(socket);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return "";
  const pid_t pid = ForkAs(who, [&] {
    ::close(out[0]);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      const int e = errno;
      (void)::write(out[1], &e, sizeof e);
      return 1;
    }
    const int e = 0;
    (void)::write(out[1], &e, sizeof e);
    if (::write(fd, frame.data(), frame.size()) != static_cast<ssize_t>(frame.size())) return 2;
    char buf[4096];
    for (;;) {
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, 10000) <= 0) break;
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      (void)::write(out[1], buf, static_cast<std::size_t>(n));
      if (n >= 4) break;  // one short reply arrives whole
    }
    return 0;
  });
  ::close(out[1]);
  int e = -1;
  std::string reply;
  if (ReadExactly(out[0], &e, sizeof e, 15000)) {
    char buf[4096];
    for (;;) {
      pollfd pfd{out[0], POLLIN, 0};
      if (::poll(&pfd, 1, 15000) <= 0) break;
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      reply.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(out[0]);
  WaitChild(pid);
  *connect_errno = e;
  return reply.size() > 4 ? reply.substr(4) : std::string();
}

TEST_F(LimitsTest, GroupMembersRegisterThroughAPrimaryOrSupplementaryGroupAndOutsidersCannot) {
  StartBroker("");
  if (!broker_) return;
  auto supplementary = MakeUser({group_->gid()});
  auto primary = MakeUser({}, group_.get());
  auto outsider = MakeUser({});
  ASSERT_TRUE(supplementary && primary && outsider);
  int e = -1;
  json::object r = Parse(RegisterAs(supplementary->identity(), broker_->socket(), &e));
  EXPECT_EQ(e, 0);
  EXPECT_TRUE(Ok(r)) << "supplementary member: " << json::serialize(r);
  r = Parse(RegisterAs(primary->identity(), broker_->socket(), &e));
  EXPECT_EQ(e, 0);
  EXPECT_TRUE(Ok(r)) << "primary member: " << json::serialize(r);
  // The outsider cannot reach the socket (folder 0750, socket 0660): the
  // broker's own check (peer_access.h, unit-tested) never even sees it.
  r = Parse(RegisterAs(outsider->identity(), broker_->socket(), &e));
  EXPECT_EQ(e, EACCES);
  EXPECT_TRUE(r.empty());
}

TEST(ConnectionLimitsConfig, AllowedUidsIsRefusedWithWhatToDoInstead) {
  ScratchDir dir("dsbconncfg");
  const fs::path file = dir.path() / "b.toml";
  std::ofstream(file) << "[broker]\nid = \"b\"\nsocket = \"" << (dir.path() / "s.sock").string()
                      << "\"\nshm_prefix = \"b\"\nallowed_uids = [1000]\n[[targets]]\nname = "
                         "\"exch01\"\nlimit = 4\n";
  std::string out;
  const int code = BrokerProcess::RunArgsToExit("--check --config '" + file.string() + "'", &out);
  EXPECT_EQ(code, 2) << out;
  EXPECT_THAT(out, HasSubstr("broker.allowed_uids: is no longer supported"));
  EXPECT_THAT(out, HasSubstr("add the user to the group named by broker.group"));
}

TEST(ConnectionLimitsConfig, CheckSaysWhenMaxClientsIsLoweredToFitTheFileLimit) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to lower and restore the hard file limit";
  ScratchDir dir("dsbconncfg");
  const fs::path file = dir.path() / "b.toml";
  std::ofstream(file) << "[broker]\nid = \"b\"\nsocket = \"" << (dir.path() / "s.sock").string()
                      << "\"\nshm_prefix = \"b\"\n[[targets]]\nname = \"exch01\"\nlimit = 4\n";
  // A service whose soft limit is 256 and hard limit 512.
  const Outcome o = RunProgramAs(
      Identity{0, 0, {}},
      {"/bin/sh", "-c",
       "ulimit -Sn 256 && ulimit -Hn 512 && exec \"$0\" --check --config \"$1\"",
       BinPath("dsb-broker"), file.string()},
      milliseconds(10000));
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_THAT(o.output, HasSubstr("RLIMIT_NOFILE) is 512 (raised from 256)"));
  EXPECT_THAT(o.output, HasSubstr("broker.max_clients lowered from 1024 to "));
  EXPECT_THAT(o.output, HasSubstr("OK (broker b"));
}

// The cluster port: 1,100 unauthenticated TCP connections from loopback.
TEST(ClusterPortLimits, AnUnauthenticatedFloodLeavesTheBrokerAnsweringAndRenewing) {
  std::string why;
  if (!RaiseOwnFileLimit(4096, &why)) GTEST_SKIP() << why;
  ScratchDir dir("dsbconnclu");
  TestClusterSpec spec;
  spec.brokers = 2;
  spec.stem = "cf" + std::to_string(::getpid() % 100000);
  spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 16\n";
  spec.broker_keys = "system_slots = 1\n";
  const TestClusterFiles files = WriteTestCluster(dir.path(), spec);
  std::vector<std::unique_ptr<BrokerProcess>> brokers;
  for (std::size_t i = 0; i < files.configs.size(); ++i) {
    brokers.push_back(std::make_unique<BrokerProcess>(
        files.configs[i], files.sockets[i],
        std::vector<std::string>{files.Segment(spec, i, "exch01")}));
    ASSERT_TRUE(StartUnderServiceLimit(*brokers.back())) << brokers.back()->log();
  }
  ASSERT_TRUE(WaitUntil([&] { return LearningOver(files.sockets[0]); }, seconds(30)));
  // The coordinator's port, from the cluster file.
  std::ifstream cf(dir.path() / "cluster.toml");
  const std::string cluster_text((std::istreambuf_iterator<char>(cf)),
                                 std::istreambuf_iterator<char>());
  std::smatch m;
  ASSERT_TRUE(std::regex_search(cluster_text, m, std::regex("127\\.0\\.0\\.1:([0-9]+)")));
  const auto port = static_cast<std::uint16_t>(std::stoi(m[1]));
  BrokerProcess& coord = *brokers[0];
  const long cpu_before = CpuTicks(coord.pid());
  const std::size_t log_before = coord.log().size();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  Flood flood(Identity{::getuid(), ::getgid(), {}}, reinterpret_cast<const sockaddr*>(&addr),
              sizeof addr, AF_INET, kFlood);
  ASSERT_EQ(flood.WaitOpened(120000), kFlood);
  const long cpu_flooded = CpuTicks(coord.pid());
  std::this_thread::sleep_for(seconds(3));  // measurement window: 3 lease terms
  const long cpu_quiet = CpuTicks(coord.pid());
  std::printf("cluster flood of %d: coordinator CPU %.2f s; then 3 s held: %.2f s\n", kFlood,
              TicksToSeconds(cpu_flooded - cpu_before), TicksToSeconds(cpu_quiet - cpu_flooded));
  // Spinning would be a whole core (3 s); the bound is half a core. (0.5 s was the bound
  // until an asan run on a loaded machine measured 0.51 s: renewing, not spinning.)
  EXPECT_LT(TicksToSeconds(cpu_quiet - cpu_flooded), 1.5);
  // dsbctl answers; both brokers still renew (their ledger rows are fresh)
  // and a client of the other broker registers (it needs its acceptance).
  const json::object st = AskBroker(files.sockets[0], local_protocol::Op::kStatus);
  EXPECT_TRUE(Ok(st)) << json::serialize(st);
  const json::array rows = LedgerBrokers(files.sockets[0]);
  for (const char* id : {"ws1", "ws2"}) {
    const std::int64_t seen = LedgerField(rows, id, "last_seen_ms");
    EXPECT_GE(seen, 0) << id << ": " << json::serialize(rows);
    EXPECT_LT(seen, 2000) << id << " has not renewed: " << json::serialize(rows);
  }
  auto fd = ConnectLocal(files.sockets[1].string());
  ASSERT_TRUE(fd.ok());
  const json::object r = Ask(*fd, RegisterRequest("during-flood"));
  EXPECT_TRUE(Ok(r)) << json::serialize(r);
  ::close(*fd);
  // A broker of the cluster that connects anew, from the flood's own address,
  // still gets in: ws2 restarts and registers a client again, which it may
  // only once the coordinator accepted its new instance (R1) over the port.
  // A fresh wave first, so that handshakes from 127.0.0.1 are at their bound
  // (4 per address) while ws2 connects (they last up to the 5 s handshake timeout).
  Flood wave(Identity{::getuid(), ::getgid(), {}}, reinterpret_cast<const sockaddr*>(&addr),
             sizeof addr, AF_INET, 200);
  ASSERT_EQ(wave.WaitOpened(60000), 200);
  ASSERT_EQ(brokers[1]->Stop(), 0) << brokers[1]->log();
  ASSERT_TRUE(StartUnderServiceLimit(*brokers[1])) << brokers[1]->log();
  json::object again;
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto c = ConnectLocal(files.sockets[1].string());
        if (!c.ok()) return false;
        again = Ask(*c, RegisterRequest("after-restart"));
        ::close(*c);
        return Ok(again);
      },
      seconds(30)))
      << json::serialize(again) << "\n" << brokers[1]->log();
  const std::size_t log_growth = coord.log().size() - log_before;
  std::printf("coordinator log grew by %zu bytes during the flood:\n%s\n", log_growth,
              coord.log().substr(log_before, 3000).c_str());
  EXPECT_THAT(coord.log().substr(log_before), HasSubstr("handshake bound reached"));
  EXPECT_LT(log_growth, 64u * 1024) << coord.log().substr(log_before, 4000);
  EXPECT_EQ(wave.End(), 0);
  EXPECT_EQ(flood.End(), 0);
}

}  // namespace
}  // namespace dsb::testing
