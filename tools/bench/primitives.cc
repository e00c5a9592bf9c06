#include "tools/bench/primitives.h"

#include <fcntl.h>
#include <sys/ipc.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace dsb::bench {

namespace {
BrokerProcess* g_broker = nullptr;
}  // namespace

BrokerProcess* CurrentBroker() { return g_broker; }
void SetCurrentBroker(BrokerProcess* broker) { g_broker = broker; }

std::string ClientTargetName(std::uint32_t capacity, int processes) {
  return "c" + std::to_string(capacity) + "p" + std::to_string(processes);
}

// ---- DsbSlotTable ----------------------------------------------------------

Result<std::unique_ptr<DsbSlotTable>> DsbSlotTable::Make(std::uint32_t capacity, int processes) {
  auto p = std::unique_ptr<DsbSlotTable>(new DsbSlotTable());
  p->name_ = "dsb-bench" + std::to_string(::getpid()) + "-own";
  (void)shm::SlotTable::Remove(p->name_);
  shm::CreateOptions o;
  o.name = p->name_;
  o.target = "bench";
  o.slot_count = std::max<std::uint32_t>(64, capacity);  // the scaling runs go to 8192
  o.capacity = capacity;
  auto table = shm::SlotTable::Create(o);
  if (!table.ok()) return table.status();
  RegisterCleanupPath("/dev/shm/" + p->name_);
  p->table_ = std::move(table).value();
  for (int i = 0; i < processes && i < 2; ++i) {
    p->words_[static_cast<std::size_t>(i)] = shm::HeldWord(p->table_->AllocateOwner(), false);
  }
  return p;
}

DsbSlotTable::~DsbSlotTable() {
  table_.reset();
  (void)shm::SlotTable::Remove(name_);
  UnregisterCleanupPath("/dev/shm/" + name_);
}

// ---- DsbClient -------------------------------------------------------------

Result<std::unique_ptr<DsbClient>> DsbClient::Make(std::uint32_t capacity, int processes) {
  BrokerProcess* broker = CurrentBroker();
  if (broker == nullptr) return Status{Errc::kBrokerUnavailable, "no broker running"};
  auto p = std::unique_ptr<DsbClient>(new DsbClient());
  p->target_ = ClientTargetName(capacity, processes);
  auto monitor = shm::SlotTable::Attach(broker->SegmentName(p->target_));
  if (!monitor.ok()) {
    return Status{monitor.status().code(), "target " + p->target_ +
                                               " is not in the bench broker's config: " +
                                               monitor.status().message()};
  }
  p->monitor_ = std::move(monitor).value();
  // The previous run's helper may still be in the broker's reclaim path.
  if (!p->WaitQuiet(0, std::chrono::seconds(5))) {
    return Status{Errc::kTimeout, "target " + p->target_ + " still has slots held by an earlier run"};
  }
  if (Status s = p->EnterProcess(0); !s.ok()) return s;
  return p;
}

DsbClient::~DsbClient() {
  for (auto& c : clients_) c.reset();
}

Status DsbClient::EnterProcess(int proc) {
  ClientOptions o;
  o.socket_path = CurrentBroker()->socket_path();
  o.target = target_;
  o.name = "dsb-bench-" + std::to_string(proc);
  std::error_code ec;
  std::string message;
  clients_[static_cast<std::size_t>(proc)] = dsb::Client::Connect(o, ec, &message);
  if (ec) return Status{Errc::kBrokerUnavailable, "Client::Connect: " + message};
  return Status::Ok();
}

bool DsbClient::WaitQuiet(std::uint32_t registered, std::chrono::milliseconds timeout) {
  return WaitUntil(
      [&] {
        const shm::Counts c = monitor_->Count();
        return c.held_system == registered && c.held_action == 0 && c.waiters == 0;
      },
      timeout);
}

// ---- PosixSem ----------------------------------------------------------------

Result<std::unique_ptr<PosixSem>> PosixSem::Make(std::uint32_t capacity, int) {
  auto p = std::unique_ptr<PosixSem>(new PosixSem());
  p->mapping_ = std::make_unique<SharedPage<Page>>();
  p->page_ = p->mapping_->get();
  if (::sem_init(&p->page_->sem, 1, capacity) != 0) {
    return Status{Errc::kInternal, std::string("sem_init: ") + std::strerror(errno)};
  }
  return p;
}

// ---- BoostIpcSem -------------------------------------------------------------

Result<std::unique_ptr<BoostIpcSem>> BoostIpcSem::Make(std::uint32_t capacity, int) {
  auto p = std::unique_ptr<BoostIpcSem>(new BoostIpcSem());
  try {
    p->mapping_ = std::make_unique<SharedPage<Page>>(capacity);
    p->page_ = p->mapping_->get();
  } catch (const std::exception& e) {
    return Status{Errc::kInternal, std::string("interprocess_semaphore: ") + e.what()};
  }
  return p;
}

// ---- SysvSemUndo ----------------------------------------------------------------

namespace {
union SemUn {  // the caller defines it (semctl(2))
  int val;
  struct semid_ds* buf;
  unsigned short* array;
};
}  // namespace

Result<std::unique_ptr<SysvSemUndo>> SysvSemUndo::Make(std::uint32_t capacity, int) {
  auto p = std::unique_ptr<SysvSemUndo>(new SysvSemUndo());
  p->id_ = ::semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
  if (p->id_ < 0) return Status{Errc::kInternal, std::string("semget: ") + std::strerror(errno)};
  RegisterCleanupSemId(p->id_);
  SemUn arg{};
  arg.val = static_cast<int>(capacity);
  if (::semctl(p->id_, 0, SETVAL, arg) != 0) {
    return Status{Errc::kInternal, std::string("semctl SETVAL: ") + std::strerror(errno)};
  }
  return p;
}

SysvSemUndo::~SysvSemUndo() {
  if (id_ >= 0) {
    ::semctl(id_, 0, IPC_RMID);
    UnregisterCleanupSemId(id_);
  }
}

// ---- PipeToken -------------------------------------------------------------------

Result<std::unique_ptr<PipeToken>> PipeToken::Make(std::uint32_t capacity, int) {
  auto p = std::unique_ptr<PipeToken>(new PipeToken());
  if (::pipe2(p->fds_, O_CLOEXEC) != 0) {
    return Status{Errc::kInternal, std::string("pipe: ") + std::strerror(errno)};
  }
  const std::vector<char> tokens(capacity, '+');
  if (::write(p->fds_[1], tokens.data(), tokens.size()) != static_cast<ssize_t>(tokens.size())) {
    return Status{Errc::kInternal, "cannot fill the token pipe"};
  }
  return p;
}

PipeToken::~PipeToken() {
  for (int fd : fds_) {
    if (fd >= 0) ::close(fd);
  }
}

}  // namespace dsb::bench
