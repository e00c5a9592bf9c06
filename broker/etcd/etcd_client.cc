// EtcdClient (etcd_client.h): the JSON gateway over Boost.Beast.
//
// The one translation unit with Beast, Asio's SSL and Boost.JSON for etcd
// (compile time: ../shared/REAL-PARTS.md). Everything runs on the client's
// executor; the shared state lives in `State`, held by every coroutine frame
// through a shared_ptr so a call in flight outlives ~EtcdClient safely (the
// destructor cancels it).
#include "broker/etcd/etcd_client.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#if DSB_ETCD_TLS
#include <openssl/ssl.h>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#endif

#include <algorithm>
#include <charconv>
#include <fstream>
#include <string_view>
#include <utility>

namespace dsb::etcd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint64_t kBodyLimit = 64u * 1024u * 1024u;  // a whole prefix range
constexpr std::size_t kIdlePerEndpoint = 4;
// A pooled connection idle longer than this is dropped rather than reused:
// well below etcd's own idle close (minutes), so a reused connection is almost
// never one the server is closing at that instant (see Exchange).
constexpr auto kMaxIdle = std::chrono::seconds(30);

struct Endpoint {
  std::string url;  // as configured, for messages
  bool tls = false;
  std::string host;  // without brackets
  std::string port;
};

Result<Endpoint> ParseEndpoint(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return Status(Errc::kConfig, "etcd endpoint \"" + url + "\": " + why +
                                     " (expected http://host:port or https://host:port)");
  };
  Endpoint ep;
  ep.url = url;
  std::string_view rest = url;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
    ep.tls = true;
  } else {
    return bad("unknown scheme");
  }
  if (rest.ends_with("/")) rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return bad("a path is not allowed");
  std::string_view host;
  std::string_view port;
  if (rest.starts_with("[")) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return bad("unclosed '['");
    host = rest.substr(1, close - 1);
    if (rest.substr(close + 1).size() < 2 || rest[close + 1] != ':') return bad("no port");
    port = rest.substr(close + 2);
  } else {
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return bad("no host");
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoul(std::string(port)) == 0 || std::stoul(std::string(port)) > 65535) {
    return bad("bad port \"" + std::string(port) + "\"");
  }
  for (char c : host) {
    if (c <= ' ' || c == '@' || c == '?' || c == '#') return bad("bad host");
  }
  ep.host = std::string(host);
  ep.port = std::string(port);
  return ep;
}

std::string B64(std::string_view raw) {
  std::string out(beast::detail::base64::encoded_size(raw.size()), '\0');
  out.resize(beast::detail::base64::encode(out.data(), raw.data(), raw.size()));
  return out;
}

// Decodes etcd's padded base64; nullopt on a character outside the alphabet.
std::optional<std::string> UnB64(std::string_view text) {
  std::string out(beast::detail::base64::decoded_size(text.size()), '\0');
  const auto [written, read] = beast::detail::base64::decode(out.data(), text.data(), text.size());
  // decode stops at the first '=' or bad character: only padding may remain.
  for (std::size_t i = read; i < text.size(); ++i) {
    if (text[i] != '=') return std::nullopt;
  }
  out.resize(written);
  return out;
}

