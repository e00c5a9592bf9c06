// The local socket: LocalServer (accept, access, admission) and Session (one
// connection: requests, the idle timeout). Contracts in local_server.h.
#include "broker/local_server.h"

#include "broker/broker_impl.h"
#include "common/check.h"
#include "common/escape.h"
#include "common/local_protocol.h"
#include "common/limited_log.h"

namespace dsb::broker {

namespace {

// A reply's frame (EncodeFrame); a reply above kMaxLocalFrame is replaced
// by kInternal "reply too large", so a peer always gets a frame it can read.
std::string Frame(const json::object& reply) {
  Result<std::string> frame = EncodeFrame(json::serialize(reply));
  if (frame.ok()) return std::move(*frame);
  return *EncodeFrame(json::serialize(ErrorReply(Errc::kInternal, "reply too large")));
}

// ---- The dispatch table ---------------------------------------------------
// One row per op of common/local_protocol.h, in the order of
// local_protocol::kOps (checked below, so the "unknown op" error, built from
// kOps, lists exactly the ops this table serves): who may call it, whether it
// is refused while the broker shuts down, and its handler.

enum class Caller {
  kAnyPeer,  // any peer the socket admits (peer_access.h): root, the broker's uid, broker.group
  kAdmin,    // root, the broker's uid, broker.admin_group (Broker::Impl::RefuseUnlessAdmin)
};

using Handler = awaitable<json::object> (*)(Broker::Impl&, Session&, const LocalRequest&);

struct Route {
  LocalOp op;
  Caller caller;
  bool refused_while_stopping;  // answered kShuttingDown once the broker is stopping
  Handler handler;
};

// The handlers take references that live in Session::Answer's frame, which
// awaits them at once.
awaitable<json::object> OnRegister(Broker::Impl& b, Session& s, const LocalRequest& r) {
  co_return b.HandleRegister(s, r);
}
awaitable<json::object> OnReportSessionLimit(Broker::Impl& b, Session& s, const LocalRequest& r) {
  co_return b.HandleRefusal(s, r);
}
awaitable<json::object> OnStatus(Broker::Impl& b, Session&, const LocalRequest&) {
  co_return co_await b.StatusAsync();
}
awaitable<json::object> OnClients(Broker::Impl& b, Session&, const LocalRequest&) {
  co_return b.Clients();
}
awaitable<json::object> OnLeases(Broker::Impl& b, Session&, const LocalRequest&) {
  co_return co_await b.Leases();
}
awaitable<json::object> OnSetLimit(Broker::Impl& b, Session& s, const LocalRequest& r) {
  co_return co_await b.SetLimit(r, s.peer_uid(), s.peer_pid());
}
awaitable<json::object> OnGoodbye(Broker::Impl&, Session& s, const LocalRequest&) {
  // A clean close: the client gave its system slot back first and closes
  // the socket next. Its end is then logged as a departure, not a death,
  // and (cluster mode) its registration is not quarantined.
  if (!s.record()) co_return ErrorReply(Errc::kNotRegistered, "register first");
  s.record()->leaving = true;
  co_return local_protocol::OkReply();
}
awaitable<json::object> OnPing(Broker::Impl&, Session&, const LocalRequest& r) {
  json::object reply = local_protocol::OkReply();
  reply[local_protocol::rep::kVersion] = r.version;  // the version both speak
  co_return reply;
}
awaitable<json::object> OnConfirmStopped(Broker::Impl& b, Session& s, const LocalRequest& r) {
  co_return co_await b.ConfirmStopped(r, s.peer_uid(), s.peer_pid());
}
// revoke, drain, undrain.
awaitable<json::object> OnSteer(Broker::Impl& b, Session& s, const LocalRequest& r) {
  co_return co_await b.SteerBroker(r, s.peer_uid(), s.peer_pid());
}

constexpr Route kRoutes[] = {
    {LocalOp::kRegister, Caller::kAnyPeer, true, &OnRegister},
    {LocalOp::kReportSessionLimit, Caller::kAnyPeer, true, &OnReportSessionLimit},
    {LocalOp::kStatus, Caller::kAnyPeer, false, &OnStatus},
    {LocalOp::kClients, Caller::kAnyPeer, true, &OnClients},
    {LocalOp::kLeases, Caller::kAnyPeer, false, &OnLeases},
    {LocalOp::kSetLimit, Caller::kAdmin, false, &OnSetLimit},
    {LocalOp::kGoodbye, Caller::kAnyPeer, true, &OnGoodbye},
    {LocalOp::kPing, Caller::kAnyPeer, true, &OnPing},
    {LocalOp::kConfirmStopped, Caller::kAdmin, false, &OnConfirmStopped},
    {LocalOp::kRevoke, Caller::kAdmin, false, &OnSteer},
    {LocalOp::kDrain, Caller::kAdmin, false, &OnSteer},
    {LocalOp::kUndrain, Caller::kAdmin, false, &OnSteer},
};

constexpr bool RoutesFollowKnownOps() {
  if (std::size(kRoutes) != local_protocol::kOpCount) return false;
  for (std::size_t i = 0; i < std::size(kRoutes); ++i) {
    if (kRoutes[i].op != local_protocol::kOps[i].op) return false;
  }
  return true;
}
static_assert(RoutesFollowKnownOps(),
              "one route per op of local_protocol::kOps, in its order");

const Route& RouteOf(LocalOp op) {
  for (const Route& r : kRoutes) {
    if (r.op == op) return r;
  }
  DSB_CHECK(false, "ParseLocalRequest returned op %d, which the dispatch table lacks",
            static_cast<int>(op));
  return kRoutes[0];
}

}  // namespace

void SendFrameNow(LocalHandle fd, const std::string& frame) { WriteNow(fd, frame); }

// ---- LocalServer ----------------------------------------------------------

LocalServer::LocalServer(Broker::Impl& broker)
    : broker_(broker),
      guard_("local socket " + broker.config.socket.string()),
      admission_({static_cast<std::size_t>(broker.config.max_unregistered),
                  static_cast<std::size_t>(broker.config.max_unregistered_per_uid)}),
      backoff_(broker.io) {}

void LocalServer::Start() { Accept(); }

void LocalServer::Stop() { backoff_.cancel(); }

std::string LocalServer::FullFrame(const std::string& detail) const {
  return Frame(ErrorReply(
      Errc::kTooManyClients,
      "broker full: " + detail + " (broker.max_unregistered = " +
          std::to_string(broker_.config.max_unregistered) + ", broker.max_unregistered_per_uid = " +
          std::to_string(broker_.config.max_unregistered_per_uid) +
          "; registered clients do not count); retry, and close connections you do not use"));
}

void LocalServer::Accept() {
  broker_.acceptor.async_accept([this](boost::system::error_code ec, LocalStream socket) {
    if (broker_.stopping || ec == asio::error::operation_aborted || !broker_.acceptor.is_open()) {
      return;
    }
    const auto now = Clock::now();
    if (ec) {
      // Out of descriptors: one waiting peer is answered through the spare and
      // the loop goes on at once (each round takes one peer off the backlog);
      // anything else waits, 10 ms doubling to 1 s. Never a busy loop.
      // (Windows: no descriptor limit; a pipe instance that cannot be made
      // is backed off from like any error.)
#ifndef _WIN32
      if (AcceptGuard::OutOfDescriptors(ec) &&
          guard_.ShedOne(broker_.acceptor.native_handle(),
                         FullFrame("the broker is out of file descriptors"))) {
        guard_.Refused("out of file descriptors: a waiting connection was told 'broker full'",
                       now);
        Accept();
        return;
      }
#endif
      backoff_.expires_after(guard_.Failed(ec, now));
      backoff_.async_wait([this](boost::system::error_code e) {
        if (!e && !broker_.stopping) Accept();
      });
      return;
    }
    guard_.Succeeded();
    OnAccepted(std::move(socket), now);
    Accept();
  });
}

void LocalServer::OnAccepted(LocalStream socket, Clock::time_point now) {
  const LocalHandle fd = socket.native_handle();
  std::string why;
  std::optional<PeerCredentials> peer = ReadPeerCredentials(fd, &why);
  if (peer) {
    if (auto refusal = RefuseLocalPeer(*peer, CurrentAccount(), broker_.config)) why = *refusal;
  }
  if (!why.empty()) {
    SendFrameNow(fd, Frame(ErrorReply(Errc::kPermissionDenied, why)));
    // A refused peer may reconnect in a loop: rate-limited per uid.
    LogLimited(spdlog::level::warn, "refused local peer",
               peer ? "uid " + AccountText(peer->uid) : std::string("no credentials"),
               "refused local peer: {}", why);
    return;  // the socket closes here
  }
  const std::uint64_t id = next_id_++;
  const auto d = admission_.Admit(peer->uid, id, now);
  if (!d.admit) {
    SendFrameNow(fd, FullFrame(std::to_string(admission_.size()) +
                               " local connections have not registered, uid " +
                               AccountText(peer->uid) + " holds " +
                               std::to_string(admission_.CountOf(peer->uid)) + " of them"));
    guard_.Refused("a connection of uid " + AccountText(peer->uid) + " (pid " +
                       std::to_string(peer->pid) + ") was refused: " +
                       std::to_string(admission_.size()) +
                       " unregistered connections and this uid holds as many as the busiest",
                   now);
    return;
  }
  if (d.evict) {
    for (auto& [ptr, weak] : broker_.sessions) {
      auto victim = weak.lock();
      if (!victim || victim->id() != *d.evict) continue;
      guard_.Refused("unregistered-connection bound reached: the longest idle connection of uid " +
                         AccountText(victim->peer_uid()) + " (pid " +
                         std::to_string(victim->peer_pid()) + ") was told 'broker full' and closed",
                     now);
      victim->CloseWith(FullFrame(
          "this connection sent nothing for the longest while " +
          std::to_string(admission_.size()) + " unregistered connections are open, and gave way"));
      break;
    }
  }
  auto s = std::make_shared<Session>(broker_, std::move(socket), std::move(*peer), id);
  broker_.sessions.emplace(s.get(), s);
  s->Start();
}

void LocalServer::OnRequest(const Session& s) {
  admission_.Touch(s.id(), Clock::now());
}

void LocalServer::OnRegistered(const Session& s) { admission_.Leave(s.id()); }

void LocalServer::OnClosed(const Session& s) { admission_.Leave(s.id()); }

// ---- Session --------------------------------------------------------------

void Session::CloseWith(const std::string& frame) {
  if (!writing_ && socket_.is_open()) SendFrameNow(socket_.native_handle(), frame);
  Close();
}

void Session::ArmIdleTimer() {
  idle_timer_.expires_after(
      std::chrono::duration_cast<Clock::duration>(broker_.config.idle_timeout));
  idle_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->record_) return;
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(self->broker_.config.idle_timeout);
    self->CloseWith(Frame(ErrorReply(
        Errc::kTimeout, "no request within broker.idle_timeout (" + std::to_string(ms.count()) +
                            " ms) on a connection that has not registered; closed")));
  });
}

