// PgSession: one PostgreSQL connection as dsb-load's action threads use it (libpq, blocking
// with deadlines). A session is opened per action, runs one statement and is closed.
//
// Why a confirmed close: PostgreSQL counts a backend against the role's CONNECTION LIMIT until
// the backend leaves the shared process array. After PQfinish the backend still counts for a
// few milliseconds, so a limiter that hands the slot to the next thread at once gets refusals
// (SQLSTATE 53300) at held <= cap. A backend removes itself from the process array (a
// shared-memory exit callback) before its client socket is closed (a process-exit callback), so
// "the server closed its end" proves the server stopped counting the session. CloseConfirmed
// sends the Terminate message itself and waits for that EOF.
//
// Thread rule: one thread at a time per PgSession.
#ifndef DSB_TOOLS_LOAD_PG_CLIENT_H_
#define DSB_TOOLS_LOAD_PG_CLIENT_H_

#include <chrono>
#include <string>
#include <string_view>

struct pg_conn;

namespace dsb::load {

// "postgresql://USER@HOST:PORT/DB" (also "postgres://"). The user and the database are
// required; the port defaults to 5432. Fills `user`, `host`, `port`, `dbname`.
struct PgUrl {
  std::string user;
  std::string host;
  int port = 5432;
  std::string dbname;
};
// True and `out` filled when `text` is such a URL; false with `why` naming the bad part.
bool ParsePgUrl(std::string_view text, PgUrl& out, std::string& why);
// True when `text` starts with postgresql:// or postgres:// (then it must parse).
bool LooksLikePgUrl(std::string_view text);
// False when this build has no libpq (the Windows build): PgSession then opens nothing and
// callers refuse a postgresql:// server up front. URL parsing works either way (pg_url.cc).
bool PgAvailable();

enum class PgOutcome {
  kOk,
  kRefused,  // 53300 "too many connections for role": the server's per-user cap
  kError,    // anything else; `sqlstate` says what when the server sent one
};

// The SQLSTATE in a libpq message made with PQERRORS_VERBOSE ("...FATAL:  53300: text"), or
// "" when there is none (a libpq-side failure: refused TCP connect, timeout).
std::string SqlStateOf(std::string_view message);

class PgSession {
 public:
  PgSession() = default;
  ~PgSession() { ClosePlain(); }
  PgSession(const PgSession&) = delete;
  PgSession& operator=(const PgSession&) = delete;

  // Opens a connection (PQconnectStartParams, then PQconnectPoll, each wait bounded by
  // `timeout` in all). Error verbosity is set to PQERRORS_VERBOSE between the start and the
  // poll loop so a refusal's message carries its SQLSTATE and its text (PQERRORS_SQLSTATE
  // would drop the text, and 53300 alone does not tell the role cap from max_connections).
  // kOk: connected. kRefused: the role's connection limit (53300 + "too many connections for
  // role"). kError: anything else. On failure `message` holds libpq's message and `sqlstate`
  // its SQLSTATE ("" if none), and nothing stays open. A refused backend, too, counts against
  // the role until it exits (after it sent the refusal): on failure Connect waits (within
  // `timeout`) for the server to close the connection and sets `server_closed` when it did —
  // only then may the slot be handed on at once.
  PgOutcome Connect(const PgUrl& url, std::chrono::milliseconds timeout, std::string& message,
                    std::string& sqlstate, bool& server_closed);

  // Runs `sql` and waits for its end, at most `timeout`. False (with `message`) when it failed
  // or timed out; the connection is then dropped (closed plainly).
  bool Exec(const std::string& sql, std::chrono::milliseconds timeout, std::string& message);

  // Sends Terminate ('X', length 4) on the connection's socket, reads until the server closes
  // its end (EOF or a reset), then PQfinish. True when the EOF was seen within `timeout`; false
  // (the connection is still freed) when the send failed or the server did not close in time —
  // the caller cannot know whether the server still counts the session.
  bool CloseConfirmed(std::chrono::milliseconds timeout);

  // PQfinish: libpq sends Terminate and closes at once, without waiting for the server.
  // Idempotent.
  void ClosePlain() noexcept;

  bool connected() const { return conn_ != nullptr; }

 private:
  pg_conn* conn_ = nullptr;
};

}  // namespace dsb::load

#endif  // DSB_TOOLS_LOAD_PG_CLIENT_H_
