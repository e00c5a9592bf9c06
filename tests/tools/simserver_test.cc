// dsb-simserver as a real process on loopback: cap, close, STATS, LIMIT, linger, bad input,
// and the stats file on SIGTERM.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "tests/tools/sim_server_process.h"

namespace dsb::tools_test {
namespace {

using load::LineClient;

std::string Call(LineClient& c, const std::string& line) {
  std::error_code ec;
  std::string reply = c.Call(line, ec);
  EXPECT_FALSE(ec) << line << ": " << ec.message();
  return reply;
}

TEST(SimServer, PrintsTheBoundPortAsTheFirstStdoutLine) {
  ScratchDir dir;
  SimServerProcess server(dir, {});
  ASSERT_TRUE(server.ok());
  const std::string out = ReadFile(server.stdout_path());
  EXPECT_EQ(out.substr(0, out.find('\n')), "listening " + server.address());
  EXPECT_NE(server.address(), "127.0.0.1:0");
}

TEST(SimServer, RefusesPastTheCapWithTheExchangeError) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "3"});
  ASSERT_TRUE(server.ok());
  LineClient c = server.Connect();
  ASSERT_TRUE(c.connected());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(Call(c, "OPEN alice").starts_with("OK "));
  EXPECT_EQ(Call(c, "OPEN alice"),
            "ERR MAPI_E_SESSION_LIMIT 0x80040112 ec=1246 user=alice limit=3");
  // The cap is per user: another account is unaffected.
  EXPECT_TRUE(Call(c, "OPEN bob").starts_with("OK "));
  // The refusal is logged like Exchange's event 9646.
  EXPECT_TRUE(
      WaitUntil([&] { return ReadFile(server.stderr_path()).find("9646") != std::string::npos; }));
}

TEST(SimServer, CloseFreesASlot) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "2"});
  ASSERT_TRUE(server.ok());
  LineClient c = server.Connect();
  const std::string first = Call(c, "OPEN u");
  ASSERT_TRUE(first.starts_with("OK "));
  ASSERT_TRUE(Call(c, "OPEN u").starts_with("OK "));
  ASSERT_TRUE(Call(c, "OPEN u").starts_with("ERR MAPI_E_SESSION_LIMIT"));
  EXPECT_EQ(Call(c, "CLOSE " + first.substr(3)), "OK");
  EXPECT_TRUE(Call(c, "OPEN u").starts_with("OK "));
  // Closing twice, or a session that never existed, is an error, not a crash.
  EXPECT_EQ(Call(c, "CLOSE " + first.substr(3)), "ERR UNKNOWN_SESSION " + first.substr(3));
  EXPECT_EQ(Call(c, "CLOSE 999999"), "ERR UNKNOWN_SESSION 999999");
}

TEST(SimServer, OnlyTheOpeningConnectionMayCloseASession) {
  ScratchDir dir;
  SimServerProcess server(dir, {});
  ASSERT_TRUE(server.ok());
  LineClient a = server.Connect();
  LineClient b = server.Connect();
  const std::string id = Call(a, "OPEN u").substr(3);
  EXPECT_EQ(Call(b, "CLOSE " + id), "ERR UNKNOWN_SESSION " + id);
  EXPECT_EQ(Call(a, "CLOSE " + id), "OK");
}

TEST(SimServer, StatsReportPeakOpenedRefusedAndCurrent) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "3"});
  ASSERT_TRUE(server.ok());
  LineClient c = server.Connect();
  std::string ids[3];
  for (auto& id : ids) id = Call(c, "OPEN alice").substr(3);
  Call(c, "OPEN alice");
  Call(c, "OPEN alice");
  Call(c, "CLOSE " + ids[0]);
  Call(c, "CLOSE " + ids[1]);
  Call(c, "OPEN alice");
  const boost::json::object s = server.UserStats("alice");
  EXPECT_EQ(Num(s, "peak"), 3);
  EXPECT_EQ(Num(s, "opened"), 4);
  EXPECT_EQ(Num(s, "refused"), 2);
  EXPECT_EQ(Num(s, "current"), 2);
  EXPECT_EQ(Num(s, "limit"), 3);
  EXPECT_EQ(Num(s, "over_limit_events"), 0);
  EXPECT_EQ(Num(s, "peak_over_limit"), 0);
}

