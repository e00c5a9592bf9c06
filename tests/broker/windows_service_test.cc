// Windows only (run under Wine by the windows preset): the broker's platform
// plumbing in broker/service/ — stop and reload requests (control.h), the
// service control manager's status (service_notify.h) and the service itself
// (windows_service.h) — driven through the real SCM with dsb-service-probe.exe
// (tests/broker/service_probe.cc), which runs that plumbing around a body that
// writes what happens to a file. What Wine's SCM cannot show is said where it
// matters (docs/windows.md, "Running the broker on Windows").
#include <windows.h>

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "broker/service/control.h"
#include "common/win_spawn.h"
#include "tests/support/wait.h"

namespace dsb::broker {
namespace {

using namespace std::chrono_literals;
using dsb::testing::WaitUntil;

// ---- ControlEvents in this process ------------------------------------------

TEST(ControlEvents, AStopHeldFromBeforeIsDeliveredOnceItWaits) {
  RequestStop("early stop");  // no ControlEvents yet: held
  boost::asio::io_context io;
  ControlEvents control(io);
  std::vector<std::string> got;
  control.OnStop([&](const std::string& what) { got.push_back(what); });
  RequestStop("second stop");  // one stop only
  io.run();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "early stop");
}

TEST(ControlEvents, ReloadsArriveOnePerWaitAndAreNotLostBetween) {
  boost::asio::io_context io;
  ControlEvents control(io);
  std::vector<std::string> got;
  std::function<void()> arm = [&] {
    control.OnReload([&](const std::string& what) {
      got.push_back(what);
      if (got.size() < 2) arm();
    });
  };
  arm();
  RequestReload("reload 1");
  io.run();
  io.restart();
  RequestReload("reload 2");  // before the re-armed wait ran: not lost
  io.run();
  EXPECT_EQ(got, (std::vector<std::string>{"reload 1", "reload 2"}));
}

TEST(ControlEvents, CancelDropsWhatIsPending) {
  boost::asio::io_context io;
  bool called = false;
  {
    ControlEvents control(io);
    control.OnStop([&](const std::string&) { called = true; });
    RequestStop("stop after cancel");
    control.Cancel();
    io.run();
  }
  EXPECT_FALSE(called);
  // What a later request leaves behind (no ControlEvents now) is taken by
  // the next one: consume it so it does not leak into another test.
  io.restart();
  ControlEvents next(io);
  next.OnStop([](const std::string&) {});
  io.run();
}

// ---- The service under the SCM ----------------------------------------------

std::filesystem::path ProbeExe() { return std::filesystem::path(DSB_BIN_DIR) / "dsb-service-probe.exe"; }

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `command_line` and returns its exit code (-1 if it cannot start or
// does not end within 60 s).
int RunCommand(std::wstring command_line) {
  STARTUPINFOW si{};
  si.cb = sizeof(si);
  PROCESS_INFORMATION pi{};
  if (!win::StartRetryingWine([&] {
        return ::CreateProcessW(nullptr, command_line.data(), nullptr, nullptr, FALSE, 0,
                                nullptr, nullptr, &si, &pi);
      })) {
    return -1;
  }
  ::CloseHandle(pi.hThread);
  DWORD code = static_cast<DWORD>(-1);
  if (::WaitForSingleObject(pi.hProcess, 60'000) == WAIT_OBJECT_0) ::GetExitCodeProcess(pi.hProcess, &code);
  ::CloseHandle(pi.hProcess);
  return static_cast<int>(code);
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(ProbeExe())) << ProbeExe();
    // Unique per run: a service left by a crashed run does not collide.
    name_ = L"dsb-test-" + std::to_wstring(::GetCurrentProcessId()) + L"-" +
            std::to_wstring(::GetTickCount64());
    dir_ = std::filesystem::temp_directory_path() / ("dsb-service-" + Narrow(name_));
    std::filesystem::create_directories(dir_);
    scm_ = ::OpenSCManagerW(nullptr, nullptr, SC_MANAGER_ALL_ACCESS);
    ASSERT_NE(scm_, nullptr) << "OpenSCManagerW: error " << ::GetLastError();
  }
  void TearDown() override {
    // Whatever a failed test left: stopped and deleted (our own service only).
    if (SC_HANDLE s = ::OpenServiceW(scm_, name_.c_str(), SERVICE_ALL_ACCESS)) {
      SERVICE_STATUS st{};
      ::ControlService(s, SERVICE_CONTROL_STOP, &st);
      WaitUntil([&] { return ::QueryServiceStatus(s, &st) && st.dwCurrentState == SERVICE_STOPPED; },
                10s);
      ::DeleteService(s);
      ::CloseServiceHandle(s);
    }
    if (scm_) ::CloseServiceHandle(scm_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  static std::string Narrow(const std::wstring& w) { return std::string(w.begin(), w.end()); }

  int Probe(const std::wstring& args) {
    return RunCommand(L"\"" + ProbeExe().wstring() + L"\" " + args);
  }
  int Install(const std::filesystem::path& file) {
    return Probe(L"--install-service --service-name " + name_ + L" --config \"" + file.wstring() +
                 L"\"");
  }
  SERVICE_STATUS Status(SC_HANDLE s) {
    SERVICE_STATUS st{};
    EXPECT_TRUE(::QueryServiceStatus(s, &st)) << ::GetLastError();
    return st;
  }
  bool WaitForState(SC_HANDLE s, DWORD state) {
    // Wine starts a service process in ~0.3-1 s; 30 s for a loaded machine.
    return WaitUntil([&] { return Status(s).dwCurrentState == state; }, 30s);
  }

  std::wstring name_;
  std::filesystem::path dir_;
  SC_HANDLE scm_ = nullptr;
};

TEST_F(ServiceTest, InstallStartReloadStopUninstall) {
  const auto file = dir_ / "probe.log";
  ASSERT_EQ(Install(file), 0);
  SC_HANDLE s = ::OpenServiceW(scm_, name_.c_str(), SERVICE_ALL_ACCESS);
  ASSERT_NE(s, nullptr) << "the install made no service: error " << ::GetLastError();

  // What the install registered: own process, auto start, the command line.
  std::vector<BYTE> buf(8192);
  DWORD needed = 0;
  auto* qc = reinterpret_cast<QUERY_SERVICE_CONFIGW*>(buf.data());
  ASSERT_TRUE(::QueryServiceConfigW(s, qc, static_cast<DWORD>(buf.size()), &needed));
  EXPECT_EQ(qc->dwServiceType, static_cast<DWORD>(SERVICE_WIN32_OWN_PROCESS));
  EXPECT_EQ(qc->dwStartType, static_cast<DWORD>(SERVICE_AUTO_START));
  const std::wstring command = qc->lpBinaryPathName;
  EXPECT_NE(command.find(L"--service --service-name \"" + name_ + L"\""), std::wstring::npos)
      << Narrow(command);
  EXPECT_NE(command.find(L"--config \"" + file.wstring() + L"\""), std::wstring::npos)
      << Narrow(command);

  EXPECT_EQ(Status(s).dwCurrentState, static_cast<DWORD>(SERVICE_STOPPED));
  ASSERT_TRUE(::StartServiceW(s, 0, nullptr)) << ::GetLastError();
  // RUNNING is reported only once the body is ready (NotifyServiceReady).
  ASSERT_TRUE(WaitForState(s, SERVICE_RUNNING)) << "state " << Status(s).dwCurrentState;
  EXPECT_NE(ReadFile(file).find("ready\n"), std::string::npos);
  const DWORD accepted = Status(s).dwControlsAccepted;
  EXPECT_TRUE(accepted & SERVICE_ACCEPT_STOP);
  EXPECT_TRUE(accepted & SERVICE_ACCEPT_PRESHUTDOWN);
  EXPECT_TRUE(accepted & SERVICE_ACCEPT_PARAMCHANGE);

  // PARAMCHANGE = SIGHUP's reload; INTERROGATE answers with the status.
  SERVICE_STATUS st{};
  ASSERT_TRUE(::ControlService(s, SERVICE_CONTROL_PARAMCHANGE, &st)) << ::GetLastError();
  EXPECT_TRUE(WaitUntil(
      [&] { return ReadFile(file).find("reload: service control PARAMCHANGE\n") != std::string::npos; },
      10s))
      << ReadFile(file);
  ASSERT_TRUE(::ControlService(s, SERVICE_CONTROL_INTERROGATE, &st)) << ::GetLastError();
  EXPECT_EQ(st.dwCurrentState, static_cast<DWORD>(SERVICE_RUNNING));

  // STOP: the clean stop path, then STOPPED with exit code 0.
  ASSERT_TRUE(::ControlService(s, SERVICE_CONTROL_STOP, &st)) << ::GetLastError();
  ASSERT_TRUE(WaitForState(s, SERVICE_STOPPED));
  st = Status(s);
  EXPECT_EQ(st.dwWin32ExitCode, static_cast<DWORD>(NO_ERROR));
  const std::string log = ReadFile(file);
  EXPECT_NE(log.find("stop: service control STOP\nstopped 0\n"), std::string::npos) << log;
  ::CloseServiceHandle(s);

  ASSERT_EQ(Probe(L"--uninstall-service --service-name " + name_), 0);
  EXPECT_EQ(::OpenServiceW(scm_, name_.c_str(), SERVICE_QUERY_STATUS), nullptr);
  EXPECT_EQ(::GetLastError(), static_cast<DWORD>(ERROR_SERVICE_DOES_NOT_EXIST));
}

TEST_F(ServiceTest, ANonZeroExitCodeIsReportedAsTheServiceSpecificError) {
  const auto file = dir_ / "probe.exit3";  // the probe's body returns 3
  ASSERT_EQ(Install(file), 0);
  SC_HANDLE s = ::OpenServiceW(scm_, name_.c_str(), SERVICE_ALL_ACCESS);
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(::StartServiceW(s, 0, nullptr)) << ::GetLastError();
  ASSERT_TRUE(WaitForState(s, SERVICE_RUNNING));
  SERVICE_STATUS st{};
  ASSERT_TRUE(::ControlService(s, SERVICE_CONTROL_STOP, &st)) << ::GetLastError();
  ASSERT_TRUE(WaitForState(s, SERVICE_STOPPED));
  st = Status(s);
  EXPECT_EQ(st.dwWin32ExitCode, static_cast<DWORD>(ERROR_SERVICE_SPECIFIC_ERROR));
  EXPECT_EQ(st.dwServiceSpecificExitCode, 3u);
  ::CloseServiceHandle(s);
}

TEST_F(ServiceTest, UninstallStopsARunningServiceFirst) {
  const auto file = dir_ / "probe.log";
  ASSERT_EQ(Install(file), 0);
  SC_HANDLE s = ::OpenServiceW(scm_, name_.c_str(), SERVICE_ALL_ACCESS);
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(::StartServiceW(s, 0, nullptr)) << ::GetLastError();
  ASSERT_TRUE(WaitForState(s, SERVICE_RUNNING));
  ::CloseServiceHandle(s);
  ASSERT_EQ(Probe(L"--uninstall-service --service-name " + name_), 0);
  const std::string log = ReadFile(file);
  EXPECT_NE(log.find("stop: service control STOP\nstopped 0\n"), std::string::npos) << log;
  EXPECT_EQ(::OpenServiceW(scm_, name_.c_str(), SERVICE_QUERY_STATUS), nullptr);
}

TEST_F(ServiceTest, InstallingTwiceFailsAndNamesTheService) {
  const auto file = dir_ / "probe.log";
  ASSERT_EQ(Install(file), 0);
  EXPECT_EQ(Install(file), 1);  // ERROR_SERVICE_EXISTS
}

TEST_F(ServiceTest, TheServiceModeOutsideTheScmSaysSo) {
  // Started by hand with --service: the dispatcher cannot connect.
  EXPECT_EQ(Probe(L"--service --service-name " + name_ + L" --config \"" +
                  (dir_ / "x.log").wstring() + L"\""),
            1);
}

// ---- The console: Ctrl-C ----------------------------------------------------

BOOL WINAPI IgnoreCtrl(DWORD) { return TRUE; }  // this test process's own copy of the event

// A console broker stops on Ctrl-C by its clean path. GenerateConsoleCtrlEvent
// reaches every process on this console; Wine can deliver it only when its
// console is a terminal (ctest runs this test under `script`, a pty:
// tests/broker/CMakeLists.txt); without one it fails with
// ERROR_INVALID_ACCESS and the test says so and skips.
TEST(ConsoleTest, CtrlCStopsTheConsoleModeCleanly) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("dsb-console-" + std::to_string(::GetCurrentProcessId()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "probe.log";
  std::wstring cmd = L"\"" + ProbeExe().wstring() + L"\" --config \"" + file.wstring() + L"\"";
  STARTUPINFOW si{};
  si.cb = sizeof(si);
  PROCESS_INFORMATION pi{};
  ASSERT_TRUE(win::StartRetryingWine([&] {
    return ::CreateProcessW(nullptr, cmd.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr,
                            &si, &pi);
  }));
  ::CloseHandle(pi.hThread);
  ASSERT_TRUE(WaitUntil([&] { return ReadFile(file).find("ready\n") != std::string::npos; }, 30s));
  ::SetConsoleCtrlHandler(IgnoreCtrl, TRUE);
  const BOOL sent = ::GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0);
  const DWORD err = ::GetLastError();
  DWORD code = 99;
  if (!sent) {
    ::TerminateProcess(pi.hProcess, 9);  // our own child
    ::WaitForSingleObject(pi.hProcess, 10'000);
    ::CloseHandle(pi.hProcess);
    std::filesystem::remove_all(dir);
    if (std::getenv("DSB_REQUIRE_CONSOLE_CTRL") != nullptr) {
      FAIL() << "GenerateConsoleCtrlEvent failed (error " << err << ") on a terminal console";
    }
    GTEST_SKIP() << "GenerateConsoleCtrlEvent failed (error " << err
                 << "): Wine delivers console control events only on a terminal console "
                    "(the test windows_service_console_ctrl_c runs this under a pty)";
  }
  ASSERT_EQ(::WaitForSingleObject(pi.hProcess, 30'000), WAIT_OBJECT_0);
  ::GetExitCodeProcess(pi.hProcess, &code);
  ::CloseHandle(pi.hProcess);
  EXPECT_EQ(code, 0u);
  const std::string log = ReadFile(file);
  EXPECT_NE(log.find("stop: console Ctrl-C\nstopped 0\n"), std::string::npos) << log;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dsb::broker
