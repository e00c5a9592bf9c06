#include "broker/cluster_admin.h"

#include <map>
#include <vector>

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "broker/asio_helpers.h"
#include "broker/secure_fs.h"
#include "broker/state_file.h"
#include "broker/wire/channel.h"
#include "common/escape.h"
#include "common/local_protocol.h"

namespace dsb::broker {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using Clock = std::chrono::steady_clock;
namespace lp = local_protocol;

namespace {

// Sends `message` and waits up to `timeout` for the answer. Failure: the
// send's (the channel is then closed), or Receive's.
awaitable<Result<wire::Message>> SendAndReceive(wire::Channel& channel, wire::Message message,
                                                Clock::duration timeout) {
  if (Status s = co_await channel.Send(std::move(message)); !s.ok()) co_return s;
  co_return co_await channel.Receive(timeout);
}

json::value OptMs(const std::optional<lease::Duration>& d) {
  return d ? json::value(Ms(*d)) : json::value(nullptr);
}

}  // namespace

json::object SnapshotJson(const lease::LedgerSnapshot& s) {
  json::array targets;
  for (const auto& t : s.targets) {
    json::array brokers;
    for (const auto& b : t.brokers) {
      brokers.push_back(json::object{{"broker", b.broker_id},
                                     {"weight", b.weight},
                                     {"mode", lease::BrokerModeName(b.mode)},
                                     {"known", b.known},
                                     {"epoch", std::to_string(b.epoch)},
                                     {"owed", b.owed},
                                     {"granted", b.granted},
                                     {"pool_held", b.pool_held},
                                     {"held", b.held},
                                     {"waiting", b.waiting},
                                     {"wanted", b.wanted},
                                     {"lease_left_ms", OptMs(b.lease_left)},
                                     {"last_seen_ms", OptMs(b.last_seen_ago)},
                                     {"silence_left_ms", OptMs(b.silence_left)},
                                     {"verdict", lease::VerdictName(b.verdict)},
                                     {"instances", b.instances},
                                     {"counted", b.counted},
                                     {"in_file", b.in_file}});
    }
    targets.push_back(json::object{{"target", t.target},
                                   {"limit", t.limit},
                                   {"pool", t.pool},
                                   {"owed_total", t.owed_total},
                                   {"free", t.free},
                                   {"brokers", std::move(brokers)}});
  }
  return json::object{{"gate", lease::GateName(s.gate)},
                      {"generation", std::to_string(s.generation)},
                      {"learning", s.learning},
                      {"learning_left_ms", Ms(s.learning_left)},
                      {"term_ms", Ms(s.term)},
                      {"drain_ms", Ms(s.drain)},
                      {"silence_ms", Ms(s.silence)},
                      {"targets", std::move(targets)}};
}

CoordinatorAdmin::CoordinatorAdmin(const config::BrokerConfig& cfg, lease::Ledger& ledger,
                                   LimitKeeper& limits, std::set<std::string>& hello_waiting,
                                   std::function<void(const std::string&)> notify,
                                   std::optional<std::filesystem::path> modes_file)
    : cfg_(cfg),
      ledger_(ledger),
      limits_(limits),
      hello_waiting_(hello_waiting),
      notify_(std::move(notify)),
      modes_file_(std::move(modes_file)) {}

namespace {

// "a, b, c": the known names, for an error about an unknown one.
template <typename Range, typename Name>
std::string KnownNames(const Range& items, Name name) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + name(i);
  return out;
}

}  // namespace

