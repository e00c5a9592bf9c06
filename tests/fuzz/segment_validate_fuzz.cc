// libFuzzer entry: slot-table header validation (shm/segment_validate.h) on arbitrary
// bytes, as any process with access to /dev/shm can write them. It may not crash, read
// outside the bytes, leak or hit undefined behaviour; a refusal is kSegmentInvalid naming
// the segment; a success promises a geometry that fits the bytes exactly.
//
// Input: one flags byte, then the segment. A checksum over the header is hard to hit by
// mutation, so the flags let the fuzzer repair parts and reach the later checks:
//   bit 3: resize the segment to what its slot_count and waiter_capacity need, when both
//   are in 1..64 (first), bit 1: write magic, layout version and header_size, bit 2: write
//   total_size = the segment's size, bit 0: write the correct layout_checksum (last).
// So a seed with flags 0x0f stays valid when the layout version or header size changes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "shm/segment_validate.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

template <typename T>
void Put(std::vector<unsigned char>& bytes, std::size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof value);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace dsb::shm;
  if (size == 0) return 0;
  const std::uint8_t flags = data[0];
  // Exactly the segment's bytes, so ASan sees any read past its end.
  std::vector<unsigned char> segment(data + 1, data + size);
  constexpr std::size_t kStaticEnd = offsetof(SegmentHeader, layout_checksum) + 8;
  if ((flags & 8) && segment.size() >= kStaticEnd) {
    std::uint32_t slots = 0;
    std::uint32_t waiters = 0;
    std::memcpy(&slots, segment.data() + offsetof(SegmentHeader, slot_count), sizeof slots);
    std::memcpy(&waiters, segment.data() + offsetof(SegmentHeader, waiter_capacity),
                sizeof waiters);
    if (slots >= 1 && slots <= 64 && waiters >= 1 && waiters <= 64) {
      segment.resize(SegmentBytes(slots, waiters));
    }
  }
  if (segment.size() >= HeaderBytes()) {
    if (flags & 2) {
      Put(segment, offsetof(SegmentHeader, magic), kMagic);
      Put(segment, offsetof(SegmentHeader, layout_version), kLayoutVersion);
      Put(segment, offsetof(SegmentHeader, header_size),
          static_cast<std::uint32_t>(sizeof(SegmentHeader)));
    }
    if (flags & 4) {
      Put(segment, offsetof(SegmentHeader, total_size), std::uint64_t{segment.size()});
    }
    if (flags & 1) {
      // LayoutChecksum reads the static part only; an aligned copy of the header.
      SegmentHeader* copy = static_cast<SegmentHeader*>(
          ::operator new(sizeof(SegmentHeader), std::align_val_t{alignof(SegmentHeader)}));
      std::memcpy(static_cast<void*>(copy), segment.data(), sizeof(SegmentHeader));
      Put(segment, offsetof(SegmentHeader, layout_checksum), LayoutChecksum(*copy));
      ::operator delete(copy, std::align_val_t{alignof(SegmentHeader)});
    }
  }
  const std::span<const unsigned char> bytes(segment.data(), segment.size());
  auto r = ValidateSegmentHeader(bytes, "fuzz");
  if (!r.ok()) {
    Require(r.status().code() == dsb::Errc::kSegmentInvalid);
    Require(r.status().message().starts_with("segment fuzz"));
    return 0;
  }
  Require(r->slot_count >= 1 && r->slot_count <= kMaxSlots);
  Require(r->waiter_capacity >= 1 && r->waiter_capacity <= 65536);
  Require(SegmentBytes(r->slot_count, r->waiter_capacity) == segment.size());
  Require(r->target.size() < kTargetNameCapacity);
  Require(r->target.find('\0') == std::string::npos);
  // The last slot cell lies inside the bytes (ASan checks the read).
  const std::size_t last_slot = HeaderBytes() + std::size_t{r->waiter_capacity} * sizeof(WaitEntry) +
                                (std::size_t{r->slot_count} - 1) * sizeof(SlotCell);
  volatile unsigned char sink = segment[last_slot + sizeof(SlotCell) - 1];
  (void)sink;
  // Deterministic: the same bytes give the same answer.
  auto again = ValidateSegmentHeader(bytes, "fuzz");
  Require(again.ok() && again->slot_count == r->slot_count && again->instance_id == r->instance_id);
  return 0;
}
