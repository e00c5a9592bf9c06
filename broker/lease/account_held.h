// The coordinator's bound on what dsb held for an account at a refusal
// (DESIGN section 8, limit discovery), shared by the real coordinator
// (broker/cluster.cc) and the deterministic simulation (tests/sim).
//
// Thread rule: not thread-safe; the coordinator's strand.
#ifndef DSB_BROKER_LEASE_ACCOUNT_HELD_H_
#define DSB_BROKER_LEASE_ACCOUNT_HELD_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

#include "broker/lease/ledger.h"

namespace dsb::lease {

// Each broker's owed over the recent past, kept by the coordinator beside its
// ledger (one target): owed falls when a report arrives (C1) or by silence
// (C2), but a refusal report that was in flight meanwhile describes the moment
// before the fall. Call Observe() before and after every ledger call that may
// change owed (OnRequest, SetLimit) and right before every estimate: a fall by
// silence is then seen at the next call, later than it happened, which only
// keeps the old value longer. Peak() is the most a broker was owed within
// `horizon` before the last Observe(). The horizon is the longest a refusal
// report may take to arrive (an assumption: a later report may underestimate).
// The horizon the coordinator gives RecentOwed: the longest a refusal report
// is assumed to take to arrive, min(D/4, 250 ms). Longer slows convergence
// (after a lowering the other brokers count at their old owed that long);
// a report later than this may set the limit too low, never break S.
inline Duration RefusalReportHorizon(Duration term) {
  return std::min<Duration>(term / 4, std::chrono::milliseconds(250));
}

class RecentOwed {
 public:
  RecentOwed(std::size_t brokers, std::size_t target, Duration horizon)
      : target_(target), horizon_(horizon), last_(brokers, 0), falls_(brokers) {}
  void Observe(const Ledger& ledger, TimePoint now);
  std::uint32_t Peak(std::size_t broker, TimePoint now) const;

 private:
  std::size_t target_;
  Duration horizon_;
  std::vector<std::uint32_t> last_;  // owed at the last Observe()
  std::vector<std::vector<std::pair<TimePoint, std::uint32_t>>> falls_;
};

// The coordinator's estimate of what dsb held on the account when broker
// `reporter` was refused (DESIGN section 8, F1): the reporter's exact count at
// the refusal (its registered system slots + action slots held, the refused
// attempt not counted) plus, for every other broker, system_slots + floor
// (`others_reserved`, summed) and the most it was owed within the report
// horizon (RecentOwed::Peak: C1 owed bounds the pool slots a broker can hold,
// "Why S holds"; the peak covers reports that were in flight while owed fell).
// An upper bound of what dsb held, so a refusal at this level says cap <= held
// unless another tool held a session. Saturates at UINT32_MAX. UINT32_MAX
// (never evidence: LimitPolicy counts the refusal and drops it) while the
// ledger is learning (C3): owed then misses the previous coordinator's grants.
// REQUIRES: recent.Observe(ledger, now) just before.
std::uint32_t HeldAtRefusal(const Ledger& ledger, const RecentOwed& recent,
                            std::size_t reporter, std::uint32_t reporter_count,
                            std::uint64_t others_reserved, TimePoint now);

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_ACCOUNT_HELD_H_
