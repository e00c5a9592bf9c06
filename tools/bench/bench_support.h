// Process plumbing for dsb-bench: a broker it starts and stops, helper
// processes it forks and always reaps, shared pages, and small measurements
// (process CPU time, a process's VmRSS, percentiles).
//
// Thread rule: everything here is called from the benchmark's main thread
// (Google Benchmark's thread 0), except the helpers' bodies, which run in the
// forked child. A forked child must leave with _exit (never return into
// Google Benchmark), which ChildProcess::Spawn guarantees.
#ifndef DSB_TOOLS_BENCH_BENCH_SUPPORT_H_
#define DSB_TOOLS_BENCH_BENCH_SUPPORT_H_

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace dsb::bench {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC: comparable across processes

// Nanoseconds of CLOCK_MONOTONIC; stored in shared memory to time a hand-off
// between two processes.
std::int64_t NowNs();

// Total user + system CPU time of this process (all threads) so far.
std::chrono::nanoseconds ProcessCpuTime();
std::chrono::nanoseconds CpuTimeOf(const struct rusage& usage);

// VmRSS (or another "Vm*:" field) of a process from /proc/<pid>/status, in kB.
// nullopt if the process or the field does not exist.
std::optional<std::uint64_t> ReadVmKb(pid_t pid, const char* field = "VmRSS:");

// The scheduler state letter ('R', 'S', ...) of thread `tid` of process
// `pid` (its main thread if tid is 0), or 0 if it cannot be read.
char ThreadState(pid_t pid, pid_t tid = 0);

// Value at quantile q (0..1) of `values`, which it sorts. REQUIRES: non-empty.
double Quantile(std::vector<double>& values, double q);

// An anonymous MAP_SHARED mapping holding one T: shared with every child
// forked after it was made. T must be usable after a plain fork (atomics,
// process-shared primitives).
template <class T>
class SharedPage {
 public:
  template <class... Args>
  explicit SharedPage(Args&&... args) {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    value_ = new (p) T(std::forward<Args>(args)...);
  }
  ~SharedPage() {
    value_->~T();
    ::munmap(value_, sizeof(T));
  }
  SharedPage(const SharedPage&) = delete;
  SharedPage& operator=(const SharedPage&) = delete;
  T* operator->() const { return value_; }
  T& operator*() const { return *value_; }
  T* get() const { return value_; }

 private:
  T* value_;
};

// A forked helper process. Spawn() forks and runs `body` in the child, which
// then _exits with body's return value. The pid is registered so that a
// SIGINT/SIGTERM of the bench kills it (see InstallCleanupHandlers).
class ChildProcess {
 public:
  ChildProcess() = default;
  // Forks. Failure: fork failed (message names errno).
  static Result<ChildProcess> Spawn(const std::function<int()>& body);
  ~ChildProcess();  // SIGKILLs and reaps the child if still running
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // True if the child has already exited (it is then reaped; `status` set).
  bool Exited();
  // Waits up to `timeout` for the child to exit; on timeout SIGKILLs it.
  // Success: the raw wait status; `usage` gets the child's resource usage.
  // Failure: kTimeout (child was killed), kInternal (waitpid failed).
  Result<int> Wait(std::chrono::milliseconds timeout, struct rusage* usage = nullptr);
  // SIGKILLs the child and reaps it.
  void Kill();
  int status() const { return status_; }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

// Describes a raw wait status ("exit 0", "signal 9").
std::string DescribeWaitStatus(int status);

// Polls (yielding, then sleeping 50 us) until pred() is true. Returns false after `timeout`, or as
// soon as `child` (if given) has exited.
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
               ChildProcess* child = nullptr);

// One broker target in the config the bench writes.
struct BenchTarget {
  std::string name;
  int limit = 0;
};

// The dsb-broker process the bench runs for its client and socket benchmarks.
// Start() writes a config in a fresh /tmp/dsb-bench-XXXXXX folder, execs the
// broker and waits until it answers "ping". Stop() (also the destructor)
// SIGTERMs it, reaps it, removes its segments, socket and the folder.
class BrokerProcess {
 public:
  // Failure: kConfig (binary missing), kBrokerUnavailable (did not start or
  // answer within 10 s; the message carries the broker's log).
  static Result<std::unique_ptr<BrokerProcess>> Start(const std::filesystem::path& binary,
                                                      const std::vector<BenchTarget>& targets);
  ~BrokerProcess();
  BrokerProcess(const BrokerProcess&) = delete;
  BrokerProcess& operator=(const BrokerProcess&) = delete;
  void Stop();

  pid_t pid() const { return pid_; }
  const std::string& socket_path() const { return socket_; }
  const std::filesystem::path& dir() const { return dir_; }
  // The shared-memory segment name of `target`.
  std::string SegmentName(const std::string& target) const;

 private:
  BrokerProcess() = default;
  std::filesystem::path dir_;
  std::string socket_;
  std::string shm_prefix_;
  std::vector<BenchTarget> targets_;
  pid_t pid_ = -1;
};

// Installs SIGINT/SIGTERM/SIGHUP handlers that SIGKILL every live
// ChildProcess and the broker, unlink the registered paths and _exit(130).
void InstallCleanupHandlers();
// Registers a path to unlink (file, socket, or "/dev/shm/<name>") on an
// interrupted run. At most 32; later ones are ignored.
void RegisterCleanupPath(const std::string& path);
void UnregisterCleanupPath(const std::string& path);
// Registers a SysV semaphore set to IPC_RMID on an interrupted run (at most 4).
void RegisterCleanupSemId(int id);
void UnregisterCleanupSemId(int id);

}  // namespace dsb::bench

#endif  // DSB_TOOLS_BENCH_BENCH_SUPPORT_H_
