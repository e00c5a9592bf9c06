#include "tests/support/pg_server.h"

#include "tests/support/ports.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace dsb::testing {
namespace {

namespace fs = std::filesystem;

// Debian's PostgreSQL 15 server binaries (not on PATH). DSB_PG_BINDIR overrides.
fs::path BinDir() {
  const char* env = std::getenv("DSB_PG_BINDIR");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path("/usr/lib/postgresql/15/bin");
}

std::string Tail(const fs::path& file, std::size_t bytes = 2000) {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > bytes ? "..." + s.substr(s.size() - bytes) : s;
}

// runuser(1) from util-linux; "" when missing.
std::string RunuserPath() {
  for (const char* p : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::string PostgresUnavailableReason() {
  const fs::path bin = BinDir();
  for (const char* tool : {"initdb", "pg_ctl", "postgres"}) {
    if (::access((bin / tool).c_str(), X_OK) != 0) {
      return "PostgreSQL 15 server not installed (" + (bin / tool).string() +
             " missing): install the Debian package `postgresql` (tools/run test does)";
    }
  }
  if (::geteuid() == 0) {
    if (::getpwnam("postgres") == nullptr) {
      return "running as root and there is no `postgres` user to run the server as "
             "(the Debian package `postgresql` creates it)";
    }
    if (RunuserPath().empty()) {
      return "running as root and runuser(1) is missing (util-linux)";
    }
  }
  return "";
}

PgServer::~PgServer() { Stop(); }

bool PgServer::RunTool(const std::vector<std::string>& argv, const fs::path& out,
                       std::string& error) const {
  std::vector<std::string> full;
  if (as_root_) full = {RunuserPath(), "-u", "postgres", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  SpawnOptions options;
  options.output = Output::kFiles;
  options.stdout_file = out;
  options.stderr_file = out;
  options.append = true;
  // pg_ctl -w -t 60 bounds itself; the extra minute only catches a hung tool.
  const Outcome o = RunProgram(full, std::chrono::minutes(2), options);
  if (o.exit_code == 0) return true;
  error = fs::path(argv[0]).filename().string() + " failed (exit " + std::to_string(o.exit_code) +
          (o.timed_out ? ", timed out" : "") + "): " + o.output + Tail(out);
  return false;
}

bool PgServer::Start(const Options& options, std::string& error) {
  as_root_ = ::geteuid() == 0;
  std::string tmpl = "/tmp/dsb-pg.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    error = "mkdtemp /tmp/dsb-pg.XXXXXX failed";
    return false;
  }
  dir_ = tmpl;
  data_ = dir_ / "data";
  log_ = dir_ / "server.log";
  if (as_root_) {
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr || ::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      error = "cannot give " + dir_.string() + " to the postgres user";
      Stop();
      return false;
    }
  }
  const fs::path bin = BinDir();
  if (!RunTool({(bin / "initdb").string(), "-D", data_.string(), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"},
               dir_ / "initdb.log", error)) {
    Stop();
    return false;
  }
  std::string settings = " -c max_connections=" + std::to_string(options.max_connections) +
                         " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                         " -c log_connections=off -c log_disconnections=off";
  for (const std::string& s : options.settings) settings += " -c " + s;
  // The port stays reserved until pg_ctl -w returns (the server listens then; PostgreSQL sets
  // SO_REUSEADDR, so it can bind it meanwhile). Retried in case something outside the tests
  // took that very port.
  for (int attempt = 0; attempt < 3 && !started_; ++attempt) {
    PortReservation reserved;
    port_ = reserved.port();
    if (!reserved.ok()) {
      error = reserved.error();
      continue;
    }
    const std::string opts =
        "-p " + std::to_string(port_) + " -k " + dir_.string() + " -h 127.0.0.1" + settings;
    started_ = RunTool({(bin / "pg_ctl").string(), "-D", data_.string(), "-l", log_.string(), "-w",
                        "-t", "60", "-o", opts, "start"},
                       dir_ / "pg_ctl.log", error);
  }
  if (!started_) {
    error += "\nserver log: " + Tail(log_);
    Stop();
    return false;
  }
  StartWatchdog();
  std::string ignored;
  if (!Query("CREATE ROLE digiscope LOGIN CONNECTION LIMIT " + std::to_string(options.role_limit),
             ignored, error)) {
    error = "CREATE ROLE digiscope: " + error;
    Stop();
    return false;
  }
  return true;
}

void PgServer::StartWatchdog() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;
  const std::string stop = (as_root_ ? RunuserPath() + " -u postgres -- " : std::string()) +
                           (BinDir() / "pg_ctl").string() + " -D '" + data_.string() +
                           "' -m immediate -w stop";
  // Runs only when the pipe reaches EOF without Stop() having killed it first: the test
  // process is gone. So it must not die with the test, and leads a session of its own to
  // outlive a kill of the test's process group.
  const std::string script = "read -r _; " + stop + "; rm -rf '" + dir_.string() + "'";
  SpawnOptions options;
  options.output = Output::kNull;
  options.stdin_fd = fds[0];
  options.die_with_parent = false;
  options.new_session = true;
  const bool started = watchdog_.Start({"/bin/sh", "-c", script}, options);
  ::close(fds[0]);
  if (!started) {
    ::close(fds[1]);
    return;
  }
  watchdog_fd_ = fds[1];
}

void PgServer::StopWatchdog() {
  watchdog_.Kill();
  if (watchdog_fd_ >= 0) ::close(watchdog_fd_);
  watchdog_fd_ = -1;
}

void PgServer::Stop() {
  StopWatchdog();
  if (started_) {
    std::string error;
    RunTool({(BinDir() / "pg_ctl").string(), "-D", data_.string(), "-m", "fast", "-w", "-t", "60",
             "stop"},
            dir_ / "pg_ctl.log", error);
    started_ = false;
  }
  if (!dir_.empty() && std::getenv("DSB_KEEP_SCRATCH") == nullptr) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  dir_.clear();
}

bool PgServer::SetRoleLimit(int n, std::string& error) {
  std::string ignored;
  return Query("ALTER ROLE digiscope CONNECTION LIMIT " + std::to_string(n), ignored, error);
}

bool PgServer::Query(const std::string& sql, std::string& value, std::string& error) const {
  PGconn* conn = PQconnectdb(SuperuserConninfo().c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    error = Trim(PQerrorMessage(conn));
    PQfinish(conn);
    return false;
  }
  PGresult* res = PQexec(conn, sql.c_str());
  const ExecStatusType st = PQresultStatus(res);
  const bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
  if (!ok) {
    error = sql + ": " + Trim(PQresultErrorMessage(res));
  } else {
    value = st == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) > 0
                ? PQgetvalue(res, 0, 0)
                : "";
  }
  PQclear(res);
  PQfinish(conn);
  return ok;
}

int PgServer::RoleSessions() const {
  std::string value, error;
  if (!Query("select count(*) from pg_stat_activity where usename = 'digiscope' and "
             "backend_type = 'client backend'",
             value, error)) {
    return -1;
  }
  return std::atoi(value.c_str());
}

std::uint64_t PgServer::RoleRefusals() const {
  std::ifstream in(log_);
  std::string line;
  std::uint64_t n = 0;
  while (std::getline(in, line)) {
    if (line.find("too many connections for role") != std::string::npos) ++n;
  }
  return n;
}

std::string PgServer::Log() const { return Tail(log_, 8000); }

std::string PgServer::RoleUrl() const {
  return "postgresql://digiscope@127.0.0.1:" + std::to_string(port_) + "/postgres";
}

std::string PgServer::SuperuserConninfo() const {
  return "host=" + dir_.string() + " port=" + std::to_string(port_) +
         " user=postgres dbname=postgres application_name=dsb-test";
}

std::string PgServer::RoleLimitCommand() const {
  return (BinDir() / "psql").string() + " -h " + dir_.string() + " -p " + std::to_string(port_) +
         " -U postgres -d postgres -Atc \"select rolconnlimit from pg_roles where rolname = "
         "'digiscope'\"";
}

PgSampler::PgSampler(const PgServer& server, std::chrono::microseconds interval)
    : conninfo_(server.SuperuserConninfo()), interval_(interval) {}

PgSampler::~PgSampler() { Stop(); }

bool PgSampler::Start(std::string& error) {
  PGconn* conn = PQconnectdb(conninfo_.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    error = Trim(PQerrorMessage(conn));
    PQfinish(conn);
    return false;
  }
  stop_ = false;
  stats_ = {};
  sum_ = 0;
  thread_ = std::thread([this, conn] { Run(conn); });
  return true;
}

void PgSampler::Run(void* raw) {
  auto* conn = static_cast<PGconn*>(raw);
  // A prepared statement keeps each sample to one round trip with no parse.
  PGresult* prep = PQprepare(conn, "sample",
                             "select count(*) from pg_stat_activity where usename = "
                             "'digiscope' and backend_type = 'client backend'",
                             0, nullptr);
  PQclear(prep);
  auto next = std::chrono::steady_clock::now();
  while (!stop_.load()) {
    PGresult* res = PQexecPrepared(conn, "sample", 0, nullptr, nullptr, nullptr, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
      const int n = std::atoi(PQgetvalue(res, 0, 0));
      ++stats_.samples;
      sum_ += n;
      stats_.peak = std::max(stats_.peak, n);
    } else {
      ++stats_.failures;
    }
    PQclear(res);
    next += interval_;
    const auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;  // a slow sample: do not burst to catch up
    std::this_thread::sleep_until(next);
  }
  PQfinish(conn);
}

PgSampler::Stats PgSampler::Stop() {
  if (thread_.joinable()) {
    stop_ = true;
    thread_.join();
    stats_.mean = stats_.samples > 0 ? sum_ / static_cast<double>(stats_.samples) : 0;
  }
  return stats_;
}

}  // namespace dsb::testing
