// The broker's local socket protocol: every op, every request field and every
// field of the replies clients and dsbctl read, with the protocol version.
// The client library, the broker and the admin client (dsbctl, tests, tools)
// build and read messages only through these names: no op or field name is
// spelled anywhere else. Framing (a 4-byte length, then one JSON object) is
// common/local_frame.h. Never rename or renumber what is here: a deployed
// client or broker of another release still sends and reads these names.
//
// Requests: every one is {"op": NAME, "version": N, ...}; unknown keys are ignored.
//   register              "target": string; optional "name": string (escaped, cut to 64
//                         bytes); "pid": integer (informative: the broker believes
//                         SO_PEERCRED, not this);
//                         optional "owner": integer 1..2^32-1 with "instance": string
//                         (a client of the previous broker reconnecting to keep its slots)
//                         Reply: "owner", "segment", "instance" (the segment's instance id,
//                         decimal text), "system_slot" ("table" or "none"), "mode"
//                         ("single" or "cluster"), "capacity", "version" (the version
//                         the broker speaks on this connection).
//   goodbye               no arguments; the client is about to close cleanly (register first)
//   ping                  no arguments; {"ok": true}
//   status, clients, leases   no arguments; the broker's views (admin.cc builds them,
//                         dsbctl prints them); any allowed local peer may ask
//   report_session_limit  optional "slot": integer and "word": integer (both, or the pair is
//                         ignored, as from an older client); optional "detail": string
//                         (escaped, cut to 200 bytes). Reply: "held".
//   set_limit             "target": string, "limit": integer 1..65535   (admin only)
//   confirm_stopped       "broker": string, 1..128 bytes                  (admin only)
//                         (R3: an operator says a broker runs no coordinator: its machine
//                         is gone)
//   revoke                "broker": string, 1..128 bytes; optional "target": string (only
//                         that target); optional "force": bool and "confirm_dead": bool
//                         (a forced revoke forgets what the broker is owed at once: refused
//                         unless confirm_dead)                            (admin only)
//   drain, undrain        "broker": string, 1..128 bytes                  (admin only)
//                         (DESIGN C2; cluster only. The reply carries "broker", "mode")
// Admin only: root or the broker's own uid (others may read: status, clients, leases).
//
// Replies: {"ok": true, ...} or {"ok": false, "error": ERRC_NAME, "message": text}
// (ERRC_NAME as ErrcName: "protocol", "permission_denied", ...).
//
// Versions (the handshake). Every request may carry "version", the newest
// protocol version its sender speaks, and "min_version", the oldest (absent
// "version": 1, what every client before the handshake sent or meant; absent
// "min_version": the same as "version"). Integers only (local_request.h).
// The broker, speaking [kMinLocalProtocolVersion, kLocalProtocolVersion] of its
// release, picks min(client's newest, broker's newest) if that is >= max(client's
// oldest, broker's oldest) (NegotiateVersion) and answers a register and a ping
// with it in "version": the version both speak on this connection. Otherwise
// the request is refused before the op is looked at (nothing happens: no
// registration, no slot, no change) with kProtocol, a message naming both
// ranges and which side to upgrade, and "min_version"/"max_version": the
// broker's range (every kProtocol refusal of a request the broker could not
// take carries them). The client accepts a reply "version" (absent: 1, a broker
// before the handshake) within its own range, else fails with kProtocol naming
// both (CheckBrokerVersion). A version is bumped only for a change an older
// peer would misread; kMinLocalProtocolVersion is the oldest this release still
// speaks. Every broker of this release on follows the rule, so a client of a
// later release that speaks 1 to 2 is served by any of them at version 1
// (a broker before the handshake ignores both fields and speaks 1).
// Version 1: everything above.
#ifndef DSB_COMMON_LOCAL_PROTOCOL_H_
#define DSB_COMMON_LOCAL_PROTOCOL_H_

