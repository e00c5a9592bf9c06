// LineClient's socket calls on POSIX (line_client.h is the contract; the protocol around them
// is in line_client.cc).
#include "tools/load/line_client.h"

#include <netinet/tcp.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>

#include "tools/load/line_client_socket.h"

namespace dsb::load {

namespace {
std::error_code LastError() { return {errno, std::system_category()}; }
}  // namespace

void LineClient::Close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buffer_.clear();
}

std::error_code LineClient::StartSockets() { return {}; }

std::error_code LineClient::OpenAndConnect(int family, const void* addr, int len,
                                           std::chrono::milliseconds io_timeout) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return LastError();
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(io_timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((io_timeout.count() % 1000) * 1000);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));  // also bounds connect()
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd, static_cast<const sockaddr*>(addr), static_cast<socklen_t>(len)) != 0) {
    const std::error_code ec = LastError();
    ::close(fd);
    return ec;
  }
  fd_ = fd;
  return {};
}

std::size_t LineClient::SendSome(std::string_view bytes, std::error_code& ec) {
  for (;;) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    ec = errno == EAGAIN ? std::make_error_code(std::errc::timed_out) : LastError();
    return 0;
  }
}

std::size_t LineClient::RecvSome(char* buf, std::size_t size, std::error_code& ec) {
  for (;;) {
    const ssize_t n = ::recv(fd_, buf, size, 0);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    ec = errno == EAGAIN ? std::make_error_code(std::errc::timed_out) : LastError();
    return 0;
  }
}

}  // namespace dsb::load
