// dsb client library: take and give back session slots for one target.
//
// A DigiScope instance creates one Client per target it talks to. Connect()
// registers with the local dsb-broker over its Unix socket, maps the target's
// shared-memory slot table and takes the instance's *system slot* (held for
// the life of the Client). Acquire()/TryAcquire() take an *action slot* with a
// few atomic operations on shared memory (no system call unless the caller has
// to wait); the returned Permit gives the slot back when it is destroyed.
//
// If the process dies, however it dies, the broker sees the socket close and
// frees every slot it held at once (after the target's quarantine).
//
// Errors are values: every call reports failure through std::error_code
// (category dsb_category(), enum dsb::Errc) and never throws.
//
// Ending a session: a real server stops counting a session some time after
// the client closed it (PostgreSQL a few milliseconds, Exchange over MAPI/HTTP
// longer). A slot handed to the next thread before that gets the session
// refused at `held <= limit`. So give a slot back only once the server no
// longer counts its session:
//  - Exchange (the end cannot be confirmed): close the session, then
//    Permit::Release() (or destroy the Permit). With the target's
//    `release_cooldown` the slot stays unusable that long ("cooling"), which
//    covers the server's asynchronous end.
//  - PostgreSQL (the end can be confirmed): send the Terminate message ('X'),
//    read until the server closes its end of the connection (EOF; PostgreSQL
//    leaves its process array before that), then PQfinish and
//    Permit::ReleaseConfirmed(): the slot is free at once, no cooldown.
//  - A refused connect (the server's session limit): no session was opened.
//    Client::ReportSessionLimit(permit, detail) while still holding the
//    permit (the broker leaves the refused attempt out of what it held), then
//    Permit::ReleaseConfirmed() once the server is done with the attempt.
//    PostgreSQL: a refused backend still counts against the role until it
//    exits, after it sent the refusal; keep the connection until the server
//    closes it (libpq keeps the socket until PQfinish: read PQsocket() to
//    EOF), then release. Exchange: Permit::Release() (the cooldown covers it).
//
// Thread rule: a Client is thread-safe; share one across all action threads.
// A Permit belongs to one thread at a time (move it to hand it over). Every
// Permit must be destroyed before its Client.
#ifndef DSB_CLIENT_H_
#define DSB_CLIENT_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "dsb/errc.h"

namespace dsb {

class ClientImpl;

struct ClientOptions {
  std::string socket_path = "/run/dsb/dsb.sock";  // the broker's local socket
  std::string target;                             // e.g. "exch01"
  std::string name = "digiscope";                 // shown by `dsbctl clients`
  // Bounds Connect() as a whole: reaching the broker, registering, waiting
  // for the system slot (one deadline; each step gets what is left). Also
  // bounds each ReportSessionLimit() call.
  std::chrono::milliseconds connect_timeout{10000};
  // After the broker goes away, how long to keep trying to re-register (and so
  // keep every held slot). The default keeps trying for the life of the
  // process: a client that gave up would still hold sessions the next broker
  // no longer knows about. A broker that refuses the adoption ends it at once.
  std::chrono::milliseconds reconnect_window{std::chrono::hours(24 * 365)};
  // Who may serve the broker's socket (last member: code that initialises
  // the earlier ones in order keeps compiling). Whoever can write the
  // socket's folder can put a program of its own at that path, so the client
  // believes the process listening there only if the kernel (SO_PEERCRED)
  // says it runs as root, as this process's effective uid, as the default
  // broker user if a user of that name exists on this machine ("dsb", the
  // packaged broker's account, unless the library was built with another
  // DSB_DEFAULT_BROKER_USER), or as this user (a user name or a decimal uid;
  // for a broker run as another account). Empty: the environment variable
  // DSB_BROKER_USER (same form) if set, else only root, this process's uid and
  // the default broker user. The same uid must own the
  // segment the broker hands out (no access for others), else kSegmentInvalid.
  std::string broker_user;
};

// Cancels a waiting Acquire() from another thread. One token may serve many
// calls; once cancelled it stays cancelled.
class CancelToken {
 public:
  CancelToken() = default;
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;
  // Wakes every Acquire() waiting with this token; they return kCancelled.
  void Cancel() noexcept;
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }

 private:
  friend class CancelBinding;
  std::mutex mu_;
  std::vector<std::atomic<std::uint32_t>*> words_;  // futex words of current waiters
  std::atomic<bool> cancelled_{false};
};

// The right to hold one session on the target. Move-only; releases on destruction.
class Permit {
 public:
  Permit() = default;
  Permit(Permit&& other) noexcept
      : impl_(std::exchange(other.impl_, nullptr)), index_(other.index_), word_(other.word_) {}
  Permit& operator=(Permit&& other) noexcept {
    if (this != &other) {
      Release();
      impl_ = std::exchange(other.impl_, nullptr);
      index_ = other.index_;
      word_ = other.word_;
    }
    return *this;
  }
  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;
  ~Permit() { Release(); }

  bool valid() const noexcept { return impl_ != nullptr; }
  explicit operator bool() const noexcept { return valid(); }

  // True when the broker asks for this slot back (its lease shrank or the
  // limit was lowered): close the session at the next safe point and destroy
  // the Permit. One atomic load; cheap enough to poll per work item.
  bool ShouldYield() const noexcept;

  // Gives the slot back now. Idempotent. Never blocks on the broker. With
  // the target's `release_cooldown` the slot cools for that long before
  // anyone can take it again (the server may still count the session). Call
  // it after the session is closed. The destructor does the same.
  void Release() noexcept {
    if (impl_ != nullptr) ReleaseHeld(/*confirmed=*/false);
  }

