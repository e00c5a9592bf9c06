// secure_fs.h and InstanceLock against planted folders, links and files
// (issue 9). Ownership cases chown to a uid no process of the test runs as,
// so they need root; without it they are skipped with the reason.
#include "broker/secure_fs.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "broker/instance_lock.h"
#include "tests/support/unique_name.h"

namespace dsb::broker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uid_t kStranger = 4242;  // not root, not us; no such user needed

#define REQUIRE_ROOT()                                                  \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown to another uid)"

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteText(const fs::path& p, const std::string& text, mode_t mode) {
  std::ofstream(p) << text;
  ASSERT_EQ(::chmod(p.c_str(), mode), 0);
}

class SecureFs : public ::testing::Test {
 protected:
  // mkdtemp: 0700, ours, in sticky /tmp: a private folder.
  testing::ScratchDir dir_{"dsb-securefs"};
  fs::path P(const std::string& rel) const { return dir_.path() / rel; }
};

TEST_F(SecureFs, AScratchFolderIsPrivate) {
  EXPECT_TRUE(CheckPrivateFolder(dir_.path(), "broker.state_dir").ok());
}

TEST_F(SecureFs, EnsureMakesMissingFoldersWithTheirModesAndListsThem) {
  std::vector<fs::path> created;
  const fs::path f = P("a/b/run");
  const mode_t old = ::umask(077);  // the modes must not depend on the umask
  const Status st = EnsurePrivateFolder(f, "broker.socket's folder",
                                        {.mode = 0750, .group = ::getegid()}, &created);
  ::umask(old);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(created.size(), 3u);
  EXPECT_EQ(created[0], P("a"));
  EXPECT_EQ(created[2], f);
  EXPECT_EQ(ModeOf(P("a")), 0755u);
  EXPECT_EQ(ModeOf(P("a/b")), 0755u);
  EXPECT_EQ(ModeOf(f), 0750u);
  // An existing private folder is fine and makes nothing.
  std::vector<fs::path> again;
  EXPECT_TRUE(EnsurePrivateFolder(f, "x", {.mode = 0700, .group = std::nullopt}, &again).ok());
  EXPECT_TRUE(again.empty());
  // Removal goes innermost first, and only empty folders.
  std::ofstream(P("a/keep")) << "x";
  const std::vector<fs::path> removed = RemoveCreatedFolders(created);
  EXPECT_EQ(removed.size(), 2u);
  EXPECT_FALSE(fs::exists(f));
  EXPECT_TRUE(fs::exists(P("a")));
}

TEST_F(SecureFs, RefusesAFolderOfAnotherUserNamingOwnerModeAndWhatToDo) {
  REQUIRE_ROOT();
  fs::create_directory(P("theirs"));
  ASSERT_EQ(::chmod(P("theirs").c_str(), 0755), 0);
  ASSERT_EQ(::chown(P("theirs").c_str(), kStranger, kStranger), 0);
  const Status st = CheckPrivateFolder(P("theirs"), "broker.state_dir");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Errc::kConfig);
  EXPECT_THAT(st.message(), HasSubstr("broker.state_dir " + P("theirs").string()));
  EXPECT_THAT(st.message(), HasSubstr("owned by uid 4242"));
  EXPECT_THAT(st.message(), HasSubstr("mode 0755"));
  EXPECT_THAT(st.message(), HasSubstr("use a folder only this broker can write, e.g. /run/dsb"));
  // Below it too (the other user could rename our folder away), and nothing
  // is made inside it.
  fs::create_directory(P("theirs/ours"));
  EXPECT_THAT(CheckPrivateFolder(P("theirs/ours"), "x").message(),
              HasSubstr(P("theirs").string() + " is owned by uid 4242"));
  EXPECT_FALSE(EnsurePrivateFolder(P("theirs/new"), "x", {}).ok());
  EXPECT_FALSE(fs::exists(P("theirs/new")));
}

TEST_F(SecureFs, RefusesGroupOrWorldWritableFoldersUnlessStickyWithOurChild) {
  fs::create_directory(P("open"));
  ASSERT_EQ(::chmod(P("open").c_str(), 0770), 0);
  Status st = CheckPrivateFolder(P("open"), "broker.socket's folder");
  EXPECT_THAT(st.message(), HasSubstr("writable by group or others"));
  EXPECT_THAT(st.message(), HasSubstr("chmod go-w " + P("open").string()));

  // A writable, non-sticky parent: anyone could rename the folder below.
  fs::create_directory(P("open/run"));
  st = CheckPrivateFolder(P("open/run"), "x");
  EXPECT_THAT(st.message(), HasSubstr(P("open").string() + " is writable by group or others and "
                                                            "not sticky"));
  EXPECT_FALSE(EnsurePrivateFolder(P("open/new"), "x", {}).ok());
  EXPECT_FALSE(fs::exists(P("open/new")));

  // Sticky like /tmp, with our folder below: fine.
  ASSERT_EQ(::chmod(P("open").c_str(), 01777), 0);
  EXPECT_TRUE(CheckPrivateFolder(P("open/run"), "x").ok());
  EXPECT_TRUE(EnsurePrivateFolder(P("open/new"), "x", {}).ok());
}

