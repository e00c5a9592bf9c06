// The local transport on Windows (issue 12): the broker's named pipe
// (common/local_frame_server_win.h) and the client side of local_frame.h,
// between real processes under Wine. This executable is also its own child:
// `local_pipe_test --child <mode> <pipe>` connects to the test's pipe and
// plays a client (see ChildMain).
//
// What Wine shows here and what only a real Windows host would: frames both
// ways, deadlines, the peer's pid and SID, death = the pipe breaking, a
// second server refused (by Open's WaitNamedPipeW probe: Wine ignores
// FILE_FLAG_FIRST_PIPE_INSTANCE) and the stored security descriptor hold
// under Wine. Wine does not check a client's CreateFileW against the
// descriptor, so "a user outside the group is refused" is not tested here.
// Asio first: it includes winsock2.h, which must come before windows.h.
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
// After Asio:
#include <windows.h>
// After windows.h:
#include <aclapi.h>
#include <gtest/gtest.h>
#include <sddl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "common/account.h"
#include "common/account_win.h"
#include "common/local_frame.h"
#include "common/local_frame_server_win.h"
#include "common/win_spawn.h"

namespace dsb {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Stream = LocalPipeAcceptor::Stream;

std::string UniquePipe(const char* what) {
  static std::atomic<int> n{0};
  return "\\\\.\\pipe\\dsb-test-" + std::string(what) + "-" +
         std::to_string(::GetCurrentProcessId()) + "-" + std::to_string(n++);
}

Deadline In(std::chrono::milliseconds d) { return std::chrono::steady_clock::now() + d; }

// Runs `io` until `done` or `limit` has passed. True if done.
template <class Pred>
bool RunUntil(asio::io_context& io, Pred done, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < end) {
    io.restart();
    io.run_for(20ms);
  }
  return done();
}

// A server: the acceptor on its own io_context, driven by the test thread.
struct Server {
  asio::io_context io;
  LocalPipeAcceptor acceptor{io.get_executor()};
  std::string name;

  explicit Server(const char* what) : name(UniquePipe(what)) {}
  Status Open(const std::optional<GroupId>& group = std::nullopt) {
    return acceptor.Open(name, group);
  }

  // One connection within `limit` (Wine starts a process in ~0.3-1 s).
  std::optional<Stream> AcceptOne(std::chrono::milliseconds limit = 30s) {
    std::optional<Stream> got;
    boost::system::error_code result;
    bool done = false;
    acceptor.async_accept([&](boost::system::error_code ec, Stream s) {
      result = ec;
      if (!ec) got.emplace(std::move(s));
      done = true;
    });
    if (!RunUntil(
            io, [&] { return done; }, limit)) {
      boost::system::error_code ignored;
      acceptor.close(ignored);  // aborts the accept; its handler runs below
      RunUntil(
          io, [&] { return done; }, 5s);
      ADD_FAILURE() << "no client connected to " << name << " within " << limit.count() << " ms";
      return std::nullopt;
    }
    EXPECT_FALSE(result) << result.message();
    return got;
  }

  // One frame from `s`: its payload, or the error that ended the read.
  Result<std::string> ReadFrameFrom(Stream& s, std::chrono::milliseconds limit = 30s) {
    unsigned char header[kFrameHeaderBytes];
    std::string body;
    boost::system::error_code result;
    bool done = false;
    asio::async_read(s, asio::buffer(header), [&](boost::system::error_code ec, std::size_t) {
      if (ec) {
        result = ec;
        done = true;
        return;
      }
      body.resize(DecodeFrameLength(header));
      asio::async_read(s, asio::buffer(body), [&](boost::system::error_code ec2, std::size_t) {
        result = ec2;
        done = true;
      });
    });
    if (!RunUntil(
            io, [&] { return done; }, limit)) {
      boost::system::error_code ignored;
      s.cancel(ignored);
      RunUntil(
          io, [&] { return done; }, 5s);
      return Status{Errc::kTimeout, "no frame within the limit"};
    }
    if (result) return Status{Errc::kBrokerUnavailable, result.message()};
    return body;
  }

