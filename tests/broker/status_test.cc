// Result<T> (common/status.h): a value or an error, never both, never a
// default-constructed T standing in for "no value".
#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

namespace dsb {
namespace {

// No default constructor: a Result holding an error must not need one.
class OnlyFromInt {
 public:
  explicit OnlyFromInt(int v) : v_(v) {}
  int v() const { return v_; }

 private:
  int v_;
};

// Counts live instances: an error Result constructs none.
struct Counted {
  static inline int live = 0;
  Counted() { ++live; }
  Counted(const Counted&) { ++live; }
  Counted(Counted&&) noexcept { ++live; }
  ~Counted() { --live; }
};

TEST(Result, HoldsAValueWithoutADefaultConstructor) {
  Result<OnlyFromInt> r = OnlyFromInt(7);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.status().ok());
  EXPECT_EQ(r->v(), 7);
  EXPECT_EQ((*r).v(), 7);
  EXPECT_EQ(r.value().v(), 7);
}

TEST(Result, AnErrorHoldsNoValueAndKeepsItsStatus) {
  Result<OnlyFromInt> r = Status(Errc::kConfig, "bad key 'x'");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Errc::kConfig);
  EXPECT_EQ(r.status().message(), "bad key 'x'");
}

TEST(Result, AnErrorConstructsNoT) {
  ASSERT_EQ(Counted::live, 0);
  {
    Result<Counted> r = Status(Errc::kInternal, "no");
    EXPECT_EQ(Counted::live, 0);
  }
  {
    Result<Counted> r = Counted();
    EXPECT_EQ(Counted::live, 1);
  }
  EXPECT_EQ(Counted::live, 0);
}

TEST(Result, MovesAMoveOnlyValueOut) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(5);
  std::unique_ptr<int> p = std::move(r).value();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 5);
}

// GCC 12 at -O1/-O2 with -fsanitize=thread inlines value() past the aborting
// DSB_CHECK and warns that the empty optional's string "may be used
// uninitialized" (-Werror): a false positive, the access is never reached.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
TEST(ResultDeathTest, ValueOfAnErrorIsAContractViolation) {
  Result<std::string> r = Status(Errc::kTimeout, "no answer from ws2");
  EXPECT_DEATH((void)r.value(), "value of a failed Result<T>: no answer from ws2");
  EXPECT_DEATH((void)*r, "DSB_CHECK");
  EXPECT_DEATH((void)r->size(), "DSB_CHECK");
}
#pragma GCC diagnostic pop

TEST(ResultDeathTest, AnOkStatusWithoutAValueIsAContractViolation) {
  EXPECT_DEATH(Result<int>{Status::Ok()}, "made from an OK status");
}

}  // namespace
}  // namespace dsb
