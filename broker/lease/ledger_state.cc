// Ledger::SaveState / Ledger::LoadState (ledger.h): the ledger's whole state
// but time points, as JSON, for the shared ledger (shared_ledger.h) that keeps
// it in a store between calls. Split from ledger.cc: the rules stay there.
#include <algorithm>
#include <set>

#include <boost/json.hpp>

#include "broker/lease/ledger.h"

namespace dsb::lease {

namespace json = boost::json;

namespace {

constexpr std::int64_t kStateVersion = 1;

const char* ModeText(BrokerMode m) { return BrokerModeName(m); }
const char* GateText(Gate g) {
  switch (g) {
    case Gate::kOpen: return "open";
    case Gate::kWaiting: return "waiting";
    case Gate::kSuperseded: return "superseded";
  }
  return "?";
}

json::array U32s(const std::vector<std::uint32_t>& v) {
  json::array a;
  for (auto x : v) a.emplace_back(x);
  return a;
}

json::object GrantJson(const Grant& g) {
  json::object o;
  o["broker_id"] = g.broker_id;
  o["epoch"] = g.epoch;
  o["instance"] = g.instance;
  o["request_id"] = g.request_id;
  o["term_ns"] = g.term.count();
  o["learning"] = g.learning;
  o["verdict"] = static_cast<std::uint64_t>(g.verdict);
  o["generation"] = g.generation;
  o["reason"] = g.reason;
  o["successor"] = g.successor;
  json::array targets;
  for (const auto& t : g.targets) targets.push_back(json::array{json::value(t.target), t.amount});
  o["targets"] = std::move(targets);
  return o;
}

// Reads fields of a JSON state; every failure is kProtocol naming the field
// by its path ("meta.brokers[1].instances[0].epoch").
class Reader {
 public:
  explicit Reader(std::string what) : what_(std::move(what)) {}

  Status Error(const std::string& path, const std::string& problem) const {
    return {Errc::kProtocol, what_ + ": field '" + path + "' " + problem};
  }

