#include "broker/history.h"

#include <algorithm>
#include <boost/json.hpp>
#include <limits>

#include "common/check.h"

namespace dsb::broker {

namespace json = boost::json;

namespace {

std::optional<std::uint32_t> U32(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_uint64() && v->as_uint64() <= std::numeric_limits<std::uint32_t>::max()) {
    return static_cast<std::uint32_t>(v->as_uint64());
  }
  if (v->is_int64() && v->as_int64() >= 0 &&
      v->as_int64() <= std::numeric_limits<std::uint32_t>::max()) {
    return static_cast<std::uint32_t>(v->as_int64());
  }
  return std::nullopt;
}

const json::array* ArrayAt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_array() ? &v->as_array() : nullptr;
}

json::value Opt(const std::optional<std::uint32_t>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}

template <typename T>
std::size_t IndexIn(std::vector<T>& names, const T& name) {
  auto it = std::find(names.begin(), names.end(), name);
  if (it != names.end()) return static_cast<std::size_t>(it - names.begin());
  names.push_back(name);
  return names.size() - 1;
}

}  // namespace

History::History(std::size_t capacity) : capacity_(capacity) {
  DSB_CHECK(capacity >= 1, "History needs room for at least one frame");
}

void History::Record(Clock::time_point now, std::vector<TargetPoint> targets) {
  if (!frames_.empty() && now < frames_.back().at) now = frames_.back().at;
  if (frames_.size() == capacity_) frames_.pop_front();
  frames_.push_back(Frame{now, std::move(targets)});
}

json::object History::Json(Clock::time_point now) const {
  const std::size_t n = frames_.size();
  json::array ages;
  // Columns of one target: built per frame, null-filled where it is absent.
  struct BrokerColumns {
    json::array owed, granted, held;
  };
  struct TargetColumns {
    json::array limit, capacity, held, waiting;
    std::vector<std::string> broker_names;
    std::vector<BrokerColumns> brokers;
  };
  std::vector<std::string> names;
  std::vector<TargetColumns> columns;
  auto pad = [](json::array& a, std::size_t to) {
    while (a.size() < to) a.emplace_back(nullptr);
  };
  for (std::size_t f = 0; f < n; ++f) {
    const Frame& frame = frames_[f];
    ages.emplace_back(std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::max(Clock::duration::zero(), now - frame.at))
                          .count());
    for (const TargetPoint& t : frame.targets) {
      const std::size_t i = IndexIn(names, t.target);
      if (i == columns.size()) columns.emplace_back();
      TargetColumns& c = columns[i];
      pad(c.limit, f);
      pad(c.capacity, f);
      pad(c.held, f);
      pad(c.waiting, f);
      // A target listed twice in one frame keeps its first entry.
      if (c.limit.size() > f) continue;
      c.limit.push_back(Opt(t.limit));
      c.capacity.push_back(Opt(t.capacity));
      c.held.push_back(Opt(t.held));
      c.waiting.push_back(Opt(t.waiting));
      for (const BrokerPoint& b : t.brokers) {
        const std::size_t j = IndexIn(c.broker_names, b.broker);
        if (j == c.brokers.size()) c.brokers.emplace_back();
        BrokerColumns& bc = c.brokers[j];
        pad(bc.owed, f);
        pad(bc.granted, f);
        pad(bc.held, f);
        if (bc.owed.size() > f) continue;
        bc.owed.emplace_back(b.owed);
        bc.granted.emplace_back(b.granted);
        bc.held.emplace_back(b.held);
      }
    }
  }
  json::array targets;
  for (std::size_t i = 0; i < columns.size(); ++i) {
    TargetColumns& c = columns[i];
    json::array brokers;
    for (std::size_t j = 0; j < c.brokers.size(); ++j) {
      BrokerColumns& bc = c.brokers[j];
      pad(bc.owed, n);
      pad(bc.granted, n);
      pad(bc.held, n);
      brokers.push_back(json::object{{"broker", c.broker_names[j]},
                                     {"owed", std::move(bc.owed)},
                                     {"granted", std::move(bc.granted)},
                                     {"held", std::move(bc.held)}});
    }
    pad(c.limit, n);
    pad(c.capacity, n);
    pad(c.held, n);
    pad(c.waiting, n);
    targets.push_back(json::object{{"target", names[i]},
                                   {"limit", std::move(c.limit)},
                                   {"capacity", std::move(c.capacity)},
                                   {"held", std::move(c.held)},
                                   {"waiting", std::move(c.waiting)},
                                   {"brokers", std::move(brokers)}});
  }
  return json::object{{"capacity", capacity_},
                      {"frames", n},
                      {"age_ms", std::move(ages)},
                      {"targets", std::move(targets)}};
}

std::vector<History::TargetPoint> History::SampleFrom(const json::object& status,
                                                      const json::object* leases) {
  std::vector<TargetPoint> out;
  if (const json::array* ts = ArrayAt(status, "targets")) {
    for (const json::value& tv : *ts) {
      if (!tv.is_object()) continue;
      const json::object& o = tv.as_object();
      const json::value* name = o.if_contains("name");
      if (name == nullptr || !name->is_string()) continue;
      TargetPoint p;
      p.target = std::string(name->as_string());
      p.limit = U32(o, "limit");
      p.capacity = U32(o, "capacity");
      p.held = U32(o, "held");
      p.waiting = U32(o, "waiting");
      out.push_back(std::move(p));
    }
  }
  const json::value* ledger = leases != nullptr ? leases->if_contains("ledger") : nullptr;
  if (ledger == nullptr || !ledger->is_object()) return out;
  const json::array* lts = ArrayAt(ledger->as_object(), "targets");
  if (lts == nullptr) return out;
  for (const json::value& lv : *lts) {
    if (!lv.is_object()) continue;
    const json::object& lo = lv.as_object();
    const json::value* name = lo.if_contains("target");
    const json::array* bs = ArrayAt(lo, "brokers");
    if (name == nullptr || !name->is_string() || bs == nullptr) continue;
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const TargetPoint& p) { return p.target == name->as_string(); });
    if (it == out.end()) continue;
    for (const json::value& bv : *bs) {
      if (!bv.is_object()) continue;
      const json::object& b = bv.as_object();
      const json::value* id = b.if_contains("broker");
      if (id == nullptr || !id->is_string()) continue;
      it->brokers.push_back(BrokerPoint{std::string(id->as_string()), U32(b, "owed").value_or(0),
                                        U32(b, "granted").value_or(0),
                                        U32(b, "held").value_or(0)});
    }
  }
  return out;
}

}  // namespace dsb::broker
