#include "broker/wire/channel.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <optional>
#include <utility>

#include "common/check.h"
#include "common/escape.h"
#include "common/limited_log.h"

namespace dsb::wire {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

struct Channel::Impl {
  explicit Impl(tcp::socket s, std::string local)
      : socket(std::move(s)),
        timer(socket.get_executor()),
        resolver(socket.get_executor()),
        local_id(std::move(local)) {}

  void CloseSocket() {
    open = false;
    error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    resolver.cancel();
    timer.cancel();
  }

  std::string PeerName() const {
    if (peer.broker_id.empty()) return remote;
    return "'" + peer.broker_id + "' (" + remote + ")";
  }

  tcp::socket socket;
  asio::steady_timer timer;  // the deadline of the handshake or of one Receive
  tcp::resolver resolver;
  std::uint64_t deadline_generation = 0;
  bool timed_out = false;
  // The last read ended because the peer closed between frames (a normal end
  // of a conversation, e.g. the coordinator's hello every second).
  bool closed_between_frames = false;
  bool open = true;
  bool sending = false;
  bool receiving = false;
  Session session;
  PeerIdentity peer;
  std::string remote;    // "address:port"
  std::string local_id;  // our broker id, for logs
};

namespace {

constexpr auto kUse = asio::as_tuple(asio::use_awaitable);

// "address:port" without ":port" (a rate-limit key: a peer's port changes with
// every connection, its address does not).
std::string HostOf(const std::string& remote) {
  const auto colon = remote.rfind(':');
  return colon == std::string::npos ? remote : remote.substr(0, colon);
}

std::string EndpointText(const tcp::endpoint& ep) {
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::string Millis(std::chrono::steady_clock::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

// While alive, closes the channel's socket if `timeout` passes first (and
// marks it timed out). Destroying it disarms it; a generation number keeps a
// timer that already fired from closing a later operation's socket.
template <typename ImplT>
class Deadline {
 public:
  Deadline(const std::shared_ptr<ImplT>& impl, std::chrono::steady_clock::duration timeout)
      : impl_(impl) {
    const std::uint64_t generation = ++impl->deadline_generation;
    impl->timed_out = false;
    impl->timer.expires_after(timeout);
    impl->timer.async_wait([weak = std::weak_ptr<ImplT>(impl), generation](error_code ec) {
      if (ec) return;
      std::shared_ptr<ImplT> self = weak.lock();
      if (self == nullptr || self->deadline_generation != generation) return;
      self->timed_out = true;
      self->CloseSocket();
    });
  }
  ~Deadline() {
    ++impl_->deadline_generation;
    impl_->timer.cancel();
  }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

 private:
  std::shared_ptr<ImplT> impl_;
};

// Turns a failed read or write into a Status.
template <typename ImplT>
Status IoError(const ImplT& impl, error_code ec, std::size_t got, std::size_t want,
               std::string_view what, std::chrono::steady_clock::duration timeout) {
  if (impl.timed_out) {
    return Status(Errc::kTimeout,
                  std::string(what) + ": nothing complete from " + impl.PeerName() + " within " +
                      Millis(timeout));
  }
  if (ec == asio::error::eof) {
    if (got > 0) {
      return Status(Errc::kBrokerUnavailable,
                    std::string(what) + ": " + impl.PeerName() +
                        " closed the connection in the middle of a frame (" +
                        std::to_string(got) + " of " + std::to_string(want) + " bytes)");
    }
    return Status(Errc::kBrokerUnavailable,
                  std::string(what) + ": " + impl.PeerName() + " closed the connection");
  }
  if (!impl.open) {
    return Status(Errc::kBrokerUnavailable, std::string(what) + ": the channel was closed");
  }
  return Status(Errc::kBrokerUnavailable,
                std::string(what) + ": connection to " + impl.PeerName() + " failed: " +
                    ec.message());
}

// Reads exactly one frame: the header, checked before anything else is read,
// then payload and MAC.
template <typename ImplT>
asio::awaitable<Result<Bytes>> ReadFrame(ImplT& impl, std::size_t max_payload,
                                         std::string_view what,
                                         std::chrono::steady_clock::duration timeout) {
  Bytes frame(kHeaderSize);
  auto [ec, n] = co_await asio::async_read(impl.socket, asio::buffer(frame), kUse);
  impl.closed_between_frames = ec == asio::error::eof && n == 0;
  if (ec) co_return IoError(impl, ec, n, kHeaderSize, what, timeout);
  Result<FrameHeader> header = DecodeHeader(frame, max_payload);
  if (!header.ok()) co_return header.status();
  frame.resize(kHeaderSize + header->length + kMacSize);
  auto [ec2, n2] = co_await asio::async_read(
      impl.socket, asio::buffer(frame.data() + kHeaderSize, frame.size() - kHeaderSize), kUse);
  if (ec2) co_return IoError(impl, ec2, kHeaderSize + n2, frame.size(), what, timeout);
  co_return frame;
}

template <typename ImplT>
asio::awaitable<Status> WriteFrames(ImplT& impl, const std::vector<Bytes>& frames,
                                    std::string_view what,
                                    std::chrono::steady_clock::duration timeout) {
  for (const Bytes& frame : frames) {
    auto [ec, n] = co_await asio::async_write(impl.socket, asio::buffer(frame), kUse);
    if (ec) co_return IoError(impl, ec, 0, frame.size(), what, timeout);
  }
  co_return Status::Ok();
}

// Drives `hs` over the socket until it is done or fails.
template <typename ImplT>
asio::awaitable<Status> RunHandshake(ImplT& impl, Handshake& hs,
                                     std::chrono::steady_clock::duration timeout) {
  for (;;) {
    const std::vector<Bytes> out = hs.TakeOutgoing();
    Status sent = co_await WriteFrames(impl, out, "handshake", timeout);
    if (!sent.ok()) co_return sent;
    if (hs.done()) co_return Status::Ok();
    Result<Bytes> frame = co_await ReadFrame(impl, hs.max_payload(), "handshake", timeout);
    if (!frame.ok()) {
      if (frame.status().code() == Errc::kBrokerUnavailable && impl.open) {
        // A peer that refuses our hello sends nothing (README.md): another key
        // and another wire version look alike from here; name both, and where
        // the peer's log tells which.
        co_return Status(Errc::kAuthFailed,
                         frame.status().message() +
                             " during the handshake: it holds another cluster key, or speaks "
                             "another wire version than this build's " +
                             std::to_string(kVersion) +
                             " (another dsb release; `dsb-broker --version` on both); "
                             "the peer's log names which");
      }
      co_return frame.status();
    }
    Status step = hs.OnFrame(*frame);
    if (!step.ok()) {
      // Best effort: an ErrorReply saying why (only to a peer that proved the key).
      const std::vector<Bytes> reasons = hs.TakeOutgoing();
      co_await WriteFrames(impl, reasons, "handshake", timeout);
      co_return step;
    }
  }
}

}  // namespace

Channel::Channel(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Channel::~Channel() { Close(); }
Channel::Channel(Channel&&) noexcept = default;
Channel& Channel::operator=(Channel&& other) noexcept {
  if (this != &other) {
    Close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

asio::awaitable<Result<Channel>> Channel::Connect(asio::any_io_executor executor, std::string host,
                                                  std::uint16_t port, Credentials credentials,
                                                  Clock::duration timeout, bool log_failure) {
  if (Status s = ValidateCredentials(credentials); !s.ok()) co_return s;
  auto impl = std::make_shared<Impl>(tcp::socket(executor), credentials.broker_id);
  impl->remote = host + ":" + std::to_string(port);
  const auto refuse = [&](Status s) {
    if (log_failure) {
      // Retried every few hundred ms (a wrong key, a peer that is down):
      // rate-limited per address and kind of failure.
      LogLimited(spdlog::level::warn, "wire connect refused",
                 impl->remote + " " + ErrcName(s.code()),
                 "wire[{}]: connection to {} refused: {} ({})", impl->local_id, impl->PeerName(),
                 s.message(), ErrcName(s.code()));
    }
    impl->CloseSocket();
    return s;
  };
  Deadline deadline(impl, timeout);
  const std::string service = std::to_string(port);
  auto [rec, endpoints] = co_await impl->resolver.async_resolve(host, service, kUse);
  if (rec) {
    if (impl->timed_out) co_return refuse(IoError(*impl, rec, 0, 0, "resolve", timeout));
    co_return refuse(
        Status(Errc::kBrokerUnavailable, "cannot resolve " + host + ": " + rec.message()));
  }
  auto [cec, endpoint] = co_await asio::async_connect(impl->socket, endpoints, kUse);
  if (cec) {
    if (impl->timed_out) co_return refuse(IoError(*impl, cec, 0, 0, "connect", timeout));
    co_return refuse(Status(Errc::kBrokerUnavailable,
                            "cannot connect to " + impl->remote + ": " + cec.message()));
  }
  impl->remote = EndpointText(endpoint);
  error_code ignored;
  impl->socket.set_option(tcp::no_delay(true), ignored);

  Handshake hs = Handshake::Client(std::move(credentials));
  hs.Start();
  Status s = co_await RunHandshake(*impl, hs, timeout);
  if (!s.ok()) {
    impl->peer = hs.peer();
    co_return refuse(std::move(s));
  }
  impl->peer = hs.peer();
  impl->session = hs.TakeSession();
  co_return Channel(std::move(impl));
}

asio::awaitable<Result<Channel>> Channel::Accept(tcp::socket socket, Credentials credentials,
                                                 Clock::duration timeout, bool log_failure) {
  if (Status s = ValidateCredentials(credentials); !s.ok()) co_return s;
  auto impl = std::make_shared<Impl>(std::move(socket), credentials.broker_id);
  error_code ec;
  const tcp::endpoint remote = impl->socket.remote_endpoint(ec);
  impl->remote = ec ? std::string("(unknown peer)") : EndpointText(remote);
  impl->socket.set_option(tcp::no_delay(true), ec);

  Deadline deadline(impl, timeout);
  Handshake hs = Handshake::Server(std::move(credentials));
  Status s = co_await RunHandshake(*impl, hs, timeout);
  if (!s.ok()) {
    const std::string claims = hs.peer().broker_id.empty()
                                   ? ""
                                   : " (claims broker '" + EscapeText(hs.peer().broker_id) + "')";
    if (log_failure) {
      // An unauthenticated peer may retry in a loop: rate-limited per address
      // (without the port, which changes with every connection).
      LogLimited(spdlog::level::warn, "wire handshake refused", HostOf(impl->remote),
                 "wire[{}]: refused connection from {}{}: {} ({})", impl->local_id,
                 impl->remote, claims, s.message(), ErrcName(s.code()));
    }
    impl->CloseSocket();
    co_return s;
  }
  impl->peer = hs.peer();
  impl->session = hs.TakeSession();
  spdlog::debug("wire[{}]: accepted broker {}", impl->local_id, impl->PeerName());
  co_return Channel(std::move(impl));
}

asio::awaitable<Status> Channel::Send(Message message) {
  std::shared_ptr<Impl> self = impl_;  // keeps the socket alive across the write
  if (self == nullptr || !self->open) {
    co_return Status(Errc::kBrokerUnavailable, "send: the channel is closed");
  }
  DSB_CHECK(!self->sending, "two Send() in flight on one channel");
  Result<Bytes> frame = self->session.Seal(message);
  if (!frame.ok()) co_return frame.status();
  self->sending = true;
  auto [ec, n] = co_await asio::async_write(self->socket, asio::buffer(*frame), kUse);
  self->sending = false;
  if (ec) {
    Status s = IoError(*self, ec, n, frame->size(), "send", Clock::duration::zero());
    spdlog::info("wire[{}]: closing connection with {}: {}", self->local_id, self->PeerName(),
                 s.message());
    self->CloseSocket();
    co_return s;
  }
  co_return Status::Ok();
}

asio::awaitable<Result<Message>> Channel::Receive(Clock::duration timeout) {
  std::shared_ptr<Impl> self = impl_;
  if (self == nullptr || !self->open) {
    co_return Status(Errc::kBrokerUnavailable, "receive: the channel is closed");
  }
  DSB_CHECK(!self->receiving, "two Receive() in flight on one channel");
  self->receiving = true;
  // The deadline ends (disarmed) as soon as the frame is read.
  std::optional<Deadline<Impl>> deadline;
  deadline.emplace(self, timeout);
  Result<Bytes> frame =
      co_await ReadFrame(*self, self->session.max_payload(), "receive", timeout);
  deadline.reset();
  self->receiving = false;
  Result<Message> message = frame.ok() ? self->session.Open(*frame) : Result<Message>(frame.status());
  if (!message.ok()) {
    const Status& s = message.status();
    const bool refusal = s.code() == Errc::kAuthFailed || s.code() == Errc::kProtocol;
    if (refusal) {
      LogLimited(spdlog::level::warn, "wire frame refused",
                 self->peer.broker_id + "@" + HostOf(self->remote),
                 "wire[{}]: refused frame from {}, closing: {} ({})", self->local_id,
                 self->PeerName(), s.message(), ErrcName(s.code()));
    } else {
      spdlog::log(self->closed_between_frames ? spdlog::level::debug : spdlog::level::info,
                  "wire[{}]: closing connection with {}: {}", self->local_id, self->PeerName(),
                  s.message());
    }
    self->CloseSocket();
  }
  co_return message;
}

void Channel::Close() {
  if (impl_ != nullptr && impl_->open) impl_->CloseSocket();
}

bool Channel::is_open() const { return impl_ != nullptr && impl_->open; }

const PeerIdentity& Channel::peer() const {
  static const PeerIdentity kNone;
  return impl_ != nullptr ? impl_->peer : kNone;
}

const std::string& Channel::remote_address() const {
  static const std::string kNone;
  return impl_ != nullptr ? impl_->remote : kNone;
}

}  // namespace dsb::wire
