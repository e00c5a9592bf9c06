// LineClient's socket calls on Windows: Winsock 2 (line_client.h is the contract; the protocol
// around them is in line_client.cc).
//
// The same calls as line_client_posix.cc. What differs: Winsock must be started once per
// process (WSAStartup, kept for the process's life), SO_RCVTIMEO/SO_SNDTIMEO take a DWORD of
// milliseconds instead of a timeval, a timed-out recv/send fails with WSAETIMEDOUT instead of
// EAGAIN, errors come from WSAGetLastError(), and there is no SIGPIPE (so no MSG_NOSIGNAL).
// SO_SNDTIMEO does not bound connect() on Windows; a refused loopback connect fails at once
// and the tools only connect to loopback or known addresses.
#include <winsock2.h>
#include <ws2tcpip.h>

#include <algorithm>

#include "tools/load/line_client.h"

namespace dsb::load {

namespace {

std::error_code LastError() { return {WSAGetLastError(), std::system_category()}; }

// Starts Winsock 2.2 once; the error of WSAStartup when it failed (every Connect reports it).
int StartWinsock() {
  static const int result = [] {
    WSADATA data{};
    return WSAStartup(MAKEWORD(2, 2), &data);
  }();
  return result;
}

}  // namespace

void LineClient::Close() noexcept {
  if (fd_ != kNoSocket) ::closesocket(static_cast<SOCKET>(fd_));
  fd_ = kNoSocket;
  buffer_.clear();
}

std::error_code LineClient::StartSockets() {
  if (const int err = StartWinsock(); err != 0) return {err, std::system_category()};
  return {};
}

std::error_code LineClient::OpenAndConnect(int family, const void* addr, int len,
                                           std::chrono::milliseconds io_timeout) {
  // WSA_FLAG_NO_HANDLE_INHERIT: the role of SOCK_CLOEXEC (dsb-load starts child processes).
  const SOCKET s = ::WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                                WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET) return LastError();
  const DWORD timeout_ms = static_cast<DWORD>(io_timeout.count());
  const BOOL one = TRUE;
  ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, reinterpret_cast<const char*>(&timeout_ms),
               sizeof(timeout_ms));
  ::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, reinterpret_cast<const char*>(&timeout_ms),
               sizeof(timeout_ms));
  ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one), sizeof(one));
  if (::connect(s, static_cast<const sockaddr*>(addr), len) != 0) {
    const std::error_code ec = LastError();
    ::closesocket(s);
    return ec;
  }
  fd_ = static_cast<Socket>(s);
  return {};
}

std::size_t LineClient::SendSome(std::string_view bytes, std::error_code& ec) {
  // send() takes an int count: at most 1 MiB per call.
  const int chunk = static_cast<int>(std::min<std::size_t>(bytes.size(), 1 << 20));
  for (;;) {
    const int n = ::send(static_cast<SOCKET>(fd_), bytes.data(), chunk, 0);
    if (n != SOCKET_ERROR) return static_cast<std::size_t>(n);
    const int err = WSAGetLastError();
    if (err == WSAEINTR) continue;
    ec = err == WSAETIMEDOUT ? std::make_error_code(std::errc::timed_out)
                             : std::error_code(err, std::system_category());
    return 0;
  }
}

std::size_t LineClient::RecvSome(char* buf, std::size_t size, std::error_code& ec) {
  const int capped = static_cast<int>(std::min<std::size_t>(size, 1 << 20));
  for (;;) {
    const int n = ::recv(static_cast<SOCKET>(fd_), buf, capped, 0);
    if (n != SOCKET_ERROR) return static_cast<std::size_t>(n);
    const int err = WSAGetLastError();
    if (err == WSAEINTR) continue;
    ec = err == WSAETIMEDOUT     ? std::make_error_code(std::errc::timed_out)
         : err == WSAECONNRESET ? std::make_error_code(std::errc::connection_reset)
                                : std::error_code(err, std::system_category());
    return 0;
  }
}

}  // namespace dsb::load
