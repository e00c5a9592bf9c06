// The P/Invoke declarations of the C ABI (client/include/dsb/dsb.h), and the
// two SafeHandles over its pointers. Internal: callers use Client and Permit.
//
// Library name: [DllImport("dsb")] finds dsb.dll on Windows and libdsb.so on
// Linux (Mono and .NET try "lib" + name + ".so"); Dsb.Net.dll.config maps it
// to libdsb.so.0 under Mono, the name a runtime-only install has.
//
// Strings cross as NUL-terminated UTF-8 byte arrays marshalled here by hand
// (Utf8): UnmanagedType.LPUTF8Str exists only from .NET Framework 4.7 on, and
// ANSI marshalling would use the Windows code page, not UTF-8.
using System;
using System.Runtime.InteropServices;
using System.Text;

namespace Dsb {

// dsb_permit: { uint32 index; uint32 reserved; uint64 word; } (word 0 = none).
[StructLayout(LayoutKind.Sequential)]
internal struct NativePermit {
  public uint Index;
  public uint Reserved;
  public ulong Word;
}

// Receives one message of the library (dsb_log_callback).
[UnmanagedFunctionPointer(CallingConvention.Cdecl)]
internal delegate void NativeLogCallback(int level, IntPtr message, IntPtr context);

internal static class Native {
  internal const string Library = "dsb";

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern int dsb_connect_ex(byte[] socketPath, byte[] target, byte[] name,
                                            byte[] brokerUser, int connectTimeoutMs,
                                            out ClientHandle client);

  // Called only by ClientHandle.ReleaseHandle, with the raw pointer.
  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern void dsb_close(IntPtr client);

  // dsb_acquire and the permit functions take the client's raw pointer: the
  // caller holds a reference on the ClientHandle (DangerousAddRef; a Permit
  // keeps the one taken for its acquire until it gives the slot back), which
  // holds even after Client.Dispose, when marshalling the SafeHandle itself
  // would be refused on .NET Framework (ObjectDisposedException).
  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern int dsb_acquire(IntPtr client, int timeoutMs, CancelHandle cancel,
                                         out NativePermit permit);

  // The same function, for a call without a cancel token (NULL).
  [DllImport(Library, EntryPoint = "dsb_acquire", CallingConvention = CallingConvention.Cdecl,
             ExactSpelling = true)]
  internal static extern int dsb_acquire_nocancel(IntPtr client, int timeoutMs,
                                                  IntPtr cancel, out NativePermit permit);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern int dsb_try_acquire(IntPtr client, out NativePermit permit);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern void dsb_release(IntPtr client, ref NativePermit permit);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern void dsb_release_confirmed(IntPtr client, ref NativePermit permit);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern int dsb_should_yield(IntPtr client, ref NativePermit permit);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern int dsb_report_session_limit(ClientHandle client, byte[] detail);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern int dsb_report_refusal(ClientHandle client, ref NativePermit refused,
                                                byte[] detail);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern CancelHandle dsb_cancel_create();

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern void dsb_cancel_fire(CancelHandle cancel);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern void dsb_cancel_destroy(IntPtr cancel);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern IntPtr dsb_version();

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern void dsb_set_log_callback(NativeLogCallback callback, IntPtr context);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern IntPtr dsb_strerror(int code);

  [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
  internal static extern IntPtr dsb_last_error();
}

// Owns one dsb_client*. ReleaseHandle (dsb_close) runs once the handle is
// disposed or collected AND every Permit has dropped its reference, so the C
// ABI's rule "release every permit before dsb_close" holds by construction.
internal sealed class ClientHandle : SafeHandle {
  // Made by the marshaller (out ClientHandle).
  private ClientHandle() : base(IntPtr.Zero, true) {}

  public override bool IsInvalid {
    get { return handle == IntPtr.Zero; }
  }

  protected override bool ReleaseHandle() {
    Native.dsb_close(handle);
    return true;
  }
}

// Owns one dsb_cancel* (dsb_cancel_create returns NULL only out of memory).
internal sealed class CancelHandle : SafeHandle {
  private CancelHandle() : base(IntPtr.Zero, true) {}

  public override bool IsInvalid {
    get { return handle == IntPtr.Zero; }
  }

  protected override bool ReleaseHandle() {
    Native.dsb_cancel_destroy(handle);
    return true;
  }
}

// NUL-terminated UTF-8 in both directions.
internal static class Utf8 {
  // null stays null (a NULL pointer); a string with a NUL character is
  // refused (C would see it cut short).
  internal static byte[] Encode(string value, string parameterName) {
    if (value == null) return null;
    if (value.IndexOf('\0') >= 0) {
      throw new ArgumentException("contains a NUL character, which C strings cannot carry",
                                  parameterName);
    }
    int length = Encoding.UTF8.GetByteCount(value);
    var bytes = new byte[length + 1];  // the last byte stays 0
    Encoding.UTF8.GetBytes(value, 0, value.Length, bytes, 0);
    return bytes;
  }

  // A C string (NULL gives "").
  internal static string Decode(IntPtr text) {
    if (text == IntPtr.Zero) return string.Empty;
    int length = 0;
    while (Marshal.ReadByte(text, length) != 0) ++length;
    var bytes = new byte[length];
    Marshal.Copy(text, bytes, 0, length);
    return Encoding.UTF8.GetString(bytes);
  }
}

}  // namespace Dsb