  Result<const json::value*> Field(const json::object& o, const std::string& path,
                                   std::string_view key) const {
    const json::value* v = o.if_contains(key);
    if (v == nullptr) return Error(Join(path, key), "is missing");
    return v;
  }
  Result<std::uint64_t> U64(const json::object& o, const std::string& path,
                            std::string_view key) const {
    auto v = Field(o, path, key);
    if (!v.ok()) return v.status();
    return U64Of(**v, Join(path, key));
  }
  Result<std::uint64_t> U64Of(const json::value& v, const std::string& path) const {
    if (v.is_uint64()) return v.get_uint64();
    if (v.is_int64() && v.get_int64() >= 0) return static_cast<std::uint64_t>(v.get_int64());
    return Error(path, "is not an unsigned integer");
  }
  Result<std::uint32_t> U32(const json::object& o, const std::string& path,
                            std::string_view key) const {
    auto v = U64(o, path, key);
    if (!v.ok()) return v.status();
    if (*v > UINT32_MAX) return Error(Join(path, key), "is above 2^32 - 1");
    return static_cast<std::uint32_t>(*v);
  }
  Result<std::uint32_t> U32Of(const json::value& v, const std::string& path) const {
    auto u = U64Of(v, path);
    if (!u.ok()) return u.status();
    if (*u > UINT32_MAX) return Error(path, "is above 2^32 - 1");
    return static_cast<std::uint32_t>(*u);
  }
  Result<std::int64_t> I64(const json::object& o, const std::string& path,
                           std::string_view key) const {
    auto v = Field(o, path, key);
    if (!v.ok()) return v.status();
    if ((*v)->is_int64()) return (*v)->get_int64();
    if ((*v)->is_uint64() && (*v)->get_uint64() <= INT64_MAX) {
      return static_cast<std::int64_t>((*v)->get_uint64());
    }
    return Error(Join(path, key), "is not an integer");
  }
  Result<double> Double(const json::object& o, const std::string& path,
                        std::string_view key) const {
    auto v = Field(o, path, key);
    if (!v.ok()) return v.status();
    if ((*v)->is_double()) return (*v)->get_double();
    if ((*v)->is_int64()) return static_cast<double>((*v)->get_int64());
    if ((*v)->is_uint64()) return static_cast<double>((*v)->get_uint64());
    return Error(Join(path, key), "is not a number");
  }
  Result<bool> Bool(const json::object& o, const std::string& path, std::string_view key) const {
    auto v = Field(o, path, key);
    if (!v.ok()) return v.status();
    if (!(*v)->is_bool()) return Error(Join(path, key), "is not true or false");
    return (*v)->get_bool();
  }
  Result<std::string> Str(const json::object& o, const std::string& path,
                          std::string_view key) const {
    auto v = Field(o, path, key);
    if (!v.ok()) return v.status();
    if (!(*v)->is_string()) return Error(Join(path, key), "is not a string");
    return std::string((*v)->get_string());
  }
  Result<const json::array*> Arr(const json::object& o, const std::string& path,
                                 std::string_view key) const {
    auto v = Field(o, path, key);
    if (!v.ok()) return v.status();
    if (!(*v)->is_array()) return Error(Join(path, key), "is not an array");
    return &(*v)->get_array();
  }
  Result<const json::object*> Obj(const json::object& o, const std::string& path,
                                  std::string_view key) const {
    auto v = Field(o, path, key);
    if (!v.ok()) return v.status();
    if (!(*v)->is_object()) return Error(Join(path, key), "is not an object");
    return &(*v)->get_object();
  }
  Result<const json::object*> ObjOf(const json::value& v, const std::string& path) const {
    if (!v.is_object()) return Error(path, "is not an object");
    return &v.get_object();
  }
  // An array of unsigned 32-bit numbers of `size` entries (any size if npos).
  Result<std::vector<std::uint32_t>> U32Array(const json::object& o, const std::string& path,
                                              std::string_view key,
                                              std::size_t size = std::string::npos) const {
    auto a = Arr(o, path, key);
    if (!a.ok()) return a.status();
    const std::string p = Join(path, key);
    if (size != std::string::npos && (*a)->size() != size) {
      return Error(p, "has " + std::to_string((*a)->size()) + " entries, not " +
                          std::to_string(size));
    }
    std::vector<std::uint32_t> out;
    for (std::size_t i = 0; i < (*a)->size(); ++i) {
      auto x = U32Of((**a)[i], Index(p, i));
      if (!x.ok()) return x.status();
      out.push_back(*x);
    }
    return out;
  }

  static std::string Join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  static std::string Index(const std::string& path, std::size_t i) {
    return path + "[" + std::to_string(i) + "]";
  }

