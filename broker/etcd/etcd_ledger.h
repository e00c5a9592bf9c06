// EtcdLedger: one broker instance's side of the lease ledger kept in etcd
// (DESIGN section 7, "For high availability"; broker/lease/shared_ledger.h
// says how the rules map). There is no coordinator broker: for each renew
// this broker reads every key under the deployment's prefix at one etcd
// revision, applies the request to the ledger rebuilt from that state
// (lease::ApplyRenew) and writes the changed keys back by ONE compare-and-
// swap transaction.
//
// One renew, in order:
//   1. KeepAlive of this instance's etcd lease (AFTER the agent first sent the
//      request: the caller hands it over only then), so the store expires the
//      lease, and with it the live key, no sooner than TTL after t_sent of
//      every grant this instance applied (C2 by liveness).
//   2. RangePrefix(prefix) at one revision -> lease::StoreView.
//   3. lease::ApplyRenew(mine, view, request) -> what to write and the reply.
//   4. Txn: compares the mod_revision of every ledger key read (the
//      create_revision 0 of each ledger key this config knows that was
//      absent), and that the live key still carries this instance's lease;
//      puts/deletes; kLearningKey on a fresh lease when start_learning.
//   A lost compare (another broker wrote first) redoes 1-4 after a random
//   backoff, at most kMaxAttempts times; a kTimeout (the write's outcome is
//   unknown: it may commit later) redoes 1-4 as well: the ledger answers an
//   exact duplicate of this instance's newest request with the stored reply,
//   so a write that committed is found, not repeated. Any other failure, or
//   the bound (D/3) passing, gives no grant: the agent's lease lapses on this
//   broker's own clock (B1), which is the safety; etcd's lease expiry is never
//   trusted for it.
//
// One renew is in flight at a time; a newer request handed over while one is
// in flight replaces the queued one (the agent resends an unanswered request
// with the same id anyway).
//
// When etcd says this instance's lease is gone (it expired: the store was
// unreachable for longer than the TTL, or an operator revoked it), a new lease
// and live key are made and that is logged once: the ledger counted this
// instance silent and forgot what it was owed (its lease lapsed on its own
// clock long before), and it is accepted again as a new instance. If the
// lease ended sooner than TTL(1 - eps) after the send of this broker's last
// successful keepalive (its own monotonic clock), etcd ended it early (an
// operator's revoke, or etcd-io/etcd#15247 on 3.4.23): logged at error and
// `on_forced_drop` (review item 3).
//
// When a read no longer shows this instance's live key (after a read showed it
// committed on the current lease) while KeepAlive says the lease lives,
// someone deleted it: the others' renews forget what this instance is owed (a
// forced revoke). Logged at error, `on_forced_drop`, then the key is put again
// and the renew goes on (review item 6).
//
// A watch on the prefix's ledger keys keeps a copy of the ledger; when this
// broker's mode (revoke, drain, undrain) or a target's limit changes there,
// `on_change` asks the agent to renew now (what RevokeNotice does with the
// embedded coordinator). Losing the watch only delays that to the next renew;
// it is re-made after a backoff.
//
// Thread rule: created and used on one single-threaded io_context (the
// broker's); the EtcdClient is shared with nobody else. The object must
// outlive the coroutines it spawns: call Stop() and let the io_context finish
// before destroying it.
#ifndef DSB_BROKER_ETCD_ETCD_LEDGER_H_
#define DSB_BROKER_ETCD_ETCD_LEDGER_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "broker/etcd/etcd_client.h"
#include "broker/lease/ledger.h"
#include "broker/lease/messages.h"
#include "broker/lease/shared_ledger.h"
#include "common/status.h"

