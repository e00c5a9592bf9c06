// A test fixture that makes one slot table segment with a unique name and
// removes it at the end (shared by the shm suites).
#ifndef DSB_TESTS_SHM_SEGMENT_FIXTURE_H_
#define DSB_TESTS_SHM_SEGMENT_FIXTURE_H_

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "shm/slot_table.h"
#include "tests/support/unique_name.h"

namespace dsb::shm {

class SegmentFixture : public ::testing::Test {
 protected:
  // A fresh segment; nullptr (and a test failure) if it cannot be made.
  std::unique_ptr<SlotTable> Make(std::uint32_t slots, std::uint32_t capacity,
                                  std::chrono::nanoseconds cooldown = {},
                                  std::uint32_t waiter_capacity = kDefaultWaiterCapacity) {
    name_ = dsb::testing::UniqueName("dsb-test");
    CreateOptions o;
    o.name = name_;
    o.target = "exch01";
    o.slot_count = slots;
    o.capacity = capacity;
    o.release_cooldown = cooldown;
    o.waiter_capacity = waiter_capacity;
    auto t = SlotTable::Create(o);
    EXPECT_TRUE(t.ok()) << t.status().message();
    return t.ok() ? std::move(t).value() : nullptr;
  }
  void TearDown() override {
    if (!name_.empty()) (void)SlotTable::Remove(name_);
  }
  std::string name_;
};

}  // namespace dsb::shm

#endif  // DSB_TESTS_SHM_SEGMENT_FIXTURE_H_
