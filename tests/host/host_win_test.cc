// The broker's host services on Windows, run under Wine (lane "host",
// issue 12): the state file's atomic replace, the one-broker lock between
// processes, the default paths. Real processes: this test starts itself again
// as a child (CreateProcessW, `--child ...` before GoogleTest's flags) and
// ends it with TerminateProcess, the Windows SIGKILL.
//
// What Wine shows and what it does not: share modes, MoveFileExW and
// TerminateProcess behave as on Windows here; security descriptors are
// stored and read back, but Wine enforces no access check the way Windows
// does, so a test that another account is kept out needs a real Windows host.
#include <windows.h>
// windows.h first: sddl.h uses its types.
#include <sddl.h>
// After windows.h: SetNamedSecurityInfoW.
#include <aclapi.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "broker/config/broker_config.h"
#include "broker/config/paths.h"
#include "broker/instance_lock.h"
#include "broker/secure_fs.h"
#include "broker/state_file.h"
#include "common/account.h"
#include "common/win_spawn.h"

namespace dsb::broker {
namespace {

namespace fs = std::filesystem;

// A fresh private folder under %TEMP% for one test, removed afterwards.
class TempFolder {
 public:
  TempFolder() {
    path_ = fs::temp_directory_path() /
            ("dsb-host-" + std::to_string(GetCurrentProcessId()) + "-" + std::to_string(next_++));
    const Status st = EnsurePrivateFolder(path_, "test folder", {});
    EXPECT_TRUE(st.ok()) << st.message();
  }
  ~TempFolder() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  static inline int next_ = 0;
  fs::path path_;
};

// A child process of this test, its stdout read line by line; ended with
// TerminateProcess (by handle: only our own child) unless it exited.
class Child {
 public:
  explicit Child(const std::wstring& args) {
    SECURITY_ATTRIBUTES sa{sizeof sa, nullptr, TRUE};
    HANDLE write_end = nullptr;
    EXPECT_TRUE(CreatePipe(&read_, &write_end, &sa, 0));
    SetHandleInformation(read_, HANDLE_FLAG_INHERIT, 0);
    wchar_t self[MAX_PATH];
    GetModuleFileNameW(nullptr, self, MAX_PATH);
    std::wstring command = L"\"" + std::wstring(self) + L"\" " + args;
    STARTUPINFOW si{};
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdOutput = write_end;
    si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    PROCESS_INFORMATION pi{};
    started_ = dsb::win::StartRetryingWine([&] {
                 return CreateProcessW(nullptr, command.data(), nullptr, nullptr, TRUE, 0,
                                       nullptr, nullptr, &si, &pi);
               }) != 0;
    EXPECT_TRUE(started_) << "CreateProcessW failed: " << GetLastError();
    CloseHandle(write_end);  // so a read sees EOF when the child ends
    if (started_) {
      process_ = pi.hProcess;
      CloseHandle(pi.hThread);
      pid_ = pi.dwProcessId;
    }
  }
  ~Child() {
    Kill();
    if (read_ != nullptr) CloseHandle(read_);
  }
  // The next line the child writes (without the newline); "" at EOF.
  // Blocks: the child's line is the event this waits for.
  std::string ReadLine() {
    std::string line;
    char c = 0;
    DWORD n = 0;
    while (ReadFile(read_, &c, 1, &n, nullptr) && n == 1) {
      if (c == '\n') return line;
      if (c != '\r') line += c;
    }
    return line;
  }
  void Kill() {
    if (process_ == nullptr) return;
    TerminateProcess(process_, 9);
    WaitForSingleObject(process_, 30000);
    CloseHandle(process_);
    process_ = nullptr;
  }
  DWORD pid() const { return pid_; }

