// LineClient: a blocking TCP client for dsb-simserver's line protocol (request line in, one
// reply line out). Used by dsb-load's action threads and by the tools tests.
//
// Every call is bounded by the I/O timeout given to Connect (SO_RCVTIMEO/SO_SNDTIMEO), so a
// stuck server cannot hang a caller forever.
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

  bool connected() const { return fd_ >= 0; }
  // Closes the connection without any goodbye (the server sees EOF). Idempotent.
  void Close() noexcept;

 private:
  int fd_ = -1;
  std::string buffer_;  // bytes received after the last returned line
};

}  // namespace dsb::load

#endif  // DSB_TOOLS_LOAD_LINE_CLIENT_H_
