using System;

namespace Dsb {

// The right to hold one session on the target: an action slot taken by
// Client.Acquire. Dispose() gives it back (dsb_release): call it after the
// session is closed, typically with `using`. Release()/ReleaseConfirmed()/
// Dispose() are idempotent: the first one gives the slot back, later ones do
// nothing.
//
// A permit that is never disposed is given back when the GC collects it (its
// finalizer calls dsb_release), so a leaked permit costs a slot only until
// the next collection; do not rely on that, since the session it guarded
// may still be open.
//
// Lifetime: a Permit holds a reference on its client's handle, so the native
// client stays open (and keeps its system slot) until every permit is given
// back, even after Client.Dispose(); the C ABI's rule "release every permit
// before dsb_close" holds by construction.
//
// Thread rule: a Permit may be used from any thread; its calls are
// serialised by a lock of its own (uncontended: a few tens of nanoseconds).
public sealed class Permit : IDisposable {
  private readonly ClientHandle client_;
  private readonly object lock_ = new object();
  private NativePermit permit_;  // Word 0 once given back
  private bool held_;            // client_ referenced (DangerousAddRef) until given back

  // REQUIRES: `permit` holds a slot of `client`, and the caller added a
  // reference on `client` (DangerousAddRef) that this permit now owns and
  // drops when it gives the slot back.
  internal Permit(ClientHandle client, NativePermit permit) {
    client_ = client;
    permit_ = permit;
    held_ = true;
  }

  ~Permit() {
    // The object is unreachable: no other thread can be inside it. The
    // client handle is still open (this permit's reference keeps it so),
    // whatever order the finalizers run in.
    GiveBack(false);
  }

  // The slot's index in the target's table (for logs).
  public int SlotIndex {
    get { return (int)permit_.Index; }
  }

  // False once given back.
  public bool IsHeld {
    get {
      lock (lock_) return held_;
    }
  }

  // True when the broker asks for this slot back (its lease shrank or the
  // limit was lowered): close the session at the next safe point and dispose
  // the permit. Cheap (a shared-memory read behind one P/Invoke call): poll it
  // per work item. False once given back.
  public bool ShouldYield {
    get {
      lock (lock_) {
        if (!held_) return false;
        return Native.dsb_should_yield(client_.DangerousGetHandle(), ref permit_) != 0;
      }
    }
  }

  // Gives the slot back now (dsb_release). With the target's
  // release_cooldown the slot stays unusable that long (the server may still
  // count the session). Call it after the session is closed.
  public void Release() {
    GiveBack(false);
    GC.SuppressFinalize(this);
  }

  // Gives the slot back free at once, no cooldown (dsb_release_confirmed):
  // only when the server confirmed the session ended, or no session was opened
  // (the connect was refused, e.g. after Client.ReportSessionLimit(permit)).
  public void ReleaseConfirmed() {
    GiveBack(true);
    GC.SuppressFinalize(this);
  }

  // Release().
  public void Dispose() {
    Release();
  }

  // dsb_report_refusal naming this permit (still held) on `owner`, its
  // client; a permit given back already sends the plain report (NULL).
  internal int ReportRefusal(ClientHandle owner, byte[] detail) {
    lock (lock_) {
      if (!ReferenceEquals(owner, client_)) {
        throw new ArgumentException("the permit belongs to another Client", "refused");
      }
      if (!held_) return Native.dsb_report_session_limit(owner, detail);
      return Native.dsb_report_refusal(owner, ref permit_, detail);
    }
  }

  private void GiveBack(bool confirmed) {
    lock (lock_) {
      if (!held_) return;
      IntPtr client = client_.DangerousGetHandle();
      if (confirmed) {
        Native.dsb_release_confirmed(client, ref permit_);
      } else {
        Native.dsb_release(client, ref permit_);
      }
      held_ = false;
      // The last reference (after Client.Dispose) closes the client here.
      client_.DangerousRelease();
    }
  }
}

}  // namespace Dsb
