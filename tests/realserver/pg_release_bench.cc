// dsb-pg-release-bench: in ONE run against ONE PostgreSQL server (role `digiscope`, CONNECTION
// LIMIT 12), 3 dsb-load instances x 8 threads, each scenario for --seconds: what PostgreSQL
// refuses (its log) and how busy it is kept (pg_stat_activity sampled every 2 ms; utilization =
// mean sessions / 12), for
//   no dsb | dsb, confirmed close | dsb, plain close | dsb, plain close + release_cooldown 5ms |
//   dsb, plain close + reserve 2 (the work-around).
// Prints a Markdown table (for docs/realserver.md) and one JSON line per scenario.
// Run it with tools/bench/pg_release.sh. Not a test: it judges nothing, it measures.
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/pg_server.h"
#include "tests/tools/process.h"

namespace {

using namespace std::chrono_literals;
using dsb::testing::BrokerProcess;
using dsb::testing::PgSampler;
using dsb::testing::PgServer;

constexpr int kCap = 12;

struct Scenario {
  std::string name;
  bool broker = true;
  std::string close = "confirmed";
  int reserve = 0;
  std::string extra_target_keys;  // e.g. release_cooldown
};

struct Figures {
  std::uint64_t refusals = 0;  // PostgreSQL's, over the whole run
  PgSampler::Stats sessions;   // over the steady window
  double actions_per_s = 0;
  double load_refusals = 0;
  std::string note;
};

double Num(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  boost::system::error_code ec;
  return v == nullptr ? -1 : v->to_number<double>(ec);
}

struct Hold {
  std::string min_ms = "5";
  std::string max_ms = "20";
};

bool Run(const Scenario& sc, PgServer& server, const std::string& dir, double seconds,
         const Hold& hold, int n, Figures& f) {
  std::unique_ptr<BrokerProcess> broker;
  const std::string id = "pgb" + std::to_string(::getpid()) + "s" + std::to_string(n);
  if (sc.broker) {
    const std::string config = dir + "/" + id + ".toml";
    const std::string socket = dir + "/" + id + ".sock";
    std::ofstream(config) << "[broker]\nid = \"" << id << "\"\nsocket = \"" << socket
                          << "\"\nshm_prefix = \"" << id << "\"\n\n[[targets]]\nname = \"pg\"\n"
                          << "limit = " << kCap << "\nreserve = " << sc.reserve
                          << "\nquarantine = \"0s\"\n"
                          << sc.extra_target_keys << "\n";
    broker = std::make_unique<BrokerProcess>(config, socket,
                                             std::vector<std::string>{"dsb-" + id + "-pg"});
    if (!broker->Start()) {
      f.note = "broker did not start: " + broker->log().substr(0, 400);
      return false;
    }
  }
  std::vector<std::string> argv = {dsb::tools_test::BinPath("dsb-load"),
                                   "--server",
                                   server.RoleUrl(),
                                   "--instances",
                                   "3",
                                   "--threads",
                                   "8",
                                   "--duration",
                                   std::to_string(seconds),
                                   "--close",
                                   sc.close,
                                   "--hold-ms-min",
                                   hold.min_ms,
                                   "--hold-ms-max",
                                   hold.max_ms};
  if (broker) {
    argv.insert(argv.end(), {"--socket", broker->socket().string(), "--target", "pg"});
  } else {
    argv.push_back("--no-broker");
  }
  const std::string out = dir + "/" + id + ".json", err = dir + "/" + id + ".err";
  const std::uint64_t before = server.RoleRefusals();
  dsb::tools_test::ChildProcess load;
  if (!load.Start(argv, out, err)) {
    f.note = "dsb-load did not start";
    return false;
  }
  // Steady window: from when the load fills the role (at most 10 s after the start) to
  // 1 s before the end.
  const auto started = std::chrono::steady_clock::now();
  (void)dsb::tools_test::WaitUntil([&] { return server.RoleSessions() >= 10; }, 10s);
  const double warm = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  PgSampler sampler(server);
  std::string error;
  if (!sampler.Start(error)) {
    f.note = "sampler: " + error;
    return false;
  }
  // The measurement window itself (a duration, not a synchronisation).
  std::this_thread::sleep_for(std::chrono::duration<double>(std::max(1.0, seconds - warm - 1.0)));
  f.sessions = sampler.Stop();
  load.Wait(std::chrono::milliseconds(static_cast<long>(seconds * 1000)) + 60s);
  f.refusals = server.RoleRefusals() - before;
  std::string text = dsb::tools_test::ReadFile(out);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(text.substr(text.rfind('\n') + 1), ec);
  if (ec || !v.is_object()) {
    f.note = "no dsb-load summary: " + dsb::tools_test::ReadFile(err).substr(0, 400);
    return false;
  }
  const auto& s = v.as_object();
  f.actions_per_s = Num(s, "actions") / std::max(Num(s, "elapsed_s"), 1e-9);
  f.load_refusals = Num(s, "refusals");
  if (const auto* e = s.if_contains("errors");
      e != nullptr && e->is_object() && !e->as_object().empty()) {
    f.note = "errors " + boost::json::serialize(*e);
  }
  if (broker) broker->Stop();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 20;
  bool with_cooldown = true;
  Hold hold;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--hold-ms" && i + 2 < argc) {
      hold.min_ms = argv[++i];
      hold.max_ms = argv[++i];
    } else if (a == "--no-cooldown") {
      with_cooldown = false;
    } else {
      std::fprintf(
          stderr,
          "usage: dsb-pg-release-bench [--seconds S] [--hold-ms MIN MAX] [--no-cooldown]\n");
      return 2;
    }
  }
  if (seconds < 5) {
    std::fprintf(stderr, "dsb-pg-release-bench: --seconds must be >= 5\n");
    return 2;
  }
  const std::string why = dsb::testing::PostgresUnavailableReason();
  if (!why.empty()) {
    std::fprintf(stderr, "dsb-pg-release-bench: %s\n", why.c_str());
    return 2;
  }
  dsb::tools_test::ScratchDir dir;
  PgServer server;
  PgServer::Options options;
  options.role_limit = kCap;
  std::string error;
  if (!server.Start(options, error)) {
    std::fprintf(stderr, "dsb-pg-release-bench: PostgreSQL did not start: %s\n", error.c_str());
    return 1;
  }
  std::vector<Scenario> scenarios = {
      {"no dsb", false, "plain", 0, ""},
      {"dsb, confirmed close", true, "confirmed", 0, ""},
      {"dsb, plain close (the bug)", true, "plain", 0, ""},
  };
  if (with_cooldown) {
    scenarios.push_back({"dsb, plain close + release_cooldown 5ms", true, "plain", 0,
                         "release_cooldown = \"5ms\""});
  }
  scenarios.push_back({"dsb, plain close + reserve 2 (work-around)", true, "plain", 2, ""});

  std::printf(
      "PostgreSQL 15, role CONNECTION LIMIT %d, 3 instances x 8 threads, holds %s-%s ms, "
      "%.0f s per scenario, %u cores\n\n",
      kCap, hold.min_ms.c_str(), hold.max_ms.c_str(), seconds, std::thread::hardware_concurrency());
  std::printf("| scenario | PostgreSQL refusals | utilization (mean / %d) | peak | actions/s |\n",
              kCap);
  std::printf("| --- | ---: | ---: | ---: | ---: |\n");
  std::fflush(stdout);
  std::vector<std::string> json;
  int status = 0;
  for (std::size_t i = 0; i < scenarios.size(); ++i) {
    Figures f;
    const bool ok = Run(scenarios[i], server, std::filesystem::path(dir.File("")).parent_path(),
                        seconds, hold, static_cast<int>(i), f);
    if (!ok) status = 1;
    std::printf("| %s | %llu | %.3f | %d | %.0f |%s\n", scenarios[i].name.c_str(),
                static_cast<unsigned long long>(f.refusals), f.sessions.mean / kCap,
                f.sessions.peak, f.actions_per_s, ok ? "" : (" FAILED: " + f.note).c_str());
    std::fflush(stdout);
    json.push_back(
        boost::json::serialize(boost::json::object{{"scenario", scenarios[i].name},
                                                   {"seconds", seconds},
                                                   {"pg_refusals", f.refusals},
                                                   {"mean_sessions", f.sessions.mean},
                                                   {"utilization", f.sessions.mean / kCap},
                                                   {"peak", f.sessions.peak},
                                                   {"samples", f.sessions.samples},
                                                   {"actions_per_s", f.actions_per_s},
                                                   {"load_refusals", f.load_refusals},
                                                   {"note", f.note}}));
  }
  std::printf("\n");
  for (const std::string& j : json) std::printf("%s\n", j.c_str());
  return status;
}
