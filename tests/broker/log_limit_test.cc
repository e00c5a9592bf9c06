// LogLimiter (common/log_limit.h) on an injected clock.
#include "common/log_limit.h"

#include <gtest/gtest.h>

#include <string>

namespace dsb {
namespace {

using Clock = LogLimiter::Clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

LogLimiter::Options Opts(std::uint32_t burst, Clock::duration interval, std::size_t keys = 256) {
  LogLimiter::Options o;
  o.burst = burst;
  o.interval = interval;
  o.max_keys = keys;
  return o;
}

TEST(LogLimiter, EmitsTheBurstThenCountsAndReportsWithTheNextLine) {
  LogLimiter l(Opts(3, seconds(10)));
  const Clock::time_point t0{};
  for (int i = 0; i < 3; ++i) {
    const auto a = l.Admit("site", "peer", t0 + milliseconds(i));
    EXPECT_TRUE(a.emit) << i;
    EXPECT_EQ(a.suppressed, 0u);
  }
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(l.Admit("site", "peer", t0 + milliseconds(10 + i)).emit);
  EXPECT_EQ(l.suppressed_total(), 1000u);
  // Still inside the interval: nothing to flush yet.
  EXPECT_TRUE(l.Flush(t0 + seconds(9)).empty());
  EXPECT_EQ(l.NextFlush(), t0 + seconds(10));
  // The next line after the interval goes out and carries the count.
  const auto a = l.Admit("site", "peer", t0 + seconds(11));
  EXPECT_TRUE(a.emit);
  EXPECT_EQ(a.suppressed, 1000u);
  EXPECT_EQ(a.over, seconds(11) - milliseconds(10));
  // Reported once.
  EXPECT_TRUE(l.Flush(t0 + seconds(30)).empty());
  EXPECT_FALSE(l.NextFlush().has_value());
}

TEST(LogLimiter, FlushReportsAKeyThatFellSilentOnce) {
  LogLimiter l(Opts(1, seconds(5)));
  const Clock::time_point t0{};
  EXPECT_TRUE(l.Admit("wrong key", "10.0.0.1", t0).emit);
  EXPECT_FALSE(l.Admit("wrong key", "10.0.0.1", t0 + seconds(1)).emit);
  EXPECT_FALSE(l.Admit("wrong key", "10.0.0.1", t0 + seconds(2)).emit);
  auto s = l.Flush(t0 + seconds(5));
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].site, "wrong key");
  EXPECT_EQ(s[0].peer, "10.0.0.1");
  EXPECT_EQ(s[0].suppressed, 2u);
  EXPECT_EQ(s[0].over, seconds(4));
  EXPECT_TRUE(l.Flush(t0 + seconds(6)).empty());
  // The key was dropped: the next line starts a fresh burst with no count.
  EXPECT_EQ(l.keys(), 0u);
  const auto a = l.Admit("wrong key", "10.0.0.1", t0 + seconds(7));
  EXPECT_TRUE(a.emit);
  EXPECT_EQ(a.suppressed, 0u);
}

TEST(LogLimiter, FlushAllReportsPendingCountsBeforeTheIntervalEnds) {
  LogLimiter l(Opts(1, seconds(60)));
  const Clock::time_point t0{};
  l.Admit("s", "p", t0);
  l.Admit("s", "p", t0);
  EXPECT_TRUE(l.Flush(t0 + seconds(1)).empty());
  auto s = l.Flush(t0 + seconds(1), /*all=*/true);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].suppressed, 1u);
}

TEST(LogLimiter, KeysAreCountedApart) {
  LogLimiter l(Opts(2, seconds(10)));
  const Clock::time_point t0{};
  for (const char* peer : {"a", "b"}) {
    EXPECT_TRUE(l.Admit("site", peer, t0).emit);
    EXPECT_TRUE(l.Admit("site", peer, t0).emit);
    EXPECT_FALSE(l.Admit("site", peer, t0).emit);
  }
  EXPECT_TRUE(l.Admit("other site", "a", t0).emit);
  EXPECT_EQ(l.keys(), 3u);
}

