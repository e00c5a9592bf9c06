// Chaos on real processes, judged by the server's own counts.
//
// Three workstations are network namespaces on one bridge (made and removed by this test), each
// with a real dsb-broker (ws1 coordinates) and DigiScope-like dsb-load processes; ws2 and ws3
// reach the coordinator through their own dsb-faultproxy. dsb-simserver counts the sessions of
// the account (its cap is far above the limit, so it measures rather than enforces: `peak` is
// the judge of S). Faults are drawn from one seed: partitions one way (nftables drop) or stalls
// (proxy), delays near and past D, loss, resets, SIGSTOP/SIGCONT and SIGKILL of clients,
// brokers and the coordinator with restarts, clean restarts, wall-clock steps (libfaketime for
// the broker process only; never the host clock) and, behind switches, the fault kinds that
// break S until issue 8's rules land. After the fault phase everything is healed; the run then
// asserts that every broker serves again within a bound made of D and H, stops the loads and
// asserts that no slot leaked (every broker's held is 0 and the server's count is back to 0).
//
// Environment:
//   DSB_CHAOS_SEED=N          replay a run (the seed is printed by every run)
//   DSB_CHAOS_SECONDS=N       length of the fault phase (short mode: 75)
//   DSB_CHAOS_LONG=1          long mode: DSB_CHAOS_MINUTES (default 10) of faults
//   DSB_CHAOS_REPORT=FILE     append the run's summary (one JSON line) to FILE
//   DSB_KEEP_SCRATCH=1        keep the logs of every process (the folder is printed)
// Fault kinds that broke S before issue 8's rules landed; on by default since they did (each
// names the rule that makes it safe); =0 switches one off:
//   DSB_CHAOS_FILE_CHANGES    restart a broker with its cluster file's floor changed (R1)
//   DSB_CHAOS_CLOCK_BACK      restart a broker with its wall clock stepped back (R0)
//   DSB_CHAOS_LONG_CLIENT_STOPS  SIGSTOP a client for longer than D + H (issue 8 item 2:
//                             a client stopped inside the slot table's queue mutex used to
//                             wedge the broker's fence)
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <functional>
#include <deque>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "tests/chaos/chaos_world.h"
#include "tests/support/broker_admin.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace dsb::chaos {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;
using Seconds = std::chrono::duration<double>;

// Lease times short enough that a run sees many terms.
constexpr auto kTerm = 2s;   // D
constexpr auto kDrain = 1s;  // H
constexpr double kEps = 0.001;
constexpr auto kAdoptGrace = 2s;
constexpr int kLimit = 24;      // the account's limit in the cluster file
constexpr int kFloor = 1;        // per broker
constexpr int kSystemSlots = 3;  // per broker: two DigiScope instances and one that replaces a
                                 // killed one while the dead one's registration is quarantined
                                 // (pool = 24 - 3 x (3 + 1) = 12)
constexpr int kServerCap = 96;  // the simserver measures up to here (4 x the limit)
constexpr const char* kUser = "svc-digiscope";
constexpr std::uint16_t kClusterPort = 7400;
constexpr const char* kFaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

// C2/C3: an instance silent this long has given everything back.
constexpr Seconds kSilence = Seconds(kTerm + kDrain) * (1 + kEps);
// Capacity comes back within: the coordinator's learning after a restart (C3), the silence of
// an old instance before its share moves (C2), two terms for renew and grant, the adoption
// grace of a restarted broker, and 5 s for a busy 2-core machine.
constexpr Seconds kRecoveryBound = 2 * kSilence + 2 * Seconds(kTerm) + Seconds(kAdoptGrace) + 5s;

std::uint64_t EnvU64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}
bool EnvOn(const char* name) { return EnvU64(name, 0) != 0; }
// A fault-kind switch: on unless set to 0.
bool SwitchOn(const char* name) { return EnvU64(name, 1) != 0; }

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct FaultRecord {
  double t;  // seconds since the fault phase began
  std::string kind;
  std::string target;
  double seconds;  // how long it lasted (0: instant)
};

struct Workstation {
  int k = 0;
  std::string id;
  fs::path dir, config, cluster, socket, broker_log, control;
  Proc broker;
  Proc proxy;  // ws2, ws3
  std::vector<std::unique_ptr<Proc>> loads;
  std::map<pid_t, std::vector<pid_t>> instances;  // load pid -> its instance pids
  int floor = kFloor;
  long clock_offset_s = 0;  // wall clock of this broker, relative to the host's
  bool broker_busy = false;  // stopped or dead on purpose
  bool net_busy = false;
  std::string state = "running";
};

