// SessionTable: the per-user session accounting of dsb-simserver (the Exchange stand-in).
//
// It counts the sessions each user holds, refuses an open past the user's cap (like Exchange's
// "Maximum Allowed Sessions Per User"), and keeps the statistics the tests read: peak and
// time-weighted mean concurrency, opens and refusals. Time is an input (`now`), so tests drive
// it with made-up instants; only the server's event loop reads the clock.
//
// Thread rule: not thread-safe; the server calls it from its single event-loop thread.
//
// Invariants:
//   1. For every user, current == number of live session ids that belong to it.
//   2. An Open that succeeds leaves current <= limit (the table refuses otherwise), so
//      over_limit_events stays 0; it is counted anyway as a self-check.
//   3. peak >= current, and peak is the largest current seen in the window.
#ifndef DSB_TOOLS_SIMSERVER_SESSION_TABLE_H_
#define DSB_TOOLS_SIMSERVER_SESSION_TABLE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>

namespace dsb::sim {

using Clock = std::chrono::steady_clock;

// What one user looks like in STATS.
struct UserStats {
  std::uint64_t peak = 0;     // most concurrent sessions in the window
  double mean = 0;            // time-weighted mean concurrent sessions over the window
  std::uint64_t opened = 0;   // successful OPENs in the window
  std::uint64_t refused = 0;  // OPENs refused with MAPI_E_SESSION_LIMIT in the window
  std::uint64_t current = 0;  // sessions held now (lingering ones included)
  std::uint64_t limit = 0;    // the user's cap now
  // Self-check (never reset): how often an open left current above the limit, and by how much
  // at most. Both must stay 0.
  std::uint64_t over_limit_events = 0;
  std::uint64_t peak_over_limit = 0;
  double window_s = 0;  // length of the measurement window so far
};

class SessionTable {
 public:
  static constexpr std::size_t kMaxUsers = 4096;
  static constexpr std::uint32_t kMaxLimit = 1'000'000;

  enum class OpenOutcome { kOk, kSessionLimit, kTooManyUsers };
  struct OpenResult {
    OpenOutcome outcome = OpenOutcome::kOk;
    std::uint64_t session_id = 0;  // set when outcome == kOk
    std::uint32_t limit = 0;       // the user's cap at the time of the call
  };

  // `default_limit` applies to every user without an override. REQUIRES: <= kMaxLimit.
  explicit SessionTable(std::uint32_t default_limit);

  // Sets `user`'s cap from now on (sessions already open stay open). Returns false (and changes
  // nothing) when the table already knows kMaxUsers other users. REQUIRES: limit <= kMaxLimit.
  bool SetLimit(std::string_view user, std::uint32_t limit, Clock::time_point now);

  // Opens a session for `user`. kSessionLimit when the user already holds `limit` sessions (the
  // refusal is counted); kTooManyUsers when `user` is new and the table is full.
  OpenResult Open(std::string_view user, Clock::time_point now);

  // Closes session `id`. Returns false if no such session is open.
  bool Close(std::uint64_t id, Clock::time_point now);

  // Starts a fresh measurement window at `now`: peak = current, mean/opened/refused restart.
  void ResetWindow(Clock::time_point now);

  // Statistics of every known user as of `now`.
  std::map<std::string, UserStats, std::less<>> Snapshot(Clock::time_point now) const;

  // Snapshot as one line of JSON: {"users": {"<user>": {"peak": .., "mean": .., ...}}}.
  std::string StatsJson(Clock::time_point now) const;

  std::size_t open_sessions() const { return sessions_.size(); }

 private:
  struct User {
    std::uint32_t limit = 0;
    std::uint64_t current = 0;
    std::uint64_t peak = 0;
    std::uint64_t opened = 0;
    std::uint64_t refused = 0;
    std::uint64_t over_limit_events = 0;
    std::uint64_t peak_over_limit = 0;
    bool window_started = false;  // the window opens at the first OPEN (or at a reset)
    Clock::time_point window_start{};
    Clock::time_point last_change{};
    double area = 0;  // integral of current over the window up to last_change, in session-seconds
  };

  // Finds or creates `user`; null when the table is full.
  User* FindOrAdd(std::string_view user);
  // Adds current*(now-last_change) to the area and moves last_change to now.
  static void Advance(User& u, Clock::time_point now);
  static UserStats StatsOf(const User& u, Clock::time_point now);

  std::uint32_t default_limit_;
  std::map<std::string, User, std::less<>> users_;     // node addresses are stable
  std::unordered_map<std::uint64_t, User*> sessions_;  // live session id -> its user
  std::uint64_t next_id_ = 1;
};

}  // namespace dsb::sim

#endif  // DSB_TOOLS_SIMSERVER_SESSION_TABLE_H_
