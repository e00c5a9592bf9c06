// dsb-bench-etcd: the etcd ledger against the embedded coordinator, side by
// side in one run (docs/etcd.md, "What was measured"). Real ledger processes
// on loopback: a dsb-broker with the coordinator role, and 1 or 3 members of
// Debian's etcd. The brokers that renew are emulated in this process (the
// real lease::LeaseAgent, the real wire channel or the real EtcdClient + shared
// ledger; no slot tables, clients take and return slots at once), so both
// modes are timed the same way (links.h).
//
// Measured:
//   1. renew cost: agent send -> grant applied, median and p99, embedded vs
//      etcd 1 member vs 3 members (client on the leader / on a follower), and
//      the etcd calls one renew makes (keepalive, range, txn);
//   2. capacity move: broker A (holding the pool) goes idle, broker B wants the
//      pool: time until B's applied lease covers pool - 1; embedded vs etcd,
//      D = 3 s and D = 15 s;
//   3. writes etcd sees per broker per second at steady state (etcd's own
//      /metrics: etcd_server_proposals_committed_total, etcd_mvcc_put_total),
//      16 brokers with their renews spread over D/3, D = 15 s and 3 s; and a
//      burst: the 16 renew in the same instant (lost compares, time until all
//      are granted);
//   4. a leader change: 3 members, kill the leader (SIGKILL) while the demand
//      moves from A to B: time to the first successful renew, renews failed,
//      leases lapsed (none expected), time until B's capacity covers; and its
//      embedded counterpart: the coordinator killed and restarted at once.
// The capacity move with real brokers and clients is tools/bench-etcd/
// move_time_etcd.sh beside tools/leasebench/move_time.sh.
// Bounded: every wait has a deadline; the whole run takes ~7 minutes on a
// loaded 2-core machine (--quick: ~2.5). Writes only into its own temp folders
// (removed at the end; --keep keeps them) and, with --out FILE, a JSON file of
// every sample. DSB_BENCH_TRACE=1 prints every renew (report, reply, keys).
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "broker/cluster_lease.h"
#include "broker/config/cluster_config.h"
#include "broker/wire/auth.h"
#include "tests/support/process.h"
#include "tests/support/test_cluster.h"
#include "tests/support/etcd_cluster.h"
#include "tools/bench-etcd/etcd_metrics.h"
#include "tools/bench-etcd/links.h"

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using asio::awaitable;
using dsb::Errc;
using dsb::Result;
using dsb::Status;
using dsb::bench::Clock;
using dsb::bench::EmuBroker;
using dsb::bench::Ms;
using dsb::bench::Samples;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

struct Options {
  bool quick = false;
  bool keep = false;
  std::string out;  // JSON of every sample, if given
  int reps = 6;     // capacity moves per mode and term
  int leader_reps = 3;
  int renew_samples = 300;
  int writers = 16;  // emulated brokers for the writes-per-second and burst rows
  std::string broker;  // dsb-broker to run as the embedded coordinator
  std::string only;    // "", "embedded", "etcd1" or "etcd3" (for trying one part)
};

// ------------------------------------------------------------ statistics

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(pos);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}
double Max(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); }

std::string Fmt(double v, int prec = 2) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

// ------------------------------------------------------------ results

struct Row {  // one printed row: label + columns
  std::string section, label;
  std::vector<std::string> cells;
};
std::vector<Row> g_rows;
json::object g_json;
int g_failures = 0;

void AddRow(std::string section, std::string label, std::vector<std::string> cells) {
  std::printf("  %-44s %s\n", label.c_str(), [&] {
    std::string s;
    for (const auto& c : cells) s += c + "  ";
    return s;
  }().c_str());
  std::fflush(stdout);
  g_rows.push_back({std::move(section), std::move(label), std::move(cells)});
}

// GCC 12 cannot compile a braced list of std::string inside a coroutine
// ("array used as initializer"): rows and id lists are built here instead.
template <typename... Cells>
void Add(std::string section, std::string label, Cells&&... cells) {
  std::vector<std::string> v;
  (v.push_back(std::string(std::forward<Cells>(cells))), ...);
  AddRow(std::move(section), std::move(label), std::move(v));
}
template <typename... Names>
std::vector<std::string> Ids(Names... names) {
  std::vector<std::string> v;
  (v.push_back(std::string(names)), ...);
  return v;
}