class ChaosRun {
 public:
  explicit ChaosRun(std::uint64_t seed) : seed_(seed), rng_(seed) {}

  ~ChaosRun() {
    for (auto& w : ws_) {
      // A load ends its DigiScope processes on SIGTERM; a stopped one is continued first, so
      // none outlives the test (SIGKILL of a load would orphan them).
      for (pid_t pid : LiveInstances(w)) ::kill(pid, SIGCONT);
      for (auto& l : w.loads) l->Stop(SIGTERM, 5s);
      w.broker.Kill();
      w.proxy.Kill();
    }
    server_.Kill();
    net_.reset();
    for (auto& w : ws_) {
      const std::string seg = "/dev/shm/dsb-" + stem_ + w.id + "-exch01";
      ::unlink(seg.c_str());
      ::unlink(("/dev/shm/.dsb-lock-dsb-" + stem_ + w.id + "-exch01").c_str());
    }
    // libfaketime (Debian's 0.9.10 has no FAKETIME_DISABLE_SHM) leaves a segment and a
    // semaphore per process it ran in, named by the pid.
    for (pid_t pid : faketime_pids_) {
      ::unlink(("/dev/shm/faketime_shm_" + std::to_string(pid)).c_str());
      ::unlink(("/dev/shm/sem.faketime_sem_" + std::to_string(pid)).c_str());
    }
  }

