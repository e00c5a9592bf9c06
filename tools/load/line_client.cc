#include "tools/load/line_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

namespace dsb::load {

namespace {
std::error_code LastError() { return {errno, std::system_category()}; }
}  // namespace

bool SplitHostPort(std::string_view text, std::string& host, std::uint16_t& port) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view h = text.substr(0, colon);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  const std::string_view p = text.substr(colon + 1);
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
  if (p.empty() || ec != std::errc() || ptr != p.data() + p.size() || value > 65535) return false;
  host = h == "localhost" ? "127.0.0.1" : std::string(h);
  port = static_cast<std::uint16_t>(value);
  return true;
}

LineClient::LineClient(LineClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), buffer_(std::move(other.buffer_)) {}

LineClient& LineClient::operator=(LineClient&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

void LineClient::Close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buffer_.clear();
}

std::error_code LineClient::Connect(std::string_view host_port,
                                    std::chrono::milliseconds io_timeout) {
  Close();
  std::string host;
  std::uint16_t port = 0;
  if (!SplitHostPort(host_port, host, port)) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_INET;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof(sockaddr_in6);
  } else {
    return std::make_error_code(std::errc::invalid_argument);
  }
  const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return LastError();
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(io_timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((io_timeout.count() % 1000) * 1000);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));  // also bounds connect()
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    const std::error_code ec = LastError();
    ::close(fd);
    return ec;
  }
  fd_ = fd;
  return {};
}

std::error_code LineClient::SendRaw(std::string_view bytes) {
  if (fd_ < 0) return std::make_error_code(std::errc::not_connected);
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::error_code ec =
          errno == EAGAIN ? std::make_error_code(std::errc::timed_out) : LastError();
      Close();
      return ec;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

std::string LineClient::ReadLine(std::error_code& ec) {
  ec.clear();
  if (fd_ < 0) {
    ec = std::make_error_code(std::errc::not_connected);
    return {};
  }
  for (;;) {
    const auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (buffer_.size() > kMaxReplyBytes) {
      ec = std::make_error_code(std::errc::message_size);
      Close();
      return {};
    }
    char chunk[4096];
    const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      ec = std::make_error_code(std::errc::connection_reset);
    } else {
      ec = errno == EAGAIN ? std::make_error_code(std::errc::timed_out) : LastError();
    }
    Close();
    return {};
  }
}

std::string LineClient::Call(std::string_view line, std::error_code& ec) {
  std::string out(line);
  out += '\n';
  ec = SendRaw(out);
  if (ec) return {};
  return ReadLine(ec);
}

}  // namespace dsb::load