json::array ToJson(const std::vector<double>& v) {
  json::array a;
  for (double d : v) a.push_back(d);
  return a;
}

void Log(const std::string& s) {
  std::fprintf(stderr, "[bench %s] %s\n", [] {
    char b[32];
    const auto t = std::time(nullptr);
    std::strftime(b, sizeof b, "%H:%M:%S", std::localtime(&t));
    return std::string(b);
  }().c_str(), s.c_str());
}

// ------------------------------------------------------------ the run

struct Term {
  std::string name;  // "D=3s"
  std::string term, drain;
  fs::path dir;
  dsb::testing::TestClusterFiles files;
  dsb::config::ClusterConfig cluster;
  std::uint32_t pool = 0;
};

class Bench {
 public:
  Bench(asio::io_context& io, Options o, fs::path run_dir)
      : io_(io), o_(std::move(o)), run_dir_(std::move(run_dir)) {}

  awaitable<void> Run();

 private:
  // Waits until pred() holds (polled every ms) or `timeout`; returns pred().
  awaitable<bool> WaitFor(std::function<bool()> pred, Clock::duration timeout) {
    asio::steady_timer t(io_);
    const auto end = Clock::now() + timeout;
    while (!pred()) {
      if (Clock::now() >= end) co_return pred();
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(use_nothrow);
    }
    co_return true;
  }
  awaitable<void> Sleep(Clock::duration d) {
    asio::steady_timer t(io_);
    t.expires_after(d);
    co_await t.async_wait(use_nothrow);
  }

  Result<Term> MakeTerm(const std::string& term, const std::string& drain);
  dsb::lease::AgentConfig Agent(const Term& t, const std::string& id, std::uint64_t instance,
                                std::chrono::milliseconds renew_interval = {});

  // A running emulated broker and what it renews through.
  struct Emu {
    std::unique_ptr<dsb::bench::LedgerLink> link;
    std::unique_ptr<EmuBroker> broker;
    bool done = false;
  };
  using EmuList = std::vector<std::unique_ptr<Emu>>;
  void Spawn(Emu& e) {
    asio::co_spawn(io_, [](Emu* e) -> awaitable<void> {
      co_await e->broker->Run();
      e->done = true;
    }(&e), asio::detached);
  }
  awaitable<void> StopAll(EmuList& list) {
    for (auto& e : list) e->broker->Stop();
    co_await WaitFor([&] {
      return std::all_of(list.begin(), list.end(), [](const auto& e) { return e->done; });
    }, std::chrono::seconds(20));
  }

  // Mode = a way to make a link for broker `id` of term `t`.
  using MakeLink = std::function<awaitable<Result<std::unique_ptr<dsb::bench::LedgerLink>>>(
      const Term& t, const std::string& id, std::uint64_t instance)>;

  // Starts emulated brokers `ids`, waits until each had a grant accepted.
  awaitable<Result<EmuList>> StartBrokers(const Term& t, const MakeLink& make,
                                          const std::vector<std::string>& ids,
                                          std::chrono::milliseconds renew_interval = {});
  // Renew cost: one emulated broker renewing every 20 ms.
  awaitable<Status> RenewCost(const Term& t, const MakeLink& make, const std::string& id,
                              const std::string& label, dsb::bench::EtcdOpStats* ops);
  // Capacity moves between A and B (both already started), o_.reps times.
  awaitable<Status> Moves(const Term& t, Emu& a, Emu& b, const std::string& label);

  awaitable<Status> Embedded(Term& t, bool cost);
  awaitable<Status> Etcd(int members);

  asio::io_context& io_;
  Options o_;
  fs::path run_dir_;
  std::mt19937 rng_{std::random_device{}()};
  Term d3_, d15_;
};

Result<Term> Bench::MakeTerm(const std::string& term, const std::string& drain) {
  Term t;
  t.name = "D=" + term;
  t.term = term;
  t.drain = drain;
  t.dir = run_dir_ / ("term-" + term);
  fs::create_directories(t.dir);
  dsb::testing::TestClusterSpec spec;
  spec.brokers = 20;
  spec.stem = "bench" + std::to_string(::getpid()) + term;
  spec.cluster_keys = "term = \"" + term + "\"\ndrain = \"" + drain + "\"\n";
  spec.broker_keys = "system_slots = 1\nfloor = 0\n";
  spec.targets_toml = "[[targets]]\nname = \"exch01\"\nlimit = 60\nreserve = 0\n";
  t.files = dsb::testing::WriteTestCluster(t.dir, spec);
  auto c = dsb::config::LoadClusterConfig(t.dir / "cluster.toml");
  if (!c.ok()) return c.status();
  t.cluster = std::move(c).value();
  t.pool = static_cast<std::uint32_t>(t.cluster.Pool(t.cluster.targets.front()));
  return t;
}

