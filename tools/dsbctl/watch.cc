#include "tools/dsbctl/watch.h"


#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string_view>
#include <utility>

#include "common/escape.h"
#include "common/local_protocol.h"
#include "tools/dsbctl/watch_term.h"

namespace dsb::ctl::watch {

namespace json = boost::json;
namespace lp = dsb::local_protocol;

namespace {

// ---- Reading replies (tolerant: a field of another broker version shows "-")

const json::value* Field(const json::object& o, std::string_view key) { return o.if_contains(key); }

Num NumField(const json::object& o, std::string_view key) {
  const json::value* v = Field(o, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64()) {
    return v->as_uint64() > static_cast<std::uint64_t>(INT64_MAX)
               ? std::nullopt
               : Num(static_cast<std::int64_t>(v->as_uint64()));
  }
  if (v->is_double() && std::isfinite(v->as_double()) && std::fabs(v->as_double()) < 9e18) {
    return static_cast<std::int64_t>(std::llround(v->as_double()));
  }
  return std::nullopt;
}

// Text from the broker (or a peer through it) for the terminal: escaped
// (common/escape.h) so it cannot act on the terminal, and cut.
std::string TextField(const json::object& o, std::string_view key, std::size_t max = 64) {
  const json::value* v = Field(o, key);
  if (v == nullptr || !v->is_string()) return "";
  return EscapeText(v->as_string(), max);
}

const json::array* ArrayField(const json::object& o, std::string_view key) {
  const json::value* v = Field(o, key);
  return v != nullptr && v->is_array() ? &v->as_array() : nullptr;
}

const json::object* ObjectField(const json::object& o, std::string_view key) {
  const json::value* v = Field(o, key);
  return v != nullptr && v->is_object() ? &v->as_object() : nullptr;
}

// ---- Text cells ------------------------------------------------------------

// Columns of UTF-8 text without escapes: one per character (EscapeText keeps
// only printable ASCII and valid UTF-8; wide characters are counted as one).
std::size_t Columns(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

// The first `cols` columns of `s` (cut between characters).
std::string CutColumns(std::string_view s, std::size_t cols) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (n == cols) return std::string(s.substr(0, i));
      ++n;
    }
  }
  return std::string(s);
}

// The last `cols` columns of `s` (cut between characters).
std::string TailColumns(std::string_view s, std::size_t cols) {
  const std::size_t have = Columns(s);
  if (have <= cols) return std::string(s);
  std::size_t skip = have - cols;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (skip == 0) return std::string(s.substr(i));
      --skip;
    }
  }
  return {};
}

// `s` in exactly `cols` columns: padded with spaces, or cut in the middle,
// head + '~' + tail, so a cut name never passes for a whole one and names
// that differ only near their end (exch-...-01, exch-...-02) stay distinct.
std::string Fit(std::string_view s, std::size_t cols, bool right = false) {
  const std::size_t have = Columns(s);
  if (have > cols) {
    if (cols == 0) return "";
    const std::size_t tail = (cols - 1) / 2;
    return CutColumns(s, cols - 1 - tail) + "~" + TailColumns(s, tail);
  }
  const std::string pad(cols - have, ' ');
  return right ? pad + std::string(s) : std::string(s) + pad;
}

std::string NumText(const Num& v) { return v ? std::to_string(*v) : "-"; }

std::string MsText(const Num& ms) {
  if (!ms) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(*ms) / 1000.0);
  return buf;
}

