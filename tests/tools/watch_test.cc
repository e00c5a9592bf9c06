// dsbctl watch's pure parts: replies -> model, change tracking with an
// injected time, and the frame (80 columns, highlighting, truncation).
#include "tools/dsbctl/watch.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

namespace dsb::ctl::watch {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

json::object StatusReply(int held, const std::string& name = "exch01") {
  return json::parse(R"({"ok":true,"broker":"ws1","pid":42,"mode":"single","targets":[
    {"name":")" + name + R"(","limit":32,"limit_source":"config","reserve":0,"capacity":32,
     "held":)" + std::to_string(held) + R"(,"waiting":2,"quarantined":1,"cooling":0}]})")
      .as_object();
}

json::object ClusterStatus() {
  json::object s = StatusReply(5);
  s["mode"] = "cluster";
  return s;
}

json::object LeasesReply(int owed_ws2, const std::string& mode_ws2 = "normal") {
  return json::parse(R"({"ok":true,"coordinator":"ws1",
    "agent":{"broker":"ws1","connected":true,"verdict":"accepted","targets":[]},
    "ledger":{"gate":"open","targets":[{"target":"exch01","limit":32,"pool":29,"owed_total":9,
      "free":20,"brokers":[
        {"broker":"ws1","mode":"normal","owed":4,"granted":4,"held":5,"waiting":0,"wanted":4,
         "lease_left_ms":12345},
        {"broker":"ws2","mode":")" + mode_ws2 + R"(","owed":)" + std::to_string(owed_ws2) +
                     R"(,"granted":5,"held":3,"waiting":7,"wanted":12,"lease_left_ms":null}]}]}})")
      .as_object();
}

std::string Join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

Model Connected(const json::object& status, const json::object* leases = nullptr) {
  Model m = ModelFromReplies(status, leases);
  m.clock = "12:00:00";
  m.data_clock = "12:00:00";
  return m;
}

TEST(WatchModel, ReadsStatusTargets) {
  const Model m = Connected(StatusReply(7));
  EXPECT_TRUE(m.connected);
  EXPECT_EQ(m.broker, "ws1");
  EXPECT_FALSE(m.cluster);
  ASSERT_EQ(m.targets.size(), 1u);
  EXPECT_EQ(m.targets[0].name, "exch01");
  EXPECT_EQ(m.targets[0].limit, 32);
  EXPECT_EQ(m.targets[0].limit_source, "config");
  EXPECT_EQ(m.targets[0].held, 7);
  EXPECT_EQ(m.targets[0].waiting, 2);
  EXPECT_EQ(m.targets[0].quarantined, 1);
  EXPECT_EQ(m.targets[0].cooling, 0);
}

TEST(WatchModel, MissingOrMistypedFieldsShowAsDashNotAThrow) {
  const json::object odd =
      json::parse(R"({"ok":true,"broker":7,"targets":[{"name":"t","held":"x"},3]})").as_object();
  Model m;
  ASSERT_NO_THROW(m = ModelFromReplies(odd, nullptr));
  ASSERT_EQ(m.targets.size(), 1u);
  EXPECT_FALSE(m.targets[0].held.has_value());
  EXPECT_FALSE(m.targets[0].limit.has_value());
  const std::string frame = Join(Render(m, {}, {80, 0, Style::kPlain}));
  EXPECT_NE(frame.find("t "), std::string::npos) << frame;
}

TEST(WatchModel, NamesFromTheBrokerCannotActOnTheTerminal) {
  const Model m = Connected(StatusReply(1, "evil\\u001b[2Jname"));
  const std::string frame = Join(Render(m, {}, {80, 0, Style::kColor}));
  EXPECT_EQ(frame.find("\x1b[2J"), std::string::npos) << frame;
  EXPECT_NE(frame.find("evil\\x1b[2Jname"), std::string::npos) << frame;
}

TEST(WatchModel, ReadsTheLedgerInClusterMode) {
  const json::object leases = LeasesReply(6);
  const Model m = Connected(ClusterStatus(), &leases);
  ASSERT_TRUE(m.cluster);
  EXPECT_EQ(m.coordinator, "ws1");
  EXPECT_EQ(m.agent, "connected, accepted");
  ASSERT_EQ(m.ledger.size(), 1u);
  EXPECT_EQ(m.ledger[0].pool, 29);
  ASSERT_EQ(m.ledger[0].brokers.size(), 2u);
  EXPECT_EQ(m.ledger[0].brokers[1].broker, "ws2");
  EXPECT_EQ(m.ledger[0].brokers[1].owed, 6);
  EXPECT_EQ(m.ledger[0].brokers[1].wanted, 12);
  EXPECT_EQ(m.ledger[0].brokers[0].lease_left_ms, 12345);
  EXPECT_FALSE(m.ledger[0].brokers[1].lease_left_ms.has_value());
}

TEST(WatchModel, AClusterWithoutLeasesSaysWhy) {
  const Model m = ModelFromReplies(ClusterStatus(), nullptr, "coordinator ws1 not connected");
  const std::string frame = Join(Render(m, {}, {80, 0, Style::kPlain}));
  EXPECT_NE(frame.find("ledger unavailable: coordinator ws1 not connected"), std::string::npos)
      << frame;
}

TEST(WatchRender, SingleModeFrameFitsEightyColumnsAndShowsTheNumbers) {
  const auto lines = Render(Connected(StatusReply(7)), {}, {80, 24, Style::kPlain});
  for (const auto& l : lines) EXPECT_LE(VisibleWidth(l), 80u) << l;
  const std::string frame = Join(lines);
  EXPECT_NE(frame.find("connected"), std::string::npos) << frame;
  EXPECT_NE(frame.find("broker ws1 (single)"), std::string::npos) << frame;
  // TARGET LIMIT SOURCE CAP HELD WAIT QUAR COOL
  EXPECT_NE(frame.find("TARGET"), std::string::npos);
  ASSERT_NE(frame.find("exch01"), std::string::npos);
  std::string row;
  for (const auto& l : lines) {
    if (l.rfind("exch01", 0) == 0) row = l;
  }
  std::vector<std::string> cells;
  std::string cell;
  for (char c : row + " ") {
    if (c == ' ') {
      if (!cell.empty()) cells.push_back(cell);
      cell.clear();
    } else {
      cell += c;
    }
  }
  EXPECT_EQ(cells, (std::vector<std::string>{"exch01", "32", "config", "32", "7", "2", "1", "0"}))
      << row;
}

TEST(WatchRender, PlainStyleHasNoEscapesAndMarksChangesWithAStar) {
  const Model m = Connected(StatusReply(7));
  const auto lines = Render(m, {"t/exch01/held"}, {80, 0, Style::kPlain});
  const std::string frame = Join(lines);
  EXPECT_EQ(frame.find('\x1b'), std::string::npos) << frame;
  EXPECT_NE(frame.find(" 7*"), std::string::npos) << frame;
  EXPECT_EQ(frame.find(" 2*"), std::string::npos) << frame;
}

TEST(WatchRender, StyledChangesAreReversedOnlyForTheChangedNumber) {
  const Model m = Connected(StatusReply(7));
  const std::string color = Join(Render(m, {"t/exch01/held"}, {80, 0, Style::kColor}));
  EXPECT_NE(color.find("\x1b[1;7;33m7\x1b[0m"), std::string::npos) << color;
  EXPECT_EQ(color.find("\x1b[1;7;33m2"), std::string::npos) << color;
  // NO_COLOR: bold and reverse, no colour code (3x/4x).
  const std::string mono = Join(Render(m, {"t/exch01/held"}, {80, 0, Style::kMono}));
  EXPECT_NE(mono.find("\x1b[1;7m7\x1b[0m"), std::string::npos) << mono;
  EXPECT_EQ(mono.find("\x1b[3"), std::string::npos) << mono;
  EXPECT_EQ(mono.find("\x1b[4"), std::string::npos) << mono;
  const std::string none = Join(Render(m, {}, {80, 0, Style::kColor}));
  EXPECT_EQ(none.find("\x1b[1;7;33m"), std::string::npos) << none;
}

TEST(WatchRender, ClusterFrameFitsEightyColumnsWithTheLeaseTable) {
  const json::object leases = LeasesReply(6, "draining");
  const Model m = Connected(ClusterStatus(), &leases);
  for (Style s : {Style::kPlain, Style::kMono, Style::kColor}) {
    const auto lines = Render(m, {"l/exch01/ws2/owed"}, {80, 0, s});
    for (const auto& l : lines) EXPECT_LE(VisibleWidth(l), 80u) << l;
  }
  const auto lines = Render(m, {"l/exch01/ws2/owed"}, {80, 0, Style::kPlain});
  const std::string frame = Join(lines);
  EXPECT_NE(frame.find("coordinator ws1; this broker connected, accepted"), std::string::npos)
      << frame;
  EXPECT_NE(frame.find("target exch01: limit 32 pool 29 owed 9 free 20"), std::string::npos)
      << frame;
  std::string ws1, ws2;
  for (const auto& l : lines) {
    if (l.rfind("  ws1", 0) == 0) ws1 = l;
    if (l.rfind("  ws2", 0) == 0) ws2 = l;
  }
  EXPECT_NE(ws1.find("normal"), std::string::npos) << ws1;
  EXPECT_NE(ws1.find("12.3s"), std::string::npos) << ws1;  // the lease countdown
  EXPECT_NE(ws2.find("draining"), std::string::npos) << ws2;
  EXPECT_NE(ws2.find(" 6*"), std::string::npos) << ws2;    // owed changed
  EXPECT_NE(ws2.find(" 12 "), std::string::npos) << ws2;   // wanted
  EXPECT_EQ(ws2.substr(ws2.size() - 1), "-") << ws2;       // no lease running
}

TEST(WatchRender, EveryLineIsCutAtTheWidthEvenWithLongNames) {
  const std::string long_name(150, 'n');
  json::object status = StatusReply(3, long_name);
  status["broker"] = std::string(100, 'b');
  Model m = Connected(status);
  m.connected = false;
  m.error = std::string(200, 'e');
  for (int width : {80, 60, 40, 20, 1}) {
    for (Style s : {Style::kPlain, Style::kMono, Style::kColor}) {
      for (const auto& l : Render(m, {"t/" + long_name + "/held"}, {width, 0, s})) {
        EXPECT_LE(VisibleWidth(l), static_cast<std::size_t>(width)) << width << ": " << l;
      }
    }
  }
  // A cut name ends with '~', so it never passes for a whole one.
  const std::string frame = Join(Render(m, {}, {80, 0, Style::kPlain}));
  EXPECT_NE(frame.find("nnn~"), std::string::npos) << frame;
}

TEST(WatchRender, LongNamesThatDifferNearTheirEndStayDistinctWhenCut) {
  // 40 characters each, alike in the first 38: cut at the end, both would
  // read "target-with-a-name-of-fort~".
  const std::string a = "target-with-a-name-of-forty-chars-01-a";
  const std::string b = "target-with-a-name-of-forty-chars-01-b";
  json::object status = StatusReply(1, a);
  json::object second = status["targets"].as_array()[0].as_object();
  second["name"] = b;
  status["targets"].as_array().push_back(second);
  const auto lines = Render(Connected(status), {}, {80, 0, Style::kPlain});
  std::vector<std::string> rows;
  for (const auto& l : lines) {
    if (l.rfind("target-", 0) == 0) rows.push_back(l.substr(0, l.find(' ')));
  }
  ASSERT_EQ(rows.size(), 2u) << Join(lines);
  EXPECT_NE(rows[0], rows[1]);
  for (const auto& r : rows) {
    // Cut (not whole), in the middle: head, '~', tail, 27 columns at 80.
    EXPECT_EQ(r.size(), 27u) << r;
    EXPECT_EQ(r.find('~'), 13u) << r;
    EXPECT_EQ(r.substr(0, 13), a.substr(0, 13)) << r;
  }
  EXPECT_EQ(rows[0].substr(14), a.substr(a.size() - 13));
  EXPECT_EQ(rows[1].substr(14), b.substr(b.size() - 13));
}

TEST(WatchRender, RowsThatDoNotFitAreCountedOnTheLastLine) {
  json::object status = StatusReply(1);
  json::array targets;
  for (int i = 0; i < 40; ++i) {
    json::object t = status["targets"].as_array()[0].as_object();
    t["name"] = "target" + std::to_string(i);
    targets.push_back(t);
  }
  status["targets"] = targets;
  const Model m = Connected(status);
  const auto all = Render(m, {}, {80, 0, Style::kPlain});
  ASSERT_GT(all.size(), 24u);
  const auto cut = Render(m, {}, {80, 24, Style::kPlain});
  ASSERT_EQ(cut.size(), 24u);
  const std::size_t more = all.size() - 23;
  EXPECT_EQ(cut.back(), "... " + std::to_string(more) + " more lines (a taller terminal shows them)");
  for (std::size_t i = 0; i < 23; ++i) EXPECT_EQ(cut[i], all[i]);
  // Nothing is cut when everything fits.
  EXPECT_EQ(Render(m, {}, {80, static_cast<int>(all.size()), Style::kPlain}), all);
}

TEST(WatchRender, ADisconnectedBrokerIsSaidWithTheReasonAndTheAgeOfTheNumbers) {
  Model m = Connected(StatusReply(4));
  m.connected = false;
  m.clock = "12:00:09";
  m.error = "no broker at /run/dsb/dsb.sock (connection refused)";
  const std::string frame = Join(Render(m, {}, {80, 24, Style::kPlain}));
  EXPECT_NE(frame.find("DISCONNECTED"), std::string::npos) << frame;
  EXPECT_NE(frame.find("connection refused"), std::string::npos) << frame;
  EXPECT_NE(frame.find("retrying every 1s; the numbers below are from 12:00:00"),
            std::string::npos)
      << frame;
  EXPECT_NE(frame.find("exch01"), std::string::npos) << frame;  // the last numbers stay
}

TEST(WatchChanges, AChangedNumberIsHighlightedForTheHoldTimeOnly) {
  const auto t0 = ChangeTracker::Clock::time_point{} + 100s;
  ChangeTracker tracker(1s);
  tracker.Observe(Connected(StatusReply(3)), t0);
  EXPECT_TRUE(tracker.Highlighted(t0).empty());  // the first frame: nothing "changed"
  tracker.Observe(Connected(StatusReply(3)), t0 + 1s);
  EXPECT_TRUE(tracker.Highlighted(t0 + 1s).empty());
  tracker.Observe(Connected(StatusReply(5)), t0 + 2s);
  EXPECT_EQ(tracker.Highlighted(t0 + 2s), (std::set<std::string>{"t/exch01/held"}));
  EXPECT_EQ(tracker.Highlighted(t0 + 2s + 999ms), (std::set<std::string>{"t/exch01/held"}));
  EXPECT_TRUE(tracker.Highlighted(t0 + 3s).empty());
  EXPECT_EQ(tracker.NextExpiry(t0 + 2s), t0 + 3s);
  EXPECT_FALSE(tracker.NextExpiry(t0 + 3s).has_value());
}

TEST(WatchChanges, ADisconnectedFrameChangesNothing) {
  const auto t0 = ChangeTracker::Clock::time_point{} + 100s;
  ChangeTracker tracker(1s);
  tracker.Observe(Connected(StatusReply(3)), t0);
  Model gone;  // connected = false, no numbers
  tracker.Observe(gone, t0 + 1s);
  tracker.Observe(Connected(StatusReply(3)), t0 + 2s);
  EXPECT_TRUE(tracker.Highlighted(t0 + 2s).empty());
}

TEST(WatchChanges, LedgerNumbersAndModesAreTrackedButNotTheCountdown) {
  const auto t0 = ChangeTracker::Clock::time_point{} + 100s;
  ChangeTracker tracker(1s);
  const json::object a = LeasesReply(6);
  tracker.Observe(Connected(ClusterStatus(), &a), t0);
  json::object b = LeasesReply(7, "draining");
  b["ledger"].as_object()["targets"].as_array()[0].as_object()["brokers"].as_array()[0]
      .as_object()["lease_left_ms"] = 999;
  tracker.Observe(Connected(ClusterStatus(), &b), t0 + 1s);
  EXPECT_EQ(tracker.Highlighted(t0 + 1s),
            (std::set<std::string>{"l/exch01/ws2/owed", "l/exch01/ws2/mode"}));
}

TEST(WatchRender, VisibleWidthSkipsEscapes) {
  EXPECT_EQ(VisibleWidth("\x1b[1;7;33mab\x1b[0mc"), 3u);
  EXPECT_EQ(VisibleWidth("\x1b[12;1Hx\x1b[K"), 1u);
  EXPECT_EQ(VisibleWidth("caf\xc3\xa9"), 4u);
}

// FrameText is what both terminals (watch_term_posix.cc, watch_term_win.cc) write.
TEST(WatchFrame, RedrawPutsEachLineAtItsRowAndPlainOutputSeparatesFrames) {
  const std::vector<std::string> lines = {"a", "bc"};
  EXPECT_EQ(FrameText(lines, /*redraw=*/true, /*clear=*/false),
            "\x1b[1;1Ha\x1b[K\x1b[2;1Hbc\x1b[K\x1b[J");
  EXPECT_EQ(FrameText(lines, /*redraw=*/true, /*clear=*/true),
            "\x1b[2J\x1b[1;1Ha\x1b[K\x1b[2;1Hbc\x1b[K\x1b[J");
  // Plain output has no escape sequence, even when a clear is asked for.
  EXPECT_EQ(FrameText(lines, /*redraw=*/false, /*clear=*/true), "a\nbc\n\n");
}

}  // namespace
}  // namespace dsb::ctl::watch
