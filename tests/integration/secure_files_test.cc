// The real dsb-broker trusts only folders and files it (or root) made (issue 9):
// a socket folder of another user or one others can write is refused naming it;
// links planted at the socket, state and log paths are never written through;
// a lock file planted by another user is refused naming that user (its text is
// never quoted) and the failed start leaves nothing behind; --check refuses
// paths of the wrong kind naming the key; key and config files need safe modes.
// Tests that need throw-away users skip (with the reason) where they cannot be made.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/broker_process.h"
#include "tests/support/os_users.h"
#include "tests/support/test_cluster.h"
#include "tests/support/unique_name.h"

namespace {

using dsb::testing::BrokerProcess;
using dsb::testing::ScratchDir;
using dsb::testing::TempGroup;
using dsb::testing::TempUser;
using dsb::testing::UniqueName;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct stat Lstat(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class SecureFiles : public ::testing::Test {
 protected:
  void TearDown() override {
    ::unlink(("/dev/shm/" + Segment()).c_str());
    ::unlink(("/dev/shm/.dsb-lock-" + Segment()).c_str());
  }
  // A broker file in the scratch folder; `extra` goes into [broker].
  fs::path WriteConfig(const fs::path& socket, const std::string& extra = "") {
    const fs::path config = dir_.path() / (prefix_ + ".toml");
    std::ofstream(config) << "[broker]\nid = \"" << prefix_ << "\"\nsocket = \"" << socket.string()
                          << "\"\nshm_prefix = \"" << prefix_ << "\"\n"
                          << extra << "\n[[targets]]\nname = \"exch01\"\nlimit = 4\n";
    return config;
  }
  std::string Segment() const { return "dsb-" + prefix_ + "-exch01"; }
  // Runs `dsb-broker [--check] --config FILE` to its end.
  int Run(const fs::path& config, std::string* out, bool check = false) {
    return BrokerProcess::RunArgsToExit(std::string(check ? "--check " : "") + "--config '" +
                                            config.string() + "'",
                                        out);
  }
  std::unique_ptr<TempUser> User() {
    std::string why;
    if (!dsb::testing::CanSwitchUsers(&why)) {
      skip_ = why;
      return nullptr;
    }
    auto u = TempUser::Create(&why);
    if (!u) skip_ = why;
    return u;
  }

  ScratchDir dir_{"dsb-securefiles"};  // 0700, root's: a private folder
  std::string prefix_ = UniqueName("sf").substr(0, 24);
  std::string skip_;
};

TEST_F(SecureFiles, ASocketFolderOfAnotherUserIsRefusedNamingItsOwner) {
  auto mallory = User();
  if (!mallory) GTEST_SKIP() << skip_;
  const fs::path folder = dir_.path() / "run";
  ASSERT_EQ(::mkdir(folder.c_str(), 0755), 0);
  ASSERT_EQ(::chown(folder.c_str(), mallory->uid(), mallory->gid()), 0);
  std::string out;
  // 2: refused before anything is created, as --check refuses it (a restart
  // cannot fix it: systemd's RestartPreventExitStatus=2).
  EXPECT_EQ(Run(WriteConfig(folder / "dsb.sock"), &out), 2) << out;
  std::printf("%s", out.c_str());
  EXPECT_TRUE(Contains(out, "broker.socket's folder " + folder.string())) << out;
  EXPECT_TRUE(Contains(out, "owned by uid " + std::to_string(mallory->uid()) + " (" +
                                mallory->name() + ")"))
      << out;
  EXPECT_TRUE(Contains(out, "mode 0755")) << out;
  EXPECT_TRUE(Contains(out, "use a folder only this broker can write, e.g. /run/dsb")) << out;
  // Refused before anything was made there or in /dev/shm.
  EXPECT_TRUE(fs::is_empty(folder));
  EXPECT_FALSE(fs::exists("/dev/shm/" + Segment()));
  EXPECT_FALSE(fs::exists("/dev/shm/.dsb-lock-" + Segment()));
}

TEST_F(SecureFiles, ASocketFolderOthersCanWriteIsRefused) {
  for (const mode_t mode : {mode_t{0777}, mode_t{0770}, mode_t{0757}}) {
    const fs::path folder = dir_.path() / ("open" + std::to_string(mode));
    ASSERT_EQ(::mkdir(folder.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(folder.c_str(), mode), 0);
    std::string out;
    EXPECT_EQ(Run(WriteConfig(folder / "dsb.sock"), &out), 2) << out;
    EXPECT_TRUE(Contains(out, folder.string() + " is writable by group or others")) << out;
    EXPECT_TRUE(Contains(out, "chmod go-w " + folder.string())) << out;
    EXPECT_TRUE(fs::is_empty(folder)) << out;
  }
  // Below a writable folder that is not sticky: anyone could rename ours away.
  const fs::path parent = dir_.path() / "shared";
  ASSERT_EQ(::mkdir(parent.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(parent.c_str(), 0777), 0);
  std::string out;
  EXPECT_EQ(Run(WriteConfig(parent / "run" / "dsb.sock"), &out), 2) << out;
  EXPECT_TRUE(Contains(out, parent.string() + " is writable by group or others and not sticky"))
      << out;
  EXPECT_FALSE(fs::exists(parent / "run")) << out;
}

TEST_F(SecureFiles, ALinkPlantedAtTheSocketPathIsReplacedNotFollowed) {
  std::string why;
  if (!dsb::testing::CanSwitchUsers(&why)) GTEST_SKIP() << why;
  auto group = TempGroup::Create(&why);
  ASSERT_TRUE(group) << why;
  const fs::path victim = dir_.path() / "victim";
  std::ofstream(victim) << "root only\n";
  ASSERT_EQ(::chmod(victim.c_str(), 0600), 0);
  const fs::path folder = dir_.path() / "run";
  ASSERT_EQ(::mkdir(folder.c_str(), 0750), 0);
  fs::create_symlink(victim, folder / "dsb.sock");
  BrokerProcess broker(WriteConfig(folder / "dsb.sock", "group = \"" + group->name() + "\""),
                       folder / "dsb.sock", {Segment()});
  ASSERT_TRUE(broker.Start()) << broker.log();
  const struct stat v = Lstat(victim);
  EXPECT_EQ(v.st_mode & 07777, 0600u);
  EXPECT_EQ(v.st_gid, 0u);
  EXPECT_EQ(Slurp(victim), "root only\n");
  const struct stat s = Lstat(folder / "dsb.sock");
  EXPECT_TRUE(S_ISSOCK(s.st_mode));
  EXPECT_EQ(s.st_mode & 07777, 0660u);
  EXPECT_EQ(s.st_gid, group->gid());
  const struct stat l = Lstat(folder / "dsb.sock.lock");
  EXPECT_EQ(l.st_mode & 07777, 0600u);
  EXPECT_EQ(Lstat("/dev/shm/.dsb-lock-" + Segment()).st_mode & 07777, 0600u);
  broker.Stop();
}

TEST_F(SecureFiles, LinksPlantedInStateDirAreNeverWrittenThrough) {
  const fs::path state = dir_.path() / "state";
  ASSERT_EQ(::mkdir(state.c_str(), 0700), 0);
  const fs::path victim = dir_.path() / "victim";
  std::ofstream(victim) << "precious\n";
  ASSERT_EQ(::chmod(victim.c_str(), 0644), 0);
  const fs::path socket = dir_.path() / "run" / "dsb.sock";
  const fs::path config = WriteConfig(socket, "state_dir = \"" + state.string() + "\"");
  // A link at the operator's limits: the start cannot read them without
  // following it, so it refuses (exit 2, naming the file) rather than start
  // from the configured, maybe higher, limit; nothing is written through it.
  fs::create_symlink(victim, state / (prefix_ + ".limits"));
  std::string out;
  EXPECT_EQ(Run(config, &out), 2) << out;
  EXPECT_TRUE(Contains(out, prefix_ + ".limits: is a symbolic link")) << out;
  EXPECT_EQ(Slurp(victim), "precious\n");
  fs::remove(state / (prefix_ + ".limits"));
  // A link at the broker's own state file: replaced, never followed.
  fs::create_symlink(victim, state / (prefix_ + ".state"));
  BrokerProcess broker(config, socket, {Segment()});
  ASSERT_TRUE(broker.Start()) << broker.log();
  EXPECT_TRUE(Contains(broker.log(), "is a symbolic link")) << broker.log();
  broker.Stop();
  EXPECT_EQ(Slurp(victim), "precious\n");
  EXPECT_EQ(Lstat(victim).st_mode & 07777, 0644u);
  const struct stat st = Lstat(state / (prefix_ + ".state"));
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_TRUE(Contains(Slurp(state / (prefix_ + ".state")), "\"clean\":true"));
  // Nothing but our files (no temporary file left).
  int entries = 0;
  for (const auto& e : fs::directory_iterator(state)) {
    const std::string n = e.path().filename().string();
    EXPECT_EQ(n.find(".tmp"), std::string::npos) << n;
    ++entries;
  }
  EXPECT_GE(entries, 2);
}

TEST_F(SecureFiles, ALinkOrAFolderAtTheLogFileIsRefused) {
  const fs::path victim = dir_.path() / "victim";
  std::ofstream(victim) << "precious\n";
  ASSERT_EQ(::chmod(victim.c_str(), 0600), 0);
  const fs::path logs = dir_.path() / "log";
  ASSERT_EQ(::mkdir(logs.c_str(), 0755), 0);
  fs::create_symlink(victim, logs / "broker.log");
  const fs::path socket = dir_.path() / "run" / "dsb.sock";
  std::string out;
  EXPECT_EQ(Run(WriteConfig(socket, "log_file = \"" + (logs / "broker.log").string() + "\""),
                &out),
            2)
      << out;
  EXPECT_TRUE(Contains(out, "broker.log_file " + (logs / "broker.log").string())) << out;
  EXPECT_TRUE(Contains(out, "symbolic link")) << out;
  EXPECT_EQ(Slurp(victim), "precious\n");
  EXPECT_EQ(Lstat(victim).st_mode & 07777, 0600u);
  out.clear();
  const fs::path config = WriteConfig(socket, "log_file = \"" + logs.string() + "\"");
  EXPECT_EQ(Run(config, &out), 2) << out;
  EXPECT_TRUE(Contains(out, "broker.log_file " + logs.string() + " is a folder, not a file"))
      << out;
  out.clear();
  EXPECT_EQ(Run(config, &out, /*check=*/true), 2) << out;
  EXPECT_TRUE(Contains(out, "broker.log_file " + logs.string() + " is a folder, not a file"))
      << out;
}

TEST_F(SecureFiles, ASegmentLockPlantedByAnotherUserIsRefusedAndTheFailedStartLeavesNothing) {
  auto mallory = User();
  if (!mallory) GTEST_SKIP() << skip_;
  const std::string lock = "/dev/shm/.dsb-lock-" + Segment();
  // Planted by that user itself, with text it chose.
  const auto planted = dsb::testing::RunProgramAs(
      mallory->identity(), {"/bin/sh", "-c", "printf '31337 HACKED' > " + lock}, 20s);
  ASSERT_EQ(planted.exit_code, 0) << planted.output;
  ASSERT_EQ(Lstat(lock).st_uid, mallory->uid());
  const fs::path folder = dir_.path() / "run" / "sub";
  std::string out;
  EXPECT_EQ(Run(WriteConfig(folder / "dsb.sock"), &out), 1) << out;
  std::printf("%s", out.c_str());
  EXPECT_TRUE(Contains(out, "lock file " + lock)) << out;
  EXPECT_TRUE(Contains(out, "made by uid " + std::to_string(mallory->uid()) + " (" +
                                mallory->name() + "), not by this broker"))
      << out;
  EXPECT_TRUE(Contains(out, "remove it as root")) << out;
  EXPECT_FALSE(Contains(out, "HACKED")) << out;
  EXPECT_FALSE(Contains(out, "31337")) << out;
  // The failed start removed the socket folders it made and its lock file,
  // made no segment and left the planted file alone.
  EXPECT_FALSE(fs::exists(dir_.path() / "run")) << out;
  EXPECT_FALSE(fs::exists("/dev/shm/" + Segment())) << out;
  EXPECT_EQ(Slurp(lock), "31337 HACKED");
}

// "The broker's user" is its effective uid: a broker run by a plain user makes
// and uses a folder of its own, and refuses even a root folder it cannot own.
TEST_F(SecureFiles, ABrokerRunByAUserUsesItsOwnFolderAndRefusesAnother) {
  auto dsb_user = User();
  if (!dsb_user) GTEST_SKIP() << skip_;
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);  // let it reach its folder
  const fs::path mine = dir_.path() / "mine";
  ASSERT_EQ(::mkdir(mine.c_str(), 0755), 0);
  ASSERT_EQ(::chown(mine.c_str(), dsb_user->uid(), dsb_user->gid()), 0);
  const fs::path config = WriteConfig(mine / "run" / "dsb.sock",
                                      "state_dir = \"" + (mine / "state").string() + "\"");
  {
    dsb::testing::ProcessAs broker(dsb_user->identity(),
                                   {dsb::testing::BinPath("dsb-broker"), "--config",
                                    config.string()});
    ASSERT_TRUE(broker.WaitForOutput("ready on", 20s)) << broker.output();
    for (const fs::path& p : {mine / "run", mine / "run" / "dsb.sock",
                              mine / "run" / "dsb.sock.lock", mine / "state"}) {
      EXPECT_EQ(Lstat(p).st_uid, dsb_user->uid()) << p;
    }
    EXPECT_EQ(Lstat(mine / "state").st_mode & 07777, 0700u);
    EXPECT_EQ(broker.Stop(SIGTERM), 0) << broker.output();
  }
  const fs::path roots = dir_.path() / "roots";
  ASSERT_EQ(::mkdir(roots.c_str(), 0755), 0);
  const auto refused = dsb::testing::RunProgramAs(
      dsb_user->identity(),
      {dsb::testing::BinPath("dsb-broker"), "--config", WriteConfig(roots / "dsb.sock").string()},
      20s);
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_TRUE(Contains(refused.output, roots.string() + " is owned by uid 0 (root) (mode 0755), "
                                       "not by this broker (uid " +
                                           std::to_string(dsb_user->uid()) + " (" +
                                           dsb_user->name() + "))"))
      << refused.output;  // Below a root folder it cannot write: says how an administrator makes it.
  const auto denied = dsb::testing::RunProgramAs(
      dsb_user->identity(),
      {dsb::testing::BinPath("dsb-broker"), "--config",
       WriteConfig(roots / "sub" / "dsb.sock").string()},
      20s);
  EXPECT_EQ(denied.exit_code, 2) << denied.output;
  EXPECT_TRUE(Contains(denied.output, "cannot create " + (roots / "sub").string() +
                                          ": Permission denied; make it as root for this "
                                          "broker's user (`install -d -o " +
                                          std::to_string(dsb_user->uid()) + " -m 0750 " +
                                          (roots / "sub").string() + "`)"))
      << denied.output;
}

TEST_F(SecureFiles, CheckRefusesPathsOfTheWrongKindNamingTheKey) {
  const fs::path file = dir_.path() / "plain";
  std::ofstream(file) << "x";
  struct Case {
    const char* what;
    fs::path socket;
    std::string extra;
    std::string expect;
  };
  const fs::path ok_socket = dir_.path() / "run" / "dsb.sock";
  const Case cases[] = {
      {"socket folder is a file", file / "dsb.sock", "",
       "broker.socket's folder " + file.string() + " is a file, not a folder"},
      {"state_dir is a file", ok_socket, "state_dir = \"" + file.string() + "\"",
       "broker.state_dir " + file.string() + " is a file, not a folder"},
      {"log_file is a folder", ok_socket, "log_file = \"/tmp\"",
       "broker.log_file /tmp is a folder, not a file"},
      {"socket path is a file", file, "", "broker.socket " + file.string() + " exists and is not "
                                          "a socket"},
      {"state_dir below a writable folder", ok_socket, "state_dir = \"/tmp\"",
       "broker.state_dir /tmp: /tmp is writable by group or others"},
  };
  for (const Case& c : cases) {
    std::string out;
    EXPECT_EQ(Run(WriteConfig(c.socket, c.extra), &out, /*check=*/true), 2) << c.what << out;
    EXPECT_TRUE(Contains(out, c.expect)) << c.what << ": " << out;
  }
  // A good one passes and creates nothing.
  std::string out;
  EXPECT_EQ(Run(WriteConfig(ok_socket, "state_dir = \"" + (dir_.path() / "st").string() + "\""),
                &out, true),
            0)
      << out;
  EXPECT_FALSE(fs::exists(dir_.path() / "run"));
  EXPECT_FALSE(fs::exists(dir_.path() / "st"));
  // A broker file others may change.
  const fs::path config = WriteConfig(ok_socket);
  ASSERT_EQ(::chmod(config.c_str(), 0666), 0);
  out.clear();
  EXPECT_EQ(Run(config, &out, true), 2) << out;
  EXPECT_TRUE(Contains(out, config.string() + ": config file has mode 0666")) << out;
  EXPECT_TRUE(Contains(out, "chmod 600 " + config.string())) << out;
}

TEST_F(SecureFiles, ClusterAndKeyFilesAreCheckedNamingKeyOwnerAndMode) {
  dsb::testing::TestClusterSpec spec;
  spec.brokers = 1;
  spec.stem = prefix_.substr(0, 16);
  spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 8\n";
  const auto files = dsb::testing::WriteTestCluster(dir_.path(), spec);
  const fs::path config = files.configs.at(0);
  const fs::path key = dir_.path() / "cluster.key";
  std::string out;
  EXPECT_EQ(Run(config, &out, true), 0) << out;

  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  out.clear();
  EXPECT_EQ(Run(config, &out, true), 2) << out;
  EXPECT_TRUE(Contains(out, "broker.key_file")) << out;
  EXPECT_TRUE(Contains(out, "mode 0644")) << out;
  EXPECT_TRUE(Contains(out, "chmod 600 " + key.string())) << out;

  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  if (auto mallory = User()) {
    ASSERT_EQ(::chown(key.c_str(), mallory->uid(), mallory->gid()), 0);
    out.clear();
    EXPECT_EQ(Run(config, &out, true), 2) << out;
    EXPECT_TRUE(Contains(out, "owned by uid " + std::to_string(mallory->uid()) + " (" +
                                  mallory->name() + ")"))
        << out;
    ASSERT_EQ(::chown(key.c_str(), 0, 0), 0);
  }

  // The cluster file others may change; then missing: named under broker.cluster.
  const fs::path cluster = dir_.path() / "cluster.toml";
  ASSERT_EQ(::chmod(cluster.c_str(), 0646), 0);
  out.clear();
  EXPECT_EQ(Run(config, &out, true), 2) << out;
  EXPECT_TRUE(Contains(out, cluster.string() + ": config file has mode 0646")) << out;
  fs::remove(cluster);
  out.clear();
  EXPECT_EQ(Run(config, &out, true), 2) << out;
  EXPECT_TRUE(Contains(out, config.string() + ": broker.cluster: " + cluster.string() +
                                ": cannot read: No such file"))
      << out;
}

}  // namespace
