#include "broker/etcd/limit_records.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>

namespace dsb::etcd {

namespace json = boost::json;

namespace {

constexpr std::int64_t kMaxLimit = 65535;

Status Bad(std::string_view key, const std::string& what) {
  return Status{Errc::kProtocol, "etcd key " + std::string(key) + ": " + what +
                                     " (not a value dsb writes; fix or delete the key)"};
}

std::optional<lease::LimitSource> SourceNamed(std::string_view name) {
  for (auto s : {lease::LimitSource::kConfig, lease::LimitSource::kDiscovered,
                 lease::LimitSource::kOperator, lease::LimitSource::kQuery}) {
    if (name == lease::LimitSourceName(s)) return s;
  }
  return std::nullopt;
}

// A JSON object of version 1, or nullptr.
const json::object* VersionOne(const json::value& v) {
  const json::object* o = v.if_object();
  if (o == nullptr) return nullptr;
  const json::value* ver = o->if_contains("v");
  return ver != nullptr && ver->is_int64() && ver->as_int64() == 1 ? o : nullptr;
}

std::optional<std::int64_t> IntIn(const json::object& o, std::string_view name, std::int64_t lo,
                                  std::int64_t hi) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr || !v->is_int64() || v->as_int64() < lo || v->as_int64() > hi) {
    return std::nullopt;
  }
  return v->as_int64();
}

std::optional<std::string> StringIn(const json::object& o, std::string_view name) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return std::string(v->as_string());
}

std::optional<std::uint64_t> ParseU64(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

bool IsBrokerId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  });
}

}  // namespace

std::string LimitKey(std::string_view target) {
  return std::string(kLimitKeyPrefix) + std::string(target);
}

std::string EncodeKeeper(const KeeperValue& keeper) {
  // 64-bit numbers as strings (as etcd's JSON does): a double loses them.
  return json::serialize(json::object{{"v", 1},
                                      {"broker", keeper.broker_id},
                                      {"epoch", std::to_string(keeper.epoch)},
                                      {"instance", std::to_string(keeper.instance)}});
}

Result<KeeperValue> DecodeKeeper(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  const json::object* o = ec ? nullptr : VersionOne(v);
  if (o == nullptr) return Bad(kKeeperKey, "not a version-1 JSON object");
  KeeperValue k;
  auto broker = StringIn(*o, "broker");
  auto epoch = StringIn(*o, "epoch");
  auto instance = StringIn(*o, "instance");
  auto e = epoch ? ParseU64(*epoch) : std::nullopt;
  auto i = instance ? ParseU64(*instance) : std::nullopt;
  if (!broker || !IsBrokerId(*broker) || !e || !i) {
    return Bad(kKeeperKey, "needs broker (a broker id), epoch and instance (decimal strings)");
  }
  return KeeperValue{*broker, *e, *i};
}

std::string EncodeLimit(const StoredLimit& r) {
  json::array recent;
  for (const StoredChange& c : r.recent) {
    recent.push_back(json::object{{"at_ms", c.at_unix_ms},
                                  {"from", c.from},
                                  {"to", c.to},
                                  {"source", lease::LimitSourceName(c.source)},
                                  {"cause", c.cause},
                                  {"who", c.who}});
  }
  return json::serialize(json::object{{"v", 1},
                                      {"limit", r.limit},
                                      {"source", lease::LimitSourceName(r.source)},
                                      {"base", r.base},
                                      {"base_source", lease::LimitSourceName(r.base_source)},
                                      {"changed_at_ms", r.changed_at_unix_ms},
                                      {"writer", r.writer},
                                      {"recent", std::move(recent)}});
}