dsb::lease::AgentConfig Bench::Agent(const Term& t, const std::string& id,
                                     std::uint64_t instance,
                                     std::chrono::milliseconds renew_interval) {
  auto ac = dsb::broker::AgentConfigOf(t.cluster, *t.cluster.FindBroker(id), /*epoch=*/1);
  ac.instance = instance;
  if (renew_interval.count() > 0) ac.renew_interval = renew_interval;
  return ac;
}

awaitable<Result<Bench::EmuList>> Bench::StartBrokers(const Term& t, const MakeLink& make,
                                                      const std::vector<std::string>& ids,
                                                      std::chrono::milliseconds renew_interval) {
  EmuList list;
  for (const auto& id : ids) {
    // One instance id for the agent and its link (the live key names it).
    const auto instance = std::uniform_int_distribution<std::uint64_t>(1, UINT64_MAX)(rng_);
    auto link = co_await make(t, id, instance);
    if (!link.ok()) {
      co_await StopAll(list);
      co_return link.status();
    }
    auto e = std::make_unique<Emu>();
    e->link = std::move(link).value();
    e->broker = std::make_unique<EmuBroker>(io_.get_executor(), Agent(t, id, instance, renew_interval),
                                            e->link.get());
    Spawn(*e);
    list.push_back(std::move(e));
  }
  // Learning (C3) lasts (D + H)(1 + eps) after the ledger is made.
  const bool ok = co_await WaitFor([&] {
    return std::all_of(list.begin(), list.end(), [](const auto& e) { return e->broker->ready(); });
  }, std::chrono::seconds(60));
  if (!ok) {
    std::string why;
    for (const auto& e : list) {
      if (!e->broker->ready()) why += " " + e->broker->id() + ": " + e->broker->last_error;
    }
    co_await StopAll(list);
    co_return Status(Errc::kTimeout, "brokers never accepted within 60 s:" + why);
  }
  co_return list;
}

awaitable<Status> Bench::RenewCost(const Term& t, const MakeLink& make, const std::string& id,
                                   const std::string& label, dsb::bench::EtcdOpStats* ops) {
  std::vector<std::string> ids(1, id);
  auto list = co_await StartBrokers(t, make, ids, std::chrono::milliseconds(20));
  if (!list.ok()) co_return list.status();
  EmuBroker& b = *list->front()->broker;
  b.SetDemand(4);
  if (ops != nullptr) *ops = {};  // only the timed renews' calls
  b.record = true;
  const std::size_t want = static_cast<std::size_t>(o_.renew_samples);
  co_await WaitFor([&] { return b.renew_ms.ms.size() >= want; }, std::chrono::seconds(60));
  b.record = false;
  const auto samples = b.renew_ms.ms;
  const auto failed = b.failed_renews;
  co_await StopAll(*list);
  Add("renew", label + " renew",
         "median " + Fmt(Quantile(samples, 0.5)) + " ms", "p99 " + Fmt(Quantile(samples, 0.99)) + " ms",
          "max " + Fmt(Max(samples)) + " ms", "n " + std::to_string(samples.size()),
          "failed " + std::to_string(failed));
  g_json["renew " + label] = ToJson(samples);
  if (ops != nullptr) {
    std::vector<std::pair<std::string, const Samples*>> calls;
    calls.emplace_back("keepalive", &ops->keepalive);
    calls.emplace_back("range", &ops->range);
    calls.emplace_back("txn", &ops->txn);
    for (const auto& [name, s] : calls) {
      Add("ops", label + " " + name,
             "median " + Fmt(Quantile(s->ms, 0.5)) + " ms", "p99 " + Fmt(Quantile(s->ms, 0.99)) + " ms",
              "n " + std::to_string(s->ms.size()));
      g_json["op " + label + " " + name] = ToJson(s->ms);
    }
    Add("ops", label + " per renew",
           "txns " + std::to_string(ops->txns), "lost compares " + std::to_string(ops->lost_compares),
            "no write " + std::to_string(ops->empty_writes), "unknown " + std::to_string(ops->unknown),
            "errors " + std::to_string(ops->errors));
  }
  co_return Status::Ok();
}

