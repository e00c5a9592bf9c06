#include "broker/wire/codec.h"

#include <algorithm>
#include <limits>
#include <set>
#include <type_traits>
#include <utility>

#include "common/check.h"

namespace dsb::wire {
namespace {

// ---- Field rules ----

bool IsControl(std::uint32_t cp) { return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0); }

// Decodes one UTF-8 sequence at `s[*i]`; advances *i. False if ill-formed.
bool NextCodePoint(std::string_view s, std::size_t* i, std::uint32_t* cp) {
  const auto byte = [&](std::size_t k) { return static_cast<std::uint8_t>(s[k]); };
  const std::uint8_t b0 = byte(*i);
  std::size_t len = 0;
  std::uint32_t value = 0;
  std::uint32_t min = 0;
  if (b0 < 0x80) {
    *cp = b0;
    ++*i;
    return true;
  } else if ((b0 & 0xe0) == 0xc0) {
    len = 2, value = b0 & 0x1fu, min = 0x80;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3, value = b0 & 0x0fu, min = 0x800;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4, value = b0 & 0x07u, min = 0x10000;
  } else {
    return false;
  }
  if (s.size() - *i < len) return false;
  for (std::size_t k = 1; k < len; ++k) {
    const std::uint8_t b = byte(*i + k);
    if ((b & 0xc0) != 0x80) return false;
    value = (value << 6) | (b & 0x3fu);
  }
  if (value < min || value > 0x10ffff || (value >= 0xd800 && value <= 0xdfff)) return false;
  *cp = value;
  *i += len;
  return true;
}

Status Refuse(Errc code, std::string_view field, std::string_view what) {
  return Status(code, std::string(field) + ": " + std::string(what));
}

Status CheckUtf8Text(Errc code, std::string_view field, std::string_view value,
                     std::size_t max_bytes, bool allow_empty) {
  if (value.empty() && !allow_empty) return Refuse(code, field, "must not be empty");
  if (value.size() > max_bytes) {
    return Refuse(code, field,
                  std::to_string(value.size()) + " bytes exceeds the limit of " +
                      std::to_string(max_bytes));
  }
  if (!IsValidUtf8(value)) return Refuse(code, field, "is not valid UTF-8");
  return Status::Ok();
}

// UTF-8 text without control characters (so it can be logged as it is).
Status CheckPrintable(Errc code, std::string_view field, std::string_view value,
                      std::size_t max_bytes, bool allow_empty) {
  if (Status s = CheckUtf8Text(code, field, value, max_bytes, allow_empty); !s.ok()) return s;
  std::size_t i = 0;
  std::uint32_t cp = 0;
  while (i < value.size()) {
    const std::size_t at = i;
    if (!NextCodePoint(value, &i, &cp)) return Refuse(code, field, "is not valid UTF-8");
    if (IsControl(cp)) {
      return Refuse(code, field, "has a control character at byte " + std::to_string(at));
    }
  }
  return Status::Ok();
}

Status CheckIdWith(Errc code, std::string_view field, std::string_view value) {
  return CheckPrintable(code, field, value, kMaxIdBytes, false);
}

Status CheckHashWith(Errc code, std::string_view field, std::string_view value) {
  if (value.empty()) return Refuse(code, field, "must not be empty");
  if (value.size() > kMaxClusterHashBytes) {
    return Refuse(code, field,
                  std::to_string(value.size()) + " bytes exceeds the limit of " +
                      std::to_string(kMaxClusterHashBytes));
  }
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c < 0x21 || c > 0x7e) {
      return Refuse(code, field, "has a non-printable byte at " + std::to_string(i));
    }
  }
  return Status::Ok();
}

// Checks a list of targets: count bound, ids, no name twice.
template <typename T>
Status CheckTargets(Errc code, std::string_view field, const std::vector<T>& targets) {
  if (targets.size() > kMaxTargetsPerMessage) {
    return Refuse(code, field,
                  std::to_string(targets.size()) + " targets exceeds the limit of " +
                      std::to_string(kMaxTargetsPerMessage));
  }
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const std::string name = std::string(field) + "[" + std::to_string(i) + "].target";
    if (Status s = CheckIdWith(code, name, targets[i].target); !s.ok()) return s;
    if (!seen.insert(targets[i].target).second) {
      return Refuse(code, name, "'" + targets[i].target + "' appears twice");
    }
  }
  return Status::Ok();
}