awaitable<void> Session::Run() {
  for (;;) {
    if (!record_) ArmIdleTimer();
    unsigned char header[kFrameHeaderBytes];
    auto [ec, n] = co_await asio::async_read(socket_, asio::buffer(header), use_nothrow);
    if (ec) break;
    const std::size_t len = DecodeFrameLength(header);
    if (len > kMaxLocalFrame) {
      LogLimited(spdlog::level::warn, "oversize local request", "uid " + AccountText(peer_.uid),
                 "local peer pid {} uid {}: announced a {}-byte request (limit {}); closing",
                 peer_.pid, peer_.uid, len, kMaxLocalFrame);
      co_await Send(ErrorReply(Errc::kProtocol, "request of " + std::to_string(len) +
                                                    " bytes exceeds the " +
                                                    std::to_string(kMaxLocalFrame) +
                                                    "-byte limit"));
      break;
    }
    std::string body(len, '\0');
    auto [ec2, n2] = co_await asio::async_read(socket_, asio::buffer(body), use_nothrow);
    if (ec2) break;
    idle_timer_.cancel();
    const bool was_registered = record_.has_value();
    if (broker_.local) broker_.local->OnRequest(*this);
    Result<LocalRequest> req = ParseLocalRequest(body);
    json::object reply;
    if (!req.ok()) {
      // A peer may send these in a loop: rate-limited per uid (the message
      // escapes what it echoes: local_request.h).
      LogLimited(spdlog::level::warn, "malformed local request", "uid " + AccountText(peer_.uid),
                 "local peer pid {} uid {}: malformed request ({} bytes): {}", peer_.pid,
                 peer_.uid, len, req.status().message());
      reply = local_protocol::RefusalReply(req.status());  // with the broker's versions
    } else {
      reply = co_await Answer(*req);
    }
    if (!was_registered && record_ && broker_.local) broker_.local->OnRegistered(*this);
    if (!co_await Send(reply)) break;
  }
  Finish();
}