// The end of a prefix range: the prefix with its last byte below 0xff
// raised by one (etcd's clientv3.GetPrefixRangeEnd); "\0" (every key) when
// the prefix is empty or all 0xff.
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = prefix.back();
    if (static_cast<unsigned char>(last) < 0xff) {
      last = static_cast<char>(static_cast<unsigned char>(last) + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

// etcd sends every 64-bit number as a JSON string (and omits zeros).
std::optional<std::int64_t> Int(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  if (v == nullptr) return 0;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->as_uint64());
  if (!v->is_string()) return std::nullopt;
  const auto& s = v->as_string();
  std::int64_t out = 0;
  const char* first = s.data();
  const char* last = s.data() + s.size();
  const auto [p, ec] = std::from_chars(first, last, out);
  if (ec != std::errc() || p != last) return std::nullopt;
  return out;
}

std::optional<std::string> Bytes(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  if (v == nullptr) return std::string();
  if (!v->is_string()) return std::nullopt;
  return UnB64(std::string_view(v->as_string().data(), v->as_string().size()));
}

std::optional<KeyValue> ParseKv(const json::value& v) {
  if (!v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  KeyValue kv;
  auto key = Bytes(o, "key");
  auto value = Bytes(o, "value");
  auto cr = Int(o, "create_revision");
  auto mr = Int(o, "mod_revision");
  auto ver = Int(o, "version");
  auto lease = Int(o, "lease");
  if (!key || !value || !cr || !mr || !ver || !lease) return std::nullopt;
  kv.key = std::move(*key);
  kv.value = std::move(*value);
  kv.create_revision = *cr;
  kv.mod_revision = *mr;
  kv.version = *ver;
  kv.lease = *lease;
  return kv;
}

std::optional<std::int64_t> HeaderRevision(const json::object& o) {
  const auto* h = o.if_contains("header");
  if (h == nullptr || !h->is_object()) return std::nullopt;
  return Int(h->as_object(), "revision");
}

std::uint64_t HeaderClusterId(const json::object& o) {
  const auto* h = o.if_contains("header");
  if (h == nullptr || !h->is_object()) return 0;
  const auto* v = h->as_object().if_contains("cluster_id");
  if (v == nullptr || !v->is_string()) return 0;
  std::uint64_t out = 0;
  const auto& s = v->as_string();
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() ? out : 0;
}

std::string Num(std::int64_t n) { return std::to_string(n); }

json::object OpJson(const Op& op) {
  json::object o;
  if (op.kind == Op::Kind::kPut) {
    json::object put{{"key", B64(op.key)}, {"value", B64(op.value)}};
    if (op.lease != 0) put["lease"] = Num(op.lease);
    o["request_put"] = std::move(put);
  } else {
    o["request_delete_range"] = json::object{{"key", B64(op.key)}};
  }
  return o;
}

json::object CompareJson(const Compare& c) {
  json::object o{{"key", B64(c.key)}, {"result", "EQUAL"}};
  switch (c.field) {
    case Compare::Field::kModRevision:
      o["target"] = "MOD";
      o["mod_revision"] = Num(c.number);
      break;
    case Compare::Field::kCreateRevision:
      o["target"] = "CREATE";
      o["create_revision"] = Num(c.number);
      break;
    case Compare::Field::kVersion:
      o["target"] = "VERSION";
      o["version"] = Num(c.number);
      break;
    case Compare::Field::kLease:
      o["target"] = "LEASE";
      o["lease"] = Num(c.number);
      break;
    case Compare::Field::kValue:
      o["target"] = "VALUE";
      o["value"] = B64(c.value);
      break;
  }
  return o;
}

// How a call may be repeated on another endpoint once its request was sent.
enum class Kind {
  kRead,        // no effect: resend anywhere
  kIdempotent,  // the same effect twice is the same effect (keepalive, revoke)
  kWrite,       // once sent, its outcome is unknown until answered (txn, put, grant)
};

// 5xx messages after which etcd did not propose the request: safe to try the
// next endpoint even for a write. Anything else (e.g. "request timed out",
// possibly due to a leader failure) may still commit.
bool NotProposed(std::string_view message) {
  return message.find("no leader") != std::string_view::npos ||
         message.find("too many requests") != std::string_view::npos ||
         message.find("not capable") != std::string_view::npos ||
         message.find("leader changed") != std::string_view::npos;
}

std::string EtcdMessage(const std::string& body) {
  boost::system::error_code ec;
  const auto v = json::parse(body, ec);
  if (!ec && v.is_object()) {
    const auto* m = v.as_object().if_contains("message");
    if (m == nullptr) {
      // Streaming calls wrap it: {"error":{"message":...}}.
      const auto* e = v.as_object().if_contains("error");
      if (e != nullptr && e->is_object()) m = e->as_object().if_contains("message");
    }
    if (m != nullptr && m->is_string()) return std::string(m->as_string());
  }
  return body.substr(0, 200);
}

}  // namespace

// One keep-alive HTTP/1.1 connection to one endpoint, plain or TLS.
struct Conn {
  std::size_t endpoint = 0;
  std::optional<beast::tcp_stream> plain;
#if DSB_ETCD_TLS
  std::unique_ptr<asio::ssl::stream<beast::tcp_stream>> tls;
#endif
  beast::flat_buffer buffer;
  Clock::time_point idle_since;

  beast::tcp_stream& Lowest() {
#if DSB_ETCD_TLS
    if (tls) return tls->next_layer();
#endif
    return *plain;
  }
  void Close() {
    boost::system::error_code ignored;
    Lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    Lowest().socket().close(ignored);
  }
  // A pooled connection is reusable when the server has sent nothing (an
  // idle HTTP/1.1 server sends nothing but its FIN or reset).
  bool LooksAlive() {
    auto& sock = Lowest().socket();
    if (!sock.is_open()) return false;
    char byte = 0;
    boost::system::error_code ec;
    sock.non_blocking(true, ec);
    if (ec) return false;
    sock.receive(asio::buffer(&byte, 1), tcp::socket::message_peek, ec);
    sock.non_blocking(false, ec);
    return ec == asio::error::would_block;
  }
};

struct State : std::enable_shared_from_this<State> {
  asio::any_io_executor executor;
  ClientOptions options;
  std::vector<Endpoint> endpoints;
#if DSB_ETCD_TLS
  std::optional<asio::ssl::context> ssl;
#endif
  std::size_t current = 0;  // the endpoint that answered last
  std::vector<std::vector<std::shared_ptr<Conn>>> idle;
  std::vector<std::weak_ptr<Conn>> live;  // for Cancel()
  std::uint64_t cancel_epoch = 0;

  void Track(const std::shared_ptr<Conn>& c) {
    std::erase_if(live, [](const std::weak_ptr<Conn>& w) { return w.expired(); });
    live.push_back(c);
  }
};

namespace {

struct Answer {
  unsigned status = 0;
  std::string body;
};

// What one try on one endpoint came to.
struct Try {
  enum class Next { kDone, kNextEndpoint, kStop };
  Next next = Next::kStop;
  Status status;  // kNextEndpoint/kStop: why
  Answer answer;  // kDone
};

Status Cancelled() { return Status(Errc::kCancelled, "etcd call cancelled"); }

bool IsSslError(const boost::system::error_code& ec) {
#if DSB_ETCD_TLS
  return ec.category() == asio::error::get_ssl_category() ||
         ec.category() == asio::ssl::error::get_stream_category();
#else
  (void)ec;
  return false;
#endif
}

// Opens a new connection (TCP connect, TLS handshake with the server
// verified against the CA and the URL's host) before `deadline`.
asio::awaitable<Result<std::shared_ptr<Conn>>> Open(std::shared_ptr<State> st, std::size_t index,
                                                    Clock::time_point deadline) {
  const Endpoint& ep = st->endpoints[index];
  auto conn = std::make_shared<Conn>();
  conn->endpoint = index;
  st->Track(conn);
#if DSB_ETCD_TLS
  if (ep.tls) {
    conn->tls = std::make_unique<asio::ssl::stream<beast::tcp_stream>>(st->executor, *st->ssl);
  } else {
    conn->plain.emplace(st->executor);
  }
#else
  conn->plain.emplace(st->executor);
#endif
  boost::system::error_code ec;
  std::vector<tcp::endpoint> addrs;
  const auto ip = asio::ip::make_address(ep.host, ec);
  const bool is_ip = !ec;
  if (is_ip) {
    addrs.emplace_back(ip, static_cast<std::uint16_t>(std::stoul(ep.port)));
  } else {
    tcp::resolver resolver(st->executor);
    auto results = co_await resolver.async_resolve(ep.host, ep.port,
                                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return Status(Errc::kBrokerUnavailable, "cannot resolve: " + ec.message());
    for (const auto& r : results) addrs.push_back(r.endpoint());
  }
  auto& lowest = conn->Lowest();
  lowest.expires_at(deadline);
  co_await lowest.async_connect(addrs, asio::redirect_error(asio::use_awaitable, ec));
  if (ec == beast::error::timeout) co_return Status(Errc::kTimeout, "connect timed out");
  if (ec) co_return Status(Errc::kBrokerUnavailable, "cannot connect: " + ec.message());
  lowest.socket().set_option(tcp::no_delay(true), ec);
#if DSB_ETCD_TLS
  if (ep.tls) {
    // SNI only for names (RFC 6066 forbids IP literals there).
    if (!is_ip && !SSL_set_tlsext_host_name(conn->tls->native_handle(), ep.host.c_str())) {
      co_return Status(Errc::kAuthFailed, "cannot set the TLS server name");
    }
    conn->tls->set_verify_mode(asio::ssl::verify_peer);
    conn->tls->set_verify_callback(asio::ssl::host_name_verification(ep.host));
    co_await conn->tls->async_handshake(asio::ssl::stream_base::client,
                                        asio::redirect_error(asio::use_awaitable, ec));
    if (ec == beast::error::timeout) co_return Status(Errc::kTimeout, "TLS handshake timed out");
    if (ec) {
      co_return Status(Errc::kAuthFailed, "TLS handshake failed: " + ec.message());
    }
  }
#endif
  co_return conn;
}

template <typename Stream>
asio::awaitable<boost::system::error_code> WriteRequest(Stream& stream,
                                                        http::request<http::string_body>& req) {
  boost::system::error_code ec;
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  co_return ec;
}

template <typename Stream>
asio::awaitable<boost::system::error_code> ReadResponse(Stream& stream, beast::flat_buffer& buffer,
                                                        http::response<http::string_body>& res) {
  boost::system::error_code ec;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kBodyLimit);
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) res = parser.release();
  co_return ec;
}

// One request on one endpoint: a pooled connection if one looks alive (a
// fresh one if sending on it fails), else a new one.
asio::awaitable<Try> Exchange(std::shared_ptr<State> st, std::size_t index, const char* target,
                              const std::string& body, Kind kind, Clock::time_point deadline,
                              std::uint64_t epoch) {
  const Endpoint& ep = st->endpoints[index];
  auto& pool = st->idle[index];
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::shared_ptr<Conn> conn;
    while (!pool.empty() && attempt == 0) {
      auto c = std::move(pool.back());
      pool.pop_back();
      if (Clock::now() - c->idle_since < kMaxIdle && c->LooksAlive()) {
        conn = std::move(c);
        break;
      }
      c->Close();
    }
    const bool reused = conn != nullptr;
    if (!conn) {
      auto opened = co_await Open(st, index, deadline);
      if (st->cancel_epoch != epoch) co_return Try{Try::Next::kStop, Cancelled(), {}};
      if (!opened.ok()) {
        const auto& s = opened.status();
        co_return Try{
            s.code() == Errc::kTimeout ? Try::Next::kStop : Try::Next::kNextEndpoint, s, {}};
      }
      conn = std::move(*opened);
    }
    http::request<http::string_body> req{http::verb::post, target, 11};
    req.set(http::field::host, ep.host + ":" + ep.port);
    req.set(http::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    conn->Lowest().expires_at(deadline);
    boost::system::error_code ec;
#if DSB_ETCD_TLS
    if (conn->tls) {
      ec = co_await WriteRequest(*conn->tls, req);
    } else {
      ec = co_await WriteRequest(*conn->plain, req);
    }
#else
    ec = co_await WriteRequest(*conn->plain, req);
#endif
    if (st->cancel_epoch != epoch) co_return Try{Try::Next::kStop, Cancelled(), {}};
    if (ec) {
      // Not all of the request reached the server: it cannot have run.
#if DSB_ETCD_TLS
      if (conn->tls && !reused && ec != beast::error::timeout && !IsSslError(ec)) {
        // TLS 1.3: the server judges our certificate after our side of the
        // handshake is done, then sends an alert and closes; our request
        // meets the closed socket (reset). The alert may still wait in the
        // receive queue: read it so the failure is named for what it is.
        char byte = 0;
        boost::system::error_code alert;
        co_await conn->tls->async_read_some(asio::buffer(&byte, 1),
                                            asio::redirect_error(asio::use_awaitable, alert));
        if (IsSslError(alert)) ec = alert;
      }
#endif
      conn->Close();
      if (ec == beast::error::timeout) {
        co_return Try{Try::Next::kStop, Status(Errc::kTimeout, "sending timed out"), {}};
      }
      if (reused) continue;  // a stale pooled connection: once more on a new one
      if (IsSslError(ec)) {
        co_return Try{Try::Next::kNextEndpoint,
                      Status(Errc::kAuthFailed, "TLS refused: " + ec.message()),
                      {}};
      }
      co_return Try{Try::Next::kNextEndpoint,
                    Status(Errc::kBrokerUnavailable, "send failed: " + ec.message()),
                    {}};
    }
    http::response<http::string_body> res;
#if DSB_ETCD_TLS
    if (conn->tls) {
      ec = co_await ReadResponse(*conn->tls, conn->buffer, res);
    } else {
      ec = co_await ReadResponse(*conn->plain, conn->buffer, res);
    }
#else
    ec = co_await ReadResponse(*conn->plain, conn->buffer, res);
#endif
    if (st->cancel_epoch != epoch) co_return Try{Try::Next::kStop, Cancelled(), {}};
    if (ec) {
      conn->Close();
      if (ec == beast::error::timeout) {
        co_return Try{Try::Next::kStop,
                      Status(Errc::kTimeout, kind == Kind::kWrite
                                                 ? "no answer before the deadline (the write's "
                                                   "outcome is unknown: re-read)"
                                                 : "no answer before the deadline"),
                      {}};
      }
      if (IsSslError(ec)) {
        // A TLS 1.3 server refuses a client certificate after the client's
        // handshake, on the first read: the request was never served.
        co_return Try{Try::Next::kNextEndpoint,
                      Status(Errc::kAuthFailed, "TLS refused: " + ec.message()),
                      {}};
      }
      if (kind == Kind::kWrite) {
        co_return Try{Try::Next::kStop,
                      Status(Errc::kTimeout,
                             "connection lost after sending (the write's "
                             "outcome is unknown: re-read): " +
                                 ec.message()),
                      {}};
      }
      if (reused && attempt == 0) continue;
      co_return Try{Try::Next::kNextEndpoint,
                    Status(Errc::kBrokerUnavailable, "connection lost: " + ec.message()),
                    {}};
    }
    if (res.keep_alive()) {
      conn->idle_since = Clock::now();
      conn->Lowest().expires_never();
      if (pool.size() < kIdlePerEndpoint) pool.push_back(std::move(conn));
    } else {
      conn->Close();
    }
    co_return Try{Try::Next::kDone, Status(), Answer{res.result_int(), std::move(res.body())}};
  }
  co_return Try{
      Try::Next::kNextEndpoint, Status(Errc::kBrokerUnavailable, "connection closed twice"), {}};
}

std::string Names(const std::vector<std::string>& tried) {
  std::string out;
  for (const auto& t : tried) out += (out.empty() ? "" : "; ") + t;
  return out;
}

// One call: the endpoint that answered last first, then each other at most
// once, all before the deadline. Returns etcd's JSON answer (status 200).
asio::awaitable<Result<json::object>> Call(std::shared_ptr<State> st, const char* target,
                                           std::string body, Kind kind,
                                           std::optional<std::size_t> only = std::nullopt) {
  const auto deadline = Clock::now() + st->options.call_timeout;
  const std::uint64_t epoch = st->cancel_epoch;
  const std::size_t n = only ? 1 : st->endpoints.size();
  const std::size_t first = only ? *only : st->current;
  std::vector<std::string> tried;
  bool auth_failed = false;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t index = (first + i) % st->endpoints.size();
    const std::string& url = st->endpoints[index].url;
    if (Clock::now() >= deadline) break;
    Try t = co_await Exchange(st, index, target, body, kind, deadline, epoch);
    if (t.next == Try::Next::kStop) {
      if (t.status.code() == Errc::kCancelled) co_return t.status;
      // A member that takes the call and never answers (no leader on its
      // side of a partition, stopped, overloaded) would catch every later
      // call too: the next call starts at the next endpoint.
      if (t.status.code() == Errc::kTimeout && !only)
        st->current = (index + 1) % st->endpoints.size();
      tried.push_back(url + ": " + t.status.message());
      co_return Status(t.status.code(), std::string(target) + ": " + Names(tried));
    }
    if (t.next == Try::Next::kNextEndpoint) {
      auth_failed = auth_failed || t.status.code() == Errc::kAuthFailed;
      tried.push_back(url + ": " + t.status.message());
      continue;
    }
    const Answer& a = t.answer;
    if (a.status >= 500) {
      const std::string msg = EtcdMessage(a.body);
      tried.push_back(url + ": HTTP " + std::to_string(a.status) + " " + msg);
      if (kind == Kind::kWrite && !NotProposed(msg)) {
        co_return Status(
            Errc::kTimeout,
            std::string(target) + ": the write's outcome is unknown (re-read): " + Names(tried));
      }
      continue;
    }
    if (!only) st->current = index;
    if (a.status != 200) {
      co_return Status(a.status >= 400 && a.status < 500 ? Errc::kConflict : Errc::kProtocol,
                       std::string(target) + " at " + url + ": HTTP " + std::to_string(a.status) +
                           " " + EtcdMessage(a.body));
    }
    boost::system::error_code ec;
    auto v = json::parse(a.body, ec);
    if (ec || !v.is_object()) {
      co_return Status(Errc::kProtocol,
                       std::string(target) + " at " + url +
                           ": answer is not a JSON object: " + a.body.substr(0, 200));
    }
    co_return std::move(v.as_object());
  }
  if (Clock::now() >= deadline) {
    if (!only && !tried.empty()) st->current = (st->current + 1) % st->endpoints.size();
    co_return Status(Errc::kTimeout, std::string(target) + ": no answer within " +
                                         std::to_string(st->options.call_timeout.count()) + " ms" +
                                         (kind == Kind::kWrite ? " (outcome unknown)" : "") +
                                         (tried.empty() ? "" : ": " + Names(tried)));
  }
  co_return Status(auth_failed ? Errc::kAuthFailed : Errc::kBrokerUnavailable,
                   std::string(target) + ": no etcd endpoint answered: " + Names(tried));
}

