// The dsb client library: registration with the broker, the action-slot fast
// path on the shared-memory table, and reconnection after a broker restart.
#include "dsb/client.h"

#include <algorithm>
#include <boost/json.hpp>
#include <condition_variable>
#include <cstdio>
#include <thread>

#include "client/log.h"
#include "client/permit_access.h"
#include "common/local_frame.h"
#include "common/local_protocol.h"
#include "shm/futex.h"
#include "shm/slot_table.h"

namespace dsb {

namespace json = boost::json;
namespace lp = local_protocol;

// Binds a public CancelToken to the slot table's wait protocol.
class CancelBinding final : public shm::WaitInterrupt {
 public:
  explicit CancelBinding(CancelToken* token) : token_(token) {}
  bool Arm(std::atomic<std::uint32_t>* word) override {
    std::lock_guard lock(token_->mu_);
    if (token_->cancelled_.load(std::memory_order_acquire)) return false;
    token_->words_.push_back(word);
    return true;
  }
  void Disarm(std::atomic<std::uint32_t>* word) override {
    std::lock_guard lock(token_->mu_);
    std::erase(token_->words_, word);
  }
  bool interrupted() const override { return token_->cancelled(); }

 private:
  CancelToken* token_;
};

void CancelToken::Cancel() noexcept {
  std::lock_guard lock(mu_);
  cancelled_.store(true, std::memory_order_release);
  for (auto* word : words_) {
    word->store(1, std::memory_order_seq_cst);
    shm::FutexWake(word, 1);
  }
}

class ClientImpl {
 public:
  explicit ClientImpl(ClientOptions options) : options_(std::move(options)) {}

  ~ClientImpl() {
    // A clean close, in the order that makes it one: give the system slot
    // back, tell the broker goodbye (so the socket's end is not taken for a
    // death: no quarantine, no unclean stop), then close the socket.
    if (system_slot_ && table_) {
      table_->Release(*system_slot_, system_word_);
      system_slot_.reset();
    }
    // Only to a broker we are registered with: while re-registering there
    // is nobody to say goodbye to, and waiting for a connection would hold
    // the caller.
    bool registered = false;
    {
      std::lock_guard lock(mu_);
      registered = connected_;
    }
    if (reader_.joinable() && registered) {
      (void)Request(lp::Request(lp::Op::kGoodbye), std::chrono::milliseconds(1000));
    }
    {
      std::lock_guard lock(mu_);
      closing_ = true;
      ShutdownLocal(fd_);
      // A re-registration in flight ends at once (its read sees the end).
      ShutdownLocal(attempt_fd_);
    }
    cv_.notify_all();
    if (reader_.joinable()) reader_.join();
    if (fence_.joinable()) fence_.join();
    CloseLocal(fd_);
  }