namespace steer_words {

std::string Undrained() {
  return "undrained (active again: it gets its share of the pool at its next renew)";
}

std::string Drained(const std::string& until_renew) {
  return "drained (its later grants are 0; its clients are asked to yield as its capacity "
         "shrinks; what it is owed falls as it reports less held, or by its silence" +
         until_renew + ")";
}

std::string ForceRevoked() {
  return "force-revoked: what it was owed is forgotten at once (the operator confirmed the "
         "workstation is dead; if it still holds sessions, the account may go over the "
         "server's limit until they end)";
}

std::string RevokedTarget(const std::string& target, const std::string& until_renew) {
  return "revoked for target " + target + " (its later grants there are 0; owed falls as it "
         "reports less held, or by its silence" + until_renew + ")";
}

std::string Revoked(const std::string& until_renew) {
  return "revoked (its later grants are 0; owed falls as it reports less held, or by its "
         "silence" + until_renew + ")";
}

std::optional<json::object> RefuseForcedRevoke(const std::string& where, const std::string& id,
                                               const std::string& target, bool confirm_dead) {
  if (!target.empty()) {
    return lp::ErrorReply(Errc::kInvalidArgument,
                          where + "a forced revoke is for the whole broker: drop --target");
  }
  if (!confirm_dead) {
    return lp::ErrorReply(
        Errc::kInvalidArgument,
        where + "a forced revoke forgets at once what broker " + id + " is owed, so the "
                "other brokers may be granted its share now. If that workstation still holds "
                "sessions, the account may go over the server's limit until they end. Use it "
                "only for a workstation known to be dead (powered off, its dsb-broker "
                "stopped), and say so with --confirm-dead; otherwise revoke without force "
                "(owed then falls as the broker reports, or after its silence)");
  }
  return std::nullopt;
}

}  // namespace steer_words

