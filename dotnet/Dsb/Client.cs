using System;
using System.Threading;

namespace Dsb {

// One registration with the local dsb broker for one target: a DigiScope
// instance creates one Client per target and shares it across its action
// threads. Connect takes the instance's system slot (held for the Client's
// life); Acquire takes an action slot per session (a Permit).
//
// Errors are DsbException (Code = the C ABI's status, Message = the
// library's detailed text). Argument mistakes .NET can see itself are
// ArgumentException/ArgumentNullException/ArgumentOutOfRangeException; a
// call on a disposed Client is ObjectDisposedException.
//
// Dispose() closes the registration (dsb_close: the system slot is given
// back) once every Permit of this Client has been given back; permits still
// held keep the native client open until then (see Permit).
//
// Thread rule: every member may be called from any thread at once.
public sealed class Client : IDisposable {
  private readonly ClientHandle handle_;
  private int disposed_;  // 1 once Dispose ran (Mono keeps a disposed SafeHandle usable)

  private Client(ClientHandle handle) {
    handle_ = handle;
  }

  // The version of the native library loaded, "MAJOR.MINOR.PATCH".
  public static string NativeVersion {
    get { return Utf8.Decode(Native.dsb_version()); }
  }

  // Registers with the broker serving `socketPath` (Linux: its Unix socket,
  // e.g. /run/dsb/dsb.sock; Windows: its named pipe) for `target` and takes
  // the system slot, within `connectTimeout`. `name` is shown by
  // `dsbctl clients` (null: "digiscope"). `brokerUser`: the account the broker
  // runs as, trusted besides root and this process's own (null: the
  // DSB_BROKER_USER environment variable; see dsb_connect_ex in dsb.h).
  // Errors (DsbException.Code): BrokerUnavailable, UnknownTarget,
  // PermissionDenied, InvalidArgument (a brokerUser that is no user),
  // TooManyClients, SegmentInvalid, SegmentUnavailable, Timeout, Protocol.
  // ArgumentNullException for a null socketPath or target;
  // ArgumentOutOfRangeException for a negative or over-long timeout.
  public static Client Connect(string socketPath, string target, string name = null,
                               TimeSpan? connectTimeout = null, string brokerUser = null) {
    if (socketPath == null) throw new ArgumentNullException("socketPath");
    if (target == null) throw new ArgumentNullException("target");
    int timeoutMs = Milliseconds(connectTimeout ?? TimeSpan.FromSeconds(10), "connectTimeout");
    ClientHandle handle;
    int status = Native.dsb_connect_ex(Utf8.Encode(socketPath, "socketPath"),
                                       Utf8.Encode(target, "target"), Utf8.Encode(name, "name"),
                                       Utf8.Encode(brokerUser, "brokerUser"), timeoutMs,
                                       out handle);
    if (status != 0) {
      var error = DsbException.FromStatus(status, "connect to '" + socketPath + "' for target '" +
                                                      target + "'");
      if (handle != null) handle.Dispose();  // invalid (NULL): nothing to close
      throw error;
    }
    return new Client(handle);
  }

  // Takes an action slot, waiting up to `timeout` (TimeSpan.Zero: do not
  // wait); waiters are served in about arrival order. A cancellable
  // `cancellationToken` ends the wait early with OperationCanceledException.
  // Errors (DsbException.Code): Timeout, TooManyWaiters, NotRegistered (the
  // registration was lost for good). ArgumentOutOfRangeException for a
  // negative timeout or one past int.MaxValue milliseconds (~24.8 days).
  public Permit Acquire(TimeSpan timeout, CancellationToken cancellationToken = default(CancellationToken)) {
    Permit permit;
    int status = TryAcquireCore(timeout, cancellationToken, out permit);
    if (status == 0) return permit;
    if (status == (int)DsbError.Cancelled && cancellationToken.IsCancellationRequested) {
      throw new OperationCanceledException(cancellationToken);
    }
    throw DsbException.FromStatus(status, "acquire");
  }

  // As Acquire, but false (permit null) when no slot came free before
  // `timeout` (Timeout) instead of throwing; other errors still throw.
  public bool TryAcquire(TimeSpan timeout, out Permit permit) {
    int status = TryAcquireCore(timeout, default(CancellationToken), out permit);
    if (status == 0) return true;
    if (status == (int)DsbError.Timeout) return false;
    throw DsbException.FromStatus(status, "acquire");
  }

