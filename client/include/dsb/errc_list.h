/* dsb/errc_list.h: the one list of dsb status codes, readable by C and C++.
 *
 * Every expected failure in dsb has exactly one entry here. dsb.h (C:
 * DSB_OK, DSB_E_*), errc.h (C++: dsb::Errc) and common/errc.cc (wire names,
 * messages) all expand this list, so a code cannot exist on one side only.
 *
 * The numbers are part of the C ABI (and of every .NET P/Invoke declaration):
 * never renumber or reuse one, only append.
 *
 * DSB_ERRC_LIST(X) calls X(c_name, cpp_name, value, wire_name, message) for
 * each code:
 *   c_name     the C constant (dsb.h)
 *   cpp_name   the dsb::Errc enumerator (errc.h)
 *   value      the number (dsb_status, std::error_code::value())
 *   wire_name  the stable short name used on the wire and in JSON (ErrcName)
 *   message    the fixed English text (dsb_strerror, ErrcMessage)
 */
#ifndef DSB_ERRC_LIST_H_
#define DSB_ERRC_LIST_H_

/* clang-format off */
#define DSB_ERRC_LIST(X)                                                                         \
  X(DSB_OK, kOk, 0, "ok", "success")                                                             \
  /* no slot became free before the deadline */                                                  \
  X(DSB_E_TIMEOUT, kTimeout, 1, "timeout", "no slot became free before the deadline")            \
  /* the wait was cancelled by the caller */                                                     \
  X(DSB_E_CANCELLED, kCancelled, 2, "cancelled", "the wait was cancelled")                       \
  /* cannot reach the broker's socket (is dsb-broker running?) */                                \
  X(DSB_E_BROKER_UNAVAILABLE, kBrokerUnavailable, 3, "broker_unavailable",                       \
    "cannot reach the dsb broker socket; is dsb-broker running and is the socket path right?")   \
  /* the broker serves no target of that name */                                                 \
  X(DSB_E_UNKNOWN_TARGET, kUnknownTarget, 4, "unknown_target",                                   \
    "the broker serves no target of that name")                                                  \
  /* malformed, oversized or unexpected message */                                               \
  X(DSB_E_PROTOCOL, kProtocol, 5, "protocol", "malformed, oversized or unexpected message")       \
  /* peer credentials refused (uid/group) */                                                     \
  X(DSB_E_PERMISSION_DENIED, kPermissionDenied, 6, "permission_denied",                          \
    "peer credentials refused; run as the broker's user or a member of its configured group")    \
  /* shared-memory segment failed validation (magic/version/size/checksum/owner) */              \
  X(DSB_E_SEGMENT_INVALID, kSegmentInvalid, 7, "segment_invalid",                                \
    "shared-memory segment failed validation (magic, version, size or checksum)")                \
  /* shared-memory segment missing or cannot be mapped */                                        \
  X(DSB_E_SEGMENT_UNAVAILABLE, kSegmentUnavailable, 8, "segment_unavailable",                    \
    "shared-memory segment is missing or cannot be mapped")                                      \
  /* configuration file refused (file, key and reason in the message) */                         \
  X(DSB_E_CONFIG, kConfig, 9, "config", "configuration refused")                                 \
  /* no capacity and the call does not wait (TryAcquire) */                                      \
  X(DSB_E_CAPACITY_EXHAUSTED, kCapacityExhausted, 10, "capacity_exhausted",                      \
    "no free slot right now")                                                                    \
  /* registrations exceed system_slots for this broker */                                        \
  X(DSB_E_TOO_MANY_CLIENTS, kTooManyClients, 11, "too_many_clients",                             \
    "this broker already has system_slots registered clients; raise system_slots in the "        \
    "cluster file")                                                                              \
  /* the client lost its registration (broker restarted past the grace) */                      \
  X(DSB_E_NOT_REGISTERED, kNotRegistered, 12, "not_registered",                                  \
    "the registration with the broker was lost; reconnect")                                      \
  /* the caller passed a bad argument */                                                         \
  X(DSB_E_INVALID_ARGUMENT, kInvalidArgument, 13, "invalid_argument", "invalid argument")        \
  /* the segment's waiter queue is full */                                                       \
  X(DSB_E_TOO_MANY_WAITERS, kTooManyWaiters, 14, "too_many_waiters",                             \
    "the segment's waiter queue is full")                                                        \
  /* a bug or an unexpected system error; see the message */                                     \
  X(DSB_E_INTERNAL, kInternal, 15, "internal", "internal error")                                 \
  /* the broker is stopping */                                                                   \
  X(DSB_E_SHUTTING_DOWN, kShuttingDown, 16, "shutting_down", "the broker is shutting down")      \
  /* a peer failed authentication (wrong key, replay, bad MAC) */                                \
  X(DSB_E_AUTH_FAILED, kAuthFailed, 17, "auth_failed", "peer authentication failed")             \
  /* a peer or file disagrees (cluster file hash, epoch, ...) */                                 \
  X(DSB_E_CONFLICT, kConflict, 18, "conflict", "peer or file disagrees")
/* clang-format on */

#endif /* DSB_ERRC_LIST_H_ */