namespace dsb::etcd {

struct EtcdLedgerOptions {
  // The deployment's key prefix (the cluster file's etcd_prefix), e.g. "/dsb/".
  std::string prefix;
  // The ledger config this broker builds from its cluster file
  // (broker/cluster_lease.h LedgerConfigOf): the same the embedded
  // coordinator would run.
  lease::LedgerConfig mine;
  // This instance (R0): broker id, epoch, instance id.
  lease::LiveInstance self;
  // Informational value of the live key ("host pid ...").
  std::string live_value;
  // Bound of one renew (keepalive + read + txn + redos): D/3.
  std::chrono::nanoseconds renew_bound{std::chrono::seconds(5)};
  // Lost compares redone per renew before giving up on it.
  int max_attempts = 8;
};

// A stored ledger key's view for `dsbctl leases`: the snapshot plus where it was read.
struct LedgerRead {
  lease::LedgerSnapshot snapshot;
  std::int64_t revision = 0;
  std::string endpoint;
};

class EtcdLedger {
 public:
  struct Callbacks {
    // The reply to a renew, once the transaction that recorded it committed
    // (or the stored reply to a duplicate). Called on the io_context.
    std::function<void(const lease::Grant&)> on_grant;
    // This broker's mode or a target's limit changed in the store: renew now.
    std::function<void()> on_change;
    // The ledger may have given away what this instance was owed although
    // this broker's lease is still valid on its own clock (review items 3, 6:
    // its live key was deleted while its etcd lease lived, or etcd ended the
    // lease sooner than its TTL after this broker's last keepalive): drop the
    // applied lease to 0 at once (lease::LeaseAgent::DropLease). `why` is
    // already logged. May be empty.
    std::function<void(const std::string& why)> on_forced_drop;
  };

  // Seconds of the etcd lease TTL for `mine`: ceil((D + H)(1 + eps)), >= 2
  // (etcd's minimum).
  static std::int64_t LeaseTtlSeconds(const lease::LedgerConfig& mine);

  // `client` is owned by the caller and outlives this object.
  EtcdLedger(boost::asio::any_io_executor executor, EtcdClient& client, EtcdLedgerOptions options,
             Callbacks callbacks);
  ~EtcdLedger();
  EtcdLedger(const EtcdLedger&) = delete;
  EtcdLedger& operator=(const EtcdLedger&) = delete;

  // Starts the watch (early renew). The lease and live key are made by the
  // first renew.
  void Start();

  // Hands over a renew request the agent has just sent (first send or a
  // resend). Runs it as described in the file comment; the answer arrives
  // through on_grant. Nothing is answered on failure (logged, rate-limited).
  void Renew(lease::RenewRequest request);

  // R5: a clean stop. Waits for a renew in flight (at most the renew bound),
  // then writes the goodbye by transaction (retried like a renew, within a
  // renew bound of its own) and never revokes the etcd lease: the instance
  // stays counted with what it handed over until its successor's first
  // request or its silence. Failure: the store's (kBrokerUnavailable,
  // kTimeout, kProtocol ...) or lease::ApplyGoodbye's; kConflict when this
  // instance has no live lease (it never renewed, or it was forgotten).
  boost::asio::awaitable<Status> Goodbye(lease::Goodbye goodbye);

  // An operator's change (revoke, drain, undrain, revoke target, forced
  // revoke, set-limit) by transaction, retried on a lost compare. Success:
  // the ledger as read after the change committed (for the reply). Failure:
  // lease::ApplyAdmin's (kConflict unknown broker, kUnknownTarget,
  // kInvalidArgument), or the store's.
  boost::asio::awaitable<Result<LedgerRead>> Admin(lease::AdminChange change);

  // `dsbctl leases`: the stored ledger (linearizable read) with silence_left
  // of every live instance's newest epoch filled from its etcd lease's time
  // to live, and learning_left from the learning key's. Failure: the store's, or kBrokerUnavailable when there is no
  // ledger in the store yet (no broker has renewed).
  boost::asio::awaitable<Result<LedgerRead>> Snapshot();

  // Effective limits of the stored ledger {target, limit} (config order).
  boost::asio::awaitable<Result<std::vector<std::pair<std::string, std::uint32_t>>>> Limits();

