// LogLimiter: decides which repeats of a log line go out, so that a peer who
// can trigger a warning (a malformed request, a wrong cluster key, a refusal
// report) cannot flood the log: at most `burst` lines per key per `interval`,
// then one line saying how many were suppressed.
//
// A key is a call site plus the peer that triggers it ("malformed local
// request" + "uid 1000 pid 4242"). A key's interval starts with its first line
// after a quiet spell. Within it the first `burst` lines go out and the rest
// are counted; the count is reported once, either with the key's next line
// after the interval ended (Admit returns it) or by Flush() once the interval
// has ended, whichever comes first. So a steady flood writes at most
// `burst + 1` lines per key per interval.
//
// Memory is bounded: at most `max_keys` keys. A key that is new while the
// table is full (after dropping keys whose interval ended with nothing to
// report), or while its site already has `site_keys` peers, is counted under
// its site's shared overflow key (peer "(other peers)"), so many peers at
// one site still write at most (site_keys + 1) * (burst + 1) lines per
// interval.
//
// Time is an input: every call takes `now`; the class never reads a clock.
// Thread rule: not thread-safe; the owner serializes calls (see
// common/limited_log.h for the process-wide instance behind a mutex).
#ifndef DSB_COMMON_LOG_LIMIT_H_
#define DSB_COMMON_LOG_LIMIT_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsb {

class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    std::uint32_t burst = 5;                            // >= 1
    Clock::duration interval = std::chrono::seconds(10);  // > 0
    std::size_t max_keys = 256;                         // >= 1
    // Peers with a key of their own per site (>= 1); further peers of the
    // site share its overflow key, so a flood from many peers (rotating
    // source addresses) writes at most (site_keys + 1) * (burst + 1) lines
    // per site per interval.
    std::size_t site_keys = 8;
  };

  // What to do with one line.
  struct Admission {
    bool emit = false;
    // Lines of this key suppressed before this one and not yet reported: the
    // caller appends the count to the line it emits (0 when !emit).
    std::uint64_t suppressed = 0;
    // From the first of those suppressed lines to now.
    Clock::duration over{};
  };

  // One key's suppressed lines whose interval ended without a line to carry
  // the count.
  struct Summary {
    std::string site;
    std::string peer;
    std::uint64_t suppressed = 0;
    Clock::duration over{};  // from the first suppressed line to the flush
  };

  // REQUIRES: burst >= 1, interval > 0, max_keys >= 1 (smaller values are
  // raised to those).
  explicit LogLimiter(Options options);
  LogLimiter() : LogLimiter(Options{}) {}

  // One line of (`site`, `peer`) at `now`: emit it or count it.
  Admission Admit(std::string_view site, std::string_view peer, Clock::time_point now);

  // The counts of keys whose interval ended by `now` with suppressed lines
  // not yet reported (each is reported once); keys with nothing left to
  // report are dropped. `all`: report every pending count, interval over or
  // not (at shutdown).
  std::vector<Summary> Flush(Clock::time_point now, bool all = false);

  // When Flush will next have something to report (nullopt: nothing pending).
  std::optional<Clock::time_point> NextFlush() const;

  std::size_t keys() const { return keys_.size(); }
  // Every line suppressed so far (reported or not).
  std::uint64_t suppressed_total() const { return suppressed_total_; }
  const Options& options() const { return options_; }

  // The peer name of a site's overflow key.
  static constexpr std::string_view kOtherPeers = "(other peers)";

 private:
  struct Entry {
    Clock::time_point window_start;
    std::uint32_t emitted = 0;     // lines emitted in the current window
    std::uint64_t pending = 0;     // suppressed, not yet reported
    Clock::time_point first_pending;
  };
  using Key = std::pair<std::string, std::string>;

  // Drops keys whose window ended with nothing pending.
  void DropIdle(Clock::time_point now);
  // Keys of `site` other than its overflow key.
  std::size_t PeersAt(const std::string& site) const;

  Options options_;
  std::map<Key, Entry> keys_;
  std::uint64_t suppressed_total_ = 0;
};

}  // namespace dsb

#endif  // DSB_COMMON_LOG_LIMIT_H_
