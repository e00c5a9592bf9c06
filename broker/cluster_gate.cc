#include "broker/cluster_gate.h"

#ifndef _WIN32
#include <sys/socket.h>
#endif

#include <boost/asio.hpp>
#include <spdlog/spdlog.h>

namespace dsb::broker {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// AcceptGuard::ShedOne takes a POSIX listening descriptor. Windows has no
// descriptor limit and the guard keeps no spare there (it sheds nothing), and
// a SOCKET does not fit an int: pass none.
bool ShedOneWaiting(AcceptGuard& guard, tcp::acceptor& acceptor) {
#ifdef _WIN32
  (void)acceptor;
  return guard.ShedOne(-1, "");
#else
  return guard.ShedOne(acceptor.native_handle(), "");
#endif
}

}  // namespace

ClusterGate::ClusterGate(asio::io_context& io, tcp::acceptor& acceptor,
                         wire::Credentials credentials, std::string what)
    : io_(io),
      acceptor_(acceptor),
      credentials_(std::move(credentials)),
      guard_(std::move(what)),
      admission_({kMaxUnauthenticated, kMaxUnauthenticatedPerAddress}) {}

asio::awaitable<void> ClusterGate::AcceptLoop(ServeFn serve) {
  asio::steady_timer backoff(io_);
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (stopping_ || ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    const auto now = Clock::now();
    if (ec) {
      // Out of descriptors: answer (close) one waiting peer through the spare
      // and try again at once; anything else waits (never a busy loop).
      if (AcceptGuard::OutOfDescriptors(ec) && ShedOneWaiting(guard_, acceptor_)) {
        guard_.Refused("out of descriptors: a waiting connection was closed unanswered", now);
        continue;
      }
      backoff.expires_after(guard_.Failed(ec, now));
      co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    guard_.Succeeded();
    boost::system::error_code rec;
    const tcp::endpoint remote = socket.remote_endpoint(rec);
    const std::string address = rec ? std::string("(unknown)") : remote.address().to_string();
    const std::uint64_t id = next_id_++;
    const auto d = admission_.Admit(address, id, now);
    if (!d.admit) {
      guard_.Refused("unauthenticated connection from " + address + " refused: " +
                         std::to_string(admission_.size()) + " handshakes in progress (bound " +
                         std::to_string(kMaxUnauthenticated) + ", " +
                         std::to_string(kMaxUnauthenticatedPerAddress) + " per address)",
                     now);
      socket.close(rec);
      continue;
    }
    if (d.evict) {
      guard_.Refused("handshake bound reached (" + std::to_string(kMaxUnauthenticated) +
                         " in all, " + std::to_string(kMaxUnauthenticatedPerAddress) +
                         " per address): the longest waiting unauthenticated connection of the "
                         "busiest address was closed",
                     now);
      Evict(*d.evict);
    }
    in_handshake_[id] = socket.native_handle();
    asio::co_spawn(io_, Handshake(std::move(socket), id, serve),
                   asio::detached);
  }
}

void ClusterGate::Evict(std::uint64_t id) {
  auto it = in_handshake_.find(id);
  if (it == in_handshake_.end()) return;
  // The handshake's pending read completes with an error and Channel::Accept
  // closes the socket; shutdown() (not close()) so the descriptor stays owned
  // by its socket object.
#ifdef _WIN32
  ::shutdown(it->second, SD_BOTH);
#else
  ::shutdown(it->second, SHUT_RDWR);
#endif
  in_handshake_.erase(it);
}

asio::awaitable<void> ClusterGate::Handshake(tcp::socket socket, std::uint64_t id,
                                             ServeFn serve) {
  // A refused handshake is logged by the channel (rate-limited per address).
  auto accepted =
      co_await wire::Channel::Accept(std::move(socket), credentials_, kHandshakeTimeout);
  // Forgotten before anything else runs: the descriptor may be reused now.
  in_handshake_.erase(id);
  admission_.Leave(id);
  if (!accepted.ok() || stopping_) co_return;
  co_await serve(std::move(accepted).value());
}

}  // namespace dsb::broker