TEST_F(SecureFs, StickyParentWithAnotherUsersChildIsRefused) {
  REQUIRE_ROOT();
  fs::create_directories(P("sticky/evil/run"));
  ASSERT_EQ(::chmod(P("sticky").c_str(), 01777), 0);
  ASSERT_EQ(::chown(P("sticky/evil").c_str(), kStranger, kStranger), 0);
  EXPECT_THAT(CheckPrivateFolder(P("sticky/evil/run"), "x").message(),
              HasSubstr(P("sticky/evil").string() + " is owned by uid 4242"));
}

TEST_F(SecureFs, LinksAreResolvedAndTheTargetIsJudged) {
  fs::create_directory(P("real"));
  fs::create_directory_symlink(P("real"), P("link"));
  EXPECT_TRUE(CheckPrivateFolder(P("link"), "x").ok());
  fs::create_directory(P("wide"));
  ASSERT_EQ(::chmod(P("wide").c_str(), 0777), 0);
  fs::create_directory_symlink(P("wide"), P("link2"));
  EXPECT_THAT(CheckPrivateFolder(P("link2"), "x").message(),
              HasSubstr(P("wide").string() + " is writable by group or others"));
}

TEST_F(SecureFs, AFileWhereAFolderBelongsIsNamed) {
  std::ofstream(P("f")) << "x";
  EXPECT_THAT(CheckPrivateFolderOrCreatable(P("f"), "broker.state_dir").message(),
              HasSubstr("broker.state_dir " + P("f").string() + " is a file, not a folder"));
  EXPECT_THAT(CheckPrivateFolderOrCreatable(P("f/sub"), "broker.state_dir").message(),
              HasSubstr(P("f").string() + " is a file, not a folder"));
  EXPECT_THAT(EnsurePrivateFolder(P("f"), "broker.state_dir", {}).message(),
              HasSubstr("is a file, not a folder"));
  // Missing below a private folder: creatable, and --check makes nothing.
  EXPECT_TRUE(CheckPrivateFolderOrCreatable(P("later/run"), "x").ok());
  EXPECT_FALSE(fs::exists(P("later")));
}

TEST_F(SecureFs, AtomicWriteReplacesAPlantedLinkAndNeverWritesThroughIt) {
  const fs::path victim = P("victim");
  WriteText(victim, "precious\n", 0600);
  fs::create_symlink(victim, P("ws1.state"));
  ASSERT_TRUE(WriteFileAtomically(P("ws1.state"), "{\"new\":1}\n").ok());
  EXPECT_EQ(Slurp(victim), "precious\n");
  EXPECT_FALSE(fs::is_symlink(P("ws1.state")));
  EXPECT_EQ(Slurp(P("ws1.state")), "{\"new\":1}\n");
  EXPECT_EQ(ModeOf(P("ws1.state")), 0600u);
  // The old fixed temporary name is of no use to a planter any more.
  fs::create_symlink(victim, P("ws1.state.tmp." + std::to_string(::getpid())));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(WriteFileAtomically(P("ws1.state"), "v2\n").ok());
  EXPECT_EQ(Slurp(victim), "precious\n");
  // No temporary file is left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir_.path())) entries += e.path().empty() ? 0 : 1;
  EXPECT_EQ(entries, 3);  // victim, ws1.state, the planted link
}

TEST_F(SecureFs, AtomicWriteFailsCleanlyWhereItCannotWrite) {
  const Status st = WriteFileAtomically(P("missing/x.state"), "x");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Errc::kInternal);
  EXPECT_THAT(st.message(), HasSubstr(P("missing/x.state").string()));
}

TEST_F(SecureFs, ReadsFollowNoLinkAndRefuseSpecialFiles) {
  WriteText(P("victim"), "secret", 0600);
  fs::create_symlink(P("victim"), P("ws1.epoch"));
  auto r = ReadFileNoFollow(P("ws1.epoch"), 1024);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("symbolic link"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("secret")));

  auto missing = ReadFileNoFollow(P("nope"), 1024);
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  ASSERT_EQ(::mkfifo(P("fifo").c_str(), 0600), 0);
  auto fifo = ReadFileNoFollow(P("fifo"), 1024);  // must not block
  EXPECT_THAT(fifo.status().message(), HasSubstr("a FIFO, not a regular file"));

  WriteText(P("big"), std::string(2000, 'x'), 0600);
  EXPECT_THAT(ReadFileNoFollow(P("big"), 1024).status().message(), HasSubstr("larger than"));
  auto ok = ReadFileNoFollow(P("victim"), 1024);
  ASSERT_TRUE(ok.ok() && ok->has_value());
  EXPECT_EQ(**ok, "secret");
}

