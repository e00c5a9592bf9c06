// The HTTP endpoint (server.h): an accept loop and one coroutine per
// connection, in the style of the local socket (local_server.cc): errors come
// back as values (as_tuple), a connection is closed on any of them.
#include "broker/http/server.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <spdlog/spdlog.h>

#include "common/escape.h"

namespace dsb::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::awaitable;
using tcp = asio::ip::tcp;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// Over the connection cap: said without waiting for the peer (one
// non-blocking write, then close), so a flood costs one accept each.
constexpr std::string_view kBusyReply =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 33\r\n"
    "Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections; try again\r\n";

// "localhost" or an address literal; nullopt otherwise (no name lookup: a
// start must not wait on DNS, and the address must not change under us).
std::optional<asio::ip::address> ParseHost(std::string_view host) {
  if (host == "localhost") return asio::ip::make_address_v4("127.0.0.1");
  boost::system::error_code ec;
  asio::ip::address a = asio::ip::make_address(std::string(host), ec);
  if (ec) return std::nullopt;
  return a;
}

// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer)
// as the IPv4 address it maps.
asio::ip::address Unmapped(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  }
  return a;
}

// No control character but HTAB in a header's value (RFC 9110 field-value).
Status CheckHeaderValue(std::string_view name, std::string_view value) {
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) {
      return Status(Errc::kInvalidArgument,
                    "response header \"" + EscapeText(name) +
                        "\" has a control character in its value (\"" + EscapeText(value) +
                        "\"): CR, LF or NUL would end or split the header");
    }
  }
  return Status::Ok();
}

}  // namespace

class Connection;

struct Server::Core : std::enable_shared_from_this<Server::Core> {
  Core(asio::io_context& io, Limits limits, std::string key)
      : io(io), acceptor(io), backoff(io), limits(limits), key(std::move(key)) {}

  asio::io_context& io;
  tcp::acceptor acceptor;
  asio::steady_timer backoff;
  Limits limits;
  std::string key;
  std::map<std::string, AsyncHandler, std::less<>> routes;
  std::map<std::uint64_t, std::weak_ptr<Connection>> open;
  std::uint64_t next_id = 0;
  bool started = false;
  bool stopped = false;
  // Rate-limited log of refused connections and accept failures.
  std::uint64_t refused = 0;
  std::chrono::steady_clock::time_point refused_logged{};
  std::uint64_t failed = 0;
  std::chrono::steady_clock::time_point failed_logged{};
  std::uint64_t misdirected = 0;  // requests refused for their Host (421)
  std::chrono::steady_clock::time_point misdirected_logged{};

  awaitable<void> AcceptLoop();
  void RefuseBusy(tcp::socket socket);
  awaitable<Response> Answer(const bhttp::request<bhttp::string_body>& req) const;
};

namespace {

bool DueForLog(std::chrono::steady_clock::time_point* last) {
  const auto now = std::chrono::steady_clock::now();
  if (*last != std::chrono::steady_clock::time_point{} && now - *last < std::chrono::seconds(10)) {
    return false;
  }
  *last = now;
  return true;
}

}  // namespace

// One HTTP connection: reads requests one at a time (no pipelining beyond
// what the buffer already holds), answers each, and ends on an error, a
// timeout, "Connection: close", the request cap or Server::Stop().
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Server::Core> core, tcp::socket socket, std::uint64_t id)
      : core_(std::move(core)), stream_(std::move(socket)), id_(id) {}

  awaitable<void> Run();
  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

 private:
  awaitable<bool> Write(bhttp::response<bhttp::string_body>& res) {
    stream_.expires_after(core_->limits.write_timeout);
    auto [ec, n] = co_await bhttp::async_write(stream_, res, use_nothrow);
    (void)n;
    co_return !ec;
  }
  awaitable<void> Fail(unsigned status, std::string_view why) {
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
    res.set(bhttp::field::server, "dsb-broker");
    res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::string(why) + "\n";
    res.keep_alive(false);
    res.prepare_payload();
    co_await Write(res);
  }

  std::shared_ptr<Server::Core> core_;
  beast::tcp_stream stream_;
  std::uint64_t id_;
};

