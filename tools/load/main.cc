// dsb-load: a load generator that behaves like DigiScope. See README.md.
//
// The parent parses flags, blocks SIGTERM/SIGINT, and forks one child per instance before any
// thread exists. Each child is one DigiScope process (its own broker registration, killable
// alone) and reports JSON lines through a pipe; the parent aggregates them and prints one JSON
// summary as the last line of stdout.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tools/load/histogram.h"
#include "tools/load/instance.h"
#include "tools/load/line_client.h"
#include "dsb/version.h"
#include "tools/load/pg_client.h"

namespace dsb::load {
namespace {

using Clock = std::chrono::steady_clock;

struct Child {
  pid_t pid = -1;
  int fd = -1;  // read end of the report pipe; -1 after EOF
  std::string buffer;
  std::uint64_t progress_actions = 0;
  std::uint64_t progress_refusals = 0;
  std::optional<boost::json::object> result;
  bool exited = false;
  int status = 0;
};

std::uint64_t U64(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return 0;
  boost::system::error_code ec;
  const auto n = v->to_number<std::uint64_t>(ec);
  return ec ? 0 : n;
}

// Consumes complete lines from a child's buffer.
void TakeLines(Child& c, std::map<std::string, std::uint64_t>& errors) {
  for (;;) {
    const auto nl = c.buffer.find('\n');
    if (nl == std::string::npos) return;
    const std::string line = c.buffer.substr(0, nl);
    c.buffer.erase(0, nl + 1);
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(line, ec);
    if (ec || !v.is_object()) {
      ++errors["bad_report"];
      continue;
    }
    auto& o = v.as_object();
    const auto* type = o.if_contains("type");
    if (type != nullptr && type->is_string() && type->as_string() == "progress") {
      c.progress_actions = U64(o, "actions");
      c.progress_refusals = U64(o, "refusals");
    } else if (type != nullptr && type->is_string() && type->as_string() == "result") {
      c.result = std::move(o);
    } else {
      ++errors["bad_report"];
    }
  }
}

void KillAll(std::vector<Child>& children, int sig) {
  for (Child& c : children) {
    if (c.pid > 0 && !c.exited) ::kill(c.pid, sig);
  }
}

double Ms(std::chrono::microseconds us) { return static_cast<double>(us.count()) / 1000.0; }

// CLI11's ranges let NaN through (every comparison with it is false) and
// "inf" parses: a number of seconds or milliseconds must be finite. The
// message names the value; CLI11 prefixes the option's name.
const CLI::Validator kFinite(
    [](std::string& text) -> std::string {
      double v = 0;
      if (!CLI::detail::lexical_cast(text, v)) return "'" + text + "' is not a number";
      if (!std::isfinite(v)) return "must be a finite number, got '" + text + "'";
      return std::string();
    },
    "FINITE");

int Run(int argc, char** argv) {
  LoadOptions o;
  CLI::App app{"dsb-load: behaves like DigiScope (instances x action threads holding sessions)"};
  app.set_version_flag("--version", std::string("dsb-load ") + DSB_VERSION_STRING);
  app.add_option("--instances", o.instances, "DigiScope processes")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--threads", o.threads, "action threads per instance")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--duration", o.duration_s, "seconds to run")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--server", o.server, "dsb-simserver HOST:PORT, or postgresql://USER@HOST:PORT/DB")
      ->required();
  app.add_option("--close", o.close_mode,
                 "PostgreSQL: confirmed (wait for the server's EOF before the release) or plain")
      ->capture_default_str()
      ->check(CLI::IsMember({"confirmed", "plain"}));
  app.add_flag("--report-refusals", o.report_refusals,
               "broker mode: report every refusal to the broker (limit discovery)");
  app.add_option("--user", o.user, "account the sessions count against")->capture_default_str();
  app.add_flag("--no-broker", o.no_broker, "open sessions directly (DigiScope without dsb)");
  app.add_option("--socket", o.socket_path, "broker socket (broker mode)");
  app.add_option("--target", o.target, "broker target (broker mode)");
  app.add_option("--hold-dist", o.hold_dist, "uniform or exp")
      ->capture_default_str()
      ->check(CLI::IsMember({"uniform", "exp"}));
  app.add_option("--hold-ms-min", o.hold_ms_min, "uniform hold: minimum ms")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--hold-ms-max", o.hold_ms_max, "uniform hold: maximum ms")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--hold-ms-mean", o.hold_ms_mean, "exp hold: mean ms")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--think-ms", o.think_ms, "pause between actions")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--acquire-timeout-ms", o.acquire_timeout_ms, "broker Acquire() timeout")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{600'000}));
  app.add_option("--backoff-ms-min", o.backoff_ms_min, "back-off after a refusal: minimum ms")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--backoff-ms-max", o.backoff_ms_max, "back-off after a refusal: maximum ms")
      ->capture_default_str()
      ->check(kFinite)
      ->check(CLI::NonNegativeNumber);
  app.add_option("--io-timeout-ms", o.io_timeout_ms, "bound on each server round trip")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{600'000}));
  auto* seed_opt = app.add_option("--seed", o.seed, "random seed (printed when not given)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help/--version: 0; a usage error: 2
  }
  if (LooksLikePgUrl(o.server)) {
    PgUrl url;
    std::string why;
    if (!ParsePgUrl(o.server, url, why)) {
      std::fprintf(stderr, "dsb-load: --server %s\n", why.c_str());
      return 2;
    }
    o.postgres = true;
    o.user = url.user;
  }
  if (!o.postgres) {
    // A bad address is the caller's mistake: say so now, not as connect
    // errors counted after the run.
    std::string host;
    std::uint16_t port = 0;
    if (!SplitHostPort(o.server, host, port) || port == 0) {
      std::fprintf(stderr,
                   "dsb-load: --server '%s' is not HOST:PORT with a port between 1 and 65535 "
                   "(or a postgresql:// URL)\n",
                   o.server.c_str());
      return 2;
    }
  }
  if (o.hold_ms_max < o.hold_ms_min) {
    std::fprintf(stderr, "dsb-load: --hold-ms-max must be >= --hold-ms-min\n");
    return 2;
  }
  if (o.backoff_ms_max < o.backoff_ms_min) {
    std::fprintf(stderr, "dsb-load: --backoff-ms-max must be >= --backoff-ms-min\n");
    return 2;
  }
  if (!o.no_broker) {
#ifdef DSB_LOAD_NO_CLIENT
    std::fprintf(stderr,
                 "dsb-load: built without dsb::client; only --no-broker mode is available\n");
    return 2;
#else
    if (o.socket_path.empty() || o.target.empty()) {
      std::fprintf(stderr, "dsb-load: broker mode needs --socket and --target (or --no-broker)\n");
      return 2;
    }
#endif
  }
  if (seed_opt->count() == 0) o.seed = std::random_device{}();
  std::fprintf(
      stderr, "dsb-load: seed %llu, %d instance(s) x %d thread(s), %.3g s, mode %s, server %s%s\n",
      static_cast<unsigned long long>(o.seed), o.instances, o.threads, o.duration_s,
      o.no_broker ? "no-broker" : "broker", o.postgres ? "postgresql" : "simserver",
      o.postgres ? (o.close_mode == "confirmed" ? " (confirmed close)" : " (plain close)") : "");
  std::fflush(stderr);
  std::fflush(stdout);

  // Signals are blocked before the fork so children inherit the mask (they take them with
  // sigtimedwait); the parent reads them from a signalfd.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  const Clock::time_point start = Clock::now();
  std::vector<Child> children(static_cast<std::size_t>(o.instances));
  std::map<std::string, std::uint64_t> errors;
  for (int i = 0; i < o.instances; ++i) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      std::perror("dsb-load: pipe");
      KillAll(children, SIGKILL);
      return 1;
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("dsb-load: fork");
      KillAll(children, SIGKILL);
      return 1;
    }
    if (pid == 0) {
      // An instance ends with dsb-load (a `kill -9` of dsb-load must not leave
      // DigiScope stand-ins holding sessions until their --duration ends).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) std::_Exit(1);  // dsb-load died before prctl
      ::close(fds[0]);
      for (int j = 0; j < i; ++j) ::close(children[static_cast<std::size_t>(j)].fd);
      std::_Exit(RunInstance(o, i, fds[1]));
    }
    ::close(fds[1]);
    children[static_cast<std::size_t>(i)].pid = pid;
    children[static_cast<std::size_t>(i)].fd = fds[0];
    std::fprintf(stderr, "dsb-load: instance %d pid %d\n", i, static_cast<int>(pid));
  }

  const int sigfd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  // Children end their holds as soon as they stop; this bounds a stuck one.
  const auto grace = std::chrono::milliseconds(o.acquire_timeout_ms + 2 * o.io_timeout_ms + 3000);
  const Clock::time_point hard_deadline =
      start +
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s)) +
      grace;
  bool killed = false;
  // Children report at whole seconds; print a little after so their lines have arrived.
  Clock::time_point next_progress = start + std::chrono::milliseconds(1200);
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::size_t> owners;
    for (std::size_t i = 0; i < children.size(); ++i) {
      if (children[i].fd >= 0) {
        fds.push_back({children[i].fd, POLLIN, 0});
        owners.push_back(i);
      }
    }
    if (fds.empty()) break;
    if (sigfd >= 0) fds.push_back({sigfd, POLLIN, 0});
    const int n = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), 250);
    if (n < 0 && errno != EINTR) break;
    for (std::size_t k = 0; k < owners.size(); ++k) {
      if ((fds[k].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      Child& c = children[owners[k]];
      char chunk[8192];
      const ssize_t got = ::read(c.fd, chunk, sizeof(chunk));
      if (got > 0) {
        c.buffer.append(chunk, static_cast<std::size_t>(got));
        TakeLines(c, errors);
      } else if (got == 0 || errno != EINTR) {
        ::close(c.fd);
        c.fd = -1;
      }
    }
    if (sigfd >= 0 && (fds.back().revents & POLLIN) != 0) {
      signalfd_siginfo info{};
      if (::read(sigfd, &info, sizeof(info)) > 0) {
        std::fprintf(stderr, "dsb-load: signal %u, stopping the instances\n", info.ssi_signo);
        KillAll(children, SIGTERM);
      }
    }
    const Clock::time_point now = Clock::now();
    if (now >= next_progress) {
      std::uint64_t actions = 0, refusals = 0;
      for (const Child& c : children) {
        actions += c.progress_actions;
        refusals += c.progress_refusals;
      }
      std::fprintf(stderr, "dsb-load: t=%.1fs actions=%llu refusals=%llu\n",
                   std::chrono::duration<double>(now - start).count(),
                   static_cast<unsigned long long>(actions),
                   static_cast<unsigned long long>(refusals));
      next_progress += std::chrono::seconds(1);
    }
    if (!killed && now >= hard_deadline) {
      std::fprintf(stderr, "dsb-load: instances still running past the grace; killing them\n");
      KillAll(children, SIGKILL);
      killed = true;
    }
  }
  for (Child& c : children) {
    if (::waitpid(c.pid, &c.status, 0) == c.pid) c.exited = true;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  // Aggregate.
  std::uint64_t actions = 0, refusals = 0, opens = 0, yields = 0, system_refusals = 0, reports = 0;
  Histogram waits;
  boost::json::array per_instance;
  boost::json::array pids;
  bool all_reported = true;
  for (Child& c : children) {
    pids.push_back(c.pid);
    if (!c.result) {
      all_reported = false;
      ++errors["instance_lost"];
      if (c.exited && WIFSIGNALED(c.status)) {
        ++errors["instance_signal_" + std::to_string(WTERMSIG(c.status))];
      }
      per_instance.push_back(nullptr);
      continue;
    }
    const boost::json::object& r = *c.result;
    actions += U64(r, "actions");
    refusals += U64(r, "refusals");
    opens += U64(r, "opens");
    yields += U64(r, "yields");
    reports += U64(r, "reports");
    system_refusals += U64(r, "system_refusals");
    per_instance.push_back(U64(r, "actions"));
    Histogram h;
    if (const auto* w = r.if_contains("acquire_wait"); w != nullptr && h.FromJson(*w)) {
      waits.Merge(h);
    } else {
      ++errors["bad_report"];
    }
    if (const auto* e = r.if_contains("errors"); e != nullptr && e->is_object()) {
      for (const auto& [kind, n] : e->as_object()) {
        boost::system::error_code ec;
        errors[std::string(kind)] += n.to_number<std::uint64_t>(ec);
      }
    }
    if (c.exited && WIFEXITED(c.status) && WEXITSTATUS(c.status) != 0) {
      ++errors["instance_exit_" + std::to_string(WEXITSTATUS(c.status))];
    }
  }
  boost::json::object error_json;
  for (const auto& [kind, n] : errors) error_json[kind] = n;
  boost::json::object summary{
      {"mode", o.no_broker ? "no-broker" : "broker"},
      {"server_kind", o.postgres ? "postgresql" : "simserver"},
      {"instances", o.instances},
      {"threads", o.threads},
      {"duration_s", o.duration_s},
      {"elapsed_s", elapsed},
      {"seed", o.seed},
      {"actions", actions},
      {"opens", opens},
      {"opens_per_s", elapsed > 0 ? static_cast<double>(opens) / elapsed : 0.0},
      {"refusals", refusals},
      {"system_refusals", system_refusals},
      {"yields", yields},
      {"reports", reports},
      {"acquire_wait_ms",
       {{"count", waits.count()},
        {"p50", Ms(waits.Percentile(0.5))},
        {"p99", Ms(waits.Percentile(0.99))},
        {"max", Ms(waits.max())}}},
      {"actions_per_instance", std::move(per_instance)},
      {"pids", std::move(pids)},
      {"errors", std::move(error_json)},
  };
  if (o.postgres) summary["close"] = o.close_mode;
  std::printf("%s\n", boost::json::serialize(summary).c_str());
  std::fflush(stdout);
  // A run that could not do what it was asked is a failure (exit 1), with
  // the reason on stderr: an instance that could not register with the broker
  // (it exits 3), or one that never opened its system session (the server
  // could not be reached, or refused it for the whole run).
  std::uint64_t failed_instances = 0;
  for (const auto& [kind, n] : errors) {
    if (kind.starts_with("instance_exit_")) failed_instances += n;
  }
  const std::uint64_t no_system = errors.count("no_system_session") ? errors["no_system_session"] : 0;
  if (failed_instances > 0) {
    std::fprintf(stderr, "dsb-load: %llu instance(s) failed (exit status in \"errors\"; a broker "
                         "that cannot be reached is exit 3)\n",
                 static_cast<unsigned long long>(failed_instances));
  }
  if (no_system > 0) {
    std::fprintf(stderr, "dsb-load: %llu instance(s) never opened their system session: the "
                         "server %s could not be reached or refused it for the whole run\n",
                 static_cast<unsigned long long>(no_system), o.server.c_str());
  }
  return all_reported && failed_instances == 0 && no_system == 0 ? 0 : 1;
}

}  // namespace
}  // namespace dsb::load

int main(int argc, char** argv) { return dsb::load::Run(argc, argv); }