TEST_F(SecureFs, TheLogIsOpenedWithoutFollowingALink) {
  WriteText(P("victim"), "precious\n", 0600);
  fs::create_symlink(P("victim"), P("broker.log"));
  auto fd = OpenForAppendNoFollow(P("broker.log"), "broker.log_file");
  ASSERT_FALSE(fd.ok());
  EXPECT_THAT(fd.status().message(),
              HasSubstr("broker.log_file " + P("broker.log").string() + ": is a symbolic link"));
  EXPECT_EQ(Slurp(P("victim")), "precious\n");
  EXPECT_EQ(ModeOf(P("victim")), 0600u);

  EXPECT_THAT(OpenForAppendNoFollow(dir_.path(), "broker.log_file").status().message(),
              HasSubstr("is a folder, not a file"));

  auto made = OpenForAppendNoFollow(P("new.log"), "broker.log_file");
  ASSERT_TRUE(made.ok()) << made.status().message();
  ::close(*made);
  EXPECT_EQ(ModeOf(P("new.log")) & 0022u, 0u);
}

TEST_F(SecureFs, ALogFileOfAnotherUserIsRefused) {
  REQUIRE_ROOT();
  WriteText(P("broker.log"), "", 0644);
  ASSERT_EQ(::chown(P("broker.log").c_str(), kStranger, kStranger), 0);
  EXPECT_THAT(OpenForAppendNoFollow(P("broker.log"), "broker.log_file").status().message(),
              HasSubstr("owned by uid 4242"));
  EXPECT_THAT(CheckWritableFileSlot(P("broker.log"), "broker.log_file").message(),
              HasSubstr("owned by uid 4242"));
  EXPECT_TRUE(CheckWritableFileSlot(P("absent.log"), "broker.log_file").ok());
  EXPECT_THAT(CheckWritableFileSlot(dir_.path(), "broker.log_file").message(),
              HasSubstr("is a folder, not a file"));
}

Status CheckFile(const fs::path& p, FileSecrecy s) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << p;
  Status st = CheckOperatorFile(fd, p, s == FileSecrecy::kSecret ? "key file" : "config file", s);
  ::close(fd);
  return st;
}

TEST_F(SecureFs, OperatorFilesMustBeOursAndWritableByNobodyElse) {
  WriteText(P("ws1.toml"), "x", 0644);
  EXPECT_TRUE(CheckFile(P("ws1.toml"), FileSecrecy::kConfig).ok());
  ASSERT_EQ(::chmod(P("ws1.toml").c_str(), 0664), 0);
  Status st = CheckFile(P("ws1.toml"), FileSecrecy::kConfig);
  EXPECT_THAT(st.message(), HasSubstr(P("ws1.toml").string() + ": config file has mode 0664"));
  EXPECT_THAT(st.message(), HasSubstr("chmod 600 " + P("ws1.toml").string()));

  WriteText(P("cluster.key"), "k", 0640);
  EXPECT_THAT(CheckFile(P("cluster.key"), FileSecrecy::kSecret).message(),
              HasSubstr("mode 0640: group or others may access it"));
  ASSERT_EQ(::chmod(P("cluster.key").c_str(), 0600), 0);
  EXPECT_TRUE(CheckFile(P("cluster.key"), FileSecrecy::kSecret).ok());
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(P("cluster.key").c_str(), kStranger, kStranger), 0);
    st = CheckFile(P("cluster.key"), FileSecrecy::kSecret);
    EXPECT_THAT(st.message(), HasSubstr("owned by uid 4242"));
    EXPECT_THAT(st.message(), HasSubstr("only root or the broker's user"));
  }
}

// ---------------------------------------------------------------------------
// InstanceLock

TEST_F(SecureFs, LockFilesAreMadePrivate) {
  auto lock = InstanceLock::Acquire(P("dsb.sock.lock"), "socket x");
  ASSERT_TRUE(lock.ok()) << lock.status().message();
  EXPECT_EQ(ModeOf(P("dsb.sock.lock")), 0600u);
  // A second one is refused with our pid, a number from our own file.
  auto second = InstanceLock::Acquire(P("dsb.sock.lock"), "socket x");
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(), HasSubstr("pid " + std::to_string(::getpid())));
}