json::object CoordinatorAdmin::Steer(std::string_view op, const json::object& o,
                                     const std::string& peer) {
  const std::string where = std::string(op) + ": ";
  const json::value* bv = o.if_contains(lp::req::kBroker);
  if (bv == nullptr || !bv->is_string()) {
    return lp::ErrorReply(Errc::kInvalidArgument, where + "needs a string 'broker'");
  }
  if (Status s = lp::CheckBrokerId(std::string_view(bv->as_string())); !s.ok()) {
    return lp::ErrorReply(s.code(), where + "'broker': " + s.message());
  }
  const std::string id(bv->as_string());
  const std::string known_brokers = KnownNames(
      cfg_.cluster->brokers, [](const config::ClusterBroker& b) { return b.id; });
  // A broker removed from the file but still counted (R2: until its erased
  // report, or an operator's word that it is dead) can only be forgotten.
  const bool removed = !ledger_.FindBroker(id) && ledger_.Knows(id);
  if (!ledger_.FindBroker(id) && !removed) {
    return lp::ErrorReply(Errc::kInvalidArgument,
                          where + "no broker '" + EscapeText(id, 128) +
                              "' in the cluster file (known: " + known_brokers + ")");
  }
  std::string target;
  bool force = false;
  bool confirm_dead = false;
  if (const json::value* tv = o.if_contains(lp::req::kTarget)) {
    if (!tv->is_string()) return lp::ErrorReply(Errc::kInvalidArgument, where + "'target' must be a string");
    target = std::string(tv->as_string());
    const bool found = std::any_of(cfg_.targets.begin(), cfg_.targets.end(),
                                   [&](const auto& t) { return t.name == target; });
    if (!found) {
      return lp::ErrorReply(
          Errc::kUnknownTarget,
          where + "the cluster has no target '" + EscapeText(target, 128) + "' (known: " +
              KnownNames(cfg_.targets, [](const auto& t) { return t.name; }) + ")");
    }
  }
  if (const json::value* fv = o.if_contains(lp::req::kForce); fv != nullptr && fv->is_bool()) {
    force = fv->as_bool();
  }
  if (const json::value* cv = o.if_contains(lp::req::kConfirmDead); cv != nullptr && cv->is_bool()) {
    confirm_dead = cv->as_bool();
  }
  std::string who = "an operator";
  if (const json::value* wv = o.if_contains(kWho); wv != nullptr && wv->is_string()) {
    who = EscapeText(wv->as_string(), 200);
  }
  who += " via broker " + peer;

  const auto now = Clock::now();
  if (removed && !(op == lp::OpWireName(lp::Op::kRevoke) && force && confirm_dead &&
                   target.empty())) {
    return lp::ErrorReply(
        Errc::kInvalidArgument,
        where + "broker " + id + " is not in the cluster file (removed): it is granted nothing "
                "already, but the coordinator still counts its last accepted allowance "
                "(system_slots + floor) until it reports that it erased it. If that workstation "
                "is dead (powered off, its dsb-broker stopped), `dsbctl revoke " + id +
                " --force --confirm-dead` forgets it");
  }
  if (removed) {
    if (Status s = ledger_.ForceRevoke(id, now); !s.ok()) {
      return lp::ErrorReply(s.code(), where + s.message());
    }
    steering_.erase(id);
    const std::string what =
        "forgotten: it was removed from the cluster file and the operator confirmed its "
        "workstation dead, so its allowance (system_slots + floor) and what it was owed leave "
        "the count at once (if it still holds sessions, the account may go over the server's "
        "limit until they end)";
    spdlog::warn("{}: broker {} {}", who, id, what);
    const std::string persist_error = PersistModesSaying(id);
    json::object reply{{"ok", true},           {"broker", id},
                       {"op", op},             {"coordinator", cfg_.id},
                       {"persisted", persist_error.empty()}, {"message", "broker " + id + " " + what},
                       {"targets", json::array{}}};
    if (!persist_error.empty()) reply["persist_error"] = persist_error;
    return reply;
  }
  Steering& st = steering_[id];
  Status done = Status::Ok();
  std::string what;
  // GRANTED in the reply is the grant sent last: it stays the broker's until
  // the next one, which the notice asks for at once (an older broker: at its
  // next regular renew). Said, so "0" and "GRANTED 4" do not read as a lie.
  const std::string until_renew =
      "; the grant it holds now (GRANTED) stays until its next renew: at once if it takes the "
      "revoke notice (this release), else at its next regular renew";
  if (op == lp::OpWireName(lp::Op::kUndrain)) {
    bool steered = false;
    const lease::LedgerSnapshot before = ledger_.Snapshot(now);
    for (const auto& t : before.targets) {
      for (const auto& b : t.brokers) {
        steered = steered || (b.broker_id == id && b.mode != lease::BrokerMode::kActive);
      }
    }
    if (!steered) {
      // Nothing to undo: said as such (not "undrained"), nothing written.
      return json::object{{"ok", true},
                          {"broker", id},
                          {"op", op},
                          {"coordinator", cfg_.id},
                          {"persisted", true},
                          {"changed", false},
                          {"message", "broker " + id + " was not drained or revoked: nothing "
                                      "to undo (it is active)"},
                          {"targets", json::array{}}};
    }
    done = ledger_.Resume(id, now);
    if (done.ok()) st = Steering{};
    what = steer_words::Undrained();
  } else if (op == lp::OpWireName(lp::Op::kDrain)) {
    done = ledger_.Drain(id, now);
    if (done.ok()) st.mode = lease::BrokerMode::kDrained;
    what = steer_words::Drained(until_renew);
  } else if (force) {
    if (auto refused = steer_words::RefuseForcedRevoke(where, id, target, confirm_dead)) {
      return *refused;
    }
    done = ledger_.ForceRevoke(id, now);
    if (done.ok()) st = Steering{lease::BrokerMode::kRevoked, {}};
    what = steer_words::ForceRevoked();
  } else if (!target.empty()) {
    done = ledger_.RevokeTarget(id, target, now);
    if (done.ok()) st.revoked_targets.insert(target);
    what = steer_words::RevokedTarget(target, until_renew);
  } else {
    done = ledger_.Revoke(id, now);
    if (done.ok()) st.mode = lease::BrokerMode::kRevoked;
    what = steer_words::Revoked(until_renew);
  }
  if (!done.ok()) return lp::ErrorReply(done.code(), where + done.message());
  spdlog::warn("{}: broker {} {}", who, id, what);
  const std::string persist_error = PersistModesSaying(id);
  if (notify_) notify_(id);
  json::object reply{{"ok", true},
                     {"broker", id},
                     {"op", op},
                     {"coordinator", cfg_.id},
                     {"persisted", persist_error.empty()},
                     {"message", "broker " + id + " " + what}};
  if (!persist_error.empty()) reply["persist_error"] = persist_error;
  const lease::LedgerSnapshot snap = ledger_.Snapshot(now);
  json::array targets;
  for (const auto& t : snap.targets) {
    for (const auto& b : t.brokers) {
      if (b.broker_id != id) continue;
      targets.push_back(json::object{{"target", t.target},
                                     {"mode", lease::BrokerModeName(b.mode)},
                                     {"owed", b.owed},
                                     {"granted", b.granted}});
    }
  }
  reply["targets"] = std::move(targets);
  return reply;
}

