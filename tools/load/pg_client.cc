#include "tools/load/pg_client.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>

namespace dsb::load {
namespace {

using Clock = std::chrono::steady_clock;

// Milliseconds left until `deadline`, clamped to [0, INT_MAX] for poll().
int MsLeft(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000'000));
}

// Waits until `fd` is readable (or writable), at most until `deadline`. False on timeout.
bool WaitFd(int fd, bool for_write, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, static_cast<short>(for_write ? POLLOUT : POLLIN), 0};
    const int n = ::poll(&p, 1, MsLeft(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

std::string Trimmed(const char* text) {
  std::string s = text != nullptr ? text : "";
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

// Reads (and discards) until the peer closes `fd`, at most until `deadline`. EOF, or a reset
// (the server closed with unread data), means the backend has left the process array.
bool AwaitEof(int fd, Clock::time_point deadline) {
  char sink[256];
  for (;;) {
    if (!WaitFd(fd, false, deadline)) return false;
    const ssize_t n = ::recv(fd, sink, sizeof(sink), 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) return false;
  }
}

}  // namespace

bool PgAvailable() { return true; }

PgOutcome PgSession::Connect(const PgUrl& url, std::chrono::milliseconds timeout,
                             std::string& message, std::string& sqlstate, bool& server_closed) {
  ClosePlain();
  const Clock::time_point deadline = Clock::now() + timeout;
  const std::string port = std::to_string(url.port);
  // No SSL or GSS negotiation: each would cost a round trip per connect on loopback.
  const char* keys[] = {"host",    "port",       "user", "dbname", "application_name",
                        "sslmode", "gssencmode", nullptr};
  const char* values[] = {url.host.c_str(), port.c_str(), url.user.c_str(), url.dbname.c_str(),
                          "dsb-load",       "disable",    "disable",        nullptr};
  PGconn* conn = PQconnectStartParams(keys, values, 0);
  server_closed = false;
  auto fail = [&](PGconn* c, const std::string& why) {
    message = c != nullptr && why.empty() ? Trimmed(PQerrorMessage(c)) : why;
    sqlstate = SqlStateOf(message);
    // A refused backend still counts against the role until it exits, after it sent the
    // refusal: wait for its EOF too, when libpq still has the socket.
    if (c != nullptr && PQsocket(c) >= 0) server_closed = AwaitEof(PQsocket(c), deadline);
    if (c != nullptr) PQfinish(c);
    const bool role_cap =
        sqlstate == "53300" && message.find("too many connections for role") != std::string::npos;
    return role_cap ? PgOutcome::kRefused : PgOutcome::kError;
  };
  if (conn == nullptr) return fail(nullptr, "libpq: out of memory");
  if (PQstatus(conn) == CONNECTION_BAD) return fail(conn, "");
  PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  for (;;) {
    if (st == PGRES_POLLING_OK) break;
    if (st == PGRES_POLLING_FAILED) return fail(conn, "");
    if (!WaitFd(PQsocket(conn), st == PGRES_POLLING_WRITING, deadline)) {
      return fail(conn, "timed out connecting to " + url.host + ":" + port);
    }
    st = PQconnectPoll(conn);
  }
  conn_ = conn;
  return PgOutcome::kOk;
}

bool PgSession::Exec(const std::string& sql, std::chrono::milliseconds timeout,
                     std::string& message) {
  if (conn_ == nullptr) {
    message = "not connected";
    return false;
  }
  const Clock::time_point deadline = Clock::now() + timeout;
  auto fail = [&](const std::string& why) {
    message = why.empty() ? Trimmed(PQerrorMessage(conn_)) : why;
    ClosePlain();
    return false;
  };
  if (PQsendQuery(conn_, sql.c_str()) == 0) return fail("");
  bool ok = true;
  for (;;) {
    while (PQisBusy(conn_) != 0) {
      if (!WaitFd(PQsocket(conn_), false, deadline)) return fail("statement timed out");
      if (PQconsumeInput(conn_) == 0) return fail("");
    }
    PGresult* res = PQgetResult(conn_);
    if (res == nullptr) break;  // every result of the statement has been read
    const ExecStatusType status = PQresultStatus(res);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      message = Trimmed(PQresultErrorMessage(res));
      ok = false;
    }
    PQclear(res);
  }
  return ok;
}

bool PgSession::CloseConfirmed(std::chrono::milliseconds timeout) {
  if (conn_ == nullptr) return true;
  const Clock::time_point deadline = Clock::now() + timeout;
  const int fd = PQsocket(conn_);
  // The Terminate message: type 'X', then its length (4, the length field itself), big-endian.
  static constexpr char kTerminate[5] = {'X', 0, 0, 0, 4};
  bool confirmed = false;
  if (fd >= 0 && ::send(fd, kTerminate, sizeof(kTerminate), MSG_NOSIGNAL) ==
                     static_cast<ssize_t>(sizeof(kTerminate))) {
    confirmed = AwaitEof(fd, deadline);
  }
  ClosePlain();  // frees libpq's state; its own Terminate goes nowhere (MSG_NOSIGNAL in libpq)
  return confirmed;
}

void PgSession::ClosePlain() noexcept {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

}  // namespace dsb::load
