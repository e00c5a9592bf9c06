#include "broker/local_request.h"

#include <boost/json.hpp>

#include <algorithm>
#include <limits>

#include "broker/config/quote.h"
#include "common/escape.h"

namespace dsb::broker {
namespace {

namespace json = boost::json;
namespace req = local_protocol::req;

constexpr std::size_t kMaxName = 64;
constexpr std::size_t kMaxDetail = 200;

// A peer's text as stored and shown: escaped (common/escape.h) and at most
// `max` bytes. Only the first 4 * max bytes are looked at (escapes take up to
// 4 bytes per byte, so more could never show).
std::string Escaped(const json::string& s, std::size_t max) {
  return EscapeText(std::string_view(s.data(), std::min(s.size(), 4 * max)), max);
}

// A JSON number that is an integer in [lo, hi] (1.0 counts; 1.5 and 1e30 do not).
std::optional<std::uint64_t> Integer(const json::value* v, std::uint64_t lo, std::uint64_t hi) {
  if (v == nullptr || !v->is_number()) return std::nullopt;
  boost::system::error_code ec;
  const auto n = v->to_number<std::uint64_t>(ec);
  if (ec || n < lo || n > hi) return std::nullopt;
  return n;
}

}  // namespace

const char* LocalOpName(LocalOp op) { return local_protocol::OpWireName(op).data(); }

Result<LocalRequest> ParseLocalRequest(std::string_view body) {
  boost::system::error_code jec;
  json::value v = json::parse(body, jec);
  if (jec || !v.is_object()) return Status{Errc::kProtocol, "request is not a JSON object"};
  const json::object& q = v.as_object();
  LocalRequest r;
  // The version first: a newer client's request may mean something else.
  if (const json::value* ver = q.if_contains(req::kVersion); ver != nullptr) {
    if (!ver->is_int64()) return Status{Errc::kProtocol, "'version' must be an integer"};
    r.version = ver->as_int64();
  }
  if (Status s = local_protocol::CheckClientVersion(r.version); !s.ok()) return s;
  const json::value* op = q.if_contains(req::kOp);
  if (op == nullptr || !op->is_string()) return Status{Errc::kProtocol, "request has no 'op'"};
  const json::string& name = op->as_string();
  const std::optional<LocalOp> found = local_protocol::OpNamed(std::string_view(name));
  if (!found) {
    return Status{Errc::kProtocol, "unknown op '" +
                                       config::Printable(std::string_view(name), 64) +
                                       "' (known: " + local_protocol::KnownOps() + ")"};
  }
  r.op = *found;
  switch (r.op) {
    case LocalOp::kRegister: {
      const json::value* tv = q.if_contains(req::kTarget);
      if (tv == nullptr || !tv->is_string()) {
        return Status{Errc::kProtocol, "register needs a string 'target'"};
      }
      r.target = std::string(tv->as_string());
      if (const json::value* n = q.if_contains(req::kName); n != nullptr && n->is_string()) {
        r.name = Escaped(n->as_string(), kMaxName);
      }
      if (const json::value* ov = q.if_contains(req::kOwner); ov != nullptr) {
        const auto owner = Integer(ov, 1, std::numeric_limits<std::uint32_t>::max());
        if (!owner) {
          return Status{Errc::kProtocol,
                        "register: 'owner' must be an integer between 1 and 4294967295"};
        }
        r.owner = static_cast<std::uint32_t>(*owner);
        if (const json::value* iv = q.if_contains(req::kInstance); iv != nullptr && iv->is_string()) {
          r.instance = std::string(iv->as_string());
        }
      }
      break;
    }
    case LocalOp::kReportSessionLimit: {
      const auto slot = Integer(q.if_contains(req::kSlot), 0, std::numeric_limits<std::uint32_t>::max());
      const auto word = Integer(q.if_contains(req::kWord), 0, std::numeric_limits<std::uint64_t>::max());
      if (slot && word) {
        r.slot = static_cast<std::uint32_t>(*slot);
        r.word = *word;
      }
      if (const json::value* d = q.if_contains(req::kDetail); d != nullptr && d->is_string()) {
        r.detail = Escaped(d->as_string(), kMaxDetail);
      }
      break;
    }
    case LocalOp::kSetLimit: {
      const json::value* tv = q.if_contains(req::kTarget);
      const json::value* lv = q.if_contains(req::kLimit);
      if (tv == nullptr || !tv->is_string() || lv == nullptr || !lv->is_int64()) {
        return Status{Errc::kInvalidArgument,
                      "set_limit needs a string 'target' and an integer 'limit'"};
      }
      const std::int64_t value = lv->as_int64();
      if (value < 1 || value > 65535) {
        return Status{Errc::kInvalidArgument,
                      "limit must be between 1 and 65535, got " + std::to_string(value)};
      }
      r.target = std::string(tv->as_string());
      r.limit = static_cast<std::uint32_t>(value);
      break;
    }
    case LocalOp::kConfirmStopped: {
      const json::value* bv = q.if_contains(req::kBroker);
      if (bv == nullptr || !bv->is_string() || bv->as_string().empty() ||
          bv->as_string().size() > 128) {
        return Status{Errc::kInvalidArgument, "confirm_stopped needs a broker id (1..128 bytes)"};
      }
      r.broker = std::string(bv->as_string());
      break;
    }
    case LocalOp::kGoodbye:
    case LocalOp::kStatus:
    case LocalOp::kClients:
    case LocalOp::kLeases:
    case LocalOp::kPing:
      break;
  }
  return r;
}

}  // namespace dsb::broker
