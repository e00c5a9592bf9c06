// IsoUtc (common/utc_time.h): the wall time in status replies (limit_keeper.cc,
// etcd/etcd_limits.cc).
#include "common/utc_time.h"

#include <gtest/gtest.h>

#include <chrono>

namespace dsb {
namespace {

using std::chrono::system_clock;

TEST(IsoUtc, IsUtcToTheSecondTruncated) {
  const system_clock::time_point t{std::chrono::seconds(1234567890)};
  EXPECT_EQ(IsoUtc(t), "2009-02-13T23:31:30Z");
  EXPECT_EQ(IsoUtc(t + std::chrono::milliseconds(999)), "2009-02-13T23:31:30Z");
  EXPECT_EQ(IsoUtc(system_clock::time_point{}), "1970-01-01T00:00:00Z");
}

}  // namespace
}  // namespace dsb