 private:
  bool started_ = false;
  HANDLE read_ = nullptr;
  HANDLE process_ = nullptr;
  DWORD pid_ = 0;
};

// A state text that says whether it is whole: "<n>|<n copies of 'x'>|<n>\n"
// with n large enough that a write takes several WriteFile calls' worth.
std::string Version(int i) {
  const std::size_t n = 200000 + static_cast<std::size_t>(i % 7) * 1000;
  return std::to_string(i) + "|" + std::string(n, static_cast<char>('a' + i % 26)) + "|" +
         std::to_string(i) + "\n";
}

// True if `text` is exactly Version(i) for some i.
bool IsWhole(const std::string& text) {
  const std::size_t bar = text.find('|');
  if (bar == std::string::npos) return false;
  const int i = std::atoi(text.substr(0, bar).c_str());
  return text == Version(i);
}

TEST(HostWin, StateFileReaderNeverSeesAHalfFile) {
  TempFolder dir;
  const fs::path file = dir.path() / "ws1.state";
  ASSERT_TRUE(WriteFileSynced(file, Version(0)).ok());
  // A child rewrites the file as fast as it can (saying nothing more, so
  // its stdout never fills); this process reads it.
  Child writer(L"--child write-quietly \"" + file.wstring() + L"\"");
  ASSERT_EQ(writer.ReadLine(), "writing");
  int reads = 0;
  int versions_seen = 0;
  std::string last;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  // Bounded: at least 300 reads and until 3 distinct versions are seen (a
  // loaded machine may start the writer late), at most 100000 reads or 20 s.
  while ((reads < 300 || versions_seen < 3) && reads < 100000 &&
         std::chrono::steady_clock::now() < end) {
    Result<std::optional<std::string>> text = ReadFileNoFollow(file, 1 << 20);
    ASSERT_TRUE(text.ok()) << text.status().message();
    ASSERT_TRUE(text->has_value());
    ASSERT_TRUE(IsWhole(**text)) << "read " << reads << " saw a torn file of "
                                 << (*text)->size() << " bytes";
    if (**text != last) ++versions_seen;
    last = **text;
    ++reads;
  }
  EXPECT_GE(versions_seen, 3) << "the writer made too few versions in " << reads << " reads";
}

TEST(HostWin, StateFileKilledWriterLeavesAWholeFile) {
  TempFolder dir;
  const fs::path file = dir.path() / "ws1.state";
  ASSERT_TRUE(WriteFileSynced(file, Version(0)).ok());
  for (int round = 0; round < 3; ++round) {
    Child writer(L"--child write-loop \"" + file.wstring() + L"\"");
    ASSERT_EQ(writer.ReadLine(), "writing");
    // Let it replace the file a few times, then kill it wherever it is:
    // before, inside or after a write or the rename.
    for (int i = 0; i < 3 + round; ++i) ASSERT_FALSE(writer.ReadLine().empty());
    writer.Kill();
    Result<std::optional<std::string>> text = ReadFileNoFollow(file, 1 << 20);
    ASSERT_TRUE(text.ok()) << text.status().message();
    ASSERT_TRUE(text->has_value());
    EXPECT_TRUE(IsWhole(**text)) << "round " << round << ": " << (*text)->size() << " bytes";
  }
  // A killed writer may leave its temporary file; the state file is apart.
  int others = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    if (e.path().filename() != "ws1.state") {
      EXPECT_NE(e.path().filename().string().find("ws1.state.tmp."), std::string::npos)
          << e.path().string();
      ++others;
    }
  }
  EXPECT_LE(others, 3);
}

TEST(HostWin, AtomicWriteReplacesAndLeavesNoTemporaryFile) {
  TempFolder dir;
  const fs::path file = dir.path() / "ws1.state";
  ASSERT_TRUE(WriteFileSynced(file, "one\n").ok());
  ASSERT_TRUE(WriteFileSynced(file, "two\n").ok());
  Result<std::optional<std::string>> text = ReadFileNoFollow(file, 1024);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(**text, "two\n");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1);
  Result<std::optional<std::string>> missing = ReadFileNoFollow(dir.path() / "none", 1024);
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST(HostWin, SecondProcessIsRefusedTheLockUntilTheFirstIsTerminated) {
  TempFolder dir;
  const fs::path lock_file = InstanceLock::Beside(dir.path() / "ws1.state");
  Child holder(L"--child hold-lock \"" + lock_file.wstring() + L"\"");
  ASSERT_EQ(holder.ReadLine(), "locked");
  Result<InstanceLock> second = InstanceLock::Acquire(lock_file, "state file");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Errc::kBrokerUnavailable);
  EXPECT_NE(second.status().message().find("in use by another broker (pid " +
                                           std::to_string(holder.pid())),
            std::string::npos)
      << second.status().message();
  holder.Kill();  // TerminateProcess: the OS closes the holder's handle
  Result<InstanceLock> third = InstanceLock::Acquire(lock_file, "state file");
  ASSERT_TRUE(third.ok()) << third.status().message();
}