Status Malformed(const char* what, const json::object& o) {
  return Status(Errc::kProtocol, std::string("etcd answer to ") + what +
                                     " is malformed: " + json::serialize(o).substr(0, 200));
}

asio::awaitable<Result<RangeResult>> Range(std::shared_ptr<State> st, std::string key,
                                           std::optional<std::string> range_end) {
  json::object req{{"key", B64(key)}};
  if (range_end) req["range_end"] = B64(*range_end);
  auto r = co_await Call(st, "/v3/kv/range", json::serialize(req), Kind::kRead);
  if (!r.ok()) co_return r.status();
  RangeResult out;
  const auto rev = HeaderRevision(*r);
  if (!rev) co_return Malformed("range", *r);
  out.revision = *rev;
  out.cluster_id = HeaderClusterId(*r);
  if (const auto* kvs = r->if_contains("kvs")) {
    if (!kvs->is_array()) co_return Malformed("range", *r);
    for (const auto& v : kvs->as_array()) {
      auto kv = ParseKv(v);
      if (!kv) co_return Malformed("range", *r);
      out.kvs.push_back(std::move(*kv));
    }
  }
  co_return out;
}

std::string LeaseBody(std::int64_t id) { return json::serialize(json::object{{"ID", Num(id)}}); }

std::optional<std::uint64_t> Uint(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  if (v == nullptr) return 0;
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
  if (!v->is_string()) return std::nullopt;
  const auto& s = v->as_string();
  std::uint64_t out = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return out;
}