// Every rule a message must keep, in one place for encoder and decoder.
Status Validate(Errc code, const lease::RenewRequest& m) {
  if (Status s = CheckIdWith(code, "RenewRequest.broker_id", m.broker_id); !s.ok()) return s;
  if (!m.file_hash.empty()) {
    if (Status s = CheckHashWith(code, "RenewRequest.file_hash", m.file_hash); !s.ok()) return s;
  }
  return CheckTargets(code, "RenewRequest.targets", m.targets);
}
Status Validate(Errc code, const lease::Grant& m) {
  if (Status s = CheckIdWith(code, "Grant.broker_id", m.broker_id); !s.ok()) return s;
  if (m.term.count() < 0) return Refuse(code, "Grant.term", "is negative");
  const auto v = static_cast<unsigned>(m.verdict);
  if (v < 1 || v > 5) return Refuse(code, "Grant.verdict", std::to_string(v) + " is not a verdict");
  if (Status s = CheckPrintable(code, "Grant.reason", m.reason, kMaxErrorMessageBytes, true);
      !s.ok()) {
    return s;
  }
  if (Status s = CheckPrintable(code, "Grant.successor", m.successor, kMaxAddressBytes, true);
      !s.ok()) {
    return s;
  }
  return CheckTargets(code, "Grant.targets", m.targets);
}
Status Validate(Errc code, const lease::RefusalReport& m) {
  if (Status s = CheckIdWith(code, "RefusalReport.broker_id", m.broker_id); !s.ok()) return s;
  if (Status s = CheckIdWith(code, "RefusalReport.target", m.target); !s.ok()) return s;
  if (m.refusals == 0) return Refuse(code, "RefusalReport.refusals", "must be at least 1");
  return Status::Ok();
}
Status Validate(Errc code, const lease::Goodbye& m) {
  if (Status s = CheckIdWith(code, "Goodbye.broker_id", m.broker_id); !s.ok()) return s;
  return CheckTargets(code, "Goodbye.targets", m.targets);
}
Status Validate(Errc code, const lease::RevokeNotice& m) {
  return CheckIdWith(code, "RevokeNotice.broker_id", m.broker_id);
}
Status Validate(Errc code, const CoordinatorHello& m) {
  if (Status s = CheckIdWith(code, "CoordinatorHello.coordinator_id", m.coordinator_id); !s.ok()) {
    return s;
  }
  if (Status s = CheckHashWith(code, "CoordinatorHello.file_hash", m.file_hash); !s.ok()) return s;
  return CheckPrintable(code, "CoordinatorHello.address", m.address, kMaxAddressBytes, true);
}
Status Validate(Errc code, const HelloReply& m) {
  if (Status s = CheckIdWith(code, "HelloReply.broker_id", m.broker_id); !s.ok()) return s;
  if (Status s = CheckHashWith(code, "HelloReply.file_hash", m.file_hash); !s.ok()) return s;
  if (Status s = CheckIdWith(code, "HelloReply.coordinator_id", m.coordinator_id); !s.ok()) return s;
  if (Status s = CheckPrintable(code, "HelloReply.coordinator_address", m.coordinator_address,
                                kMaxAddressBytes, true);
      !s.ok()) {
    return s;
  }
  if (m.records.size() > kMaxRecordsPerMessage) {
    return Refuse(code, "HelloReply.records", "more than " + std::to_string(kMaxRecordsPerMessage));
  }
  for (const auto& r : m.records) {
    if (Status s = CheckIdWith(code, "HelloReply.records.broker_id", r.broker_id); !s.ok()) return s;
    if (r.targets.size() > kMaxTargetsPerMessage || r.system_slots.size() != r.targets.size() ||
        r.floors.size() != r.targets.size()) {
      return Refuse(code, "HelloReply.records.targets", "lists of different lengths");
    }
    for (const auto& t : r.targets) {
      if (Status s = CheckIdWith(code, "HelloReply.records.targets", t); !s.ok()) return s;
    }
  }
  return Status::Ok();
}
Status Validate(Errc code, const AdminRequest& m) {
  return CheckUtf8Text(code, "AdminRequest.json", m.json, kMaxAdminJsonBytes, false);
}
Status Validate(Errc code, const AdminReply& m) {
  return CheckUtf8Text(code, "AdminReply.json", m.json, kMaxAdminJsonBytes, false);
}
Status Validate(Errc code, const ErrorReply& m) {
  const int value = static_cast<int>(m.code);
  if (value <= 0) return Refuse(code, "ErrorReply.code", "must be a positive error code");
  return CheckPrintable(code, "ErrorReply.message", m.message, kMaxErrorMessageBytes, true);
}
Status Validate(Errc code, const ClientHello& m) {
  if (Status s = CheckIdWith(code, "ClientHello.broker_id", m.broker_id); !s.ok()) return s;
  return CheckHashWith(code, "ClientHello.cluster_hash", m.cluster_hash);
}
Status Validate(Errc code, const ServerHello& m) {
  if (Status s = CheckIdWith(code, "ServerHello.broker_id", m.broker_id); !s.ok()) return s;
  return CheckHashWith(code, "ServerHello.cluster_hash", m.cluster_hash);
}
Status Validate(Errc, const ClientFinish&) { return Status::Ok(); }
Status Validate(Errc, const HandshakeDone&) { return Status::Ok(); }

