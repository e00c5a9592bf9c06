#include "tests/integration/etcd_world.h"

#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <random>
#include <sstream>

#include "tests/support/broker_admin.h"
#include "tests/support/wait.h"
#include "tests/tools/sim_server_process.h"

namespace dsb::etcdit {

namespace json = boost::json;
using namespace std::chrono_literals;

std::int64_t Int(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return -1;
  if (v->is_string()) {  // 64-bit ids travel as strings
    return static_cast<std::int64_t>(std::strtoll(v->as_string().c_str(), nullptr, 10));
  }
  boost::system::error_code ec;
  const auto n = v->to_number<std::int64_t>(ec);
  return ec ? -1 : n;
}

namespace {

std::string Str(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return "";
  if (v->is_string()) return std::string(v->as_string());
  return json::serialize(*v);
}

}  // namespace

EtcdWorld::EtcdWorld() : t0_(std::chrono::steady_clock::now()) {}

EtcdWorld::~EtcdWorld() {
  StopLoads();
  for (auto& b : brokers_) {
    if (b->running()) b->Stop(SIGKILL);
  }
  if (server_) server_->Kill();
  if (etcd_) etcd_->Stop();
}

int EtcdWorld::pool() const {
  return spec_.limit - spec_.brokers * (spec_.system_slots + spec_.floor);
}

double EtcdWorld::Seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

std::string EtcdWorld::Start(const WorldSpec& spec, bool* skip) {
  *skip = false;
  spec_ = spec;
  t0_ = std::chrono::steady_clock::now();
  if (!scratch_.ok()) return "cannot make a scratch folder";
  etcd_ = std::make_unique<testing::EtcdCluster>();
  if (!testing::EtcdCluster::Available()) {
    *skip = true;
    return "no /usr/bin/etcd (tools/run installs etcd-server)";
  }
  if (!etcd_->Start(spec.members)) return "etcd did not start: " + etcd_->error();

  // The judge: a cap far above the limit, so `peak` measures.
  server_ = std::make_unique<testing::Process>();
  const std::filesystem::path port_file = dir() / "sim.port";
  if (!server_->Start({testing::BinPath("dsb-simserver"), "--listen", "127.0.0.1:0", "--port-file",
                       port_file.string(), "--limit", "1000"},
                      (dir() / "sim.out").string(), (dir() / "sim.err").string()) ||
      !testing::WaitUntil([&] { return std::filesystem::exists(port_file); }, 10s)) {
    return "dsb-simserver did not start: " + testing::ReadFile(dir() / "sim.err");
  }
  // The port file is written once listening; read until it holds a full line.
  testing::WaitUntil([&] { return testing::ReadFile(port_file).find('\n') != std::string::npos; },
                     5s);
  server_address_ = testing::ReadFile(port_file);
  while (!server_address_.empty() &&
         (server_address_.back() == '\n' || server_address_.back() == '\r')) {
    server_address_.pop_back();
  }

  // One key, one cluster file, one broker file per broker.
  prefix_ = "/dsb/" + spec.stem + "/";
  {
    std::ofstream key(dir() / "cluster.key");
    std::mt19937_64 rng(std::random_device{}());
    for (int i = 0; i < 4; ++i) key << std::hex << std::setw(16) << std::setfill('0') << rng();
  }
  ::chmod((dir() / "cluster.key").c_str(), 0600);
  {
    std::ofstream cluster(dir() / "cluster.toml");
    cluster << "[cluster]\nledger = \"etcd\"\netcd_endpoints = [";
    const std::vector<std::string> endpoints = etcd_->Endpoints();
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
      cluster << (i > 0 ? ", " : "") << "\"" << endpoints[i] << "\"";
    }
    cluster << "]\netcd_prefix = \"" << prefix_ << "\"\nterm = \"" << spec.term.count()
            << "ms\"\ndrain = \"" << spec.drain.count() << "ms\"\n\n";
    for (int i = 0; i < spec.brokers; ++i) {
      // Brokers keep an address in the file (its hash is what every broker shares); in etcd
      // mode nothing needs to listen there, but the port is held so no other test takes it.
      ports_.emplace_back();
      cluster << "[[brokers]]\nid = \"" << id(i) << "\"\naddress = \"" << ports_.back().address()
              << "\"\nsystem_slots = " << spec.system_slots << "\nfloor = " << spec.floor
              << "\n\n";
    }
    cluster << "[[targets]]\nname = \"" << kTarget << "\"\nlimit = " << spec.limit
            << "\nquarantine = \"" << spec.quarantine << "\"\n";
  }
  for (int i = 0; i < spec.brokers; ++i) {
    const std::filesystem::path socket = dir() / (id(i) + ".sock");
    const std::filesystem::path config = dir() / (id(i) + ".toml");
    std::ofstream(config) << "[broker]\nid = \"" << id(i) << "\"\nsocket = \"" << socket.string()
                          << "\"\nshm_prefix = \"" << spec.stem << id(i)
                          << "\"\ncluster = \"cluster.toml\"\nkey_file = \"cluster.key\"\n"
                          << "state_dir = \"" << (dir() / ("state-" + id(i))).string() << "\"\n"
                          << "adopt_grace = \"" << spec.adopt_grace << "\"\n";
    brokers_.push_back(std::make_unique<testing::BrokerProcess>(
        config, socket,
        std::vector<std::string>{"dsb-" + spec.stem + id(i) + "-" + std::string(kTarget)}));
  }
  for (int i = 0; i < spec.brokers; ++i) {
    if (!broker(i).Start()) return id(i) + " did not start:\n" + broker(i).log();
  }
  return "";
}