  void WriteRaw(Stream& s, const std::string& bytes) {
    bool done = false;
    boost::system::error_code result;
    asio::async_write(s, asio::buffer(bytes), [&](boost::system::error_code ec, std::size_t) {
      result = ec;
      done = true;
    });
    ASSERT_TRUE(RunUntil(
        io, [&] { return done; }, 30s))
        << "write did not finish";
    ASSERT_FALSE(result) << result.message();
  }
  void WriteFrameTo(Stream& s, const std::string& payload) { WriteRaw(s, *EncodeFrame(payload)); }
};

// A child process of this executable, ended (TerminateProcess) if still running.
class Child {
 public:
  Child(const std::string& mode, const std::string& pipe) {
    wchar_t exe[MAX_PATH];
    const DWORD n = ::GetModuleFileNameW(nullptr, exe, MAX_PATH);
    EXPECT_GT(n, 0u);
    std::wstring cmd =
        L"\"" + std::wstring(exe, n) + L"\" --child " + win::Widen(mode) + L" " + win::Widen(pipe);
    STARTUPINFOW si{};
    si.cb = sizeof si;
    if (!win::StartRetryingWine([&] {
          return ::CreateProcessW(exe, cmd.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr,
                                  &si, &pi_);
        })) {
      ADD_FAILURE() << "CreateProcessW: " << win::ErrorText(::GetLastError());
      pi_ = {};
    } else {
      ::CloseHandle(pi_.hThread);
    }
  }
  ~Child() {
    if (pi_.hProcess == nullptr) return;
    if (::WaitForSingleObject(pi_.hProcess, 0) == WAIT_TIMEOUT) {
      ::TerminateProcess(pi_.hProcess, 99);
      ::WaitForSingleObject(pi_.hProcess, 30000);
    }
    ::CloseHandle(pi_.hProcess);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  ProcessId pid() const { return static_cast<ProcessId>(pi_.dwProcessId); }
  void Kill() { ::TerminateProcess(pi_.hProcess, 9); }
  // The exit code, or nullopt if it did not end within `limit`.
  std::optional<DWORD> Wait(std::chrono::milliseconds limit = 30s) {
    if (::WaitForSingleObject(pi_.hProcess, static_cast<DWORD>(limit.count())) != WAIT_OBJECT_0) {
      return std::nullopt;
    }
    DWORD code = 0;
    ::GetExitCodeProcess(pi_.hProcess, &code);
    return code;
  }

 private:
  PROCESS_INFORMATION pi_{};
};

// A client in this process, connected with the client library's trust rule.
LocalHandle ConnectHere(const std::string& pipe) {
  auto trust = ResolveBrokerTrust("", "", "(test)", "");
  EXPECT_TRUE(trust.ok()) << trust.status().message();
  if (!trust.ok()) return kNoLocalHandle;
  auto conn = ConnectBroker(pipe, *trust, In(10s));
  EXPECT_TRUE(conn.ok()) << conn.status().message();
  return conn.ok() ? conn->fd : kNoLocalHandle;
}

// One connection to `server` from this process: ConnectHere on a thread while
// the server accepts. Sets `client` (kNoLocalHandle if the connect failed)
// and returns the server's side (nullopt if none came).
std::optional<Stream> ConnectPair(Server& server, LocalHandle& client) {
  std::thread connector([&] { client = ConnectHere(server.name); });
  auto conn = server.AcceptOne();
  connector.join();
  return conn;
}

TEST(LocalPipe, FramesGoBothWaysAndEachSideKnowsTheOthersProcessAndAccount) {
  Server server("both-ways");
  ASSERT_TRUE(server.Open().ok());
  Child child("echo", server.name);
  auto conn = server.AcceptOne();
  ASSERT_TRUE(conn.has_value());

  // The broker's view of its client: the pipe's client process and its token.
  auto peer = GetPeerCredentials(conn->native_handle());
  ASSERT_TRUE(peer.ok()) << peer.status().message();
  EXPECT_EQ(peer->pid, child.pid());
  EXPECT_EQ(peer->uid, CurrentAccount());
  EXPECT_EQ(peer->uid.rfind("S-1-", 0), 0u) << peer->uid;

  for (int i = 0; i < 20; ++i) {
    const std::string msg = "{\"n\":" + std::to_string(i) + ",\"pad\":\"" +
                            std::string(static_cast<std::size_t>(i) * 1000, 'x') + "\"}";
    server.WriteFrameTo(*conn, msg);
    auto reply = server.ReadFrameFrom(*conn);
    ASSERT_TRUE(reply.ok()) << reply.status().message();
    EXPECT_EQ(*reply, "echo:" + msg);
  }
  // The child checked our pid and account from its side; it exits 0 at EOF.
  conn->close();
  auto code = child.Wait();
  ASSERT_TRUE(code.has_value()) << "the echo child did not end after the pipe closed";
  EXPECT_EQ(*code, 0u) << "the child saw a wrong peer or a bad frame (its exit code)";
}

TEST(LocalPipe, AClientThatDiesBreaksThePipeAndTheServerReadsTheEnd) {
  Server server("death");
  ASSERT_TRUE(server.Open().ok());
  Child child("hold", server.name);
  auto conn = server.AcceptOne();
  ASSERT_TRUE(conn.has_value());
  auto hello = server.ReadFrameFrom(*conn);
  ASSERT_TRUE(hello.ok()) << hello.status().message();
  EXPECT_EQ(*hello, "hello");

  const auto killed = std::chrono::steady_clock::now();
  child.Kill();
  auto after = server.ReadFrameFrom(*conn, 30s);
  ASSERT_FALSE(after.ok()) << "read a frame from a killed client";
  EXPECT_EQ(after.status().code(), Errc::kBrokerUnavailable) << after.status().message();
  std::printf("the server saw the client's death after %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - killed)
                                         .count()));
}

