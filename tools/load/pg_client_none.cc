// PgSession without libpq (the Windows build: Debian ships no mingw libpq). Every connect
// fails with a message saying so; dsb-load refuses a postgresql:// --server before it starts
// (PgAvailable() is false), so these are reached only by a caller that did not ask.
#include "tools/load/pg_client.h"

namespace dsb::load {

bool PgAvailable() { return false; }

PgOutcome PgSession::Connect(const PgUrl&, std::chrono::milliseconds, std::string& message,
                             std::string& sqlstate, bool& server_closed) {
  message = "this build has no PostgreSQL client library (libpq)";
  sqlstate.clear();
  server_closed = true;  // nothing was opened on any server
  return PgOutcome::kError;
}

bool PgSession::Exec(const std::string&, std::chrono::milliseconds, std::string& message) {
  message = "this build has no PostgreSQL client library (libpq)";
  return false;
}

bool PgSession::CloseConfirmed(std::chrono::milliseconds) { return false; }

void PgSession::ClosePlain() noexcept {}

}  // namespace dsb::load