// ---- Writer ----

class Writer {
 public:
  void U8(std::uint8_t v) { out_.push_back(v); }
  void U16(std::uint16_t v) { Le(v, 2); }
  void U32(std::uint32_t v) { Le(v, 4); }
  void U64(std::uint64_t v) { Le(v, 8); }
  void I64(std::int64_t v) { Le(static_cast<std::uint64_t>(v), 8); }
  void Raw(ByteView bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }
  // REQUIRES: the value was validated (so its size fits the prefix).
  void Str16(std::string_view s) {
    DSB_CHECK(s.size() <= std::numeric_limits<std::uint16_t>::max(), "string of %zu bytes", s.size());
    U16(static_cast<std::uint16_t>(s.size()));
    Chars(s);
  }
  void Str32(std::string_view s) {
    DSB_CHECK(s.size() <= std::numeric_limits<std::uint32_t>::max(), "string of %zu bytes", s.size());
    U32(static_cast<std::uint32_t>(s.size()));
    Chars(s);
  }
  Bytes Take() { return std::move(out_); }

 private:
  void Le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void Chars(std::string_view s) {
    for (char c : s) out_.push_back(static_cast<std::uint8_t>(c));
  }
  Bytes out_;
};

void Put(Writer& w, const lease::RenewRequest& m) {
  w.Str16(m.broker_id);
  w.U64(m.epoch);
  w.U64(m.instance);
  w.U64(m.request_id);
  w.U64(m.generation);
  w.Str16(m.file_hash);
  w.U8(m.erased ? 1 : 0);
  w.U16(static_cast<std::uint16_t>(m.targets.size()));
  for (const lease::TargetReport& t : m.targets) {
    w.Str16(t.target);
    w.U32(t.pool_held);
    w.U64(t.applied);
    w.U32(t.held);
    w.U32(t.waiting);
    w.U32(t.wanted);
    w.U32(t.registered);
  }
}
void Put(Writer& w, const lease::Grant& m) {
  w.Str16(m.broker_id);
  w.U64(m.epoch);
  w.U64(m.instance);
  w.U64(m.request_id);
  w.I64(m.term.count());
  w.U8(m.learning ? 1 : 0);
  w.U8(static_cast<std::uint8_t>(m.verdict));
  w.U64(m.generation);
  w.Str16(m.reason);
  w.Str16(m.successor);
  w.U16(static_cast<std::uint16_t>(m.targets.size()));
  for (const lease::TargetGrant& t : m.targets) {
    w.Str16(t.target);
    w.U32(t.amount);
  }
}
void Put(Writer& w, const lease::RefusalReport& m) {
  w.Str16(m.broker_id);
  w.U64(m.epoch);
  w.U64(m.instance);
  w.Str16(m.target);
  w.U32(m.held);
  w.U32(m.refusals);
}
void Put(Writer& w, const lease::Goodbye& m) {
  w.Str16(m.broker_id);
  w.U64(m.epoch);
  w.U64(m.instance);
  w.U16(static_cast<std::uint16_t>(m.targets.size()));
  for (const lease::GoodbyeTarget& t : m.targets) {
    w.Str16(t.target);
    w.U32(t.pool_held);
    w.U32(t.actions);
    w.U32(t.registered);
  }
}
void Put(Writer& w, const lease::RevokeNotice& m) {
  w.Str16(m.broker_id);
  w.U64(m.epoch);
}
void Put(Writer& w, const CoordinatorHello& m) {
  w.Str16(m.coordinator_id);
  w.U64(m.generation);
  w.Str16(m.file_hash);
  w.Str16(m.address);
}
void Put(Writer& w, const HelloReply& m) {
  w.Str16(m.broker_id);
  w.U64(m.generation);
  w.Str16(m.file_hash);
  w.Str16(m.coordinator_id);
  w.Str16(m.coordinator_address);
  w.U8(m.is_coordinator ? 1 : 0);
  w.U8(m.stopped ? 1 : 0);
  w.U8(m.conflict ? 1 : 0);
  w.U16(static_cast<std::uint16_t>(m.records.size()));
  for (const lease::AcceptanceRecord& r : m.records) {
    w.Str16(r.broker_id);
    w.U64(r.epoch);
    w.U64(r.instance);
    w.U64(r.generation);
    w.U16(static_cast<std::uint16_t>(r.targets.size()));
    for (std::size_t i = 0; i < r.targets.size(); ++i) {
      w.Str16(r.targets[i]);
      w.U32(r.system_slots[i]);
      w.U32(r.floors[i]);
    }
  }
}
void Put(Writer& w, const AdminRequest& m) { w.Str32(m.json); }
void Put(Writer& w, const AdminReply& m) { w.Str32(m.json); }
void Put(Writer& w, const ErrorReply& m) {
  w.U32(static_cast<std::uint32_t>(m.code));
  w.Str16(m.message);
}
void Put(Writer& w, const ClientHello& m) {
  w.Str16(m.broker_id);
  w.Str16(m.cluster_hash);
  w.Raw(m.nonce);
}
void Put(Writer& w, const ServerHello& m) {
  w.Str16(m.broker_id);
  w.Str16(m.cluster_hash);
  w.Raw(m.nonce);
  w.Raw(m.proof);
}
void Put(Writer& w, const ClientFinish& m) { w.Raw(m.proof); }
void Put(Writer&, const HandshakeDone&) {}