json::object EtcdWorld::Status(int i) {
  return testing::AskBroker(broker(i).socket(), local_protocol::Op::kStatus);
}

AgentTarget EtcdWorld::Agent(int i) {
  AgentTarget a;
  const json::object s = Status(i);
  const json::value* lease = s.if_contains("lease");
  if (lease == nullptr || !lease->is_object()) return a;
  const json::object& l = lease->as_object();
  a.verdict = Str(l, "verdict");
  a.epoch = Str(l, "epoch");
  a.instance = Str(l, "instance");
  const json::value* ts = l.if_contains("targets");
  if (ts == nullptr || !ts->is_array() || ts->as_array().empty()) return a;
  const json::object& t = ts->as_array()[0].as_object();
  a.lease = Int(t, "lease");
  a.action_capacity = Int(t, "action_capacity");
  a.lease_left_ms = Int(t, "lease_left_ms");
  a.applied = Str(t, "applied");
  if (const json::value* st = s.if_contains("targets");
      st != nullptr && st->is_array() && !st->as_array().empty()) {
    a.held = Int(st->as_array()[0].as_object(), "held");
  }
  a.ok = true;
  return a;
}

bool EtcdWorld::AllLeased() {
  for (int i = 0; i < brokers(); ++i) {
    const AgentTarget a = Agent(i);
    if (!a.ok || a.verdict != "accepted" || a.lease <= 0) return false;
  }
  return true;
}

testing::Process* EtcdWorld::StartLoad(int i, int instances, int threads, double seconds,
                                       int hold_ms_min, int hold_ms_max) {
  constexpr std::size_t kMaxLoads = 400;  // bound on load processes per world
  if (loads_.size() >= kMaxLoads) return nullptr;
  Load load;
  load.broker = i;
  load.process = std::make_unique<testing::Process>();
  const std::string out = (dir() / ("load-" + id(i) + "-" + std::to_string(loads_.size()))).string();
  load.log = out + ".log";
  if (!load.process->Start(
          {testing::BinPath("dsb-load"), "--socket", broker(i).socket().string(), "--target",
           kTarget, "--server", server_address_, "--user", kUser, "--instances",
           std::to_string(instances), "--threads", std::to_string(threads), "--duration",
           std::to_string(seconds), "--hold-ms-min", std::to_string(hold_ms_min),
           "--hold-ms-max", std::to_string(hold_ms_max), "--acquire-timeout-ms", "300"},
          out + ".json", load.log.string())) {
    return nullptr;
  }
  loads_.push_back(std::move(load));
  return loads_.back().process.get();
}

void EtcdWorld::StopLoads() {
  for (auto& l : loads_) {
    if (l.process->alive()) l.process->Signal(SIGTERM);
  }
  for (auto& l : loads_) {
    if (l.process->running() && !l.process->Wait(15s)) l.process->Kill();
  }
}

