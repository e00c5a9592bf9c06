// An authenticated broker-to-broker connection over TCP (Boost.Asio C++20
// coroutines). Connect()/Accept() run the handshake of auth.h; Send()/Receive()
// then move lease and admin messages, every frame MAC'd and sequence-checked.
//
// Errors are values (dsb::Status / Result); no exception escapes for an
// expected failure. A refused peer (cannot prove the key, replays, garbage,
// other cluster file, stalls) is logged through spdlog's default logger with
// its address and the reason, and changes nothing: the channel is closed.
//
// Thread rule: all calls on one channel run on the executor of its socket (one
// thread or one strand). At most one Send() and one Receive() may be in flight
// at a time (a reader and a writer coroutine, as in Asio's chat server).
#ifndef DSB_BROKER_WIRE_CHANNEL_H_
#define DSB_BROKER_WIRE_CHANNEL_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "broker/wire/auth.h"
#include "broker/wire/codec.h"
#include "common/status.h"

namespace dsb::wire {

class Channel {
 public:
  using Clock = std::chrono::steady_clock;

  // A channel comes only from Connect or Accept (open). A moved-from one is
  // closed: every call on it fails, and peer()/remote_address() are empty.
  ~Channel();  // closes
  Channel(Channel&&) noexcept;
  Channel& operator=(Channel&&) noexcept;

  // Resolves `host`, connects to `port` and runs the client handshake, all
  // within `timeout`.
  // Success: an open channel; peer() names the server.
  // Failure: kInvalidArgument for bad credentials; kBrokerUnavailable if the
  // host cannot be resolved or reached; kTimeout if connecting and the
  // handshake take longer than `timeout`; kAuthFailed if the server does not
  // prove the key or closes during the handshake (it holds another key);
  // kConflict if the cluster file hashes differ (both named); kProtocol for
  // malformed frames; or the code of the server's ErrorReply.
  // `log_failure` false: the caller logs (a periodic probe that expects
  // refusals, e.g. the coordinator's hello to brokers that are not running).
  static boost::asio::awaitable<Result<Channel>> Connect(boost::asio::any_io_executor executor,
                                                         std::string host, std::uint16_t port,
                                                         Credentials credentials,
                                                         Clock::duration timeout,
                                                         bool log_failure = true);

  // Runs the server handshake on an accepted `socket` within `timeout`.
  // Success: an open channel; peer() names the client.
  // Failure (logged with the peer's address; the socket is closed): as
  // Connect, with kAuthFailed for a client that does not prove the key (it is
  // sent nothing) and kTimeout for one that stalls.
  // `log_failure` false: the caller logs the failure itself.
  static boost::asio::awaitable<Result<Channel>> Accept(boost::asio::ip::tcp::socket socket,
                                                        Credentials credentials,
                                                        Clock::duration timeout,
                                                        bool log_failure = true);

  // Sends one message.
  // Success: the frame was written to the socket.
  // Failure: kInvalidArgument if the message breaks an encoding rule or the
  // payload cap (the channel stays open); kBrokerUnavailable if the channel is
  // closed or the write fails (the channel is then closed).
  // REQUIRES: no other Send() in flight on this channel.
  boost::asio::awaitable<Status> Send(Message message);

  // Waits for the next message for at most `timeout`.
  // Success: the message.
  // Failure, after which the channel is closed: kTimeout if no whole frame
  // arrived in time; kBrokerUnavailable if the peer closed the connection or
  // the channel was closed; kAuthFailed for a forged, replayed, reordered or
  // truncated frame; kProtocol for a malformed one.
  // REQUIRES: no other Receive() in flight on this channel.
  boost::asio::awaitable<Result<Message>> Receive(Clock::duration timeout);

  // Closes the socket; an operation in flight completes with an error. Idempotent.
  void Close();

  bool is_open() const;
  // The authenticated peer (empty for a moved-from channel).
  const PeerIdentity& peer() const;
  // "address:port" of the remote end, for logs.
  const std::string& remote_address() const;

 private:
  struct Impl;
  explicit Channel(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace dsb::wire

#endif  // DSB_BROKER_WIRE_CHANNEL_H_
