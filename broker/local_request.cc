#include "broker/local_request.h"

#include <boost/json.hpp>

#include <algorithm>
#include <limits>
#include <utility>

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

// "a string", "an integer", ...: a JSON value's type, for messages.
const char* TypeOf(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64: return "an integer";
    case json::kind::double_: return "a number with a fraction or exponent";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "?";
}

// "got VALUE (TYPE)": the value as sent (serialized, escaped, cut to 40 bytes).
std::string Got(const json::value& v) {
  return "got " + config::Printable(json::serialize(v), 40) + " (" + TypeOf(v) + ")";
}

// The one reader of integer fields. The rule for every field: a JSON integer
// (digits only: 1.0, 1e3, "1" and true are refused, whatever their value) in
// [lo, hi]. Failure: `code` "<where>'<field>' must be an integer between lo
// and hi, got VALUE (TYPE)", or "<where>needs an integer '<field>'" if absent.
template <typename T>
Result<T> IntegerField(const json::object& q, std::string_view field, T lo, T hi, Errc code,
                       const std::string& where) {
  const json::value* v = q.if_contains(field);
  if (v == nullptr) {
    return Status{code, where + "needs an integer '" + std::string(field) + "'"};
  }
  if (v->is_int64() && std::cmp_greater_equal(v->get_int64(), lo) &&
      std::cmp_less_equal(v->get_int64(), hi)) {
    return static_cast<T>(v->get_int64());
  }
  if (v->is_uint64() && std::cmp_greater_equal(v->get_uint64(), lo) &&
      std::cmp_less_equal(v->get_uint64(), hi)) {
    return static_cast<T>(v->get_uint64());
  }
  return Status{code, where + "'" + std::string(field) + "' must be an integer between " +
                          std::to_string(lo) + " and " + std::to_string(hi) + ", " + Got(*v)};
}

// A string field: nullptr if absent; refused (`code`, naming field and value)
// if present but not a string.
Result<const json::string*> StringField(const json::object& q, std::string_view field, Errc code,
                                        const std::string& where) {
  const json::value* v = q.if_contains(field);
  if (v == nullptr) return static_cast<const json::string*>(nullptr);
  if (!v->is_string()) {
    return Status{code, where + "'" + std::string(field) + "' must be a string, " + Got(*v)};
  }
  return &v->get_string();
}

// A string field that must be there.
Result<const json::string*> RequiredString(const json::object& q, std::string_view field,
                                           Errc code, const std::string& where) {
  auto s = StringField(q, field, code, where);
  if (s.ok() && *s == nullptr) {
    return Status{code, where + "needs a string '" + std::string(field) + "'"};
  }
  return s;
}

// A boolean field: false if absent; refused (`code`, naming field and value)
// if present but not true or false.
Result<bool> BoolField(const json::object& q, std::string_view field, Errc code,
                       const std::string& where) {
  const json::value* v = q.if_contains(field);
  if (v == nullptr) return false;
  if (!v->is_bool()) {
    return Status{code, where + "'" + std::string(field) + "' must be a boolean, " + Got(*v)};
  }
  return v->get_bool();
}

}  // namespace

const char* LocalOpName(LocalOp op) { return local_protocol::OpWireName(op).data(); }