std::string CoordinatorAdmin::PersistModesSaying(const std::string& broker) const {
  Status p = PersistModes();
  if (p.ok()) return {};
  // Applied in memory, not on disk: the file still holds the state before
  // this change, and a coordinator restart reads that.
  const std::string text =
      "the change to broker " + broker + " applies now but could not be written (" +
      p.message() + "): a restart of coordinator " + cfg_.id + " would start from the " +
      "revoke/drain state " + (modes_file_ ? modes_file_->string() : std::string("the file")) +
      " held before it; make that file writable and repeat the command";
  spdlog::error("{}", text);
  return text;
}

Status CoordinatorAdmin::PersistModes() const {
  if (!modes_file_) return Status::Ok();
  json::object brokers;
  for (const auto& [id, st] : steering_) {
    if (st.mode == lease::BrokerMode::kActive && st.revoked_targets.empty()) continue;
    json::array ts;
    for (const auto& t : st.revoked_targets) ts.push_back(json::string(t));
    brokers[id] = json::object{{"mode", lease::BrokerModeName(st.mode)},
                               {"revoked_targets", std::move(ts)}};
  }
  return WriteFileSynced(*modes_file_, json::serialize(json::object{{"brokers", brokers}}) + "\n");
}

namespace {

// One broker's entry in <state_dir>/<id>.modes.
struct ModeRecord {
  lease::BrokerMode mode = lease::BrokerMode::kActive;
  std::vector<std::string> revoked_targets;
};

// Reads what PersistModes writes: {"brokers":{id:{"mode":"drained"|
// "revoked"|"active","revoked_targets":[names]}}}. Success: the entries by
// broker id (none for a missing file). Failure: kConfig naming the file,
// what is wrong and what to do. A damaged file refuses the start: guessing
// would silently end an operator's drain or revoke (that broker would be
// granted again), and a restart cannot mend the file.
Result<std::map<std::string, ModeRecord>> ReadModesFile(const std::filesystem::path& path) {
  const std::string file = path.string();
  const std::string fix =
      ": fix it or remove it (removing it makes every broker active again; drain or revoke "
      "them again with dsbctl after the start)";
  auto text = ReadFileNoFollow(path, 1 << 20);
  if (!text.ok()) return Status{Errc::kConfig, "revoke/drain file " + text.status().message() + fix};
  std::map<std::string, ModeRecord> out;
  if (!text->has_value()) return out;
  boost::system::error_code ec;
  json::value v = json::parse(**text, ec);
  const json::value* bs = !ec && v.is_object() ? v.as_object().if_contains("brokers") : nullptr;
  if (bs == nullptr || !bs->is_object()) {
    return Status{Errc::kConfig, "revoke/drain file " + file +
                                     " is damaged (not the JSON this broker writes)" + fix};
  }
  for (const auto& kv : bs->as_object()) {
    const std::string id = EscapeText(kv.key(), 128);
    const json::object* o = kv.value().if_object();
    const json::value* mv = o != nullptr ? o->if_contains("mode") : nullptr;
    ModeRecord r;
    bool known_mode = false;
    for (auto m : {lease::BrokerMode::kActive, lease::BrokerMode::kDrained,
                   lease::BrokerMode::kRevoked}) {
      if (mv != nullptr && mv->is_string() && mv->as_string() == lease::BrokerModeName(m)) {
        r.mode = m;
        known_mode = true;
      }
    }
    if (!known_mode) {
      return Status{Errc::kConfig, "revoke/drain file " + file + ": broker '" + id +
                                       "' has no mode (active, drained or revoked)" + fix};
    }
    if (const json::value* tv = o->if_contains("revoked_targets"); tv != nullptr) {
      const json::array* ts = tv->if_array();
      for (std::size_t i = 0; ts != nullptr && i < ts->size(); ++i) {
        if (!(*ts)[i].is_string()) ts = nullptr;
      }
      if (ts == nullptr) {
        return Status{Errc::kConfig, "revoke/drain file " + file + ": broker '" + id +
                                         "': revoked_targets is not a list of names" + fix};
      }
      for (const json::value& t : *ts) r.revoked_targets.emplace_back(t.as_string());
    }
    out[std::string(kv.key())] = std::move(r);
  }
  return out;
}

}  // namespace

Status CheckModesFile(const std::filesystem::path& file) {
  auto modes = ReadModesFile(file);
  return modes.ok() ? Status::Ok() : modes.status();
}

