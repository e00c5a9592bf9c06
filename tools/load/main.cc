// dsb-load: a load generator that behaves like DigiScope. See README.md.
//
// The parent parses flags and starts one child process per instance (children.h: fork on
// POSIX, the same .exe again with --instance-child on Windows). Each child is one DigiScope
// process (its own broker registration, killable alone) and reports JSON lines through a pipe;
// the parent aggregates them and prints one JSON summary as the last line of stdout.
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

#include "tools/load/children.h"
#include "tools/load/histogram.h"
#include "tools/load/instance.h"
#include "tools/load/line_client.h"
#include "dsb/version.h"
#include "tools/load/pg_client.h"

namespace dsb::load {
namespace {

using Clock = std::chrono::steady_clock;

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
#ifdef _WIN32
  // Windows has no fork: the parent starts this .exe again per instance (children_win.cc).
  int instance_child = -1;
  app.add_option("--instance-child", instance_child, "(internal) run instance I, report on stdout")
      ->group("");
#endif
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
    if (!PgAvailable()) {
      std::fprintf(stderr, "dsb-load: --server %s: this build has no PostgreSQL client library "
                           "(libpq); only dsb-simserver HOST:PORT servers work\n",
                   o.server.c_str());
      return 2;
    }
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
#ifdef _WIN32
  if (instance_child >= 0) return RunInstanceChild(o, instance_child);
#endif
  std::fprintf(
      stderr, "dsb-load: seed %llu, %d instance(s) x %d thread(s), %.3g s, mode %s, server %s%s\n",
      static_cast<unsigned long long>(o.seed), o.instances, o.threads, o.duration_s,
      o.no_broker ? "no-broker" : "broker", o.postgres ? "postgresql" : "simserver",
      o.postgres ? (o.close_mode == "confirmed" ? " (confirmed close)" : " (plain close)") : "");
  std::fflush(stderr);
  std::fflush(stdout);

  const Clock::time_point start = Clock::now();
  std::vector<Child> children;
  ErrorCounts errors;
  if (const int rc = RunChildren(o, start, children, errors); rc != 0) return rc;
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
      if (c.signal) ++errors["instance_signal_" + std::to_string(*c.signal)];
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
    if (c.exit_code && *c.exit_code != 0) {
      ++errors["instance_exit_" + std::to_string(*c.exit_code)];
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
