// The host program decides where the client library's messages go:
// dsb_set_log_callback (C) and dsb::SetLogSink (C++) receive them instead of
// stderr, and NULL / an empty sink puts them back on stderr. The message used
// is a real one: the broker goes away while a client is registered.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dsb/client.h"
#include "dsb/dsb.h"
#include "tests/support/broker_process.h"
#include "tests/support/process.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using testing::BrokerProcess;
using testing::BrokerTarget;
using testing::ScratchDir;
using testing::UniqueName;

// What a host's callback received; the test waits on it as on an event.
struct Received {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<int, std::string>> lines;

  void Add(int level, std::string line) {
    {
      std::lock_guard lock(mu);
      lines.emplace_back(level, std::move(line));
    }
    cv.notify_all();
  }
  // The level of the first line containing `needle`, waiting up to `timeout`; -1 if none.
  int WaitFor(const std::string& needle, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    int level = -1;
    cv.wait_for(lock, timeout, [&] {
      for (const auto& [l, text] : lines) {
        if (text.find(needle) != std::string::npos) {
          level = l;
          return true;
        }
      }
      return false;
    });
    return level;
  }
  std::size_t size() {
    std::lock_guard lock(mu);
    return lines.size();
  }
};

extern "C" void CollectLine(int32_t level, const char* message, void* context) {
  static_cast<Received*>(context)->Add(level, message);
}

// Sends this process's stderr (fd 2) to a file for its lifetime.
class StderrToFile {
 public:
  explicit StderrToFile(std::filesystem::path path) : path_(std::move(path)) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << path_;
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~StderrToFile() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
  }
  StderrToFile(const StderrToFile&) = delete;
  StderrToFile& operator=(const StderrToFile&) = delete;
  std::string Read() const {
    std::ifstream f(path_);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }

 private:
  std::filesystem::path path_;
  int saved_ = -1;
};

class LogCallbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = std::make_unique<BrokerProcess>(dir_.path(), UniqueName("lc"),
                                              std::vector<BrokerTarget>{BrokerTarget{}});
    ASSERT_TRUE(broker_->Start()) << broker_->log();
    lost_ = "lost the connection to the broker at " + broker_->socket().string();
  }
  void TearDown() override {
    dsb_set_log_callback(nullptr, nullptr);
    SetLogSink(nullptr);
  }
  ScratchDir dir_;
  std::unique_ptr<BrokerProcess> broker_;
  std::string lost_;
};

TEST_F(LogCallbackTest, CCallbackGetsTheMessageInsteadOfStderr) {
  Received received;
  dsb_set_log_callback(&CollectLine, &received);
  StderrToFile err(dir_.path() / "stderr");
  dsb_client* c = nullptr;
  ASSERT_EQ(dsb_connect(broker_->socket().c_str(), "exch01", "log-c", 10000, &c), DSB_OK)
      << dsb_last_error();
  broker_->Stop(SIGKILL);
  EXPECT_EQ(received.WaitFor(lost_, 20s), DSB_LOG_WARNING);
  dsb_close(c);
  EXPECT_EQ(err.Read(), "");  // nothing at all, not just not this message
}

TEST_F(LogCallbackTest, CxxSinkGetsLossAndReRegistration) {
  Received received;
  SetLogSink([&received](LogLevel level, std::string_view message) {
    received.Add(static_cast<int>(level), std::string(message));
  });
  StderrToFile err(dir_.path() / "stderr");
  ClientOptions o;
  o.socket_path = broker_->socket().string();
  o.target = "exch01";
  o.name = "log-cxx";
  std::error_code ec;
  std::string why;
  auto client = Client::Connect(o, ec, &why);
  ASSERT_TRUE(client) << why;
  broker_->Stop(SIGKILL);
  EXPECT_EQ(received.WaitFor(lost_, 20s), static_cast<int>(LogLevel::kWarning));
  // A new broker adopts the client: that is said too (kInfo).
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  EXPECT_EQ(received.WaitFor("re-registered for target 'exch01'", 30s),
            static_cast<int>(LogLevel::kInfo));
  client.reset();
  EXPECT_EQ(err.Read(), "");  // nothing at all, not just not these messages
}

TEST_F(LogCallbackTest, NullCallbackRestoresStderr) {
  Received received;
  dsb_set_log_callback(&CollectLine, &received);
  dsb_set_log_callback(nullptr, nullptr);  // back to stderr; `received` is not called again
  StderrToFile err(dir_.path() / "stderr");
  dsb_client* c = nullptr;
  ASSERT_EQ(dsb_connect(broker_->socket().c_str(), "exch01", "log-null", 10000, &c), DSB_OK)
      << dsb_last_error();
  broker_->Stop(SIGKILL);
  // stderr has no event of its own: poll the file.
  EXPECT_TRUE(testing::WaitUntil(
      [&] { return err.Read().find("dsb: " + lost_) != std::string::npos; }, 20s))
      << err.Read();
  dsb_close(c);
  EXPECT_EQ(received.size(), 0u);
}

// The same through the shipped libdsb.so (dsb::c), whose log sink is its own
// state, not the static library's this test links: a C program sets the
// callback, the broker is killed and comes back; the program's callback must
// see the loss and the re-registration, and its stderr must stay empty.
TEST_F(LogCallbackTest, SharedLibraryCallbackGetsLossAndReRegistrationStderrEmpty) {
  const auto out = dir_.path() / "prog.out";
  const auto err = dir_.path() / "prog.err";
  testing::SpawnOptions options;
  options.output = testing::Output::kFiles;
  options.stdout_file = out;
  options.stderr_file = err;
  testing::Process prog;
  ASSERT_TRUE(prog.Start(
      {testing::BinPath("c_log_callback_prog"), broker_->socket().string(), "120"}, options))
      << prog.error();
  const auto read = [](const std::filesystem::path& path) {
    std::ifstream f(path);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  };
  // The program's stdout is a file: poll it.
  ASSERT_TRUE(testing::WaitUntil([&] { return read(out).find("connected\n") != std::string::npos; },
                                 30s))
      << read(out) << read(err);
  broker_->Stop(SIGKILL);
  EXPECT_TRUE(testing::WaitUntil(
      [&] { return read(out).find("log 2 " + lost_) != std::string::npos; }, 30s))
      << read(out);
  ASSERT_TRUE(broker_->Start()) << broker_->log();
  const std::optional<int> status = prog.Wait(150s);
  ASSERT_TRUE(status.has_value()) << read(out);
  EXPECT_EQ(prog.exit_code(), 0) << read(out);
  const std::string text = read(out);
  EXPECT_NE(text.find("log 1 re-registered for target 'exch01'"), std::string::npos) << text;
  EXPECT_EQ(read(err), "");
}

TEST(LogCallbackContract, LevelsAndVersionAreStable) {
  EXPECT_EQ(DSB_LOG_DEBUG, 0);
  EXPECT_EQ(DSB_LOG_ERROR, 3);
  EXPECT_STREQ(dsb_version(), Version());
  EXPECT_STREQ(dsb_strerror(DSB_E_AUTH_FAILED), ErrcMessage(Errc::kAuthFailed));
  EXPECT_STREQ(dsb_strerror(DSB_E_CONFLICT), ErrcMessage(Errc::kConflict));
}

}  // namespace
}  // namespace dsb
