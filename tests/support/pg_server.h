// PgServer: a real PostgreSQL 15 server for tests, started in a temporary folder and judged by
// its own log and pg_stat_activity (never by dsb's counters).
//
// As root, the folder (mktemp -d /tmp/dsb-pg.XXXXXX) is given to the `postgres` user and
// initdb/pg_ctl run through `runuser -u postgres` (they refuse to run as root); as another user
// they run as that user. Trust authentication for local and loopback connections; a port held
// for it until it listens (PortReservation); the Unix socket inside the folder; fsync off. The destructor stops the
// server (pg_ctl stop -m fast) and removes the folder (DSB_KEEP_SCRATCH=1 keeps it). If the
// test process dies first (a crash, a CTest timeout's SIGKILL), a watchdog child of its own
// session, waiting on a pipe, stops the server (immediate) and removes the folder.
//
// Role `digiscope` (LOGIN, CONNECTION LIMIT n) is what dsb-load connects as; the superuser
// `postgres` (exempt from role limits) is used for administration and sampling.
//
// Thread rule: one thread at a time per PgServer; PgSampler runs its own thread.
#ifndef DSB_TESTS_SUPPORT_PG_SERVER_H_
#define DSB_TESTS_SUPPORT_PG_SERVER_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"

namespace dsb::testing {

// "" when a PostgreSQL 15 server can be started here; else why not (the package is missing,
// or running as root without a `postgres` user). Tests GTEST_SKIP with this sentence.
std::string PostgresUnavailableReason();

class PgServer {
 public:
  struct Options {
    int role_limit = 12;                // CONNECTION LIMIT of role `digiscope`
    int max_connections = 200;          // well above the role limit: 53300 then means the role cap
    std::vector<std::string> settings;  // extra "-c name=value" settings, e.g.
                                        // "client_connection_check_interval=250ms"
  };

  PgServer() = default;
  ~PgServer();
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

  // initdb, start, create role `digiscope`. False with `error` (naming the step, with the tail
  // of its output) on any failure; whatever was started is stopped again.
  // REQUIRES: PostgresUnavailableReason() is empty; not started yet.
  bool Start(const Options& options, std::string& error);

  // ALTER ROLE digiscope CONNECTION LIMIT n (takes effect for new logins at once).
  bool SetRoleLimit(int n, std::string& error);

  // Runs `sql` as the superuser over a fresh connection; `value` gets the first cell of the
  // first row ("" when none). False with `error` on failure.
  bool Query(const std::string& sql, std::string& value, std::string& error) const;

  // Sessions of role `digiscope` the server counts now (client backends in pg_stat_activity);
  // -1 when the query failed.
  int RoleSessions() const;

  // The server's own refusals so far: log lines "too many connections for role".
  std::uint64_t RoleRefusals() const;
  // The whole server log (for failure messages).
  std::string Log() const;

  // Stops the server (fast) and removes the folder. Idempotent.
  void Stop();

  int port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_; }
  // postgresql://digiscope@127.0.0.1:PORT/postgres (what dsb-load takes).
  std::string RoleUrl() const;
  // libpq conninfo of the superuser over the Unix socket.
  std::string SuperuserConninfo() const;
  // Shell command that prints the role's cap (for a limit_command test).
  std::string RoleLimitCommand() const;

 private:
  bool RunTool(const std::vector<std::string>& argv, const std::filesystem::path& out,
               std::string& error) const;
  void StartWatchdog();
  void StopWatchdog();

  std::filesystem::path dir_;
  std::filesystem::path data_;
  std::filesystem::path log_;
  int port_ = 0;
  bool started_ = false;
  bool as_root_ = false;
  Process watchdog_;      // our child; killed by PID in Stop
  int watchdog_fd_ = -1;  // write end of its pipe (close-on-exec)
};

// Samples how many sessions role `digiscope` holds, every `interval`, over one persistent
// superuser connection, on its own thread. Start() then Stop(); Stop() returns the figures.
class PgSampler {
 public:
  struct Stats {
    std::uint64_t samples = 0;
    std::uint64_t failures = 0;  // queries that failed (not counted in the figures)
    int peak = 0;
    double mean = 0;
  };

  explicit PgSampler(const PgServer& server,
                     std::chrono::microseconds interval = std::chrono::milliseconds(2));
  ~PgSampler();
  PgSampler(const PgSampler&) = delete;
  PgSampler& operator=(const PgSampler&) = delete;

  // Connects and starts sampling. False with `error` when the connection fails.
  bool Start(std::string& error);
  // Stops (joins the thread) and returns the figures since Start. Idempotent.
  Stats Stop();

 private:
  void Run(void* conn);
  std::string conninfo_;
  std::chrono::microseconds interval_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  Stats stats_;
  double sum_ = 0;
};

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_PG_SERVER_H_
