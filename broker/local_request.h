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
  // The protocol version the peer speaks (1 when it sent none); within
  // [kMinLocalProtocolVersion, kLocalProtocolVersion] (others are refused).
  std::int64_t version = 1;
  // kRegister, kSetLimit: the target's name as sent (unchecked against the config).
  std::string target;
  // kConfirmStopped: the broker id (1..128 bytes, unchecked against the config).
  std::string broker;
  // kRegister: the client's name for logs and `dsbctl clients`, stored escaped
  // (EscapeText, <= 64 bytes): a name is a label, so one with control
  // characters, ESC sequences, newlines or bytes that are not UTF-8 is taken,
  // not refused (a DigiScope instance must not fail to register over its
  // label), but those show as visible escapes ("\x1b", "\n") everywhere: logs,
  // replies, `dsbctl clients` and its JSON. Escaping it again is a no-op.
  std::string name = "client";
  // kRegister: adoption by a client of the previous broker (owner != 0 when set).
  std::optional<std::uint32_t> owner;
  std::optional<std::string> instance;  // as sent; nullopt when missing or not a string
  // kReportSessionLimit: the refused attempt's permit, both or neither.
  std::optional<std::uint32_t> slot;
  std::optional<std::uint64_t> word;
  std::string detail;  // escaped like `name`, <= 200 bytes
  // kSetLimit: 1..65535.
  std::uint32_t limit = 0;
};

// Parses one request body.
// Success: the request, every field within the ranges above.
// Failure: kProtocol "request is not a JSON object", "'version' must be an integer",
//   the version refusal of local_protocol::CheckClientVersion (checked before the op),
//   "request has no 'op'", "unknown op '<op>' (known: <every op of local_protocol::kOps>)",
//   "register needs a string 'target'", "register: 'owner' must be
//   an integer between 1 and 4294967295"; kInvalidArgument "set_limit needs a string
//   'target' and an integer 'limit'", "limit must be between 1 and 65535, got N".
//   Messages are printable ASCII whatever the input (echoed bytes are escaped).
// Never throws (but std::bad_alloc).
Result<LocalRequest> ParseLocalRequest(std::string_view body);

// The op's name as sent on the wire ("register", ...).
const char* LocalOpName(LocalOp op);

}  // namespace dsb::broker

#endif  // DSB_BROKER_LOCAL_REQUEST_H_