Result<MemberStatus> ParseStatus(const json::object& o) {
  const auto* h = o.if_contains("header");
  const auto member = h != nullptr && h->is_object() ? Uint(h->as_object(), "member_id")
                                                     : std::optional<std::uint64_t>();
  const auto leader = Uint(o, "leader");
  const auto term = Uint(o, "raftTerm");
  const auto* version = o.if_contains("version");
  if (!member || !leader || !term || version == nullptr || !version->is_string()) {
    return Malformed("status", o);
  }
  return MemberStatus{*member, *leader, *term, std::string(version->as_string())};
}

std::string CompactBody(std::int64_t revision) {
  return json::serialize(json::object{{"revision", Num(revision)}, {"physical", false}});
}

std::string GrantBody(std::int64_t ttl_s) {
  return json::serialize(json::object{{"TTL", Num(ttl_s)}, {"ID", "0"}});
}

}  // namespace

struct EtcdClient::Impl {
  std::shared_ptr<State> st;
};

Result<std::unique_ptr<EtcdClient>> EtcdClient::Create(asio::any_io_executor executor,
                                                       ClientOptions options) {
  if (options.endpoints.empty()) {
    return Status(Errc::kConfig, "etcd: no endpoint given (etcd_endpoints is empty)");
  }
  if (options.call_timeout <= std::chrono::milliseconds(0)) {
    return Status(Errc::kConfig, "etcd: the call timeout must be positive");
  }
  auto st = std::make_shared<State>();
  st->executor = std::move(executor);
  bool any_tls = false;
  for (const auto& url : options.endpoints) {
    auto ep = ParseEndpoint(url);
    if (!ep.ok()) return ep.status();
    any_tls = any_tls || ep->tls;
    st->endpoints.push_back(std::move(*ep));
  }
  if (any_tls) {
#if DSB_ETCD_TLS
    if (!options.tls) {
      return Status(Errc::kConfig,
                    "etcd: an https endpoint needs the TLS files ([etcd_tls] "
                    "ca_file, cert_file, key_file)");
    }
    for (const auto* f : {&options.tls->ca_file, &options.tls->cert_file, &options.tls->key_file}) {
      if (f->empty() || !std::ifstream(*f).good()) {
        return Status(Errc::kConfig, "etcd TLS file \"" + *f + "\" cannot be read");
      }
    }
    st->ssl.emplace(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    st->ssl->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                             asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                             asio::ssl::context::no_tlsv1_1,
                         ec);
    st->ssl->load_verify_file(options.tls->ca_file, ec);
    if (ec) {
      return Status(Errc::kConfig,
                    "etcd TLS ca_file \"" + options.tls->ca_file + "\": " + ec.message());
    }
    st->ssl->use_certificate_chain_file(options.tls->cert_file, ec);
    if (ec) {
      return Status(Errc::kConfig,
                    "etcd TLS cert_file \"" + options.tls->cert_file + "\": " + ec.message());
    }
    st->ssl->use_private_key_file(options.tls->key_file, asio::ssl::context::pem, ec);
    if (ec) {
      return Status(Errc::kConfig,
                    "etcd TLS key_file \"" + options.tls->key_file + "\": " + ec.message());
    }
#else
    for (const auto& ep : st->endpoints) {
      if (ep.tls) {
        return Status(Errc::kConfig, "etcd endpoint \"" + ep.url +
                                         "\": https is not supported by this build (no "
                                         "OpenSSL); use http");
      }
    }
#endif
  }
  st->options = std::move(options);
  st->idle.resize(st->endpoints.size());
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::make_unique<Impl>(Impl{std::move(st)})));
}