// Controlled scenario: 1 session from the reset until t1, then 4 until the final STATS at W.
// t1 is bracketed by two STATS calls (window wa before the opens, wb after), so the exact mean
// lies in [(wb + 4 (W - wb)) / W, (wa + 4 (W - wa)) / W] whatever the scheduling.
TEST(SimServer, MeanIsTimeWeightedOverTheWindow) {
  ScratchDir dir;
  SimServerProcess server(dir, {});
  ASSERT_TRUE(server.ok());
  LineClient c = server.Connect();
  ASSERT_TRUE(Call(c, "OPEN m").starts_with("OK "));
  ASSERT_EQ(Call(c, "STATS RESET"), "OK");
  double wa = 0;
  ASSERT_TRUE(WaitUntil([&] { return (wa = Num(server.UserStats("m"), "window_s")) >= 0.15; }));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Call(c, "OPEN m").starts_with("OK "));
  const double wb = Num(server.UserStats("m"), "window_s");
  boost::json::object final_stats;
  ASSERT_TRUE(WaitUntil([&] {
    final_stats = server.UserStats("m");
    return Num(final_stats, "window_s") >= wb + 0.15;
  }));
  const double w = Num(final_stats, "window_s");
  // More time at 1 session means a lower mean: wb gives the low end, wa the high end.
  const double lo = (wb + 4 * (w - wb)) / w;
  const double hi = (wa + 4 * (w - wa)) / w;
  const double mean = Num(final_stats, "mean");
  EXPECT_GE(mean, lo - 1e-6) << "wa=" << wa << " wb=" << wb << " w=" << w;
  EXPECT_LE(mean, hi + 1e-6) << "wa=" << wa << " wb=" << wb << " w=" << w;
  EXPECT_GT(mean, 1.5);  // clearly not the plain count-average nor the last value
  EXPECT_LT(mean, 3.5);
  EXPECT_EQ(Num(final_stats, "peak"), 4);
}

TEST(SimServer, StatsResetStartsAFreshWindowButKeepsCurrent) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "2"});
  ASSERT_TRUE(server.ok());
  LineClient c = server.Connect();
  const std::string a = Call(c, "OPEN r").substr(3);
  Call(c, "OPEN r");
  Call(c, "OPEN r");  // refused
  Call(c, "CLOSE " + a);
  ASSERT_EQ(Call(c, "STATS RESET"), "OK");
  const boost::json::object s = server.UserStats("r");
  EXPECT_EQ(Num(s, "current"), 1);
  EXPECT_EQ(Num(s, "peak"), 1);
  EXPECT_EQ(Num(s, "opened"), 0);
  EXPECT_EQ(Num(s, "refused"), 0);
  EXPECT_NEAR(Num(s, "mean"), 1.0, 1e-9);
}

TEST(SimServer, LimitCommandAndFlagChangeTheCap) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "5", "--user-limit", "small=1"});
  ASSERT_TRUE(server.ok());
  LineClient c = server.Connect();
  ASSERT_TRUE(Call(c, "OPEN small").starts_with("OK "));
  EXPECT_EQ(Call(c, "OPEN small"),
            "ERR MAPI_E_SESSION_LIMIT 0x80040112 ec=1246 user=small limit=1");
  EXPECT_EQ(Call(c, "LIMIT small 2"), "OK");
  EXPECT_TRUE(Call(c, "OPEN small").starts_with("OK "));
  EXPECT_TRUE(Call(c, "OPEN small").starts_with("ERR MAPI_E_SESSION_LIMIT"));
  // Lowering below the held count keeps open sessions and refuses new ones.
  EXPECT_EQ(Call(c, "LIMIT small 0"), "OK");
  const boost::json::object s = server.UserStats("small");
  EXPECT_EQ(Num(s, "current"), 2);
  EXPECT_EQ(Num(s, "limit"), 0);
  EXPECT_EQ(Num(s, "over_limit_events"), 0);
}

TEST(SimServer, SigtermWritesTheStatsFile) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "1"});
  ASSERT_TRUE(server.ok());
  {
    LineClient c = server.Connect();
    Call(c, "OPEN s");
    Call(c, "OPEN s");
  }
  ASSERT_TRUE(server.process().Signal(SIGTERM));
  const auto status = server.process().Wait(milliseconds(5000));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(ReadFile(server.stats_file()), ec);
  ASSERT_FALSE(ec) << ReadFile(server.stats_file());
  const boost::json::object& s = v.at("users").at("s").as_object();
  EXPECT_EQ(Num(s, "opened"), 1);
  EXPECT_EQ(Num(s, "refused"), 1);
  EXPECT_EQ(Num(s, "peak"), 1);
}

TEST(SimServer, DroppedConnectionSessionsLingerThenFree) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "2", "--linger-ms", "300"});
  ASSERT_TRUE(server.ok());
  LineClient a = server.Connect();
  ASSERT_TRUE(Call(a, "OPEN l").starts_with("OK "));
  ASSERT_TRUE(Call(a, "OPEN l").starts_with("OK "));
  const auto dropped = SteadyClock::now();
  a.Close();  // no CLOSE: like a client that died
  LineClient b = server.Connect();
  // Still counted while lingering: the cap refuses a new session.
  EXPECT_TRUE(Call(b, "OPEN l").starts_with("ERR MAPI_E_SESSION_LIMIT"));
  ASSERT_TRUE(WaitUntil([&] { return Num(server.UserStats("l"), "current") == 0; }));
  EXPECT_GE(SteadyClock::now() - dropped, milliseconds(300));
  EXPECT_TRUE(Call(b, "OPEN l").starts_with("OK "));
}