#include <boost/json.hpp>
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace dsb {

// The newest version this release speaks, and the oldest it still speaks
// (the broker serves, and the client accepts, every version in between).
inline constexpr int kLocalProtocolVersion = 1;
inline constexpr int kMinLocalProtocolVersion = 1;

namespace local_protocol {

namespace json = boost::json;

// Every op. Never renumber: tests and logs may print the numbers. (The wire
// carries names, kOps below; the dispatch table follows kOps' order.)
enum class Op {
  kRegister,
  kGoodbye,
  kReportSessionLimit,
  kStatus,
  kClients,
  kLeases,
  kSetLimit,
  kPing,
  kConfirmStopped,
  kRevoke,
  kDrain,
  kUndrain,
};

struct OpName {
  Op op;
  std::string_view name;  // a literal: .data() is NUL-terminated
};
// Every op with its wire name, in the order the "unknown op" error lists them
// (the broker's dispatch table has one entry per row, in this order).
inline constexpr OpName kOps[] = {
    {Op::kRegister, "register"},   {Op::kReportSessionLimit, "report_session_limit"},
    {Op::kStatus, "status"},       {Op::kClients, "clients"},
    {Op::kLeases, "leases"},       {Op::kSetLimit, "set_limit"},
    {Op::kGoodbye, "goodbye"},     {Op::kPing, "ping"},
    {Op::kConfirmStopped, "confirm_stopped"},
    {Op::kRevoke, "revoke"},       {Op::kDrain, "drain"},
    {Op::kUndrain, "undrain"},
};
inline constexpr std::size_t kOpCount = std::size(kOps);

// The op's wire name ("register", ...); "?" for a value outside the enum.
constexpr std::string_view OpWireName(Op op) {
  for (const OpName& o : kOps) {
    if (o.op == op) return o.name;
  }
  return "?";
}

// The op named `name`, if there is one.
constexpr std::optional<Op> OpNamed(std::string_view name) {
  for (const OpName& o : kOps) {
    if (o.name == name) return o.op;
  }
  return std::nullopt;
}

// "register, report_session_limit, ..." (for the "unknown op" error).
inline std::string KnownOps() {
  std::string out;
  for (const OpName& o : kOps) out += (out.empty() ? "" : ", ") + std::string(o.name);
  return out;
}

// Request fields.
namespace req {
inline constexpr std::string_view kOp = "op";
inline constexpr std::string_view kVersion = "version";        // the sender's newest
inline constexpr std::string_view kMinVersion = "min_version";  // the sender's oldest
inline constexpr std::string_view kTarget = "target";    // register, set_limit
inline constexpr std::string_view kName = "name";        // register
inline constexpr std::string_view kPid = "pid";          // register
inline constexpr std::string_view kOwner = "owner";      // register (adoption)
inline constexpr std::string_view kInstance = "instance";  // register (adoption)
inline constexpr std::string_view kSlot = "slot";        // report_session_limit
inline constexpr std::string_view kWord = "word";        // report_session_limit
inline constexpr std::string_view kDetail = "detail";    // report_session_limit
inline constexpr std::string_view kLimit = "limit";      // set_limit
inline constexpr std::string_view kBroker = "broker";    // confirm_stopped, revoke, drain, undrain
inline constexpr std::string_view kForce = "force";              // revoke
inline constexpr std::string_view kConfirmDead = "confirm_dead";  // revoke (with force)
}  // namespace req

// Reply fields: of every reply, and of register's, report_session_limit's and
// set_limit's. (The views of status, clients and leases are built in
// broker/admin.cc and broker/cluster*.cc and read by dsbctl for display.)
namespace rep {
inline constexpr std::string_view kOk = "ok";
inline constexpr std::string_view kError = "error";
inline constexpr std::string_view kMessage = "message";
inline constexpr std::string_view kOwner = "owner";
inline constexpr std::string_view kSegment = "segment";
inline constexpr std::string_view kInstance = "instance";
inline constexpr std::string_view kSystemSlot = "system_slot";
inline constexpr std::string_view kMode = "mode";
inline constexpr std::string_view kCapacity = "capacity";
inline constexpr std::string_view kVersion = "version";  // register, ping: the one spoken
// A version refusal: the broker's range.
inline constexpr std::string_view kMinVersion = "min_version";
inline constexpr std::string_view kMaxVersion = "max_version";
inline constexpr std::string_view kHeld = "held";      // report_session_limit
inline constexpr std::string_view kTarget = "target";  // set_limit (with the limit's view)
// Values of kSystemSlot and kMode.
inline constexpr std::string_view kSystemSlotTable = "table";
inline constexpr std::string_view kSystemSlotNone = "none";
inline constexpr std::string_view kModeSingle = "single";
inline constexpr std::string_view kModeCluster = "cluster";
}  // namespace rep

// ---- Requests ------------------------------------------------------------

// {"op": NAME, "version": kLocalProtocolVersion, "min_version":
// kMinLocalProtocolVersion}: the whole request of goodbye, ping, status,
// clients and leases, and the start of every other.
inline json::object Request(Op op) {
  return json::object{{req::kOp, OpWireName(op)},
                      {req::kVersion, kLocalProtocolVersion},
                      {req::kMinVersion, kMinLocalProtocolVersion}};
}

struct RegisterArgs {
  std::string_view target;
  std::string_view name;
  std::int64_t pid = 0;
  // Adoption after a broker restart: the owner id and the segment instance
  // the previous broker gave (nullopt: a new registration).
  std::optional<std::uint32_t> owner;
  std::string_view instance;
};
inline json::object RegisterRequest(const RegisterArgs& a) {
  json::object o = Request(Op::kRegister);
  o[req::kTarget] = a.target;
  o[req::kName] = a.name;
  o[req::kPid] = a.pid;
  if (a.owner) {
    o[req::kOwner] = *a.owner;
    o[req::kInstance] = a.instance;
  }
  return o;
}

// `refused`: the refused attempt's permit (slot, word) if the client holds it.
inline json::object ReportSessionLimitRequest(
    std::string_view detail, std::optional<std::pair<std::uint32_t, std::uint64_t>> refused) {
  json::object o = Request(Op::kReportSessionLimit);
  o[req::kDetail] = detail;
  if (refused) {
    o[req::kSlot] = refused->first;
    o[req::kWord] = refused->second;  // a JSON integer up to 2^64-1, not a double
  }
  return o;
}

inline json::object SetLimitRequest(std::string_view target, std::int64_t limit) {
  json::object o = Request(Op::kSetLimit);
  o[req::kTarget] = target;
  o[req::kLimit] = limit;
  return o;
}

inline json::object ConfirmStoppedRequest(std::string_view broker) {
  json::object o = Request(Op::kConfirmStopped);
  o[req::kBroker] = broker;
  return o;
}

// `target` empty: every target of the broker.
inline json::object RevokeRequest(std::string_view broker, std::string_view target = {},
                                  bool force = false, bool confirm_dead = false) {
  json::object o = Request(Op::kRevoke);
  o[req::kBroker] = broker;
  if (!target.empty()) o[req::kTarget] = target;
  if (force) o[req::kForce] = true;
  if (confirm_dead) o[req::kConfirmDead] = true;
  return o;
}

// `op`: kDrain or kUndrain.
inline json::object DrainRequest(Op op, std::string_view broker) {
  json::object o = Request(op);
  o[req::kBroker] = broker;
  return o;
}

// ---- Ranges of arguments (the local parser's and the coordinator's) -------

inline constexpr std::int64_t kMinLimit = 1;
inline constexpr std::int64_t kMaxLimit = 65535;
inline constexpr std::size_t kMaxBrokerIdBytes = 128;

// set_limit's "limit": OK within [kMinLimit, kMaxLimit]; else
// kInvalidArgument "limit must be between 1 and 65535, got N".
inline Status CheckLimit(std::int64_t limit) {
  if (limit >= kMinLimit && limit <= kMaxLimit) return Status::Ok();
  return Status{Errc::kInvalidArgument, "limit must be between " + std::to_string(kMinLimit) +
                                            " and " + std::to_string(kMaxLimit) + ", got " +
                                            std::to_string(limit)};
}

// confirm_stopped's "broker": OK for 1..kMaxBrokerIdBytes bytes; else
// kInvalidArgument naming the length (the id itself is not echoed: the
// caller escapes it if it shows it).
inline Status CheckBrokerId(std::string_view id) {
  if (!id.empty() && id.size() <= kMaxBrokerIdBytes) return Status::Ok();
  return Status{Errc::kInvalidArgument,
                "a broker id must be 1.." + std::to_string(kMaxBrokerIdBytes) + " bytes, got " +
                    std::to_string(id.size())};
}

// ---- Versions ------------------------------------------------------------

// A range of protocol versions, oldest to newest.
struct VersionRange {
  std::int64_t min = 1;
  std::int64_t max = 1;
};
inline constexpr VersionRange kOwnVersions{kMinLocalProtocolVersion, kLocalProtocolVersion};

// "version 1" or "versions 1 to 3".
inline std::string DescribeVersions(VersionRange r) {
  return r.min == r.max ? "version " + std::to_string(r.min)
                        : "versions " + std::to_string(r.min) + " to " + std::to_string(r.max);
}

// The handshake's rule, a pure function: the version a client speaking
// `client` and a broker speaking `broker` use, the newest both speak:
// min(client.max, broker.max) if that is >= max(client.min, broker.min).
// REQUIRES: client.min <= client.max, broker.min <= broker.max.
// Failure: kProtocol naming both ranges and which side to upgrade (the
// broker if the client's oldest is newer than the broker's newest, else the
// client).
inline Result<std::int64_t> NegotiateVersion(VersionRange client, VersionRange broker) {
  const std::int64_t common = std::min(client.max, broker.max);
  if (common >= std::max(client.min, broker.min)) return common;
  const std::string both = "the client speaks local protocol " + DescribeVersions(client) +
                           " but this broker speaks local protocol " + DescribeVersions(broker);
  if (client.min > broker.max) {
    return Status{Errc::kProtocol,
                  both + ": upgrade dsb-broker to a release that speaks version " +
                      std::to_string(client.min) + " or later (or use the client library "
                      "and dsbctl of the broker's release)"};
  }
  return Status{Errc::kProtocol,
                both + ": upgrade the client (libdsb, dsbctl) to a release that speaks version " +
                    std::to_string(broker.min) + " or later"};
}

// The client's check of the version a broker answered (`version`: nullopt
// if the reply has none, i.e. a broker before the handshake: 1). OK within
// [kMinLocalProtocolVersion, kLocalProtocolVersion]; else kProtocol naming both.
inline Status CheckBrokerVersion(std::optional<std::int64_t> version) {
  const std::int64_t v = version.value_or(1);
  if (v >= kMinLocalProtocolVersion && v <= kLocalProtocolVersion) return Status::Ok();
  return Status{Errc::kProtocol,
                "the broker answered in local protocol version " + std::to_string(v) +
                    " but this client speaks " + DescribeVersions(kOwnVersions) + ": upgrade " +
                    (v > kLocalProtocolVersion ? "the client (libdsb, dsbctl)" : "dsb-broker") +
                    " so that both speak one version"};
}

// ---- Replies -------------------------------------------------------------

inline json::object OkReply() { return json::object{{rep::kOk, true}}; }

inline json::object ErrorReply(Errc code, const std::string& message) {
  return json::object{{rep::kOk, false}, {rep::kError, ErrcName(code)}, {rep::kMessage, message}};
}

// The broker's refusal of a request it could not take (`s` not OK): the
// ErrorReply, plus the broker's version range when `s` is kProtocol.
inline json::object RefusalReply(const Status& s, VersionRange broker = kOwnVersions) {
  json::object o = ErrorReply(s.code(), s.message());
  if (s.code() == Errc::kProtocol) {
    o[rep::kMinVersion] = broker.min;
    o[rep::kMaxVersion] = broker.max;
  }
  return o;
}

// A reply's text as an object, whatever its "ok". kProtocol "broker sent a
// malformed reply" if it is not a JSON object.
inline Result<json::object> ParseReply(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return Status{Errc::kProtocol, "broker sent a malformed reply"};
  return std::move(v.as_object());
}

// OK if `reply` says "ok": true; its error (code from "error", kInternal if
// unknown, and "message") if false; kProtocol "reply without 'ok'" if neither.
inline Status ReplyStatus(const json::object& reply) {
  const json::value* ok = reply.if_contains(rep::kOk);
  if (ok == nullptr || !ok->is_bool()) return Status{Errc::kProtocol, "reply without 'ok'"};
  if (ok->as_bool()) return Status::Ok();
  const json::value* e = reply.if_contains(rep::kError);
  const json::value* m = reply.if_contains(rep::kMessage);
  const Errc code = e != nullptr && e->is_string() ? ErrcFromName(e->as_string().c_str())
                                                   : Errc::kInternal;
  return Status{code, m != nullptr && m->is_string() ? std::string(m->as_string()) : ""};
}

// What a successful register reply carries.
struct RegisterReply {
  std::uint32_t owner = 0;
  std::string segment;
  std::string instance;
  bool system_slot_in_table = false;  // "system_slot": "table" (single mode) or "none"
  bool cluster = false;               // "mode": "cluster" or "single"
  std::uint32_t capacity = 0;
  std::int64_t version = kLocalProtocolVersion;
};

inline json::object EncodeRegisterReply(const RegisterReply& r) {
  return json::object{{rep::kOk, true},
                      {rep::kOwner, r.owner},
                      {rep::kSegment, r.segment},
                      {rep::kInstance, r.instance},
                      {rep::kSystemSlot, r.system_slot_in_table ? rep::kSystemSlotTable
                                                                : rep::kSystemSlotNone},
                      {rep::kMode, r.cluster ? rep::kModeCluster : rep::kModeSingle},
                      {rep::kCapacity, r.capacity},
                      {rep::kVersion, r.version}};
}

// Reads a register reply whose "ok" is true. kProtocol naming the field if
// one is missing or of the wrong type; the version check is CheckBrokerVersion
// (the caller's, as it names the broker). "capacity" and "version" are
// optional (brokers before them).
inline Result<RegisterReply> DecodeRegisterReply(const json::object& o) {
  RegisterReply r;
  const json::value* owner = o.if_contains(rep::kOwner);
  boost::system::error_code ec;
  const auto owner_n = owner != nullptr && owner->is_number()
                           ? owner->to_number<std::uint32_t>(ec)
                           : std::uint32_t{0};
  if (owner == nullptr || ec || owner_n == 0) {
    return Status{Errc::kProtocol, "register reply: 'owner' is missing or not an id"};
  }
  r.owner = owner_n;
  for (auto [key, out] : {std::pair{rep::kSegment, &r.segment},
                          std::pair{rep::kInstance, &r.instance}}) {
    const json::value* v = o.if_contains(key);
    if (v == nullptr || !v->is_string()) {
      return Status{Errc::kProtocol, "register reply: '" + std::string(key) +
                                         "' is missing or not a string"};
    }
    *out = std::string(v->as_string());
  }
  const json::value* ss = o.if_contains(rep::kSystemSlot);
  if (ss == nullptr || !ss->is_string()) {
    return Status{Errc::kProtocol, "register reply: 'system_slot' is missing or not a string"};
  }
  r.system_slot_in_table = ss->as_string() == rep::kSystemSlotTable;
  const json::value* m = o.if_contains(rep::kMode);
  r.cluster = m != nullptr && m->is_string() && m->as_string() == rep::kModeCluster;
  if (const json::value* c = o.if_contains(rep::kCapacity); c != nullptr && c->is_number()) {
    r.capacity = c->to_number<std::uint32_t>(ec);
    if (ec) r.capacity = 0;
  }
  r.version = 1;  // a broker before the handshake
  if (const json::value* v = o.if_contains(rep::kVersion); v != nullptr) {
    if (!v->is_int64()) return Status{Errc::kProtocol, "register reply: 'version' is not an integer"};
    r.version = v->as_int64();
  }
  return r;
}

}  // namespace local_protocol
}  // namespace dsb

#endif  // DSB_COMMON_LOCAL_PROTOCOL_H_
