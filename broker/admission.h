// Admission of connections that have not proven themselves yet: on the local
// socket a connection that has not registered (dsbctl, a client about to
// register, any local peer), on the cluster port one that has not finished the
// handshake. Registered clients and authenticated brokers are not counted
// here: they are never refused or evicted by this policy.
//
// The policy bounds such connections in total and per source (a uid on the
// local socket, an IP address on the cluster port). When a bound is reached,
// the new connection is not simply refused: the source holding the most
// waiting connections gives way, its longest-idle one is evicted (told
// "broker full" and closed). So a flood of idle connections cannot lock out
// an honest peer from another source (it always holds fewer), and a peer's
// own earlier idle connections give way to its newest one. A new connection
// is refused only when its own source already holds as many as the busiest
// one (below its per-source bound): then nobody is above its fair share.
//
// Pure bookkeeping: no clock read (callers pass `now`), no I/O; the caller
// closes what Admit() names. Thread rule: none (a value type; the broker uses
// it on its io_context).
//
// Invariants:
//   1. size() <= limits.total after every Admit() that admitted.
//   2. CountOf(k) <= limits.per_source for every source k after Admit().
//   3. Every id is waiting at most once; Leave() of an unknown id is a no-op.
#ifndef DSB_BROKER_ADMISSION_H_
#define DSB_BROKER_ADMISSION_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>

namespace dsb::broker {

template <typename Source>
class Admission {
 public:
  using Clock = std::chrono::steady_clock;
  using Id = std::uint64_t;

  struct Limits {
    std::size_t total = 64;       // waiting connections in all (>= 1)
    std::size_t per_source = 16;  // waiting connections of one source (>= 1)
  };

  struct Decision {
    bool admit = false;
    // Admitted after evicting this waiting connection (already forgotten
    // here: the caller closes it with a "broker full" reply).
    std::optional<Id> evict;
  };

  explicit Admission(Limits limits) : limits_(limits) {}

  // A new connection `id` from `source` at `now`.
  // admit: it is now waiting (counted); evict: the caller must close that one.
  // !admit: `source` already holds as many as the busiest source; the caller refuses `id`
  // ("broker full") and closes it.
  // REQUIRES: `id` not waiting already.
  Decision Admit(const Source& source, Id id, Clock::time_point now) {
    Decision d;
    if (CountOf(source) >= limits_.per_source) {
      d.evict = Oldest(source);  // its own idle connections give way
    } else if (waiting_.size() >= limits_.total) {
      const std::optional<Source> heavy = Heaviest();
      if (!heavy || CountOf(*heavy) <= CountOf(source)) return d;  // refused
      d.evict = Oldest(*heavy);
    }
    if (d.evict) Leave(*d.evict);
    waiting_[id] = Entry{source, now};
    ++per_source_[source];
    d.admit = true;
    return d;
  }

  // `id` completed a request at `now`: it is the last to be evicted of its source.
  void Touch(Id id, Clock::time_point now) {
    auto it = waiting_.find(id);
    if (it != waiting_.end()) it->second.last = now;
  }

  // `id` proved itself (registered, authenticated) or closed: no longer counted.
  void Leave(Id id) {
    auto it = waiting_.find(id);
    if (it == waiting_.end()) return;
    auto s = per_source_.find(it->second.source);
    if (s != per_source_.end() && --s->second == 0) per_source_.erase(s);
    waiting_.erase(it);
  }

  bool Waiting(Id id) const { return waiting_.count(id) > 0; }
  std::size_t size() const { return waiting_.size(); }
  std::size_t CountOf(const Source& source) const {
    auto it = per_source_.find(source);
    return it == per_source_.end() ? 0 : it->second;
  }
  const Limits& limits() const { return limits_; }

 private:
  struct Entry {
    Source source;
    Clock::time_point last;  // connected, or last request completed
  };

  // The source with the most waiting connections (ties: any).
  std::optional<Source> Heaviest() const {
    std::optional<Source> best;
    std::size_t most = 0;
    for (const auto& [source, n] : per_source_) {
      if (n > most) {
        best = source;
        most = n;
      }
    }
    return best;
  }

  // The longest-idle waiting connection of `source` (ties: the lowest id, the oldest).
  std::optional<Id> Oldest(const Source& source) const {
    std::optional<Id> best;
    Clock::time_point at = Clock::time_point::max();
    for (const auto& [id, e] : waiting_) {
      if (e.source == source && e.last < at) {
        best = id;
        at = e.last;
      }
    }
    return best;
  }

  Limits limits_;
  std::map<Id, Entry> waiting_;
  std::map<Source, std::size_t> per_source_;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_ADMISSION_H_