TEST(HostWin, LockInOneProcessRefusesASecondAcquireAndFreesOnDestruction) {
  TempFolder dir;
  const fs::path lock_file = dir.path() / "seg.lock";
  {
    Result<InstanceLock> first = InstanceLock::Acquire(lock_file, "segment dsb-ws1-exch01");
    ASSERT_TRUE(first.ok()) << first.status().message();
    Result<InstanceLock> again = InstanceLock::Acquire(lock_file, "segment dsb-ws1-exch01");
    EXPECT_FALSE(again.ok());
    first->RemoveFile();
  }
  EXPECT_FALSE(fs::exists(lock_file)) << "RemoveFile: gone once the handle closed";
  EXPECT_TRUE(InstanceLock::Acquire(lock_file, "segment dsb-ws1-exch01").ok());
}

TEST(HostWin, PipeAndSegmentLocksLiveInTheLockFolder) {
  const config::PlatformPaths paths = config::DefaultPaths();
  EXPECT_EQ(InstanceLock::Beside(fs::path("\\\\.\\pipe\\dsb-ws1")),
            paths.lock_dir / "dsb-ws1.lock");
  EXPECT_EQ(InstanceLock::ForSegment("Local\\dsb-ws1-exch01"),
            paths.lock_dir / ".dsb-lock-dsb-ws1-exch01");
}

TEST(HostWin, DefaultPathsAreUnderProgramData) {
  const config::PlatformPaths paths = config::DefaultPaths();
  wchar_t env[MAX_PATH] = {};
  ASSERT_GT(GetEnvironmentVariableW(L"ProgramData", env, MAX_PATH), 0u);
  const fs::path dsb = fs::path(env) / "dsb";
  EXPECT_EQ(paths.config_file, dsb / "broker.toml");
  EXPECT_EQ(paths.state_dir, dsb / "state");
  ASSERT_TRUE(paths.log_file.has_value());
  EXPECT_EQ(*paths.log_file, dsb / "log" / "dsb-broker.log");
  EXPECT_EQ(paths.lock_dir, dsb / "run");
  EXPECT_EQ(config::DefaultLocalEndpoint("ws1"), fs::path("\\\\.\\pipe\\dsb-ws1"));
  EXPECT_TRUE(config::IsNamedPipePath("\\\\.\\pipe\\dsb-ws1"));
  EXPECT_TRUE(config::IsNamedPipePath("\\\\.\\PIPE\\x"));
  EXPECT_FALSE(config::IsNamedPipePath("C:\\ProgramData\\dsb"));
  EXPECT_FALSE(config::IsNamedPipePath("\\\\.\\pipe\\"));
}

TEST(HostWin, PrivateFolderIsOwnedByThisAccountAndRefusesAFile) {
  TempFolder dir;
  EXPECT_TRUE(CheckPrivateFolder(dir.path(), "broker.state_dir").ok());
  const fs::path file = dir.path() / "plain";
  ASSERT_TRUE(WriteFileSynced(file, "x").ok());
  const Status st = CheckPrivateFolder(file, "broker.state_dir");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("is a file, not a folder"), std::string::npos) << st.message();
  EXPECT_TRUE(CheckPrivateFolderOrCreatable(dir.path() / "not" / "yet", "broker.state_dir").ok());
  std::vector<fs::path> created;
  ASSERT_TRUE(EnsurePrivateFolder(dir.path() / "a" / "b", "broker.state_dir", {}, &created).ok());
  EXPECT_EQ(created.size(), 2u);
  EXPECT_EQ(RemoveCreatedFolders(created).size(), 2u);
  EXPECT_TRUE(IsTrustedOwner(CurrentAccount()));
  EXPECT_TRUE(IsTrustedOwner("S-1-5-18"));
  EXPECT_FALSE(IsTrustedOwner("S-1-5-32-545"));  // BUILTIN\Users
}

