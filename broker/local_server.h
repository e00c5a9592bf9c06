// The local socket's accept loop and its admission policy (issue 9): who gets
// a Session, and how many connections that have not registered may be open.
//
//  - Access (peer_access.h): root, the broker's uid, members of broker.group
//    (primary or supplementary). Others are told why and closed at once.
//  - Connections that have not registered (dsbctl, a client about to register,
//    any allowed peer) are bounded: broker.max_unregistered in all and
//    broker.max_unregistered_per_uid per uid (admission.h). At a bound the
//    uid holding the most such connections gives way: its longest-idle one is
//    sent a "broker full" error (too_many_clients) and closed. So idle
//    connections of one user cannot keep out another user's clients or
//    dsbctl, and a user's own newest connection gets in past its older idle
//    ones. When every uid is at its fair share, the new one gets "broker full".
//  - An unregistered connection that completes no request within
//    broker.idle_timeout (from connecting, or from its last reply) is told so
//    and closed.
//  - Registered clients are not counted, never evicted and never time out:
//    their connection is how the broker sees them die. Their number is bounded
//    by broker.max_clients (HandleRegister).
//  - Accept errors are backed off and over-limit peers shed through the spare
//    descriptor (accept_guard.h); file_limit.h fits max_clients under the
//    process's file limit, so that descriptors do not run out in the first place.
//
// Thread rule: as Broker (everything on the single-threaded io_context).
#ifndef DSB_BROKER_LOCAL_SERVER_H_
#define DSB_BROKER_LOCAL_SERVER_H_

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <string>

#include "broker/accept_guard.h"
#include "broker/admission.h"
#include "broker/broker.h"
#include "broker/local_transport.h"
#include "common/account.h"
#include "common/local_frame.h"

namespace dsb::broker {

class Session;

class LocalServer {
 public:
  using Clock = std::chrono::steady_clock;

  // Accepts on `broker.acceptor` (bound and listening) once Start() is called.
  explicit LocalServer(Broker::Impl& broker);
  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;

  void Start();
  // Stops accepting (the backoff timer is cancelled; the acceptor is the broker's to close).
  void Stop();

  // From a Session: `s` completed a request (it is the last of its uid to be evicted).
  void OnRequest(const Session& s);
  // From a Session: `s` registered; it leaves the unregistered bound.
  void OnRegistered(const Session& s);
  // From a Session: `s` closed.
  void OnClosed(const Session& s);

  // The "broker full" reply (a serialized frame, for non-blocking writes).
  std::string FullFrame(const std::string& detail) const;
  std::size_t unregistered() const { return admission_.size(); }

 private:
  void Accept();
  void OnAccepted(LocalStream socket, Clock::time_point now);

  Broker::Impl& broker_;
  AcceptGuard guard_;
  Admission<AccountId> admission_;
  boost::asio::steady_timer backoff_;
  std::uint64_t next_id_ = 1;
};

// Writes `frame` to `fd` without blocking (best effort: a fresh or idle
// connection's send buffer takes a short reply whole).
void SendFrameNow(LocalHandle fd, const std::string& frame);

}  // namespace dsb::broker

#endif  // DSB_BROKER_LOCAL_SERVER_H_
