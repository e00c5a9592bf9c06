#include "tools/bench/bench_support.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/admin_client.h"
#include "common/local_frame.h"
#include "common/local_protocol.h"
#include "shm/slot_table.h"

namespace dsb::bench {
namespace {

// ---- What an interrupted run must clean up (read by a signal handler) ------

constexpr std::size_t kMaxPids = 64;
constexpr std::size_t kMaxPaths = 32;
constexpr std::size_t kPathBytes = 256;

std::array<std::atomic<pid_t>, kMaxPids> g_pids{};
struct CleanupPath {
  std::atomic<bool> used{false};
  bool is_dir = false;
  char path[kPathBytes] = {};
};
std::array<CleanupPath, kMaxPaths> g_paths;
std::array<std::atomic<int>, 4> g_sem_ids{};  // SysV ids + 1 (0 = unused)

void TrackPid(pid_t pid) {
  for (auto& slot : g_pids) {
    pid_t expected = 0;
    if (slot.compare_exchange_strong(expected, pid)) return;
  }
}

void UntrackPid(pid_t pid) {
  for (auto& slot : g_pids) {
    pid_t expected = pid;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

extern "C" void OnTerminatingSignal(int) {
  for (auto& slot : g_pids) {
    const pid_t pid = slot.load();
    if (pid > 0) ::kill(pid, SIGKILL);
  }
  for (auto& id : g_sem_ids) {
    const int v = id.load();
    if (v > 0) ::semctl(v - 1, 0, IPC_RMID);
  }
  for (int pass = 0; pass < 2; ++pass) {  // files first, then folders
    for (auto& p : g_paths) {
      if (!p.used.load() || p.is_dir != (pass == 1)) continue;
      if (p.is_dir) {
        ::rmdir(p.path);
      } else {
        ::unlink(p.path);
      }
    }
  }
  ::_exit(130);
}

void RegisterPath(const std::string& path, bool is_dir) {
  if (path.size() >= kPathBytes) return;
  for (auto& p : g_paths) {
    if (p.used.load()) continue;
    std::memcpy(p.path, path.c_str(), path.size() + 1);
    p.is_dir = is_dir;
    p.used.store(true);
    return;
  }
}

Status Ping(const std::string& socket) {
  auto reply = AdminCall(socket, local_protocol::Request(local_protocol::Op::kPing),
                         std::chrono::milliseconds(2000));
  return reply.ok() ? Status::Ok() : reply.status();
}

std::string ReadFileText(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

void RegisterCleanupPath(const std::string& path) { RegisterPath(path, false); }

void UnregisterCleanupPath(const std::string& path) {
  for (auto& p : g_paths) {
    if (p.used.load() && path == p.path) p.used.store(false);
  }
}

void RegisterCleanupSemId(int id) {
  for (auto& slot : g_sem_ids) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, id + 1)) return;
  }
}

void UnregisterCleanupSemId(int id) {
  for (auto& slot : g_sem_ids) {
    int expected = id + 1;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

void InstallCleanupHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnTerminatingSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

std::int64_t NowNs() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::chrono::nanoseconds CpuTimeOf(const struct rusage& usage) {
  using std::chrono::microseconds;
  using std::chrono::seconds;
  return seconds(usage.ru_utime.tv_sec) + microseconds(usage.ru_utime.tv_usec) +
         seconds(usage.ru_stime.tv_sec) + microseconds(usage.ru_stime.tv_usec);
}

std::chrono::nanoseconds ProcessCpuTime() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

std::optional<std::uint64_t> ReadVmKb(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0) return std::stoull(line.substr(n));
  }
  return std::nullopt;
}

char ThreadState(pid_t pid, pid_t tid) {
  char path[96];
  if (tid == 0) {
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  } else {
    std::snprintf(path, sizeof path, "/proc/%d/task/%d/stat", static_cast<int>(pid),
                  static_cast<int>(tid));
  }
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return 0;
  char buf[512];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* paren = std::strrchr(buf, ')');  // the command name may hold spaces
  return (paren != nullptr && paren[1] == ' ') ? paren[2] : 0;
}

double Quantile(std::vector<double>& values, double q) {
  std::sort(values.begin(), values.end());
  const auto last = static_cast<double>(values.size() - 1);
  return values[static_cast<std::size_t>(std::lround(q * last))];
}

// ---- ChildProcess --------------------------------------------------------

Result<ChildProcess> ChildProcess::Spawn(const std::function<int()>& body) {
  std::fflush(nullptr);  // no buffered output may be written twice
  const pid_t pid = ::fork();
  if (pid < 0) return Status{Errc::kInternal, std::string("fork: ") + std::strerror(errno)};
  if (pid == 0) {
    int rc = 111;
    try {
      rc = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dsb-bench helper %d: %s\n", static_cast<int>(::getpid()), e.what());
    }
    ::_exit(rc);
  }
  TrackPid(pid);
  ChildProcess c;
  c.pid_ = pid;
  return c;
}

ChildProcess::~ChildProcess() { Kill(); }

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), status_(other.status_) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    Kill();
    pid_ = std::exchange(other.pid_, -1);
    status_ = other.status_;
  }
  return *this;
}

