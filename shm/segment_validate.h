// Validation of a slot-table segment's header (segment_layout.h), as a pure function of
// the segment's bytes: SlotTable::Attach uses it on the mapped segment, and
// tests/fuzz/segment_validate_fuzz.cc runs it on arbitrary bytes. A segment is shared
// with every client process, so its header is untrusted input.
#ifndef DSB_SHM_SEGMENT_VALIDATE_H_
#define DSB_SHM_SEGMENT_VALIDATE_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "shm/segment_layout.h"

namespace dsb::shm {

// The part of a validated header the rest of the table is built from. Taken from one
// snapshot of the header: another process writing the segment meanwhile cannot make
// these disagree with what was checked.
struct SegmentGeometry {
  std::uint32_t slot_count = 0;       // 1..kMaxSlots
  std::uint32_t waiter_capacity = 0;  // 1..65536
  std::uint64_t instance_id = 0;
  std::string target;                 // < kTargetNameCapacity bytes
};

// FNV-1a over the header's static part (magic .. target), as stored in layout_checksum.
std::uint64_t LayoutChecksum(const SegmentHeader& header);

// Checks the header at the start of `segment` (the whole segment: its size is the
// file's) and returns its geometry. `name` is used in messages only.
// Success: magic and layout version match this build, header_size is
//   sizeof(SegmentHeader), slot_count and waiter_capacity are in range, total_size and
//   SegmentBytes(slot_count, waiter_capacity) both equal segment.size(), the checksum
//   matches and the target name is NUL-terminated. So every waiter entry and slot cell
//   the geometry names lies inside `segment`.
// Failure: Errc::kSegmentInvalid, "segment <name>: <what is wrong>". Never reads outside
//   `segment`, never writes it, never throws (but std::bad_alloc).
Result<SegmentGeometry> ValidateSegmentHeader(std::span<const unsigned char> segment,
                                              std::string_view name);

}  // namespace dsb::shm

#endif  // DSB_SHM_SEGMENT_VALIDATE_H_