EtcdClient::EtcdClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EtcdClient::~EtcdClient() { Cancel(); }

asio::awaitable<Result<RangeResult>> EtcdClient::RangePrefix(std::string prefix) {
  auto st = impl_->st;
  std::string end = PrefixEnd(prefix);
  co_return co_await Range(std::move(st), std::move(prefix), std::move(end));
}

asio::awaitable<Result<RangeResult>> EtcdClient::Get(std::string key) {
  auto st = impl_->st;
  co_return co_await Range(std::move(st), std::move(key), std::nullopt);
}

asio::awaitable<Result<TxnResult>> EtcdClient::Txn(std::vector<Compare> compares,
                                                   std::vector<Op> success,
                                                   std::vector<Op> failure) {
  auto st = impl_->st;
  json::array cmp;
  for (const auto& c : compares) cmp.push_back(CompareJson(c));
  json::array ok;
  for (const auto& op : success) ok.push_back(OpJson(op));
  json::array bad;
  for (const auto& op : failure) bad.push_back(OpJson(op));
  json::object req{
      {"compare", std::move(cmp)}, {"success", std::move(ok)}, {"failure", std::move(bad)}};
  auto r = co_await Call(st, "/v3/kv/txn", json::serialize(req), Kind::kWrite);
  if (!r.ok()) co_return r.status();
  TxnResult out;
  const auto rev = HeaderRevision(*r);
  if (!rev) co_return Malformed("txn", *r);
  out.revision = *rev;
  out.cluster_id = HeaderClusterId(*r);
  if (const auto* s = r->if_contains("succeeded")) {
    if (!s->is_bool()) co_return Malformed("txn", *r);
    out.succeeded = s->as_bool();
  }
  co_return out;
}