TEST(SimServer, ClosedSessionsStillCountDuringTheCloseLag) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "1", "--close-lag-ms", "300"});
  ASSERT_TRUE(server.ok());
  LineClient a = server.Connect();
  const std::string open = Call(a, "OPEN g");
  ASSERT_TRUE(open.starts_with("OK "));
  const auto closed = SteadyClock::now();
  EXPECT_EQ(Call(a, "CLOSE " + open.substr(3)), "OK");
  // The client has its OK, the server still counts the session: refused.
  EXPECT_TRUE(Call(a, "OPEN g").starts_with("ERR MAPI_E_SESSION_LIMIT"));
  EXPECT_EQ(Num(server.UserStats("g"), "current"), 1);
  // Closing it again is an error at once (it is no longer open for the client).
  EXPECT_TRUE(Call(a, "CLOSE " + open.substr(3)).starts_with("ERR UNKNOWN_SESSION"));
  ASSERT_TRUE(WaitUntil([&] { return Num(server.UserStats("g"), "current") == 0; }));
  EXPECT_GE(SteadyClock::now() - closed, milliseconds(300));
  EXPECT_TRUE(Call(a, "OPEN g").starts_with("OK "));
}

TEST(SimServer, WithoutCloseLagCloseFreesAtOnce) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "1"});
  ASSERT_TRUE(server.ok());
  LineClient a = server.Connect();
  const std::string open = Call(a, "OPEN h");
  ASSERT_TRUE(open.starts_with("OK "));
  EXPECT_EQ(Call(a, "CLOSE " + open.substr(3)), "OK");
  EXPECT_TRUE(Call(a, "OPEN h").starts_with("OK "));
}

TEST(SimServer, WithoutLingerDroppedSessionsFreeAtOnce) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "2"});
  ASSERT_TRUE(server.ok());
  LineClient a = server.Connect();
  ASSERT_TRUE(Call(a, "OPEN d").starts_with("OK "));
  ASSERT_TRUE(Call(a, "OPEN d").starts_with("OK "));
  a.Close();
  EXPECT_TRUE(
      WaitUntil([&] { return Num(server.UserStats("d"), "current") == 0; }, milliseconds(2000)));
}

TEST(SimServer, BadLinesGetErrorsAndTheServerKeepsServing) {
  ScratchDir dir;
  SimServerProcess server(dir, {});
  ASSERT_TRUE(server.ok());
  LineClient c = server.Connect();
  const char* bad[] = {"FOO",       "",           "open u",
                       "OPEN",      "OPEN a b",   "CLOSE",
                       "CLOSE abc", "CLOSE -1",   "CLOSE 99999999999999999999999",
                       "LIMIT u",   "LIMIT u -1", "LIMIT u 99999999",
                       "STATS NOW", "PING PONG"};
  for (const char* line : bad) {
    EXPECT_TRUE(Call(c, line).starts_with("ERR BAD_REQUEST")) << "line: '" << line << "'";
  }
  // Control and non-ASCII bytes.
  ASSERT_FALSE(c.SendRaw(std::string("OPEN \x01\xff\x00x\n", 10)));
  std::error_code ec;
  EXPECT_TRUE(c.ReadLine(ec).starts_with("ERR BAD_REQUEST"));
  EXPECT_EQ(Call(c, "PING"), "PONG");
  // An over-long line gets an error and the connection is closed.
  ASSERT_FALSE(c.SendRaw(std::string(5000, 'A') + "\n"));
  EXPECT_TRUE(c.ReadLine(ec).starts_with("ERR BAD_REQUEST line too long"));
  c.ReadLine(ec);
  EXPECT_TRUE(ec);  // closed by the server
  // A new connection is served.
  LineClient d = server.Connect();
  EXPECT_EQ(Call(d, "PING"), "PONG");
  EXPECT_TRUE(Call(d, "OPEN fine").starts_with("OK "));
  EXPECT_TRUE(server.process().running());
}

TEST(SimServer, PipelinedRequestsAreAnsweredInOrder) {
  ScratchDir dir;
  SimServerProcess server(dir, {"--limit", "1"});
  ASSERT_TRUE(server.ok());
  LineClient c = server.Connect();
  ASSERT_FALSE(c.SendRaw("PING\r\nOPEN p\nOPEN p\nPING\n"));
  std::error_code ec;
  EXPECT_EQ(c.ReadLine(ec), "PONG");
  EXPECT_TRUE(c.ReadLine(ec).starts_with("OK "));
  EXPECT_TRUE(c.ReadLine(ec).starts_with("ERR MAPI_E_SESSION_LIMIT"));
  EXPECT_EQ(c.ReadLine(ec), "PONG");
  EXPECT_FALSE(ec);
}

}  // namespace
}  // namespace dsb::tools_test
