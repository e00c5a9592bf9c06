// The local transport on Windows: a named pipe, \\.\pipe\dsb-<id>, opened for
// overlapped I/O; a deadline is a wait on the I/O's event, then CancelIoEx
// (contracts in common/local_frame.h and common/local_frame_io.h).
#include <windows.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <set>

#include "common/account_win.h"
#include "common/local_frame.h"
#include "common/local_frame_io.h"

namespace dsb {
namespace {

// Handles ShutdownLocal marked: every later read or write on them fails at
// once. A read or write is started under the mutex after a look at the mark,
// and ShutdownLocal marks and cancels under it, so an I/O is either cancelled
// or never started: the role shutdown(SHUT_RDWR) plays for a socket.
std::mutex& ShutMutex() {
  static std::mutex mu;
  return mu;
}
std::set<HANDLE>& ShutHandles() {
  static auto* handles = new std::set<HANDLE>();  // never destroyed: used by any thread
  return *handles;
}

// Milliseconds left until `deadline` for a wait, at least 0, below INFINITE.
DWORD WaitMs(Deadline deadline) {
  if (deadline == Deadline::max()) return INFINITE;
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<DWORD>(std::clamp<long long>(left.count(), 0, 0x7FFFFFFF));
}

// The errors that mean the other end is gone (or we shut the handle down).
bool PeerGone(DWORD e) {
  return e == ERROR_BROKEN_PIPE || e == ERROR_PIPE_NOT_CONNECTED || e == ERROR_NO_DATA ||
         e == ERROR_OPERATION_ABORTED || e == ERROR_HANDLE_EOF || e == ERROR_INVALID_HANDLE;
}

// An auto-closed manual-reset event for one overlapped I/O.
struct IoEvent {
  IoEvent() : h(::CreateEventW(nullptr, TRUE, FALSE, nullptr)) {}
  ~IoEvent() {
    if (h != nullptr) ::CloseHandle(h);
  }
  IoEvent(const IoEvent&) = delete;
  IoEvent& operator=(const IoEvent&) = delete;
  HANDLE h;
};

enum class IoKind { kRead, kWrite };

struct IoOutcome {
  DWORD bytes = 0;
  DWORD error = 0;  // 0: done (bytes moved)
  bool timed_out = false;
};

// One overlapped ReadFile/WriteFile of up to `n` bytes, waited for until
// `deadline` (Deadline::max(): no bound). On timeout the I/O is cancelled and
// waited for (the OVERLAPPED lives on this stack): what it moved meanwhile
// is in `bytes`.
IoOutcome OneIo(HANDLE h, IoKind kind, char* buf, std::size_t n, Deadline deadline) {
  IoOutcome out;
  IoEvent event;
  if (event.h == nullptr) {
    out.error = ::GetLastError();
    return out;
  }
  OVERLAPPED ov{};
  ov.hEvent = event.h;
  const auto len = static_cast<DWORD>(std::min<std::size_t>(n, 1u << 30));
  BOOL started = FALSE;
  DWORD start_error = 0;
  {
    std::lock_guard<std::mutex> lock(ShutMutex());
    if (ShutHandles().count(h) != 0) {
      out.error = ERROR_OPERATION_ABORTED;
      return out;
    }
    started = kind == IoKind::kRead ? ::ReadFile(h, buf, len, nullptr, &ov)
                                    : ::WriteFile(h, buf, len, nullptr, &ov);
    start_error = started ? 0 : ::GetLastError();
  }
  if (!started && start_error != ERROR_IO_PENDING) {
    out.error = start_error;
    return out;
  }
  // WAIT_FAILED is handled as a timeout: the I/O is cancelled and waited
  // for below, so `ov` is never left to the kernel past this frame.
  if (::WaitForSingleObject(event.h, WaitMs(deadline)) != WAIT_OBJECT_0) {
    ::CancelIoEx(h, &ov);
    out.timed_out = true;
  }
  // Waits for a cancelled I/O to finish: the kernel must be done with `ov`.
  if (!::GetOverlappedResult(h, &ov, &out.bytes, TRUE)) {
    const DWORD e = ::GetLastError();
    if (!(out.timed_out && e == ERROR_OPERATION_ABORTED)) out.error = e;
  }
  return out;
}


}  // namespace

namespace detail {

Status ReadExact(LocalHandle fd, char* out, std::size_t n, Deadline deadline, bool forever) {
  std::size_t got = 0;
  while (got < n) {
    if (!forever && std::chrono::steady_clock::now() >= deadline) {
      return {Errc::kTimeout, "broker did not answer in time"};
    }
    const IoOutcome io =
        OneIo(fd, IoKind::kRead, out + got, n - got, forever ? Deadline::max() : deadline);
    got += io.bytes;
    if (io.error != 0) {
      if (PeerGone(io.error)) return {Errc::kBrokerUnavailable, "broker closed the connection"};
      return {Errc::kBrokerUnavailable, "reading from broker: " + win::ErrorText(io.error)};
    }
    if (io.timed_out && got < n) return {Errc::kTimeout, "broker did not answer in time"};
  }
  return Status::Ok();
}

Status WriteAll(LocalHandle fd, std::string_view buf, Deadline deadline, std::size_t* sent_out) {
  std::size_t sent = 0;
  *sent_out = 0;
  while (sent < buf.size()) {
    // WriteFile does not write through a const pointer's promise; it only reads.
    const IoOutcome io = OneIo(fd, IoKind::kWrite, const_cast<char*>(buf.data()) + sent,
                               buf.size() - sent, deadline);
    sent += io.bytes;
    *sent_out = sent;
    if (io.error != 0) {
      return {Errc::kBrokerUnavailable, "writing to broker: " + win::ErrorText(io.error)};
    }
    if (io.timed_out && sent < buf.size()) {
      return {Errc::kTimeout, "the broker took no request in time (it does not read its socket)"};
    }
  }
  return Status::Ok();
}

}  // namespace detail

void CloseLocal(LocalHandle h) {
  if (h == kNoLocalHandle) return;
  {
    std::lock_guard<std::mutex> lock(ShutMutex());
    ShutHandles().erase(h);  // the value may name another handle later
  }
  ::CloseHandle(h);
}

void WriteNow(LocalHandle h, std::string_view bytes) {
  if (h == kNoLocalHandle || bytes.empty()) return;
  IoEvent event;
  if (event.h == nullptr) return;
  OVERLAPPED ov{};
  // The low bit set: no completion packet to a port the handle is bound to
  // (an Asio stream_handle's), only the event.
  ov.hEvent = reinterpret_cast<HANDLE>(reinterpret_cast<std::uintptr_t>(event.h) | 1);
  const BOOL ok =
      ::WriteFile(h, bytes.data(), static_cast<DWORD>(bytes.size()), nullptr, &ov);
  if (!ok && ::GetLastError() != ERROR_IO_PENDING) return;
  // The pipe's buffer (a whole frame) takes it at once; never wait long.
  if (::WaitForSingleObject(event.h, 100) == WAIT_TIMEOUT) ::CancelIoEx(h, &ov);
  DWORD n = 0;
  ::GetOverlappedResult(h, &ov, &n, TRUE);  // the kernel is done with `ov`
}

void ShutdownLocal(LocalHandle h) {
  if (h == kNoLocalHandle) return;
  std::lock_guard<std::mutex> lock(ShutMutex());
  ShutHandles().insert(h);
  ::CancelIoEx(h, nullptr);
}

Result<PeerCredentials> GetPeerCredentials(LocalHandle fd) {
  // Either end of a pipe: the other end's process.
  DWORD flags = 0;
  if (!::GetNamedPipeInfo(fd, &flags, nullptr, nullptr, nullptr)) {
    return Status{Errc::kInternal, "cannot read the pipe's end (GetNamedPipeInfo): " +
                                       win::ErrorText(::GetLastError())};
  }
  const bool server_end = (flags & PIPE_SERVER_END) != 0;
  ULONG pid = 0;
  const BOOL got_pid = server_end ? ::GetNamedPipeClientProcessId(fd, &pid)
                                  : ::GetNamedPipeServerProcessId(fd, &pid);
  if (!got_pid) {
    return Status{Errc::kInternal,
                  std::string("cannot read the process at the pipe's other end (") +
                      (server_end ? "GetNamedPipeClientProcessId" : "GetNamedPipeServerProcessId") +
                      "): " + win::ErrorText(::GetLastError())};
  }
  PeerCredentials peer;
  peer.pid = static_cast<ProcessId>(pid);
  if (!server_end) {
    // The broker's end: the pipe object's owner is what is trusted. The pid
    // is only for messages: by the time its token is opened, the process
    // that made the pipe may have ended and its pid been reused. The broker
    // sets the owner to its own account (PipeSecurityDescriptor); only its
    // creator (or a holder of SeRestorePrivilege) can name another owner.
    auto owner = win::HandleOwner(fd);
    if (!owner.ok()) return owner.status();
    // Where the server's token can be read (not a LocalSystem service seen
    // by an ordinary user), it must agree with the owner: a mismatch is a
    // pipe made for someone else, or a pid already reused.
    auto id = win::ProcessIdentityOf(peer.pid);
    if (id.ok() && id->user != *owner) {
      return Status{Errc::kPermissionDenied,
                    "the pipe's owner " + DescribeAccount(*owner) +
                        " is not the account of its server process (pid " +
                        std::to_string(pid) + ", " + DescribeAccount(id->user) + ")"};
    }
    if (!id.ok() && id.status().code() != Errc::kPermissionDenied) {
      return Status{Errc::kInternal,
                    "cannot read the credentials of the process at the pipe's other end: " +
                        id.status().message()};
    }
    peer.uid = *owner;
    if (id.ok()) peer.gid = id->primary_group;
    return peer;
  }
  auto id = win::ProcessIdentityOf(peer.pid);
  if (!id.ok()) {
    return Status{Errc::kInternal,
                  "cannot read the credentials of the process at the pipe's other end: " +
                      id.status().message()};
  }
  peer.uid = id->user;
  peer.gid = id->primary_group;
  return peer;
}

Result<LocalHandle> ConnectLocal(const std::string& path, Deadline deadline) {
  if (!win::IsPipeName(path)) {
    return Status{Errc::kInvalidArgument,
                  "pipe name '" + path + "' is not of the form \\\\.\\pipe\\<name> (a name without '\\' or '/')"};
  }
  const std::wstring name = win::Widen(path);
  for (;;) {
    // SECURITY_IDENTIFICATION: the server may learn who we are, never act as
    // us. FILE_WRITE_DATA, not GENERIC_WRITE: on a pipe FILE_APPEND_DATA is
    // FILE_CREATE_PIPE_INSTANCE, which the broker's descriptor grants no
    // client (one could serve the next client as the broker).
    HANDLE h = ::CreateFileW(
        name.c_str(), GENERIC_READ | FILE_WRITE_DATA, 0, nullptr, OPEN_EXISTING,
        FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION, nullptr);
    if (h != INVALID_HANDLE_VALUE) return LocalHandle{h};
    const DWORD err = ::GetLastError();
    if (err != ERROR_PIPE_BUSY) {
      std::string hint = err == ERROR_FILE_NOT_FOUND ? " (is dsb-broker running?)" : "";
      return Status{Errc::kBrokerUnavailable,
                    "cannot connect to broker socket " + path + ": " + win::ErrorText(err) + hint};
    }
    // Every instance is taken: the broker has not yet made the next one.
    const DWORD left = WaitMs(deadline);
    if (left == 0) {
      return Status{Errc::kTimeout, "broker socket " + path +
                                        " accepted no connection in time (every instance of the "
                                        "pipe is busy: the broker is stopped, overloaded or not a "
                                        "broker)"};
    }
    // Returns when an instance is free (or the wait is over); then retry.
    ::WaitNamedPipeW(name.c_str(), std::min<DWORD>(left, 50));
  }
}

Result<LocalHandle> ConnectLocal(const std::string& path) {
  return ConnectLocal(path, Deadline::max());
}

}  // namespace dsb
