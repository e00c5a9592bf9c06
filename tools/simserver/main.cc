// dsb-simserver: a TCP stand-in for Exchange's per-user session cap. See README.md.
//
// One io_context thread serves every connection (a coroutine per connection), so the session
// table needs no lock and every reply reflects a single, ordered view of the counts.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "tools/simserver/protocol.h"
#include "tools/simserver/session_table.h"
#include "dsb/version.h"

namespace dsb::sim {
namespace {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::ip::tcp;
using std::chrono::milliseconds;

constexpr std::size_t kMaxConnections = 4096;

struct Options {
  std::string listen = "127.0.0.1:0";
  std::string port_file;
  std::string stats_file;
  std::uint32_t limit = 32;
  std::int64_t linger_ms = 0;
  std::int64_t close_lag_ms = 0;  // a CLOSEd session stays counted this long
  std::vector<std::string> user_limits;  // USER=N
};

// Writes `text` to `path` so a reader sees either nothing or all of it (write + rename).
// Binary mode: the same bytes on Windows (no "\r\n"); std::filesystem::rename replaces an
// existing file there too (MoveFileExW with MOVEFILE_REPLACE_EXISTING; std::rename would fail).
bool WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc | std::ios::binary);
    if (!out) return false;
    out << text;
    out.flush();
    if (!out) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

// Splits "HOST:PORT"; false when malformed.
bool ParseHostPort(const std::string& text, std::string& host, std::uint16_t& port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string p = text.substr(colon + 1);
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  const unsigned long v = std::stoul(p);
  if (v > 65535) return false;
  port = static_cast<std::uint16_t>(v);
  return true;
}

// A co_spawn completion that logs an escaped exception instead of ending the process.
auto LogException(const char* what) {
  return [what](const std::exception_ptr& e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("{} ended by exception: {}", what, ex.what());
    }
  };
}

// The server. Thread rule: every member is used only on the io_context's single thread.
class SimServer {
 public:
  SimServer(asio::io_context& io, Options options)
      : io_(io), options_(std::move(options)), acceptor_(io), table_(options_.limit) {}

  // Binds and listens. On failure logs why and returns false.
  bool Listen() {
    std::string host;
    std::uint16_t port = 0;
    if (!ParseHostPort(options_.listen, host, port)) {
      spdlog::error("--listen {}: expected HOST:PORT", options_.listen);
      return false;
    }
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (ec) {
      spdlog::error("--listen {}: '{}' is not an IP address", options_.listen, host);
      return false;
    }
    const tcp::endpoint ep(address, port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      spdlog::error("cannot listen on {}: {}", options_.listen, ec.message());
      return false;
    }
    return true;
  }

  // Applies --user-limit overrides. False (after logging) on a malformed one.
  bool ApplyUserLimits() {
    for (const std::string& item : options_.user_limits) {
      const auto eq = item.rfind('=');
      const Request r =
          eq == std::string::npos
              ? Request{}
              : ParseRequest("LIMIT " + item.substr(0, eq) + " " + item.substr(eq + 1));
      if (r.verb != Verb::kLimit || !table_.SetLimit(r.user, r.limit, Clock::now())) {
        spdlog::error("--user-limit {}: expected USER=N with N in 0..{}", item,
                      SessionTable::kMaxLimit);
        return false;
      }
    }
    return true;
  }

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  // The stats file could not be written at shutdown (the run then exits 1).
  bool stats_failed() const { return stats_failed_; }

  void Start() { co_spawn(io_, Accept(), LogException("acceptor")); }

  // Writes the stats file (if configured) and stops the event loop.
  void Shutdown(const char* why) {
    spdlog::info("stopping ({})", why);
    const std::string json = table_.StatsJson(Clock::now());
    if (!options_.stats_file.empty()) {
      if (WriteFileAtomically(options_.stats_file, json + "\n")) {
        spdlog::info("stats written to {}", options_.stats_file);
      } else {
        spdlog::error("cannot write stats file {}", options_.stats_file);
        stats_failed_ = true;
      }
    }
    spdlog::info("final stats: {}", json);
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    io_.stop();
  }

 private:
  struct Connection {
    std::unordered_set<std::uint64_t> sessions;  // open sessions owned by this connection
  };