awaitable<void> Connection::Run() {
  const Limits& lim = core_->limits;
  // Room for a whole header and body and one more read; the parser's own
  // limits stop an oversized request first.
  beast::flat_buffer buffer(static_cast<std::size_t>(lim.max_header_bytes + lim.max_body_bytes) +
                            4096);
  for (unsigned served = 0; !core_->stopped;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(lim.max_header_bytes);
    parser.body_limit(lim.max_body_bytes);
    // The whole request (not each read) within read_timeout: a peer that
    // trickles a byte at a time is closed as surely as a silent one.
    stream_.expires_after(lim.read_timeout);
    auto [ec, n] = co_await bhttp::async_read(stream_, buffer, parser, use_nothrow);
    (void)n;
    if (core_->stopped) break;
    if (ec) {
      if (ec == bhttp::error::header_limit) {
        co_await Fail(431, "request header too large");
      } else if (ec == bhttp::error::body_limit) {
        co_await Fail(413, "request body too large");
      } else if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
                 ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
                 ec == asio::error::eof) {
        // The peer left, stayed silent too long, or the server stops.
      } else {
        const std::string why = "bad request: " + ec.message();
        co_await Fail(400, why);
      }
      break;
    }
    const auto& req = parser.get();
    ++served;
    const bool keep = req.keep_alive() && served < lim.max_requests_per_connection;
    bhttp::response<bhttp::string_body> res;
    res.version(11);
    res.set(bhttp::field::server, "dsb-broker");
    // A browser must not guess another type than the one sent (the page).
    res.set("X-Content-Type-Options", "nosniff");
    const bool head = req.method() == bhttp::verb::head;
    // Before anything else: a request under a name that is not this
    // endpoint's is refused (DNS rebinding; CheckRequestHost).
    Status host_ok = Status::Ok();
    if (req.count(bhttp::field::host) > 1) {
      host_ok = Status(Errc::kInvalidArgument, "more than one Host header");
    } else {
      beast::error_code lec;
      const tcp::endpoint local = stream_.socket().local_endpoint(lec);
      const auto h = req.find(bhttp::field::host);
      host_ok = CheckRequestHost(
          h == req.end() ? std::nullopt
                         : std::optional<std::string_view>(
                               std::string_view(h->value().data(), h->value().size())),
          req.version() >= 11, lec ? asio::ip::address() : local.address());
    }
    if (!host_ok.ok()) {
      const bool misdirected = host_ok.code() == Errc::kPermissionDenied;
      res.result(misdirected ? bhttp::status::misdirected_request : bhttp::status::bad_request);
      res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
      res.body() = (misdirected ? "misdirected request: " : "bad request: ") + host_ok.message() +
                   "\n";
      if (misdirected) {
        ++core_->misdirected;
        if (DueForLog(&core_->misdirected_logged)) {
          spdlog::warn("{}: {} request(s) refused so far for their Host header, the last: {}",
                       core_->key, core_->misdirected, host_ok.message());
        }
      }
    } else if (req.method() != bhttp::verb::get && !head) {
      res.result(bhttp::status::method_not_allowed);
      res.set(bhttp::field::allow, "GET, HEAD");
      res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
      res.body() = "only GET and HEAD\n";
    } else {
      Response r = co_await core_->Answer(req);
      if (core_->stopped) break;
      res.result(r.status);
      res.set(bhttp::field::content_type, r.content_type);
      // Every answer is of now: no cache may keep it (a handler may say
      // otherwise in its headers).
      res.set(bhttp::field::cache_control, "no-store");
      // Checked by Answer (CheckHeader): no CR/LF, no framing header.
      for (auto& [name, value] : r.headers) res.set(name, value);
      res.body() = std::move(r.body);
    }
    res.keep_alive(keep);
    res.prepare_payload();
    if (head) {
      const std::size_t length = res.body().size();
      res.body().clear();
      res.content_length(length);
    }
    if (!co_await Write(res) || !keep) break;
  }
  Close();
  core_->open.erase(id_);
}

