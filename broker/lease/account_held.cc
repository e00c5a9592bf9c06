#include "broker/lease/account_held.h"

#include <algorithm>
#include <cstdint>

namespace dsb::lease {

void RecentOwed::Observe(const Ledger& ledger, TimePoint now) {
  for (std::size_t b = 0; b < last_.size(); ++b) {
    auto& f = falls_[b];
    std::erase_if(f, [&](const auto& e) { return now - e.first > horizon_; });
    const std::uint32_t owed = ledger.Owed(b, target_, now);
    if (owed < last_[b]) f.emplace_back(now, last_[b]);
    last_[b] = owed;
  }
}

std::uint32_t RecentOwed::Peak(std::size_t broker, TimePoint now) const {
  std::uint32_t peak = last_[broker];
  for (const auto& [at, owed] : falls_[broker]) {
    if (now - at <= horizon_) peak = std::max(peak, owed);
  }
  return peak;
}

std::uint32_t HeldAtRefusal(const Ledger& ledger, const RecentOwed& recent,
                            std::size_t reporter, std::uint32_t reporter_count,
                            std::uint64_t others_reserved, TimePoint now) {
  // While learning (C3) owed counts only what was reported since the restart,
  // not the grants of the coordinator before: no upper bound, no evidence.
  if (ledger.Learning(now)) return UINT32_MAX;
  std::uint64_t held = std::uint64_t{reporter_count} + others_reserved;
  for (std::size_t b = 0; b < ledger.config().brokers.size(); ++b) {
    if (b != reporter) held += recent.Peak(b, now);
  }
  return held > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(held);
}

}  // namespace dsb::lease