  // Takes an action slot only if one is free now (dsb_try_acquire): false
  // (permit null) when none is (CapacityExhausted); other errors throw.
  public bool TryAcquire(out Permit permit) {
    permit = null;
    bool added = false;
    try {
      AddRef(ref added);
      NativePermit native;
      int status = Native.dsb_try_acquire(handle_.DangerousGetHandle(), out native);
      if (status == (int)DsbError.CapacityExhausted) return false;
      if (status != 0) throw DsbException.FromStatus(status, "try-acquire");
      permit = new Permit(handle_, native);  // owns the reference from here
      added = false;
      return true;
    } finally {
      if (added) handle_.DangerousRelease();
    }
  }

  // Tells the broker the server refused a session for exceeding its cap
  // (Exchange MAPI_E_SESSION_LIMIT, 0x80040112 / ec=1246); feeds limit
  // discovery. `detail` (may be null) is logged by the broker (first 512
  // bytes). Waits for the broker's answer at most the connect timeout.
  // Errors (DsbException.Code): BrokerUnavailable (not connected: the broker
  // is down or restarting), NotRegistered, Timeout, Protocol.
  public void ReportSessionLimit(string detail = null) {
    ThrowIfDisposed();
    int status = Native.dsb_report_session_limit(handle_, Utf8.Encode(detail, "detail"));
    if (status != 0) throw DsbException.FromStatus(status, "report session limit");
  }

  // As ReportSessionLimit(detail), naming the permit (still held) the
  // refused attempt was made with, so the broker leaves that attempt out of
  // what it held. Afterwards give it back with refused.ReleaseConfirmed() (no
  // session was opened; Exchange: refused.Dispose() is fine too, the
  // cooldown covers it). A permit already given back sends the plain report.
  // ArgumentException if `refused` belongs to another Client.
  public void ReportSessionLimit(Permit refused, string detail = null) {
    if (refused == null) throw new ArgumentNullException("refused");
    ThrowIfDisposed();
    int status = refused.ReportRefusal(handle_, Utf8.Encode(detail, "detail"));
    if (status != 0) throw DsbException.FromStatus(status, "report session limit");
  }

  // Closes the registration once every permit is given back (see the class
  // comment). Idempotent.
  public void Dispose() {
    if (Interlocked.Exchange(ref disposed_, 1) != 0) return;
    handle_.Dispose();
  }

  private int TryAcquireCore(TimeSpan timeout, CancellationToken cancellationToken,
                             out Permit permit) {
    permit = null;
    int timeoutMs = Milliseconds(timeout, "timeout");
    cancellationToken.ThrowIfCancellationRequested();
    bool added = false;
    try {
      AddRef(ref added);
      NativePermit native;
      int status;
      if (!cancellationToken.CanBeCanceled) {
        status = Native.dsb_acquire_nocancel(handle_.DangerousGetHandle(), timeoutMs, IntPtr.Zero,
                                             out native);
      } else {
        // One dsb_cancel for this wait, fired by the token. The registration
        // is disposed before the handle, and Dispose waits for a callback
        // already running, so the fire never meets a destroyed cancel.
        using (CancelHandle cancel = Native.dsb_cancel_create()) {
          if (cancel.IsInvalid) throw new OutOfMemoryException("dsb_cancel_create failed");
          using (cancellationToken.Register(() => Native.dsb_cancel_fire(cancel))) {
            status = Native.dsb_acquire(handle_.DangerousGetHandle(), timeoutMs, cancel,
                                        out native);
          }
        }
      }
      if (status != 0) return status;
      permit = new Permit(handle_, native);  // owns the reference from here
      added = false;
      return 0;
    } finally {
      if (added) handle_.DangerousRelease();
    }
  }

  // A reference on the native client for the length of a call (the permit
  // it yields keeps it). ObjectDisposedException once Dispose ran.
  private void AddRef(ref bool added) {
    ThrowIfDisposed();
    handle_.DangerousAddRef(ref added);
  }

  private void ThrowIfDisposed() {
    if (Volatile.Read(ref disposed_) != 0) throw new ObjectDisposedException("Dsb.Client");
  }

  // A timeout as the C ABI's int32 milliseconds (rounded up, so a wait is
  // never shorter than asked).
  private static int Milliseconds(TimeSpan timeout, string parameterName) {
    if (timeout < TimeSpan.Zero) {
      throw new ArgumentOutOfRangeException(parameterName, timeout, "must not be negative");
    }
    double ms = Math.Ceiling(timeout.TotalMilliseconds);
    if (ms > int.MaxValue) {
      throw new ArgumentOutOfRangeException(parameterName, timeout,
                                            "must be at most int.MaxValue milliseconds");
    }
    return (int)ms;
  }
}

}  // namespace Dsb
