#include <spdlog/spdlog.h>

#include <vector>

#include "broker/admin_rights.h"
#include "broker/broker_impl.h"
#include "broker/config/quote.h"
#include "common/escape.h"
#include "common/local_protocol.h"
#include "common/limited_log.h"

// The admin requests of the local socket: status, clients, leases, set_limit,
// and clients' session-limit refusal reports (limit discovery).
namespace dsb::broker {

json::object Broker::Impl::HandleRefusal(Session& s, const LocalRequest& req) {
  if (!s.record()) return ErrorReply(Errc::kNotRegistered, "register first");
  Target& t = *targets.at(s.record()->target);
  t.CountSessionLimitReport();
  // What dsb held for the account at this instant: every slot the server may
  // count (held, cooling, quarantined), less the refused attempt if the client
  // still holds its permit (it names the slot; checked against the table).
  const shm::Counts c = t.Counts();
  std::uint32_t held = c.held_action + c.held_system + c.quarantined + c.cooling;
  if (req.slot && req.word) {
    const std::uint32_t index = *req.slot;
    const std::uint64_t w = *req.word;
    // Retiring or not: a slot an earlier shrink asked back is still held.
    if (shm::OwnerOf(w) == s.record()->owner && t.HeldBy(index, w) && held > 0) {
      --held;
      // If capacity shrinks now, this slot is the one to leave the table:
      // its session was refused, so nobody loses one, and it will not be
      // handed to the next waiter only to be refused again.
      if (t.config().discover) t.RetireFirst(index, w);
    }
  } else if (held > 0) {
    // An older client names no slot. It is told to report while it still
    // holds the refused attempt's permit: if it holds an action slot, leave
    // one out (at worst discovery settles one below the cap: safe).
    const auto holdings = t.HoldingsByOwner();
    if (auto h = holdings.find(s.record()->owner); h != holdings.end() && h->second.action > 0) {
      --held;
    }
  }
  std::string who = "client pid " + std::to_string(s.peer_pid()) + " (" +
                    EscapeText(s.record()->name) + ")";
  // The name and detail were escaped when parsed (local_request.h); escaping
  // again is a no-op that keeps this line safe should that ever change.
  if (!req.detail.empty()) who += " [" + EscapeText(req.detail, 200) + "]";
  const std::size_t index = IndexOf(t);
  if (limits) {
    limits->OnRefusal(index, held, 1, who);
    if (t.config().discover) HoldAfterRefusal(index, held);
  } else if (cluster) {
    // The coordinator decides; what this broker held is its part of the count
    // (in cluster mode registrations are not in the table: count system_slots).
    const auto system_slots = static_cast<std::uint32_t>(config.self().system_slots);
    cluster->ReportRefusal(index, held + system_slots, who);
    // Admit no more actions here until the coordinator's next grant: the
    // server is full now (actions held, less the refused attempt).
    if (t.config().discover) HoldAfterRefusal(index, held - std::min(held, c.held_system));
  }
  t.ClearRetireFirst();
  json::object reply = local_protocol::OkReply();
  reply[local_protocol::rep::kHeld] = held;
  return reply;
}

json::object Broker::Impl::StatusReply() {
  json::array ts;
  const auto now = Clock::now();
  for (auto& [n, t] : targets) {
    const shm::Counts c = t->Counts();
    json::object o{{"name", n},
                   {"limit", t->config().limit},
                   {"reserve", t->config().reserve},
                   {"capacity", t->capacity()},
                   {"held", c.held_action + c.held_system},
                   {"held_action", c.held_action},
                   {"held_system", c.held_system},
                   {"free", c.free},
                   {"waiting", c.waiters},
                   {"quarantined", c.quarantined},
                   {"cooling", c.cooling},
                   {"release_cooldown_ms",
                    std::chrono::ceil<std::chrono::milliseconds>(t->config().release_cooldown)
                        .count()},
                   {"retiring", c.retiring},
                   {"clients", RegisteredOn(n)},
                   {"pending_adoption", t->pending_owners().size()},
                   {"slots", t->slot_count()},
                   {"segment", t->segment_name()},
                   {"revocation_generation", t->revocation_generation()},
                   {"session_limit_reports", t->session_limit_reports()},
                   {"slots_reclaimed", t->slots_reclaimed()},
                   {"quarantine_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                         t->config().quarantine)
                                         .count()}};
    // What the periodic segment audit found and repaired (issue 9).
    const Target::AuditCounters& a = t->audit_counters();
    o["audit"] = json::object{{"runs", a.runs},
                              {"excess_enabled", a.excess_enabled},
                              {"lost_capacity", a.lost_capacity},
                              {"forged_owners", a.forged_owners},
                              {"forged_waiters", a.forged_waiters},
                              {"stray_quarantine", a.stray_quarantine},
                              {"quarantine_cleared", a.quarantine_cleared},
                              {"future_cooling", a.future_cooling},
                              {"invalid_words", a.invalid_words},
                              {"header_fields", a.header_fields},
                              {"queue_repairs", a.queue_repairs}};
    if (limits) {
      for (const auto& kv : limits->Json(IndexOf(*t))) o[kv.key()] = kv.value();
    }
    // When the last quarantined slot comes back (ms from now, rounded up).
    const Clock::time_point last = t->last_quarantine_end();
    o["quarantine_left_ms"] =
        last == Clock::time_point::min()
            ? json::value(nullptr)
            : json::value(std::chrono::ceil<std::chrono::milliseconds>(
                              std::max(Clock::duration::zero(), last - now))
                              .count());
    ts.push_back(std::move(o));
  }
  return json::object{{"ok", true},
                      {"broker", config.id},
                      {"pid", CurrentProcessId()},
                      {"mode", config.cluster_mode() ? "cluster" : "single"},
                      {"uptime_ms", AgoMs(started, now)},
                      {"adoption_grace", in_grace},
                      {"targets", std::move(ts)},
                      {"lease", cluster ? json::value(cluster->AgentView()) : json::value(nullptr)}};
}

json::object Broker::Impl::Clients() {
  json::array cs;
  const auto now = Clock::now();
  for (auto& [key, rec] : clients) {
    const std::uint32_t owner = rec.owner;
    const auto holdings = targets.at(rec.target)->HoldingsByOwner();
    auto h = holdings.find(owner);
    cs.push_back(json::object{
        {"owner", owner},
        {"target", rec.target},
        {"pid", rec.pid},
        {"uid", rec.uid},
        {"name", rec.name},
        {"held_action", h != holdings.end() ? h->second.action : 0},
        {"held_system", h != holdings.end() ? h->second.system : 0},
        {"connected_ms", AgoMs(rec.since, now)},
        {"adopted", rec.adopted}});
  }
  json::array pending;
  for (auto& [n, t] : targets) {
    for (std::uint32_t o : t->pending_owners()) {
      pending.push_back(json::object{{"owner", o}, {"target", n}});
    }
  }
  return json::object{{"ok", true}, {"clients", std::move(cs)}, {"pending", std::move(pending)}};
}

awaitable<json::object> Broker::Impl::StatusAsync() {
  json::object reply = StatusReply();
  if (cluster) {
    // The coordinator keeps the effective limits: ask it (or our own ledger).
    const json::object limits_reply = co_await cluster->Limits();
    MergeClusterLimits(reply, limits_reply);
  }
  co_return reply;
}

void Broker::Impl::MergeClusterLimits(json::object& reply, const json::object& limits_reply) {
  const json::value* list = limits_reply.if_contains("targets");
  json::array& ts = reply["targets"].as_array();
  if (list != nullptr && list->is_array()) {
    for (json::value& tv : ts) {
      json::object& o = tv.as_object();
      for (const json::value& lv : list->as_array()) {
        if (!lv.is_object()) continue;
        const json::object& lo = lv.as_object();
        const json::value* name = lo.if_contains("target");
        if (name == nullptr || *name != o["name"]) continue;
        for (const auto& kv : lo) {
          if (kv.key() != "target") o[kv.key()] = kv.value();
        }
      }
    }
  } else {
    // The configured limit is shown, but it is only the ceiling: say the
    // effective one is unknown here.
    for (json::value& tv : ts) tv.as_object()["limit_source"] = "unknown";
    const json::value* message = limits_reply.if_contains("message");
    reply["limit_error"] = message != nullptr ? *message : json::value("no answer");
  }
}

std::optional<json::object> Broker::Impl::RefuseUnlessAdmin(const LocalRequest& req,
                                                            const PeerCredentials& peer) const {
  // Changes reach every DigiScope instance of the machine (or the cluster):
  // group members may read; root, the broker's own user and members of
  // broker.admin_group may change (admin_rights.h).
  const char* op = LocalOpName(req.op);
  // The account name is an NSS lookup (LDAP, sssd: it may block this thread):
  // not for a refusal, which any reader may repeat at will, unless its log
  // line is written (at most 5 per uid per 30 s). The peer knows its name.
  const std::string bare =
      "uid " + AccountText(peer.uid) + ", pid " + std::to_string(peer.pid);
  Result<AdminReason> right = CheckAdminRight(op, peer, bare, CurrentAccount(), config.admin_group);
  if (!right.ok()) {
    const LogLimiter::Admission line =
        AdmitLimitedLine("admin-refused", "uid " + AccountText(peer.uid));
    if (line.emit) {
      spdlog::warn("refused {} from {}: {}{}", op, DescribePeer(peer.uid, peer.pid),
                   right.status().message(), SuppressedSuffix(line));
    }
    return ErrorReply(Errc::kPermissionDenied, right.status().message());
  }
  // Who asked and for what, before the change is made (one line; the handler
  // logs only what changed, the coordinator logs the change with who).
  std::string what;
  switch (req.op) {
    case LocalOp::kSetLimit:
      what = ": target " + config::Printable(req.target, 128) + " to " + std::to_string(req.limit);
      break;
    case LocalOp::kRevoke:
    case LocalOp::kDrain:
    case LocalOp::kUndrain:
      what = ": broker " + config::Printable(req.broker, 128) +
             (req.target.empty() ? "" : ", target " + config::Printable(req.target, 128)) +
             (req.force ? ", forced" : "") + (req.confirm_dead ? ", confirmed dead" : "") +
             (cluster ? " (forwarded to the coordinator)" : "");
      break;
    default:
      break;
  }
  spdlog::info("{} requested by {} ({}){}", op, DescribePeer(peer.uid, peer.pid),
               *right == AdminReason::kRoot         ? "root"
               : *right == AdminReason::kBrokerUser ? "the broker's user"
                                                    : "member of admin group '" +
                                                          config.admin_group->name + "'",
               what);
  return std::nullopt;
}

awaitable<json::object> Broker::Impl::SetLimit(const LocalRequest& req, AccountId peer_uid,
                                               ProcessId peer_pid) {
  // Admin only: the dispatch table (local_server.cc) checked RefuseUnlessAdmin.
  // ParseLocalRequest checked the types and the range 1..65535.
  const std::string& name = req.target;
  auto it = targets.find(name);
  if (it == targets.end()) {
    co_return ErrorReply(Errc::kUnknownTarget,
                         "this broker serves no target '" + config::Printable(name, 64) + "'");
  }
  const std::uint32_t value = req.limit;
  // Who did it comes from the socket's peer credentials, never from the
  // request (any allowed local user could claim any name).
  const std::string who = DescribePeer(peer_uid, peer_pid);
  const std::size_t index = IndexOf(*it->second);
  if (limits) {
    if (dsb::Status st = limits->SetOperatorLimit(index, static_cast<std::uint32_t>(value), who);
        !st.ok()) {
      co_return ErrorReply(st.code(), "target " + name + ": " + st.message());
    }
    json::object o = limits->Json(index);
    o[local_protocol::rep::kOk] = true;
    o[local_protocol::rep::kTarget] = name;
    co_return o;
  }
  co_return co_await cluster->SetLimit(index, static_cast<std::uint32_t>(value), who);
}

awaitable<json::object> Broker::Impl::ConfirmStopped(const LocalRequest& req, AccountId peer_uid,
                                                     ProcessId peer_pid) {
  // Admin only: the dispatch table (local_server.cc) checked RefuseUnlessAdmin.
  if (!cluster) {
    co_return ErrorReply(Errc::kInvalidArgument,
                         "broker " + config.id + " runs in single-machine mode: no coordinator");
  }
  const std::string who = DescribePeer(peer_uid, peer_pid);
  spdlog::warn("{} confirms that broker {} runs no coordinator (forwarded to the coordinator)",
               who, config::Printable(req.broker, 128));
  co_return co_await cluster->ConfirmStopped(req.broker);
}

awaitable<json::object> Broker::Impl::SteerBroker(const LocalRequest& req, AccountId peer_uid,
                                                  ProcessId peer_pid) {
  // Admin only: the dispatch table (local_server.cc) checked RefuseUnlessAdmin.
  // revoke, drain and undrain act on the coordinator's ledger (DESIGN C2).
  if (!cluster) {
    co_return ErrorReply(Errc::kInvalidArgument,
                         "no cluster: revoke/drain apply to brokers of a cluster (broker " +
                             config.id + " runs in single-machine mode; use set-limit to "
                             "change what its clients may hold)");
  }
  // Who did it comes from the socket's peer credentials, never from the
  // request: uid, the account's name, pid; the coordinator adds the broker.
  // (RefuseUnlessAdmin logged the request with who asked.)
  const std::string who = DescribePeer(peer_uid, peer_pid);
  json::object request = req.op == LocalOp::kRevoke
                             ? local_protocol::RevokeRequest(req.broker, req.target, req.force,
                                                             req.confirm_dead)
                             : local_protocol::DrainRequest(req.op, req.broker);
  co_return co_await cluster->Steer(std::move(request), who);
}

void Broker::Impl::ArmLogFlushTimer() {
  // Writes the counts of rate-limited log lines (common/limited_log.h) whose
  // interval ended, so a flood that stops is still summed up in the log.
  log_flush_timer.expires_after(std::chrono::seconds(1));
  log_flush_timer.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping) return;
    FlushLimitedLogs();
    ArmLogFlushTimer();
  });
}

awaitable<json::object> Broker::Impl::Leases() {
  if (!cluster) {
    co_return ErrorReply(Errc::kInvalidArgument,
                         "broker " + config.id + " runs in single-machine mode: no leases "
                         "(set broker.cluster to share a limit between machines)");
  }
  co_return co_await cluster->Leases();
}

}  // namespace dsb::broker