TEST_F(SecureFs, AnOldGroupWritableLockOfOursIsNarrowed) {
  WriteText(P("old.lock"), "123\n", 0660);
  auto lock = InstanceLock::Acquire(P("old.lock"), "socket x");
  ASSERT_TRUE(lock.ok()) << lock.status().message();
  EXPECT_EQ(ModeOf(P("old.lock")), 0600u);
}

TEST_F(SecureFs, ALockFilePlantedByAnotherUserIsRefusedNamingItsOwnerNotItsText) {
  REQUIRE_ROOT();
  WriteText(P("seg.lock"), "31337 HACKED\n", 0644);
  ASSERT_EQ(::chown(P("seg.lock").c_str(), kStranger, kStranger), 0);
  auto lock = InstanceLock::Acquire(P("seg.lock"), "segment dsb-x-exch01 (target exch01)");
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), Errc::kBrokerUnavailable);
  EXPECT_THAT(lock.status().message(), HasSubstr("made by uid 4242"));
  EXPECT_THAT(lock.status().message(), HasSubstr("not by this broker"));
  EXPECT_THAT(lock.status().message(), HasSubstr("remove it as root"));
  EXPECT_THAT(lock.status().message(), Not(HasSubstr("HACKED")));
  EXPECT_THAT(lock.status().message(), Not(HasSubstr("31337")));
}

TEST_F(SecureFs, ALinkOrFifoAtTheLockNameIsRefused) {
  WriteText(P("victim"), "precious\n", 0644);
  fs::create_symlink(P("victim"), P("a.lock"));
  auto lock = InstanceLock::Acquire(P("a.lock"), "socket x");
  ASSERT_FALSE(lock.ok());
  EXPECT_THAT(lock.status().message(), HasSubstr("symbolic link"));
  EXPECT_EQ(Slurp(P("victim")), "precious\n");
  EXPECT_EQ(ModeOf(P("victim")), 0644u);
  ASSERT_EQ(::mkfifo(P("b.lock").c_str(), 0600), 0);
  EXPECT_THAT(InstanceLock::Acquire(P("b.lock"), "socket x").status().message(),
              HasSubstr("not a regular file"));
}

TEST_F(SecureFs, AHardLinkAtTheLockNameIsRefusedAndItsOtherNameKeptIntact) {
  // A group member may hard-link a segment (0660) to a lock file's name:
  // truncating the "lock" to write the pid would destroy that segment.
  WriteText(P("segment"), std::string(4096, 'S'), 0600);
  ASSERT_EQ(::link(P("segment").c_str(), P("seg.lock").c_str()), 0);
  auto lock = InstanceLock::Acquire(P("seg.lock"), "segment dsb-x-exch01 (target exch01)");
  ASSERT_FALSE(lock.ok());
  EXPECT_THAT(lock.status().message(), HasSubstr("has 2 names (a hard link"));
  EXPECT_EQ(Slurp(P("segment")), std::string(4096, 'S'));
}

TEST_F(SecureFs, ALinkOnTheWayIsTrustedOnlyIfNobodyElseCanChangeIt) {
  REQUIRE_ROOT();
  fs::create_directory(P("real"));
  // A link of another user (in a folder of ours): it could be re-pointed.
  fs::create_directory_symlink(P("real"), P("theirs"));
  ASSERT_EQ(::lchown(P("theirs").c_str(), kStranger, kStranger), 0);
  for (const fs::path& f : {P("theirs"), P("theirs/run")}) {
    EXPECT_THAT(CheckPrivateFolder(f, "broker.state_dir").message(),
                HasSubstr(P("theirs").string() + " is a symbolic link owned by uid 4242"))
        << f;
    EXPECT_THAT(CheckPrivateFolderOrCreatable(f, "broker.socket").message(),
                HasSubstr("is a symbolic link owned by uid 4242"));
    EXPECT_THAT(EnsurePrivateFolder(f, "broker.socket", {}).message(),
                HasSubstr("is a symbolic link owned by uid 4242"));
  }
  EXPECT_FALSE(fs::exists(P("real/run")));
  // Ours, pointing through a second link of theirs: the chain is followed.
  fs::create_directory_symlink(P("theirs"), P("ours"));
  EXPECT_THAT(CheckPrivateFolder(P("ours"), "x").message(),
              HasSubstr("is a symbolic link owned by uid 4242"));
  // Ours all the way: fine (as /var/run -> /run is).
  fs::create_directory_symlink(P("real"), P("ours2"));
  EXPECT_TRUE(CheckPrivateFolder(P("ours2"), "x").ok());
}

}  // namespace
}  // namespace dsb::broker