Status CoordinatorAdmin::RestoreModes() {
  if (!modes_file_) return Status::Ok();
  auto modes = ReadModesFile(*modes_file_);
  if (!modes.ok()) return modes.status();
  const std::string file = modes_file_->string();
  const auto now = Clock::now();
  for (const auto& [id, rec] : *modes) {
    if (!ledger_.FindBroker(id)) {
      spdlog::warn("{}: broker {} is no longer in the cluster file: its revoke/drain is dropped",
                   file, EscapeText(id, 128));
      continue;
    }
    Steering st;
    Status s = Status::Ok();
    if (rec.mode == lease::BrokerMode::kDrained) {
      st.mode = lease::BrokerMode::kDrained;
      s = ledger_.Drain(id, now);
    } else if (rec.mode == lease::BrokerMode::kRevoked) {
      st.mode = lease::BrokerMode::kRevoked;
      s = ledger_.Revoke(id, now);
    }
    for (const std::string& name : rec.revoked_targets) {
      if (!s.ok()) break;
      if (Status r = ledger_.RevokeTarget(id, name, now); r.ok()) {
        st.revoked_targets.insert(name);
      } else {
        spdlog::warn("{}: broker {}: {} (dropped)", file, id, r.message());
      }
    }
    if (!s.ok()) return Status{Errc::kConfig, file + ": broker " + id + ": " + s.message()};
    spdlog::warn("coordinator {}: broker {} stays {}{} (set by an operator before this start; "
                 "`dsbctl undrain {}` ends it)",
                 cfg_.id, id, lease::BrokerModeName(st.mode),
                 st.revoked_targets.empty() ? "" : " (revoked targets: " +
                     KnownNames(st.revoked_targets, [](const std::string& t) { return t; }) + ")",
                 id);
    steering_[id] = std::move(st);
  }
  return Status::Ok();
}

json::object CoordinatorAdmin::LimitsJson(std::string_view broker) const {
  json::array ts;
  const auto& ledger_targets = ledger_.config().targets;
  for (std::size_t i = 0; i < cfg_.targets.size(); ++i) {
    json::object o = limits_.Json(i);
    o["target"] = cfg_.targets[i].name;
    if (!broker.empty()) {
      for (std::size_t t = 0; t < ledger_targets.size(); ++t) {
        if (ledger_targets[t].name != cfg_.targets[i].name) continue;
        o["broker_mode"] = lease::BrokerModeName(ledger_.ModeOf(broker, t));
      }
    }
    ts.push_back(std::move(o));
  }
  return json::object{{"ok", true}, {"coordinator", cfg_.id}, {"targets", std::move(ts)}};
}

json::object CoordinatorAdmin::SetLimit(std::size_t index, std::uint32_t value,
                                        const std::string& who) {
  if (index >= cfg_.targets.size()) {
    return local_protocol::ErrorReply(Errc::kUnknownTarget, "no such target");
  }
  if (Status st = limits_.SetOperatorLimit(index, value, who); !st.ok()) {
    return json::object{{"ok", false},
                        {"error", ErrcName(st.code())},
                        {"message", "target " + cfg_.targets[index].name + ": " + st.message()}};
  }
  json::object o = limits_.Json(index);
  o["ok"] = true;
  o["target"] = cfg_.targets[index].name;
  o["coordinator"] = cfg_.id;
  return o;
}