awaitable<Status> Bench::Moves(const Term& t, Emu& a, Emu& b, const std::string& label) {
  const std::uint32_t p = t.pool;
  const std::uint32_t enough = p - 1;
  const auto term_ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.cluster.term);
  EmuBroker* from = a.broker.get();
  EmuBroker* to = b.broker.get();
  from->SetDemand(p);
  to->SetDemand(0);
  if (!co_await WaitFor([&] { return from->lease() >= enough; }, std::chrono::seconds(90))) {
    co_return Status(Errc::kTimeout, label + ": " + from->id() + " never got the pool");
  }
  std::vector<double> moves;
  std::uint32_t peak_sum = 0;
  for (int rep = 0; rep < o_.reps; ++rep) {
    // A random phase against the renew schedule (demand shifts come at any time).
    co_await Sleep(std::chrono::milliseconds(
        std::uniform_int_distribution<long>(200, std::max<long>(201, term_ms.count() / 3))(rng_)));
    const auto t0 = Clock::now();
    from->SetDemand(0);
    to->SetDemand(p);
    const bool ok = co_await WaitFor([&] {
      peak_sum = std::max(peak_sum, from->lease() + to->lease());
      return to->lease() >= enough;
    }, std::chrono::seconds(90));
    if (!ok) co_return Status(Errc::kTimeout, label + ": " + to->id() + " never got the pool");
    moves.push_back(Ms(Clock::now() - t0));
    std::swap(from, to);
  }
  // The bench's own check (S itself is judged at a server by the test suites):
  // two emulated brokers' valid leases never summed above the pool.
  Add("move", label + " capacity move",
         "min " + Fmt(*std::min_element(moves.begin(), moves.end()), 0) + " ms",
          "median " + Fmt(Quantile(moves, 0.5), 0) + " ms", "max " + Fmt(Max(moves), 0) + " ms",
          "n " + std::to_string(moves.size()),
          "lease sum peak " + std::to_string(peak_sum) + "/" + std::to_string(p));
  g_json["move " + label] = ToJson(moves);
  if (peak_sum > p) co_return Status(Errc::kInternal, label + ": leases summed above the pool");
  co_return Status::Ok();
}