TEST(LocalPipe, ASecondServerOnTheSameNameIsRefused) {
  Server first("second");
  ASSERT_TRUE(first.Open().ok());
  // In this process...
  asio::io_context io;
  LocalPipeAcceptor second(io.get_executor());
  Status s = second.Open(first.name, std::nullopt);
  EXPECT_EQ(s.code(), Errc::kBrokerUnavailable) << s.message();
  EXPECT_NE(s.message().find("another broker is already listening on " + first.name),
            std::string::npos)
      << s.message();
  // ... and in another (the child exits 3 if refused, 0 if it could listen).
  Child child("serve", first.name);
  auto code = child.Wait();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 3u);

  // Once the first is gone, the name is free again.
  boost::system::error_code ec;
  first.acceptor.close(ec);
  first.io.restart();
  first.io.poll();
  asio::io_context io3;
  LocalPipeAcceptor third(io3.get_executor());
  EXPECT_TRUE(third.Open(first.name, std::nullopt).ok());
}

TEST(LocalPipe, ReadsAndWritesKeepTheirDeadlines) {
  Server server("deadline");
  ASSERT_TRUE(server.Open().ok());
  LocalHandle client = kNoLocalHandle;
  auto conn = ConnectPair(server, client);
  ASSERT_TRUE(conn.has_value());
  ASSERT_NE(client, kNoLocalHandle);

  // The server says nothing: the read ends at its deadline, not before.
  auto start = std::chrono::steady_clock::now();
  auto frame = ReadFrame(client, 300ms);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(frame.status().code(), Errc::kTimeout) << frame.status().message();
  EXPECT_GE(took, 290ms);
  EXPECT_LT(took, 10s);

  // The server reads nothing: writes fill the pipe's buffer, then one ends
  // at its deadline (bounded: at most 64 frames of 60 KB).
  const std::string big(60000, 'y');
  Status last;
  int frames = 0;
  for (; frames < 64; ++frames) {
    bool partial = false;
    start = std::chrono::steady_clock::now();
    last = WriteFrame(client, big, In(300ms), &partial);
    if (!last.ok()) {
      took = std::chrono::steady_clock::now() - start;
      break;
    }
  }
  EXPECT_EQ(last.code(), Errc::kTimeout) << "after " << frames << " frames: " << last.message();
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 10s);

  // A frame in time is read whole.
  LocalHandle client2 = kNoLocalHandle;
  auto conn2 = ConnectPair(server, client2);
  ASSERT_TRUE(conn2.has_value());
  server.WriteFrameTo(*conn2, "{\"ok\":true}");
  auto got = ReadFrame(client2, In(10s));
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(*got, "{\"ok\":true}");
  CloseLocal(client);
  CloseLocal(client2);
}

