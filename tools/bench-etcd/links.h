// What dsb-bench-etcd drives: emulated brokers (the real lease::LeaseAgent,
// without slot tables and clients) that renew through a LedgerLink, either
// to a real embedded coordinator (a dsb-broker process, over the real
// authenticated wire channel) or to real etcd members (the real EtcdClient
// and the real shared ledger: keepalive, range at one revision, ApplyRenew,
// compare-and-swap txn, as broker/lease/shared_ledger.h prescribes). Both
// modes are timed the same way: from the agent's send to the grant applied.
//
// Thread rule: everything runs on one io_context thread.
#ifndef DSB_TOOLS_BENCH_ETCD_LINKS_H_
#define DSB_TOOLS_BENCH_ETCD_LINKS_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "broker/lease/agent.h"
#include "broker/lease/ledger.h"
#include "broker/lease/messages.h"
#include "broker/lease/shared_ledger.h"
#include "broker/wire/auth.h"
#include "common/status.h"

namespace dsb::bench {

using Clock = std::chrono::steady_clock;

// Milliseconds of `d` as a double.
inline double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The samples of one kind of call, in ms.
struct Samples {
  std::vector<double> ms;
  void Add(Clock::duration d) { ms.push_back(Ms(d)); }
};

// Per-call costs of the etcd calls one renew makes, and what went wrong.
struct EtcdOpStats {
  Samples keepalive, range, txn;
  std::uint64_t lost_compares = 0;  // txn succeeded = false: another broker wrote first
  std::uint64_t unknown = 0;        // kTimeout: outcome unknown, re-read
  std::uint64_t errors = 0;         // any other failure of a call
  std::uint64_t lease_regrants = 0; // etcd no longer knew our lease
  std::uint64_t txns = 0;           // transactions sent (writes)
  std::uint64_t ranges = 0;         // prefix reads sent
  std::uint64_t empty_writes = 0;   // renews that needed no write
};

class LedgerLink {
 public:
  virtual ~LedgerLink() = default;
  // One renew: the grant that answers `request`, or why there is none (the
  // agent's lease then lapses on its own clock, as in the broker).
  virtual boost::asio::awaitable<Result<lease::Grant>> Renew(lease::RenewRequest request) = 0;
};

// The embedded coordinator: an authenticated channel to a dsb-broker process
// with the coordinator role, as broker/cluster.cc's agent side uses it.
class WireLink : public LedgerLink {
 public:
  // Connects and runs the handshake. Failure: as wire::Channel::Connect.
  static boost::asio::awaitable<Result<std::unique_ptr<WireLink>>> Connect(
      boost::asio::any_io_executor executor, std::string host, std::uint16_t port,
      wire::Credentials credentials);
  ~WireLink() override;
  boost::asio::awaitable<Result<lease::Grant>> Renew(lease::RenewRequest request) override;

 private:
  struct Impl;
  explicit WireLink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The etcd ledger: one broker instance's renews through etcd.
struct EtcdLinkOptions {
  std::vector<std::string> endpoints;
  std::string prefix;           // e.g. "/dsb/bench-1/": every key below it
  lease::LedgerConfig mine;     // the broker's own LedgerConfig (cluster_lease.h)
  lease::LiveInstance who;      // this instance
  std::chrono::milliseconds call_timeout{2000};
  std::chrono::milliseconds renew_bound{5000};  // D/3 in the broker
  int max_attempts = 8;         // read-apply-CAS rounds per renew
  EtcdOpStats* stats = nullptr; // where the per-call costs go (not owned)
};

class EtcdLink : public LedgerLink {
 public:
  // Makes the client, grants this instance's etcd lease (TTL ceil(Silence)
  // seconds, at least 2) and puts its live key on it.
  // Failure: the client's (kConfig, kBrokerUnavailable, kTimeout ...).
  static boost::asio::awaitable<Result<std::unique_ptr<EtcdLink>>> Create(
      boost::asio::any_io_executor executor, EtcdLinkOptions options);
  ~EtcdLink() override;
  boost::asio::awaitable<Result<lease::Grant>> Renew(lease::RenewRequest request) override;
  // The endpoint that answered last.
  std::string endpoint() const;

 private:
  struct Impl;
  explicit EtcdLink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One emulated broker: a LeaseAgent whose clients take slots at once up to
// `demand` (actions = min(demand, capacity), the rest wait) and give them
// back at once when capacity falls (H = 0), renewing through a link exactly
// when the agent says (every D/3, early at most every D/24 when the report
// changed), one renew in flight.
class EmuBroker {
 public:
  EmuBroker(boost::asio::any_io_executor executor, lease::AgentConfig config, LedgerLink* link);

  // Runs until Stop(). Spawn it with co_spawn.
  boost::asio::awaitable<void> Run();
  void Stop();
  void SetDemand(std::uint32_t demand);  // takes effect at once (the agent is ticked)

  const std::string& id() const { return config_.broker_id; }
  std::uint32_t lease() const { return lease_; }  // valid lease amount (target 0)
  bool ready() const { return ready_; }           // a non-learning accepted grant applied
  // Renew timing: send -> grant applied, for accepted non-learning grants.
  Samples renew_ms;
  std::vector<Clock::time_point> ok_at;  // when each such grant was applied
  std::uint64_t failed_renews = 0;       // Renew returned an error
  std::uint64_t lapses = 0;              // lease ran out on the agent's clock (B1)
  std::string last_error;
  bool record = false;                   // whether renew_ms collects samples

 private:
  void Absorb(const lease::AgentStep& step, bool from_tick);
  std::vector<lease::TargetUsage> Usage() const;

  lease::AgentConfig config_;
  lease::LeaseAgent agent_;
  LedgerLink* link_;
  boost::asio::steady_timer timer_;
  std::uint32_t demand_ = 0;
  std::uint32_t capacity_ = 0;
  std::uint32_t lease_ = 0;
  bool ready_ = false;
  bool stop_ = false;
};

}  // namespace dsb::bench

#endif  // DSB_TOOLS_BENCH_ETCD_LINKS_H_