asio::awaitable<Result<LeaseGrantResult>> EtcdClient::LeaseGrant(std::int64_t ttl_s) {
  auto st = impl_->st;
  auto r = co_await Call(st, "/v3/lease/grant", GrantBody(ttl_s), Kind::kWrite);
  if (!r.ok()) co_return r.status();
  const auto id = Int(*r, "ID");
  const auto ttl = Int(*r, "TTL");
  if (!id || !ttl || *id == 0) co_return Malformed("lease grant", *r);
  co_return LeaseGrantResult{*id, *ttl};
}

asio::awaitable<Result<std::optional<std::int64_t>>> EtcdClient::KeepAlive(std::int64_t lease_id) {
  auto st = impl_->st;
  auto r = co_await Call(st, "/v3/lease/keepalive", LeaseBody(lease_id), Kind::kIdempotent);
  if (!r.ok()) co_return r.status();
  // A streaming call: the answer is {"result": {...}}.
  const auto* res = r->if_contains("result");
  if (res == nullptr || !res->is_object()) co_return Malformed("lease keepalive", *r);
  const auto& o = res->as_object();
  if (o.if_contains("TTL") == nullptr) co_return std::optional<std::int64_t>();  // lease gone
  const auto ttl = Int(o, "TTL");
  if (!ttl) co_return Malformed("lease keepalive", *r);
  if (*ttl <= 0) co_return std::optional<std::int64_t>();
  co_return std::optional<std::int64_t>(*ttl);
}

