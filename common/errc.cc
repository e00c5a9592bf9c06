#include "dsb/errc.h"

#include <cstring>
#include <string>

namespace dsb {
namespace {

struct Entry {
  Errc code;
  const char* name;
  const char* message;
};

constexpr Entry kEntries[] = {
    {Errc::kOk, "ok", "success"},
    {Errc::kTimeout, "timeout", "no slot became free before the deadline"},
    {Errc::kCancelled, "cancelled", "the wait was cancelled"},
    {Errc::kBrokerUnavailable, "broker_unavailable",
     "cannot reach the dsb broker socket; is dsb-broker running and is the socket path right?"},
    {Errc::kUnknownTarget, "unknown_target", "the broker serves no target of that name"},
    {Errc::kProtocol, "protocol", "malformed, oversized or unexpected message"},
    {Errc::kPermissionDenied, "permission_denied",
     "peer credentials refused; run as the broker's user or a member of its configured group"},
    {Errc::kSegmentInvalid, "segment_invalid",
     "shared-memory segment failed validation (magic, version, size or checksum)"},
    {Errc::kSegmentUnavailable, "segment_unavailable",
     "shared-memory segment is missing or cannot be mapped"},
    {Errc::kConfig, "config", "configuration refused"},
    {Errc::kCapacityExhausted, "capacity_exhausted", "no free slot right now"},
    {Errc::kTooManyClients, "too_many_clients",
     "this broker already has system_slots registered clients; raise system_slots in the "
     "cluster file"},
    {Errc::kNotRegistered, "not_registered",
     "the registration with the broker was lost; reconnect"},
    {Errc::kInvalidArgument, "invalid_argument", "invalid argument"},
    {Errc::kTooManyWaiters, "too_many_waiters", "the segment's waiter queue is full"},
    {Errc::kInternal, "internal", "internal error"},
    {Errc::kShuttingDown, "shutting_down", "the broker is shutting down"},
    {Errc::kAuthFailed, "auth_failed", "peer authentication failed"},
    {Errc::kConflict, "conflict", "peer or file disagrees"},
};

const Entry* Find(int code) {
  for (const Entry& e : kEntries) {
    if (static_cast<int>(e.code) == code) return &e;
  }
  return nullptr;
}

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "dsb"; }
  std::string message(int code) const override {
    const Entry* e = Find(code);
    return e != nullptr ? e->message : "unknown dsb error " + std::to_string(code);
  }
};

}  // namespace

const std::error_category& dsb_category() noexcept {
  static const Category category;
  return category;
}

const char* ErrcName(Errc e) noexcept {
  const Entry* entry = Find(static_cast<int>(e));
  return entry != nullptr ? entry->name : "internal";
}

const char* ErrcMessage(Errc e) noexcept {
  const Entry* entry = Find(static_cast<int>(e));
  return entry != nullptr ? entry->message : "unknown dsb error";
}

Errc ErrcFromName(const char* name) noexcept {
  if (name == nullptr) return Errc::kInternal;
  for (const Entry& e : kEntries) {
    if (std::strcmp(e.name, name) == 0) return e.code;
  }
  return Errc::kInternal;
}

}  // namespace dsb