  asio::awaitable<void> Accept() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      if (ec) {
        spdlog::warn("accept failed: {}", ec.message());
        continue;
      }
      if (connections_ >= kMaxConnections) {
        co_spawn(io_, Refuse(std::move(socket)), LogException("refuse"));
        continue;
      }
      co_spawn(io_, Serve(std::move(socket)), LogException("connection"));
    }
  }

  asio::awaitable<void> Refuse(tcp::socket socket) {
    static constexpr std::string_view kReply = "ERR TOO_MANY_CONNECTIONS\n";
    co_await asio::async_write(socket, asio::buffer(kReply), as_tuple(asio::use_awaitable));
  }

  asio::awaitable<void> Serve(tcp::socket socket) {
    ++connections_;
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    Connection conn;
    std::string buffer;
    std::string reply;
    for (;;) {
      // +2: room for "\r\n" after a line of the maximum length.
      auto [ec, n] =
          co_await asio::async_read_until(socket, asio::dynamic_buffer(buffer, kMaxLineBytes + 2),
                                          '\n', as_tuple(asio::use_awaitable));
      if (ec == asio::error::not_found) {
        reply = "ERR BAD_REQUEST line too long (max " + std::to_string(kMaxLineBytes) +
                " bytes); closing\n";
        co_await asio::async_write(socket, asio::buffer(reply), as_tuple(asio::use_awaitable));
        co_await Drain(socket);
        break;
      }
      if (ec) break;  // EOF or reset: the client went away
      reply = Handle(std::string_view(buffer.data(), n - 1), conn);
      reply += '\n';
      buffer.erase(0, n);
      auto [wec, wn] =
          co_await asio::async_write(socket, asio::buffer(reply), as_tuple(asio::use_awaitable));
      if (wec) break;
    }
    socket.close(ignored);
    --connections_;
    Drop(std::move(conn));
  }

  // Half-closes and discards what the peer still sends (bounded in bytes and time) so that
  // closing does not reset the connection and destroy the error reply before it is read.
  asio::awaitable<void> Drain(tcp::socket& socket) {
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    asio::steady_timer deadline(io_, milliseconds(500));
    auto draining = std::make_shared<bool>(true);  // the handler may run after we return
    deadline.async_wait([&socket, draining](const boost::system::error_code& ec) {
      boost::system::error_code ignored2;
      if (!ec && *draining) socket.close(ignored2);
    });
    std::array<char, 4096> sink;
    for (std::size_t total = 0; total < 1024 * 1024;) {
      auto [ec, n] =
          co_await socket.async_read_some(asio::buffer(sink), as_tuple(asio::use_awaitable));
      if (ec) break;
      total += n;
    }
    *draining = false;
    deadline.cancel();
  }

  std::string Handle(std::string_view line, Connection& conn) {
    const Request r = ParseRequest(line);
    const Clock::time_point now = Clock::now();
    switch (r.verb) {
      case Verb::kOpen: {
        const SessionTable::OpenResult res = table_.Open(r.user, now);
        switch (res.outcome) {
          case SessionTable::OpenOutcome::kOk:
            conn.sessions.insert(res.session_id);
            return "OK " + std::to_string(res.session_id);
          case SessionTable::OpenOutcome::kSessionLimit:
            LogRefusal(r.user, res.limit, now);
            return SessionLimitReply(r.user, res.limit);
          case SessionTable::OpenOutcome::kTooManyUsers:
            return "ERR TOO_MANY_USERS max " + std::to_string(SessionTable::kMaxUsers);
        }
        return "ERR INTERNAL";
      }
      case Verb::kClose:
        // Only the connection that opened a session may close it (as with a real MAPI session).
        if (conn.sessions.erase(r.session_id) == 0) {
          return "ERR UNKNOWN_SESSION " + std::to_string(r.session_id);
        }
        if (options_.close_lag_ms > 0) {
          // Exchange ends a session asynchronously: the client has its OK,
          // the server still counts the session for a while.
          co_spawn(io_, CloseLater(r.session_id), LogException("close lag"));
          return "OK";
        }
        if (!table_.Close(r.session_id, now)) {
          return "ERR UNKNOWN_SESSION " + std::to_string(r.session_id);
        }
        return "OK";
      case Verb::kStats:
        return table_.StatsJson(now);
      case Verb::kStatsReset:
        table_.ResetWindow(now);
        return "OK";
      case Verb::kLimit:
        if (!table_.SetLimit(r.user, r.limit, now)) {
          return "ERR TOO_MANY_USERS max " + std::to_string(SessionTable::kMaxUsers);
        }
        spdlog::info("limit of user {} set to {}", r.user, r.limit);
        return "OK";
      case Verb::kPing:
        return "PONG";
      case Verb::kBad:
        break;
    }
    return "ERR BAD_REQUEST " + r.error;
  }

  // A connection ended: sessions it did not CLOSE stay counted for --linger-ms, as Exchange keeps
  // a dead client's sessions until its keepalive gives up.
  void Drop(Connection conn) {
    if (conn.sessions.empty()) return;
    if (options_.linger_ms <= 0) {
      for (std::uint64_t id : conn.sessions) table_.Close(id, Clock::now());
      return;
    }
    spdlog::info("connection dropped holding {} session(s); they linger for {} ms",
                 conn.sessions.size(), options_.linger_ms);
    co_spawn(io_, Linger(std::move(conn.sessions)), LogException("linger"));
  }

  asio::awaitable<void> CloseLater(std::uint64_t id) {
    asio::steady_timer timer(io_, milliseconds(options_.close_lag_ms));
    co_await timer.async_wait(as_tuple(asio::use_awaitable));
    table_.Close(id, Clock::now());
  }

  asio::awaitable<void> Linger(std::unordered_set<std::uint64_t> sessions) {
    asio::steady_timer timer(io_, milliseconds(options_.linger_ms));
    co_await timer.async_wait(as_tuple(asio::use_awaitable));
    for (std::uint64_t id : sessions) table_.Close(id, Clock::now());
    spdlog::info("{} lingering session(s) released", sessions.size());
  }

  // Logs a refusal the way Exchange logs event 9646, at most once a second (with a count of the
  // ones left out) so a refusal storm cannot flood the log.
  void LogRefusal(const std::string& user, std::uint32_t limit, Clock::time_point now) {
    if (now - last_refusal_log_ < std::chrono::seconds(1)) {
      ++suppressed_refusal_logs_;
      return;
    }
    spdlog::warn(
        "event 9646: Mapi session for user \"{}\" exceeded the maximum of {} objects of type "
        "\"session\" (MAPI_E_SESSION_LIMIT, ec=1246); {} similar refusal(s) not logged",
        user, limit, suppressed_refusal_logs_);
    suppressed_refusal_logs_ = 0;
    last_refusal_log_ = now;
  }

  asio::io_context& io_;
  Options options_;
  tcp::acceptor acceptor_;
  SessionTable table_;
  std::size_t connections_ = 0;
  Clock::time_point last_refusal_log_{};
  std::uint64_t suppressed_refusal_logs_ = 0;
  bool stats_failed_ = false;
};

