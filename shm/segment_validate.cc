#include "shm/segment_validate.h"

#include <cstddef>
#include <cstdio>
#include <cstring>

namespace dsb::shm {
namespace {

// The header's static part, copied out of the segment field by field.
struct StaticPart {
  std::uint64_t magic = 0;
  std::uint32_t layout_version = 0;
  std::uint32_t header_size = 0;
  std::uint64_t total_size = 0;
  std::uint32_t slot_count = 0;
  std::uint32_t waiter_capacity = 0;
  std::uint64_t instance_id = 0;
  char target[kTargetNameCapacity] = {};
  std::uint64_t layout_checksum = 0;
};

// REQUIRES: `p` points at HeaderBytes() readable bytes.
StaticPart ReadStatic(const unsigned char* p) {
  StaticPart s;
  std::memcpy(&s.magic, p + offsetof(SegmentHeader, magic), sizeof s.magic);
  std::memcpy(&s.layout_version, p + offsetof(SegmentHeader, layout_version),
              sizeof s.layout_version);
  std::memcpy(&s.header_size, p + offsetof(SegmentHeader, header_size), sizeof s.header_size);
  std::memcpy(&s.total_size, p + offsetof(SegmentHeader, total_size), sizeof s.total_size);
  std::memcpy(&s.slot_count, p + offsetof(SegmentHeader, slot_count), sizeof s.slot_count);
  std::memcpy(&s.waiter_capacity, p + offsetof(SegmentHeader, waiter_capacity),
              sizeof s.waiter_capacity);
  std::memcpy(&s.instance_id, p + offsetof(SegmentHeader, instance_id), sizeof s.instance_id);
  std::memcpy(s.target, p + offsetof(SegmentHeader, target), sizeof s.target);
  std::memcpy(&s.layout_checksum, p + offsetof(SegmentHeader, layout_checksum),
              sizeof s.layout_checksum);
  return s;
}

std::uint64_t Fnv1a(std::uint64_t h, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::uint64_t Checksum(const StaticPart& h) {
  std::uint64_t c = 0xcbf29ce484222325ULL;
  c = Fnv1a(c, &h.magic, sizeof h.magic);
  c = Fnv1a(c, &h.layout_version, sizeof h.layout_version);
  c = Fnv1a(c, &h.header_size, sizeof h.header_size);
  c = Fnv1a(c, &h.total_size, sizeof h.total_size);
  c = Fnv1a(c, &h.slot_count, sizeof h.slot_count);
  c = Fnv1a(c, &h.waiter_capacity, sizeof h.waiter_capacity);
  c = Fnv1a(c, &h.instance_id, sizeof h.instance_id);
  c = Fnv1a(c, h.target, sizeof h.target);
  return c;
}

std::string Hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::uint64_t LayoutChecksum(const SegmentHeader& header) {
  return Checksum(ReadStatic(reinterpret_cast<const unsigned char*>(&header)));
}

Result<SegmentGeometry> ValidateSegmentHeader(std::span<const unsigned char> segment,
                                              std::string_view name_view) {
  const std::string name(name_view);
  const std::size_t size = segment.size();
  if (size < HeaderBytes()) {
    return Status{Errc::kSegmentInvalid, "segment " + name + " is " + std::to_string(size) +
                                             " bytes, smaller than a dsb slot-table header (" +
                                             std::to_string(HeaderBytes()) +
                                             "): not a dsb segment"};
  }
  const StaticPart h = ReadStatic(segment.data());
  if (h.magic != kMagic) {
    return Status{Errc::kSegmentInvalid, "segment " + name + ": wrong magic " + Hex(h.magic) +
                                             " (expected " + Hex(kMagic) +
                                             "): not a dsb slot table, or corrupt"};
  }
  if (h.layout_version != kLayoutVersion) {
    return Status{Errc::kSegmentInvalid,
                  "segment " + name + ": layout version " + std::to_string(h.layout_version) +
                      ", this build reads version " + std::to_string(kLayoutVersion) +
                      "; stop every client and the broker, then remove /dev/shm/" + name};
  }
  if (h.header_size != sizeof(SegmentHeader) || h.slot_count == 0 || h.slot_count > kMaxSlots ||
      h.waiter_capacity == 0 || h.waiter_capacity > 65536 || h.total_size != size ||
      SegmentBytes(h.slot_count, h.waiter_capacity) != size) {
    return Status{Errc::kSegmentInvalid,
                  "segment " + name + ": size fields disagree (file " + std::to_string(size) +
                      " bytes, header says " + std::to_string(h.total_size) + ", slots " +
                      std::to_string(h.slot_count) + ", waiters " +
                      std::to_string(h.waiter_capacity) + ")"};
  }
  if (const std::uint64_t computed = Checksum(h); h.layout_checksum != computed) {
    return Status{Errc::kSegmentInvalid, "segment " + name + ": header checksum mismatch (" +
                                             Hex(h.layout_checksum) + " stored, " +
                                             Hex(computed) + " computed): corrupt"};
  }
  const std::size_t target_len = strnlen(h.target, kTargetNameCapacity);
  if (target_len == kTargetNameCapacity) {
    return Status{Errc::kSegmentInvalid, "segment " + name + ": target name not terminated"};
  }
  return SegmentGeometry{h.slot_count, h.waiter_capacity, h.instance_id,
                         std::string(h.target, target_len)};
}

}  // namespace dsb::shm