 private:
  std::string what_;
};

// Shortens the error plumbing: `DSB_TRY(x, expr)` declares x = *expr or
// returns its failure.
#define DSB_STATE_TRY(var, expr)          \
  auto var##_result = (expr);             \
  if (!var##_result.ok()) return var##_result.status(); \
  auto var = std::move(*var##_result)

Result<Grant> GrantOf(const Reader& r, const json::object& o, const std::string& p) {
  Grant g;
  DSB_STATE_TRY(broker_id, r.Str(o, p, "broker_id"));
  DSB_STATE_TRY(epoch, r.U64(o, p, "epoch"));
  DSB_STATE_TRY(instance, r.U64(o, p, "instance"));
  DSB_STATE_TRY(request_id, r.U64(o, p, "request_id"));
  DSB_STATE_TRY(term, r.I64(o, p, "term_ns"));
  DSB_STATE_TRY(learning, r.Bool(o, p, "learning"));
  DSB_STATE_TRY(verdict, r.U64(o, p, "verdict"));
  if (verdict < 1 || verdict > 5) return r.Error(Reader::Join(p, "verdict"), "is not 1..5");
  DSB_STATE_TRY(generation, r.U64(o, p, "generation"));
  DSB_STATE_TRY(reason, r.Str(o, p, "reason"));
  DSB_STATE_TRY(successor, r.Str(o, p, "successor"));
  DSB_STATE_TRY(targets, r.Arr(o, p, "targets"));
  g.broker_id = std::move(broker_id);
  g.epoch = epoch;
  g.instance = instance;
  g.request_id = request_id;
  g.term = Duration(term);
  g.learning = learning;
  g.verdict = static_cast<Verdict>(verdict);
  g.generation = generation;
  g.reason = std::move(reason);
  g.successor = std::move(successor);
  const std::string tp = Reader::Join(p, "targets");
  for (std::size_t i = 0; i < targets->size(); ++i) {
    const json::value& e = (*targets)[i];
    if (!e.is_array() || e.get_array().size() != 2 || !e.get_array()[0].is_string()) {
      return r.Error(Reader::Index(tp, i), "is not [name, amount]");
    }
    DSB_STATE_TRY(amount, r.U32Of(e.get_array()[1], Reader::Index(tp, i) + "[1]"));
    g.targets.push_back({std::string(e.get_array()[0].get_string()), amount});
  }
  return g;
}

}  // namespace

json::object Ledger::SaveState() const {
  const std::size_t nt = config_.targets.size();
  json::object meta;
  meta["term_ns"] = config_.term.count();
  meta["drain_ns"] = config_.drain.count();
  meta["eps"] = config_.eps;
  meta["generation"] = config_.generation;
  meta["file_hash"] = config_.file_hash;
  json::array target_names;
  for (const auto& t : config_.targets) target_names.emplace_back(t.name);
  meta["targets"] = std::move(target_names);
  json::array brokers_config;
  for (const auto& b : config_.brokers) {
    json::object o;
    o["id"] = b.id;
    o["weight"] = b.weight;
    o["system_slots"] = U32s(b.system_slots);
    o["floors"] = U32s(b.floors);
    brokers_config.push_back(std::move(o));
  }
  meta["brokers_config"] = std::move(brokers_config);
  meta["gate"] = GateText(gate_);
  meta["newer_generation"] = newer_generation_;
  meta["successor"] = successor_;
  json::array brokers;
  for (const auto& b : brokers_) {
    json::object o;
    o["id"] = b.id;
    o["config_index"] = b.config_index ? json::value(*b.config_index) : json::value(nullptr);
    o["mode"] = ModeText(b.mode);
    o["max_epoch"] = b.max_epoch;
    json::array instances;
    for (const auto& in : b.instances) {
      json::object i;
      i["epoch"] = in.epoch;
      i["instance"] = in.instance;
      i["verdict"] = static_cast<std::uint64_t>(in.verdict);
      i["reason"] = in.reason;
      i["goodbye"] = in.goodbye;
      i["has_newest"] = in.has_newest;
      i["newest_id"] = in.newest_id;
      json::array ids;
      for (const auto& [id, amounts] : in.grants) ids.emplace_back(id);
      i["grant_ids"] = std::move(ids);
      i["last_reply"] = in.last_reply ? json::value(GrantJson(*in.last_reply)) : json::value(nullptr);
      i["clone_logged"] = in.clone_logged;
      i["newer_file"] = in.newer_file;
      // Sized or empty matters (Records() lists an instance with an allowance).
      i["allowance"] = !in.floors.empty();
      i["handed"] = !in.handed.empty();
      instances.push_back(std::move(i));
    }
    o["instances"] = std::move(instances);
    brokers.push_back(std::move(o));
  }
  meta["brokers"] = std::move(brokers);

  json::array targets;
  for (std::size_t t = 0; t < nt; ++t) {
    json::object to;
    to["name"] = config_.targets[t].name;
    to["pool"] = config_.targets[t].pool;
    to["limit"] = config_.targets[t].limit;
    to["configured_pool"] = configured_pool_[t];
    json::array tb;
    for (const auto& b : brokers_) {
      json::object o;
      o["id"] = b.id;
      o["base"] = b.base[t];
      o["revoked"] = b.TargetRevoked(t);
      json::array instances;
      for (const auto& in : b.instances) {
        const TargetReportState& rep = in.reports[t];
        json::object i;
        i["epoch"] = in.epoch;
        i["instance"] = in.instance;
        i["pool_held"] = rep.pool_held;
        i["applied"] = rep.applied;
        i["held"] = rep.held;
        i["waiting"] = rep.waiting;
        i["wanted"] = rep.wanted;
        i["registered"] = rep.registered;
        i["system_slots"] = t < in.system_slots.size() ? in.system_slots[t] : 0;
        i["floors"] = t < in.floors.size() ? in.floors[t] : 0;
        i["handed"] = t < in.handed.size() ? in.handed[t] : 0;
        json::array amounts;
        for (const auto& [id, a] : in.grants) amounts.emplace_back(a[t]);
        i["grants"] = std::move(amounts);
        instances.push_back(std::move(i));
      }
      o["instances"] = std::move(instances);
      tb.push_back(std::move(o));
    }
    to["brokers"] = std::move(tb);
    targets.push_back(std::move(to));
  }
  json::object state;
  state["v"] = kStateVersion;
  state["meta"] = std::move(meta);
  state["targets"] = std::move(targets);
  return state;
}

Result<Ledger> Ledger::LoadState(LedgerConfig config, const json::object& state) {
  if (!config.liveness) {
    return Status{Errc::kInvalidArgument,
                  "Ledger::LoadState: the state has no time points; it needs liveness mode"};
  }
  const Reader r("ledger state");
  DSB_STATE_TRY(version, r.U64(state, "", "v"));
  if (version != kStateVersion) {
    return r.Error("v", "is " + std::to_string(version) + "; this broker reads version " +
                            std::to_string(kStateVersion));
  }
  DSB_STATE_TRY(meta, r.Obj(state, "", "meta"));
  DSB_STATE_TRY(targets, r.Arr(state, "", "targets"));
  const std::string m = "meta";

  // The config (pools and limits come from "targets").
  DSB_STATE_TRY(term, r.I64(*meta, m, "term_ns"));
  DSB_STATE_TRY(drain, r.I64(*meta, m, "drain_ns"));
  DSB_STATE_TRY(eps, r.Double(*meta, m, "eps"));
  DSB_STATE_TRY(generation, r.U64(*meta, m, "generation"));
  DSB_STATE_TRY(file_hash, r.Str(*meta, m, "file_hash"));
  DSB_STATE_TRY(names, r.Arr(*meta, m, "targets"));
  // Bounded so that (D + H)(1 + eps) cannot overflow (a cluster file allows
  // at most one hour each).
  constexpr std::int64_t kDay = std::chrono::duration_cast<Duration>(std::chrono::hours(24)).count();
  if (term > kDay) return r.Error("meta.term_ns", "is above one day");
  if (drain > kDay) return r.Error("meta.drain_ns", "is above one day");
  config.term = Duration(term);
  config.drain = Duration(drain);
  config.eps = eps;
  config.generation = generation;
  config.file_hash = std::move(file_hash);
  config.targets.clear();
  config.brokers.clear();
  if (names->size() != targets->size()) {
    return r.Error("targets", "has " + std::to_string(targets->size()) +
                                  " entries, meta.targets names " + std::to_string(names->size()));
  }
  const std::size_t nt = names->size();
  std::vector<const json::object*> tobjs;
  for (std::size_t t = 0; t < nt; ++t) {
    const std::string tp = Reader::Index("targets", t);
    if (!(*names)[t].is_string()) return r.Error(Reader::Index("meta.targets", t), "is not a string");
    DSB_STATE_TRY(to, r.ObjOf((*targets)[t], tp));
    DSB_STATE_TRY(name, r.Str(*to, tp, "name"));
    if (name != (*names)[t].get_string()) {
      return r.Error(Reader::Join(tp, "name"),
                     "is '" + name + "', meta.targets names '" +
                         std::string((*names)[t].get_string()) + "'");
    }
    DSB_STATE_TRY(pool, r.U32(*to, tp, "pool"));
    DSB_STATE_TRY(limit, r.U32(*to, tp, "limit"));
    config.targets.push_back({std::move(name), pool, limit});
    tobjs.push_back(to);
  }
  DSB_STATE_TRY(bconf, r.Arr(*meta, m, "brokers_config"));
  for (std::size_t i = 0; i < bconf->size(); ++i) {
    const std::string bp = Reader::Index("meta.brokers_config", i);
    DSB_STATE_TRY(bo, r.ObjOf((*bconf)[i], bp));
    DSB_STATE_TRY(id, r.Str(*bo, bp, "id"));
    DSB_STATE_TRY(weight, r.U32(*bo, bp, "weight"));
    DSB_STATE_TRY(system_slots, r.U32Array(*bo, bp, "system_slots"));
    DSB_STATE_TRY(floors, r.U32Array(*bo, bp, "floors"));
    config.brokers.push_back({std::move(id), weight, std::move(system_slots), std::move(floors)});
  }
  if (Status valid = Validate(config); !valid.ok()) {
    return Status{Errc::kConfig, "ledger state: the stored config is refused: " + valid.message()};
  }
  Ledger l(std::move(config), TimePoint{});
  l.learning_ = false;
  l.brokers_.clear();

  DSB_STATE_TRY(gate, r.Str(*meta, m, "gate"));
  if (gate == "open") {
    l.gate_ = Gate::kOpen;
  } else if (gate == "waiting") {
    l.gate_ = Gate::kWaiting;
  } else if (gate == "superseded") {
    l.gate_ = Gate::kSuperseded;
  } else {
    return r.Error("meta.gate", "is '" + gate + "', not open, waiting or superseded");
  }
  DSB_STATE_TRY(newer_generation, r.U64(*meta, m, "newer_generation"));
  DSB_STATE_TRY(successor, r.Str(*meta, m, "successor"));
  l.newer_generation_ = newer_generation;
  l.successor_ = std::move(successor);
  // The ceiling of SetPool/SetLimit: the pool the ledger's file gave. A pool
  // above it is a state no ledger writes (SetPool refuses it).
  for (std::size_t t = 0; t < nt; ++t) {
    const std::string tp = Reader::Index("targets", t);
    DSB_STATE_TRY(configured, r.U32(*tobjs[t], tp, "configured_pool"));
    if (l.config_.targets[t].pool > configured) {
      return r.Error(Reader::Join(tp, "pool"),
                     "is " + std::to_string(l.config_.targets[t].pool) +
                         ", above the configured pool " + std::to_string(configured));
    }
    l.configured_pool_[t] = configured;
  }

  DSB_STATE_TRY(brokers, r.Arr(*meta, m, "brokers"));
  // Per target, its "brokers" array parallel to meta.brokers.
  std::vector<const json::array*> tbrokers;
  for (std::size_t t = 0; t < nt; ++t) {
    const std::string tp = Reader::Index("targets", t);
    DSB_STATE_TRY(tb, r.Arr(*tobjs[t], tp, "brokers"));
    if (tb->size() != brokers->size()) {
      return r.Error(Reader::Join(tp, "brokers"),
                     "has " + std::to_string(tb->size()) + " entries, meta.brokers " +
                         std::to_string(brokers->size()));
    }
    tbrokers.push_back(tb);
  }
  for (std::size_t bi = 0; bi < brokers->size(); ++bi) {
    const std::string bp = Reader::Index("meta.brokers", bi);
    DSB_STATE_TRY(bo, r.ObjOf((*brokers)[bi], bp));
    BrokerState b;
    DSB_STATE_TRY(id, r.Str(*bo, bp, "id"));
    b.id = std::move(id);
    DSB_STATE_TRY(ci, r.Field(*bo, bp, "config_index"));
    if (!ci->is_null()) {
      DSB_STATE_TRY(index, r.U64Of(*ci, Reader::Join(bp, "config_index")));
      if (index >= l.config_.brokers.size() || l.config_.brokers[index].id != b.id) {
        return r.Error(Reader::Join(bp, "config_index"),
                       "does not name broker '" + b.id + "' in meta.brokers_config");
      }
      b.config_index = static_cast<std::size_t>(index);
    }
    DSB_STATE_TRY(mode, r.Str(*bo, bp, "mode"));
    if (mode == "active") {
      b.mode = BrokerMode::kActive;
    } else if (mode == "drained") {
      b.mode = BrokerMode::kDrained;
    } else if (mode == "revoked") {
      b.mode = BrokerMode::kRevoked;
    } else {
      return r.Error(Reader::Join(bp, "mode"), "is '" + mode + "', not active, drained or revoked");
    }
    DSB_STATE_TRY(max_epoch, r.U64(*bo, bp, "max_epoch"));
    b.max_epoch = max_epoch;
    DSB_STATE_TRY(instances, r.Arr(*bo, bp, "instances"));
    for (std::size_t ii = 0; ii < instances->size(); ++ii) {
      const std::string ip = Reader::Index(Reader::Join(bp, "instances"), ii);
      DSB_STATE_TRY(io, r.ObjOf((*instances)[ii], ip));
      Instance in;
      DSB_STATE_TRY(epoch, r.U64(*io, ip, "epoch"));
      DSB_STATE_TRY(instance, r.U64(*io, ip, "instance"));
      DSB_STATE_TRY(verdict, r.U64(*io, ip, "verdict"));
      if (verdict < 1 || verdict > 5) return r.Error(Reader::Join(ip, "verdict"), "is not 1..5");
      DSB_STATE_TRY(reason, r.Str(*io, ip, "reason"));
      DSB_STATE_TRY(goodbye, r.Bool(*io, ip, "goodbye"));
      DSB_STATE_TRY(has_newest, r.Bool(*io, ip, "has_newest"));
      DSB_STATE_TRY(newest_id, r.U64(*io, ip, "newest_id"));
      DSB_STATE_TRY(ids, r.Arr(*io, ip, "grant_ids"));
      DSB_STATE_TRY(last_reply, r.Field(*io, ip, "last_reply"));
      DSB_STATE_TRY(clone_logged, r.Bool(*io, ip, "clone_logged"));
      DSB_STATE_TRY(newer_file, r.Bool(*io, ip, "newer_file"));
      DSB_STATE_TRY(allowance, r.Bool(*io, ip, "allowance"));
      DSB_STATE_TRY(handed, r.Bool(*io, ip, "handed"));
      in.epoch = epoch;
      in.instance = instance;
      in.verdict = static_cast<Verdict>(verdict);
      in.reason = std::move(reason);
      in.goodbye = goodbye;
      in.has_newest = has_newest;
      in.newest_id = newest_id;
      in.clone_logged = clone_logged;
      in.newer_file = newer_file;
      if (!last_reply->is_null()) {
        const std::string lp = Reader::Join(ip, "last_reply");
        DSB_STATE_TRY(lo, r.ObjOf(*last_reply, lp));
        DSB_STATE_TRY(g, GrantOf(r, *lo, lp));
        in.last_reply = std::move(g);
      }
      std::vector<std::uint64_t> grant_ids;
      for (std::size_t k = 0; k < ids->size(); ++k) {
        DSB_STATE_TRY(gid, r.U64Of((*ids)[k], Reader::Index(Reader::Join(ip, "grant_ids"), k)));
        if (!grant_ids.empty() && gid <= grant_ids.back()) {
          return r.Error(Reader::Join(ip, "grant_ids"), "is not strictly increasing");
        }
        grant_ids.push_back(gid);
      }
      std::vector<std::vector<std::uint32_t>> amounts(grant_ids.size(),
                                                      std::vector<std::uint32_t>(nt, 0));
      in.reports.resize(nt);
      if (allowance) {
        in.system_slots.assign(nt, 0);
        in.floors.assign(nt, 0);
      }
      if (handed) in.handed.assign(nt, 0);
      // This instance's part of every target key.
      for (std::size_t t = 0; t < nt; ++t) {
        const std::string tbp = Reader::Index(Reader::Index("targets", t) + ".brokers", bi);
        DSB_STATE_TRY(tbo, r.ObjOf((*tbrokers[t])[bi], tbp));
        DSB_STATE_TRY(tins, r.Arr(*tbo, tbp, "instances"));
        if (tins->size() != instances->size()) {
          return r.Error(Reader::Join(tbp, "instances"),
                         "has " + std::to_string(tins->size()) + " entries, " + bp +
                             ".instances " + std::to_string(instances->size()));
        }
        const std::string tip = Reader::Index(Reader::Join(tbp, "instances"), ii);
        DSB_STATE_TRY(tio, r.ObjOf((*tins)[ii], tip));
        DSB_STATE_TRY(te, r.U64(*tio, tip, "epoch"));
        DSB_STATE_TRY(ti, r.U64(*tio, tip, "instance"));
        if (te != epoch || ti != instance) {
          return r.Error(tip, "names another instance than " + ip);
        }
        TargetReportState& rep = in.reports[t];
        DSB_STATE_TRY(pool_held, r.U32(*tio, tip, "pool_held"));
        DSB_STATE_TRY(applied, r.U64(*tio, tip, "applied"));
        DSB_STATE_TRY(held, r.U32(*tio, tip, "held"));
        DSB_STATE_TRY(waiting, r.U32(*tio, tip, "waiting"));
        DSB_STATE_TRY(wanted, r.U32(*tio, tip, "wanted"));
        DSB_STATE_TRY(registered, r.U32(*tio, tip, "registered"));
        rep = {pool_held, applied, held, waiting, wanted, registered};
        DSB_STATE_TRY(system_slots, r.U32(*tio, tip, "system_slots"));
        DSB_STATE_TRY(floors, r.U32(*tio, tip, "floors"));
        DSB_STATE_TRY(handed_t, r.U32(*tio, tip, "handed"));
        if (allowance) {
          in.system_slots[t] = system_slots;
          in.floors[t] = floors;
        }
        if (handed) in.handed[t] = handed_t;
        DSB_STATE_TRY(ga, r.U32Array(*tio, tip, "grants", grant_ids.size()));
        for (std::size_t k = 0; k < ga.size(); ++k) amounts[k][t] = ga[k];
      }
      for (std::size_t k = 0; k < grant_ids.size(); ++k) {
        in.grants[grant_ids[k]] = std::move(amounts[k]);
      }
      b.instances.push_back(std::move(in));
    }
    b.base.assign(nt, 0);
    for (std::size_t t = 0; t < nt; ++t) {
      const std::string tbp = Reader::Index(Reader::Index("targets", t) + ".brokers", bi);
      DSB_STATE_TRY(tbo, r.ObjOf((*tbrokers[t])[bi], tbp));
      DSB_STATE_TRY(tid, r.Str(*tbo, tbp, "id"));
      if (tid != b.id) {
        return r.Error(Reader::Join(tbp, "id"),
                       "is '" + tid + "', meta.brokers[" + std::to_string(bi) + "] is '" + b.id + "'");
      }
      DSB_STATE_TRY(base, r.U32(*tbo, tbp, "base"));
      DSB_STATE_TRY(revoked, r.Bool(*tbo, tbp, "revoked"));
      b.base[t] = base;
      if (revoked) {
        b.revoked_targets.resize(nt, false);
        b.revoked_targets[t] = true;
      }
    }
    l.brokers_.push_back(std::move(b));
  }
  // The constructor's invariant: the file's brokers first, in file order,
  // then those not in the file; each id once.
  std::set<std::string> ids;
  for (std::size_t i = 0; i < l.brokers_.size(); ++i) {
    const bool in_file = i < l.config_.brokers.size();
    if (l.brokers_[i].config_index != (in_file ? std::optional<std::size_t>(i) : std::nullopt) ||
        !ids.insert(l.brokers_[i].id).second) {
      return r.Error(Reader::Index("meta.brokers", i),
                     "is out of order: the file's brokers come first, in meta.brokers_config's "
                     "order, then the others, each once");
    }
  }
  if (l.brokers_.size() < l.config_.brokers.size()) {
    return r.Error("meta.brokers", "has no entry for broker '" +
                                       l.config_.brokers[l.brokers_.size()].id +
                                       "' of meta.brokers_config");
  }
  return l;
}

#undef DSB_STATE_TRY

}  // namespace dsb::lease