  // Ends the watch and every call in flight. Renew() is ignored afterwards.
  void Stop();

  // Whether the last renew step reached etcd and committed (for status).
  bool connected() const { return connected_; }
  // The endpoint that answered last.
  std::string endpoint() const;
  // The etcd lease of this instance (0: none yet).
  std::int64_t lease_id() const { return lease_id_; }

 private:
  struct Read {
    lease::StoreView view;
    std::int64_t revision = 0;
    std::map<std::string, std::int64_t> mod_revision;  // ledger keys (learning included)
    std::map<lease::LiveInstance, std::int64_t> live_lease;
    std::int64_t learning_lease = 0;  // the lease of kLearningKey (0: absent)
  };
  enum class Outcome { kDone, kRetry, kFail };

  boost::asio::awaitable<void> RenewLoop();
  // One renew of `request` within the bound.
  boost::asio::awaitable<void> RunRenew(const lease::RenewRequest& request);
  // Keeps the lease alive (or makes a new lease and live key). Failure: the store's.
  boost::asio::awaitable<Status> KeepLive();
  boost::asio::awaitable<Status> NewLease();
  boost::asio::awaitable<Result<Read>> ReadAll();
  // Writes `write` guarded by what `read` saw (and by the live key when
  // `guard_live`). Success: whether the compares held.
  boost::asio::awaitable<Result<bool>> Write(const Read& read, const lease::StoreWrite& write,
                                             bool guard_live);
  boost::asio::awaitable<void> Backoff(int attempt);
  boost::asio::awaitable<void> WatchLoop();
  // The copy of the ledger kept by the watch: this broker's modes and the
  // limits. Calls on_change when they differ from the last seen.
  void CheckWatched();
  void ScheduleCheck();
  void LogBadKey(const std::string& key, const std::string& why);
  // Review items 3, 6: logs `why` at error and calls on_forced_drop.
  void ForcedDrop(const std::string& why);
  std::string LiveKeyDeletedMessage() const;
  void LogStep(const lease::StoreWrite& write) const;
  std::string Key(std::string_view suffix) const { return options_.prefix + std::string(suffix); }

  boost::asio::any_io_executor executor_;
  EtcdClient& client_;
  EtcdLedgerOptions options_;
  Callbacks callbacks_;
  std::int64_t ttl_s_;
  std::int64_t lease_id_ = 0;
  // Review item 6: a read showed the live key on lease_id_ (reset by NewLease).
  bool live_seen_ = false;
  // Review item 3: when this broker sent the last keepalive (or lease grant)
  // that etcd answered with the lease alive.
  std::optional<std::chrono::steady_clock::time_point> last_alive_sent_;
  bool lease_lost_logged_ = false;
  std::optional<lease::RenewRequest> queued_;
  bool renewing_ = false;
  bool stopping_ = false;
  // R5: set when the goodbye starts: no renew attempt after it (a renew redone
  // after the goodbye would count this instance in full again).
  bool closing_ = false;
  // Review item 2: the highest ledger write sequence (lease::StoredSequence)
  // seen; a lower one later means the store went back in time.
  std::uint64_t highest_seq_ = 0;
  // Keys that break the stored structure, logged once each (a live or
  // learning key without an etcd lease would never expire: not counted).
  std::set<std::string> bad_keys_logged_;
  bool connected_ = false;
  std::minstd_rand rng_;
  // The watch's copy of the stored ledger keys (suffix -> value) and the
  // last seen modes/limits (text), for CheckWatched.
  lease::StoreView watched_;
  std::string watched_signature_;
  bool check_posted_ = false;
  std::unique_ptr<boost::asio::steady_timer> check_timer_;
  std::unique_ptr<boost::asio::steady_timer> notify_timer_;
  bool notify_pending_ = false;
  std::unique_ptr<boost::asio::steady_timer> watch_timer_;
};

}  // namespace dsb::etcd

#endif  // DSB_BROKER_ETCD_ETCD_LEDGER_H_
