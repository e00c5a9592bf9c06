using System;

namespace Dsb {

// The C ABI's status codes (client/include/dsb/errc_list.h), same numbers.
// Never renumbered, only appended to; the test dotnet_errc_in_step checks
// this list against errc_list.h.
public enum DsbError {
  Ok = 0,
  // No slot became free before the deadline.
  Timeout = 1,
  // The wait was cancelled by the caller.
  Cancelled = 2,
  // Cannot reach the broker (is dsb-broker running, is the socket/pipe right?).
  BrokerUnavailable = 3,
  // The broker serves no target of that name.
  UnknownTarget = 4,
  // Malformed, oversized or unexpected message.
  Protocol = 5,
  // Peer credentials refused, or the process serving the socket is not trusted.
  PermissionDenied = 6,
  // The shared-memory segment failed validation.
  SegmentInvalid = 7,
  // The shared-memory segment is missing or cannot be mapped.
  SegmentUnavailable = 8,
  // Configuration refused.
  Config = 9,
  // No free slot right now (a call that does not wait).
  CapacityExhausted = 10,
  // The broker already has system_slots registered clients.
  TooManyClients = 11,
  // The registration with the broker was lost for good; reconnect.
  NotRegistered = 12,
  // The caller passed a bad argument (the message names it).
  InvalidArgument = 13,
  // The segment's waiter queue is full.
  TooManyWaiters = 14,
  // A bug or an unexpected system error; see the message.
  Internal = 15,
  // The broker is stopping.
  ShuttingDown = 16,
  // A peer failed authentication.
  AuthFailed = 17,
  // A peer or file disagrees.
  Conflict = 18,
}

// A dsb call failed: Code is the C ABI's status, Message the library's
// detailed text for this failure (dsb_last_error, or dsb_strerror when the
// library gave none), prefixed with the operation.
public class DsbException : Exception {
  public DsbException(DsbError code, string message) : base(message) {
    Code = code;
  }

  public DsbError Code { get; private set; }

  // The status of a failed call on this thread: reads dsb_last_error at once
  // (it is per thread and valid until the next dsb call on the thread).
  internal static DsbException FromStatus(int status, string operation) {
    string detail = Utf8.Decode(Native.dsb_last_error());
    if (detail.Length == 0) detail = Utf8.Decode(Native.dsb_strerror(status));
    return new DsbException((DsbError)status,
                            operation + ": " + detail + " (" + Describe(status) + ")");
  }

  // "Timeout", or the number of a code newer than this wrapper.
  private static string Describe(int status) {
    return Enum.IsDefined(typeof(DsbError), status) ? ((DsbError)status).ToString()
                                                    : "dsb status " + status;
  }
}

}  // namespace Dsb