  // Gives the slot back free at once, with no cooldown. Only when the server
  // has confirmed this slot's session ended (PostgreSQL: it closed its end
  // after the Terminate message), or no session was opened (the connect was
  // refused or failed). Idempotent; never blocks.
  void ReleaseConfirmed() noexcept {
    if (impl_ != nullptr) ReleaseHeld(/*confirmed=*/true);
  }

  std::uint32_t slot_index() const noexcept { return index_; }

 private:
  friend class ClientImpl;
  friend struct PermitAccess;
  void ReleaseHeld(bool confirmed) noexcept;
  ClientImpl* impl_ = nullptr;
  std::uint32_t index_ = 0;
  std::uint64_t word_ = 0;
};

struct ClientInfo {
  std::uint32_t owner_id = 0;        // this registration's id in the slot table
  std::string segment;               // shared-memory segment name
  std::uint32_t capacity = 0;        // action capacity enabled right now
  std::uint64_t revocation_generation = 0;
};

class Client {
 public:
  // Registers with the broker and takes the system slot; returns within
  // connect_timeout (plus a few milliseconds), whatever the broker does.
  // While the broker is unreachable or re-adopting after a restart, retries
  // until connect_timeout. Before it sends anything it checks who serves the
  // socket (see ClientOptions::broker_user); it maps the segment only if that
  // broker's uid owns it and others have no access to it.
  // Errors: kBrokerUnavailable (no socket / broker down), kUnknownTarget,
  // kPermissionDenied (the broker refused our credentials, or the process
  // serving the socket is not a trusted broker: the message names the socket,
  // its pid and uid, and how to trust it; not retried), kInvalidArgument
  // (empty target, broker_user / DSB_BROKER_USER names no user),
  // kTooManyClients (cluster system_slots reached), kSegmentInvalid (also: a
  // segment not owned by the broker's uid or open to others) /
  // kSegmentUnavailable, kTimeout (no answer, or no system slot, within
  // connect_timeout), kProtocol. On error returns null and, if `message` is
  // given, stores a sentence naming the cause. After a broker restart the
  // client re-registers (reconnect_window) under the same checks: an
  // untrusted listener is never sent anything (the client keeps trying).
  static std::unique_ptr<Client> Connect(const ClientOptions& options, std::error_code& ec,
                                         std::string* message = nullptr) noexcept;

  // Closes the registration: the system slot is given back. REQUIRES: every
  // Permit of this Client has been destroyed.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Takes an action slot, waiting up to `timeout` (0 = do not wait).
  // Waiters are served in about arrival order. Returns by `timeout` plus at
  // most a few milliseconds, even while another process holds the segment's
  // queue mutex (stopped in a debugger) or the mutex word is garbage (FIFO
  // order is then lost, not progress). Errors: kTimeout, kCancelled,
  // kTooManyWaiters, kNotRegistered (registration lost for good).
  Permit Acquire(std::chrono::milliseconds timeout, std::error_code& ec,
                 CancelToken* cancel = nullptr) noexcept;

  // Takes an action slot only if one is free now; kCapacityExhausted otherwise.
  Permit TryAcquire(std::error_code& ec) noexcept;

  // Tells the broker the server refused a session for exceeding its cap
  // (Exchange MAPI_E_SESSION_LIMIT / ec=1246). Feeds limit discovery.
  // `detail` is logged by the broker (bounded to 512 bytes). Waits for the
  // broker's answer at most connect_timeout in all (kTimeout; a broker that
  // does not read its socket cannot hold the caller longer).
  std::error_code ReportSessionLimit(std::string_view detail = {}) noexcept;
  // As above, naming the permit the refused attempt was made with, while it
  // is still held: the report carries its slot, so the broker leaves the
  // refused attempt out of what it held when the server refused (limit
  // discovery reads "refused while dsb held h" as "the cap is at most h").
  // Then give the permit back with ReleaseConfirmed() (no session was
  // opened). An invalid (empty) permit sends the plain report.
  std::error_code ReportSessionLimit(const Permit& refused,
                                     std::string_view detail = {}) noexcept;

  ClientInfo Info() const noexcept;

 private:
  friend struct PermitAccess;
  explicit Client(std::unique_ptr<ClientImpl> impl);
  std::unique_ptr<ClientImpl> impl_;
};

// The version of this library as "MAJOR.MINOR.PATCH" (static storage): the
// library the program runs with, which may be newer than the dsb/version.h it
// was built with (DSB_VERSION_STRING).
const char* Version() noexcept;

// Where the library's messages go (a broker restart, re-registering, a lease
// not renewed): by default each is written to stderr as "dsb: <message>".
enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
// Receives one message: one line, no trailing newline, valid only during the
// call. Called from the library's own threads, one call at a time.
using LogSink = std::function<void(LogLevel level, std::string_view message)>;

// Sends the library's messages to `sink` instead of stderr; an empty sink
// restores stderr. Thread-safe; when it returns the previous sink is neither
// running nor called again. Process-wide for this library. REQUIRES: the
// sink does not call into dsb (SetLogSink from it would deadlock, a Client's
// destructor would wait for the very thread running it) and returns soon (the
// library's thread waits for it); an exception it throws is swallowed (the
// message is lost).
void SetLogSink(LogSink sink) noexcept;

}  // namespace dsb

#endif  // DSB_CLIENT_H_
