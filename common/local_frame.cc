#include "common/local_frame.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace dsb {
namespace {

// Reads exactly n bytes; waits at most until `deadline` for each chunk.
Status ReadExact(int fd, char* out, std::size_t n,
                 std::chrono::steady_clock::time_point deadline, bool forever) {
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
      return {Errc::kBrokerUnavailable, std::string("reading from broker: ") + std::strerror(errno)};
    }
    got += static_cast<std::size_t>(r);
  }
  return Status::Ok();
}

}  // namespace

Result<int> ConnectLocal(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status{Errc::kInvalidArgument, "socket path '" + path + "' is empty or longer than " +
                                              std::to_string(sizeof(addr.sun_path) - 1) +
                                              " bytes"};
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

std::string FrameHeader(std::size_t length) {
  std::string h(4, '\0');
  h[0] = static_cast<char>((length >> 24) & 0xFF);
  h[1] = static_cast<char>((length >> 16) & 0xFF);
  h[2] = static_cast<char>((length >> 8) & 0xFF);
  h[3] = static_cast<char>(length & 0xFF);
  return h;
}

Status WriteFrame(int fd, std::string_view payload) {
  if (payload.size() > kMaxLocalFrame) {
    return {Errc::kProtocol, "message of " + std::to_string(payload.size()) +
                                 " bytes exceeds the " + std::to_string(kMaxLocalFrame) +
                                 "-byte limit"};
  }
  std::string buf = FrameHeader(payload.size());
  buf.append(payload);
  std::size_t sent = 0;
  while (sent < buf.size()) {
    const ssize_t w = ::send(fd, buf.data() + sent, buf.size() - sent, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return {Errc::kBrokerUnavailable, std::string("writing to broker: ") + std::strerror(errno)};
    }
    sent += static_cast<std::size_t>(w);
  }
  return Status::Ok();
}

Result<std::string> ReadFrame(int fd, std::chrono::milliseconds timeout) {
  const bool forever = timeout.count() < 0;
  const auto deadline = std::chrono::steady_clock::now() + (forever ? std::chrono::milliseconds(0)
                                                                    : timeout);
  unsigned char h[4];
  if (Status s = ReadExact(fd, reinterpret_cast<char*>(h), 4, deadline, forever); !s.ok()) {
    return s;
  }
  const std::size_t len = (std::size_t{h[0]} << 24) | (std::size_t{h[1]} << 16) |
                          (std::size_t{h[2]} << 8) | std::size_t{h[3]};
  if (len > kMaxLocalFrame) {
    return Status{Errc::kProtocol, "peer announced a " + std::to_string(len) +
                                       "-byte message; the limit is " +
                                       std::to_string(kMaxLocalFrame)};
  }
  std::string out(len, '\0');
  if (Status s = ReadExact(fd, out.data(), len, deadline, forever); !s.ok()) return s;
  return out;
}

}  // namespace dsb