// ---- Reader ----

// Reads fields in order; the first failure sticks and later reads do nothing.
class Reader {
 public:
  Reader(ByteView in, const char* type) : in_(in), type_(type) {}

  bool U8(const char* field, std::uint8_t* v) {
    std::uint64_t x = 0;
    if (!Le(field, 1, &x)) return false;
    *v = static_cast<std::uint8_t>(x);
    return true;
  }
  bool U16(const char* field, std::uint16_t* v) {
    std::uint64_t x = 0;
    if (!Le(field, 2, &x)) return false;
    *v = static_cast<std::uint16_t>(x);
    return true;
  }
  bool U32(const char* field, std::uint32_t* v) {
    std::uint64_t x = 0;
    if (!Le(field, 4, &x)) return false;
    *v = static_cast<std::uint32_t>(x);
    return true;
  }
  bool U64(const char* field, std::uint64_t* v) { return Le(field, 8, v); }
  bool Bool(const char* field, bool* v) {
    std::uint8_t b = 0;
    if (!U8(field, &b)) return false;
    if (b > 1) return Fail(field, "boolean byte is " + std::to_string(b) + ", not 0 or 1");
    *v = b == 1;
    return true;
  }
  template <std::size_t N>
  bool Fixed(const char* field, std::array<std::uint8_t, N>* v) {
    if (!Need(field, N)) return false;
    std::copy_n(in_.begin() + static_cast<std::ptrdiff_t>(pos_), N, v->begin());
    pos_ += N;
    return true;
  }
  // A string with a u16 (wide=false) or u32 length prefix, at most `max` bytes.
  bool Str(const char* field, bool wide, std::size_t max, std::string* v) {
    std::uint64_t len = 0;
    if (!Le(field, wide ? 4 : 2, &len)) return false;
    if (len > max) {
      return Fail(field, "length " + std::to_string(len) + " exceeds the limit of " +
                             std::to_string(max));
    }
    const auto n = static_cast<std::size_t>(len);
    if (!Need(field, n)) return false;
    v->assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  // A list count bounded by `max` and by the bytes left at `min_item` each.
  bool Count(const char* field, std::size_t max, std::size_t min_item, std::size_t* n) {
    std::uint16_t c = 0;
    if (!U16(field, &c)) return false;
    if (c > max) {
      return Fail(field, "count " + std::to_string(c) + " exceeds the limit of " +
                             std::to_string(max));
    }
    if (static_cast<std::size_t>(c) * min_item > in_.size() - pos_) {
      return Fail(field, "count " + std::to_string(c) + " does not fit in the " +
                             std::to_string(in_.size() - pos_) + " bytes left");
    }
    *n = c;
    return true;
  }
  bool Fail(const char* field, const std::string& what) {
    if (status_.ok()) status_ = Refuse(Errc::kProtocol, std::string(type_) + "." + field, what);
    return false;
  }
  // The final verdict: the first failure, or trailing bytes, or OK.
  Status Finish() {
    if (!status_.ok()) return status_;
    if (pos_ != in_.size()) {
      return Status(Errc::kProtocol, std::string(type_) + ": " + std::to_string(in_.size() - pos_) +
                                         " trailing bytes after the message");
    }
    return Status::Ok();
  }
  bool ok() const { return status_.ok(); }

 private:
  bool Need(const char* field, std::size_t n) {
    if (!status_.ok()) return false;
    if (in_.size() - pos_ < n) {
      return Fail(field, "truncated: needs " + std::to_string(n) + " bytes, " +
                             std::to_string(in_.size() - pos_) + " left");
    }
    return true;
  }
  bool Le(const char* field, int n, std::uint64_t* v) {
    if (!Need(field, static_cast<std::size_t>(n))) return false;
    std::uint64_t x = 0;
    for (int i = 0; i < n; ++i) {
      x |= static_cast<std::uint64_t>(in_[pos_ + static_cast<std::size_t>(i)]) << (8 * i);
    }
    pos_ += static_cast<std::size_t>(n);
    *v = x;
    return true;
  }

  ByteView in_;
  std::size_t pos_ = 0;
  const char* type_;
  Status status_;
};

// Smallest encodings of list items, to bound counts by the bytes left.
constexpr std::size_t kMinTargetReport = 2 + 1 + 4 + 8 + 4 + 4 + 4 + 4;
constexpr std::size_t kMinGoodbyeTarget = 2 + 1 + 4 + 4 + 4;
constexpr std::size_t kMinRecord = 2 + 1 + 8 + 8 + 8 + 2;
constexpr std::size_t kMinRecordTarget = 2 + 1 + 4 + 4;
constexpr std::size_t kMinTargetGrant = 2 + 1 + 4;

void Get(Reader& r, lease::RenewRequest* m) {
  r.Str("broker_id", false, kMaxIdBytes, &m->broker_id);
  r.U64("epoch", &m->epoch);
  r.U64("instance", &m->instance);
  r.U64("request_id", &m->request_id);
  r.U64("generation", &m->generation);
  r.Str("file_hash", false, kMaxClusterHashBytes, &m->file_hash);
  r.Bool("erased", &m->erased);
  std::size_t n = 0;
  if (!r.Count("targets", kMaxTargetsPerMessage, kMinTargetReport, &n)) return;
  m->targets.resize(n);
  for (lease::TargetReport& t : m->targets) {
    r.Str("targets.target", false, kMaxIdBytes, &t.target);
    r.U32("targets.pool_held", &t.pool_held);
    r.U64("targets.applied", &t.applied);
    r.U32("targets.held", &t.held);
    r.U32("targets.waiting", &t.waiting);
    r.U32("targets.wanted", &t.wanted);
    r.U32("targets.registered", &t.registered);
    if (!r.ok()) return;
  }
}
void Get(Reader& r, lease::Grant* m) {
  r.Str("broker_id", false, kMaxIdBytes, &m->broker_id);
  r.U64("epoch", &m->epoch);
  r.U64("instance", &m->instance);
  r.U64("request_id", &m->request_id);
  std::uint64_t term = 0;
  if (r.U64("term", &term)) {
    if (term > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      r.Fail("term", "is negative");
      return;
    }
    m->term = lease::Duration(static_cast<std::int64_t>(term));
  }
  r.Bool("learning", &m->learning);
  std::uint8_t verdict = 0;
  if (r.U8("verdict", &verdict)) {
    if (verdict < 1 || verdict > 5) {
      r.Fail("verdict", std::to_string(verdict) + " is not a verdict");
      return;
    }
    m->verdict = static_cast<lease::Verdict>(verdict);
  }
  r.U64("generation", &m->generation);
  r.Str("reason", false, kMaxErrorMessageBytes, &m->reason);
  r.Str("successor", false, kMaxAddressBytes, &m->successor);
  std::size_t n = 0;
  if (!r.Count("targets", kMaxTargetsPerMessage, kMinTargetGrant, &n)) return;
  m->targets.resize(n);
  for (lease::TargetGrant& t : m->targets) {
    r.Str("targets.target", false, kMaxIdBytes, &t.target);
    r.U32("targets.amount", &t.amount);
    if (!r.ok()) return;
  }
}
void Get(Reader& r, lease::RefusalReport* m) {
  r.Str("broker_id", false, kMaxIdBytes, &m->broker_id);
  r.U64("epoch", &m->epoch);
  r.U64("instance", &m->instance);
  r.Str("target", false, kMaxIdBytes, &m->target);
  r.U32("held", &m->held);
  r.U32("refusals", &m->refusals);
}
void Get(Reader& r, lease::Goodbye* m) {
  r.Str("broker_id", false, kMaxIdBytes, &m->broker_id);
  r.U64("epoch", &m->epoch);
  r.U64("instance", &m->instance);
  std::size_t n = 0;
  if (!r.Count("targets", kMaxTargetsPerMessage, kMinGoodbyeTarget, &n)) return;
  m->targets.resize(n);
  for (lease::GoodbyeTarget& t : m->targets) {
    r.Str("targets.target", false, kMaxIdBytes, &t.target);
    r.U32("targets.pool_held", &t.pool_held);
    r.U32("targets.actions", &t.actions);
    r.U32("targets.registered", &t.registered);
    if (!r.ok()) return;
  }
}
void Get(Reader& r, lease::RevokeNotice* m) {
  r.Str("broker_id", false, kMaxIdBytes, &m->broker_id);
  r.U64("epoch", &m->epoch);
}
void Get(Reader& r, CoordinatorHello* m) {
  r.Str("coordinator_id", false, kMaxIdBytes, &m->coordinator_id);
  r.U64("generation", &m->generation);
  r.Str("file_hash", false, kMaxClusterHashBytes, &m->file_hash);
  r.Str("address", false, kMaxAddressBytes, &m->address);
}
void Get(Reader& r, HelloReply* m) {
  r.Str("broker_id", false, kMaxIdBytes, &m->broker_id);
  r.U64("generation", &m->generation);
  r.Str("file_hash", false, kMaxClusterHashBytes, &m->file_hash);
  r.Str("coordinator_id", false, kMaxIdBytes, &m->coordinator_id);
  r.Str("coordinator_address", false, kMaxAddressBytes, &m->coordinator_address);
  r.Bool("is_coordinator", &m->is_coordinator);
  r.Bool("stopped", &m->stopped);
  r.Bool("conflict", &m->conflict);
  std::size_t n = 0;
  if (!r.Count("records", kMaxRecordsPerMessage, kMinRecord, &n)) return;
  m->records.resize(n);
  for (lease::AcceptanceRecord& rec : m->records) {
    r.Str("records.broker_id", false, kMaxIdBytes, &rec.broker_id);
    r.U64("records.epoch", &rec.epoch);
    r.U64("records.instance", &rec.instance);
    r.U64("records.generation", &rec.generation);
    std::size_t k = 0;
    if (!r.Count("records.targets", kMaxTargetsPerMessage, kMinRecordTarget, &k)) return;
    rec.targets.resize(k);
    rec.system_slots.resize(k);
    rec.floors.resize(k);
    for (std::size_t i = 0; i < k; ++i) {
      r.Str("records.targets.target", false, kMaxIdBytes, &rec.targets[i]);
      r.U32("records.targets.system_slots", &rec.system_slots[i]);
      r.U32("records.targets.floor", &rec.floors[i]);
      if (!r.ok()) return;
    }
  }
}
void Get(Reader& r, AdminRequest* m) { r.Str("json", true, kMaxAdminJsonBytes, &m->json); }
void Get(Reader& r, AdminReply* m) { r.Str("json", true, kMaxAdminJsonBytes, &m->json); }
void Get(Reader& r, ErrorReply* m) {
  std::uint32_t code = 0;
  if (r.U32("code", &code)) {
    if (code == 0 || code > static_cast<std::uint32_t>(std::numeric_limits<int>::max())) {
      r.Fail("code", std::to_string(code) + " is not an error code");
      return;
    }
    m->code = static_cast<Errc>(static_cast<int>(code));
  }
  r.Str("message", false, kMaxErrorMessageBytes, &m->message);
}
void Get(Reader& r, ClientHello* m) {
  r.Str("broker_id", false, kMaxIdBytes, &m->broker_id);
  r.Str("cluster_hash", false, kMaxClusterHashBytes, &m->cluster_hash);
  r.Fixed("nonce", &m->nonce);
}
void Get(Reader& r, ServerHello* m) {
  r.Str("broker_id", false, kMaxIdBytes, &m->broker_id);
  r.Str("cluster_hash", false, kMaxClusterHashBytes, &m->cluster_hash);
  r.Fixed("nonce", &m->nonce);
  r.Fixed("proof", &m->proof);
}
void Get(Reader& r, ClientFinish* m) { r.Fixed("proof", &m->proof); }
void Get(Reader&, HandshakeDone*) {}

template <typename T>
constexpr MessageType kTypeOf = MessageType::kErrorReply;
template <> constexpr MessageType kTypeOf<lease::RenewRequest> = MessageType::kRenewRequest;
template <> constexpr MessageType kTypeOf<lease::Grant> = MessageType::kGrant;
template <> constexpr MessageType kTypeOf<lease::RefusalReport> = MessageType::kRefusalReport;
template <> constexpr MessageType kTypeOf<lease::Goodbye> = MessageType::kGoodbye;
template <> constexpr MessageType kTypeOf<CoordinatorHello> = MessageType::kCoordinatorHello;
template <> constexpr MessageType kTypeOf<HelloReply> = MessageType::kHelloReply;
template <> constexpr MessageType kTypeOf<lease::RevokeNotice> = MessageType::kRevokeNotice;
template <> constexpr MessageType kTypeOf<AdminRequest> = MessageType::kAdminRequest;
template <> constexpr MessageType kTypeOf<AdminReply> = MessageType::kAdminReply;
template <> constexpr MessageType kTypeOf<ErrorReply> = MessageType::kErrorReply;
template <> constexpr MessageType kTypeOf<ClientHello> = MessageType::kClientHello;
template <> constexpr MessageType kTypeOf<ServerHello> = MessageType::kServerHello;
template <> constexpr MessageType kTypeOf<ClientFinish> = MessageType::kClientFinish;
template <> constexpr MessageType kTypeOf<HandshakeDone> = MessageType::kHandshakeDone;

template <typename Variant>
Result<Bytes> Encode(const Variant& message) {
  return std::visit(
      [](const auto& m) -> Result<Bytes> {
        if (Status s = Validate(Errc::kInvalidArgument, m); !s.ok()) return s;
        Writer w;
        Put(w, m);
        Bytes out = w.Take();
        if (out.size() > kMaxPayloadBytes) {
          return Status(Errc::kInvalidArgument,
                        std::string(TypeName(kTypeOf<std::decay_t<decltype(m)>>)) + ": " +
                            std::to_string(out.size()) + " bytes exceeds the payload limit of " +
                            std::to_string(kMaxPayloadBytes));
        }
        return out;
      },
      message);
}

template <typename T, typename Variant>
Result<Variant> DecodeAs(ByteView payload) {
  T m;
  Reader r(payload, TypeName(kTypeOf<T>));
  Get(r, &m);
  if (Status s = r.Finish(); !s.ok()) return s;
  if (Status s = Validate(Errc::kProtocol, m); !s.ok()) return s;
  return Variant(std::move(m));
}

Status WrongFamily(MessageType type, const char* expected) {
  return Status(Errc::kProtocol, std::string("message type ") +
                                     std::to_string(static_cast<unsigned>(type)) + " (" +
                                     TypeName(type) + ") is not " + expected);
}

}  // namespace

