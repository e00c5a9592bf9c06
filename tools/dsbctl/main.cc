// dsbctl: the admin tool. Talks to a broker's local socket through the admin
// client (common/admin_client.h; requests from common/local_protocol.h) and
// prints tables or --json.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "common/escape.h"
#include "common/admin_client.h"
#include "common/local_frame.h"
#include "common/local_protocol.h"
#include "tools/dsbctl/probe.h"
#include "tools/dsbctl/watch.h"
#include "dsb/version.h"
#ifdef DSBCTL_HAS_CONFIG
#include "broker/config/broker_config.h"
#endif

namespace json = boost::json;
namespace lp = dsb::local_protocol;

namespace {

struct Options {
  std::string socket;
  std::string config;
  bool json = false;
  int timeout_ms = 5000;
  std::string broker_user;  // trusted besides root and our uid (else $DSB_BROKER_USER)
};

int Fail(const std::string& message, int code = 1) {
  // Messages may quote the broker (or whatever listens on the socket): no
  // control character reaches the terminal (common/escape.h).
  std::fprintf(stderr, "dsbctl: %s\n", dsb::EscapeText(message, 4096).c_str());
  return code;
}

std::string ResolveSocket(const Options& o, std::string* error) {
  if (!o.socket.empty()) return o.socket;
#ifdef DSBCTL_HAS_CONFIG
  if (!o.config.empty()) {
    auto c = dsb::config::LoadBrokerConfig(o.config);
    if (!c.ok()) {
      *error = c.status().message();
      return {};
    }
    return c->socket.string();
  }
#endif
  if (const char* env = std::getenv("DSB_SOCKET")) {
    // Set but empty is a mistake in a script or unit file, not a request for
    // the default: say so rather than guess.
    if (*env == '\0') {
      *error = "DSB_SOCKET is set but empty: set it to the broker's socket path, unset it to "
               "use /run/dsb/dsb.sock, or pass --socket";
      return {};
    }
    return env;
  }
  return "/run/dsb/dsb.sock";
}

// Sends one request; returns the reply object or prints an error.
std::optional<json::object> Call(const Options& o, const json::object& req) {
  std::string error;
  const std::string path = ResolveSocket(o, &error);
  if (path.empty()) {
    Fail(error, 2);
    return std::nullopt;
  }
  // The same rule as the client library: nothing is sent (no admin command,
  // no status request) to a listener that is not root, us or the named broker
  // user, and nothing it says is believed; all of it within --timeout-ms.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.timeout_ms);
  auto trust = dsb::ResolveBrokerTrust(o.broker_user, "--broker-user",
                                       "pass its user with --broker-user or set " +
                                           std::string(dsb::kBrokerUserEnv));
  if (!trust.ok()) {
    Fail(trust.status().message(), 2);
    return std::nullopt;
  }
  auto reply = dsb::AdminRequest(path, req, *trust, deadline);
  if (!reply.ok()) {
    Fail(reply.status().message());
    return std::nullopt;
  }
  if (dsb::Status s = lp::ReplyStatus(*reply); !s.ok()) {
    if (o.json) std::cout << json::serialize(*reply) << "\n";
    Fail(s.message().empty() ? "request failed" : s.message());
    return std::nullopt;
  }
  return std::move(*reply);
}

// A reply's value for the human output. Strings are escaped: names and
// reasons may come from peers (client names, cluster messages) and must not
// act on the terminal or forge rows (--json keeps the serializer's escaping).
std::string Str(const json::value& v) {
  if (v.is_string()) return dsb::EscapeText(v.as_string(), 1024);
  if (v.is_bool()) return v.as_bool() ? "yes" : "no";
  if (v.is_null()) return "-";
  return json::serialize(v);
}

// Prints rows as an aligned table.
void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::printf("%s\n", out.c_str());
  };
  line(header);
  for (const auto& r : rows) line(r);
}