Result<StoredLimit> DecodeLimit(std::string_view key, std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  const json::object* o = ec ? nullptr : VersionOne(v);
  if (o == nullptr) return Bad(key, "not a version-1 JSON object");
  StoredLimit r;
  auto limit = IntIn(*o, "limit", 1, kMaxLimit);
  auto base = IntIn(*o, "base", 1, kMaxLimit);
  auto source = StringIn(*o, "source");
  auto base_source = StringIn(*o, "base_source");
  auto s = source ? SourceNamed(*source) : std::nullopt;
  auto bs = base_source ? SourceNamed(*base_source) : std::nullopt;
  if (!limit || !base) return Bad(key, "limit and base must be integers in 1..65535");
  if (!s || !bs) return Bad(key, "source and base_source must name a limit source");
  r.limit = static_cast<std::uint32_t>(*limit);
  r.base = static_cast<std::uint32_t>(*base);
  r.source = *s;
  r.base_source = *bs;
  r.changed_at_unix_ms = IntIn(*o, "changed_at_ms", 0, INT64_MAX).value_or(0);
  r.writer = StringIn(*o, "writer").value_or("");
  if (const json::value* rv = o->if_contains("recent"); rv != nullptr && rv->is_array()) {
    for (const json::value& cv : rv->as_array()) {
      const json::object* c = cv.if_object();
      if (c == nullptr || r.recent.size() == StoredLimit::kRecentChanges) break;
      auto from = IntIn(*c, "from", 0, kMaxLimit);
      auto to = IntIn(*c, "to", 0, kMaxLimit);
      auto cs = StringIn(*c, "source");
      auto src = cs ? SourceNamed(*cs) : std::nullopt;
      if (!from || !to || !src) return Bad(key, "a recent change is damaged");
      r.recent.push_back(StoredChange{IntIn(*c, "at_ms", 0, INT64_MAX).value_or(0),
                                      static_cast<std::uint32_t>(*from),
                                      static_cast<std::uint32_t>(*to), *src,
                                      StringIn(*c, "cause").value_or(""),
                                      StringIn(*c, "who").value_or("")});
    }
  }
  return r;
}

StoredLimit WithChange(StoredLimit record, const lease::LimitChange& change, std::uint32_t base,
                       lease::LimitSource base_source, std::int64_t at_unix_ms,
                       const std::string& who, const std::string& writer) {
  record.limit = change.to;
  record.source = change.source;
  record.base = base;
  record.base_source = base_source;
  record.changed_at_unix_ms = at_unix_ms;
  record.writer = writer;
  record.recent.insert(record.recent.begin(), StoredChange{at_unix_ms, change.from, change.to,
                                                           change.source, change.cause, who});
  if (record.recent.size() > StoredLimit::kRecentChanges) {
    record.recent.resize(StoredLimit::kRecentChanges);
  }
  return record;
}

std::string RefusalKey(const RefusalName& n) {
  return std::string(kRefusalKeyPrefix) + n.broker_id + "/" + std::to_string(n.epoch) + "/" +
         std::to_string(n.instance) + "/" + std::to_string(n.seq);
}

std::optional<RefusalName> ParseRefusalKey(std::string_view suffix) {
  if (!suffix.starts_with(kRefusalKeyPrefix)) return std::nullopt;
  suffix.remove_prefix(kRefusalKeyPrefix.size());
  std::vector<std::string_view> parts;
  while (parts.size() < 5) {
    const auto slash = suffix.find('/');
    parts.push_back(suffix.substr(0, slash));
    if (slash == std::string_view::npos) break;
    suffix.remove_prefix(slash + 1);
  }
  if (parts.size() != 4 || !IsBrokerId(parts[0])) return std::nullopt;
  auto e = ParseU64(parts[1]);
  auto i = ParseU64(parts[2]);
  auto s = ParseU64(parts[3]);
  if (!e || !i || !s) return std::nullopt;
  return RefusalName{std::string(parts[0]), *e, *i, *s};
}

std::string EncodeRefusal(const StoredRefusal& r) {
  return json::serialize(
      json::object{{"v", 1}, {"target", r.target}, {"held", r.held}, {"refusals", r.refusals}});
}