awaitable<json::object> Session::Answer(const LocalRequest& req) {
  try {
    const Route& route = RouteOf(req.op);
    if (route.refused_while_stopping && broker_.stopping) {
      co_return ErrorReply(Errc::kShuttingDown, "broker is shutting down");
    }
    if (route.caller == Caller::kAdmin) {
      if (auto refused = broker_.RefuseUnlessAdmin(req, peer_)) {
        co_return *refused;
      }
    }
    co_return co_await route.handler(broker_, *this, req);
  } catch (const std::exception& e) {
    // A bug, not the peer's input (ParseLocalRequest checked it): the
    // exception's text (a library's, with its source paths) goes to the log,
    // the peer gets a message of ours.
    LogLimited(spdlog::level::err, "local request failed", "uid " + AccountText(peer_.uid),
               "local peer pid {} uid {}: handling '{}' failed: {}", peer_.pid, peer_.uid,
               LocalOpName(req.op), EscapeText(e.what(), 400));
    co_return ErrorReply(Errc::kInternal, std::string("the broker could not handle '") +
                                              LocalOpName(req.op) +
                                              "' (an internal error, logged by the broker)");
  }
}

awaitable<bool> Session::Send(const json::object& reply) {
  const std::string frame = Frame(reply);
  writing_ = true;
  auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(frame), use_nothrow);
  writing_ = false;
  co_return !ec;
}

void Session::Finish() {
  Close();
  if (broker_.local) broker_.local->OnClosed(*this);
  broker_.OnSessionClosed(*this);
}

}  // namespace dsb::broker
