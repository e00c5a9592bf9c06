// Header validation of a slot-table segment (shm/segment_validate.h) on the bytes of a real
// segment, and on copies with one thing wrong each.
#include "shm/segment_validate.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "shm/slot_table.h"
#include "tests/shm/segment_fixture.h"

namespace dsb::shm {
namespace {

// The bytes of a fresh segment with 5 slots and 3 waiter entries, target "exch01".
std::vector<unsigned char> RealSegmentBytes(std::uint64_t* instance_id) {
  CreateOptions o;
  o.name = SegmentTestName("dsbtest-validate");
  o.target = "exch01";
  o.slot_count = 5;
  o.waiter_capacity = 3;
  auto table = SlotTable::Create(o);
  EXPECT_TRUE(table.ok()) << table.status().message();
  if (!table.ok()) return {};
  *instance_id = (*table)->instance_id();
  std::vector<unsigned char> bytes;
  {
    const SegmentView mapped(o.name);
    EXPECT_TRUE(mapped.ok());
    if (!mapped.ok()) return {};
    bytes.assign(mapped.data(), mapped.data() + mapped.size());
  }
  table->reset();
  // No mapping left: POSIX unlinks it; on Windows it went with its last
  // handle (Remove says OK only then).
  EXPECT_TRUE(SlotTable::Remove(o.name).ok());
  return bytes;
}

template <typename T>
void Put(std::vector<unsigned char>& bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof value);
}

void FixChecksum(std::vector<unsigned char>& bytes) {
  SegmentHeader* copy = static_cast<SegmentHeader*>(
      ::operator new(sizeof(SegmentHeader), std::align_val_t{alignof(SegmentHeader)}));
  std::memcpy(static_cast<void*>(copy), bytes.data(), sizeof(SegmentHeader));
  Put(bytes, offsetof(SegmentHeader, layout_checksum), LayoutChecksum(*copy));
  ::operator delete(copy, std::align_val_t{alignof(SegmentHeader)});
}

TEST(SegmentValidate, AcceptsARealSegmentAndReturnsItsGeometry) {
  std::uint64_t instance = 0;
  const std::vector<unsigned char> bytes = RealSegmentBytes(&instance);
  ASSERT_EQ(bytes.size(), SegmentBytes(5, 3));
  auto g = ValidateSegmentHeader(bytes, "s");
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ(g->slot_count, 5u);
  EXPECT_EQ(g->waiter_capacity, 3u);
  EXPECT_EQ(g->instance_id, instance);
  EXPECT_EQ(g->target, "exch01");
}

TEST(SegmentValidate, RefusesEachKindOfDamageNamingIt) {
  std::uint64_t instance = 0;
  const std::vector<unsigned char> good = RealSegmentBytes(&instance);
  ASSERT_FALSE(good.empty());
  const struct {
    const char* what;
    void (*damage)(std::vector<unsigned char>&);
    const char* expected;
  } cases[] = {
      {"too short", [](std::vector<unsigned char>& b) { b.resize(HeaderBytes() - 1); },
       "smaller than a dsb slot-table header"},
      {"wrong magic", [](std::vector<unsigned char>& b) {
         Put(b, offsetof(SegmentHeader, magic), std::uint64_t{42});
       }, "wrong magic"},
      {"another layout version", [](std::vector<unsigned char>& b) {
         Put(b, offsetof(SegmentHeader, layout_version), kLayoutVersion + 1);
         FixChecksum(b);
       }, "this build reads version"},
      // Issue 14: version 5 added the summary after the slot words; a version-4
      // segment (or a version-5 header over a file without the summary) is
      // refused, never read past its end.
      {"a version-4 segment", [](std::vector<unsigned char>& b) {
         b.resize(b.size() - SummaryBytes(5));
         Put(b, offsetof(SegmentHeader, layout_version), std::uint32_t{4});
         Put(b, offsetof(SegmentHeader, total_size), std::uint64_t{b.size()});
         FixChecksum(b);
       }, "layout version 4, this build reads version 5"},
      {"no room for the summary", [](std::vector<unsigned char>& b) {
         b.resize(b.size() - SummaryBytes(5));
         Put(b, offsetof(SegmentHeader, total_size), std::uint64_t{b.size()});
         FixChecksum(b);
       }, "size fields disagree"},
      {"file longer than the header says", [](std::vector<unsigned char>& b) {
         b.resize(b.size() + sizeof(SlotCell));
       }, "size fields disagree"},
      {"slot count too large for the file", [](std::vector<unsigned char>& b) {
         Put(b, offsetof(SegmentHeader, slot_count), std::uint32_t{6});
         FixChecksum(b);
       }, "size fields disagree"},
      {"slot count zero", [](std::vector<unsigned char>& b) {
         Put(b, offsetof(SegmentHeader, slot_count), std::uint32_t{0});
         FixChecksum(b);
       }, "size fields disagree"},
      {"checksum", [](std::vector<unsigned char>& b) {
         Put(b, offsetof(SegmentHeader, instance_id), std::uint64_t{7});
       }, "header checksum mismatch"},
      {"target not terminated", [](std::vector<unsigned char>& b) {
         std::memset(b.data() + offsetof(SegmentHeader, target), 'x', kTargetNameCapacity);
         FixChecksum(b);
       }, "target name not terminated"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<unsigned char> bytes = good;
    c.damage(bytes);
    auto g = ValidateSegmentHeader(bytes, "dsb-x-exch01");
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.status().code(), Errc::kSegmentInvalid);
    EXPECT_NE(g.status().message().find("segment dsb-x-exch01"), std::string::npos);
    EXPECT_NE(g.status().message().find(c.expected), std::string::npos) << g.status().message();
  }
}

}  // namespace
}  // namespace dsb::shm
