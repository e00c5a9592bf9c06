// PortReservation: a free TCP port on 127.0.0.1 for a child to listen on,
// held by the test until the child has bound it.
//
// Picking a port by binding port 0 and closing the socket leaves a window in
// which another test (or an outgoing connection's ephemeral port) takes it.
// A reservation instead keeps its socket bound, with SO_REUSEADDR and not
// listening, for as long as the object lives or until Release():
//   - the kernel never hands the port out to another bind(port 0) nor to an
//     outgoing connection while a socket is bound to it;
//   - the child can still bind and listen on it, because Linux lets a second
//     socket bind an address when both set SO_REUSEADDR and none listens.
//     The broker's cluster listener, dsb-simserver and dsb-faultproxy (Asio
//     acceptors) and PostgreSQL all set SO_REUSEADDR.
// The race that remains: a program outside the tests that binds this very
// port number (not port 0) with SO_REUSEADDR and listens before the child
// does. A child that does not set SO_REUSEADDR cannot bind a reserved port:
// Release() before starting such a child, which reopens the old window.
//
// Thread rule: none.
#ifndef DSB_TESTS_SUPPORT_PORTS_H_
#define DSB_TESTS_SUPPORT_PORTS_H_

#include <cstdint>
#include <string>

namespace dsb::testing {

class PortReservation {
 public:
  // Binds a new port. ok() is false (port() 0, error() says why) on failure.
  PortReservation();
  ~PortReservation();  // Release()
  PortReservation(PortReservation&& other) noexcept;
  PortReservation& operator=(PortReservation&& other) noexcept;
  PortReservation(const PortReservation&) = delete;
  PortReservation& operator=(const PortReservation&) = delete;

  bool ok() const { return port_ != 0; }
  std::uint16_t port() const { return port_; }
  // "127.0.0.1:<port>".
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& error() const { return error_; }
  // Closes the socket (the child listens on the port now, or never will).
  // port() stays readable.
  void Release();

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::string error_;
};

// A listening TCP socket on 127.0.0.1, port picked by the kernel and written
// to `*port` (decimal), without SO_REUSEADDR: a port another program holds,
// so a bind there fails. Returns the fd (the caller closes it), -1 on failure.
int ListenOnLoopback(std::string* port);

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_PORTS_H_
