// The local transport on POSIX: a Unix stream socket (contracts in
// common/local_frame.h and common/local_frame_io.h).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "common/local_frame.h"
#include "common/local_frame_io.h"

namespace dsb {
namespace {

// Milliseconds left until `deadline` for poll(), at least 0.
int PollMs(Deadline deadline) {
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<long long>(left.count(), 0, 1 << 30));
}

}  // namespace

namespace detail {

Status ReadExact(LocalHandle fd, char* out, std::size_t n, Deadline deadline, bool forever) {
  std::size_t got = 0;
  while (got < n) {
    int wait_ms = -1;
    if (!forever) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {Errc::kTimeout, "broker did not answer in time"};
      wait_ms = static_cast<int>(std::min<long long>(left.count(), 1 << 30));
    }
    pollfd p{fd, POLLIN, 0};
    const int pr = ::poll(&p, 1, wait_ms);
    if (pr < 0 && errno == EINTR) continue;
    if (pr == 0) return {Errc::kTimeout, "broker did not answer in time"};
    const ssize_t r = ::recv(fd, out + got, n - got, 0);
    if (r == 0) return {Errc::kBrokerUnavailable, "broker closed the connection"};
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return {Errc::kBrokerUnavailable,
              std::string("reading from broker: ") + std::strerror(errno)};
    }
    got += static_cast<std::size_t>(r);
  }
  return Status::Ok();
}

Status WriteAll(LocalHandle fd, std::string_view buf, Deadline deadline, std::size_t* sent_out) {
  std::size_t sent = 0;
  while (sent < buf.size()) {
    const ssize_t w = ::send(fd, buf.data() + sent, buf.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
      sent += static_cast<std::size_t>(w);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *sent_out = sent;
      return {Errc::kBrokerUnavailable, std::string("writing to broker: ") + std::strerror(errno)};
    }
    // The socket is full: the broker is not reading. Wait for room, boundedly.
    pollfd p{fd, POLLOUT, 0};
    const int pr = ::poll(&p, 1, PollMs(deadline));
    if (pr < 0 && errno == EINTR) continue;
    if (pr == 0) {
      *sent_out = sent;
      return {Errc::kTimeout, "the broker took no request in time (it does not read its socket)"};
    }
  }
  *sent_out = sent;
  return Status::Ok();
}

}  // namespace detail

void CloseLocal(LocalHandle h) {
  if (h >= 0) ::close(h);
}

void WriteNow(LocalHandle h, std::string_view bytes) {
  if (h < 0) return;
  (void)::send(h, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

void ShutdownLocal(LocalHandle h) {
  if (h >= 0) ::shutdown(h, SHUT_RDWR);
}

Result<PeerCredentials> GetPeerCredentials(LocalHandle fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
    return Status{
        Errc::kInternal,
        std::string("cannot read the broker's credentials (SO_PEERCRED): ") + std::strerror(errno)};
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

Result<LocalHandle> ConnectLocal(const std::string& path, Deadline deadline) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status{Errc::kInvalidArgument, "socket path '" + path + "' is empty or longer than " +
                                              std::to_string(sizeof(addr.sun_path) - 1) + " bytes"};
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  // Non-blocking: a blocking connect() to a listener whose backlog is full
  // (a broker that is stopped or does not accept) waits without bound. Linux
  // answers EAGAIN at once instead; retry with a short backoff until the
  // deadline.
  auto backoff = std::chrono::milliseconds(1);
  for (;;) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return Status{Errc::kInternal, std::string("socket(): ") + std::strerror(errno)};
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    int err = rc == 0 ? 0 : errno;
    if (rc != 0 && err == EINPROGRESS) {
      // Not what Linux does for AF_UNIX, but portable: wait for writability.
      pollfd p{fd, POLLOUT, 0};
      const int pr = ::poll(&p, 1, PollMs(deadline));
      socklen_t len = sizeof err;
      if (pr > 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0) {
        rc = err == 0 ? 0 : -1;
      } else {
        err = EAGAIN;
      }
    }
    if (rc == 0) {
      const int flags = ::fcntl(fd, F_GETFL);
      if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        const int e = errno;
        ::close(fd);
        return Status{Errc::kInternal, std::string("fcntl(): ") + std::strerror(e)};
      }
      return fd;
    }
    ::close(fd);
    if (err != EAGAIN && err != EINTR) {
      std::string hint = err == ENOENT || err == ECONNREFUSED ? " (is dsb-broker running?)" : "";
      return Status{Errc::kBrokerUnavailable,
                    "cannot connect to broker socket " + path + ": " + std::strerror(err) + hint};
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return Status{Errc::kTimeout, "broker socket " + path +
                                        " accepted no connection in time (its backlog is full: "
                                        "the broker is stopped, overloaded or not a broker)"};
    }
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
  }
}

Result<LocalHandle> ConnectLocal(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status{Errc::kInvalidArgument, "socket path '" + path + "' is empty or longer than " +
                                              std::to_string(sizeof(addr.sun_path) - 1) + " bytes"};
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status{Errc::kInternal, std::string("socket(): ") + std::strerror(errno)};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    ::close(fd);
    std::string hint = err == ENOENT || err == ECONNREFUSED ? " (is dsb-broker running?)" : "";
    return Status{Errc::kBrokerUnavailable,
                  "cannot connect to broker socket " + path + ": " + std::strerror(err) + hint};
  }
  return fd;
}

}  // namespace dsb