bool IsValidUtf8(std::string_view bytes) {
  std::size_t i = 0;
  std::uint32_t cp = 0;
  while (i < bytes.size()) {
    if (!NextCodePoint(bytes, &i, &cp)) return false;
  }
  return true;
}

Status CheckId(std::string_view field, std::string_view value) {
  return CheckIdWith(Errc::kProtocol, field, value);
}

Status CheckClusterHash(std::string_view field, std::string_view value) {
  return CheckHashWith(Errc::kProtocol, field, value);
}

MessageType TypeOf(const Message& message) {
  return std::visit([](const auto& m) { return kTypeOf<std::decay_t<decltype(m)>>; }, message);
}
MessageType TypeOf(const HandshakeMessage& message) {
  return std::visit([](const auto& m) { return kTypeOf<std::decay_t<decltype(m)>>; }, message);
}

bool IsHandshakeType(MessageType type) {
  switch (type) {
    case MessageType::kClientHello:
    case MessageType::kServerHello:
    case MessageType::kClientFinish:
    case MessageType::kHandshakeDone:
      return true;
    default:
      return false;
  }
}

const char* TypeName(MessageType type) {
  switch (type) {
    case MessageType::kClientHello: return "ClientHello";
    case MessageType::kServerHello: return "ServerHello";
    case MessageType::kClientFinish: return "ClientFinish";
    case MessageType::kHandshakeDone: return "HandshakeDone";
    case MessageType::kRenewRequest: return "RenewRequest";
    case MessageType::kGrant: return "Grant";
    case MessageType::kRefusalReport: return "RefusalReport";
    case MessageType::kGoodbye: return "Goodbye";
    case MessageType::kCoordinatorHello: return "CoordinatorHello";
    case MessageType::kHelloReply: return "HelloReply";
    case MessageType::kRevokeNotice: return "RevokeNotice";
    case MessageType::kAdminRequest: return "AdminRequest";
    case MessageType::kAdminReply: return "AdminReply";
    case MessageType::kErrorReply: return "ErrorReply";
  }
  return "unknown";
}

