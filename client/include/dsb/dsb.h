/* dsb C ABI: for P/Invoke from .NET and for C programs.
 *
 * Every function returns a dsb_status (0 = DSB_OK) or fills an out-parameter;
 * none throws, none aborts on bad input (a NULL handle is DSB_E_INVALID_ARGUMENT).
 * dsb_strerror(code) gives the fixed text of a code; dsb_last_error() gives
 * the detailed message of the last failure on the calling thread.
 *
 * Thread rule: a dsb_client may be used from many threads at once. A
 * dsb_permit is a plain value owned by the caller (no allocation): pass it back
 * to dsb_release exactly once. Release every permit before dsb_close.
 *
 * Compatibility: within one major version (the SONAME, libdsb.so.0) functions
 * and codes are only added; none changes meaning or goes away.
 *
 * .NET: [DllImport("dsb")] finds libdsb.so on Linux and dsb.dll on Windows;
 * dsb_permit maps to a [StructLayout(LayoutKind.Sequential)] struct
 * { uint index; uint reserved; ulong word; }.
 */
#ifndef DSB_DSB_H_
#define DSB_DSB_H_

#include <stdint.h>

#include "dsb/errc_list.h"

#ifdef __cplusplus
extern "C" {
#endif

/* DSB_API marks the functions of the C ABI. Windows: dllexport while the
 * library itself is built (DSB_BUILDING_LIBRARY, set by its build only),
 * dllimport for everyone using it, nothing when DSB_STATIC is defined (a
 * static build of the library; only Linux builds exist today). Elsewhere: default visibility (the library is built with
 * hidden visibility, and a linker version script, client/dsb.symbols, lets
 * only these functions out). */
#if defined(_WIN32) || defined(__CYGWIN__)
#if defined(DSB_STATIC)
#define DSB_API
#elif defined(DSB_BUILDING_LIBRARY)
#define DSB_API __declspec(dllexport)
#else
#define DSB_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define DSB_API __attribute__((visibility("default")))
#else
#define DSB_API
#endif

/* Status codes: DSB_OK (0) and DSB_E_* (dsb/errc_list.h gives each one's
 * number, meaning and dsb_strerror text). The same list defines dsb::Errc
 * (errc.h), so the two cannot drift apart; the numbers are never renumbered,
 * only appended to (a .NET caller may hard-code them). */
typedef int32_t dsb_status;
#define DSB_ERRC_C_ENUMERATOR_(c_name, cpp_name, value, wire_name, message) c_name = value,
enum dsb_status_code { DSB_ERRC_LIST(DSB_ERRC_C_ENUMERATOR_) };
#undef DSB_ERRC_C_ENUMERATOR_

typedef struct dsb_client dsb_client;
typedef struct dsb_cancel dsb_cancel;

typedef struct dsb_permit {
  uint32_t index;
  uint32_t reserved;
  uint64_t word; /* 0 = no permit */
} dsb_permit;

/* Registers with the broker at socket_path for target and takes the system
 * slot, returning within connect_timeout_ms. name may be NULL. The process
 * serving the socket is trusted only if it runs as root, as this process's
 * effective uid, as the library's default broker user if a user of that name
 * exists on this machine ("dsb" unless built with another
 * DSB_DEFAULT_BROKER_USER: the packaged broker's account), or as the user in
 * the environment variable DSB_BROKER_USER (a user name or a decimal uid);
 * anything else is DSB_E_PERMISSION_DENIED
 * (dsb_last_error names the socket, the peer's pid and uid) and nothing is
 * sent to it. The segment it names must be owned by its uid with no access
 * for others (else DSB_E_SEGMENT_INVALID). */
DSB_API dsb_status dsb_connect(const char* socket_path, const char* target, const char* name,
                               int32_t connect_timeout_ms, dsb_client** out);
/* As dsb_connect, naming the broker's user: broker_user (a user name or a
 * decimal uid; NULL or "" = DSB_BROKER_USER, as dsb_connect) is trusted
 * besides root, this process's uid and the default broker user (as
 * dsb_connect). A name that is no user is
 * DSB_E_INVALID_ARGUMENT. */
DSB_API dsb_status dsb_connect_ex(const char* socket_path, const char* target, const char* name,
                                  const char* broker_user, int32_t connect_timeout_ms,
                                  dsb_client** out);
/* Gives back the system slot and closes the registration. NULL is a no-op. */
DSB_API void dsb_close(dsb_client* client);

/* Takes an action slot, waiting up to timeout_ms (0 = no wait).
 * cancel may be NULL. On success *out holds the permit. */
DSB_API dsb_status dsb_acquire(dsb_client* client, int32_t timeout_ms, dsb_cancel* cancel,
                               dsb_permit* out);
DSB_API dsb_status dsb_try_acquire(dsb_client* client, dsb_permit* out);
/* Gives the slot back and clears *permit. Safe on a cleared permit. With the
 * target's release_cooldown the slot stays unusable that long (the server may
 * still count the session it ended). Call it after the session is closed. */
DSB_API void dsb_release(dsb_client* client, dsb_permit* permit);
/* As dsb_release, but the slot is free at once, no cooldown. Only when the
 * server confirmed the session ended, or no session was opened (the connect
 * was refused or failed).
 *
 * The order for callers:
 *  - Exchange (cannot confirm the end): close the session, then dsb_release.
 *  - PostgreSQL (can confirm): send Terminate ('X', length 4) on PQsocket(),
 *    read until the server closes its end (EOF), PQfinish, then
 *    dsb_release_confirmed.
 *  - A connect refused for the session limit: dsb_report_refusal(client,
 *    &permit, detail) while holding the permit, then dsb_release_confirmed
 *    (PostgreSQL: after the server closed the refused connection, since its
 *    backend counts until it exits; Exchange: dsb_release). */
DSB_API void dsb_release_confirmed(dsb_client* client, dsb_permit* permit);
/* 1 if the broker asks this slot back (close the session at a safe point), else 0. */
DSB_API int32_t dsb_should_yield(const dsb_client* client, const dsb_permit* permit);
/* Reports that the server refused a session for exceeding its limit. detail may be NULL. */
DSB_API dsb_status dsb_report_session_limit(dsb_client* client, const char* detail);
/* As dsb_report_session_limit, naming the permit (still held) the refused
 * attempt was made with, so the broker leaves that attempt out of what it
 * held. refused and detail may be NULL (then as dsb_report_session_limit).
 * Release the permit with dsb_release_confirmed afterwards. */
DSB_API dsb_status dsb_report_refusal(dsb_client* client, const dsb_permit* refused,
                                      const char* detail);

DSB_API dsb_cancel* dsb_cancel_create(void);
DSB_API void dsb_cancel_fire(dsb_cancel* cancel);
DSB_API void dsb_cancel_destroy(dsb_cancel* cancel);

/* The version of this library as "MAJOR.MINOR.PATCH" (static storage, never
 * NULL): the library the program runs with, which may be newer than the
 * dsb/version.h it was built with (DSB_VERSION_STRING). */
DSB_API const char* dsb_version(void);

/* Log levels passed to a dsb_log_callback. */
#define DSB_LOG_DEBUG 0
#define DSB_LOG_INFO 1
#define DSB_LOG_WARNING 2
#define DSB_LOG_ERROR 3

/* Receives one message of the library: level (DSB_LOG_*), message (one line,
 * no trailing newline, UTF-8, valid only during the call) and the context
 * given to dsb_set_log_callback. Called from the library's own threads (e.g.
 * the one re-registering after a broker restart), one call at a time. It must
 * not block for long, must not call any dsb_* function (dsb_set_log_callback
 * from it would deadlock), and must not let an exception or longjmp cross it. */
typedef void (*dsb_log_callback)(int32_t level, const char* message, void* context);

/* Sends the library's messages to callback (with context) instead of stderr;
 * callback NULL restores the default (each message written to stderr as
 * "dsb: <message>"). Thread-safe. When it returns, the previous callback is
 * neither running nor called again, so its context may be freed. Process-wide
 * for this library (libdsb); the C++ library has its own, dsb::SetLogSink. */
DSB_API void dsb_set_log_callback(dsb_log_callback callback, void* context);

/* Fixed text of a status code (never NULL, static storage). */
DSB_API const char* dsb_strerror(dsb_status code);
/* Detailed message of the last failure on this thread ("" if none). Valid
 * until the next dsb call on this thread. */
DSB_API const char* dsb_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* DSB_DSB_H_ */
