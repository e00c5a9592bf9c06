// dsb-winbench: the slot table's fast path and wake-up on Windows, beside a named Windows
// semaphore, in one run (Google Benchmark has no mingw build in Debian; this is the small
// Windows counterpart of tools/bench's families of the same meaning, docs/benchmarks.md).
//
//   dsb-winbench [--runs 5] [--pairs 20000] [--wakes 300]
//
// Families (each printed as one JSON line, then a table):
//   pair/<P>   one thread, one process, capacity 4: take a free unit and give it back.
//              ns per pair: batches of 1000 pairs timed with QueryPerformanceCounter, the
//              median and p99 over all batches of all runs, and each run's median.
//              <P> = slot_table (dsb::shm::SlotTable TryAcquire + Release, what dsb::Client
//              does underneath: no system call) and semaphore (a named semaphore:
//              WaitForSingleObject(0) + ReleaseSemaphore, two system calls).
//   wake/<P>   capacity 1, two processes: the parent holds the unit, a child process (this
//              .exe with --child) blocks in Acquire / WaitForSingleObject; the parent stamps
//              QueryPerformanceCounter (system-wide) and releases; the child stamps when its
//              wait returns. ns from release to the waiter running: median, p99, max.
//              Linux checks that the waiter's thread is asleep (state S in /proc) before it
//              releases; Windows has no cheap equivalent, so the parent waits 3 ms after the
//              child announced it is about to wait (the wait starts within microseconds).
//
// Every wait is bounded (10 s: a longer one means the benchmark is broken, not slow); the
// child is ended with the parent (a kill-on-close job object) and never outlives a run.
#include <windows.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#ifdef DSB_WINBENCH_HAS_SHM
#include "shm/segment_layout.h"
#include "shm/slot_table.h"
#endif

namespace {

constexpr DWORD kBound = 10'000;  // ms: any single wait longer than this is a failure

std::int64_t QpcNow() {
  LARGE_INTEGER v;
  ::QueryPerformanceCounter(&v);
  return v.QuadPart;
}

double QpcToNs(std::int64_t ticks) {
  static const double ns_per_tick = [] {
    LARGE_INTEGER f;
    ::QueryPerformanceFrequency(&f);
    return 1e9 / static_cast<double>(f.QuadPart);
  }();
  return static_cast<double>(ticks) * ns_per_tick;
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// ---- the control page shared with the wake child ------------------------------------------

struct Control {
  std::atomic<std::uint32_t> round{0};    // parent: the round the child should run
  std::atomic<std::uint32_t> waiting{0};  // child: about to wait in round k
  std::atomic<std::uint32_t> done{0};     // child: woken in round k (latency stored)
  std::atomic<std::uint32_t> quit{0};
  std::atomic<std::uint32_t> failed{0};
  std::atomic<std::int64_t> released_at{0};  // parent's QPC stamp before the release
  std::atomic<std::int64_t> woken_at{0};     // child's QPC stamp when its wait returned
};

// A named page of shared memory (a pagefile-backed section) holding a Control.
class ControlPage {
 public:
  static std::unique_ptr<ControlPage> Open(const std::wstring& name, bool create) {
    auto p = std::unique_ptr<ControlPage>(new ControlPage());
    p->section_ = create ? ::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE, 0,
                                                sizeof(Control), name.c_str())
                         : ::OpenFileMappingW(FILE_MAP_ALL_ACCESS, FALSE, name.c_str());
    if (p->section_ == nullptr) return nullptr;
    void* view = ::MapViewOfFile(p->section_, FILE_MAP_ALL_ACCESS, 0, 0, sizeof(Control));
    if (view == nullptr) return nullptr;
    p->control_ = create ? new (view) Control() : static_cast<Control*>(view);
    return p;
  }
  ~ControlPage() {
    if (control_ != nullptr) ::UnmapViewOfFile(control_);
    if (section_ != nullptr) ::CloseHandle(section_);
  }
  Control& operator*() { return *control_; }

 private:
  ControlPage() = default;
  HANDLE section_ = nullptr;
  Control* control_ = nullptr;
};

// Spins (yielding) until `pred` or `bound_ms`; false on timeout.
template <class F>
bool SpinUntil(F pred, DWORD bound_ms = kBound) {
  const std::int64_t end = QpcNow() + static_cast<std::int64_t>(
                                          static_cast<double>(bound_ms) * 1e6 / QpcToNs(1));
  while (!pred()) {
    if (QpcNow() > end) return false;
    ::SwitchToThread();
  }
  return true;
}

// ---- the primitives: Make(capacity) in the parent, Open(name) in the child -----------------

class Semaphore {
 public:
  static std::unique_ptr<Semaphore> Make(const std::wstring& name, LONG capacity) {
    auto s = std::unique_ptr<Semaphore>(new Semaphore());
    s->h_ = ::CreateSemaphoreW(nullptr, capacity, capacity, name.c_str());
    return s->h_ != nullptr ? std::move(s) : nullptr;
  }
  static std::unique_ptr<Semaphore> Open(const std::wstring& name) {
    auto s = std::unique_ptr<Semaphore>(new Semaphore());
    s->h_ = ::OpenSemaphoreW(SEMAPHORE_ALL_ACCESS, FALSE, name.c_str());
    return s->h_ != nullptr ? std::move(s) : nullptr;
  }
  ~Semaphore() {
    if (h_ != nullptr) ::CloseHandle(h_);
  }
  bool TryAcquire() { return ::WaitForSingleObject(h_, 0) == WAIT_OBJECT_0; }
  bool Acquire() { return ::WaitForSingleObject(h_, kBound) == WAIT_OBJECT_0; }
  void Release() { ::ReleaseSemaphore(h_, 1, nullptr); }