bool ChildProcess::Exited() {
  if (pid_ <= 0) return true;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    status_ = st;
    UntrackPid(pid_);
    pid_ = -1;
    return true;
  }
  return false;
}

Result<int> ChildProcess::Wait(std::chrono::milliseconds timeout, struct rusage* usage) {
  if (pid_ <= 0) return status_;
  const auto deadline = Clock::now() + timeout;
  struct rusage ru {};
  for (;;) {
    int st = 0;
    const pid_t r = ::wait4(pid_, &st, WNOHANG, &ru);
    if (r == pid_) {
      status_ = st;
      UntrackPid(pid_);
      pid_ = -1;
      if (usage != nullptr) *usage = ru;
      return st;
    }
    if (r < 0 && errno != EINTR) {
      const int err = errno;
      UntrackPid(pid_);
      pid_ = -1;
      return Status{Errc::kInternal, std::string("waitpid: ") + std::strerror(err)};
    }
    if (Clock::now() >= deadline) {
      Kill();
      return Status{Errc::kTimeout, "helper process did not exit in time; killed"};
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void ChildProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  status_ = st;
  UntrackPid(pid_);
  pid_ = -1;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
               ChildProcess* child) {
  const auto deadline = Clock::now() + timeout;
  // Yield a little, then sleep: on 2 cores a spinning waiter would take the
  // CPU from the very processes it waits for.
  for (std::uint32_t spins = 0;; ++spins) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    if (child != nullptr && child->Exited()) return pred();
    if (spins < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

// ---- BrokerProcess -------------------------------------------------------

Result<std::unique_ptr<BrokerProcess>> BrokerProcess::Start(
    const std::filesystem::path& binary, const std::vector<BenchTarget>& targets) {
  if (::access(binary.c_str(), X_OK) != 0) {
    return Status{Errc::kConfig, "dsb-broker not found or not executable at " + binary.string() +
                                     " (build target dsb-broker, or pass --broker PATH)"};
  }
  char tmpl[] = "/tmp/dsb-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return Status{Errc::kInternal, std::string("mkdtemp: ") + std::strerror(errno)};
  }
  auto b = std::unique_ptr<BrokerProcess>(new BrokerProcess());
  b->dir_ = tmpl;
  b->socket_ = (b->dir_ / "dsb.sock").string();
  b->shm_prefix_ = "bench" + std::to_string(::getpid());
  b->targets_ = targets;
  const auto config = b->dir_ / "broker.toml";
  const auto log = b->dir_ / "broker.log";
  {
    std::ofstream out(config);
    out << "[broker]\n"
        << "id = \"bench\"\n"
        << "socket = \"" << b->socket_ << "\"\n"
        << "shm_prefix = \"" << b->shm_prefix_ << "\"\n"
        << "log_level = \"warn\"\n"
        << "log_file = \"" << log.string() << "\"\n";
    for (const BenchTarget& t : targets) {
      out << "\n[[targets]]\nname = \"" << t.name << "\"\nlimit = " << t.limit
          << "\nquarantine = \"0s\"\n";
    }
  }
  RegisterCleanupPath(config.string());
  RegisterCleanupPath(log.string());
  RegisterCleanupPath(b->socket_);
  for (const BenchTarget& t : targets) RegisterCleanupPath("/dev/shm/" + b->SegmentName(t.name));
  RegisterPath(b->dir_.string(), true);

  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return Status{Errc::kInternal, std::string("fork: ") + std::strerror(errno)};
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
    const std::string cfg = config.string();
    ::execl(binary.c_str(), binary.c_str(), "--config", cfg.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "exec %s: %s\n", binary.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  b->pid_ = pid;
  TrackPid(pid);

  const auto deadline = Clock::now() + std::chrono::seconds(10);
  Status last{Errc::kBrokerUnavailable, "not started"};
  while (Clock::now() < deadline) {
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      UntrackPid(pid);
      b->pid_ = -1;
      return Status{Errc::kBrokerUnavailable, "dsb-broker exited at start (" +
                                                  DescribeWaitStatus(st) +
                                                  "); log: " + ReadFileText(log)};
    }
    last = Ping(b->socket_);
    if (last.ok()) return b;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Status{Errc::kBrokerUnavailable,
                "dsb-broker did not answer ping within 10 s: " + last.message()};
}

BrokerProcess::~BrokerProcess() { Stop(); }

std::string BrokerProcess::SegmentName(const std::string& target) const {
  return shm::SegmentName(shm_prefix_, target);
}

void BrokerProcess::Stop() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    int st = 0;
    while (::waitpid(pid_, &st, WNOHANG) != pid_) {
      if (Clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    UntrackPid(pid_);
    pid_ = -1;
  }
  for (const BenchTarget& t : targets_) {
    (void)shm::SlotTable::Remove(SegmentName(t.name));
    UnregisterCleanupPath("/dev/shm/" + SegmentName(t.name));
  }
  targets_.clear();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    for (const char* f : {"broker.toml", "broker.log", "dsb.sock"}) {
      UnregisterCleanupPath((dir_ / f).string());
    }
    UnregisterCleanupPath(dir_.string());
    dir_.clear();
  }
}

}  // namespace dsb::bench