TEST(LocalPipe, AFrameAboveTheLimitIsRefusedBothWays) {
  Server server("too-big");
  ASSERT_TRUE(server.Open().ok());
  LocalHandle client = kNoLocalHandle;
  auto conn = ConnectPair(server, client);
  ASSERT_TRUE(conn.has_value());
  ASSERT_NE(client, kNoLocalHandle);

  // Not sent: refused before a byte goes out.
  Status s = WriteFrame(client, std::string(kMaxLocalFrame + 1, 'z'), In(5s));
  EXPECT_EQ(s.code(), Errc::kProtocol) << s.message();
  // A peer announcing 1 MiB is refused on reading the header.
  server.WriteRaw(*conn, FrameHeader(1 << 20));
  auto r = ReadFrame(client, In(10s));
  EXPECT_EQ(r.status().code(), Errc::kProtocol) << r.status().message();
  EXPECT_NE(r.status().message().find("1048576-byte message"), std::string::npos);
  CloseLocal(client);
}

TEST(LocalPipe, ShutdownWakesABlockedReaderAndTheServerSeesTheEnd) {
  Server server("shutdown");
  ASSERT_TRUE(server.Open().ok());
  LocalHandle client = kNoLocalHandle;
  auto conn = ConnectPair(server, client);
  ASSERT_TRUE(conn.has_value());

  std::atomic<bool> returned{false};
  Status read_status;
  std::thread reader([&] {
    auto r = ReadFrame(client, std::chrono::milliseconds(-1));  // no deadline
    read_status = r.status();
    returned = true;
  });
  std::this_thread::sleep_for(100ms);  // let it block (if it has not, the mark still ends it)
  EXPECT_FALSE(returned.load());
  ShutdownLocal(client);
  reader.join();  // bounded: ShutdownLocal cancels the read
  EXPECT_EQ(read_status.code(), Errc::kBrokerUnavailable) << read_status.message();
  // Later reads fail at once too.
  EXPECT_EQ(ReadFrame(client, In(5s)).status().code(), Errc::kBrokerUnavailable);
  CloseLocal(client);
  auto end = server.ReadFrameFrom(*conn, 30s);
  EXPECT_EQ(end.status().code(), Errc::kBrokerUnavailable);
}

TEST(LocalPipe, ConnectingNamesTheMissingOrMalformedPipe) {
  const std::string missing = UniquePipe("missing");
  auto r = ConnectLocal(missing, In(2s));
  EXPECT_EQ(r.status().code(), Errc::kBrokerUnavailable);
  EXPECT_NE(r.status().message().find(missing), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("is dsb-broker running?"), std::string::npos);
  auto bad = ConnectLocal("C:\\dsb.sock", In(2s));
  EXPECT_EQ(bad.status().code(), Errc::kInvalidArgument) << bad.status().message();
}

