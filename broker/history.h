// History: the last minutes of each target's numbers, for the status page
// (docs/status-page.md): per target limit, capacity, held and waiting, and in
// cluster mode per broker owed, granted and held (the coordinator's ledger).
//
// A bounded ring of frames, one per Record(); the oldest frame falls out when
// the ring is full (capacity frames: 600 at the sampler's 1 s = 10 minutes).
// Time is an input: Record and Json take `now` (steady_clock), so tests drive
// it with made-up instants. Json gives each point's age ("ms ago"), never a
// wall time: the page draws "the last minutes" without trusting any clock.
//
// The frames are read out of the very replies `dsbctl status --json` and
// `dsbctl leases --json` print (SampleFrom), so the page and dsbctl cannot
// disagree about what a number means.
//
// Thread rule: not thread-safe; the broker uses it on its io_context thread.
#ifndef DSB_BROKER_HISTORY_H_
#define DSB_BROKER_HISTORY_H_

#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace dsb::broker {

class History {
 public:
  using Clock = std::chrono::steady_clock;

  // One broker's share of a target (cluster mode, from the ledger).
  struct BrokerPoint {
    std::string broker;
    std::uint32_t owed = 0;
    std::uint32_t granted = 0;
    std::uint32_t held = 0;
  };
  // One target at one instant. A missing number (status without it) is
  // nullopt and shows as a gap (JSON null), never as 0.
  struct TargetPoint {
    std::string target;
    std::optional<std::uint32_t> limit;
    std::optional<std::uint32_t> capacity;
    std::optional<std::uint32_t> held;
    std::optional<std::uint32_t> waiting;
    std::vector<BrokerPoint> brokers;
  };

  // REQUIRES: capacity >= 1.
  explicit History(std::size_t capacity = 600);

  // Appends one frame taken at `now`. A `now` earlier than the newest frame's
  // (not possible with steady_clock; a test's mistake) is taken as equal, so
  // ages never go negative.
  void Record(Clock::time_point now, std::vector<TargetPoint> targets);

  std::size_t size() const { return frames_.size(); }
  std::size_t capacity() const { return capacity_; }

  // The ring as columns, oldest first:
  //   {"capacity": N, "frames": n,
  //    "age_ms": [..],                       // now - frame time, per frame
  //    "targets": [{"target", "limit": [..], "capacity": [..], "held": [..],
  //                 "waiting": [..],
  //                 "brokers": [{"broker", "owed": [..], "granted": [..],
  //                              "held": [..]}]}]}
  // Every column has one entry per frame (null where that frame lacks the
  // target, broker or number). Targets and brokers are listed in order of
  // first appearance.
  boost::json::object Json(Clock::time_point now) const;

  // The frame's targets read from a status reply (Broker::Impl::StatusAsync,
  // `dsbctl status --json`: {"targets": [{"name", "limit", "capacity",
  // "held", "waiting", ...}]}) and, in cluster mode, a leases reply
  // (`dsbctl leases --json`: {"ledger": {"targets": [{"target", "brokers":
  // [{"broker", "owed", "granted", "held"}]}]}}; nullptr or a reply without a
  // ledger: no broker points). Fields that are missing or not unsigned
  // integers become nullopt; a target without a string name is skipped.
  static std::vector<TargetPoint> SampleFrom(const boost::json::object& status,
                                             const boost::json::object* leases);

 private:
  struct Frame {
    Clock::time_point at;
    std::vector<TargetPoint> targets;
  };
  std::size_t capacity_;
  std::deque<Frame> frames_;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_HISTORY_H_