  Status Connect() {
    // One deadline for the whole call: every step (connect, write, reply,
    // retries, the system slot) gets only what is left of it.
    const auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
    auto trust = ResolveBrokerTrust(options_.broker_user, "ClientOptions::broker_user",
                                    "name its user in ClientOptions::broker_user (C: "
                                    "dsb_connect_ex) or in the environment variable " +
                                        std::string(kBrokerUserEnv));
    if (!trust.ok()) return trust.status();
    trust_ = std::move(trust).value();
    // A broker that is starting (no socket yet) or re-adopting its earlier
    // clients after a restart answers kBrokerUnavailable: retry until the
    // connect timeout, so a DigiScope start does not race a broker restart.
    Result<json::object> reply = Status{Errc::kBrokerUnavailable, ""};
    for (;;) {
      auto conn = ConnectBroker(options_.socket_path, trust_, deadline);
      if (conn.ok()) {
        reply = RoundTrip(conn->fd, lp::RegisterRequest(Registration()), deadline);
        if (reply.ok()) {
          fd_ = conn->fd;
          broker_uid_ = conn->peer.uid;
          break;
        }
        CloseLocal(conn->fd);
        if (reply.status().code() == Errc::kTimeout) {
          return Status{Errc::kTimeout, "the broker at " + options_.socket_path +
                                            " did not answer the registration within the "
                                            "connect timeout (" +
                                            std::to_string(options_.connect_timeout.count()) +
                                            " ms): " + reply.status().message()};
        }
      } else {
        reply = conn.status();
      }
      if (reply.status().code() != Errc::kBrokerUnavailable ||
          std::chrono::steady_clock::now() + std::chrono::milliseconds(100) >= deadline) {
        return reply.status();
      }
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    auto registered = ReadRegisterReply(*reply);
    if (!registered.ok()) return registered.status();
    const lp::RegisterReply& r = *registered;
    owner_ = r.owner;
    segment_ = r.segment;
    instance_ = r.instance;
    const bool table_system_slot = r.system_slot_in_table;
    // Only a segment the broker itself made: owned by its uid, no access for
    // others (a planted one could hand out any number of slots).
    auto table = shm::SlotTable::Attach(segment_, shm::AttachOptions{.owner = broker_uid_});
    if (!table.ok()) {
      return {table.status().code(), "the broker at " + options_.socket_path + " (" +
                                         DescribeUid(broker_uid_) + ") named segment: " +
                                         table.status().message()};
    }
    table_ = std::move(table).value();
    if (std::to_string(table_->instance_id()) != instance_) {
      return {Errc::kSegmentInvalid, "segment " + segment_ +
                                         " was re-created while registering; try again"};
    }
    action_word_ = shm::HeldWord(owner_, false);
    system_word_ = shm::HeldWord(owner_, true);
    if (table_system_slot) {
      // Single-machine mode: registrations and actions share the table, so the
      // system connection waits for a slot like any action (in FIFO order),
      // for what is left of the connect timeout.
      const auto left = std::max(std::chrono::steady_clock::duration::zero(),
                                 deadline - std::chrono::steady_clock::now());
      auto slot = table_->Acquire(system_word_, left, nullptr);
      if (!slot.ok()) {
        if (slot.status().code() == Errc::kTimeout ||
            slot.status().code() == Errc::kCapacityExhausted) {
          return {Errc::kTimeout, "no slot for the system connection of target '" +
                                      options_.target + "' within the connect timeout (" +
                                      std::to_string(options_.connect_timeout.count()) +
                                      " ms): the target is at its limit"};
        }
        return slot.status();
      }
      system_slot_ = *slot;
    }
    {
      // Registered from here on (before the reader runs: a Client destroyed
      // at once still says goodbye).
      std::lock_guard lock(mu_);
      connected_ = true;
    }
    reader_ = std::thread([this] { ReaderLoop(); });
    if (r.cluster) fence_ = std::thread([this] { FenceLoop(); });
    return Status::Ok();
  }

  Permit MakePermit(std::uint32_t index) {
    Permit p;
    p.impl_ = this;
    p.index_ = index;
    p.word_ = action_word_;
    return p;
  }

  Permit Acquire(std::chrono::milliseconds timeout, std::error_code& ec, CancelToken* cancel) {
    if (lost_.load(std::memory_order_acquire)) {
      ec = Errc::kNotRegistered;
      return {};
    }
    if (timeout.count() < 0) {
      ec = Errc::kInvalidArgument;
      return {};
    }
    if (cancel != nullptr && cancel->cancelled()) {
      ec = Errc::kCancelled;
      return {};
    }
    // Fast path: no Result, no cancel binding.
    if (const std::uint32_t idx = table_->TryAcquireIndex(action_word_);
        idx != shm::SlotTable::kNoSlot) {
      if (ec) ec.clear();
      return MakePermit(idx);
    }
    CancelBinding binding(cancel);
    auto r = table_->Acquire(action_word_, timeout, cancel != nullptr ? &binding : nullptr);
    if (!r.ok()) {
      ec = r.status().code() == Errc::kCapacityExhausted ? Errc::kTimeout : r.status().code();
      return {};
    }
    ec.clear();
    return MakePermit(*r);
  }

  Permit TryAcquire(std::error_code& ec) {
    if (lost_.load(std::memory_order_acquire)) {
      ec = Errc::kNotRegistered;
      return {};
    }
    const std::uint32_t idx = table_->TryAcquireIndex(action_word_);
    if (idx == shm::SlotTable::kNoSlot) {
      ec = Errc::kCapacityExhausted;
      return {};
    }
    if (ec) ec.clear();
    return MakePermit(idx);
  }

  void Release(std::uint32_t index, std::uint64_t word) { table_->Release(index, word); }
  void ReleaseConfirmed(std::uint32_t index, std::uint64_t word) {
    table_->ReleaseConfirmed(index, word);
  }
  // Also true for a lease-region slot once the lease deadline recorded in
  // the segment has passed (B1), whether or not the broker has shrunk yet.
  bool ShouldYield(std::uint32_t index, std::uint64_t word) const {
    return !table_->StillHeld(index, word) || table_->InLapsedLease(index);
  }

  // `refused` (nullptr: none) is the permit the refused attempt holds.
  std::error_code ReportSessionLimit(std::string_view detail,
                                     const std::pair<std::uint32_t, std::uint64_t>* refused) {
    auto r = Request(lp::ReportSessionLimitRequest(
        detail.substr(0, 512), refused != nullptr ? std::optional(*refused) : std::nullopt));
    return r.ok() ? std::error_code{} : make_error_code(r.status().code());
  }

  ClientInfo Info() const {
    ClientInfo info;
    info.owner_id = owner_;
    info.segment = segment_;
    if (table_) {
      info.capacity = table_->capacity();
      info.revocation_generation = table_->revocation_generation();
    }
    return info;
  }

 private:
  // One request/reply on a socket nobody else reads (used before the reader
  // thread starts, and by the reader itself when re-registering), all of it
  // by `deadline`.
  static Result<json::object> RoundTrip(LocalHandle fd, const json::object& req,
                                        Deadline deadline) {
    if (Status s = WriteFrame(fd, json::serialize(req), deadline); !s.ok()) return s;
    auto frame = ReadFrame(fd, deadline);
    if (!frame.ok()) return frame.status();
    return ParseReply(*frame);
  }

  // A reply whose "ok" is true, else the broker's error (local_protocol.h).
  static Result<json::object> ParseReply(const std::string& text) {
    auto o = lp::ParseReply(text);
    if (!o.ok()) return o.status();
    if (Status s = lp::ReplyStatus(*o); !s.ok()) return s;
    return o;
  }

  // This client's registration (adopting `owner_` when `adopt`).
  lp::RegisterArgs Registration(bool adopt = false) const {
    lp::RegisterArgs a;
    a.target = options_.target;
    a.name = options_.name;
    a.pid = static_cast<std::int64_t>(CurrentProcessId());
    if (adopt) {
      a.owner = owner_;
      a.instance = instance_;
    }
    return a;
  }

  // A register reply's fields, and the version handshake's end: the broker
  // must answer in a version this client speaks.
  Result<lp::RegisterReply> ReadRegisterReply(const json::object& reply) const {
    auto r = lp::DecodeRegisterReply(reply);
    if (!r.ok()) {
      return Status{r.status().code(),
                    "the broker at " + options_.socket_path + ": " + r.status().message()};
    }
    if (Status s = lp::CheckBrokerVersion(r->version); !s.ok()) {
      return Status{s.code(), "the broker at " + options_.socket_path + ": " + s.message()};
    }
    return r;
  }

  // A request over the live connection; the reader thread delivers the reply.
  Result<json::object> Request(const json::object& req) {
    return Request(req, options_.connect_timeout);
  }
  Result<json::object> Request(const json::object& req, std::chrono::milliseconds timeout) {
    // One deadline for the whole request: the turn behind another request,
    // the wait for a connection, the write and the reply. (The turn is a
    // flag under mu_, not a timed mutex: TSan does not see
    // pthread_mutex_clocklock, which timed_mutex::try_lock_until uses.)
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return !request_in_flight_; })) {
      return Status{Errc::kTimeout, "another request to the broker did not finish in time"};
    }
    request_in_flight_ = true;
    Result<std::string> text = RequestLocked(lock, req, deadline);
    request_in_flight_ = false;
    lock.unlock();
    cv_.notify_all();
    if (!text.ok()) return text.status();
    return ParseReply(*text);
  }

  // The body of Request once it has its turn; `lock` holds mu_ on entry and
  // on return (the waits release it meanwhile).
  Result<std::string> RequestLocked(std::unique_lock<std::mutex>& lock, const json::object& req,
                                    std::chrono::steady_clock::time_point deadline) {
    if (!cv_.wait_until(lock, deadline, [&] { return connected_ || lost_ || closing_; }) ||
        !connected_) {
      return Status{lost_ ? Errc::kNotRegistered : Errc::kBrokerUnavailable,
                    "not connected to the broker"};
    }
    reply_.reset();
    const std::uint64_t generation = connection_generation_;
    // Bounded: a broker that does not read its socket must not hold us (nor,
    // through mu_, the reader thread) past the deadline.
    bool partial = false;
    if (Status s = WriteFrame(fd_, json::serialize(req), deadline, &partial); !s.ok()) {
      // Half a frame leaves the stream out of step: drop the connection (the
      // reader thread sees it end and re-registers).
      if (partial) ShutdownLocal(fd_);
      return s;
    }
    if (!cv_.wait_until(lock, deadline, [&] {
          return reply_.has_value() || connection_generation_ != generation || closing_;
        })) {
      return Status{Errc::kTimeout, "broker did not answer in time"};
    }
    if (!reply_) return Status{Errc::kBrokerUnavailable, "connection to the broker was lost"};
    std::string text = std::move(*reply_);
    reply_.reset();
    return text;
  }

  void ReaderLoop() {
    for (;;) {
      auto frame = ReadFrame(fd_, std::chrono::milliseconds(-1));
      std::unique_lock lock(mu_);
      if (closing_) return;
      if (frame.ok()) {
        reply_ = std::move(*frame);
        lock.unlock();
        cv_.notify_all();
        continue;
      }
      connected_ = false;
      ++connection_generation_;
      lock.unlock();
      cv_.notify_all();
      client_log::Logf(LogLevel::kWarning,
                       "lost the connection to the broker at %s; re-registering for target '%s'",
                       options_.socket_path.c_str(), options_.target.c_str());
      if (!Reconnect()) {
        lost_.store(true, std::memory_order_release);
        cv_.notify_all();
        lock.lock();
        if (closing_) return;  // the host closed the Client: nothing was lost
        lock.unlock();
        client_log::Logf(LogLevel::kError,
                         "could not re-register for target '%s' with the broker at %s: the "
                         "registration is lost (kNotRegistered)",
                         options_.target.c_str(), options_.socket_path.c_str());
        return;
      }
      client_log::Logf(LogLevel::kInfo, "re-registered for target '%s' with the broker at %s",
                       options_.target.c_str(), options_.socket_path.c_str());
    }
  }

  // Cluster mode: the table itself refuses lease-region slots from the lease
  // deadline on and ShouldYield turns true for the ones held (invariant 4 of
  // shm/segment_layout.h), whether the broker runs or not. This watchdog only
  // tidies up: at the deadline, if the broker has not renewed, it raises the
  // revocation generation once (for holders that watch it) and says so. It
  // wakes at the recorded deadline itself (at most every 50 ms to see a new
  // one), takes no lock, and changes no slot.
  void FenceLoop() {
    std::unique_lock lock(mu_);
    while (!closing_) {
      const std::int64_t now = shm::MonotonicNs();
      const std::int64_t deadline = table_->lease_deadline_ns();
      auto wait = std::chrono::nanoseconds(std::chrono::milliseconds(50));
      if (deadline > now) wait = std::min(wait, std::chrono::nanoseconds(deadline - now));
      cv_.wait_for(lock, wait, [&] { return closing_; });
      if (closing_) return;
      if (table_->NoteLeaseLapse(shm::MonotonicNs())) {
        client_log::Logf(LogLevel::kWarning,
                         "the broker did not renew the lease of segment %s by its deadline; "
                         "capacity above the floor is closed until it does",
                         segment_.c_str());
      }
    }
  }

  // The broker went away: keep every slot by re-registering with our owner id
  // within the new broker's adoption grace. Returns false if that failed.
  bool Reconnect() {
    const auto deadline = std::chrono::steady_clock::now() + options_.reconnect_window;
    bool said_untrusted = false;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::unique_lock lock(mu_);
        if (closing_) return false;
      }
      // Each attempt bounded; the same checks as Connect: nothing is sent to
      // an untrusted listener, and the segment must still be the broker's.
      const auto attempt_deadline =
          std::min(deadline, std::chrono::steady_clock::now() + kReconnectAttempt);
      auto conn = ConnectBroker(options_.socket_path, trust_, attempt_deadline);
      if (!conn.ok() && conn.status().code() == Errc::kPermissionDenied && !said_untrusted) {
        // Keep trying (the real broker may come back); say it once.
        said_untrusted = true;
        client_log::Logf(LogLevel::kWarning, "re-registering for target '%s': %s",
                         options_.target.c_str(), conn.status().message().c_str());
      }
      if (conn.ok()) {
        const LocalHandle fd = conn->fd;
        {
          std::lock_guard lock(mu_);
          if (closing_) {
            CloseLocal(fd);
            return false;
          }
          attempt_fd_ = fd;  // the destructor may shut it down; only we close it
        }
        auto reply = RoundTrip(fd, lp::RegisterRequest(Registration(/*adopt=*/true)),
                               attempt_deadline);
        {
          std::lock_guard lock(mu_);
          attempt_fd_ = kNoLocalHandle;
        }
        if (reply.ok()) {
          if (Status s = CheckSameSegment(*reply, conn->peer.uid); !s.ok()) {
            client_log::Logf(LogLevel::kError, "re-registering for target '%s': %s",
                             options_.target.c_str(), s.message().c_str());
            CloseLocal(fd);
            return false;
          }
          std::lock_guard lock(mu_);
          if (closing_) {
            CloseLocal(fd);
            return false;
          }
          CloseLocal(fd_);
          fd_ = fd;
          broker_uid_ = conn->peer.uid;
          connected_ = true;
          cv_.notify_all();
          return true;
        }
        CloseLocal(fd);
        const Errc code = reply.status().code();
        if (code == Errc::kNotRegistered || code == Errc::kSegmentInvalid ||
            code == Errc::kUnknownTarget || code == Errc::kPermissionDenied) {
          return false;  // the new broker will not adopt us
        }
      }
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return closing_; });
    }
    return false;
  }

  // After a re-registration: the new broker must name the segment we have
  // mapped, and the file of that name must be owned by the new broker's uid
  // (no access for others) and be the same instance. Else the slots we hold
  // are not in the table it serves.
  Status CheckSameSegment(const json::object& reply, const AccountId& broker_uid) const {
    auto r = ReadRegisterReply(reply);
    if (!r.ok()) return r.status();
    if (r->segment != segment_) {
      return {Errc::kSegmentInvalid, "the restarted broker at " + options_.socket_path +
                                         " names another segment than " + segment_};
    }
    auto table = shm::SlotTable::Attach(segment_, shm::AttachOptions{.owner = broker_uid});
    if (!table.ok()) return table.status();
    if ((*table)->instance_id() != table_->instance_id()) {
      return {Errc::kSegmentInvalid, "segment " + segment_ + " was re-created by the restarted broker"};
    }
    return Status::Ok();
  }

  static constexpr std::chrono::milliseconds kReconnectAttempt{5000};

  const ClientOptions options_;
  BrokerTrust trust_;       // who may serve the socket (set by Connect)
  AccountId broker_uid_{};  // the broker's uid/SID (SO_PEERCRED, the pipe): owner of its segments
  std::unique_ptr<shm::SlotTable> table_;
  std::uint32_t owner_ = 0;
  std::string segment_;
  std::string instance_;
  std::uint64_t action_word_ = 0;
  std::uint64_t system_word_ = 0;
  std::optional<std::uint32_t> system_slot_;

  std::mutex mu_;          // guards everything below
  std::condition_variable cv_;
  bool request_in_flight_ = false;  // one request at a time
  LocalHandle fd_ = kNoLocalHandle;
  LocalHandle attempt_fd_ = kNoLocalHandle;  // a re-registration's socket while its round trip runs
  bool connected_ = false;
  bool closing_ = false;
  std::uint64_t connection_generation_ = 0;
  std::optional<std::string> reply_;
  std::atomic<bool> lost_{false};
  std::thread reader_;
  std::thread fence_;
};