 private:
  Semaphore() = default;
  HANDLE h_ = nullptr;
};

#ifdef DSB_WINBENCH_HAS_SHM
class Slots {
 public:
  static std::unique_ptr<Slots> Make(const std::string& name, std::uint32_t capacity) {
    dsb::shm::CreateOptions o;
    o.name = name;
    o.target = "bench";
    o.slot_count = 64;
    o.capacity = capacity;
    auto t = dsb::shm::SlotTable::Create(o);
    if (!t.ok()) {
      std::fprintf(stderr, "dsb-winbench: %s\n", t.status().message().c_str());
      return nullptr;
    }
    return Wrap(std::move(t).value());
  }
  static std::unique_ptr<Slots> Open(const std::string& name) {
    auto t = dsb::shm::SlotTable::Attach(name);
    if (!t.ok()) {
      std::fprintf(stderr, "dsb-winbench child: %s\n", t.status().message().c_str());
      return nullptr;
    }
    return Wrap(std::move(t).value());
  }
  bool TryAcquire() {
    const auto i = table_->TryAcquire(word_);
    if (i) index_ = *i;
    return i.has_value();
  }
  bool Acquire() {
    auto r = table_->Acquire(word_, std::chrono::milliseconds(kBound), nullptr);
    if (!r.ok()) return false;
    index_ = *r;
    return true;
  }
  void Release() { table_->Release(index_, word_); }