Result<StoredRefusal> DecodeRefusal(std::string_view key, std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  const json::object* o = ec ? nullptr : VersionOne(v);
  if (o == nullptr) return Bad(key, "not a version-1 JSON object");
  auto target = StringIn(*o, "target");
  auto held = IntIn(*o, "held", 0, kMaxLimit);
  auto refusals = IntIn(*o, "refusals", 1, kMaxLimit);
  if (!target || target->empty() || !held || !refusals) {
    return Bad(key, "needs target, held (0..65535) and refusals (1..65535)");
  }
  return StoredRefusal{*target, static_cast<std::uint32_t>(*held),
                       static_cast<std::uint32_t>(*refusals)};
}

void OwedHistory::Observe(const lease::LedgerSnapshot& snapshot, lease::TimePoint now) {
  if (!first_) first_ = now;
  for (const lease::TargetLeaseView& t : snapshot.targets) {
    for (const lease::BrokerLeaseView& b : t.brokers) {
      Entry& e = owed_[{t.target, b.broker_id}];
      std::erase_if(e.falls, [&](const auto& f) { return now - f.first > horizon_; });
      if (b.owed < e.last) e.falls.emplace_back(now, e.last);
      e.last = b.owed;
    }
  }
  // A broker the snapshot no longer lists (forgotten, C2) owes nothing now:
  // keep what it owed as a fall, like any other.
  for (auto& [key, e] : owed_) {
    bool listed = false;
    for (const lease::TargetLeaseView& t : snapshot.targets) {
      if (t.target != key.first) continue;
      for (const lease::BrokerLeaseView& b : t.brokers) listed |= b.broker_id == key.second;
    }
    if (!listed && e.last > 0) {
      e.falls.emplace_back(now, e.last);
      e.last = 0;
    }
  }
}

std::uint32_t OwedHistory::Peak(const std::string& target, const std::string& broker,
                                lease::TimePoint now) const {
  auto it = owed_.find({target, broker});
  if (it == owed_.end()) return 0;
  std::uint32_t peak = it->second.last;
  for (const auto& [at, owed] : it->second.falls) {
    if (now - at <= horizon_) peak = std::max(peak, owed);
  }
  return peak;
}

std::uint64_t OwedHistory::SumOfPeaks(const std::string& target, const std::string& except,
                                      lease::TimePoint now) const {
  std::uint64_t sum = 0;
  for (const auto& [key, e] : owed_) {
    if (key.first == target && key.second != except) sum += Peak(target, key.second, now);
  }
  return sum;
}

bool OwedHistory::Covers(lease::TimePoint now) const {
  return first_ && now - *first_ >= horizon_;
}

std::uint32_t HeldAtRefusal(const lease::LedgerConfig& mine, const lease::LedgerSnapshot& snapshot,
                            bool learning, const OwedHistory& history, const std::string& target,
                            const std::string& reporter, std::uint32_t reporter_count,
                            lease::TimePoint now) {
  if (learning || snapshot.learning || !history.Covers(now)) return UINT32_MAX;
  std::optional<std::size_t> t_index;
  for (std::size_t t = 0; t < mine.targets.size(); ++t) {
    if (mine.targets[t].name == target) t_index = t;
  }
  const lease::TargetLeaseView* view = nullptr;
  for (const auto& t : snapshot.targets) {
    if (t.target == target) view = &t;
  }
  if (!t_index || view == nullptr) return UINT32_MAX;
  std::uint64_t held = reporter_count;
  for (const lease::LedgerBroker& b : mine.brokers) {
    if (b.id == reporter) continue;
    if (*t_index < b.system_slots.size()) held += b.system_slots[*t_index];
    if (*t_index < b.floors.size()) held += b.floors[*t_index];
  }
  for (const lease::BrokerLeaseView& b : view->brokers) {
    if (b.broker_id == reporter) continue;
    const bool in_mine = std::any_of(mine.brokers.begin(), mine.brokers.end(),
                                     [&](const lease::LedgerBroker& m) { return m.id == b.broker_id; });
    if (!in_mine) held += b.counted;  // a removed broker still counted (R2)
  }
  // Owed of every broker the history saw (also ones already forgotten).
  held += history.SumOfPeaks(target, reporter, now);
  return held > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(held);
}

}  // namespace dsb::etcd
