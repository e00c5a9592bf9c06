// The platform-neutral half of LineClient (line_client.h): address parsing, moves, Call,
// Connect, SendRaw and ReadLine. The socket calls live in line_client_posix.cc and
// line_client_win.cc (the private members under "The platform's socket calls").
#include "tools/load/line_client.h"

#include <charconv>
#include <utility>

#include "tools/load/line_client_socket.h"

namespace dsb::load {

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
    : fd_(std::exchange(other.fd_, kNoSocket)), buffer_(std::move(other.buffer_)) {}

LineClient& LineClient::operator=(LineClient&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, kNoSocket);
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

std::string LineClient::Call(std::string_view line, std::error_code& ec) {
  std::string out(line);
  out += '\n';
  ec = SendRaw(out);
  if (ec) return {};
  return ReadLine(ec);
}

std::error_code LineClient::Connect(std::string_view host_port,
                                    std::chrono::milliseconds io_timeout) {
  Close();
  if (const std::error_code ec = StartSockets()) return ec;
  std::string host;
  std::uint16_t port = 0;
  if (!SplitHostPort(host_port, host, port)) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  sockaddr_storage addr{};
  int len = 0;
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
  return OpenAndConnect(family, &addr, len, io_timeout);
}

std::error_code LineClient::SendRaw(std::string_view bytes) {
  if (fd_ == kNoSocket) return std::make_error_code(std::errc::not_connected);
  while (!bytes.empty()) {
    std::error_code ec;
    const std::size_t n = SendSome(bytes, ec);
    if (ec) {
      Close();
      return ec;
    }
    bytes.remove_prefix(n);
  }
  return {};
}

std::string LineClient::ReadLine(std::error_code& ec) {
  ec.clear();
  if (fd_ == kNoSocket) {
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
    const std::size_t n = RecvSome(chunk, sizeof(chunk), ec);
    if (n > 0) {
      buffer_.append(chunk, n);
      continue;
    }
    if (!ec) ec = std::make_error_code(std::errc::connection_reset);
    Close();
    return {};
  }
}

}  // namespace dsb::load