 private:
  static std::unique_ptr<Slots> Wrap(std::unique_ptr<dsb::shm::SlotTable> t) {
    auto s = std::unique_ptr<Slots>(new Slots());
    s->table_ = std::move(t);
    s->word_ = dsb::shm::HeldWord(s->table_->AllocateOwner(), false);
    return s;
  }
  Slots() = default;
  std::unique_ptr<dsb::shm::SlotTable> table_;
  std::uint64_t word_ = 0;
  std::uint32_t index_ = 0;
};
#endif

// ---- measurements -------------------------------------------------------------------------

struct Figures {
  std::string name;
  std::vector<double> samples;     // ns
  std::vector<double> run_medians;  // ns
  std::string error;
};

template <class P>
void Pairs(P& p, int runs, int pairs, Figures& f) {
  constexpr int kBatch = 1000;
  for (int r = 0; r < runs; ++r) {
    std::vector<double> batch_ns;
    for (int done = 0; done < pairs; done += kBatch) {
      const std::int64_t t0 = QpcNow();
      for (int i = 0; i < kBatch; ++i) {
        if (!p.TryAcquire()) [[unlikely]] {
          f.error = "acquire failed although capacity was free";
          return;
        }
        p.Release();
      }
      batch_ns.push_back(QpcToNs(QpcNow() - t0) / kBatch);
    }
    f.run_medians.push_back(Quantile(batch_ns, 0.5));
    f.samples.insert(f.samples.end(), batch_ns.begin(), batch_ns.end());
  }
}

std::wstring Widen(const std::string& s) { return std::wstring(s.begin(), s.end()); }

// Starts this .exe as the wake child for primitive `kind`; returns its process handle.
HANDLE StartChild(const std::string& kind, const std::string& name, HANDLE job) {
  wchar_t self[MAX_PATH];
  if (::GetModuleFileNameW(nullptr, self, MAX_PATH) == 0) return nullptr;
  std::wstring line = L"\"" + std::wstring(self) + L"\" --child " + Widen(kind) + L" " +
                      Widen(name);
  STARTUPINFOW si{};
  si.cb = sizeof(si);
  PROCESS_INFORMATION pi{};
  if (!::CreateProcessW(nullptr, line.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr, &si,
                        &pi)) {
    return nullptr;
  }
  if (job != nullptr) ::AssignProcessToJobObject(job, pi.hProcess);
  ::CloseHandle(pi.hThread);
  return pi.hProcess;
}

// The parent's side of wake/<P>: `p` made with capacity 1.
template <class P>
void Wakes(P& p, const std::string& kind, const std::string& name, int wakes, HANDLE job,
           Figures& f) {
  auto page = ControlPage::Open(Widen(name + "-control"), true);
  if (!page) {
    f.error = "cannot create the control page";
    return;
  }
  Control& c = **page;
  if (!p.TryAcquire()) {
    f.error = "cannot take the unit";
    return;
  }
  const HANDLE child = StartChild(kind, name, job);
  if (child == nullptr) {
    f.error = "cannot start the child process";
    return;
  }
  for (std::uint32_t k = 1; k <= static_cast<std::uint32_t>(wakes); ++k) {
    c.round.store(k, std::memory_order_release);
    if (!SpinUntil([&] { return c.waiting.load() == k || c.failed.load() != 0; })) {
      f.error = "the child never came to wait";
      break;
    }
    if (c.failed.load() != 0) {
      f.error = "the child failed";
      break;
    }
    ::Sleep(3);  // see the header: the child is now asleep in its wait
    c.released_at.store(QpcNow(), std::memory_order_release);
    p.Release();
    if (!SpinUntil([&] { return c.done.load() == k || c.failed.load() != 0; }) ||
        c.failed.load() != 0) {
      f.error = "the child was not woken";
      break;
    }
    f.samples.push_back(QpcToNs(c.woken_at.load() - c.released_at.load()));
    // The child gave the unit back right after its stamp: take it for the next round.
    if (!SpinUntil([&] { return p.TryAcquire(); })) {
      f.error = "the parent could not take the unit back";
      break;
    }
  }
  c.quit.store(1);
  c.round.fetch_add(1);
  if (::WaitForSingleObject(child, kBound) != WAIT_OBJECT_0) ::TerminateProcess(child, 1);
  ::CloseHandle(child);
  p.Release();
  if (!f.samples.empty()) f.run_medians.push_back(Quantile(f.samples, 0.5));
}

// The child's side: wait for each round, announce, block in Acquire, stamp, release.
template <class P>
int WakeChild(P& p, Control& c) {
  for (std::uint32_t k = 1;; ++k) {
    if (!SpinUntil([&] { return c.round.load() >= k; })) return 1;
    if (c.quit.load() != 0) return 0;
    c.waiting.store(k, std::memory_order_release);
    if (!p.Acquire()) {
      c.failed.store(1);
      return 1;
    }
    c.woken_at.store(QpcNow(), std::memory_order_release);
    p.Release();
    c.done.store(k, std::memory_order_release);
  }
}

int RunChild(const std::string& kind, const std::string& name) {
  auto page = ControlPage::Open(Widen(name + "-control"), false);
  if (!page) return 1;
  if (kind == "semaphore") {
    auto s = Semaphore::Open(Widen(name));
    if (!s) {
      (**page).failed.store(1);
      return 1;
    }
    return WakeChild(*s, **page);
  }
#ifdef DSB_WINBENCH_HAS_SHM
  if (kind == "slot_table") {
    auto s = Slots::Open(name);
    if (!s) {
      (**page).failed.store(1);
      return 1;
    }
    return WakeChild(*s, **page);
  }
#endif
  (**page).failed.store(1);
  return 2;
}

void Print(const Figures& f) {
  std::string medians;
  for (double m : f.run_medians) {
    medians += (medians.empty() ? "" : ",") + std::to_string(static_cast<long long>(m + 0.5));
  }
  if (!f.error.empty()) {
    std::printf("{\"name\":\"%s\",\"error\":\"%s\"}\n", f.name.c_str(), f.error.c_str());
    return;
  }
  std::vector<double> s = f.samples;
  std::printf("{\"name\":\"%s\",\"count\":%zu,\"median_ns\":%.1f,\"p99_ns\":%.1f,\"max_ns\":%.1f,"
              "\"run_medians_ns\":[%s]}\n",
              f.name.c_str(), s.size(), Quantile(s, 0.5), Quantile(s, 0.99),
              s.empty() ? 0.0 : *std::max_element(s.begin(), s.end()), medians.c_str());
}

bool ParseInt(std::string_view text, int& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size() && out > 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string_view(argv[1]) == "--child") return RunChild(argv[2], argv[3]);
  int runs = 5, pairs = 20'000, wakes = 300;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    int* target = a == "--runs" ? &runs : a == "--pairs" ? &pairs : a == "--wakes" ? &wakes : nullptr;
    if (target == nullptr || i + 1 >= argc || !ParseInt(argv[i + 1], *target)) {
      std::fprintf(stderr, "usage: dsb-winbench [--runs N] [--pairs N] [--wakes N]\n");
      return 2;
    }
    ++i;
  }
  const HANDLE job = ::CreateJobObjectW(nullptr, nullptr);
  if (job != nullptr) {
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits{};
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    ::SetInformationJobObject(job, JobObjectExtendedLimitInformation, &limits, sizeof(limits));
  }
  const std::string stem = "dsb-winbench-" + std::to_string(::GetCurrentProcessId());
  std::vector<Figures> all;
  bool failed = false;
  auto add = [&](Figures f) {
    Print(f);
    failed = failed || !f.error.empty();
    all.push_back(std::move(f));
  };
