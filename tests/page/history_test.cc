// History (broker/history.h): the status page's bounded ring of samples, with
// made-up instants (time is an input).
#include "broker/history.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace dsb::broker {
namespace {

namespace json = boost::json;
using Clock = History::Clock;
using std::chrono::seconds;

History::TargetPoint Point(std::string name, std::uint32_t limit, std::uint32_t capacity,
                           std::uint32_t held, std::uint32_t waiting) {
  History::TargetPoint p;
  p.target = std::move(name);
  p.limit = limit;
  p.capacity = capacity;
  p.held = held;
  p.waiting = waiting;
  return p;
}

const json::array& Column(const json::object& h, std::size_t target, const char* name) {
  return h.at("targets").as_array().at(target).as_object().at(name).as_array();
}

TEST(History, ColumnsHoldOneEntryPerFrameWithAgesFromNow) {
  History h(10);
  const Clock::time_point t0{seconds(100)};
  h.Record(t0, {Point("exch01", 32, 30, 5, 0)});
  h.Record(t0 + seconds(1), {Point("exch01", 32, 30, 7, 2)});
  const json::object j = h.Json(t0 + seconds(3));
  EXPECT_EQ(j.at("frames").as_uint64(), 2u);
  EXPECT_EQ(j.at("age_ms"), (json::array{3000, 2000}));
  EXPECT_EQ(Column(j, 0, "held"), (json::array{5, 7}));
  EXPECT_EQ(Column(j, 0, "waiting"), (json::array{0, 2}));
  EXPECT_EQ(Column(j, 0, "limit"), (json::array{32, 32}));
  EXPECT_EQ(Column(j, 0, "capacity"), (json::array{30, 30}));
}

TEST(History, DropsTheOldestFrameWhenFull) {
  History h(3);
  const Clock::time_point t0{seconds(100)};
  for (std::uint32_t i = 0; i < 5; ++i) h.Record(t0 + seconds(i), {Point("a", 10, 10, i, 0)});
  EXPECT_EQ(h.size(), 3u);
  const json::object j = h.Json(t0 + seconds(4));
  EXPECT_EQ(Column(j, 0, "held"), (json::array{2, 3, 4}));
  EXPECT_EQ(j.at("age_ms"), (json::array{2000, 1000, 0}));
  EXPECT_EQ(j.at("capacity").as_uint64(), 3u);
}

TEST(History, AMissingTargetOrNumberIsNullNotZero) {
  History h(10);
  const Clock::time_point t0{seconds(100)};
  History::TargetPoint no_limit = Point("a", 0, 8, 1, 0);
  no_limit.limit.reset();
  h.Record(t0, {no_limit});
  h.Record(t0 + seconds(1), {Point("a", 9, 8, 2, 0), Point("b", 5, 5, 5, 0)});
  h.Record(t0 + seconds(2), {Point("b", 5, 5, 4, 0)});
  const json::object j = h.Json(t0 + seconds(2));
  EXPECT_EQ(Column(j, 0, "limit"), (json::array{nullptr, 9, nullptr}));
  EXPECT_EQ(Column(j, 0, "held"), (json::array{1, 2, nullptr}));
  EXPECT_EQ(Column(j, 1, "held"), (json::array{nullptr, 5, 4}));
}

TEST(History, BrokersOfATargetGetTheirOwnColumns) {
  History h(10);
  const Clock::time_point t0{seconds(100)};
  History::TargetPoint p = Point("a", 20, 10, 6, 0);
  p.brokers = {{"ws1", 4, 4, 3}, {"ws2", 2, 3, 1}};
  h.Record(t0, {p});
  p.brokers = {{"ws2", 5, 5, 5}};
  h.Record(t0 + seconds(1), {p});
  const json::object j = h.Json(t0 + seconds(1));
  const json::array& brokers = j.at("targets").as_array().at(0).at("brokers").as_array();
  ASSERT_EQ(brokers.size(), 2u);
  EXPECT_EQ(brokers[0].at("broker"), "ws1");
  EXPECT_EQ(brokers[0].at("held"), (json::array{3, nullptr}));
  EXPECT_EQ(brokers[1].at("broker"), "ws2");
  EXPECT_EQ(brokers[1].at("owed"), (json::array{2, 5}));
  EXPECT_EQ(brokers[1].at("granted"), (json::array{3, 5}));
}

TEST(History, ATimeBeforeTheNewestFrameIsTakenAsEqual) {
  History h(10);
  const Clock::time_point t0{seconds(100)};
  h.Record(t0, {Point("a", 1, 1, 1, 0)});
  h.Record(t0 - seconds(5), {Point("a", 1, 1, 1, 0)});
  EXPECT_EQ(h.Json(t0).at("age_ms"), (json::array{0, 0}));
}

TEST(History, SampleFromReadsStatusAndLedgerReplies) {
  const json::object status =
      json::parse(R"({"ok":true,"targets":[
        {"name":"exch01","limit":32,"capacity":30,"held":12,"waiting":3,"free":18},
        {"name":"pg","limit":"bad","capacity":-1,"held":2},
        {"limit":5}]})")
          .as_object();
  const json::object leases =
      json::parse(R"({"ok":true,"ledger":{"targets":[{"target":"exch01","brokers":[
        {"broker":"ws1","owed":4,"granted":5,"held":3},{"broker":"ws2","owed":1}]},
        {"target":"unknown","brokers":[{"broker":"ws9","owed":1}]}]}})")
          .as_object();
  const auto points = History::SampleFrom(status, &leases);
  ASSERT_EQ(points.size(), 2u);  // the nameless target is skipped
  EXPECT_EQ(points[0].target, "exch01");
  EXPECT_EQ(points[0].limit, 32u);
  EXPECT_EQ(points[0].capacity, 30u);
  EXPECT_EQ(points[0].held, 12u);
  EXPECT_EQ(points[0].waiting, 3u);
  ASSERT_EQ(points[0].brokers.size(), 2u);
  EXPECT_EQ(points[0].brokers[0].broker, "ws1");
  EXPECT_EQ(points[0].brokers[0].granted, 5u);
  EXPECT_EQ(points[0].brokers[1].held, 0u);
  EXPECT_EQ(points[1].target, "pg");
  EXPECT_FALSE(points[1].limit.has_value());     // not a number
  EXPECT_FALSE(points[1].capacity.has_value());  // negative
  EXPECT_FALSE(points[1].waiting.has_value());   // missing
  EXPECT_TRUE(points[1].brokers.empty());
  // Single-machine mode: the leases reply is an error without a ledger.
  const json::object single = json::parse(R"({"ok":false,"message":"no leases"})").as_object();
  EXPECT_TRUE(History::SampleFrom(status, &single)[0].brokers.empty());
  EXPECT_TRUE(History::SampleFrom(status, nullptr)[0].brokers.empty());
}

}  // namespace
}  // namespace dsb::broker
