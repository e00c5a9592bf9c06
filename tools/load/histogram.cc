#include "tools/load/histogram.h"

#include <algorithm>
#include <bit>
#include <boost/json.hpp>
#include <cmath>

namespace dsb::load {

Histogram::Histogram() : counts_(kBuckets, 0) {}

std::size_t Histogram::BucketOf(std::uint64_t us) {
  if (us < kSub) return static_cast<std::size_t>(us);
  const int e = static_cast<int>(std::bit_width(us)) - 1;  // 4..63
  const std::uint64_t sub = (us >> (e - 4)) & (kSub - 1);
  return kSub + static_cast<std::size_t>(e - 4) * kSub + static_cast<std::size_t>(sub);
}

std::uint64_t Histogram::LowerBound(std::size_t index) {
  if (index < kSub) return index;
  const std::size_t e = (index - kSub) / kSub + 4;
  const std::uint64_t sub = (index - kSub) % kSub;
  return (std::uint64_t{1} << e) | (sub << (e - 4));
}

void Histogram::Add(std::chrono::microseconds value) {
  const std::uint64_t us = value.count() < 0 ? 0 : static_cast<std::uint64_t>(value.count());
  ++counts_[BucketOf(us)];
  ++count_;
  max_ = std::max(max_, us);
}

void Histogram::Merge(const Histogram& other) {
  for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

std::chrono::microseconds Histogram::Percentile(double q) const {
  if (count_ == 0) return std::chrono::microseconds(0);
  q = std::clamp(q, 0.0, 1.0);
  // The rank of the wanted sample, 1-based: ceil(q * n), at least 1.
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      // Report the bucket's lower bound, but never more than the true maximum.
      return std::chrono::microseconds(static_cast<std::int64_t>(std::min(LowerBound(i), max_)));
    }
  }
  return std::chrono::microseconds(static_cast<std::int64_t>(max_));
}

boost::json::value Histogram::ToJson() const {
  boost::json::array buckets;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    if (counts_[i] != 0) buckets.push_back(boost::json::array{i, counts_[i]});
  }
  return boost::json::object{{"count", count_}, {"max_us", max_}, {"buckets", std::move(buckets)}};
}

bool Histogram::FromJson(const boost::json::value& v) {
  const auto* o = v.if_object();
  if (o == nullptr) return false;
  const auto* count = o->if_contains("count");
  const auto* max = o->if_contains("max_us");
  const auto* buckets = o->if_contains("buckets");
  if (count == nullptr || max == nullptr || buckets == nullptr || !buckets->is_array()) {
    return false;
  }
  Histogram h;
  boost::system::error_code ec;
  h.count_ = count->to_number<std::uint64_t>(ec);
  if (ec) return false;
  h.max_ = max->to_number<std::uint64_t>(ec);
  if (ec) return false;
  std::uint64_t total = 0;
  for (const auto& b : buckets->get_array()) {
    const auto* pair = b.if_array();
    if (pair == nullptr || pair->size() != 2) return false;
    const auto index = (*pair)[0].to_number<std::uint64_t>(ec);
    if (ec || index >= kBuckets) return false;
    const auto n = (*pair)[1].to_number<std::uint64_t>(ec);
    if (ec) return false;
    h.counts_[index] += n;
    total += n;
  }
  if (total != h.count_) return false;
  *this = std::move(h);
  return true;
}

}  // namespace dsb::load