// A folder whose DACL lets Everyone write and delete in it. Wine applies no
// descriptor given to CreateDirectoryW, but maps one set afterwards to the
// Unix mode (Everyone's entry becomes the "other" bits) and reads it back.
void MakeOpenFolder(const fs::path& p) {
  ASSERT_TRUE(CreateDirectoryW(p.wstring().c_str(), nullptr)) << GetLastError();
  PSECURITY_DESCRIPTOR sd = nullptr;
  ASSERT_TRUE(ConvertStringSecurityDescriptorToSecurityDescriptorA(
      ("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;" + CurrentAccount() + ")(A;OICI;FA;;;WD)").c_str(),
      SDDL_REVISION_1, &sd, nullptr));
  BOOL present = FALSE;
  BOOL defaulted = FALSE;
  PACL dacl = nullptr;
  ASSERT_TRUE(GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted));
  std::wstring name = p.wstring();
  const DWORD rc = SetNamedSecurityInfoW(
      name.data(), SE_FILE_OBJECT, DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
      nullptr, nullptr, dacl, nullptr);
  LocalFree(sd);
  ASSERT_EQ(rc, static_cast<DWORD>(ERROR_SUCCESS));
}

TEST(HostWin, AnExistingLockFolderOthersMayWriteIsRefused) {
  // Review fix 7: an existing lock folder is checked, not only a new one.
  TempFolder dir;
  const fs::path run = dir.path() / "run";
  MakeOpenFolder(run);
  Result<InstanceLock> lock = InstanceLock::Acquire(run / "dsb-ws1.lock", "pipe");
  ASSERT_FALSE(lock.ok());
  EXPECT_NE(lock.status().message().find("lock folder"), std::string::npos)
      << lock.status().message();
}

TEST(HostWin, AParentFolderOthersMayChangeIsRefused) {
  // Review fix 6: the chain rule. Wine shows the check reading what is
  // stored; that Windows would let that account swap the folder below for a
  // junction needs a real host.
  TempFolder dir;
  const fs::path open = dir.path() / "open";
  MakeOpenFolder(open);
  std::vector<fs::path> created;
  const Status st = EnsurePrivateFolder(open / "state", "broker.state_dir", {}, &created);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("the ACL of its parent " + open.string()), std::string::npos)
      << st.message();
  RemoveCreatedFolders(created);
  // The same folder below a private parent is fine.
  EXPECT_TRUE(EnsurePrivateFolder(dir.path() / "closed" / "state", "broker.state_dir", {}).ok());
}

TEST(HostWin, AclEntriesOtherThanAllowAndDenyAreRefused) {
  // Review fix 8, on an ACL built in memory (Wine keeps no such entries on
  // files): an allow entry for Everyone turned into a callback allow entry
  // (the same layout, type 9) is refused even for rights it seems not to
  // grant; a deny entry and trusted allow entries pass.
  PSECURITY_DESCRIPTOR sd = nullptr;
  ASSERT_TRUE(ConvertStringSecurityDescriptorToSecurityDescriptorA(
      "D:P(A;;FA;;;SY)(D;;FA;;;WD)(A;;FR;;;WD)", SDDL_REVISION_1, &sd, nullptr));
  BOOL present = FALSE;
  BOOL defaulted = FALSE;
  PACL dacl = nullptr;
  ASSERT_TRUE(GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted));
  EXPECT_TRUE(UntrustedAclHolders(dacl, FILE_WRITE_DATA).empty());
  void* ace = nullptr;
  ASSERT_TRUE(GetAce(dacl, 2, &ace));
  static_cast<ACE_HEADER*>(ace)->AceType = ACCESS_ALLOWED_CALLBACK_ACE_TYPE;
  const std::vector<std::string> holders = UntrustedAclHolders(dacl, FILE_WRITE_DATA);
  LocalFree(sd);
  ASSERT_EQ(holders.size(), 1u);
  EXPECT_NE(holders[0].find("type 9"), std::string::npos) << holders[0];
}

TEST(HostWin, ConfigPathsAreReadAsUtf8AndPipeNamesAreAscii) {
  // Review fix 9: a path in the TOML file (UTF-8) reaches the file system
  // as the same characters, whatever the ANSI code page.
  const std::string text =
      "[broker]\nid = \"ws1\"\nshm_prefix = \"ws1\"\nstate_dir = \"C:\\\\Z\xc3\xbcrich\\\\state\"\n"
      "\n[[targets]]\nname = \"exch01\"\nlimit = 4\n";
  Result<config::BrokerConfig> c = config::ParseBrokerConfig(text, "ws1.toml", "C:\\dsb");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_TRUE(c->state_dir.has_value());
  EXPECT_EQ(c->state_dir->wstring(), L"C:\\Z\u00fcrich\\state");
  // A pipe name: ASCII only (it travels through the ANSI code page).
  Result<config::BrokerConfig> pipe = config::ParseBrokerConfig(
      "[broker]\nid = \"ws1\"\nshm_prefix = \"ws1\"\nsocket = \"\\\\\\\\.\\\\pipe\\\\dsb-Z\xc3\xbcrich\"\n"
      "\n[[targets]]\nname = \"exch01\"\nlimit = 4\n",
      "ws1.toml", "C:\\dsb");
  ASSERT_FALSE(pipe.ok());
  EXPECT_NE(pipe.status().message().find("ASCII"), std::string::npos) << pipe.status().message();
}