int CmdStatus(const Options& o) {
  auto r = Call(o, lp::Request(lp::Op::kStatus));
  if (!r) return 1;
  if (o.json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  std::printf("broker %s (pid %s, %s mode%s)\n", Str(r->at("broker")).c_str(),
              Str(r->at("pid")).c_str(), Str(r->at("mode")).c_str(),
              r->at("adoption_grace").as_bool() ? ", adoption grace running" : "");
  std::vector<std::vector<std::string>> rows;
  for (const auto& tv : r->at("targets").as_array()) {
    const auto& t = tv.as_object();
    // Released slots the server may still count (release_cooldown); "-" from
    // a broker that does not report them.
    const json::value* cooling = t.if_contains("cooling");
    const json::value* source = t.if_contains("limit_source");
    rows.push_back({Str(t.at("name")), Str(t.at("limit")),
                    source != nullptr ? Str(*source) : "-", Str(t.at("reserve")),
                    Str(t.at("capacity")), Str(t.at("held")), Str(t.at("held_system")),
                    Str(t.at("waiting")), Str(t.at("quarantined")),
                    cooling != nullptr ? Str(*cooling) : "-", Str(t.at("retiring")),
                    Str(t.at("clients")), Str(t.at("session_limit_reports"))});
  }
  PrintTable({"TARGET", "LIMIT", "SOURCE", "RESERVE", "CAPACITY", "HELD", "(SYSTEM)", "WAITING",
              "QUARANTINED", "COOLING", "RETIRING", "CLIENTS", "LIMIT-REPORTS"},
             rows);
  if (const json::value* e = r->if_contains("limit_error"); e != nullptr) {
    std::printf("effective limit unknown (LIMIT shows the configured ceiling): %s\n",
                Str(*e).c_str());
  }
  // With an etcd ledger (lane limits): when the limit changed and which
  // broker keeps it (the JSON has the recent changes with their causes).
  for (const auto& tv : r->at("targets").as_array()) {
    const auto& t = tv.as_object();
    const json::value* keeper = t.if_contains("limit_keeper");
    const json::value* at = t.if_contains("limit_changed_at");
    if (keeper == nullptr || at == nullptr || !at->is_string()) continue;
    std::printf("target %s: limit %s (%s) since %s, stored in etcd; limit keeper %s\n",
                Str(t.at("name")).c_str(), Str(t.at("limit")).c_str(),
                Str(t.at("limit_source")).c_str(), Str(*at).c_str(),
                keeper->is_string() ? Str(*keeper).c_str() : "none");
  }
  // What the broker's segment audit repaired (a client wrote what only the
  // broker may write): one line per target with findings, none otherwise.
  for (const auto& tv : r->at("targets").as_array()) {
    const json::value* audit = tv.as_object().if_contains("audit");
    if (audit == nullptr || !audit->is_object()) continue;
    std::string found;
    for (const auto& kv : audit->as_object()) {
      if (kv.key() == "runs" || !kv.value().is_number() || kv.value().to_number<double>() == 0) {
        continue;
      }
      found += (found.empty() ? "" : ", ") + std::string(kv.key()) + " " + Str(kv.value());
    }
    if (!found.empty()) {
      std::printf("target %s: segment audit repaired: %s (see the broker's log)\n",
                  Str(tv.as_object().at("name")).c_str(), found.c_str());
    }
  }
  return 0;
}

// The exit status of a change the broker applied but could not write to its
// state_dir (reply "persisted": false): a restart would undo it, so a script
// must not take it as done (the --help footer lists every status).
constexpr int kExitNotPersisted = 3;

// `code`, or kExitNotPersisted (with the reason on stderr) if the reply says
// the change was not written.
int UnlessNotPersisted(const json::object& r, int code) {
  const json::value* p = r.if_contains("persisted");
  if (p == nullptr || !p->is_bool() || p->as_bool()) return code;
  const json::value* why = r.if_contains("persist_error");
  std::fprintf(stderr, "dsbctl: warning: %s\n",
               why != nullptr && why->is_string()
                   ? std::string(why->as_string()).c_str()
                   : "the change applies now but could not be written to the state_dir: a "
                     "restart would undo it (see the broker's log)");
  return kExitNotPersisted;
}

int CmdSetLimit(const Options& o, const std::string& target, int limit) {
  // Who did it is the broker's to see (SO_PEERCRED), not ours to say.
  auto r = Call(o, lp::SetLimitRequest(target, limit));
  if (!r) return 1;
  if (o.json) {
    std::cout << json::serialize(*r) << "\n";
    return UnlessNotPersisted(*r, 0);
  }
  std::printf("target %s: limit %s (source %s)\n", target.c_str(), Str(r->at("limit")).c_str(),
              Str(r->at("limit_source")).c_str());
  return UnlessNotPersisted(*r, 0);
}

int CmdConfirmStopped(const Options& o, const std::string& broker, bool yes) {
  if (!yes) {
    std::fprintf(stderr,
                 "dsbctl: confirm-stopped tells the coordinator that broker '%s' runs no "
                 "coordinator of an older cluster file (its machine is gone for good), so the "
                 "new coordinator may start granting.\n"
                 "If that machine still runs an older coordinator, two ledgers grant one pool "
                 "and the server's limit can be exceeded.\n"
                 "Check the machine is off or its broker stopped, then run again with --yes.\n",
                 broker.c_str());
    return 2;
  }
  auto r = Call(o, lp::ConfirmStoppedRequest(broker));
  if (!r) return 1;
  if (o.json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  std::printf("broker %s confirmed stopped (it was %sawaited); coordinator gate: %s\n",
              broker.c_str(), r->at("was_awaited").as_bool() ? "" : "not ",
              Str(r->at("gate")).c_str());
  return 0;
}

// revoke, drain, undrain (DESIGN C2), applied by the coordinator.
int CmdSteer(const Options& o, lp::Op op, const std::string& broker, const std::string& target,
             bool force, bool confirm_dead) {
  if (confirm_dead) {
    // Said before the request, so the operator reads it whatever happens next.
    std::fprintf(stderr,
                 "dsbctl: forced revoke of broker '%s': the coordinator forgets at once what it "
                 "is owed and may grant its share to the other brokers now.\n"
                 "If that workstation still holds sessions, the account may go over the "
                 "server's limit until they end.\n",
                 broker.c_str());
  }
  const json::object request = op == lp::Op::kRevoke
                                   ? lp::RevokeRequest(broker, target, force || confirm_dead,
                                                       confirm_dead)
                                   : lp::DrainRequest(op, broker);
  auto r = Call(o, request);
  if (!r) return 1;
  if (o.json) {
    std::cout << json::serialize(*r) << "\n";
    return UnlessNotPersisted(*r, 0);
  }
  std::printf("%s\n", Str(r->at("message")).c_str());
  std::vector<std::vector<std::string>> rows;
  if (const json::value* ts = r->if_contains("targets"); ts != nullptr && ts->is_array()) {
    for (const auto& tv : ts->as_array()) {
      const auto& t = tv.as_object();
      rows.push_back({Str(t.at("target")), Str(t.at("mode")), Str(t.at("owed")),
                      Str(t.at("granted"))});
    }
  }
  // None: nothing changed (undrain of an active broker) or the broker was
  // forgotten; the message says which.
  if (!rows.empty()) PrintTable({"TARGET", "MODE", "OWED", "GRANTED"}, rows);
  return UnlessNotPersisted(*r, 0);
}

// The target's line of `status`, or nullopt (error printed).
std::optional<json::object> TargetStatus(const Options& o, const std::string& target) {
  auto r = Call(o, lp::Request(lp::Op::kStatus));
  if (!r) return std::nullopt;
  for (const auto& tv : r->at("targets").as_array()) {
    if (tv.as_object().at("name") == json::value(target)) return tv.as_object();
  }
  Fail("the broker serves no target '" + target + "'");
  return std::nullopt;
}

std::uint32_t Num(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_number() ? v->to_number<std::uint32_t>() : 0;
}

int CmdProbe(const Options& o, const std::string& target, dsb::ctl::ProbeOptions p, bool apply,
             bool force) {
  if (apply && force) {
    // A slot held through dsb is not a session open on the server (a thread
    // holds it while it connects and after it closed), so opened + held is
    // only an estimate of the cap: never make it the limit.
    return Fail("--apply cannot be combined with --force: on a busy target the count is only an "
                "estimate; stop the DigiScope instances and probe a quiet target",
                2);
  }
  auto t = TargetStatus(o, target);
  if (!t) return 1;
  // Sessions dsb holds (or that the server may still count) are on the server too.
  const std::uint32_t busy = Num(*t, "held") + Num(*t, "quarantined") + Num(*t, "cooling");
  if (busy > 0 && !force) {
    return Fail("target " + target + " is not quiet: " + std::to_string(busy) +
                " session(s) held, cooling or quarantined through this broker; stop the "
                "DigiScope instances (or pass --force: the result then adds them). Other "
                "machines and tools must be quiet too");
  }
  if (p.max_sessions == 0) p.max_sessions = Num(*t, "limit_ceiling") + 1;
  if (p.max_sessions == 0) p.max_sessions = Num(*t, "limit") + 1;
  const dsb::ctl::ProbeResult r = dsb::ctl::Probe(p);
  const std::uint32_t cap = r.opened + (force ? busy : 0);
  if (o.json) {
    json::object out{{"ok", r.ok}, {"target", target}, {"server", p.server},
                     {"opened", r.opened}, {"dsb_held", busy}, {"refused", r.refused},
                     {"cap", r.refused ? json::value(cap) : json::value(nullptr)},
                     {"refusal", r.refusal}, {"message", r.message}};
    std::cout << json::serialize(out) << "\n";
  }
  if (!r.ok) return Fail("probe of " + p.server + ": " + r.message);
  if (!r.refused) {
    if (!o.json) {
      std::printf("no refusal after %u session(s) (--max %u): the server's cap is above that\n",
                  r.opened, p.max_sessions);
    }
    return apply ? Fail("nothing to apply: the server never refused") : 0;
  }
  if (!o.json) {
    std::printf("server refused session %u: cap for this account is %s%u%s\n  (%s)\n",
                r.opened + 1, force && busy > 0 ? "about " : "", cap,
                force && busy > 0 ? (" (" + std::to_string(r.opened) + " opened + " +
                                     std::to_string(busy) + " held through dsb)")
                                        .c_str()
                                  : "",
                dsb::EscapeText(r.refusal, 1024).c_str());  // the server's words
  }
  if (!apply) return 0;
  const std::uint32_t ceiling = Num(*t, "limit_ceiling");
  std::uint32_t value = cap;
  if (ceiling > 0 && value > ceiling) {
    std::printf("the configured limit %u is the ceiling: applying %u\n", ceiling, ceiling);
    value = ceiling;
  }
  Options quiet = o;
  return CmdSetLimit(quiet, target, static_cast<int>(value));
}

int CmdClients(const Options& o) {
  auto r = Call(o, lp::Request(lp::Op::kClients));
  if (!r) return 1;
  if (o.json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& cv : r->at("clients").as_array()) {
    const auto& c = cv.as_object();
    rows.push_back({Str(c.at("owner")), Str(c.at("target")), Str(c.at("pid")), Str(c.at("uid")),
                    Str(c.at("name")), Str(c.at("held_action")), Str(c.at("held_system")),
                    std::to_string(c.at("connected_ms").to_number<std::int64_t>() / 1000) + "s",
                    Str(c.at("adopted"))});
  }
  PrintTable({"OWNER", "TARGET", "PID", "UID", "NAME", "ACTION", "SYSTEM", "CONNECTED", "ADOPTED"},
             rows);
  const auto& pending = r->at("pending").as_array();
  if (!pending.empty()) {
    std::printf("%zu owner(s) from before a broker restart have not reconnected yet\n",
                pending.size());
  }
  return 0;
}

std::string MsText(const json::value& v) {
  if (!v.is_number()) return "-";
  const auto ms = v.to_number<std::int64_t>();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  return buf;
}

int CmdLeases(const Options& o) {
  auto r = Call(o, lp::Request(lp::Op::kLeases));
  if (!r) return 1;
  if (o.json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  const json::value& ledger = r->at("ledger");
  std::printf("coordinator %s\n", Str(r->at("coordinator")).c_str());
  if (ledger.is_null()) {
    std::printf("ledger unavailable: %s\n",
                r->contains("ledger_error") ? Str(r->at("ledger_error")).c_str() : "?");
  } else {
    const auto& l = ledger.as_object();
    const auto text = [&](const char* key) {
      const json::value* v = l.if_contains(key);
      return v != nullptr ? Str(*v) : std::string("?");
    };
    std::printf("cluster file generation %s, coordinator gate %s\n", text("generation").c_str(),
                text("gate").c_str());
    if (l.at("learning").as_bool()) {
      std::printf("LEARNING MODE (C3): no grants for another %s while the ledger relearns\n",
                  MsText(l.at("learning_left_ms")).c_str());
    }
    std::printf("term D %s, drain H %s, silence (D+H)(1+eps) %s\n",
                MsText(l.at("term_ms")).c_str(), MsText(l.at("drain_ms")).c_str(),
                MsText(l.at("silence_ms")).c_str());
    for (const auto& tv : l.at("targets").as_array()) {
      const auto& t = tv.as_object();
      std::printf("\ntarget %s: limit %s, pool %s, owed %s, free %s\n", Str(t.at("target")).c_str(),
                  Str(t.at("limit")).c_str(), Str(t.at("pool")).c_str(),
                  Str(t.at("owed_total")).c_str(), Str(t.at("free")).c_str());
      std::vector<std::vector<std::string>> rows;
      for (const auto& bv : t.at("brokers").as_array()) {
        const auto& b = bv.as_object();
        const json::value* verdict = b.if_contains("verdict");
        const json::value* instances = b.if_contains("instances");
        rows.push_back({Str(b.at("broker")),
                        verdict != nullptr ? Str(*verdict) : std::string("?"),
                        instances != nullptr ? Str(*instances) : std::string("?"),
                        Str(b.at("mode")), Str(b.at("owed")),
                        Str(b.at("granted")), Str(b.at("held")), Str(b.at("waiting")),
                        Str(b.at("wanted")), MsText(b.at("lease_left_ms")),
                        MsText(b.at("last_seen_ms"))});
      }
      PrintTable({"BROKER", "VERDICT", "INSTANCES", "MODE", "OWED", "GRANTED", "HELD", "WAITING",
                  "WANTED", "LEASE-LEFT", "LAST-SEEN"},
                 rows);
    }
  }
  const auto& a = r->at("agent").as_object();
  const json::value* verdict = a.if_contains("verdict");
  const json::value* reason = a.if_contains("verdict_reason");
  // With ledger = "etcd" there is no coordinator broker: say who keeps the ledger.
  const std::string keeper =
      Str(r->at("coordinator")) == "etcd ledger" ? "the etcd ledger" : "the coordinator";
  std::printf("\nthis broker (%s, epoch %s, %s, %s by %s%s%s):\n",
              Str(a.at("broker")).c_str(), Str(a.at("epoch")).c_str(),
              a.at("connected").as_bool() ? ("connected to " + keeper).c_str() : "NOT connected",
              verdict != nullptr ? Str(*verdict).c_str() : "?", keeper.c_str(),
              reason != nullptr && !Str(*reason).empty() ? ": " : "",
              reason != nullptr ? Str(*reason).c_str() : "");
  std::vector<std::vector<std::string>> rows;
  for (const auto& tv : a.at("targets").as_array()) {
    const auto& t = tv.as_object();
    rows.push_back({Str(t.at("target")), Str(t.at("floor")), Str(t.at("lease")),
                    Str(t.at("action_capacity")), MsText(t.at("lease_left_ms"))});
  }
  PrintTable({"TARGET", "FLOOR", "LEASE", "ACTION-CAPACITY", "LEASE-LEFT"}, rows);
  return 0;
}

// "500ms", "1s", "2m" (100ms..1h) as a duration; nullopt otherwise.
std::optional<std::chrono::milliseconds> ParseInterval(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && digits < 7 && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;
  const long long n = std::stoll(text.substr(0, digits));
  const std::string unit = text.substr(digits);
  long long ms = 0;
  if (unit == "ms") {
    ms = n;
  } else if (unit == "s") {
    ms = n * 1000;
  } else if (unit == "m") {
    ms = n * 60000;
  } else {
    return std::nullopt;
  }
  if (ms < 100 || ms > 3600000) return std::nullopt;
  return std::chrono::milliseconds(ms);
}

// `watch`: the live view (tools/dsbctl/watch.h). The socket and the trust
// are resolved once; each request then has its own deadline, so a broker
// that hangs delays a frame, never the view's end.
int CmdWatch(const Options& o, std::chrono::milliseconds interval, bool once) {
  std::string error;
  const std::string path = ResolveSocket(o, &error);
  if (path.empty()) return Fail(error, 2);
  auto trust = dsb::ResolveBrokerTrust(o.broker_user, "--broker-user",
                                       "pass its user with --broker-user or set " +
                                           std::string(dsb::kBrokerUserEnv));
  if (!trust.ok()) return Fail(trust.status().message(), 2);
  const auto timeout = std::chrono::milliseconds(o.timeout_ms);
  dsb::ctl::watch::WatchOptions w;
  w.interval = interval;
  w.once = once;
  return dsb::ctl::watch::Run(w, [&](const json::object& req) {
    return dsb::AdminRequest(path, req, *trust, std::chrono::steady_clock::now() + timeout);
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dsbctl: inspect and change a dsb broker"};
  app.set_version_flag("--version", std::string("dsbctl ") + DSB_VERSION_STRING +
                                        " (local protocol " +
                                        std::to_string(dsb::kLocalProtocolVersion) + ")");
  app.require_subcommand(1);
  app.footer(
      "Exit status: 0 done; 1 the broker refused or could not be reached (the message says "
      "why); 2 a usage error, or a risky command run without its confirmation flag; 3 "
      "(set-limit, probe --apply, revoke, drain, undrain) the change applies now but could "
      "not be written to the state_dir, so a restart of the coordinator (of the broker in "
      "single mode) would undo it: fix the state_dir and repeat the command.");
  Options o;
  app.add_option("-s,--socket", o.socket, "broker socket (default: $DSB_SOCKET or /run/dsb/dsb.sock)");
#ifdef DSBCTL_HAS_CONFIG
  app.add_option("-c,--config", o.config, "read the socket path from this broker config");
#endif
  app.add_flag("--json", o.json, "print JSON instead of a table");
  app.add_option("--timeout-ms", o.timeout_ms, "how long to wait for the broker")
      ->check(CLI::Range(1, 600000));
  app.add_option("--broker-user", o.broker_user,
                 std::string("trust a broker running as this user (name or uid) besides root, "
                             "yourself and the default broker user '") +
                     dsb::kDefaultBrokerUser + "' if it exists (default: $DSB_BROKER_USER)");
  auto* status = app.add_subcommand("status", "targets: limit, capacity, held, waiting, quarantined, cooling");
  auto* clients = app.add_subcommand("clients", "registered clients: pid, user, held slots");
  auto* leases = app.add_subcommand("leases", "cluster ledger: per target and broker owed, granted, held, demand, expiry");
  std::string target;
  int limit = 0;
  auto* set_limit = app.add_subcommand(
      "set-limit", "set a target's limit (source 'operator'; between its minimum and the "
                   "configured limit; in a cluster the coordinator applies it)");
  set_limit->add_option("TARGET", target, "target name")->required();
  set_limit->add_option("LIMIT", limit, "the new limit")->required()->check(CLI::Range(1, 65535));
  dsb::ctl::ProbeOptions probe_options;
  probe_options.max_sessions = 0;
  bool apply = false, force = false;
  int io_timeout_ms = 5000;
  auto* probe = app.add_subcommand(
      "probe", "open sessions on a quiet target until the server refuses; report the count");
  probe->add_option("TARGET", target, "target name (as the broker knows it)")->required();
  probe->add_option("--server", probe_options.server,
                    "HOST:PORT of a dsb-simserver, or postgresql://USER@HOST:PORT/DB")
      ->required();
  probe->add_option("--user", probe_options.user, "account (dsb-simserver only)");
  probe->add_option("--max", probe_options.max_sessions,
                    "stop after this many sessions (default: the configured limit + 1)")
      ->check(CLI::Range(1u, 65536u));
  probe->add_option("--io-timeout-ms", io_timeout_ms, "bound on each connect and round trip")
      ->check(CLI::Range(1, 600000));
  probe->add_flag("--apply", apply, "make the count the target's limit (source 'operator')");
  probe->add_flag("--force", force,
                  "probe although this broker holds sessions of the target (they are added)");
  std::string stopped_broker;
  bool yes = false;
  auto* confirm_stopped = app.add_subcommand(
      "confirm-stopped", "tell a new coordinator that a broker of its file runs no older "
                         "coordinator (its machine is gone): breaks the limit if wrong");
  confirm_stopped->add_option("BROKER", stopped_broker, "broker id")->required();
  confirm_stopped->add_flag("--yes", yes, "I checked: that machine runs no dsb broker");
  std::string steer_broker, revoke_target;
  bool revoke_force = false, confirm_dead = false;
  auto* revoke = app.add_subcommand(
      "revoke", "make a broker's later grants 0 (all targets, or --target); what it is owed "
                "falls as it reports less held or by its silence, never at once");
  revoke->add_option("BROKER", steer_broker, "broker id (as in the cluster file)")->required();
  revoke->add_option("--target", revoke_target, "revoke this target only");
  revoke->add_flag("--force", revoke_force,
                   "forget at once what the broker is owed (a dead workstation): refused "
                   "without --confirm-dead");
  revoke->add_flag("--confirm-dead", confirm_dead,
                   "I checked: that workstation is dead (a forced revoke; if it still holds "
                   "sessions the account may go over the server's limit until they end)");
  auto* drain = app.add_subcommand(
      "drain", "gracefully empty a broker: its later grants are 0 and its clients are asked "
               "to yield (ShouldYield) as its capacity shrinks to its floor");
  drain->add_option("BROKER", steer_broker, "broker id")->required();
  auto* undrain = app.add_subcommand(
      "undrain", "end a drain or revoke: the broker gets its share of the pool again");
  undrain->add_option("BROKER", steer_broker, "broker id")->required();
  std::string watch_interval = "1s";
  bool watch_once = false;
  auto* watch = app.add_subcommand(
      "watch", "live view: per target limit, capacity, held, waiting, quarantined, cooling; "
               "per broker leases in a cluster; changes highlighted; q or Ctrl-C quits");
  watch->add_option("--interval", watch_interval, "time between frames: 1s, 500ms, 2m (100ms..1h)")
      ->capture_default_str();
  watch->add_flag("--once", watch_once, "print one frame and exit (1 if the broker is not there)");
  for (auto* sub : {status, clients, leases, set_limit, probe, confirm_stopped, revoke, drain,
                    undrain}) {
    sub->add_flag("--json", o.json, "print JSON");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with 0; a usage error exits 2 (as a bad config does).
    return app.exit(e) == 0 ? 0 : 2;
  }
  // A reply of the right type with a field missing or of another type (a
  // broker of another version, or not a broker) ends here with a message, not
  // with std::terminate and a library's text.
  auto run = [&]() -> int {
    if (set_limit->parsed()) return CmdSetLimit(o, target, limit);
    if (confirm_stopped->parsed()) return CmdConfirmStopped(o, stopped_broker, yes);
    if (revoke->parsed()) {
      return CmdSteer(o, lp::Op::kRevoke, steer_broker, revoke_target, revoke_force, confirm_dead);
    }
    if (drain->parsed()) return CmdSteer(o, lp::Op::kDrain, steer_broker, "", false, false);
    if (undrain->parsed()) return CmdSteer(o, lp::Op::kUndrain, steer_broker, "", false, false);
    if (probe->parsed()) {
      probe_options.io_timeout = std::chrono::milliseconds(io_timeout_ms);
      return CmdProbe(o, target, probe_options, apply, force);
    }
    if (status->parsed()) return CmdStatus(o);
    if (clients->parsed()) return CmdClients(o);
    if (leases->parsed()) return CmdLeases(o);
    if (watch->parsed()) {
      const auto interval = ParseInterval(watch_interval);
      if (!interval) {
        return Fail("--interval '" + watch_interval + "': give a number with ms, s or m "
                    "between 100ms and 1h (e.g. 1s, 500ms)", 2);
      }
      return CmdWatch(o, *interval, watch_once);
    }
    return Fail("unknown command", 2);
  };
  try {
    return run();
  } catch (const std::exception&) {
    return Fail("the broker's reply lacks a field this dsbctl needs, or has one of another type "
                "(a broker of another version?); --json prints the reply as it came");
  }
}
