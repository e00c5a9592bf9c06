// A test fixture that makes one slot table segment with a unique name and
// removes it at the end (shared by the shm suites).
#ifndef DSB_TESTS_SHM_SEGMENT_FIXTURE_H_
#define DSB_TESTS_SHM_SEGMENT_FIXTURE_H_

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "shm/segment_memory.h"
#include "shm/slot_table.h"

#ifdef _WIN32
#include <windows.h>

#include <atomic>
#else
#include "tests/support/unique_name.h"
#endif

namespace dsb::shm {

// A segment name no concurrently running test uses. POSIX: the test support's
// UniqueName (whose header also brings the POSIX-only ScratchDir); Windows:
// the same "<stem>-<pid>-<n>" made here.
inline std::string SegmentTestName(const std::string& stem) {
#ifdef _WIN32
  static std::atomic<int> counter{0};
  return stem + "-" + std::to_string(::GetCurrentProcessId()) + "-" +
         std::to_string(counter.fetch_add(1));
#else
  return dsb::testing::UniqueName(stem);
#endif
}

// The bytes of segment `name` as another process sees them: a second
// mapping, writable (a hostile group member's view). Empty if it cannot be
// opened.
class SegmentView {
 public:
  explicit SegmentView(const std::string& name) {
    auto m = SegmentMemory::Open(name, std::nullopt);
    if (m.ok()) memory_ = std::move(m).value();
  }
  bool ok() const { return memory_ != nullptr; }
  unsigned char* data() const { return static_cast<unsigned char*>(memory_->address()); }
  std::size_t size() const { return memory_->size(); }

 private:
  std::unique_ptr<SegmentMemory> memory_;
};

class SegmentFixture : public ::testing::Test {
 protected:
  // A fresh segment; nullptr (and a test failure) if it cannot be made.
  std::unique_ptr<SlotTable> Make(std::uint32_t slots, std::uint32_t capacity,
                                  std::chrono::nanoseconds cooldown = {},
                                  std::uint32_t waiter_capacity = kDefaultWaiterCapacity) {
    name_ = SegmentTestName("dsb-test");
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