Result<LocalRequest> ParseLocalRequest(std::string_view body) {
  boost::system::error_code jec;
  json::value v = json::parse(body, jec);  // nesting limit: json::parse_options().max_depth
  if (jec) {
    std::string why = jec.message();
    if (jec == json::error::too_deep) {
      why += " (more than " + std::to_string(json::parse_options().max_depth) +
             " levels of nesting)";
    }
    return Status{Errc::kProtocol,
                  "request is not a JSON object: " + config::Printable(why, 120)};
  }
  if (!v.is_object()) {
    return Status{Errc::kProtocol, "request is not a JSON object: " + Got(v)};
  }
  const json::object& q = v.as_object();
  LocalRequest r;
  // The version first: a newer client's request may mean something else.
  using I64 = std::int64_t;
  constexpr I64 kMin = std::numeric_limits<I64>::min();
  constexpr I64 kMax = std::numeric_limits<I64>::max();
  local_protocol::VersionRange client{1, 1};
  if (q.contains(req::kVersion)) {
    auto ver = IntegerField<I64>(q, req::kVersion, kMin, kMax, Errc::kProtocol, "");
    if (!ver.ok()) return ver.status();
    client = {*ver, *ver};
  }
  if (q.contains(req::kMinVersion)) {
    auto min = IntegerField<I64>(q, req::kMinVersion, kMin, client.max, Errc::kProtocol, "");
    if (!min.ok()) {
      return Status{Errc::kProtocol, min.status().message() + " (at most 'version', " +
                                         std::to_string(client.max) + ")"};
    }
    client.min = *min;
  }
  auto common = local_protocol::NegotiateVersion(client, local_protocol::kOwnVersions);
  if (!common.ok()) return common.status();
  r.version = *common;
  const json::value* op = q.if_contains(req::kOp);
  if (op == nullptr) return Status{Errc::kProtocol, "request has no 'op'"};
  if (!op->is_string()) {
    return Status{Errc::kProtocol, "'op' must be a string, " + Got(*op)};
  }
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
      const std::string where = "register: ";
      auto target = RequiredString(q, req::kTarget, Errc::kProtocol, where);
      if (!target.ok()) return target.status();
      r.target = std::string(**target);
      // A name is a label: one that is not a string is left out, not refused.
      if (const json::value* n = q.if_contains(req::kName); n != nullptr && n->is_string()) {
        r.name = Escaped(n->as_string(), kMaxName);
      }
      auto instance = StringField(q, req::kInstance, Errc::kProtocol, where);
      if (!instance.ok()) return instance.status();
      if (q.contains(req::kOwner)) {
        auto owner = IntegerField<std::uint32_t>(
            q, req::kOwner, 1, std::numeric_limits<std::uint32_t>::max(), Errc::kProtocol, where);
        if (!owner.ok()) return owner.status();
        r.owner = *owner;
        if (*instance != nullptr) r.instance = std::string(**instance);
      }
      break;
    }
    case LocalOp::kReportSessionLimit: {
      // An older client's report without a usable permit is still a report:
      // a slot or word that is missing or not a valid integer drops the pair.
      auto slot = IntegerField<std::uint32_t>(q, req::kSlot, 0,
                                              std::numeric_limits<std::uint32_t>::max(),
                                              Errc::kProtocol, "");
      auto word = IntegerField<std::uint64_t>(q, req::kWord, 0,
                                              std::numeric_limits<std::uint64_t>::max(),
                                              Errc::kProtocol, "");
      if (slot.ok() && word.ok()) {
        r.slot = *slot;
        r.word = *word;
      }
      if (const json::value* d = q.if_contains(req::kDetail); d != nullptr && d->is_string()) {
        r.detail = Escaped(d->as_string(), kMaxDetail);
      }
      break;
    }
    case LocalOp::kSetLimit: {
      const std::string where = "set_limit: ";
      auto target = RequiredString(q, req::kTarget, Errc::kInvalidArgument, where);
      if (!target.ok()) return target.status();
      auto limit = IntegerField<I64>(q, req::kLimit, kMin, kMax, Errc::kInvalidArgument, where);
      if (!limit.ok()) return limit.status();
      if (Status s = local_protocol::CheckLimit(*limit); !s.ok()) {
        return Status{s.code(), where + s.message()};
      }
      r.target = std::string(**target);
      r.limit = static_cast<std::uint32_t>(*limit);
      break;
    }
    case LocalOp::kConfirmStopped:
    case LocalOp::kRevoke:
    case LocalOp::kDrain:
    case LocalOp::kUndrain: {
      const std::string where = std::string(local_protocol::OpWireName(r.op)) + ": ";
      auto broker = RequiredString(q, req::kBroker, Errc::kInvalidArgument, where);
      if (!broker.ok()) return broker.status();
      const std::string_view id(**broker);
      if (Status s = local_protocol::CheckBrokerId(id); !s.ok()) {
        return Status{s.code(), where + "'broker': " + s.message()};
      }
      r.broker = std::string(id);
      if (r.op != LocalOp::kRevoke) break;
      auto target = StringField(q, req::kTarget, Errc::kInvalidArgument, where);
      if (!target.ok()) return target.status();
      if (*target != nullptr) r.target = std::string(**target);
      auto force = BoolField(q, req::kForce, Errc::kInvalidArgument, where);
      if (!force.ok()) return force.status();
      auto confirm = BoolField(q, req::kConfirmDead, Errc::kInvalidArgument, where);
      if (!confirm.ok()) return confirm.status();
      r.force = *force;
      r.confirm_dead = *confirm;
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