asio::awaitable<Result<std::optional<std::int64_t>>> EtcdClient::TimeToLive(std::int64_t lease_id) {
  auto st = impl_->st;
  auto r = co_await Call(st, "/v3/lease/timetolive", LeaseBody(lease_id), Kind::kRead);
  if (!r.ok()) co_return r.status();
  const auto ttl = Int(*r, "TTL");
  if (!ttl) co_return Malformed("lease timetolive", *r);
  if (*ttl < 0) co_return std::optional<std::int64_t>();  // -1: the lease is gone
  co_return std::optional<std::int64_t>(*ttl);
}

asio::awaitable<Status> EtcdClient::LeaseRevoke(std::int64_t lease_id) {
  auto st = impl_->st;
  auto r = co_await Call(st, "/v3/lease/revoke", LeaseBody(lease_id), Kind::kIdempotent);
  // Revoking a lease etcd no longer knows is done: the lease is gone either way.
  if (!r.ok() && r.status().code() == Errc::kConflict &&
      r.status().message().find("lease not found") != std::string::npos) {
    co_return Status::Ok();
  }
  co_return r.ok() ? Status::Ok() : r.status();
}

asio::awaitable<Status> EtcdClient::Compact(std::int64_t revision) {
  auto st = impl_->st;
  auto r = co_await Call(st, "/v3/kv/compaction", CompactBody(revision), Kind::kIdempotent);
  if (!r.ok() && r.status().code() == Errc::kConflict &&
      r.status().message().find("required revision has been compacted") != std::string::npos) {
    co_return Status::Ok();  // already compacted at or past `revision`
  }
  co_return r.ok() ? Status::Ok() : r.status();
}

asio::awaitable<Status> EtcdClient::CheckHealth() {
  auto st = impl_->st;
  // A linearizable read goes through the leader's read index: a member
  // without quorum cannot answer it.
  auto r = co_await Range(st, "/dsb-health", std::nullopt);
  co_return r.ok() ? Status::Ok() : r.status();
}

asio::awaitable<Result<MemberStatus>> EtcdClient::StatusOf(std::size_t endpoint_index) {
  auto st = impl_->st;
  DSB_CHECK(endpoint_index < st->endpoints.size(), "StatusOf(%zu): only %zu endpoints",
            endpoint_index, st->endpoints.size());
  auto r = co_await Call(st, "/v3/maintenance/status", "{}", Kind::kRead, endpoint_index);
  if (!r.ok()) co_return r.status();
  co_return ParseStatus(*r);
}

