#include "broker/local_request.h"

#include <boost/json.hpp>

#include <algorithm>
#include <limits>

#include "broker/config/quote.h"
#include "common/escape.h"

namespace dsb::broker {
namespace {

namespace json = boost::json;

constexpr std::size_t kMaxName = 64;
constexpr std::size_t kMaxDetail = 200;

struct OpName {
  const char* name;
  LocalOp op;
};
constexpr OpName kOps[] = {
    {"register", LocalOp::kRegister},   {"report_session_limit", LocalOp::kReportSessionLimit},
    {"status", LocalOp::kStatus},       {"clients", LocalOp::kClients},
    {"leases", LocalOp::kLeases},       {"set_limit", LocalOp::kSetLimit},
    {"goodbye", LocalOp::kGoodbye},     {"ping", LocalOp::kPing},
    {"confirm_stopped", LocalOp::kConfirmStopped},
};

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

const char* LocalOpName(LocalOp op) {
  for (const OpName& o : kOps) {
    if (o.op == op) return o.name;
  }
  return "?";
}

Result<LocalRequest> ParseLocalRequest(std::string_view body) {
  boost::system::error_code jec;
  json::value v = json::parse(body, jec);
  if (jec || !v.is_object()) return Status{Errc::kProtocol, "request is not a JSON object"};
  const json::object& req = v.as_object();
  const json::value* op = req.if_contains("op");
  if (op == nullptr || !op->is_string()) return Status{Errc::kProtocol, "request has no 'op'"};
  LocalRequest r;
  const json::string& name = op->as_string();
  const OpName* found = std::find_if(std::begin(kOps), std::end(kOps),
                                     [&](const OpName& o) { return name == o.name; });
  if (found == std::end(kOps)) {
    return Status{Errc::kProtocol,
                  "unknown op '" + config::Printable(std::string_view(name), 64) +
                      "' (known: register, report_session_limit, status, clients, leases, "
                      "set_limit, goodbye, ping, confirm_stopped)"};
  }
  r.op = found->op;
  switch (r.op) {
    case LocalOp::kRegister: {
      const json::value* tv = req.if_contains("target");
      if (tv == nullptr || !tv->is_string()) {
        return Status{Errc::kProtocol, "register needs a string 'target'"};
      }
      r.target = std::string(tv->as_string());
      if (const json::value* n = req.if_contains("name"); n != nullptr && n->is_string()) {
        r.name = Escaped(n->as_string(), kMaxName);
      }
      if (const json::value* ov = req.if_contains("owner"); ov != nullptr) {
        const auto owner = Integer(ov, 1, std::numeric_limits<std::uint32_t>::max());
        if (!owner) {
          return Status{Errc::kProtocol,
                        "register: 'owner' must be an integer between 1 and 4294967295"};
        }
        r.owner = static_cast<std::uint32_t>(*owner);
        if (const json::value* iv = req.if_contains("instance"); iv != nullptr && iv->is_string()) {
          r.instance = std::string(iv->as_string());
        }
      }
      break;
    }
    case LocalOp::kReportSessionLimit: {
      const auto slot = Integer(req.if_contains("slot"), 0, std::numeric_limits<std::uint32_t>::max());
      const auto word = Integer(req.if_contains("word"), 0, std::numeric_limits<std::uint64_t>::max());
      if (slot && word) {
        r.slot = static_cast<std::uint32_t>(*slot);
        r.word = *word;
      }
      if (const json::value* d = req.if_contains("detail"); d != nullptr && d->is_string()) {
        r.detail = Escaped(d->as_string(), kMaxDetail);
      }
      break;
    }
    case LocalOp::kSetLimit: {
      const json::value* tv = req.if_contains("target");
      const json::value* lv = req.if_contains("limit");
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
      const json::value* bv = req.if_contains("broker");
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
