// dsbctl watch: a live terminal view of one broker (issue 11, item 2).
//
// Every interval it asks the broker for `status` (and, in cluster mode,
// `leases`) through the admin client and redraws one frame in place: per
// target the limit and its source, capacity, held, waiting, quarantined and
// cooling slots; in cluster mode per broker of the coordinator's ledger owed,
// granted, held, demand (waiting, wanted), mode and the lease countdown.
// Numbers that changed within the last second are highlighted.
//
// The parts, so that what can be tested without a terminal is:
//   - ModelFromReplies: the broker's replies -> a Model (pure);
//   - ChangeTracker: which numbers changed when (time is an argument);
//   - Render: Model + highlighted keys + size + style -> the frame's lines
//     (pure; every line at most `width` columns, "... N more" when the rows
//     do not fit);
//   - Run: the loop with the terminal, keys, signals and the clock.
//
// Output modes (Run):
//   - stdout a terminal, TERM not "dumb": the alternate screen, redraw in
//     place, cursor hidden; changes in reverse video (colour unless NO_COLOR
//     is set and not empty: https://no-color.org). `q` or Ctrl-C quits;
//     SIGTERM, SIGHUP and a failed write (the terminal is gone) quit too; the
//     terminal is always restored (termios, cursor, main screen). Ctrl-Z hands
//     the terminal back as it was until `fg`.
//   - TERM=dumb, or stdout not a terminal (a pipe, a file, a log): no escape
//     sequence at all; one frame per interval, one after another, separated by
//     a blank line, a changed number marked with '*'. (Chosen over refusing: a
//     pipe into a file or `grep` is a useful log of the broker's numbers.)
//   - --once: one frame, then exit (0 if the broker answered, 1 if not).
// The broker gone (not running, socket missing, a timeout) does not end the
// view: the header says DISCONNECTED with the reason, the last numbers stay
// on screen, and every interval it tries again.
//
// Thread rule: none (single-threaded; Run installs signal handlers for its
// own duration and restores the previous ones).
#ifndef DSB_TOOLS_DSBCTL_WATCH_H_
#define DSB_TOOLS_DSBCTL_WATCH_H_

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace dsb::ctl::watch {

// A number from a reply, or nullopt where the reply has none (shown "-").
using Num = std::optional<std::int64_t>;

// One target of `status`.
struct TargetView {
  std::string name;          // escaped (common/escape.h): names come from config files
  Num limit;
  std::string limit_source;  // "config", "operator", ...; "" if the broker says none
  Num capacity, held, waiting, quarantined, cooling;
};

// One broker's line of one target in the coordinator's ledger (`leases`).
struct LeaseView {
  std::string broker, mode;  // escaped
  Num owed, granted, held, waiting, wanted;
  Num lease_left_ms;         // nullopt: no lease running
};

// One target of the coordinator's ledger: its pool and a line per broker.
struct LedgerTarget {
  std::string name;  // escaped
  Num limit, pool, owed_total, free;
  std::vector<LeaseView> brokers;
};

// What one frame shows.
struct Model {
  std::string broker;  // the broker's id ("" before its first answer)
  std::string mode;    // "single" or "cluster" ("" before its first answer)
  std::string clock;   // the wall time of this frame, "HH:MM:SS"
  bool connected = false;
  std::string error;       // why not connected (when !connected)
  std::string data_clock;  // when the numbers shown were read ("" if never)
  std::vector<TargetView> targets;
  // Cluster mode (from `leases`): the coordinator, this broker's link to it,
  // and the ledger's lines (empty with `ledger_error` set if unavailable).
  bool cluster = false;
  std::string coordinator;
  std::string agent;  // "connected to the coordinator, accepted" or "NOT connected, ..."
  std::string ledger_error;
  std::vector<LedgerTarget> ledger;
  std::chrono::milliseconds interval{1000};
};

// The `status` reply (and the `leases` reply in cluster mode, nullptr if none
// or failed: then `ledger_error` says so) as a Model with connected = true.
// Tolerant: a missing or mistyped field shows as "-" or "", never throws.
// `clock` and `interval` are left for the caller.
Model ModelFromReplies(const boost::json::object& status, const boost::json::object* leases,
                       const std::string& leases_error = "");

// The tracked numbers of a model by key ("t/<target>/held",
// "l/<target>/<broker>/owed", "g/<target>/free", ...) with their text. The lease countdown is
// not tracked: it changes every frame.
std::map<std::string, std::string> TrackedValues(const Model& m);

// Remembers each tracked number's value and when it last changed, so a frame
// can highlight what changed within `hold` (a second by default).
class ChangeTracker {
 public:
  using Clock = std::chrono::steady_clock;
  explicit ChangeTracker(Clock::duration hold = std::chrono::seconds(1)) : hold_(hold) {}

  // Compares `m`'s tracked values with the last observed ones; a value that
  // differs (or a key that is new, after the first observation) changed at
  // `now`. A disconnected model is not observed (its numbers are old ones).
  void Observe(const Model& m, Clock::time_point now);
  // The keys that changed within `hold` before `now`.
  std::set<std::string> Highlighted(Clock::time_point now) const;
  // When the next highlight ends after `now` (a redraw is due then), if any.
  std::optional<Clock::time_point> NextExpiry(Clock::time_point now) const;

 private:
  Clock::duration hold_;
  bool first_ = true;
  std::map<std::string, std::string> values_;
  std::map<std::string, Clock::time_point> changed_at_;
};

// kPlain: no escape sequence (TERM=dumb, not a terminal): a changed number
// is followed by '*'. kMono: bold and reverse video only (NO_COLOR).
// kColor: as kMono plus colour.
enum class Style { kPlain, kMono, kColor };

struct RenderOptions {
  int width = 80;   // columns; every line is cut to this many (REQUIRES: >= 1)
  int height = 0;   // rows; 0: no limit. Over it: the first height-1 lines and "... N more"
  Style style = Style::kPlain;
};

// The frame's lines, without line ends. Each line shows at most `width`
// columns (escape sequences take none; a kept UTF-8 character counts as one);
// there are at most `height` lines when height > 0. Numbers whose key is in
// `highlighted` are shown reversed (kMono, kColor) or marked '*' (kPlain).
std::vector<std::string> Render(const Model& m, const std::set<std::string>& highlighted,
                                const RenderOptions& o);

// The bytes to write for one frame of Render's `lines`. `redraw` (a terminal):
// each line at its row from the top, the rest of each line and of the screen
// cleared, after clearing the whole screen first when `clear`. Else (plain
// output) the lines one after another and a blank line.
std::string FrameText(const std::vector<std::string>& lines, bool redraw, bool clear);

// Columns `line` takes on a terminal: its characters, escape sequences
// (ESC [ ... final byte) not counted.
std::size_t VisibleWidth(const std::string& line);

struct WatchOptions {
  std::chrono::milliseconds interval{1000};
  bool once = false;
};

// One request to the broker: its reply object, or why it failed (the admin
// client's message: not running, timeout, untrusted peer, ...).
using Call = std::function<Result<boost::json::object>(const boost::json::object& request)>;

// The watch loop on stdin/stdout (see the file comment). Returns the exit
// code: 0 after `q`, Ctrl-C, or stdout closed; 128+signal after SIGTERM or
// SIGHUP; with --once 0 if the broker answered, 1 if not.
int Run(const WatchOptions& options, const Call& call);

}  // namespace dsb::ctl::watch

#endif  // DSB_TOOLS_DSBCTL_WATCH_H_