TEST(HostWin, LogFileOpensForAppendAndRefusesAFolder) {
  TempFolder dir;
  Result<int> fd = OpenForAppendNoFollow(dir.path() / "broker.log", "broker.log_file");
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_GE(*fd, 0);
  Result<int> folder = OpenForAppendNoFollow(dir.path(), "broker.log_file");
  EXPECT_FALSE(folder.ok());
}

TEST(HostWin, SecretFileInAPrivateFolderIsReadAndOneOthersMayReadIsRefused) {
  TempFolder dir;
  const fs::path key = dir.path() / "cluster.key";
  const std::string hex(64, 'a');
  ASSERT_TRUE(WriteFileSynced(key, hex + "\n").ok());  // inherits the folder's protected DACL
  Result<std::vector<std::uint8_t>> bytes = ReadSecretFile(key, "cluster key file", 4096);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  EXPECT_EQ(std::string(bytes->begin(), bytes->end()), hex + "\n");

  // A key file that Everyone may read. Where Wine cannot keep a descriptor
  // (no extended attributes on the file system, as here) it maps the DACL to
  // the Unix mode: only the owner's and Everyone's entries survive, so the
  // test grants Everyone (S-1-1-0), which Wine reads back; an entry for
  // BUILTIN\Users would be dropped there. Windows keeps either.
  PSECURITY_DESCRIPTOR sd = nullptr;
  ASSERT_TRUE(ConvertStringSecurityDescriptorToSecurityDescriptorA(
      ("D:P(A;;FA;;;SY)(A;;FA;;;" + CurrentAccount() + ")(A;;FR;;;WD)").c_str(), SDDL_REVISION_1,
      &sd, nullptr));
  SECURITY_ATTRIBUTES sa{sizeof sa, sd, FALSE};
  const fs::path open_key = dir.path() / "open.key";
  HANDLE h = CreateFileW(open_key.wstring().c_str(), GENERIC_WRITE, 0, &sa, CREATE_NEW,
                         FILE_ATTRIBUTE_NORMAL, nullptr);
  LocalFree(sd);
  ASSERT_NE(h, INVALID_HANDLE_VALUE);
  DWORD written = 0;
  WriteFile(h, hex.data(), static_cast<DWORD>(hex.size()), &written, nullptr);
  CloseHandle(h);
  Result<std::vector<std::uint8_t>> refused = ReadSecretFile(open_key, "cluster key file", 4096);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("access it"), std::string::npos)
      << refused.status().message();

  Result<std::vector<std::uint8_t>> missing =
      ReadSecretFile(dir.path() / "none.key", "cluster key file", 4096);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("cannot open cluster key file"), std::string::npos);
}

// ---- the children ----

int WriteLoop(const fs::path& file, bool quiet) {
  std::printf("writing\n");
  std::fflush(stdout);
  for (int i = 1; i < 1000000; ++i) {
    if (!WriteFileSynced(file, Version(i)).ok()) return 3;
    if (quiet) continue;
    std::printf("%d\n", i);  // one line per finished replace
    std::fflush(stdout);
  }
  return 0;
}

int HoldLock(const fs::path& file) {
  Result<InstanceLock> lock = InstanceLock::Acquire(file, "state file");
  if (!lock.ok()) {
    std::fprintf(stderr, "child: %s\n", lock.status().message().c_str());
    return 3;
  }
  std::printf("locked\n");
  std::fflush(stdout);
  Sleep(INFINITE);  // until the parent terminates it
  return 0;
}

}  // namespace
}  // namespace dsb::broker

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--child") {
    const std::string mode = argv[2];
    const std::filesystem::path file = argv[3];
    if (mode == "write-loop") return dsb::broker::WriteLoop(file, false);
    if (mode == "write-quietly") return dsb::broker::WriteLoop(file, true);
    if (mode == "hold-lock") return dsb::broker::HoldLock(file);
    return 2;
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
