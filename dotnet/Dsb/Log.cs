using System;

namespace Dsb {

// The levels of the library's messages (DSB_LOG_* in dsb.h).
public enum LogLevel {
  Debug = 0,
  Info = 1,
  Warning = 2,
  Error = 3,
}

// Where the native library's messages go (a lost broker connection, a
// re-registration, a registration lost for good). By default it writes them
// to stderr as "dsb: <message>".
public static class Log {
  private static readonly object lock_ = new object();
  // The one delegate the native library ever calls: kept referenced here for
  // the life of the process, so the GC never frees it while native code holds it.
  private static readonly NativeLogCallback native_ = OnNativeMessage;
  private static volatile Action<LogLevel, string> handler_;

  // Sends the library's messages to `handler` (null: back to stderr). The
  // handler runs on the library's own threads, one call at a time; it must
  // return soon and must not call into Dsb (Client.Dispose from it would
  // wait for the very thread running it). An exception it throws is caught
  // and dropped (it must not cross into native code). When this returns, the
  // previous handler is neither running nor called again.
  public static void SetHandler(Action<LogLevel, string> handler) {
    lock (lock_) {
      handler_ = handler;
      Native.dsb_set_log_callback(handler != null ? native_ : null, IntPtr.Zero);
    }
  }

  private static void OnNativeMessage(int level, IntPtr message, IntPtr context) {
    try {
      Action<LogLevel, string> handler = handler_;
      if (handler != null) handler((LogLevel)level, Utf8.Decode(message));
    } catch (Exception) {
      // Dropped: an exception must not unwind through the native library.
    }
  }
}

}  // namespace Dsb