awaitable<Status> Bench::Embedded(Term& t, bool cost) {
  Log("embedded coordinator, " + t.name + ": starting ws1 (dsb-broker)");
  dsb::testing::Process ws1;
  dsb::testing::SpawnOptions so;
  so.output = dsb::testing::Output::kFiles;
  so.stdout_file = so.stderr_file = t.dir / "ws1.log";
  std::vector<std::string> argv;
  argv.push_back(o_.broker);
  argv.push_back("--config");
  argv.push_back(t.files.configs[0].string());
  if (!ws1.Start(argv, so)) {
    co_return Status(Errc::kConfig, "cannot start dsb-broker: " + ws1.error());
  }
  auto key = dsb::wire::ClusterKey::LoadFile(t.dir / "cluster.key");
  if (!key.ok()) co_return key.status();
  const auto where = t.cluster.FindBroker("ws1")->address;
  const auto cluster_hash = t.cluster.hash;
  const auto k = *key;
  MakeLink make = [this, where, cluster_hash, k](
                      const Term&, const std::string& id, std::uint64_t)
      -> awaitable<Result<std::unique_ptr<dsb::bench::LedgerLink>>> {
    dsb::wire::Credentials c;
    c.key = k;
    c.broker_id = id;
    c.cluster_hash = cluster_hash;
    c.accept_other_file = true;
    const auto end = Clock::now() + std::chrono::seconds(15);
    for (;;) {  // until ws1 listens
      auto l = co_await dsb::bench::WireLink::Connect(io_.get_executor(), where.host, where.port, c);
      if (l.ok()) co_return std::unique_ptr<dsb::bench::LedgerLink>(std::move(l).value());
      if (Clock::now() >= end) co_return l.status();
      co_await Sleep(std::chrono::milliseconds(50));
    }
  };
  Status st = Status::Ok();
  if (cost) st = co_await RenewCost(t, make, "ws4", "embedded " + t.name, nullptr);
  if (st.ok()) {
    auto list = co_await StartBrokers(t, make, Ids("ws2", "ws3"));
    if (!list.ok()) {
      st = list.status();
    } else {
      st = co_await Moves(t, *(*list)[0], *(*list)[1], "embedded " + t.name);
      if (st.ok() && !cost) {
        // The embedded counterpart of a leader change: the coordinator is
        // killed (-9) and started again at once, while the demand moves.
        Log("embedded " + t.name + ": coordinator kill -9 and restart");
        Emu& a = *(*list)[0];
        Emu& b = *(*list)[1];
        EmuBroker* from = a.broker->lease() > b.broker->lease() ? a.broker.get() : b.broker.get();
        EmuBroker* to = from == a.broker.get() ? b.broker.get() : a.broker.get();
        co_await Sleep(std::chrono::milliseconds(std::uniform_int_distribution<long>(500, 5000)(rng_)));
        const auto f0 = from->failed_renews + to->failed_renews;
        const auto l0 = from->lapses + to->lapses;
        const auto t0 = Clock::now();
        ws1.Kill();
        so.append = true;
        if (!ws1.Start(argv, so)) co_return Status(Errc::kConfig, "cannot restart dsb-broker");
        from->SetDemand(0);
        to->SetDemand(t.pool);
        const bool moved = co_await WaitFor([&] { return to->lease() >= t.pool - 1; },
                                            std::chrono::seconds(120));
        if (!moved) {
          st = Status(Errc::kTimeout, "no move after the coordinator restart");
        } else {
          const double move = Ms(Clock::now() - t0);
          double first_ok = 0;
          for (EmuBroker* e : {from, to}) {
            auto it = std::find_if(e->ok_at.begin(), e->ok_at.end(), [&](auto x) { return x > t0; });
            if (it != e->ok_at.end()) first_ok = std::max(first_ok, Ms(*it - t0));
          }
          Add("leader", "embedded " + t.name + " coordinator killed+restarted",
              "first grant " + Fmt(first_ok, 0) + " ms", "capacity move " + Fmt(move, 0) + " ms",
              "renews failed " + std::to_string(from->failed_renews + to->failed_renews - f0),
              "leases lapsed " + std::to_string(from->lapses + to->lapses - l0));
        }
      }
      co_await StopAll(*list);
    }
  }
  ws1.Stop(SIGTERM, std::chrono::seconds(10));
  co_return st;
}