awaitable<Response> Server::Core::Answer(const bhttp::request<bhttp::string_body>& req) const {
  const std::string target(req.target().data(), req.target().size());
  const std::string path = target.substr(0, target.find('?'));
  auto it = routes.find(path);
  if (it == routes.end()) {
    co_return Response{.status = 404, .body = "not found; try /metrics\n"};
  }
  // A copy: a Route() while the handler waits must not destroy it.
  const AsyncHandler handler = it->second;
  std::string failure;
  std::optional<Response> response;
  try {
    response = co_await handler(target);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (response) {
    // A bad header is the handler's bug; sent, a CR/LF in it would split the
    // response (the peer would read a header or a body we never meant).
    Status bad = CheckHeaderValue("Content-Type", response->content_type);
    for (const auto& [name, value] : response->headers) {
      if (!bad.ok()) break;
      bad = CheckHeader(name, value);
    }
    if (bad.ok()) co_return std::move(*response);
    failure = "its response: " + bad.message();
  }
  spdlog::error("{}: the handler of {} failed: {}", key, path, failure);
  co_return Response{.status = 500, .body = "internal error\n"};
}

void Server::Core::RefuseBusy(tcp::socket socket) {
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  if (!ec) socket.write_some(asio::buffer(kBusyReply.data(), kBusyReply.size()), ec);
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
  ++refused;
  if (DueForLog(&refused_logged)) {
    spdlog::warn("{}: {} connection(s) refused so far: already {} open (the cap)", key, refused,
                 limits.max_connections);
  }
}

awaitable<void> Server::Core::AcceptLoop() {
  auto self = shared_from_this();
  std::chrono::milliseconds delay{0};
  while (!stopped) {
    auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
    if (stopped || ec == asio::error::operation_aborted) break;
    if (ec) {
      // Out of descriptors or buffers: wait (10 ms doubling to 1 s) instead
      // of spinning on an error no retry at once can clear.
      delay = std::clamp(delay * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
      ++failed;
      if (DueForLog(&failed_logged)) {
        spdlog::warn("{}: accept failed ({} time(s) so far): {}; retrying in {} ms", key, failed,
                     ec.message(), delay.count());
      }
      backoff.expires_after(delay);
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    delay = std::chrono::milliseconds(0);
    if (open.size() >= limits.max_connections) {
      RefuseBusy(std::move(socket));
      continue;
    }
    const std::uint64_t id = ++next_id;
    auto c = std::make_shared<Connection>(self, std::move(socket), id);
    open[id] = c;
    asio::co_spawn(io, [c]() { return c->Run(); }, asio::detached);
  }
}

Server::Server(std::shared_ptr<Core> core) : core_(std::move(core)) {}

Server::~Server() { Stop(); }

Result<std::unique_ptr<Server>> Server::Listen(asio::io_context& io, std::string_view host,
                                               std::uint16_t port, std::string_view key,
                                               Limits limits) {
  const std::string where = std::string(key) + " (" +
                            (host.find(':') != std::string_view::npos
                                 ? "[" + std::string(host) + "]"
                                 : std::string(host)) +
                            ":" + std::to_string(port) + ")";
  std::optional<asio::ip::address> address = ParseHost(host);
  if (!address) {
    return Status(Errc::kConfig, where + ": the host must be an IP address or \"localhost\" "
                                         "(no name lookup)");
  }
  auto core = std::make_shared<Core>(io, limits, std::string(key));
  const tcp::endpoint endpoint(*address, port);
  boost::system::error_code ec;
  core->acceptor.open(endpoint.protocol(), ec);
  // SO_REUSEADDR: a restart binds at once past the old connections'
  // TIME_WAIT; Linux still refuses a port another socket listens on.
  if (!ec) core->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) core->acceptor.bind(endpoint, ec);
  if (!ec) core->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status(Errc::kConfig, where + ": cannot listen: " + ec.message() +
                                     (ec == asio::error::address_in_use
                                          ? " (another program serves that port: pick another)"
                                          : ""));
  }
  return std::unique_ptr<Server>(new Server(std::move(core)));
}

void Server::Route(std::string path, Handler handler) {
  DSB_CHECK(!path.empty() && path[0] == '/', "http route %s does not start with '/'",
            path.c_str());
  RouteAsync(std::move(path), [handler = std::move(handler)](std::string target)
                                 -> awaitable<Response> { co_return handler(target); });
}

void Server::RouteAsync(std::string path, AsyncHandler handler) {
  DSB_CHECK(!path.empty() && path[0] == '/', "http route %s does not start with '/'",
            path.c_str());
  core_->routes[std::move(path)] = std::move(handler);
}

void Server::Start() {
  DSB_CHECK(!core_->stopped && !core_->started, "http server started twice or after Stop");
  core_->started = true;
  asio::co_spawn(core_->io, [core = core_]() { return core->AcceptLoop(); }, asio::detached);
}

void Server::Stop() {
  if (core_->stopped) return;
  core_->stopped = true;
  boost::system::error_code ec;
  core_->acceptor.close(ec);
  core_->backoff.cancel();
  // Close() completes the connections' pending reads with an error; each then
  // leaves `open` itself, so iterate over a copy.
  const auto open = core_->open;
  for (const auto& [id, weak] : open) {
    if (auto c = weak.lock()) c->Close();
  }
}

asio::ip::tcp::endpoint Server::local_endpoint() const {
  boost::system::error_code ec;
  return core_->acceptor.local_endpoint(ec);
}

std::size_t Server::connections() const { return core_->open.size(); }

Status CheckHeader(std::string_view name, std::string_view value) {
  const std::string shown = EscapeText(name);
  if (name.empty()) return Status(Errc::kInvalidArgument, "a response header has an empty name");
  for (const char c : name) {
    // RFC 9110 tchar.
    const bool tchar = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!tchar) {
      return Status(Errc::kInvalidArgument,
                    "response header name \"" + shown + "\" is not a token (RFC 9110 tchar)");
    }
  }
  if (Status v = CheckHeaderValue(name, value); !v.ok()) return v;
  for (const std::string_view own :
       {"Content-Length", "Transfer-Encoding", "Connection", "Content-Type"}) {
    if (beast::iequals(name, own)) {
      return Status(Errc::kInvalidArgument,
                    "response header \"" + shown + "\" is the server's to set" +
                        (own == "Content-Type" ? " (use Response::content_type)" : ""));
    }
  }
  return Status::Ok();
}