std::string IntervalText(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

enum class Attr { kNone, kBold, kChanged, kAlert, kGood };
struct Span {
  std::string text;
  Attr attr = Attr::kNone;
};
using Line = std::vector<Span>;

std::string_view Escape(Attr a, Style style) {
  if (style == Style::kPlain) return "";
  const bool color = style == Style::kColor;
  switch (a) {
    case Attr::kNone: return "";
    case Attr::kBold: return "\x1b[1m";
    case Attr::kChanged: return color ? "\x1b[1;7;33m" : "\x1b[1;7m";
    case Attr::kAlert: return color ? "\x1b[1;31m" : "\x1b[1;7m";
    case Attr::kGood: return color ? "\x1b[32m" : "";
  }
  return "";
}

// The line as text of at most `width` columns, escapes around styled spans
// (each closed before the next, so a cut never leaves a style open).
std::string Emit(const Line& line, std::size_t width, Style style) {
  std::string out;
  std::size_t used = 0;
  for (const Span& s : line) {
    if (used >= width) break;
    std::string text = s.text;
    if (Columns(text) > width - used) text = CutColumns(text, width - used);
    used += Columns(text);
    const std::string_view on = Escape(s.attr, style);
    if (on.empty() || text.empty()) {
      out += text;
    } else {
      out += on;
      out += text;
      out += "\x1b[0m";
    }
  }
  return out;
}

// A number cell of `cols` columns: right-aligned, then one marker column
// ('*' if changed, in plain style), highlighted if its key is.
void AddNum(Line& line, const std::string& text, const std::string& key,
            const std::set<std::string>& hl, Style style, std::size_t cols) {
  const bool changed = !key.empty() && hl.count(key) > 0;
  const std::size_t w = cols > 1 ? cols - 1 : 1;
  const std::size_t have = Columns(text);
  if (have < w) line.push_back({std::string(w - have, ' ')});
  line.push_back({text, changed && style != Style::kPlain ? Attr::kChanged : Attr::kNone});
  line.push_back({changed && style == Style::kPlain ? "*" : " "});
}

constexpr std::size_t kNumCols = 7;     // " 65535" and the marker
constexpr std::size_t kLimitCols = 7;
constexpr std::size_t kSourceCols = 11;  // "discovered" and a space
constexpr std::size_t kModeCols = 9;
constexpr std::size_t kLeaseCols = 8;

std::size_t Clamp(long v, long lo, long hi) {
  return static_cast<std::size_t>(std::clamp(v, lo, hi));
}

std::string TKey(const std::string& target, const char* what) {
  return "t/" + target + "/" + what;
}
std::string GKey(const std::string& target, const char* what) {
  return "g/" + target + "/" + what;
}
std::string LKey(const std::string& target, const std::string& broker, const char* what) {
  return "l/" + target + "/" + broker + "/" + what;
}

// Calls `fn` with each object of `array` (none when the field was missing);
// an element of another type is skipped, as a missing field shows "-".
template <typename Fn>
void ForEachObject(const json::array* array, Fn fn) {
  if (array == nullptr) return;
  for (const json::value& v : *array) {
    if (v.is_object()) fn(v.as_object());
  }
}

}  // namespace

// ---- Model -------------------------------------------------------------------

Model ModelFromReplies(const json::object& status, const json::object* leases,
                       const std::string& leases_error) {
  Model m;
  m.connected = true;
  m.broker = TextField(status, "broker");
  m.mode = TextField(status, lp::rep::kMode, 16);
  m.cluster = m.mode == lp::rep::kModeCluster;
  ForEachObject(ArrayField(status, "targets"), [&](const json::object& t) {
    TargetView v;
    v.name = TextField(t, "name");
    v.limit = NumField(t, "limit");
    v.limit_source = TextField(t, "limit_source", 16);
    v.capacity = NumField(t, "capacity");
    v.held = NumField(t, "held");
    v.waiting = NumField(t, "waiting");
    v.quarantined = NumField(t, "quarantined");
    v.cooling = NumField(t, "cooling");
    m.targets.push_back(std::move(v));
  });
  if (!m.cluster) return m;
  if (leases == nullptr) {
    m.ledger_error = leases_error.empty() ? "no answer to 'leases'" : leases_error;
    return m;
  }
  m.coordinator = TextField(*leases, "coordinator");
  if (const json::object* a = ObjectField(*leases, "agent")) {
    const json::value* c = Field(*a, "connected");
    const bool connected = c != nullptr && c->is_bool() && c->as_bool();
    const std::string verdict = TextField(*a, "verdict", 32);
    m.agent = std::string(connected ? "connected" : "NOT connected") +
              (verdict.empty() ? "" : ", " + verdict);
  }
  const json::value* ledger = Field(*leases, "ledger");
  if (ledger == nullptr || !ledger->is_object()) {
    const std::string why = TextField(*leases, "ledger_error", 200);
    m.ledger_error = why.empty() ? "the coordinator gave no ledger" : why;
    return m;
  }
  ForEachObject(ArrayField(ledger->as_object(), "targets"), [&](const json::object& t) {
    LedgerTarget g;
    g.name = TextField(t, "target");
    g.limit = NumField(t, "limit");
    g.pool = NumField(t, "pool");
    g.owed_total = NumField(t, "owed_total");
    g.free = NumField(t, "free");
    ForEachObject(ArrayField(t, "brokers"), [&](const json::object& b) {
      LeaseView l;
      l.broker = TextField(b, "broker");
      l.mode = TextField(b, "mode", 16);
      l.owed = NumField(b, "owed");
      l.granted = NumField(b, "granted");
      l.held = NumField(b, "held");
      l.waiting = NumField(b, "waiting");
      l.wanted = NumField(b, "wanted");
      l.lease_left_ms = NumField(b, "lease_left_ms");
      g.brokers.push_back(std::move(l));
    });
    m.ledger.push_back(std::move(g));
  });
  return m;
}