awaitable<Status> Bench::Etcd(int members) {
  const std::string mode = "etcd " + std::to_string(members) + "m";
  Log(mode + ": starting " + std::to_string(members) + " etcd member(s)");
  // The test harness: members on reserved loopback ports, data on tmpfs,
  // --unsafe-no-fsync; every member ended by PID when `m` goes.
  dsb::testing::EtcdCluster m;
  if (!m.Start(members)) co_return Status(Errc::kBrokerUnavailable, "etcd: " + m.error());
  int prefix_n = 0;
  dsb::bench::EtcdOpStats ops;
  // Endpoint orders: `first` member first, then the others.
  auto endpoints_from = [&m](int first) {
    std::vector<std::string> e(1, m.Endpoint(first));
    for (int i = 0; i < m.size(); ++i) if (i != first) e.push_back(m.Endpoint(i));
    return e;
  };
  auto make_for = [&](std::vector<std::string> endpoints, std::string prefix,
                      dsb::bench::EtcdOpStats* stats) -> MakeLink {
    return [this, endpoints, prefix, stats](const Term& t, const std::string& id,
                                            std::uint64_t instance)
               -> awaitable<Result<std::unique_ptr<dsb::bench::LedgerLink>>> {
      dsb::bench::EtcdLinkOptions lo;
      lo.endpoints = endpoints;
      lo.prefix = prefix;
      lo.mine = dsb::broker::LedgerConfigOf(t.cluster);
      lo.who.broker_id = id;
      lo.who.epoch = 1;
      lo.who.instance = instance;
      lo.renew_bound = std::chrono::duration_cast<std::chrono::milliseconds>(t.cluster.term / 3);
      lo.stats = stats;
      auto l = co_await dsb::bench::EtcdLink::Create(io_.get_executor(), lo);
      if (!l.ok()) co_return l.status();
      co_return std::unique_ptr<dsb::bench::LedgerLink>(std::move(l).value());
    };
  };
  auto next_prefix = [&] { return "/dsb/bench-" + std::to_string(++prefix_n) + "/"; };

  // 1. renew cost (D = 3 s; each row on a fresh prefix: a ledger of its own).
  const int leader = m.Leader();
  if (leader < 0) co_return Status(Errc::kBrokerUnavailable, mode + ": no leader");
  if (members == 1) {
    if (Status s = co_await RenewCost(d3_, make_for(m.Endpoints(), next_prefix(), &ops), "ws4",
                                      mode, &ops);
        !s.ok()) co_return s;
  } else {
    if (Status s = co_await RenewCost(d3_, make_for(endpoints_from(leader), next_prefix(), &ops),
                                      "ws4", mode + " (leader)", &ops);
        !s.ok()) co_return s;
    const int follower = (leader + 1) % members;
    if (Status s = co_await RenewCost(d3_, make_for(endpoints_from(follower), next_prefix(), &ops),
                                      "ws4", mode + " (follower)", &ops);
        !s.ok()) co_return s;
  }

  // 2. capacity moves, D = 3 s and 15 s (clients in member order).
  for (Term* t : {&d3_, &d15_}) {
    Log(mode + ": capacity moves, " + t->name);
    auto list = co_await StartBrokers(*t, make_for(m.Endpoints(), next_prefix(), nullptr),
                                      Ids("ws2", "ws3"));
    if (!list.ok()) co_return list.status();
    Status s = co_await Moves(*t, *(*list)[0], *(*list)[1], mode + " " + t->name);
    if (s.ok() && members == 3 && t == &d15_) {
      // 4. leader change while the demand moves from A to B.
      Log(mode + ": leader kills");
      Emu& a = *(*list)[0];
      Emu& b = *(*list)[1];
      EmuBroker* from = a.broker->lease() > b.broker->lease() ? a.broker.get() : b.broker.get();
      EmuBroker* to = from == a.broker.get() ? b.broker.get() : a.broker.get();
      std::vector<double> first_ok, moves;
      std::uint64_t failed = 0, lapses = 0;
      for (int rep = 0; rep < o_.leader_reps && s.ok(); ++rep) {
        co_await Sleep(std::chrono::milliseconds(std::uniform_int_distribution<long>(500, 5000)(rng_)));
        const int l = m.Leader();
        if (l < 0) { s = Status(Errc::kBrokerUnavailable, "no leader before the kill"); break; }
        const auto f0 = from->failed_renews + to->failed_renews;
        const auto l0 = from->lapses + to->lapses;
        const auto t0 = Clock::now();
        m.Kill(l);
        from->SetDemand(0);
        to->SetDemand(t->pool);
        const bool moved = co_await WaitFor([&] { return to->lease() >= t->pool - 1; },
                                            std::chrono::seconds(60));
        if (!moved) { s = Status(Errc::kTimeout, "no move after the leader kill"); break; }
        moves.push_back(Ms(Clock::now() - t0));
        for (EmuBroker* e : {from, to}) {
          auto it = std::find_if(e->ok_at.begin(), e->ok_at.end(), [&](auto x) { return x > t0; });
          if (it != e->ok_at.end()) first_ok.push_back(Ms(*it - t0));
        }
        failed += from->failed_renews + to->failed_renews - f0;
        lapses += from->lapses + to->lapses - l0;
        // Restart the member (started on this thread; its health polled here).
        // The brokers keep renewing meanwhile on the other two.
        if (!m.Restart(l)) { s = Status(Errc::kBrokerUnavailable, m.error()); break; }
        std::swap(from, to);
      }
      if (s.ok()) {
        Add("leader", mode + " D=15s leader killed: first ok renew",
               "median " + Fmt(Quantile(first_ok, 0.5), 0) + " ms",
                "max " + Fmt(Max(first_ok), 0) + " ms", "n " + std::to_string(first_ok.size()));
        Add("leader", mode + " D=15s leader killed: capacity move",
               "median " + Fmt(Quantile(moves, 0.5), 0) + " ms", "max " + Fmt(Max(moves), 0) + " ms",
                "renews failed " + std::to_string(failed), "leases lapsed " + std::to_string(lapses));
        g_json["leader first_ok " + mode] = ToJson(first_ok);
        g_json["leader move " + mode] = ToJson(moves);
      }
    }
    co_await StopAll(*list);
    if (!s.ok()) co_return s;
  }

  // 3. writes per broker per second at steady state (etcd's /metrics).
  for (Term* t : {&d15_, &d3_}) {
    Log(mode + ": steady-state writes, " + t->name);
    std::vector<std::string> ids;
    for (int i = 0; i < o_.writers; ++i) ids.push_back("ws" + std::to_string(i + 2));
    dsb::bench::EtcdOpStats wops;
    auto list = co_await StartBrokers(*t, make_for(m.Endpoints(), next_prefix(), &wops), ids);
    if (!list.ok()) co_return list.status();
    const std::uint32_t each = t->pool / static_cast<std::uint32_t>(o_.writers);
    if (t == &d15_) {
      // A burst: every broker renews in the same instant (what a revoke or a
      // limit change seen by every broker's watch, or brokers started
      // together, cause). Every renew writes the meta key, so the
      // transactions of one round conflict: one commits, the others redo.
      const auto lost0 = wops.lost_compares;
      const auto failed0 = std::accumulate(list->begin(), list->end(), std::uint64_t{0},
                                           [](std::uint64_t n, const auto& e) {
                                             return n + e->broker->failed_renews;
                                           });
      co_await Sleep(t->cluster.term / 24 + std::chrono::milliseconds(100));  // early renews allowed
      std::vector<std::size_t> oks;
      std::vector<std::uint64_t> fails;
      for (auto& e : *list) {
        oks.push_back(e->broker->ok_at.size());
        fails.push_back(e->broker->failed_renews);
      }
      const auto b0 = Clock::now();
      for (auto& e : *list) e->broker->SetDemand(1);
      co_await WaitFor([&] {
        for (std::size_t i = 0; i < list->size(); ++i) {
          const EmuBroker& e = *(*list)[i]->broker;
          if (e.ok_at.size() <= oks[i] && e.failed_renews <= fails[i]) {
            return false;
          }
        }
        return true;
      }, t->cluster.term / 3);
      double last = 0;
      for (std::size_t i = 0; i < list->size(); ++i) {
        const auto& at = (*list)[i]->broker->ok_at;
        if (at.size() > oks[i]) last = std::max(last, Ms(at[oks[i]] - b0));
      }
      const auto failed = std::accumulate(list->begin(), list->end(), std::uint64_t{0},
                                          [](std::uint64_t n, const auto& e) {
                                            return n + e->broker->failed_renews;
                                          }) - failed0;
      Add("writes", mode + " burst: " + std::to_string(o_.writers) + " brokers renew at once",
          "all granted after " + Fmt(last, 0) + " ms",
          "lost compares " + std::to_string(wops.lost_compares - lost0),
          "renews without grant " + std::to_string(failed));
      co_await Sleep(std::chrono::seconds(1));
    }
    // Spread the brokers' renew phases over D/3 (a demand change renews at
    // once and restarts the D/3 schedule), as brokers started at different
    // times are; started together they would all renew in the same instant.
    for (auto& e : *list) {
      e->broker->SetDemand(each);
      co_await Sleep(t->cluster.term / 3 / o_.writers);
    }
    // Settle: the demand changes make early renews; then one renew interval.
    co_await Sleep(t->cluster.term / 3 + std::chrono::seconds(1));
    const std::vector<std::string> names = Ids("etcd_mvcc_put_total", "etcd_mvcc_txn_total",
                                               "etcd_mvcc_range_total",
                                               "etcd_server_proposals_committed_total");
    // Every member applies every write; the leader's counters are read.
    const std::string lead = m.Endpoint(std::max(0, m.Leader()));
    auto before = dsb::bench::EtcdMetrics(lead, names, std::chrono::seconds(3));
    const auto txns0 = wops.txns, ka0 = wops.keepalive.ms.size(), lost0 = wops.lost_compares,
               ranges0 = wops.ranges;
    const auto w0 = Clock::now();
    const auto window = o_.quick ? t->cluster.term * 2 / 3 : t->cluster.term * 2;
    co_await Sleep(window);
    auto after = dsb::bench::EtcdMetrics(lead, names, std::chrono::seconds(3));
    const double secs = std::chrono::duration<double>(Clock::now() - w0).count();
    co_await StopAll(*list);
    if (!before.ok() || !after.ok()) co_return before.ok() ? after.status() : before.status();
    const double per = 1.0 / (secs * o_.writers);
    auto d = [&](const std::string& n) { return ((*after)[n] - (*before)[n]) * per; };
    // etcd's own counters: raft proposals committed (every txn, also one whose
    // compare failed, is one replicated write) and keys put.
    Add("writes", mode + " " + t->name + " per broker per s (etcd /metrics)",
        "raft proposals " + Fmt(d("etcd_server_proposals_committed_total"), 3),
        "keys put " + Fmt(d("etcd_mvcc_put_total"), 3),
        std::to_string(o_.writers) + " brokers, " + Fmt(secs, 1) + " s");
    Add("writes", mode + " " + t->name + " per broker per s (sent)",
        "txns " + Fmt(static_cast<double>(wops.txns - txns0) * per, 3),
        "lost compares " + Fmt(static_cast<double>(wops.lost_compares - lost0) * per, 3),
        "keepalives " + Fmt(static_cast<double>(wops.keepalive.ms.size() - ka0) * per, 3),
        "ranges " + Fmt(static_cast<double>(wops.ranges - ranges0) * per, 3));
  }
  co_return Status::Ok();
}

