// dsb error codes: every expected failure in dsb has exactly one name here.
//
// The numeric values are part of the C ABI (dsb.h mirrors them as DSB_E_*):
// never renumber, only append.
#ifndef DSB_ERRC_H_
#define DSB_ERRC_H_

#include <system_error>

namespace dsb {

enum class Errc : int {
  kOk = 0,
  kTimeout = 1,             // no slot became free before the deadline
  kCancelled = 2,           // the wait was cancelled by the caller
  kBrokerUnavailable = 3,   // cannot reach the broker's socket (is dsb-broker running?)
  kUnknownTarget = 4,       // the broker serves no target of that name
  kProtocol = 5,            // malformed, oversized or unexpected message
  kPermissionDenied = 6,    // peer credentials refused (uid/group)
  kSegmentInvalid = 7,      // shared-memory segment failed validation (magic/version/size/checksum)
  kSegmentUnavailable = 8,  // shared-memory segment missing or cannot be mapped
  kConfig = 9,              // configuration file refused (file, key and reason in the message)
  kCapacityExhausted = 10,  // no capacity and the call does not wait (TryAcquire)
  kTooManyClients = 11,     // registrations exceed system_slots for this broker
  kNotRegistered = 12,      // the client lost its registration (broker restarted past the grace)
  kInvalidArgument = 13,    // caller passed a bad argument
  kTooManyWaiters = 14,     // the segment's waiter queue is full
  kInternal = 15,           // a bug or an unexpected system error; see the message
  kShuttingDown = 16,       // the broker is stopping
  kAuthFailed = 17,         // a peer failed authentication (wrong key, replay, bad MAC)
  kConflict = 18,           // a peer or file disagrees (cluster file hash, epoch, ...)
};

const std::error_category& dsb_category() noexcept;

inline std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), dsb_category()};
}

// A stable short name ("timeout", "unknown_target", ...) used on the wire and in JSON.
const char* ErrcName(Errc e) noexcept;
// The fixed English text of a code (static storage; never null).
const char* ErrcMessage(Errc e) noexcept;
// The inverse of ErrcName; kInternal for an unknown name.
Errc ErrcFromName(const char* name) noexcept;

}  // namespace dsb

template <>
struct std::is_error_code_enum<dsb::Errc> : std::true_type {};

#endif  // DSB_ERRC_H_
