// Issue 9, "logs that cannot be flooded, peer text that cannot mislead": a real
// broker, real clients on its socket, a real dsbctl.
//  - A client calling report_session_limit in a loop (20,000 calls, 200-byte
//    details) and one sending malformed requests (5,000) leave a log of a few
//    dozen lines; the limit stays within [minimum, configured], every report is
//    counted, and the broker still serves.
//  - A client whose name carries ESC sequences, a newline that forges a row, a
//    bell, a C1 control and a byte that is not UTF-8: neither the broker's log
//    nor `dsbctl clients` shows a raw control character, and the table has one
//    row per client.
//  - A request that makes the broker fail inside gets a message of ours, not
//    a library's text.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>

#include "common/local_frame.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/tools/process.h"

namespace dsb {
namespace {

using namespace std::chrono_literals;
using testing::BrokerProcess;
using tools_test::ChildProcess;
using tools_test::ScratchDir;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

// One connection on the broker's socket, driven by hand.
class RawClient {
 public:
  explicit RawClient(const std::filesystem::path& socket) {
    auto fd = ConnectLocal(socket.string());
    if (fd.ok()) fd_ = *fd;
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  bool ok() const { return fd_ >= 0; }

  // Sends one frame body; returns the reply (empty object on failure).
  json::object Call(std::string_view body) {
    if (!WriteFrame(fd_, body).ok()) return {};
    auto frame = ReadFrame(fd_, std::chrono::milliseconds(10000));
    if (!frame.ok()) return {};
    boost::system::error_code ec;
    json::value v = json::parse(*frame, ec);
    return !ec && v.is_object() ? v.as_object() : json::object{};
  }
  json::object Call(const json::object& request) { return Call(json::serialize(request)); }

 private:
  int fd_ = -1;
};

bool Ok(const json::object& reply) {
  const json::value* ok = reply.if_contains("ok");
  return ok != nullptr && ok->is_bool() && ok->as_bool();
}

std::int64_t Num(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_number() ? v->to_number<std::int64_t>() : -1;
}

// Bytes that act on a terminal: C0 controls but the newline that ends a line,
// DEL, and C1 controls in UTF-8 form (0xc2 0x80..0x9f). Returns where the
// first one is, or npos.
std::size_t FirstRawControl(const std::string& text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    if ((b < 0x20 && b != '\n') || b == 0x7f) return i;
    if (b == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) < 0xa0 &&
        static_cast<unsigned char>(text[i + 1]) >= 0x80) {
      return i;
    }
  }
  return std::string::npos;
}

std::size_t CountLines(const std::string& text, const std::string& needle = "") {
  std::istringstream in(text);
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) n += needle.empty() || line.find(needle) != std::string::npos;
  return n;
}