TEST(LocalPipe, TheBrokerPeerCheckTrustsSystemAndOurselvesAndNamesAnyoneElse) {
  auto trust = ResolveBrokerTrust("", "", "set DSB_BROKER_USER to its user", "");
  ASSERT_TRUE(trust.ok());
  const std::string pipe = "\\\\.\\pipe\\dsb-x";
  EXPECT_TRUE(CheckBrokerPeer({1, "S-1-5-18", ""}, pipe, *trust).ok());
  EXPECT_TRUE(CheckBrokerPeer({1, CurrentAccount(), ""}, pipe, *trust).ok());
  const std::string stranger = "S-1-5-21-1111111111-2222222222-3333333333-4242";
  Status s = CheckBrokerPeer({77, stranger, ""}, pipe, *trust);
  EXPECT_EQ(s.code(), Errc::kPermissionDenied);
  EXPECT_NE(s.message().find("(pid 77) runs as " + stranger), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("LocalSystem (S-1-5-18)"), std::string::npos) << s.message();

  // Naming the broker account by SID trusts it.
  auto named = ResolveBrokerTrust(stranger, "ClientOptions::broker_user", "(test)", "");
  ASSERT_TRUE(named.ok()) << named.status().message();
  EXPECT_TRUE(CheckBrokerPeer({77, stranger, ""}, pipe, *named).ok());
  auto wrong = ResolveBrokerTrust("no-such-user-dsb", "ClientOptions::broker_user", "(test)", "");
  EXPECT_EQ(wrong.status().code(), Errc::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("SID"), std::string::npos) << wrong.status().message();
}

TEST(LocalPipe, OnePipeNameCheckForBrokerClientAndConfig) {
  EXPECT_TRUE(win::IsPipeName("\\\\.\\pipe\\dsb-ws1"));
  EXPECT_TRUE(win::IsPipeName("\\\\.\\PIPE\\dsb-ws1"));  // any case, as Windows reads it
  EXPECT_FALSE(win::IsPipeName("\\\\.\\pipe\\"));
  EXPECT_FALSE(win::IsPipeName("\\\\.\\pipe\\a\\b"));
  EXPECT_FALSE(win::IsPipeName("\\\\.\\pipe\\a/b"));
  EXPECT_FALSE(win::IsPipeName("\\\\.\\pipe\\.."));
  EXPECT_FALSE(win::IsPipeName("\\\\server\\pipe\\dsb-ws1"));
  auto bad = ConnectLocal("\\\\.\\pipe\\x\\..\\y", In(1s));
  EXPECT_EQ(bad.status().code(), Errc::kInvalidArgument) << bad.status().message();
  asio::io_context io;
  LocalPipeAcceptor a(io.get_executor());
  EXPECT_EQ(a.Open("\\\\.\\pipe\\x\\y", std::nullopt).code(), Errc::kInvalidArgument);
}

TEST(LocalPipe, NoBrokerUserIsTrustedByDefaultOnWindows) {
  // A name would resolve through the domain (any domain user "dsb"); the
  // service runs as LocalSystem, trusted anyway (common/CMakeLists.txt).
  EXPECT_STREQ(kDefaultBrokerUser, "");
  auto trust = ResolveBrokerTrust("", "", "(test)");
  ASSERT_TRUE(trust.ok()) << trust.status().message();
  EXPECT_FALSE(trust->default_uid.has_value());
}

TEST(LocalPipe, TheAccountIsDescribedAndGroupsAreFoundByName) {
  const AccountId me = CurrentAccount();
  EXPECT_EQ(me.rfind("S-1-5-", 0), 0u) << me;
  EXPECT_EQ(DescribeAccount(me).rfind(me, 0), 0u) << DescribeAccount(me);
  EXPECT_EQ(ParseAccountNumber("S-1-5-18"), std::optional<AccountId>("S-1-5-18"));
  EXPECT_EQ(ParseAccountNumber("1001"), std::nullopt);
  EXPECT_EQ(LookupGroup("S-1-5-32-544"), std::optional<GroupId>("S-1-5-32-544"));
  EXPECT_EQ(LookupGroup("no-such-group-dsb"), std::nullopt);
  EXPECT_TRUE(IsSuperuser("S-1-5-18"));
  EXPECT_FALSE(IsSuperuser(me == "S-1-5-18" ? "S-1-5-19" : me));
}