std::map<std::string, std::string> TrackedValues(const Model& m) {
  std::map<std::string, std::string> v;
  for (const TargetView& t : m.targets) {
    v[TKey(t.name, "limit")] = NumText(t.limit);
    v[TKey(t.name, "source")] = t.limit_source;
    v[TKey(t.name, "capacity")] = NumText(t.capacity);
    v[TKey(t.name, "held")] = NumText(t.held);
    v[TKey(t.name, "waiting")] = NumText(t.waiting);
    v[TKey(t.name, "quarantined")] = NumText(t.quarantined);
    v[TKey(t.name, "cooling")] = NumText(t.cooling);
  }
  for (const LedgerTarget& g : m.ledger) {
    v[GKey(g.name, "limit")] = NumText(g.limit);
    v[GKey(g.name, "pool")] = NumText(g.pool);
    v[GKey(g.name, "owed")] = NumText(g.owed_total);
    v[GKey(g.name, "free")] = NumText(g.free);
    for (const LeaseView& l : g.brokers) {
      v[LKey(g.name, l.broker, "mode")] = l.mode;
      v[LKey(g.name, l.broker, "owed")] = NumText(l.owed);
      v[LKey(g.name, l.broker, "granted")] = NumText(l.granted);
      v[LKey(g.name, l.broker, "held")] = NumText(l.held);
      v[LKey(g.name, l.broker, "waiting")] = NumText(l.waiting);
      v[LKey(g.name, l.broker, "wanted")] = NumText(l.wanted);
    }
  }
  return v;
}

// ---- Changes -----------------------------------------------------------------

void ChangeTracker::Observe(const Model& m, Clock::time_point now) {
  if (!m.connected) return;
  std::map<std::string, std::string> values = TrackedValues(m);
  if (!first_) {
    for (const auto& [key, text] : values) {
      auto it = values_.find(key);
      if (it == values_.end() || it->second != text) changed_at_[key] = now;
    }
  }
  first_ = false;
  values_ = std::move(values);
  // Forget what ended (and keys gone), so the map stays as small as the view.
  for (auto it = changed_at_.begin(); it != changed_at_.end();) {
    if (now - it->second >= hold_ || values_.count(it->first) == 0) {
      it = changed_at_.erase(it);
    } else {
      ++it;
    }
  }
}

std::set<std::string> ChangeTracker::Highlighted(Clock::time_point now) const {
  std::set<std::string> out;
  for (const auto& [key, at] : changed_at_) {
    if (now - at < hold_) out.insert(key);
  }
  return out;
}

std::optional<ChangeTracker::Clock::time_point> ChangeTracker::NextExpiry(
    Clock::time_point now) const {
  std::optional<Clock::time_point> next;
  for (const auto& [key, at] : changed_at_) {
    const Clock::time_point end = at + hold_;
    if (end > now && (!next || end < *next)) next = end;
  }
  return next;
}

// ---- Rendering ---------------------------------------------------------------