Result<Bytes> EncodePayload(const Message& message) { return Encode(message); }
Result<Bytes> EncodePayload(const HandshakeMessage& message) { return Encode(message); }

Result<Message> DecodeMessage(MessageType type, ByteView payload) {
  switch (type) {
    case MessageType::kRenewRequest: return DecodeAs<lease::RenewRequest, Message>(payload);
    case MessageType::kGrant: return DecodeAs<lease::Grant, Message>(payload);
    case MessageType::kRefusalReport: return DecodeAs<lease::RefusalReport, Message>(payload);
    case MessageType::kGoodbye: return DecodeAs<lease::Goodbye, Message>(payload);
    case MessageType::kCoordinatorHello: return DecodeAs<CoordinatorHello, Message>(payload);
    case MessageType::kHelloReply: return DecodeAs<HelloReply, Message>(payload);
    case MessageType::kRevokeNotice: return DecodeAs<lease::RevokeNotice, Message>(payload);
    case MessageType::kAdminRequest: return DecodeAs<AdminRequest, Message>(payload);
    case MessageType::kAdminReply: return DecodeAs<AdminReply, Message>(payload);
    case MessageType::kErrorReply: return DecodeAs<ErrorReply, Message>(payload);
    default: return WrongFamily(type, "an application message");
  }
}

