// Histogram: a log-linear histogram of durations for dsb-load (acquire waits).
//
// Values below 16 us are exact; above, each power of two is split into 16 buckets, so a
// percentile is within 1/16 (6.25%) of the true value. Histograms from several processes merge
// by adding counts, which is how dsb-load's parent aggregates its instances.
//
// Thread rule: not thread-safe; each action thread fills its own and the owner merges them.
#ifndef DSB_TOOLS_LOAD_HISTOGRAM_H_
#define DSB_TOOLS_LOAD_HISTOGRAM_H_

#include <boost/json/fwd.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dsb::load {

class Histogram {
 public:
  Histogram();

  void Add(std::chrono::microseconds value);
  void Merge(const Histogram& other);

  std::uint64_t count() const { return count_; }
  std::chrono::microseconds max() const { return std::chrono::microseconds(max_); }
  // The value at quantile q in [0, 1] (within one bucket); 0 when empty.
  std::chrono::microseconds Percentile(double q) const;

  // {"count": n, "max_us": m, "buckets": [[index, count], ...]} (only non-empty buckets).
  boost::json::value ToJson() const;
  // The inverse of ToJson. Returns false (leaving *this unchanged) when `v` is malformed.
  bool FromJson(const boost::json::value& v);

  static std::size_t BucketOf(std::uint64_t us);
  // The smallest value that falls in bucket `index`.
  static std::uint64_t LowerBound(std::size_t index);

 private:
  static constexpr std::size_t kSub = 16;
  static constexpr std::size_t kBuckets = kSub + (64 - 4) * kSub;

  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace dsb::load

#endif  // DSB_TOOLS_LOAD_HISTOGRAM_H_