json::object CoordinatorAdmin::Handle(const std::string& text, const std::string& peer) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  const json::value* opv = !ec && v.is_object() ? v.as_object().if_contains(lp::req::kOp)
                                                 : nullptr;
  if (opv == nullptr || !opv->is_string()) {
    return local_protocol::ErrorReply(Errc::kProtocol, "bad admin request");
  }
  // The coordinator's admin ops: the local protocol's leases, confirm_stopped
  // and set_limit (same names and fields), and its own "limits".
  const std::string_view op(opv->as_string());
  if (op == kLimitsOp) return LimitsJson(peer);
  const std::optional<lp::Op> known = lp::OpNamed(op);
  if (known == lp::Op::kLeases) {
    return json::object{{"ok", true},
                        {"coordinator", cfg_.id},
                        {"ledger", SnapshotJson(ledger_.Snapshot(Clock::now()))}};
  }
  if (known == lp::Op::kConfirmStopped) {
    // R3: an operator says a broker of the file runs no coordinator (its
    // machine is gone). Wrong, it breaks S: dsbctl says so and asks first.
    // The same checks as the local parser's (local_protocol::CheckBrokerId).
    const json::value* bv = v.as_object().if_contains(lp::req::kBroker);
    if (bv == nullptr || !bv->is_string()) {
      return local_protocol::ErrorReply(Errc::kInvalidArgument,
                                        "confirm_stopped needs a string 'broker'");
    }
    if (Status s = local_protocol::CheckBrokerId(std::string_view(bv->as_string())); !s.ok()) {
      return local_protocol::ErrorReply(s.code(), "confirm_stopped: " + s.message());
    }
    const std::string id(bv->as_string());
    const bool was_waiting = hello_waiting_.erase(id) > 0;
    spdlog::warn("operator (via broker {}) confirmed that broker {} runs no coordinator{}", peer,
                 id, was_waiting ? "" : " (it was not awaited)");
    return json::object{{"ok", true}, {"broker", id}, {"was_awaited", was_waiting},
                        {"gate", lease::GateName(ledger_.gate())}};
  }
  if (known == lp::Op::kRevoke || known == lp::Op::kDrain || known == lp::Op::kUndrain) {
    return Steer(op, v.as_object(), peer);
  }
  if (known == lp::Op::kSetLimit) {
    const json::object& o = v.as_object();
    const json::value* tv = o.if_contains(lp::req::kTarget);
    const json::value* lv = o.if_contains(lp::req::kLimit);
    const json::value* wv = o.if_contains(kWho);
    if (tv == nullptr || !tv->is_string() || lv == nullptr || !lv->is_int64()) {
      return local_protocol::ErrorReply(Errc::kInvalidArgument,
                                        "set_limit needs a string 'target' and an integer "
                                        "'limit'");
    }
    // The same range as the local parser's (local_protocol::CheckLimit).
    if (Status s = local_protocol::CheckLimit(lv->as_int64()); !s.ok()) {
      return local_protocol::ErrorReply(s.code(), "set_limit: " + s.message());
    }
    std::optional<std::size_t> t;
    for (std::size_t i = 0; i < cfg_.targets.size(); ++i) {
      if (cfg_.targets[i].name == tv->as_string()) t = i;
    }
    if (!t) {
      return local_protocol::ErrorReply(Errc::kUnknownTarget, "the cluster has no such target");
    }
    std::string who = "via broker " + peer;
    if (wv != nullptr && wv->is_string()) {
      who = std::string(wv->as_string().subview(0, std::min<std::size_t>(wv->as_string().size(), 64))) +
            ", " + who;
    }
    return SetLimit(*t, static_cast<std::uint32_t>(lv->as_int64()), who);
  }
  return local_protocol::ErrorReply(Errc::kProtocol, "unknown admin op");
}

awaitable<json::object> AskCoordinator(asio::any_io_executor executor, std::string coordinator_id,
                                       config::HostPort where, const wire::Credentials& creds,
                                       std::string request, std::chrono::milliseconds timeout) {
  const std::string cid = std::move(coordinator_id);
  auto ch = co_await wire::Channel::Connect(executor, where.host, where.port, creds, timeout);
  if (!ch.ok()) {
    co_return json::object{{"ok", false},
                           {"error", ErrcName(ch.status().code())},
                           {"message", "cannot reach coordinator " + cid + ": " +
                                           ch.status().message()}};
  }
  // A named message, no temporary in the co_await expression (GCC 12 may
  // destroy such a temporary twice).
  wire::Message m = wire::AdminRequest{std::move(request)};
  Result<wire::Message> reply = co_await SendAndReceive(*ch, std::move(m), timeout);
  ch->Close();
  if (reply.ok()) {
    if (auto* a = std::get_if<wire::AdminReply>(&*reply)) {
      boost::system::error_code ec;
      json::value v = json::parse(a->json, ec);
      if (!ec && v.is_object()) co_return v.as_object();
    }
  }
  co_return local_protocol::ErrorReply(
      Errc::kProtocol, "coordinator " + cid + " gave no answer: " +
                           (reply.ok() ? std::string("unexpected reply")
                                       : reply.status().message()));
}

}  // namespace dsb::broker