  // Returns an empty string when the world is up, else why it cannot be made: a skip when
  // namespaces cannot be made here, a failure (`*fail` set) when dsb's own processes do not start.
  std::string Setup(bool* fail) {
    *fail = false;
    if (::geteuid() != 0) return "network namespaces need root (run as root, or skip)";
    if (!fs::exists("/usr/sbin/ip") || !fs::exists("/usr/sbin/nft") ||
        !fs::exists("/usr/bin/setpriv")) {
      return "needs iproute2 (/usr/sbin/ip), nftables (/usr/sbin/nft) and util-linux's setpriv";
    }
    dir_ = scratch_.path();
    if (dir_.empty()) return "cannot make a scratch folder under /tmp";
    stem_ = "dsbc" + std::to_string(::getpid());
    Netns::SweepStale(dir_ / "net.log");
    net_ = std::make_unique<Netns>(stem_, dir_ / "net.log");
    std::string why;
    if (!net_->Make(&why)) return "cannot make the network namespaces: " + why;
    *fail = true;

    // The judge.
    const fs::path port_file = dir_ / "sim.port";
    std::vector<std::string> argv = net_->In(net_->hub());
    for (std::string a : {Bin("dsb-simserver"), std::string("--listen"), std::string("10.77.0.254:0"),
                          std::string("--port-file"), port_file.string(), std::string("--limit"),
                          std::to_string(kServerCap), std::string("--linger-ms"), std::string("300")}) {
      argv.push_back(a);
    }
    if (!server_.Start(argv, dir_ / "sim.log") ||
        !testing::WaitUntil([&] { return fs::exists(port_file); }, 10s)) {
      return "dsb-simserver did not start: " + ReadAll(dir_ / "sim.log");
    }
    std::string where = ReadAll(port_file);
    server_port_ = static_cast<std::uint16_t>(std::stoul(where.substr(where.rfind(':') + 1)));

    std::string key;
    {
      std::mt19937_64 krng(std::random_device{}());
      char hex[17];
      for (int i = 0; i < 4; ++i) {
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(krng()));
        key += hex;
      }
    }
    for (int k = 1; k <= 3; ++k) {
      Workstation& w = ws_.emplace_back();
      w.k = k;
      w.id = "ws" + std::to_string(k);
      w.dir = dir_ / w.id;  // one folder per machine: its own copy of the cluster file
      fs::create_directories(w.dir / "state");
      w.cluster = w.dir / "cluster.toml";
      w.config = w.dir / (w.id + ".toml");
      w.socket = w.dir / (w.id + ".sock");
      w.broker_log = w.dir / "broker.log";
      w.control = w.dir / "proxy.ctl";
      std::ofstream(w.dir / "cluster.key") << key;
      fs::permissions(w.dir / "cluster.key", fs::perms::owner_read | fs::perms::owner_write);
      WriteCluster(w);
      std::ofstream(w.config) << "[broker]\nid = \"" << w.id << "\"\nsocket = \"" << w.socket.string()
                              << "\"\nshm_prefix = \"" << stem_ << w.id
                              << "\"\ncluster = \"cluster.toml\"\nkey_file = \"cluster.key\"\n"
                              << "adopt_grace = \"" << kAdoptGrace.count() << "s\"\n"
                              << "state_dir = \"" << (w.dir / "state").string() << "\"\n"
                              << (k == 1 ? "listen = \"0.0.0.0:7400\"\n" : "");
      if (k >= 2) {
        std::vector<std::string> p = net_->In(net_->ws(k));
        for (std::string a : {Bin("dsb-faultproxy"), std::string("--listen"),
                              "10.77.0.1:" + std::to_string(kClusterPort), std::string("--connect"),
                              "10.77.0.101:" + std::to_string(kClusterPort), std::string("--control"),
                              w.control.string(), std::string("--seed"), std::to_string(seed_ + static_cast<std::uint64_t>(k))}) {
          p.push_back(a);
        }
        if (!w.proxy.Start(p, w.dir / "proxy.log") ||
            !testing::WaitUntil([&] { return ProxyCommand(w.control, "STATS").has_value(); }, 10s)) {
          return "dsb-faultproxy did not start: " + ReadAll(w.dir / "proxy.log");
        }
      }
    }
    for (auto& w : ws_) StartBroker(w);
    for (auto& w : ws_) {
      if (!testing::WaitUntil([&] { return ReadAll(w.broker_log).find(" ready on ") != std::string::npos; }, 20s)) {
        return "broker " + w.id + " did not get ready: " + ReadAll(w.broker_log);
      }
    }
    return "";
  }

  // The fault phase, the heal, the recovery check and the quiesce. Prints the report.
  void Run(Seconds fault_phase) {
    have_faketime_ = fs::exists(kFaketime);
    std::printf("chaos: seed %llu (replay: DSB_CHAOS_SEED=%llu), fault phase %.0f s, D = %llds, "
                "H = %llds, L = %d, scratch %s\n",
                static_cast<unsigned long long>(seed_), static_cast<unsigned long long>(seed_),
                fault_phase.count(), static_cast<long long>(kTerm.count()),
                static_cast<long long>(kDrain.count()), kLimit, dir_.c_str());
    std::printf("chaos: switches file-changes(R1)=%d clock-back(R0)=%d long-client-stops(item 2)=%d; "
                "wall-clock steps %s\n",
                SwitchOn("DSB_CHAOS_FILE_CHANGES"), SwitchOn("DSB_CHAOS_CLOCK_BACK"),
                SwitchOn("DSB_CHAOS_LONG_CLIENT_STOPS"),
                have_faketime_ ? "via libfaketime (broker process only)" : "skipped: no libfaketime");
    std::fflush(stdout);
    load_end_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(fault_phase) + 60s;
    for (auto& w : ws_) StartLoad(w, 2);
    // The coordinator leaves its learning period and every broker gets a lease before any
    // fault (this also proves the namespaces route: ws2 and ws3 reach it through their proxy).
    started_ = testing::WaitUntil([&] { return ServesEverywhere(); }, 30s);
    if (!started_) return;

    t0_ = Clock::now();
    const auto end = t0_ + std::chrono::duration_cast<Clock::duration>(fault_phase);
    auto next = t0_ + Gap();
    while (Clock::now() < end) {
      RunDueUndos(false);
      SamplePeak();
      if (Clock::now() >= next) {
        InjectOne();
        next = Clock::now() + Gap();
      }
      std::this_thread::sleep_for(50ms);  // the schedule's step, not a synchronisation
    }
    // Heal: every pending undo now, then everything back to normal.
    RunDueUndos(true);
    for (auto& w : ws_) {
      if (w.k >= 2) {
        net_->Heal(w.k);
        ProxyCommand(w.control, "PASS");
      }
      w.broker.Signal(SIGCONT);
      if (w.floor != kFloor) {
        // The operator puts the file back as the other machines have it (R1 refuses a file
        // that differs at one generation, so capacity could not come back otherwise).
        w.floor = kFloor;
        WriteCluster(w);
        w.broker.Stop(SIGTERM, 3s);
      }
      if (!w.broker.alive()) StartBroker(w);
    }
    const auto healed = Clock::now();
    // A fresh DigiScope on every machine: the running ones may have lost their
    // registration for good (stopped past the broker's adopt grace while it
    // restarted) and want nothing, which would read as capacity not back.
    for (auto& w : ws_) StartLoad(w, 1);
    const bool back = testing::WaitUntil(
        [&] {
          SamplePeak();
          return ServesEverywhere();
        },
        std::chrono::duration_cast<std::chrono::milliseconds>(kRecoveryBound));
    recovery_ = Clock::now() - healed;
    recovered_ = back;

    // Quiesce: the loads stop (SIGTERM: they close what they hold), then every slot must be
    // free at every broker and the server must count nothing.
    for (auto& w : ws_) {
      for (auto& l : w.loads) l->Stop(SIGTERM, 15s);
    }
    const bool quiet = testing::WaitUntil([&] { return Leaked() == 0 && ServerCurrent() == 0; }, 20s);
    (void)quiet;
    leaked_ = Leaked();
    server_current_ = ServerCurrent();
    Report();
  }

  std::uint64_t seed() const { return seed_; }
  double peak() const { return peak_; }
  double opened() const { return opened_; }
  std::int64_t leaked() const { return leaked_; }
  double server_current() const { return server_current_; }
  bool started() const { return started_; }
  bool recovered() const { return recovered_; }
  Seconds recovery() const { return recovery_; }
  std::size_t faults() const { return log_.size(); }
  std::string StatusDump() {
    std::string out;
    for (auto& w : ws_) {
      out += w.id + ": " +
             json::serialize(testing::AskBroker(w.socket, local_protocol::Op::kStatus)) + "\n";
    }
    return out;
  }

 private:
  static std::string Bin(const std::string& name) { return std::string(DSB_BIN_DIR) + "/" + name; }

  void WriteCluster(const Workstation& w) {
    std::ofstream f(w.cluster);
    f << "[cluster]\ncoordinator = \"ws1\"\nterm = \"" << kTerm.count() << "s\"\ndrain = \""
      << kDrain.count() << "s\"\neps = " << kEps << "\n\n";
    for (int k = 1; k <= 3; ++k) {
      // Every machine's file lists the same floors, except a floor changed on purpose on this
      // machine (DSB_CHAOS_FILE_CHANGES).
      const int floor = k == w.k ? w.floor : kFloor;
      f << "[[brokers]]\nid = \"ws" << k << "\"\naddress = \"10.77.0." << k << ":" << kClusterPort
        << "\"\nsystem_slots = " << kSystemSlots << "\nfloor = " << floor << "\n\n";
    }
    f << "[[targets]]\nname = \"exch01\"\nlimit = " << kLimit
      << "\nreserve = 0\nquarantine = \"1s\"\n";
  }

  void StartBroker(Workstation& w) {
    std::vector<std::string> argv = net_->In(net_->ws(w.k));
    if (w.clock_offset_s != 0 && have_faketime_) {
      argv.insert(argv.end(), {"/usr/bin/env", std::string("LD_PRELOAD=") + kFaketime,
                               "FAKETIME=" + std::string(w.clock_offset_s > 0 ? "+" : "") +
                                   std::to_string(w.clock_offset_s),
                               "FAKETIME_DONT_FAKE_MONOTONIC=1"});
    }
    argv.insert(argv.end(), {Bin("dsb-broker"), "--config", w.config.string()});
    w.broker.Start(argv, w.broker_log);
    if (w.clock_offset_s != 0 && have_faketime_) faketime_pids_.push_back(w.broker.pid());
  }

  void StartLoad(Workstation& w, int instances) {
    constexpr std::size_t kMaxLoads = 200;  // bound on processes started per workstation
    if (w.loads.size() >= kMaxLoads) return;
    const double left = std::max(1.0, Seconds(load_end_ - Clock::now()).count());
    std::vector<std::string> argv = net_->In(net_->ws(w.k));
    for (std::string a :
         {Bin("dsb-load"), std::string("--socket"), w.socket.string(), std::string("--target"),
          std::string("exch01"), std::string("--server"), "10.77.0.254:" + std::to_string(server_port_),
          std::string("--user"), std::string(kUser), std::string("--instances"), std::to_string(instances),
          std::string("--threads"), std::string("6"), std::string("--duration"), std::to_string(left),
          std::string("--hold-ms-min"), std::string("20"), std::string("--hold-ms-max"), std::string("150"),
          std::string("--acquire-timeout-ms"), std::string("500"), std::string("--seed"),
          std::to_string(rng_())}) {
      argv.push_back(a);
    }
    auto p = std::make_unique<Proc>();
    const fs::path log = w.dir / ("load" + std::to_string(w.loads.size()) + ".log");
    if (p->Start(argv, log)) {
      load_logs_[p->pid()] = log;
      w.loads.push_back(std::move(p));
    }
  }

  // Instance PIDs of w's loads that still run (a load prints "instance I pid P" for each).
  std::vector<pid_t> LiveInstances(Workstation& w) {
    std::vector<pid_t> out;
    for (auto& l : w.loads) {
      if (!l->alive()) continue;
      const std::string text = ReadAll(load_logs_[l->pid()]);
      std::istringstream in(text);
      std::string line;
      while (std::getline(in, line)) {
        int i = 0, pid = 0;
        if (std::sscanf(line.c_str(), "dsb-load: instance %d pid %d", &i, &pid) == 2 &&
            ParentOf(pid) == l->pid()) {
          out.push_back(pid);
        }
      }
    }
    return out;
  }

  // The parent of `pid` (0 when gone): a client is signalled only while its load still owns
  // it, so a reused PID is never hit.
  static pid_t ParentOf(pid_t pid) {
    const std::string stat = ReadAll("/proc/" + std::to_string(pid) + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) return 0;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || state == 'Z') return 0;
    return ppid;
  }

  Clock::duration Gap() {
    return std::chrono::milliseconds(300 + static_cast<std::int64_t>(rng_() % 1700));
  }
  double Uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng_); }
  double Now() const { return Seconds(Clock::now() - t0_).count(); }

  void Record(const std::string& kind, const std::string& target, double seconds) {
    log_.push_back({Now(), kind, target, seconds});
    std::printf("  t=%7.3f  %-18s %-5s %s\n", log_.back().t, kind.c_str(), target.c_str(),
                seconds > 0 ? (std::to_string(seconds).substr(0, 5) + " s").c_str() : "");
    std::fflush(stdout);
  }

  void Later(double seconds, std::function<void()> f) {
    undos_.emplace_back(Clock::now() + std::chrono::duration_cast<Clock::duration>(Seconds(seconds)),
                        std::move(f));
  }

  void RunDueUndos(bool all) {
    for (;;) {
      auto it = std::min_element(undos_.begin(), undos_.end(),
                                 [](const auto& a, const auto& b) { return a.first < b.first; });
      if (it == undos_.end() || (!all && it->first > Clock::now())) return;
      auto f = std::move(it->second);
      undos_.erase(it);
      f();
    }
  }

  // Picks and injects one fault (a few tries for a target that is free).
  void InjectOne() {
    const bool file_changes = SwitchOn("DSB_CHAOS_FILE_CHANGES");
    const bool clock_back = SwitchOn("DSB_CHAOS_CLOCK_BACK");
    const bool long_stops = SwitchOn("DSB_CHAOS_LONG_CLIENT_STOPS");
    const double d = Seconds(kTerm).count(), h = Seconds(kDrain).count();
    // A switched-on kind is drawn more often (three extra draws map to it), so a short run
    // shows it a few times.
    const bool switched = file_changes || clock_back;
    for (int attempt = 0; attempt < 10; ++attempt) {
      const int kind = std::min(13, static_cast<int>(rng_() % (switched ? 17 : 14)));
      Workstation& net_ws = ws_[1 + rng_() % 2];  // ws2 or ws3: they have a link to break
      Workstation& any_ws = ws_[rng_() % 3];
      switch (kind) {
        case 0:
        case 1: {  // partition one way (nftables drop)
          if (net_ws.net_busy) continue;
          const bool up = kind == 0;
          const double dur = Uniform(0.5, 3 * d);
          net_->Drop(net_ws.k, up);
          net_ws.net_busy = true;
          Record(up ? "partition-up" : "partition-down", net_ws.id, dur);
          Later(dur, [this, &net_ws] { net_->Heal(net_ws.k); net_ws.net_busy = false; });
          return;
        }
        case 2: {  // the proxy stalls one direction
          if (net_ws.net_busy) continue;
          const bool up = rng_() % 2 == 0;
          const double dur = Uniform(0.5, 3 * d);
          ProxyCommand(net_ws.control, std::string("STALL ") + (up ? "up" : "down"));
          net_ws.net_busy = true;
          Record(up ? "stall-up" : "stall-down", net_ws.id, dur);
          Later(dur, [this, &net_ws] { ProxyCommand(net_ws.control, "PASS"); net_ws.net_busy = false; });
          return;
        }
        case 3: {  // delay near and past D, both ways
          if (net_ws.net_busy) continue;
          const double delay = Uniform(0.5 * d, 1.5 * d);
          const double dur = Uniform(1, 3 * d);
          ProxyCommand(net_ws.control, "DELAY both " + std::to_string(static_cast<int>(delay * 1000)) + " 100");
          net_ws.net_busy = true;
          Record("delay-" + std::to_string(static_cast<int>(delay * 1000)) + "ms", net_ws.id, dur);
          Later(dur, [this, &net_ws] { ProxyCommand(net_ws.control, "PASS"); net_ws.net_busy = false; });
          return;
        }
        case 4: {  // loss: a lost segment costs a retransmission timeout
          if (net_ws.net_busy) continue;
          const double dur = Uniform(1, 3 * d);
          ProxyCommand(net_ws.control, "LOSS both 0.3 " + std::to_string(200 + rng_() % 800));
          net_ws.net_busy = true;
          Record("loss", net_ws.id, dur);
          Later(dur, [this, &net_ws] { ProxyCommand(net_ws.control, "PASS"); net_ws.net_busy = false; });
          return;
        }
        case 5: {  // reset, then refuse new connections for a while
          if (net_ws.net_busy) continue;
          const double dur = Uniform(0, 2);
          ProxyCommand(net_ws.control, "RESET");
          ProxyCommand(net_ws.control, "REFUSE on");
          net_ws.net_busy = true;
          Record("reset", net_ws.id, dur);
          Later(dur, [this, &net_ws] { ProxyCommand(net_ws.control, "REFUSE off"); net_ws.net_busy = false; });
          return;
        }
        case 6: {  // SIGSTOP a client (shorter than H unless the item-2 switch is on)
          const auto live = LiveInstances(any_ws);
          if (live.empty()) continue;
          const pid_t pid = live[rng_() % live.size()];
          const pid_t parent = ParentOf(pid);
          const double dur = long_stops ? Uniform(d + h, 3 * (d + h)) : Uniform(0.1, h / 2);
          if (::kill(pid, SIGSTOP) != 0) continue;
          Record(long_stops ? "stop-client-long" : "stop-client", any_ws.id, dur);
          Later(dur, [pid, parent] {
            if (ParentOf(pid) == parent) ::kill(pid, SIGCONT);
          });
          return;
        }
        case 7: {  // SIGKILL a client; a new DigiScope starts in its place
          const auto live = LiveInstances(any_ws);
          if (live.empty()) continue;
          const pid_t pid = live[rng_() % live.size()];
          ::kill(pid, SIGKILL);
          Record("kill-client", any_ws.id, 0);
          StartLoad(any_ws, 1);
          return;
        }
        case 8:
        case 9: {  // SIGSTOP a broker or the coordinator
          if (any_ws.broker_busy || !any_ws.broker.alive()) continue;
          const double dur = Uniform(0.2, 2 * (d + h));
          any_ws.broker.Signal(SIGSTOP);
          any_ws.broker_busy = true;
          Record(any_ws.k == 1 ? "stop-coordinator" : "stop-broker", any_ws.id, dur);
          Later(dur, [&any_ws] { any_ws.broker.Signal(SIGCONT); any_ws.broker_busy = false; });
          return;
        }
        case 10:
        case 11: {  // SIGKILL a broker or the coordinator; restart it (same file) soon after
          if (any_ws.broker_busy) continue;
          const double dur = Uniform(0, 2);
          any_ws.broker.Kill();
          any_ws.broker_busy = true;
          Record(any_ws.k == 1 ? "kill-coordinator" : "kill-broker", any_ws.id, dur);
          Later(dur, [this, &any_ws] { StartBroker(any_ws); any_ws.broker_busy = false; });
          return;
        }
        case 12: {  // clean restart (SIGTERM), same file
          if (any_ws.broker_busy) continue;
          any_ws.broker.Stop(SIGTERM, 3s);  // bounded: undos wait meanwhile
          StartBroker(any_ws);
          Record("restart", any_ws.id, 0);
          return;
        }
        case 13: {  // file change or wall-clock step, with a restart
          if (any_ws.broker_busy) continue;
          int which = 1;  // a clock step forward
          if (switched && rng_() % 4 != 0) {
            which = file_changes && clock_back ? static_cast<int>(rng_() % 2) * 2
                                               : (file_changes ? 0 : 2);
          }
          std::string kind_name;
          if (which == 0 && file_changes) {
            // R1: a file that differs only in this broker's floor (lowered to 0 or raised by
            // 3 or 6), or back to the floor the other machines have.
            constexpr int kChanged[] = {0, kFloor + 3, kFloor + 6};
            any_ws.floor = any_ws.floor == kFloor ? kChanged[rng_() % 3] : kFloor;
            WriteCluster(any_ws);
            kind_name = "file-floor-" + std::to_string(any_ws.floor);
          } else if (which == 1 && have_faketime_) {
            any_ws.clock_offset_s += 60 + static_cast<long>(rng_() % 86400);
            kind_name = "clock-forward";
          } else if (which == 2 && have_faketime_ && clock_back) {
            any_ws.clock_offset_s -= 60;  // R0: the epoch is a wall-clock reading today
            kind_name = "clock-back-60s";
          } else {
            continue;
          }
          any_ws.broker.Stop(SIGTERM, 3s);  // bounded: undos wait meanwhile
          StartBroker(any_ws);
          Record(kind_name, any_ws.id, 0);
          return;
        }
      }
    }
  }

  json::object ServerUser() {
    auto line = NetnsCall(net_->hub(), "10.77.0.254", server_port_, "STATS");
    if (!line) return {};
    boost::system::error_code ec;
    json::value v = json::parse(*line, ec);
    if (ec || !v.is_object()) return {};
    const auto* users = v.as_object().if_contains("users");
    const auto* u = users != nullptr && users->is_object() ? users->as_object().if_contains(kUser) : nullptr;
    return u != nullptr && u->is_object() ? u->as_object() : json::object{};
  }
  static double Num(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    boost::system::error_code ec;
    const double d = v != nullptr ? v->to_number<double>(ec) : 0;
    return v == nullptr || ec ? 0 : d;
  }
  double ServerCurrent() {
    const json::object u = ServerUser();
    return u.empty() ? -1 : Num(u, "current");
  }

  void SamplePeak() {
    const json::object u = ServerUser();
    if (u.empty()) return;
    const double current = Num(u, "current");
    if (current > kLimit && first_over_ < 0) first_over_ = Now();
  }

  // Every broker answers and holds a lease above its floor (its clients want more).
  bool ServesEverywhere() {
    for (auto& w : ws_) {
      json::object s = testing::AskBroker(w.socket, local_protocol::Op::kStatus);
      const auto* lease = s.if_contains("lease");
      if (lease == nullptr || !lease->is_object()) return false;
      const auto& ts = lease->as_object().at("targets").as_array();
      if (ts.empty() || ts[0].as_object().at("lease").to_number<std::int64_t>() <= 0) return false;
    }
    return true;
  }

  // Slots held at all brokers (-1 if one does not answer).
  std::int64_t Leaked() {
    std::int64_t sum = 0;
    for (auto& w : ws_) {
      json::object s = testing::AskBroker(w.socket, local_protocol::Op::kStatus);
      const auto* ts = s.if_contains("targets");
      if (ts == nullptr || !ts->is_array() || ts->as_array().empty()) return -1;
      sum += ts->as_array()[0].as_object().at("held").to_number<std::int64_t>();
    }
    return sum;
  }

  void Report() {
    const json::object u = ServerUser();
    peak_ = Num(u, "peak");
    opened_ = Num(u, "opened");
    std::map<std::string, int> by_kind;
    for (const auto& f : log_) {
      std::string k = f.kind;
      if (k.rfind("delay-", 0) == 0) k = "delay";
      if (k.rfind("file-floor-", 0) == 0) k = "file-floor";
      ++by_kind[k];
    }
    std::printf("chaos: seed %llu: %zu faults:", static_cast<unsigned long long>(seed_), log_.size());
    for (const auto& [k, n] : by_kind) std::printf(" %s %d,", k.c_str(), n);
    std::printf("\nchaos: server peak %.0f (limit %d), sessions opened %.0f, refused by the server "
                "%.0f, held at the brokers after quiesce %lld, server count after quiesce %.0f, "
                "capacity back %.1f s after the heal (bound %.1f s)%s\n",
                peak_, kLimit, opened_, Num(u, "refused"), static_cast<long long>(leaked_),
                server_current_, recovery_.count(), kRecoveryBound.count(),
                recovered_ ? "" : " NOT BACK");
    if (first_over_ >= 0) {
      std::printf("chaos: S VIOLATED (seed %llu): the server first counted more than %d at t=%.3f; "
                  "faults in the 10 s before:\n",
                  static_cast<unsigned long long>(seed_), kLimit, first_over_);
      for (const auto& f : log_) {
        if (f.t <= first_over_ && f.t + f.seconds >= first_over_ - 10) {
          std::printf("    t=%7.3f %s %s %.2f s\n", f.t, f.kind.c_str(), f.target.c_str(), f.seconds);
        }
      }
    }
    if (peak_ > kLimit && first_over_ < 0) {
      std::printf("chaos: S VIOLATED (seed %llu): server peak %.0f > %d, too short for the ~50 ms "
                  "sampler to see; the faults with their times are listed above\n",
                  static_cast<unsigned long long>(seed_), peak_, kLimit);
    }
    std::fflush(stdout);
    if (const char* path = std::getenv("DSB_CHAOS_REPORT")) {
      json::object kinds;
      for (const auto& [k, n] : by_kind) kinds[k] = n;
      std::ofstream(path, std::ios::app)
          << json::serialize(json::object{{"seed", std::to_string(seed_)},
                                          {"faults", log_.size()},
                                          {"by_kind", kinds},
                                          {"peak", peak_},
                                          {"limit", kLimit},
                                          {"opened", opened_},
                                          {"refused", Num(u, "refused")},
                                          {"leaked", leaked_},
                                          {"server_after", server_current_},
                                          {"recovery_s", recovery_.count()},
                                          {"first_over_t", first_over_}})
          << "\n";
    }
  }

  std::vector<pid_t> faketime_pids_;  // brokers started under libfaketime
  std::uint64_t seed_;
  std::mt19937_64 rng_;
  testing::ScratchDir scratch_{"dsbchaos"};
  fs::path dir_;
  std::string stem_;
  std::unique_ptr<Netns> net_;
  Proc server_;
  std::uint16_t server_port_ = 0;
  std::deque<Workstation> ws_;  // deque: a Workstation owns processes and never moves
  std::map<pid_t, fs::path> load_logs_;
  std::vector<std::pair<Clock::time_point, std::function<void()>>> undos_;
  std::vector<FaultRecord> log_;
  Clock::time_point t0_, load_end_;
  bool have_faketime_ = false;
  double first_over_ = -1;
  double peak_ = 0, opened_ = 0, server_current_ = -1;
  std::int64_t leaked_ = -1;
  bool started_ = false;
  bool recovered_ = false;
  Seconds recovery_{0};
};

