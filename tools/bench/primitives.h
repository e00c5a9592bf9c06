// The counting primitives dsb-bench compares, behind one duck-typed shape so
// that every benchmark runs the very same loop over each of them:
//
//   using Token = ...;   // what an acquire hands to the matching release
//   static Result<std::unique_ptr<P>> Make(std::uint32_t capacity, int processes);
//       In the parent, before any fork: a primitive with `capacity` units,
//       to be used by `processes` processes (1 or 2). Process 0 (the parent)
//       is ready to use when Make returns.
//   Status EnterProcess(int proc);   // in a forked child, before using `proc`
//   bool Acquire(int proc, Token& t);     // blocking (false: failed)
//   bool TryAcquire(int proc, Token& t);  // never blocks (false: none free)
//   void Release(int proc, Token& t);
//
// Every primitive's state lives in memory shared with children forked after
// Make (an anonymous MAP_SHARED page, a POSIX shm segment, a SysV set, or a
// pipe), so a child uses the object it inherited. Only the parent destroys a
// primitive (children leave with _exit).
//
// Thread rule: Acquire/TryAcquire/Release from any number of threads of the
// processes; Make and the destructor on the benchmark's main thread.
#ifndef DSB_TOOLS_BENCH_PRIMITIVES_H_
#define DSB_TOOLS_BENCH_PRIMITIVES_H_

#include <errno.h>
#include <semaphore.h>
#include <sys/sem.h>
#include <unistd.h>

#include <array>
#include <boost/interprocess/sync/interprocess_semaphore.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>

#include "common/status.h"
#include "dsb/client.h"
#include "shm/slot_table.h"
#include "tools/bench/bench_support.h"

namespace dsb::bench {

// The broker the client benchmarks talk to (set by main()).
BrokerProcess* CurrentBroker();
void SetCurrentBroker(BrokerProcess* broker);

// The broker target a DsbClient primitive with `capacity` action slots for
// `processes` registered clients uses: in single-machine mode each client's
// system slot comes out of the same table, so its limit is capacity+processes.
std::string ClientTargetName(std::uint32_t capacity, int processes);

// Why this thread's last failed Acquire failed (dsb: the dsb::Errc; the
// others: errno).
inline std::error_code& LastError() {
  thread_local std::error_code ec;
  return ec;
}

// ---- dsb: the slot table directly (what dsb::Client does underneath) ------
class DsbSlotTable {
 public:
  using Token = std::uint32_t;  // slot index

  static Result<std::unique_ptr<DsbSlotTable>> Make(std::uint32_t capacity, int processes);
  ~DsbSlotTable();
  Status EnterProcess(int) { return Status::Ok(); }
  bool Acquire(int proc, Token& t) {
    auto r = table_->Acquire(words_[static_cast<std::size_t>(proc)], kWaitLimit, nullptr);
    if (!r.ok()) {
      LastError() = make_error_code(r.status().code());
      return false;
    }
    t = *r;
    return true;
  }
  bool TryAcquire(int proc, Token& t) {
    auto r = table_->TryAcquire(words_[static_cast<std::size_t>(proc)]);
    if (!r) return false;
    t = *r;
    return true;
  }
  void Release(int proc, Token& t) { table_->Release(t, words_[static_cast<std::size_t>(proc)]); }
  shm::SlotTable& table() { return *table_; }

  // A wait longer than this means the benchmark is broken, not slow.
  static constexpr std::chrono::nanoseconds kWaitLimit = std::chrono::seconds(10);

 private:
  DsbSlotTable() = default;
  std::string name_;
  std::unique_ptr<shm::SlotTable> table_;
  std::array<std::uint64_t, 2> words_{};  // one owner (held word) per process
};

// ---- dsb: the public client library against the real broker ---------------
class DsbClient {
 public:
  using Token = dsb::Permit;

  static Result<std::unique_ptr<DsbClient>> Make(std::uint32_t capacity, int processes);
  ~DsbClient();
  // Registers process `proc`'s own Client with the broker.
  Status EnterProcess(int proc);
  bool Acquire(int proc, Token& t) {
    std::error_code ec;
    t = clients_[static_cast<std::size_t>(proc)]->Acquire(std::chrono::seconds(10), ec);
    if (ec) LastError() = ec;
    return !ec;
  }
  bool TryAcquire(int proc, Token& t) {
    std::error_code ec;
    t = clients_[static_cast<std::size_t>(proc)]->TryAcquire(ec);
    return !ec;
  }
  void Release(int, Token& t) { t.Release(); }