Result<HandshakeMessage> DecodeHandshake(MessageType type, ByteView payload) {
  switch (type) {
    case MessageType::kClientHello: return DecodeAs<ClientHello, HandshakeMessage>(payload);
    case MessageType::kServerHello: return DecodeAs<ServerHello, HandshakeMessage>(payload);
    case MessageType::kClientFinish: return DecodeAs<ClientFinish, HandshakeMessage>(payload);
    case MessageType::kHandshakeDone: return DecodeAs<HandshakeDone, HandshakeMessage>(payload);
    default: return WrongFamily(type, "a handshake message");
  }
}

void AppendHeader(const FrameHeader& header, Bytes* out) {
  Writer w;
  w.U32(kMagic);
  w.U16(kVersion);
  w.U16(static_cast<std::uint16_t>(header.type));
  w.U32(header.flags);
  w.U64(header.sequence);
  w.U32(header.length);
  const Bytes bytes = w.Take();
  out->insert(out->end(), bytes.begin(), bytes.end());
}

Result<FrameHeader> DecodeHeader(ByteView bytes, std::size_t max_payload) {
  DSB_CHECK(max_payload <= kMaxPayloadBytes, "max_payload %zu", max_payload);
  if (bytes.size() != kHeaderSize) {
    return Status(Errc::kProtocol, "frame header: " + std::to_string(bytes.size()) +
                                       " bytes, expected " + std::to_string(kHeaderSize));
  }
  Reader r(bytes, "header");
  std::uint32_t magic = 0;
  std::uint16_t version = 0;
  std::uint16_t type = 0;
  FrameHeader h;
  r.U32("magic", &magic);
  r.U16("version", &version);
  r.U16("type", &type);
  r.U32("flags", &h.flags);
  r.U64("sequence", &h.sequence);
  r.U32("length", &h.length);
  if (Status s = r.Finish(); !s.ok()) return s;
  if (magic != kMagic) {
    return Status(Errc::kProtocol, "frame header: bad magic (not a dsb wire peer?)");
  }
  if (version != kVersion) {
    return Status(Errc::kProtocol, "frame header: protocol version " + std::to_string(version) +
                                       ", this build speaks " + std::to_string(kVersion));
  }
  h.type = static_cast<MessageType>(type);
  if (std::string_view(TypeName(h.type)) == "unknown") {
    return Status(Errc::kProtocol, "frame header: unknown message type " + std::to_string(type));
  }
  if ((h.flags & ~kKnownFlags) != 0) {
    return Status(Errc::kProtocol, "frame header: unknown flags " + std::to_string(h.flags));
  }
  if (h.length > max_payload) {
    return Status(Errc::kProtocol, "frame header: payload length " + std::to_string(h.length) +
                                       " exceeds the limit of " + std::to_string(max_payload));
  }
  return h;
}

Result<FrameView> SplitFrame(ByteView frame, std::size_t max_payload) {
  if (frame.size() < kHeaderSize) {
    return Status(Errc::kProtocol, "frame truncated: " + std::to_string(frame.size()) +
                                       " bytes, shorter than a header");
  }
  Result<FrameHeader> header = DecodeHeader(frame.first(kHeaderSize), max_payload);
  if (!header.ok()) return header.status();
  const std::size_t want = kHeaderSize + header->length + kMacSize;
  if (frame.size() != want) {
    return Status(Errc::kProtocol,
                  std::string("frame ") + (frame.size() < want ? "truncated" : "has trailing bytes") +
                      ": " + std::to_string(frame.size()) + " bytes, header says " +
                      std::to_string(want));
  }
  FrameView view;
  view.header = *header;
  view.authenticated = frame.first(kHeaderSize + header->length);
  view.payload = frame.subspan(kHeaderSize, header->length);
  view.mac = frame.subspan(kHeaderSize + header->length, kMacSize);
  return view;
}

}  // namespace dsb::wire
