// The simserver line protocol parser: table-driven accept/refuse cases.
#include "tools/simserver/protocol.h"

#include <gtest/gtest.h>

namespace dsb::sim {
namespace {

struct Case {
  std::string line;
  Verb verb;
  std::string user;
  std::uint64_t id;
  std::uint32_t limit;
};

TEST(Protocol, ParsesEveryVerb) {
  const Case cases[] = {
      {"OPEN alice", Verb::kOpen, "alice", 0, 0},
      {"OPEN   alice  ", Verb::kOpen, "alice", 0, 0},
      {"OPEN alice\r", Verb::kOpen, "alice", 0, 0},
      {"OPEN dom\\svc-digiscope@exch01", Verb::kOpen, "dom\\svc-digiscope@exch01", 0, 0},
      {"CLOSE 42", Verb::kClose, "", 42, 0},
      {"CLOSE 18446744073709551615", Verb::kClose, "", 18446744073709551615ULL, 0},
      {"STATS", Verb::kStats, "", 0, 0},
      {"STATS RESET", Verb::kStatsReset, "", 0, 0},
      {"LIMIT bob 0", Verb::kLimit, "bob", 0, 0},
      {"LIMIT bob 1000000", Verb::kLimit, "bob", 0, 1000000},
      {"PING", Verb::kPing, "", 0, 0},
  };
  for (const Case& c : cases) {
    const Request r = ParseRequest(c.line);
    EXPECT_EQ(r.verb, c.verb) << c.line << " -> " << r.error;
    EXPECT_EQ(r.user, c.user) << c.line;
    EXPECT_EQ(r.session_id, c.id) << c.line;
    EXPECT_EQ(r.limit, c.limit) << c.line;
  }
}

TEST(Protocol, RefusesMalformedLinesWithAReason) {
  const std::string bad[] = {"",
                             "   ",
                             "ping",
                             "OPEN",
                             "OPEN a b",
                             std::string("OPEN a\tb"),
                             "OPEN " + std::string(kMaxUserBytes + 1, 'u'),
                             "CLOSE",
                             "CLOSE x",
                             "CLOSE -1",
                             "CLOSE 1 2",
                             "CLOSE 18446744073709551616",
                             "STATS RESET NOW",
                             "STATS reset",
                             "LIMIT bob",
                             "LIMIT bob 1000001",
                             "LIMIT bob 4294967296",
                             "LIMIT bob +1",
                             "PING 1",
                             std::string("OPEN a\0b", 8),
                             "OPEN \xc3\xa9",
                             std::string(kMaxLineBytes + 1, 'P')};
  for (const std::string& line : bad) {
    const Request r = ParseRequest(line);
    EXPECT_EQ(r.verb, Verb::kBad) << "'" << line << "'";
    EXPECT_FALSE(r.error.empty()) << "'" << line << "'";
  }
}

TEST(Protocol, SessionLimitReplyMirrorsExchange) {
  EXPECT_EQ(SessionLimitReply("svc", 32),
            "ERR MAPI_E_SESSION_LIMIT 0x80040112 ec=1246 user=svc limit=32");
  EXPECT_TRUE(SessionLimitReply("x", 1).starts_with(kSessionLimitPrefix));
}

}  // namespace
}  // namespace dsb::sim
