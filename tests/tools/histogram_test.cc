// dsb-load's latency histogram: bucket bounds, percentiles and the JSON round trip.
#include "tools/load/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <random>
#include <vector>

namespace dsb::load {
namespace {

using std::chrono::microseconds;

TEST(Histogram, BucketsAreMonotoneAndContainTheirLowerBound) {
  std::size_t last = 0;
  for (std::uint64_t v :
       {0ull, 1ull, 15ull, 16ull, 17ull, 31ull, 32ull, 1000ull, 123456789ull, ~0ull}) {
    const std::size_t b = Histogram::BucketOf(v);
    EXPECT_GE(b, last) << v;
    EXPECT_LE(Histogram::LowerBound(b), v) << v;
    EXPECT_EQ(Histogram::BucketOf(Histogram::LowerBound(b)), b) << v;
    last = b;
  }
}

TEST(Histogram, EmptyReportsZero) {
  Histogram h;
  EXPECT_EQ(h.Percentile(0.5), microseconds(0));
  EXPECT_EQ(h.max(), microseconds(0));
}

TEST(Histogram, PercentilesAreWithinOneBucketOfTheExactValue) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::printf("Histogram seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> d(7.0, 1.5);
  Histogram h;
  std::vector<std::int64_t> values;
  for (int i = 0; i < 20000; ++i) {
    const auto v = static_cast<std::int64_t>(d(rng));
    values.push_back(v);
    h.Add(microseconds(v));
  }
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99}) {
    const auto exact = static_cast<double>(
        values[static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size()))) - 1]);
    const auto got = static_cast<double>(h.Percentile(q).count());
    EXPECT_LE(got, exact) << q;
    EXPECT_GE(got, exact * (1.0 - 1.0 / 16) - 1) << q;
  }
  EXPECT_EQ(h.max().count(), values.back());
  EXPECT_EQ(h.count(), values.size());
}

TEST(Histogram, MergeAddsCountsAndJsonRoundTrips) {
  Histogram a, b;
  a.Add(microseconds(10));
  a.Add(microseconds(1000));
  b.Add(microseconds(50000));
  a.Merge(b);
  EXPECT_EQ(a.count(), 3u);
  EXPECT_EQ(a.max(), microseconds(50000));
  Histogram c;
  ASSERT_TRUE(c.FromJson(boost::json::parse(boost::json::serialize(a.ToJson()))));
  EXPECT_EQ(c.count(), 3u);
  EXPECT_EQ(c.Percentile(0.5), a.Percentile(0.5));
  EXPECT_EQ(c.max(), a.max());
}

TEST(Histogram, FromJsonRefusesMalformedInput) {
  Histogram h;
  h.Add(microseconds(5));
  for (const char* text : {"1", "{}", R"({"count":1,"max_us":5,"buckets":[[5]]})",
                           R"({"count":2,"max_us":5,"buckets":[[5,1]]})",
                           R"({"count":1,"max_us":5,"buckets":[[99999,1]]})",
                           R"({"count":-1,"max_us":5,"buckets":[]})"}) {
    EXPECT_FALSE(h.FromJson(boost::json::parse(text))) << text;
  }
  EXPECT_EQ(h.count(), 1u);  // unchanged
}

}  // namespace
}  // namespace dsb::load