int Run(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("simserver"));
  Options o;
  CLI::App app{"dsb-simserver: a stand-in for Exchange's per-user session cap"};
  app.set_version_flag("--version", std::string("dsb-simserver ") + DSB_VERSION_STRING);
  app.add_option("--listen", o.listen, "HOST:PORT to listen on (port 0 picks one)")
      ->capture_default_str();
  app.add_option("--port-file", o.port_file, "write HOST:PORT here once listening");
  app.add_option("--stats-file", o.stats_file, "write the statistics JSON here on SIGTERM/SIGINT");
  app.add_option("--limit", o.limit, "sessions per user (Maximum Allowed Sessions Per User)")
      ->capture_default_str()
      ->check(CLI::Range(0u, SessionTable::kMaxLimit));
  app.add_option("--linger-ms", o.linger_ms,
                 "how long sessions of a dropped connection stay counted")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{86'400'000}));
  app.add_option("--close-lag-ms", o.close_lag_ms,
                 "how long a session stays counted after CLOSE replied OK")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{86'400'000}));
  app.add_option("--user-limit", o.user_limits, "USER=N: per-user cap override (repeatable)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help/--version: 0; a usage error: 2
  }

  asio::io_context io(1);
  SimServer server(io, o);
  if (!server.ApplyUserLimits() || !server.Listen()) return 2;

  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (!ec) server.Shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  server.Start();

  const tcp::endpoint ep = server.local_endpoint();
  const std::string where = ep.address().to_string() + ":" + std::to_string(ep.port());
  std::printf("listening %s\n", where.c_str());
  std::fflush(stdout);
  if (!o.port_file.empty() && !WriteFileAtomically(o.port_file, where + "\n")) {
    spdlog::error("cannot write port file {}", o.port_file);
    return 2;
  }
  spdlog::info("listening on {} (limit {}, linger {} ms, close lag {} ms)", where, o.limit,
               o.linger_ms, o.close_lag_ms);
  io.run();
  return server.stats_failed() ? 1 : 0;
}

}  // namespace
}  // namespace dsb::sim

int main(int argc, char** argv) { return dsb::sim::Run(argc, argv); }