TEST(LocalPipe, ThePipeCarriesTheDescriptorForTheGroup) {
  // Stored and read back (what Wine shows); that Windows refuses a client
  // outside it needs a real host.
  // A domain group's SID (no SDDL alias such as "BU", so it reads back whole).
  const std::string users = "S-1-5-21-1111-2222-3333-1234";
  Server server("sd");
  ASSERT_TRUE(server.Open(users).ok());
  const std::string expected = PipeSecurityDescriptor(CurrentAccount(), users);
  EXPECT_NE(expected.find("(A;;0x0012008B;;;" + users + ")"), std::string::npos) << expected;
  LocalHandle client = kNoLocalHandle;
  auto conn = ConnectPair(server, client);
  ASSERT_TRUE(conn.has_value());
  // The owner is set explicitly to the broker's account (a LocalSystem
  // service's default owner would be Administrators, which a client falling
  // back to the owner refuses).
  EXPECT_EQ(expected.rfind("O:" + CurrentAccount() + "D:P", 0), 0u) << expected;
  PSID owner = nullptr;
  PACL dacl = nullptr;
  PSECURITY_DESCRIPTOR sd = nullptr;
  ASSERT_EQ(::GetSecurityInfo(conn->native_handle(), SE_KERNEL_OBJECT,
                              OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION, &owner,
                              nullptr, &dacl, nullptr, &sd),
            static_cast<DWORD>(ERROR_SUCCESS));
  wchar_t* text = nullptr;
  ASSERT_TRUE(::ConvertSecurityDescriptorToStringSecurityDescriptorW(
      sd, SDDL_REVISION_1, OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION, &text,
      nullptr));
  const std::string got = win::Narrow(text);
  ::LocalFree(text);
  ::LocalFree(sd);
  std::printf("the pipe's owner and DACL as read back: %s\n", got.c_str());
  EXPECT_EQ(got.rfind("O:" + CurrentAccount(), 0), 0u) << got;
  auto client_view = win::HandleOwner(client);
  ASSERT_TRUE(client_view.ok()) << client_view.status().message();
  EXPECT_EQ(*client_view, CurrentAccount());
  EXPECT_NE(got.find(users), std::string::npos) << got;
  EXPECT_NE(got.find("SY"), std::string::npos) << got;
  CloseLocal(client);
}

TEST(LocalPipe, ASpentInstanceIsReplacedBeforeItClosesAndTheNextClientIsServed) {
  // A client connects to the free instance and leaves before the broker
  // accepts (ConnectNamedPipe: ERROR_NO_DATA): the acceptor makes the next
  // instance, then closes the spent one, and serves the next client. That no
  // squatter can take the name in between (and that an instance joining a
  // squatter's pipe is refused by its owner) is not shown here: the window
  // was a moment inside one call, and Wine lets no second account exist.
  Server server("spent");
  ASSERT_TRUE(server.Open().ok());
  HANDLE early = ::CreateFileW(win::Widen(server.name).c_str(), GENERIC_READ | FILE_WRITE_DATA, 0,
                               nullptr, OPEN_EXISTING, 0, nullptr);
  ASSERT_NE(early, INVALID_HANDLE_VALUE) << win::ErrorText(::GetLastError());
  ::CloseHandle(early);
  LocalHandle client = kNoLocalHandle;
  auto conn = ConnectPair(server, client);
  ASSERT_TRUE(conn.has_value());
  ASSERT_NE(client, kNoLocalHandle);
  ASSERT_TRUE(WriteFrame(client, "after the spent one", In(10s)).ok());
  auto got = server.ReadFrameFrom(*conn);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(*got, "after the spent one");
  EXPECT_EQ(server.acceptor.squatter(), "");
  CloseLocal(client);
}

TEST(LocalPipe, ThePrimaryGroupCountsOnlyIfItIsAnEnabledGroup) {
  // A token whose primary group is deny-only (UAC's filtered Administrators)
  // cannot be made under Wine (no UAC filtering, one user): what Wine shows
  // is the rule's outcome on our own token, primary empty or enabled.
  auto id = win::ProcessIdentityOf(CurrentProcessId());
  ASSERT_TRUE(id.ok()) << id.status().message();
  if (!id->primary_group.empty()) {
    EXPECT_NE(std::find(id->groups.begin(), id->groups.end(), id->primary_group),
              id->groups.end())
        << id->primary_group;
  }
}

