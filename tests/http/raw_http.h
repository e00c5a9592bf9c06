// Raw TCP for the HTTP endpoint's tests: connect to 127.0.0.1:port, send
// bytes as they are (garbage, huge headers, nothing at all), read what comes
// back until the peer closes or a deadline passes. No HTTP library: the tests
// must be able to send what no library would.
#ifndef DSB_TESTS_HTTP_RAW_HTTP_H_
#define DSB_TESTS_HTTP_RAW_HTTP_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsb::testing {

// A connected socket (closed by the destructor); fd() < 0 if connect failed.
class RawConnection {
 public:
  explicit RawConnection(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  RawConnection(RawConnection&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }

  int fd() const { return fd_; }
  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  // Reads until the peer closes (returns true) or `timeout` passes (false);
  // what arrived is appended to `*out`.
  bool ReadToClose(std::string* out, std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      switch (RecvSome(out, end)) {
        case Got::kData: continue;
        case Got::kClosed: return true;  // closed (0) or reset (-1)
        case Got::kTimeout: return false;
      }
    }
  }
  // Reads one response whose header carries Content-Length (the body
  // included; none for a HEAD when `head`); false on close or timeout first.
  bool ReadResponse(std::string* out, std::chrono::milliseconds timeout, bool head = false) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const std::size_t header_end = out->find("\r\n\r\n");
      if (header_end != std::string::npos) {
        std::size_t length = 0;
        const std::size_t cl = out->find("Content-Length: ");
        if (cl != std::string::npos && cl < header_end) {
          length = std::stoul(out->substr(cl + 16));
        }
        if (head || out->size() >= header_end + 4 + length) return true;
      }
      if (RecvSome(out, end) != Got::kData) return false;
    }
  }

 private:
  enum class Got { kData, kClosed, kTimeout };
  // Appends what one recv brings, waiting for it until `end`: kClosed when the
  // peer closed or reset, kTimeout when `end` passed or poll failed.
  Got RecvSome(std::string* out, std::chrono::steady_clock::time_point end) {
    char buf[8192];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return Got::kTimeout;
      pollfd p{fd_, POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0) return Got::kTimeout;
      if (r == 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return Got::kClosed;
      out->append(buf, static_cast<std::size_t>(n));
      return Got::kData;
    }
  }

  int fd_ = -1;
};

// The status code of a response ("HTTP/1.1 200 OK..." -> 200), 0 if none.
inline int StatusOf(const std::string& response) {
  if (response.size() < 12 || response.compare(0, 5, "HTTP/") != 0) return 0;
  return std::stoi(response.substr(9, 3));
}

inline std::string BodyOf(const std::string& response) {
  const std::size_t e = response.find("\r\n\r\n");
  return e == std::string::npos ? std::string() : response.substr(e + 4);
}

// One GET over a new connection ("Connection: close"); the whole response,
// empty if the server did not answer within `timeout`.
inline std::string HttpGet(std::uint16_t port, const std::string& target,
                           std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  RawConnection c(port);
  if (c.fd() < 0) return {};
  if (!c.Send("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")) {
    return {};
  }
  std::string out;
  c.ReadToClose(&out, timeout);
  return out;
}

}  // namespace dsb::testing

#endif  // DSB_TESTS_HTTP_RAW_HTTP_H_
