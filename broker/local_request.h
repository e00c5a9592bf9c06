// The requests clients and dsbctl send on the broker's local socket, parsed from one
// frame's body (a JSON object; the framing is common/local_frame.h). A pure function of
// the bytes: the broker dispatches on the result (its dispatch table is in
// local_server.cc), tests/fuzz/local_request_fuzz.cc fuzzes it. Every op, field and
// range, and the version rule, are documented in common/local_protocol.h.
#ifndef DSB_BROKER_LOCAL_REQUEST_H_
#define DSB_BROKER_LOCAL_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/local_protocol.h"
#include "common/status.h"

namespace dsb::broker {

// The ops (common/local_protocol.h names them on the wire).
using LocalOp = local_protocol::Op;

// One parsed request. Only the fields of `op` are set; the others keep their defaults.
struct LocalRequest {
  LocalOp op = LocalOp::kPing;
  // The protocol version spoken on this request: the newest the peer and the
  // broker both speak (local_protocol::NegotiateVersion; 1 when it sent none).
  std::int64_t version = 1;
  // kRegister, kSetLimit: the target's name as sent (unchecked against the config).
  std::string target;
  // kConfirmStopped, kRevoke, kDrain, kUndrain: the broker id (1..128 bytes,
  // unchecked against the config). kRevoke's `target` may be empty (all).
  std::string broker;
  // kRevoke: a forced revoke, and the operator's word that the broker is dead.
  bool force = false;
  bool confirm_dead = false;
  // kRegister: the client's name for logs and `dsbctl clients`, stored escaped
  // (EscapeText, <= 64 bytes): a name is a label, so one with control
  // characters, ESC sequences, newlines or bytes that are not UTF-8 is taken,
  // not refused (a DigiScope instance must not fail to register over its
  // label), but those show as visible escapes ("\x1b", "\n") everywhere: logs,
  // replies, `dsbctl clients` and its JSON. Escaping it again is a no-op.
  std::string name = "client";
  // kRegister: adoption by a client of the previous broker (owner != 0 when set).
  std::optional<std::uint32_t> owner;
  std::optional<std::string> instance;  // as sent, with `owner`; one not a string is refused
  // kReportSessionLimit: the refused attempt's permit, both or neither.
  std::optional<std::uint32_t> slot;
  std::optional<std::uint64_t> word;
  std::string detail;  // escaped like `name`, <= 200 bytes
  // kSetLimit: 1..65535.
  std::uint32_t limit = 0;
};

// Parses one request body. One rule for every integer field (version,
// min_version, owner, slot, word, limit): a JSON integer, digits only (1.0,
// 1e3, "1", true are refused whatever their value), within the field's range.
// Success: the request, every field within the ranges above; `version` is the
//   one negotiated (local_protocol::NegotiateVersion).
// Failure (every message names the field and echoes the value, escaped and
//   cut, with its JSON type):
//   kProtocol "request is not a JSON object: <the parser's error, e.g. its
//   nesting limit, or the value's type>"; "'version' must be an integer between
//   .., got V (T)" (likewise 'min_version', at most 'version'); the refusal of
//   NegotiateVersion (checked before the op; the broker's reply adds its range,
//   local_protocol::RefusalReply); "request has no 'op'", "'op' must be a string,
//   got V (T)", "unknown op '<op>' (known: <every op of local_protocol::kOps>)";
//   "register: needs a string 'target'", "register: 'target'|'instance' must be a
//   string, got V (T)", "register: 'owner' must be an integer between 1 and
//   4294967295, got V (T)".
//   kInvalidArgument "set_limit: needs a string 'target'" / "needs an integer
//   'limit'", "set_limit: 'target' must be a string, got V (T)", "set_limit:
//   'limit' must be an integer between .., got V (T)", "set_limit: limit must be
//   between 1 and 65535, got N" (local_protocol::CheckLimit); "confirm_stopped:
//   needs a string 'broker'", "confirm_stopped: 'broker': a broker id must be
//   1..128 bytes, got N" (local_protocol::CheckBrokerId); the same for
//   revoke, drain and undrain ("revoke: needs a string 'broker'", ...), and
//   "revoke: 'target' must be a string, got V (T)", "revoke: 'force' must be a
//   boolean, got V (T)" (likewise 'confirm_dead').
//   report_session_limit never fails over its permit: a slot or word that is
//   missing or invalid drops the pair (an older client's report).
//   Messages are printable ASCII whatever the input (echoed bytes are escaped).
// Never throws (but std::bad_alloc).
Result<LocalRequest> ParseLocalRequest(std::string_view body);

// The op's name as sent on the wire ("register", ...).
const char* LocalOpName(LocalOp op);

}  // namespace dsb::broker

#endif  // DSB_BROKER_LOCAL_REQUEST_H_