// ---- Permit -----------------------------------------------------------------

bool Permit::ShouldYield() const noexcept {
  return impl_ != nullptr && impl_->ShouldYield(index_, word_);
}

void Permit::ReleaseHeld(bool confirmed) noexcept {
  if (confirmed) {
    impl_->ReleaseConfirmed(index_, word_);
  } else {
    impl_->Release(index_, word_);
  }
  impl_ = nullptr;
}

// ---- Client -----------------------------------------------------------------

Client::Client(std::unique_ptr<ClientImpl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

std::unique_ptr<Client> Client::Connect(const ClientOptions& options, std::error_code& ec,
                                        std::string* message) noexcept {
  try {
    if (options.target.empty()) {
      ec = Errc::kInvalidArgument;
      if (message != nullptr) *message = "ClientOptions.target is empty";
      return nullptr;
    }
    auto impl = std::make_unique<ClientImpl>(options);
    Status s = impl->Connect();
    if (!s.ok()) {
      ec = s.code();
      if (message != nullptr) *message = s.message();
      return nullptr;
    }
    ec.clear();
    return std::unique_ptr<Client>(new Client(std::move(impl)));
  } catch (const std::exception& e) {
    ec = Errc::kProtocol;
    if (message != nullptr) *message = std::string("unexpected reply from broker: ") + e.what();
    return nullptr;
  }
}

Permit Client::Acquire(std::chrono::milliseconds timeout, std::error_code& ec,
                       CancelToken* cancel) noexcept {
  return impl_->Acquire(timeout, ec, cancel);
}

Permit Client::TryAcquire(std::error_code& ec) noexcept { return impl_->TryAcquire(ec); }

std::error_code Client::ReportSessionLimit(std::string_view detail) noexcept {
  try {
    return impl_->ReportSessionLimit(detail, nullptr);
  } catch (...) {
    return make_error_code(Errc::kInternal);
  }
}

std::error_code Client::ReportSessionLimit(const Permit& refused,
                                           std::string_view detail) noexcept {
  try {
    if (!refused.valid()) return impl_->ReportSessionLimit(detail, nullptr);
    const std::pair<std::uint32_t, std::uint64_t> slot{refused.slot_index(),
                                                       PermitAccess::Word(refused)};
    return impl_->ReportSessionLimit(detail, &slot);
  } catch (...) {
    return make_error_code(Errc::kInternal);
  }
}

ClientInfo Client::Info() const noexcept {
  try {
    return impl_->Info();
  } catch (...) {
    return {};
  }
}

}  // namespace dsb

namespace dsb {
void PermitAccess::ReleaseRaw(Client& c, std::uint32_t index, std::uint64_t word) {
  c.impl_->Release(index, word);
}
void PermitAccess::ReleaseConfirmedRaw(Client& c, std::uint32_t index, std::uint64_t word) {
  c.impl_->ReleaseConfirmed(index, word);
}
std::error_code PermitAccess::ReportRefusalRaw(Client& c, std::string_view detail,
                                               std::uint32_t index, std::uint64_t word) {
  const std::pair<std::uint32_t, std::uint64_t> slot{index, word};
  return c.impl_->ReportSessionLimit(detail, &slot);
}
bool PermitAccess::ShouldYieldRaw(const Client& c, std::uint32_t index, std::uint64_t word) {
  return c.impl_->ShouldYield(index, word);
}
}  // namespace dsb