  dsb::Client& client(int proc) { return *clients_[static_cast<std::size_t>(proc)]; }
  // A read-only view of the target's table (counts, waiters) for the bench.
  shm::SlotTable& monitor() { return *monitor_; }
  // Waits up to `timeout` until exactly `registered` system slots and no
  // action slot are held (earlier helpers' deaths processed by the broker).
  bool WaitQuiet(std::uint32_t registered, std::chrono::milliseconds timeout);

 private:
  DsbClient() = default;
  std::string target_;
  std::unique_ptr<shm::SlotTable> monitor_;
  std::array<std::unique_ptr<dsb::Client>, 2> clients_;
};

// ---- POSIX unnamed semaphore, process-shared, in a shared page -------------
class PosixSem {
 public:
  using Token = int;

  static Result<std::unique_ptr<PosixSem>> Make(std::uint32_t capacity, int processes);
  ~PosixSem() { ::sem_destroy(&page_->sem); }
  Status EnterProcess(int) { return Status::Ok(); }
  bool Acquire(int, Token&) {
    while (::sem_wait(&page_->sem) != 0) {
      if (errno != EINTR) {
        LastError() = std::error_code(errno, std::generic_category());
        return false;
      }
    }
    return true;
  }
  bool TryAcquire(int, Token&) { return ::sem_trywait(&page_->sem) == 0; }
  void Release(int, Token&) { ::sem_post(&page_->sem); }

 private:
  struct alignas(64) Page {
    sem_t sem;
  };
  PosixSem() = default;
  std::unique_ptr<SharedPage<Page>> mapping_;
  Page* page_ = nullptr;  // == mapping_->get()
};

// ---- boost::interprocess::interprocess_semaphore in a shared page ----------
// (On Linux, Boost 1.81 builds it on a process-shared sem_t.)
class BoostIpcSem {
 public:
  using Token = int;

  static Result<std::unique_ptr<BoostIpcSem>> Make(std::uint32_t capacity, int processes);
  Status EnterProcess(int) { return Status::Ok(); }
  bool Acquire(int, Token&) {
    page_->sem.wait();
    return true;
  }
  bool TryAcquire(int, Token&) { return page_->sem.try_wait(); }
  void Release(int, Token&) { page_->sem.post(); }

 private:
  struct alignas(64) Page {
    explicit Page(unsigned initial) : sem(initial) {}
    boost::interprocess::interprocess_semaphore sem;
  };
  BoostIpcSem() = default;
  std::unique_ptr<SharedPage<Page>> mapping_;
  Page* page_ = nullptr;  // == mapping_->get()
};

// ---- SysV semaphore with SEM_UNDO (the kernel undoes a dead holder's ops) --
class SysvSemUndo {
 public:
  using Token = int;

  static Result<std::unique_ptr<SysvSemUndo>> Make(std::uint32_t capacity, int processes);
  ~SysvSemUndo();
  Status EnterProcess(int) { return Status::Ok(); }
  bool Acquire(int, Token&) { return Op(-1, SEM_UNDO); }
  bool TryAcquire(int, Token&) { return Op(-1, SEM_UNDO | IPC_NOWAIT); }
  void Release(int, Token&) { Op(+1, SEM_UNDO); }

 private:
  SysvSemUndo() = default;
  bool Op(short delta, int flags) {
    struct sembuf op {};
    op.sem_num = 0;
    op.sem_op = delta;
    op.sem_flg = static_cast<short>(flags);
    while (::semop(id_, &op, 1) != 0) {
      if (errno != EINTR) {
        LastError() = std::error_code(errno, std::generic_category());
        return false;
      }
    }
    return true;
  }
  int id_ = -1;
};

// ---- A make-style jobserver: one byte per token in a pipe ------------------
// Acquire reads one byte, Release writes the same byte back. (No TryAcquire:
// jobserver clients block in read.)
class PipeToken {
 public:
  using Token = char;

  static Result<std::unique_ptr<PipeToken>> Make(std::uint32_t capacity, int processes);
  ~PipeToken();
  Status EnterProcess(int) { return Status::Ok(); }
  bool Acquire(int, Token& t) {
    for (;;) {
      const ssize_t n = ::read(fds_[0], &t, 1);
      if (n == 1) return true;
      if (n < 0 && errno == EINTR) continue;
      LastError() = std::error_code(n < 0 ? errno : EPIPE, std::generic_category());
      return false;
    }
  }
  void Release(int, Token& t) {
    while (::write(fds_[1], &t, 1) != 1 && errno == EINTR) {
    }
  }

 private:
  PipeToken() = default;
  int fds_[2] = {-1, -1};
};

}  // namespace dsb::bench

#endif  // DSB_TOOLS_BENCH_PRIMITIVES_H_