TEST(LogLimiter, ASteadyFloodWritesBurstPlusOneLinesPerInterval) {
  // 100 s of one line per millisecond, flushed every second as the broker does.
  LogLimiter l(Opts(5, seconds(10)));
  const Clock::time_point t0{};
  std::uint64_t emitted = 0;
  std::uint64_t summaries = 0;
  std::uint64_t accounted = 0;
  for (int ms = 0; ms < 100'000; ++ms) {
    const auto now = t0 + milliseconds(ms);
    const auto a = l.Admit("report_session_limit", "pid 7", now);
    if (a.emit) {
      ++emitted;
      accounted += 1 + a.suppressed;
      if (a.suppressed > 0) ++summaries;
    }
    if (ms % 1000 == 999) {
      for (const auto& s : l.Flush(now)) {
        ++summaries;
        accounted += s.suppressed;
      }
    }
  }
  for (const auto& s : l.Flush(t0 + seconds(200), true)) accounted += s.suppressed;
  // 10 intervals: at most 5 lines and one count each (a count may ride on a line).
  EXPECT_LE(emitted, 5u * 11u);
  EXPECT_LE(emitted + summaries, 6u * 11u);
  EXPECT_EQ(accounted, 100'000u) << "every line is either written or counted in a summary";
}

TEST(LogLimiter, ManyPeersShareAnOverflowKeyWhenTheTableIsFull) {
  LogLimiter l(Opts(1, seconds(10), /*keys=*/4));
  const Clock::time_point t0{};
  int emitted = 0;
  for (int peer = 0; peer < 1000; ++peer) {
    emitted += l.Admit("refused local peer", "pid " + std::to_string(peer), t0).emit ? 1 : 0;
  }
  // Four peers of their own, then one shared key: five lines, not 1000.
  EXPECT_EQ(emitted, 5);
  EXPECT_EQ(l.keys(), 5u);
  auto s = l.Flush(t0 + seconds(10));
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].peer, LogLimiter::kOtherPeers);
  EXPECT_EQ(s[0].suppressed, 995u);
  // Idle keys are dropped when the table is full, so new peers get keys again.
  EXPECT_TRUE(l.Admit("refused local peer", "pid 5000", t0 + seconds(21)).emit);
  EXPECT_LE(l.keys(), 4u);
}

TEST(LogLimiter, PeersRotatingAtOneSiteShareItsOverflowKeyAndOtherSitesKeepTheirs) {
  // A network peer that changes its source address for every connection
  // (500 addresses on 127.0.0.0/8) must not get 256 keys of its own.
  LogLimiter l(Opts(5, seconds(30)));  // 256 keys, 8 per site
  const Clock::time_point t0{};
  int emitted = 0;
  for (int round = 0; round < 20; ++round) {
    for (int peer = 0; peer < 500; ++peer) {
      emitted += l.Admit("wire handshake refused", "127.0." + std::to_string(peer), t0).emit;
    }
  }
  EXPECT_EQ(emitted, (8 + 1) * 5);
  EXPECT_EQ(l.keys(), 9u);
  EXPECT_TRUE(l.Admit("malformed local request", "uid 1000", t0).emit);
  const auto s = l.Flush(t0 + seconds(30));
  EXPECT_EQ(s.size(), 9u);  // one summary line per key, not per address
}

TEST(LogLimiter, DegenerateOptionsAreRaised) {
  LogLimiter l(Opts(0, Clock::duration::zero(), 0));
  EXPECT_EQ(l.options().burst, 1u);
  EXPECT_GT(l.options().interval, Clock::duration::zero());
  EXPECT_EQ(l.options().max_keys, 1u);
  EXPECT_TRUE(l.Admit("s", "p", Clock::time_point{}).emit);
}

}  // namespace
}  // namespace dsb
