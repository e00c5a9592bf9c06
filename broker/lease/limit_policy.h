// LimitPolicy: one target's effective limit L and where it came from
// (DESIGN section 8, "The discovered limit").
//
// Sources, in order of trust: an operator's value (`dsbctl set-limit`, `dsbctl
// probe --apply`), a query of the server (`limit_command`), discovery by
// feedback (session-limit refusals reported by clients), the configured
// `limit`. The configured limit is the ceiling of every source; `minimum` is
// the floor of every source.
//
// Rules to code:
//   Q1 (base)      An operator's value or a query answer sets the *base*: the
//                  value the limit returns to. A query answer equal to the last
//                  query answer changes nothing (a discovered lower limit
//                  stays); a different one replaces the limit (source kQuery).
//                  An operator's value always replaces it (source kOperator), and
//                  later query answers are only remembered while it stands.
//                  Both clear the refusal history.
//   F1 (evidence)  A refusal reported while dsb held `held` sessions of the
//                  account (the refused attempt not counted) says the server's
//                  cap is at most `held`, or that another tool briefly used the
//                  account. Only reports with held < limit() are evidence; the
//                  rest are counted and dropped.
//   F2 (repeat)    The limit is lowered to x only when at least
//                  `confirmations` reports within `window` say cap <= x; x is
//                  the confirmations-th smallest `held` among them (the tightest
//                  level that many reports agree on). One isolated refusal, or
//                  refusals spaced wider than `window`, never lower the limit.
//                  Each lowering takes at least one level off, so from a
//                  configured limit L0 above a real cap C the limit reaches C
//                  after at most confirmations * (L0 - C) refusals.
//   F2a (probation) A lowering whose two deciding reports came within
//                  `event_gap` of each other (one burst: a real cap, or another
//                  tool briefly using the account) is provisional. After
//                  `probation` without a refusal the limit rises by one, again
//                  every probation, back to where the burst found it. A
//                  lowering while such a probe is in force is confirmed: the
//                  cap is real there, and probing stops. So a transient burst
//                  costs capacity for a while, not for good, and a real cap
//                  costs one probe (a refusal or two, once).
//   F3 (bounds)    Never below `minimum` (sum(system_slots + floor) + 1 + reserve
//                  in a cluster), never above the base.
//   F4 (increase)  With increase_after > 0: after that long with no refusal and
//                  no change, a limit below the base rises by one (source stays
//                  kDiscovered until it reaches the base, which restores the
//                  base's source); again every increase_after. Off by default.
//   Test switch    `ratchet` (tests only): every refusal with held < limit()
//                  lowers the limit by one at once. The simulation has a named
//                  scenario that must fail with it.
//
// Lowering the limit is the caller's to apply under C2: grants shrink at once;
// capacity counts as free only as owed falls.
//
// Time: every call takes `now`; the policy never reads a clock.
// Thread rule: not thread-safe; the owner calls it from one strand.
#ifndef DSB_BROKER_LEASE_LIMIT_POLICY_H_
#define DSB_BROKER_LEASE_LIMIT_POLICY_H_

#include <chrono>
#include <array>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include "broker/lease/messages.h"
#include "common/status.h"

namespace dsb::lease {

enum class LimitSource { kConfig, kDiscovered, kOperator, kQuery };
// "config", "discovered", "operator", "query".
const char* LimitSourceName(LimitSource source);

struct LimitPolicyConfig {
  std::uint32_t ceiling = 0;  // the configured limit; >= minimum
  std::uint32_t minimum = 1;  // >= 1
  bool discover = true;       // false: refusals are counted, never lower the limit
  Duration window = std::chrono::seconds(10);
  std::uint32_t confirmations = 2;  // >= 1
  Duration increase_after{0};       // 0 = no increase (F4 off)
  // F2a: reports this close decide as one burst; a burst's lowering is
  // provisional for `probation` (0 = every lowering is final).
  Duration event_gap = std::chrono::milliseconds(300);
  Duration probation = std::chrono::seconds(60);
  bool ratchet = false;             // TEST ONLY (see above)
};

// One change of the limit, for the caller to log once and apply.
struct LimitChange {
  std::uint32_t from = 0;
  std::uint32_t to = 0;
  LimitSource source = LimitSource::kConfig;
  std::string cause;  // a sentence: "2 refusals at <= 12 sessions within 60 s"
};

class LimitPolicy {
 public:
  // Checks a config. Failure: kConfig naming the bad value.
  static Status Validate(const LimitPolicyConfig& config);
  // Starts at the ceiling, source kConfig. REQUIRES: Validate(config).ok().
  LimitPolicy(LimitPolicyConfig config, TimePoint now);

  std::uint32_t limit() const { return limit_; }
  LimitSource source() const { return source_; }
  TimePoint changed_at() const { return changed_at_; }
  std::uint32_t base() const { return base_; }
  std::uint64_t refusals_reported() const { return refusals_; }
  std::uint64_t changes() const { return changes_; }
  // Changes made by `source` (the new limit's source), for the metric
  // dsb_limit_changes_total{source}; they sum to changes().
  std::uint64_t changes(LimitSource source) const {
    return changes_by_source_[static_cast<std::size_t>(source)];
  }
  const LimitPolicyConfig& config() const { return config_; }

  // A refusal reported at `now` while dsb held `held` sessions (F1, F2).
  // Returns the change if the limit was lowered.
  std::optional<LimitChange> OnRefusal(TimePoint now, std::uint32_t held);
  // A query answer (Q1); clamped to [minimum, ceiling] (the cause says so).
  std::optional<LimitChange> OnQuery(TimePoint now, std::uint32_t value);
  // An operator's value (Q1). Failure: kInvalidArgument if outside
  // [minimum, ceiling], naming both bounds; nothing changes.
  Result<std::optional<LimitChange>> OnOperator(TimePoint now, std::uint32_t value);
  // Restores what an earlier life decided (a broker restart): the limit, its
  // source, and the base with its source. Values are clamped to
  // [minimum, ceiling]; nothing is counted as a change. A restored base from
  // the config that differs from today's ceiling means the file was edited:
  // then only a limit below the new ceiling is kept, as discovered.
  void Restore(TimePoint now, std::uint32_t limit, LimitSource source, std::uint32_t base,
               LimitSource base_source);
  LimitSource base_source() const { return base_source_; }
  // F4: call at NextTick() (or any time). Returns the change if it rose.
  std::optional<LimitChange> Tick(TimePoint now);
  // When Tick() may next change something; TimePoint::max() if never.
  TimePoint NextTick() const;

 private:
  std::optional<LimitChange> Set(TimePoint now, std::uint32_t to, LimitSource source,
                                 std::string cause);

  LimitPolicyConfig config_;
  std::uint32_t limit_;
  std::uint32_t base_;
  LimitSource source_ = LimitSource::kConfig;
  LimitSource base_source_ = LimitSource::kConfig;
  std::optional<std::uint32_t> last_query_;
  TimePoint changed_at_;
  TimePoint last_refusal_;
  bool any_refusal_ = false;
  // F2a: while provisional, the level the burst found (probes rise to it).
  std::uint32_t provisional_from_ = 0;  // 0 = nothing provisional
  bool probing_ = false;               // the limit was raised by a probe
  std::deque<std::pair<TimePoint, std::uint32_t>> reports_;  // evidence within window
  std::uint64_t refusals_ = 0;
  std::uint64_t changes_ = 0;
  std::array<std::uint64_t, 4> changes_by_source_{};  // by LimitSource
};

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_LIMIT_POLICY_H_
