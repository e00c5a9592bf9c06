// The cluster port's accept loop and its admission before authentication
// (issue 9): an unauthenticated peer must not exhaust the broker's
// descriptors, spin its accept loop, flood its log, or keep a broker of the
// cluster out.
//
//  - At most kMaxUnauthenticated connections in the handshake at once, and
//    kMaxUnauthenticatedPerAddress from one IP address. At a bound, the
//    address with the most handshakes in progress gives way (its longest
//    waiting one is closed; see admission.h), so a flood from one address
//    cannot keep out a broker from another.
//  - Every handshake ends within kHandshakeTimeout.
//  - Accept errors are backed off and the reserve descriptor sheds over-limit
//    peers (accept_guard.h).
//  - Refused handshakes are logged by wire::Channel (rate-limited per
//    address); admission refusals and evictions by the AcceptGuard (one line
//    per 10 s with the count).
// An authenticated broker leaves the bound at once and is served for as long
// as its channel lives: it is never evicted by this gate.
//
// Thread rule: all on the broker's single-threaded io_context.
#ifndef DSB_BROKER_CLUSTER_GATE_H_
#define DSB_BROKER_CLUSTER_GATE_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "broker/accept_guard.h"
#include "broker/admission.h"
#include "broker/wire/channel.h"

namespace dsb::broker {

inline constexpr std::uint64_t kMaxUnauthenticated = 32;
inline constexpr std::uint64_t kMaxUnauthenticatedPerAddress = 4;
inline constexpr std::chrono::seconds kHandshakeTimeout{5};

class ClusterGate {
 public:
  using Clock = std::chrono::steady_clock;
  // Serves one authenticated channel until it ends.
  using ServeFn = std::function<boost::asio::awaitable<void>(wire::Channel)>;

  // `acceptor`: open and listening; it must outlive the gate's coroutines.
  ClusterGate(boost::asio::io_context& io, boost::asio::ip::tcp::acceptor& acceptor,
              wire::Credentials credentials, std::string what);

  // Accepts until the acceptor is closed (or Stop()). Spawn it detached.
  boost::asio::awaitable<void> AcceptLoop(ServeFn serve);
  // No new connection is admitted or served after this.
  void Stop() { stopping_ = true; }

  std::size_t unauthenticated() const { return admission_.size(); }

 private:
  boost::asio::awaitable<void> Handshake(boost::asio::ip::tcp::socket socket, std::uint64_t id,
                                         ServeFn serve);
  void Evict(std::uint64_t id);

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor& acceptor_;
  wire::Credentials credentials_;
  AcceptGuard guard_;
  Admission<std::string> admission_;
  // Handshakes in progress: id -> the socket's descriptor (valid while the
  // handshake runs: the id is forgotten before Channel::Accept returns to us).
  // (int on POSIX, SOCKET on Windows: what native_handle() converts to.)
  std::map<std::uint64_t, boost::asio::detail::socket_type> in_handshake_;
  std::uint64_t next_id_ = 1;
  bool stopping_ = false;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_CLUSTER_GATE_H_