std::size_t VisibleWidth(const std::string& line) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '\x1b' && i + 1 < line.size() && line[i + 1] == '[') {
      // CSI: parameters and intermediates up to the final byte 0x40..0x7e.
      i += 2;
      while (i < line.size() && !(line[i] >= 0x40 && line[i] <= 0x7e)) ++i;
      continue;
    }
    if ((static_cast<unsigned char>(line[i]) & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::vector<std::string> Render(const Model& m, const std::set<std::string>& hl,
                                const RenderOptions& o) {
  const std::size_t width = static_cast<std::size_t>(std::max(1, o.width));
  const long w = static_cast<long>(width);
  std::vector<Line> lines;

  // Header: the state first, so a narrow terminal still shows it.
  {
    Line h{{"dsb watch", Attr::kBold}, {" " + (m.clock.empty() ? "--:--:--" : m.clock) + "  "}};
    if (m.connected) {
      h.push_back({"connected", Attr::kGood});
    } else {
      h.push_back({"DISCONNECTED", Attr::kAlert});
    }
    std::string who = m.broker.empty() ? "" : "  broker " + m.broker;
    if (!m.mode.empty()) who += (who.empty() ? "  " : " ") + std::string("(") + m.mode + ")";
    h.push_back({who + ", every " + IntervalText(m.interval)});
    if (o.style == Style::kPlain) h.push_back({", * changed"});
    lines.push_back(std::move(h));
  }
  if (!m.connected) {
    lines.push_back({{"  " + (m.error.empty() ? std::string("no answer") : m.error)}});
    lines.push_back({{"  retrying every " + IntervalText(m.interval) +
                      (m.data_clock.empty() ? "; no numbers yet"
                                            : "; the numbers below are from " + m.data_clock)}});
  }
  lines.push_back({});

  // Targets.
  const std::size_t name_cols =
      Clamp(w - static_cast<long>(kLimitCols + kSourceCols + 5 * kNumCols), 8, 48);
  lines.push_back({{Fit("TARGET", name_cols) + Fit("LIMIT", kLimitCols - 1, true) + " " +
                        Fit(" SOURCE", kSourceCols) + Fit("CAP", kNumCols - 1, true) + " " +
                        Fit("HELD", kNumCols - 1, true) + " " + Fit("WAIT", kNumCols - 1, true) +
                        " " + Fit("QUAR", kNumCols - 1, true) + " " +
                        Fit("COOL", kNumCols - 1, true),
                    Attr::kBold}});
  if (m.targets.empty()) lines.push_back({{m.data_clock.empty() ? "(no data)" : "(no targets)"}});
  for (const TargetView& t : m.targets) {
    Line l{{Fit(t.name, name_cols)}};
    AddNum(l, NumText(t.limit), TKey(t.name, "limit"), hl, o.style, kLimitCols);
    const bool src_changed = hl.count(TKey(t.name, "source")) > 0;
    const std::string src = Fit(t.limit_source.empty() ? "-" : t.limit_source, kSourceCols - 1);
    l.push_back({" "});
    l.push_back({src, src_changed && o.style != Style::kPlain ? Attr::kChanged : Attr::kNone});
    AddNum(l, NumText(t.capacity), TKey(t.name, "capacity"), hl, o.style, kNumCols);
    AddNum(l, NumText(t.held), TKey(t.name, "held"), hl, o.style, kNumCols);
    AddNum(l, NumText(t.waiting), TKey(t.name, "waiting"), hl, o.style, kNumCols);
    AddNum(l, NumText(t.quarantined), TKey(t.name, "quarantined"), hl, o.style, kNumCols);
    AddNum(l, NumText(t.cooling), TKey(t.name, "cooling"), hl, o.style, kNumCols);
    lines.push_back(std::move(l));
  }

  // The coordinator's ledger (cluster mode).
  if (m.cluster) {
    lines.push_back({});
    lines.push_back({{"LEASES", Attr::kBold},
                     {"  coordinator " + (m.coordinator.empty() ? "?" : m.coordinator) +
                      (m.agent.empty() ? "" : "; this broker " + m.agent)}});
    if (!m.ledger_error.empty()) lines.push_back({{"  ledger unavailable: " + m.ledger_error}});
    const std::size_t broker_cols =
        Clamp(w - static_cast<long>(2 + kModeCols + 5 * kNumCols + kLeaseCols), 8, 40);
    for (const LedgerTarget& g : m.ledger) {
      Line head{{"target " + g.name + ":"}};
      const auto field = [&](const char* label, const Num& v, const char* key) {
        head.push_back({std::string(" ") + label + " "});
        const bool changed = hl.count(GKey(g.name, key)) > 0;
        head.push_back({NumText(v), changed && o.style != Style::kPlain ? Attr::kChanged
                                                                         : Attr::kNone});
        if (changed && o.style == Style::kPlain) head.push_back({"*"});
      };
      field("limit", g.limit, "limit");
      field("pool", g.pool, "pool");
      field("owed", g.owed_total, "owed");
      field("free", g.free, "free");
      lines.push_back(std::move(head));
      lines.push_back({{"  " + Fit("BROKER", broker_cols) + Fit("MODE", kModeCols) +
                            Fit("OWED", kNumCols - 1, true) + " " +
                            Fit("GRANT", kNumCols - 1, true) + " " +
                            Fit("HELD", kNumCols - 1, true) + " " +
                            Fit("WAIT", kNumCols - 1, true) + " " +
                            Fit("WANT", kNumCols - 1, true) + " " + Fit("LEASE", kLeaseCols, true),
                        Attr::kBold}});
      for (const LeaseView& b : g.brokers) {
        Line l{{"  " + Fit(b.broker, broker_cols)}};
        const bool mode_changed = hl.count(LKey(g.name, b.broker, "mode")) > 0;
        l.push_back({Fit(b.mode.empty() ? "-" : b.mode, kModeCols - 1),
                     mode_changed && o.style != Style::kPlain ? Attr::kChanged : Attr::kNone});
        l.push_back({" "});
        AddNum(l, NumText(b.owed), LKey(g.name, b.broker, "owed"), hl, o.style, kNumCols);
        AddNum(l, NumText(b.granted), LKey(g.name, b.broker, "granted"), hl, o.style, kNumCols);
        AddNum(l, NumText(b.held), LKey(g.name, b.broker, "held"), hl, o.style, kNumCols);
        AddNum(l, NumText(b.waiting), LKey(g.name, b.broker, "waiting"), hl, o.style, kNumCols);
        AddNum(l, NumText(b.wanted), LKey(g.name, b.broker, "wanted"), hl, o.style, kNumCols);
        l.push_back({Fit(MsText(b.lease_left_ms), kLeaseCols, true)});
        lines.push_back(std::move(l));
      }
    }
  }

  // Rows that do not fit: say how many, rather than let the terminal scroll.
  if (o.height > 0 && lines.size() > static_cast<std::size_t>(o.height)) {
    const std::size_t keep = static_cast<std::size_t>(o.height) - 1;
    const std::size_t more = lines.size() - keep;
    lines.resize(keep);
    lines.push_back({{"... " + std::to_string(more) + " more line" + (more == 1 ? "" : "s") +
                          " (a taller terminal shows them)",
                      Attr::kBold}});
  }
  std::vector<std::string> out;
  out.reserve(lines.size());
  for (const Line& l : lines) {
    std::string s = Emit(l, width, o.style);
    // No trailing blanks: a plain frame in a file or a pipe stays clean.
    if (o.style == Style::kPlain) {
      while (!s.empty() && s.back() == ' ') s.pop_back();
    }
    out.push_back(std::move(s));
  }
  return out;
}

// ---- The loop ------------------------------------------------------------------

// ---- Shared by the terminal loops (watch_term.h)

// Width of plain frames into a pipe or a file: $COLUMNS if it is a sane
// number, else 80.
int PlainWidth() {
  if (const char* c = std::getenv("COLUMNS"); c != nullptr && *c != '\0') {
    char* end = nullptr;
    const long v = std::strtol(c, &end, 10);
    if (*end == '\0' && v >= 20 && v <= 1000) return static_cast<int>(v);
  }
  return 80;
}

std::string WallClock() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
#ifdef _WIN32
  ::localtime_s(&tm, &t);
#else
  ::localtime_r(&t, &tm);
#endif
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// One round of requests. A failure keeps `last`'s numbers with the reason.
Model Fetch(const Call& call, const Model& last, std::chrono::milliseconds interval) {
  const std::string clock = WallClock();
  auto status = call(lp::Request(lp::Op::kStatus));
  Status s = status.ok() ? lp::ReplyStatus(*status) : status.status();
  Model m;
  if (!s.ok()) {
    m = last;
    m.connected = false;
    m.error = EscapeText(s.message().empty() ? std::string("the broker refused 'status'")
                                             : s.message(),
                         300);
  } else {
    const bool cluster = [&] {
      const json::value* mode = status->if_contains(lp::rep::kMode);
      return mode != nullptr && mode->is_string() && mode->as_string() == lp::rep::kModeCluster;
    }();
    std::optional<json::object> leases;
    std::string leases_error;
    if (cluster) {
      auto r = call(lp::Request(lp::Op::kLeases));
      Status ls = r.ok() ? lp::ReplyStatus(*r) : r.status();
      if (ls.ok()) {
        leases = std::move(*r);
      } else {
        leases_error = EscapeText(ls.message(), 200);
      }
    }
    m = ModelFromReplies(*status, leases ? &*leases : nullptr, leases_error);
    m.data_clock = clock;
  }
  m.clock = clock;
  m.interval = interval;
  return m;
}

std::string FrameText(const std::vector<std::string>& lines, bool redraw, bool clear) {
  std::string frame;
  if (redraw) {
    if (clear) frame += "\x1b[2J";
    for (std::size_t i = 0; i < lines.size(); ++i) {
      frame += "\x1b[" + std::to_string(i + 1) + ";1H" + lines[i] + "\x1b[K";
    }
    frame += "\x1b[J";
  } else {
    for (const std::string& l : lines) frame += l + "\n";
    frame += "\n";
  }
  return frame;
}

}  // namespace dsb::ctl::watch
