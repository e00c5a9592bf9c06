// LineClient: a blocking TCP client for dsb-simserver's line protocol (request line in, one
// reply line out). Used by dsb-load's action threads and by the tools tests.
//
// Every call is bounded by the I/O timeout given to Connect (SO_RCVTIMEO/SO_SNDTIMEO), so a
// stuck server cannot hang a caller forever.
//
// Platforms: line_client.cc holds what is the same everywhere; the socket calls are in
// line_client_posix.cc (BSD sockets) and line_client_win.cc (Winsock 2, which the caller need
// not start: Connect does, once per process). Errors mean the same on both: timeouts are
// std::errc::timed_out, a closed connection std::errc::connection_reset; other failures carry
// the system's code (errno on POSIX, WSAGetLastError() on Windows, std::system_category()).
//
// Thread rule: one thread at a time per LineClient.
#ifndef DSB_TOOLS_LOAD_LINE_CLIENT_H_
#define DSB_TOOLS_LOAD_LINE_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace dsb::load {

// Splits "HOST:PORT" (HOST an IPv4/IPv6 literal or "localhost"). False when malformed.
bool SplitHostPort(std::string_view text, std::string& host, std::uint16_t& port);

class LineClient {
 public:
  static constexpr std::size_t kMaxReplyBytes = 64 * 1024;

  LineClient() = default;
  ~LineClient() { Close(); }
  LineClient(LineClient&& other) noexcept;
  LineClient& operator=(LineClient&& other) noexcept;
  LineClient(const LineClient&) = delete;
  LineClient& operator=(const LineClient&) = delete;

  // Connects to HOST:PORT. Errors: std::errc::invalid_argument for a bad address, else the
  // system error of socket()/connect() (e.g. connection_refused, timed_out).
  std::error_code Connect(std::string_view host_port, std::chrono::milliseconds io_timeout);

  // Sends `line` + "\n" and returns the reply line (without "\n"). Errors: the system error of
  // send()/recv() (timed_out after the I/O timeout), std::errc::connection_reset when the server
  // closed the connection, std::errc::message_size when a reply exceeds kMaxReplyBytes. After an
  // error the connection is closed.
  std::string Call(std::string_view line, std::error_code& ec);

  // Sends raw bytes (tests use it to send malformed input). Closes on error.
  std::error_code SendRaw(std::string_view bytes);
  // Reads one reply line. Same errors as Call.
  std::string ReadLine(std::error_code& ec);

  bool connected() const { return fd_ != kNoSocket; }
  // Closes the connection without any goodbye (the server sees EOF). Idempotent.
  void Close() noexcept;

 private:
  // The platform's socket calls (line_client_posix.cc, line_client_win.cc); the protocol
  // (address parsing, the send loop, line splitting, closing after an error) is in
  // line_client.cc, once.
  //
  // Readies the socket library (Winsock's WSAStartup on Windows, once per process; nothing on
  // POSIX): the system error when it cannot.
  static std::error_code StartSockets();
  // Opens a TCP socket of address family `family` (AF_INET, AF_INET6) not inherited by
  // children, with both I/O timeouts `io_timeout` and TCP_NODELAY, connects it to `addr`
  // (`len` bytes of a sockaddr) and keeps it in fd_. The system error of socket()/connect()
  // otherwise (fd_ unchanged). REQUIRES: fd_ == kNoSocket.
  std::error_code OpenAndConnect(int family, const void* addr, int len,
                                 std::chrono::milliseconds io_timeout);
  // One send() of at most `bytes.size()` bytes (interrupted calls retried): the count sent,
  // or 0 with `ec` set (std::errc::timed_out after the send timeout). REQUIRES: connected().
  std::size_t SendSome(std::string_view bytes, std::error_code& ec);
  // One recv() of at most `size` bytes into `buf` (interrupted calls retried): the count
  // received, 0 with `ec` clear when the server closed the connection, or 0 with `ec` set
  // (std::errc::timed_out after the receive timeout). REQUIRES: connected().
  std::size_t RecvSome(char* buf, std::size_t size, std::error_code& ec);

#ifdef _WIN32
  using Socket = std::uintptr_t;  // a Winsock SOCKET (UINT_PTR); INVALID_SOCKET is ~0
  static constexpr Socket kNoSocket = ~Socket{0};
#else
  using Socket = int;
  static constexpr Socket kNoSocket = -1;
#endif
  Socket fd_ = kNoSocket;
  std::string buffer_;  // bytes received after the last returned line
};

}  // namespace dsb::load

#endif  // DSB_TOOLS_LOAD_LINE_CLIENT_H_