TEST(LocalPipe, AClientRefusesAPipeWhoseOwnerIsNotItsServersAccount) {
  // A pipe made with a stranger as owner (Wine lets any process name any
  // owner; Windows needs SeRestorePrivilege for that): the client trusts
  // the owner, so it must not accept the server's own account in its place.
  const std::string stranger = "S-1-5-21-1111111111-2222222222-3333333333-4242";
  const std::string name = UniquePipe("owner");
  PSECURITY_DESCRIPTOR sd = nullptr;
  ASSERT_TRUE(::ConvertStringSecurityDescriptorToSecurityDescriptorW(
      win::Widen("O:" + stranger + "D:P(A;;GA;;;WD)").c_str(), SDDL_REVISION_1, &sd, nullptr));
  SECURITY_ATTRIBUTES sa{sizeof sa, sd, FALSE};
  HANDLE server = ::CreateNamedPipeW(win::Widen(name).c_str(), PIPE_ACCESS_DUPLEX,
                                     PIPE_TYPE_BYTE | PIPE_WAIT, 2, 4096, 4096, 0, &sa);
  ::LocalFree(sd);
  ASSERT_NE(server, INVALID_HANDLE_VALUE) << win::ErrorText(::GetLastError());
  auto owner_set = win::HandleOwner(server);
  ASSERT_TRUE(owner_set.ok()) << owner_set.status().message();
  if (*owner_set != stranger) {
    ::CloseHandle(server);
    GTEST_SKIP() << "this system did not store the stranger as the pipe's owner ("
                 << *owner_set << ")";
  }
  auto trust = ResolveBrokerTrust("", "", "(test)", "");
  ASSERT_TRUE(trust.ok());
  auto conn = ConnectBroker(name, *trust, In(10s));
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), Errc::kPermissionDenied) << conn.status().message();
  EXPECT_NE(conn.status().message().find("the pipe's owner " + stranger), std::string::npos)
      << conn.status().message();
  ::CloseHandle(server);
}

// ---- the child --------------------------------------------------------------

// echo: connect (trust rule of the client library), check that the broker's
// account is ours, then answer each frame with
// "echo:" + frame until EOF. hold: connect, send "hello", wait to be killed.
// serve: try to listen on the pipe; exit 3 if refused.
int ChildMain(const std::string& mode, const std::string& pipe) {
  if (mode == "serve") {
    asio::io_context io;
    LocalPipeAcceptor a(io.get_executor());
    Status s = a.Open(pipe, std::nullopt);
    if (s.code() == Errc::kBrokerUnavailable &&
        s.message().find("already listening") != std::string::npos) {
      return 3;
    }
    return s.ok() ? 0 : 4;
  }
  auto trust = ResolveBrokerTrust("", "", "(test)", "");
  if (!trust.ok()) return 10;
  auto conn = ConnectBroker(pipe, *trust, In(20s));
  if (!conn.ok()) {
    std::fprintf(stderr, "child: %s\n", conn.status().message().c_str());
    return 11;
  }
  if (conn->peer.uid != CurrentAccount()) return 12;
  if (mode == "hold") {
    if (!WriteFrame(conn->fd, "hello", In(20s)).ok()) return 13;
    for (;;) ::Sleep(1000);  // until TerminateProcess
  }
  for (;;) {
    auto frame = ReadFrame(conn->fd, std::chrono::milliseconds(-1));
    if (!frame.ok()) {
      return frame.status().code() == Errc::kBrokerUnavailable ? 0 : 14;
    }
    if (!WriteFrame(conn->fd, "echo:" + *frame, In(20s)).ok()) return 15;
  }
}

}  // namespace
}  // namespace dsb

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--child") == 0) return dsb::ChildMain(argv[2], argv[3]);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