class LogFlood : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    broker_ = std::make_unique<BrokerProcess>(std::filesystem::path(dir_.File("")).parent_path(),
                                              "logfl" + std::to_string(::getpid()),
                                              std::vector<testing::BrokerTarget>{{"exch01", 32}});
    ASSERT_TRUE(broker_->Start()) << broker_->log();
  }
  void TearDown() override {
    if (broker_) {
      broker_->Stop();
      broker_->RemoveSegments();
    }
  }

  ScratchDir dir_;
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(LogFlood, ReportSessionLimitInALoopWritesABoundedLog) {
  RawClient flooder(broker_->socket());
  ASSERT_TRUE(flooder.ok());
  ASSERT_TRUE(Ok(flooder.Call({{"op", "register"}, {"target", "exch01"}, {"name", "flooder"}})));
  const std::size_t log_before = broker_->log().size();
  const std::string detail(200, 'x');
  constexpr int kReports = 20000;
  const auto start = Clock::now();
  int answered = 0;
  for (int i = 0; i < kReports && Clock::now() - start < 120s; ++i) {
    answered += Ok(flooder.Call({{"op", "report_session_limit"}, {"detail", detail}})) ? 1 : 0;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_EQ(answered, kReports) << "in " << seconds << " s";
  // 5,000 malformed requests from another connection.
  RawClient junk(broker_->socket());
  ASSERT_TRUE(junk.ok());
  constexpr int kJunk = 5000;
  int refused = 0;
  for (int i = 0; i < kJunk; ++i) refused += Ok(junk.Call(R"({"op":5})")) ? 0 : 1;
  ASSERT_EQ(refused, kJunk);

  // The broker still serves, counted every report, and the limit is sane.
  const json::object status = testing::AskBroker(broker_->socket(), local_protocol::Op::kStatus);
  ASSERT_TRUE(Ok(status)) << json::serialize(status);
  const json::object& t = status.at("targets").as_array()[0].as_object();
  EXPECT_EQ(Num(t, "session_limit_reports"), kReports);
  EXPECT_GE(Num(t, "limit"), 2) << "never below the minimum (one system + one action slot)";
  EXPECT_LE(Num(t, "limit"), 32);
  RawClient honest(broker_->socket());
  EXPECT_TRUE(Ok(honest.Call({{"op", "register"}, {"target", "exch01"}, {"name", "honest"}})));

  const std::string log = broker_->log().substr(log_before);
  const std::size_t lines = CountLines(log);
  std::printf("%d reports in %.2f s + %d malformed requests: %zu log lines, %zu bytes\n", kReports,
              seconds, kJunk, lines, log.size());
  // The refusal line is limited to one a second (limit_keeper), the malformed
  // request to 5 per 30 s: a run of tens of seconds stays well under these.
  EXPECT_LE(CountLines(log, "reports the server refused a session"), seconds + 2) << log;
  EXPECT_LE(CountLines(log, "malformed request"), 6u) << log;
  EXPECT_LE(lines, 40u + static_cast<std::size_t>(seconds)) << log;
  EXPECT_LE(log.size(), 64u * 1024u);
  // What was held back is counted when the broker stops.
  broker_->Stop();
  EXPECT_NE(broker_->log().find("more 'malformed local request' line(s) (uid "),
            std::string::npos)
      << broker_->log().substr(log_before);
}

TEST_F(LogFlood, ControlCharactersInNamesReachNeitherTheLogNorTheTerminal) {
  // A right-to-left override; ESC ] sets the terminal's title, ESC [2J
  // clears it; the newline and the spaces forge a second table row and a log
  // line; BEL; CR; C1 CSI (U+009B). (Bytes that are not UTF-8 cannot come in a
  // JSON request: the parser refuses them; tests/broker/escape_test.cc.)
  const std::string evil =
      "evil\xe2\x80\xae\x1b]0;pwned\x07\x1b[2J\n7  exch01  1  0  fake-row\r\xc2\x9b" "31m";
  RawClient client(broker_->socket());
  ASSERT_TRUE(client.ok());
  const json::object reg =
      client.Call({{"op", "register"}, {"target", "exch01"}, {"name", json::string(evil)}});
  ASSERT_TRUE(Ok(reg)) << json::serialize(reg);
  // An unknown target with an ESC sequence: the error message echoes it escaped.
  RawClient other(broker_->socket());
  const json::object unknown =
      other.Call({{"op", "register"}, {"target", "exch01\x1b[31m"}, {"name", "x"}});
  ASSERT_FALSE(Ok(unknown));
  const std::string message(unknown.at("message").as_string());
  EXPECT_EQ(FirstRawControl(message), std::string::npos) << message;
  EXPECT_NE(message.find("exch01\\x1b[31m"), std::string::npos) << message;

  ScratchDir out;
  ChildProcess ctl;
  ASSERT_TRUE(ctl.Start({tools_test::BinPath("dsbctl"), "--socket", broker_->socket().string(),
                         "clients"},
                        out.File("out"), out.File("err")));
  const auto st = ctl.Wait(10000ms);
  ASSERT_TRUE(st.has_value());
  const std::string table = tools_test::ReadFile(out.File("out"));
  EXPECT_EQ(WEXITSTATUS(*st), 0) << tools_test::ReadFile(out.File("err"));
  EXPECT_EQ(FirstRawControl(table), std::string::npos) << table;
  EXPECT_EQ(CountLines(table), 2u) << "a header and one row:\n" << table;
  EXPECT_NE(table.find("evil\\u{202e}\\x1b]0;pwned\\x07\\x1b[2J\\n7  exch01"), std::string::npos)
      << table;

  // --json stays JSON: the name as the broker stored it (escaped).
  ChildProcess ctl_json;
  ASSERT_TRUE(ctl_json.Start({tools_test::BinPath("dsbctl"), "--socket",
                              broker_->socket().string(), "clients", "--json"},
                             out.File("json"), out.File("err2")));
  ASSERT_TRUE(ctl_json.Wait(10000ms).has_value());
  boost::system::error_code ec;
  const json::value v = json::parse(tools_test::ReadFile(out.File("json")), ec);
  ASSERT_FALSE(ec) << tools_test::ReadFile(out.File("json"));
  const std::string name(v.at("clients").as_array()[0].at("name").as_string());
  EXPECT_EQ(FirstRawControl(name), std::string::npos) << name;
  EXPECT_NE(name.find("\\x1b]0;pwned"), std::string::npos) << name;
  EXPECT_NE(name.find("\\u{202e}"), std::string::npos) << name;

  const std::string log = broker_->log();
  EXPECT_EQ(FirstRawControl(log), std::string::npos) << log;
  EXPECT_NE(log.find("registered owner 1 (pid "), std::string::npos) << log;
  EXPECT_EQ(CountLines(log, "fake-ro"), 1u) << "the forged row stays inside one line:\n" << log;
}

TEST(Dsbctl, AnEmptyDsbSocketIsNamed) {
  ScratchDir out;
  ASSERT_TRUE(out.ok());
  ::setenv("DSB_SOCKET", "", 1);
  ChildProcess ctl;
  const bool started =
      ctl.Start({tools_test::BinPath("dsbctl"), "status"}, out.File("out"), out.File("err"));
  ::unsetenv("DSB_SOCKET");
  ASSERT_TRUE(started);
  const auto st = ctl.Wait(10000ms);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(WIFEXITED(*st));
  EXPECT_NE(WEXITSTATUS(*st), 0);
  EXPECT_NE(tools_test::ReadFile(out.File("err")).find("DSB_SOCKET is set but empty"),
            std::string::npos)
      << tools_test::ReadFile(out.File("err"));
}

}  // namespace
}  // namespace dsb
