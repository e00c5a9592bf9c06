// dsb::http::Server: the broker's small HTTP/1.1 endpoint (Boost.Beast) for
// Prometheus metrics (/metrics) and the status page. Read-only: GET and HEAD.
//
// It runs on the broker's single-threaded io_context, so handlers may read the
// broker's state directly; they must not block (a handler's time is the whole
// broker's time). Because the endpoint shares that thread with the clients'
// socket, every peer is bounded so that none can hold the broker up or eat its
// file descriptors:
//  - at most Limits::max_connections open connections; one more is answered
//    "503" (best effort, non-blocking) and closed at once;
//  - a request's header must arrive whole within Limits::read_timeout (a
//    silent or trickling peer, "slowloris", is closed then), and a kept-alive
//    connection waits at most that long for its next request;
//  - a header above Limits::max_header_bytes is answered 431, a body above
//    Limits::max_body_bytes 413, anything unparseable 400, then closed;
//  - a reply must be taken by the peer within Limits::write_timeout;
//  - a connection serves at most Limits::max_requests_per_connection requests
//    (the last reply says "Connection: close").
// Other methods are answered 405 (Allow: GET, HEAD); an unknown path 404; a
// Host header that does not name this endpoint 421 (CheckRequestHost).
//
// Thread rule: every call on the io_context's thread (the broker's).
#ifndef DSB_BROKER_HTTP_SERVER_H_
#define DSB_BROKER_HTTP_SERVER_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace dsb::http {

// Extra response headers: (name, value) pairs, sent in this order.
using Headers = std::vector<std::pair<std::string, std::string>>;

// What a handler answers. `status` is an HTTP status code (200, 404, ...).
// `headers` are sent besides the server's own (Server, Content-Type,
// Content-Length, Connection, X-Content-Type-Options, Cache-Control: no-store);
// one named like a server default (case-insensitive) replaces it, e.g. a
// handler's own Cache-Control. Each must pass CheckHeader: a response with one
// that does not is a handler bug, answered 500 and logged (never sent, so no
// handler can split a response or inject a header).
// Build it with designated initializers (Response{.status = 404, .body = ..}).
struct Response {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  Headers headers = {};
};

// Whether a handler may send the header `name`: `value`.
// Success: `name` is an RFC 9110 token (letters, digits, !#$%&'*+-.^_`|~),
// `value` has no control character but HTAB (no CR, LF or NUL: it cannot end
// the header line), and `name` is not one the server alone decides
// (Content-Length, Transfer-Encoding, Connection, Content-Type: the last is
// Response::content_type, itself checked as a value).
// Failure (kInvalidArgument): says which rule and names the header.
Status CheckHeader(std::string_view name, std::string_view value);

// Called for a GET or HEAD of the path it was routed at. `target` is the
// request's target as sent: path plus "?query" if any (not decoded). For a
// HEAD the server sends the headers of the handler's response without the
// body. An exception from a handler is answered 500 and logged.
using Handler = std::function<Response(std::string_view target)>;
// A handler that needs to wait (another broker's answer over the wire):
// runs as a coroutine on the io_context; the connection waits for it (the
// peer's write timeout does not run meanwhile). It must end on its own: the
// server does not cancel it.
using AsyncHandler =
    std::function<boost::asio::awaitable<Response>(std::string target)>;

struct Limits {
  std::size_t max_connections = 32;
  std::chrono::milliseconds read_timeout{5000};
  std::chrono::milliseconds write_timeout{10'000};
  std::uint32_t max_header_bytes = 8 * 1024;
  std::uint64_t max_body_bytes = 1024;
  unsigned max_requests_per_connection = 100;
};

class Server {
 public:
  // Binds and listens on `host`:`port` (an IPv4 or IPv6 literal, or
  // "localhost" for 127.0.0.1; no name lookup). Port 0 picks a free port
  // (local_endpoint() says which). `key` names where the address comes from
  // in error messages ("broker.metrics").
  // Success: listening, not yet accepting (Start()).
  // Failure (Errc::kConfig): a host that is not an address; the address in
  // use or not bindable (the message names `key`, the address and the
  // system's reason).
  static Result<std::unique_ptr<Server>> Listen(boost::asio::io_context& io, std::string_view host,
                                                std::uint16_t port, std::string_view key,
                                                Limits limits = {});
  ~Server();  // Stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves GET/HEAD of exactly `path` (no query; "/metrics") by `handler`,
  // replacing an earlier handler of that path. May be called before or after
  // Start(). REQUIRES: path starts with '/'.
  void Route(std::string path, Handler handler);
  // As Route, for a handler that waits (see AsyncHandler).
  void RouteAsync(std::string path, AsyncHandler handler);

  // Starts the accept loop. REQUIRES: not stopped.
  void Start();
  // Closes the listener and every connection; afterwards no handler runs
  // again. Idempotent. The io_context's run() can return once the closed
  // operations have completed.
  void Stop();

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  // Open connections now (for tests and the broker's own metrics).
  std::size_t connections() const;

  struct Core;  // shared with the connections (they may outlive a Stop)

 private:
  explicit Server(std::shared_ptr<Core> core);
  std::shared_ptr<Core> core_;
};

// True if `host` (as Listen takes it) is a loopback address: 127.0.0.0/8,
// ::1, "localhost". Unparseable hosts are not loopback.
bool IsLoopbackHost(std::string_view host);

// Whether a request's Host header names this endpoint. Against DNS
// rebinding: a web page of another site whose name the attacker points at
// this address sends that name as Host, and must not read the answers (the
// status page names pids, segments and operators' user names). Every
// request is checked before its route.
// `host`: the Host header's value (nullopt: none sent). `http11`: the request
// is HTTP/1.1 (else 1.0). `local`: the address the connection reached (the
// bound address; for a wildcard bind the interface's).
// Success: an IP literal equal to `local` (IPv6 in brackets, an IPv4-mapped
// address as the IPv4 one), or, when `local` is loopback, "localhost" or any
// loopback literal (an ssh tunnel's other end); each with or without ":port"
// (any port: a tunnel's local port differs). No Host at all on HTTP/1.0:
// browsers always send one, so only a tool can omit it.
// Failure: kPermissionDenied (answered 421) naming the Host and what is
// accepted; kInvalidArgument (answered 400) for HTTP/1.1 without Host
// (RFC 9112 3.2) or a Host that is not host[:port].
Status CheckRequestHost(std::optional<std::string_view> host, bool http11,
                        const boost::asio::ip::address& local);

}  // namespace dsb::http

#endif  // DSB_BROKER_HTTP_SERVER_H_