namespace {

// The parent of `pid` (0 when gone or a zombie).
pid_t ParentOf(pid_t pid) {
  const std::string stat = testing::ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  char state = 0;
  int ppid = 0;
  if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || state == 'Z') {
    return 0;
  }
  return ppid;
}

}  // namespace

std::vector<pid_t> EtcdWorld::LiveInstances(int i) {
  std::vector<pid_t> out;
  for (auto& l : loads_) {
    if (l.broker != i || !l.process->alive()) continue;
    std::istringstream in(testing::ReadFile(l.log));
    std::string line;
    while (std::getline(in, line)) {
      int index = 0, pid = 0;
      if (std::sscanf(line.c_str(), "dsb-load: instance %d pid %d", &index, &pid) == 2 &&
          ParentOf(pid) == l.process->pid()) {
        out.push_back(pid);
      }
    }
  }
  return out;
}

std::int64_t EtcdWorld::HeldEverywhere() {
  std::int64_t sum = 0;
  for (int i = 0; i < brokers(); ++i) {
    const json::object s = Status(i);
    const json::value* ts = s.if_contains("targets");
    if (ts == nullptr || !ts->is_array() || ts->as_array().empty()) return -1;
    sum += Int(ts->as_array()[0].as_object(), "held");
  }
  return sum;
}

std::optional<json::object> EtcdWorld::ServerStatsOfUser() {
  load::LineClient c;
  if (c.Connect(server_address_, std::chrono::milliseconds(3000))) return std::nullopt;
  std::error_code ec;
  const std::string line = c.Call("STATS", ec);
  if (ec) return std::nullopt;
  boost::system::error_code jec;
  json::value v = json::parse(line, jec);
  if (jec || !v.is_object()) return std::nullopt;
  // A user the server never saw has no entry yet: an empty object (nothing open, peak 0).
  const json::value* users = v.as_object().if_contains("users");
  const json::value* u =
      users != nullptr && users->is_object() ? users->as_object().if_contains(kUser) : nullptr;
  return u != nullptr && u->is_object() ? u->as_object() : json::object{};
}

json::object EtcdWorld::ServerUser() { return ServerStatsOfUser().value_or(json::object{}); }

double EtcdWorld::ServerPeak() { return tools_test::Num(ServerUser(), "peak"); }

double EtcdWorld::ServerCurrent() {
  const std::optional<json::object> u = ServerStatsOfUser();
  return u ? tools_test::Num(*u, "current") : -1;
}

void EtcdWorld::ServerReset() {
  load::LineClient c;
  if (c.Connect(server_address_, std::chrono::milliseconds(3000))) return;
  std::error_code ec;
  c.Call("STATS RESET", ec);
}

std::string EtcdWorld::Dump(bool with_keys) {
  std::string out;
  for (int i = 0; i < brokers(); ++i) {
    const AgentTarget a = Agent(i);
    out += id(i) + ": verdict " + a.verdict + ", epoch " + a.epoch + ", lease " +
           std::to_string(a.lease) + ", capacity " + std::to_string(a.action_capacity) +
           ", applied " + a.applied + ", held " + std::to_string(a.held) + "\n";
  }
  if (!with_keys) return out;
  if (auto keys = Keys("")) {
    out += "etcd keys under " + prefix() + ":";
    for (const auto& k : *keys) out += " " + k;
    out += "\n";
  }
  return out;
}

std::optional<std::vector<std::string>> EtcdWorld::Keys(const std::string& suffix) {
  std::string endpoints;
  for (const std::string& e : etcd_->Endpoints()) {
    endpoints += (endpoints.empty() ? "" : ",") + e;
  }
  testing::SpawnOptions options;
  options.env = {"ETCDCTL_API=3"};
  options.capture_stderr = false;
  const testing::Outcome o =
      testing::RunProgram({"/usr/bin/etcdctl", "--endpoints=" + endpoints, "--command-timeout=5s",
                           "get", "--prefix", "--keys-only", prefix_ + suffix},
                          30s, options);
  if (o.exit_code != 0) return std::nullopt;
  std::vector<std::string> keys;
  std::istringstream in(o.output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    keys.push_back(line.rfind(prefix_, 0) == 0 ? line.substr(prefix_.size()) : line);
  }
  return keys;
}

}  // namespace dsb::etcdit