asio::awaitable<Status> EtcdClient::Watch(std::string prefix, std::int64_t start_revision,
                                          std::function<bool(const WatchEvent&)> on_event) {
  auto st = impl_->st;
  const std::uint64_t epoch = st->cancel_epoch;
  json::object create{{"key", B64(prefix)}, {"range_end", B64(PrefixEnd(prefix))}};
  if (start_revision > 0) create["start_revision"] = Num(start_revision);
  const std::string body = json::serialize(json::object{{"create_request", std::move(create)}});
  const std::size_t n = st->endpoints.size();
  std::vector<std::string> tried;
  bool auth_failed = false;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t index = (st->current + i) % n;
    const Endpoint& ep = st->endpoints[index];
    const auto deadline = Clock::now() + st->options.call_timeout;
    auto opened = co_await Open(st, index, deadline);
    if (st->cancel_epoch != epoch) co_return Cancelled();
    if (!opened.ok()) {
      auth_failed = auth_failed || opened.status().code() == Errc::kAuthFailed;
      tried.push_back(ep.url + ": " + opened.status().message());
      continue;
    }
    auto conn = std::move(*opened);
    http::request<http::string_body> req{http::verb::post, "/v3/watch", 11};
    req.set(http::field::host, ep.host + ":" + ep.port);
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    boost::system::error_code ec;
    bool created = false;
    auto run = [&](auto& stream) -> asio::awaitable<Status> {
      co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return Status(Errc::kBrokerUnavailable, "send failed: " + ec.message());
      co_await http::async_read_header(stream, conn->buffer, parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return Status(Errc::kBrokerUnavailable, "no answer: " + ec.message());
      if (parser.get().result_int() != 200) {
        co_return Status(Errc::kConflict, "HTTP " + std::to_string(parser.get().result_int()));
      }
      // Established: from here the stream has no deadline (Cancel ends it).
      conn->Lowest().expires_never();
      std::string pending;
      std::vector<char> chunk(64 * 1024);
      for (;;) {
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        co_await http::async_read_some(stream, conn->buffer, parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
        if (ec == http::error::need_buffer) ec = {};
        if (ec) {
          co_return Status(Errc::kBrokerUnavailable, "watch stream failed: " + ec.message());
        }
        pending.append(chunk.data(), chunk.size() - parser.get().body().size);
        std::size_t nl;
        while ((nl = pending.find('\n')) != std::string::npos) {
          const std::string line = pending.substr(0, nl);
          pending.erase(0, nl + 1);
          if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
          auto v = json::parse(line, ec);
          if (ec || !v.is_object()) {
            co_return Status(Errc::kProtocol, "watch: a line is not JSON: " + line.substr(0, 200));
          }
          const auto& o = v.as_object();
          if (o.if_contains("error") != nullptr) {
            co_return Status(Errc::kBrokerUnavailable, "watch ended: " + EtcdMessage(line));
          }
          const auto* res = o.if_contains("result");
          if (res == nullptr || !res->is_object()) co_return Malformed("watch", o);
          const auto& r = res->as_object();
          if (const auto* c = r.if_contains("canceled");
              c != nullptr && c->is_bool() && c->as_bool()) {
            const auto compacted = Int(r, "compact_revision");
            co_return Status(
                Errc::kConflict,
                "watch cancelled by etcd" + (compacted && *compacted > 0
                                                 ? ": revision compacted up to " + Num(*compacted)
                                                 : std::string()));
          }
          if (const auto* c = r.if_contains("created"); c != nullptr && c->is_bool()) {
            created = created || c->as_bool();
          }
          const auto* events = r.if_contains("events");
          if (events == nullptr) continue;
          if (!events->is_array()) co_return Malformed("watch", o);
          for (const auto& e : events->as_array()) {
            if (!e.is_object()) co_return Malformed("watch", o);
            const auto& eo = e.as_object();
            WatchEvent ev;
            if (const auto* t = eo.if_contains("type");
                t != nullptr && t->is_string() && t->as_string() == "DELETE") {
              ev.type = WatchEvent::Type::kDelete;
            }
            const auto* kvv = eo.if_contains("kv");
            auto kv = kvv != nullptr ? ParseKv(*kvv) : std::nullopt;
            if (!kv) co_return Malformed("watch", o);
            ev.kv = std::move(*kv);
            if (!on_event(ev)) co_return Status::Ok();
          }
        }
        if (parser.is_done()) {
          co_return Status(Errc::kBrokerUnavailable, "watch stream ended by the server");
        }
      }
    };
    Status s;
#if DSB_ETCD_TLS
    if (conn->tls) {
      s = co_await run(*conn->tls);
    } else {
      s = co_await run(*conn->plain);
    }
#else
    s = co_await run(*conn->plain);
#endif
    conn->Close();
    if (st->cancel_epoch != epoch) co_return Cancelled();
    if (s.ok() || s.code() == Errc::kProtocol || s.code() == Errc::kConflict) co_return s;
    tried.push_back(ep.url + ": " + s.message());
    // Once etcd confirmed the watch, events may have been delivered: return,
    // so the caller resumes from the revision it has seen. Before that, the
    // next endpoint is tried.
    if (created) co_return Status(s.code(), "watch: " + Names(tried));
  }
  co_return Status(auth_failed ? Errc::kAuthFailed : Errc::kBrokerUnavailable,
                   "watch: no etcd endpoint answered: " + Names(tried));
}

void EtcdClient::Cancel() {
  auto& st = *impl_->st;
  ++st.cancel_epoch;
  for (auto& w : st.live) {
    if (auto c = w.lock()) c->Close();
  }
  st.live.clear();
  for (auto& pool : st.idle) pool.clear();
}

std::string EtcdClient::current_endpoint() const {
  return impl_->st->endpoints[impl_->st->current].url;
}

}  // namespace dsb::etcd