Status CheckRequestHost(std::optional<std::string_view> host, bool http11,
                        const asio::ip::address& local_address) {
  const asio::ip::address local = Unmapped(local_address);
  const std::string accepted =
      local.is_loopback()
          ? std::string("\"localhost\" or a loopback address (127.0.0.1, [::1]), with or "
                        "without the port")
          : "this endpoint's address (" +
                (local.is_v6() ? "[" + local.to_string() + "]" : local.to_string()) +
                "), with or without the port";
  if (!host) {
    if (!http11) return Status::Ok();
    return Status(Errc::kInvalidArgument,
                  "an HTTP/1.1 request without a Host header (RFC 9112); send Host: " + accepted);
  }
  const std::string shown = "\"" + EscapeText(*host, 200) + "\"";
  // host[:port]; an IPv6 literal in brackets.
  std::string_view name = *host;
  std::string_view port;
  if (!name.empty() && name.front() == '[') {
    const std::size_t close = name.find(']');
    if (close == std::string_view::npos) {
      return Status(Errc::kInvalidArgument, "Host " + shown + " opens '[' without closing it");
    }
    port = name.substr(close + 1);
    name = name.substr(1, close - 1);
    if (!port.empty() && port.front() != ':') {
      return Status(Errc::kInvalidArgument, "Host " + shown + " has text after ']'");
    }
    if (!port.empty()) port.remove_prefix(1);
  } else if (const std::size_t colon = name.rfind(':'); colon != std::string_view::npos) {
    if (name.find(':') != colon) {
      return Status(Errc::kInvalidArgument,
                    "Host " + shown + " is an IPv6 address without brackets ([addr]:port)");
    }
    port = name.substr(colon + 1);
    name = name.substr(0, colon);
  }
  if (port.size() > 5 || !std::all_of(port.begin(), port.end(),
                                      [](char c) { return c >= '0' && c <= '9'; })) {
    return Status(Errc::kInvalidArgument, "Host " + shown + " has a port that is not a number");
  }
  if (local.is_loopback() && beast::iequals(name, "localhost")) return Status::Ok();
  boost::system::error_code ec;
  const asio::ip::address a = asio::ip::make_address(std::string(name), ec);
  if (!ec && !name.empty() && name.find('%') == std::string_view::npos) {
    const asio::ip::address named = Unmapped(a);
    if (named == local || (local.is_loopback() && named.is_loopback())) return Status::Ok();
  }
  return Status(Errc::kPermissionDenied,
                "Host " + shown + " does not name this endpoint; it answers only " + accepted +
                    " (a name that only points here, as a web page can make one, is refused)");
}

bool IsLoopbackHost(std::string_view host) {
  std::optional<asio::ip::address> a = ParseHost(host);
  return a && a->is_loopback();
}

}  // namespace dsb::http