awaitable<void> Bench::Run() {
  auto t3 = MakeTerm("3s", "1s");
  auto t15 = MakeTerm("15s", "5s");
  if (!t3.ok() || !t15.ok()) {
    std::fprintf(stderr, "cluster file: %s\n",
                 (t3.ok() ? t15.status() : t3.status()).message().c_str());
    co_return;
  }
  d3_ = std::move(t3).value();
  d15_ = std::move(t15).value();
  std::printf("pool P = %u (limit 60, 20 brokers x 1 system slot, floor 0)\n", d3_.pool);
  auto check = [](const Status& s, const char* what) {
    if (!s.ok()) {
      std::fprintf(stderr, "%s: %s\n", what, s.message().c_str());
      ++g_failures;
    }
  };
  auto want = [this](const char* part) { return o_.only.empty() || o_.only == part; };
  if (want("embedded")) {
    check(co_await Embedded(d3_, /*cost=*/true), "embedded D=3s");
    check(co_await Embedded(d15_, /*cost=*/false), "embedded D=15s");
  }
  if (want("etcd1")) check(co_await Etcd(1), "etcd 1 member");
  if (want("etcd3")) check(co_await Etcd(3), "etcd 3 members");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
      o.reps = 3;
      o.leader_reps = 2;
      o.renew_samples = 100;
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--out" && i + 1 < argc) {
      o.out = argv[++i];
    } else if (a == "--broker" && i + 1 < argc) {
      o.broker = argv[++i];
    } else if (a == "--only" && i + 1 < argc) {
      o.only = argv[++i];
    } else if (a == "--reps" && i + 1 < argc) {
      o.reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr,
                   "usage: dsb-bench-etcd [--quick] [--reps N] [--out FILE.json] [--keep]\n"
                   "                      [--broker PATH] [--only embedded|etcd1|etcd3]\n"
                   "  Runs the embedded coordinator and etcd (1 and 3 members) side by side on\n"
                   "  loopback and prints a table (docs/etcd.md). Needs /usr/bin/etcd and\n"
                   "  dsb-broker built beside it.\n");
      return 2;
    }
  }
  if (o.broker.empty()) o.broker = dsb::testing::BinPath("dsb-broker");
  char run_tmpl[] = "/tmp/dsb-bench-etcd.XXXXXX";
  if (::mkdtemp(run_tmpl) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  double load[3] = {0, 0, 0};
  ::getloadavg(load, 3);
  std::printf("dsb-bench-etcd: %ld cores, load average %.2f %.2f %.2f at start; run folder %s\n",
              ::sysconf(_SC_NPROCESSORS_ONLN), load[0], load[1], load[2], run_tmpl);
  asio::io_context io;
  Bench bench(io, o, run_tmpl);
  asio::co_spawn(io, bench.Run(), [](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "bench failed: %s\n", ex.what());
        ++g_failures;
      }
    }
  });
  io.run();
  ::getloadavg(load, 3);
  std::printf("load average at the end: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
  if (!o.out.empty()) {
    json::array rows;
    for (const auto& r : g_rows) {
      json::array cells;
      for (const auto& c : r.cells) cells.push_back(json::value(c));
      rows.push_back(json::object{{"section", r.section}, {"label", r.label}, {"cells", cells}});
    }
    g_json["rows"] = rows;
    std::ofstream(o.out) << json::serialize(g_json) << "\n";
  }
  if (!o.keep) {
    std::error_code ec;
    fs::remove_all(run_tmpl, ec);
  } else {
    std::printf("kept %s (the etcd members' folders: DSB_KEEP_SCRATCH=1)\n", run_tmpl);
  }
  return g_failures == 0 ? 0 : 1;
}