TEST(NetnsChaos, TheServerNeverCountsMoreThanTheLimitAndEverySlotComesBack) {
  const std::uint64_t seed = EnvU64("DSB_CHAOS_SEED", std::random_device{}());
  const bool long_mode = EnvOn("DSB_CHAOS_LONG");
  const Seconds phase = long_mode ? Seconds(60.0 * static_cast<double>(EnvU64("DSB_CHAOS_MINUTES", 10)))
                                  : Seconds(static_cast<double>(EnvU64("DSB_CHAOS_SECONDS", 75)));
  ChaosRun run(seed);
  bool fail = false;
  const std::string why = run.Setup(&fail);
  ASSERT_FALSE(fail && !why.empty()) << why;
  if (!why.empty()) {
    std::printf("chaos: SKIPPED (seed %llu): %s\n", static_cast<unsigned long long>(seed), why.c_str());
    GTEST_SKIP() << why;
  }
  run.Run(phase);
  ASSERT_TRUE(run.started()) << "the brokers never all held a lease before the faults\n"
                             << run.StatusDump();
  EXPECT_GT(run.faults(), 0u);
  EXPECT_GT(run.opened(), 0);
  EXPECT_LE(run.peak(), kLimit) << "S broken at the server: seed " << seed;
  EXPECT_TRUE(run.recovered()) << "capacity not back within " << kRecoveryBound.count()
                               << " s (seed " << seed << ")\n" << run.StatusDump();
  EXPECT_EQ(run.leaked(), 0) << "slots held after quiesce (seed " << seed << ")\n" << run.StatusDump();
  EXPECT_EQ(run.server_current(), 0) << "sessions the server still counts (seed " << seed << ")";
}

}  // namespace
}  // namespace dsb::chaos