#ifdef DSB_WINBENCH_HAS_SHM
  {
    Figures f{"pair/slot_table", {}, {}, {}};
    if (auto s = Slots::Make(stem + "-pair", 4)) {
      Pairs(*s, runs, pairs, f);
    } else {
      f.error = "cannot create the slot table";
    }
    add(std::move(f));
  }
#endif
  {
    Figures f{"pair/semaphore", {}, {}, {}};
    if (auto s = Semaphore::Make(Widen("Local\\" + stem + "-pair"), 4)) {
      Pairs(*s, runs, pairs, f);
    } else {
      f.error = "cannot create the semaphore";
    }
    add(std::move(f));
  }
#ifdef DSB_WINBENCH_HAS_SHM
  {
    Figures f{"wake/slot_table", {}, {}, {}};
    const std::string name = stem + "-wake";
    if (auto s = Slots::Make(name, 1)) {
      Wakes(*s, "slot_table", name, wakes, job, f);
    } else {
      f.error = "cannot create the slot table";
    }
    add(std::move(f));
  }
#endif
  {
    Figures f{"wake/semaphore", {}, {}, {}};
    const std::string name = "Local\\" + stem + "-wakesem";
    if (auto s = Semaphore::Make(Widen(name), 1)) {
      Wakes(*s, "semaphore", name, wakes, job, f);
    } else {
      f.error = "cannot create the semaphore";
    }
    add(std::move(f));
  }
#ifndef DSB_WINBENCH_HAS_SHM
  std::printf("{\"note\":\"built without dsb::shm for Windows: slot_table rows left out\"}\n");
#endif
  std::printf("\n%-18s %12s %12s %12s   run medians (ns)\n", "family", "median ns", "p99 ns",
              "max ns");
  for (const Figures& f : all) {
    if (!f.error.empty()) {
      std::printf("%-18s FAILED: %s\n", f.name.c_str(), f.error.c_str());
      continue;
    }
    std::string medians;
    for (double m : f.run_medians) medians += " " + std::to_string(static_cast<long long>(m + 0.5));
    std::printf("%-18s %12.0f %12.0f %12.0f  %s\n", f.name.c_str(), Quantile(f.samples, 0.5),
                Quantile(f.samples, 0.99),
                *std::max_element(f.samples.begin(), f.samples.end()), medians.c_str());
  }
  if (job != nullptr) ::CloseHandle(job);
  return failed ? 1 : 0;
}
