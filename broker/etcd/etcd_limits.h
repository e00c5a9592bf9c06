// EtcdLimits: the discovered limit (DESIGN section 8) when the ledger is in
// etcd and there is no coordinator broker (limit_records.h has the keys).
//
// Every broker runs one. Each keeps a small etcd lease of its own (TTL
// max(2 s, ceil(D)), kept alive every TTL/3) for two things:
//  - the keeper election: a put of kKeeperKey with create_revision == 0 on
//    that lease. The winner runs the LimitKeeper for every target
//    (`discover`, `limit_command`, F1-F4 of limit_policy.h) until its lease
//    is gone or its key is not its own; the others try again every TTL/4, so
//    a keeper killed with -9 is replaced within about TTL + TTL/4.
//  - refusal reports: ReportRefusal puts a StoredRefusal under
//    kRefusalKeyPrefix on that lease (a dead reporter's keys go with it).
//
// The keeper, every kKeeperPoll (bounded: a read of the prefix at one
// revision), checks that kKeeperKey still carries its lease, records each
// broker's owed from the stored ledger (OwedHistory), takes any limit record
// written by someone else (an operator's set-limit through another broker)
// into its LimitKeeper, claims the refusal keys by one transaction that
// deletes them (guarded by its keeper key: a deposed keeper claims nothing),
// feeds them to the LimitKeeper with HeldAtRefusal's bound, and writes every
// change as ONE transaction: lease::ApplyAdmin kSetLimit's ledger puts plus
// the target's StoredLimit, guarded by the mod_revision of every ledger key
// and limit record it read and by its keeper key's lease. A lost compare is
// redone at the next poll from a fresh read; a timed-out write is re-read,
// never assumed failed (the record it finds decides).
//
// A new keeper starts from what etcd holds: each target's StoredLimit, or
// without one the stored ledger's limit when that is below the configured
// one -- never from the configured limit when a lower one is stored (S).
// A keeper change loses at most the refusal reports in flight as evidence:
// reports already in etcd when it starts, and all during its first horizon
// (min(D/4, 250 ms): its owed history is empty), are counted, not evidence. The ledger's limit and the record are written together, so a
// broker restarted with etcd sees both; a ledger whose limit differs from
// the record (created afresh, or rebuilt for a new generation) is set to the
// record's limit by the keeper's next poll.
//
// Only a broker running the stored ledger's own cluster file (same
// generation and hash, lease::ApplyAdmin's rule) campaigns, keeps or sets a
// limit: a keeper that reads a stored ledger of another file steps down at
// once (logged once, its keeper key deleted) so that a broker of the stored
// generation takes over; an older file's keeper or set-limit would raise a
// limit the newer file lowered (S, review item 1).
//
// Compaction (like kube-apiserver's --etcd-compaction-interval): every
// CompactionInterval the keeper compacts etcd's history up to the store
// revision it read at the previous tick, so the last interval's history
// stays for watches (a watch further behind resumes from the current
// revision). Failures are logged (rate-limited) and counted, never fatal.
//
// SetLimit (an operator, through ANY broker) writes the record and the
// ledger's limit in one transaction the same way; Limits() reads them for
// `dsbctl status` on every broker (source, time, cause, keeper).
//
// Thread rule: created and used on the broker's single-threaded io_context;
// the EtcdClient is the caller's and outlives this object. Call Stop() and
// let the io_context run out the coroutines before destroying it.
#ifndef DSB_BROKER_ETCD_ETCD_LIMITS_H_
#define DSB_BROKER_ETCD_ETCD_LIMITS_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "broker/config/cluster_config.h"
#include "broker/etcd/etcd_client.h"
#include "broker/etcd/limit_records.h"
#include "broker/lease/ledger.h"
#include "broker/lease/shared_ledger.h"
#include "broker/limit_keeper.h"
#include "common/status.h"

namespace dsb::etcd {

struct EtcdLimitsOptions {
  std::string prefix;             // the deployment's prefix (etcd_prefix), e.g. "/dsb/"
  lease::LedgerConfig mine;       // as the broker builds it from its cluster file
  lease::LiveInstance self;       // this broker instance (R0)
  config::ClusterConfig cluster;  // its targets (limit, discover, limit_command ...) and brokers
};

class EtcdLimits {
 public:
  using Clock = std::chrono::steady_clock;
  // How often the keeper reads the store (refusals, records, owed).
  static constexpr std::chrono::milliseconds kKeeperPoll{100};

  // How often the keeper compacts etcd: max(10 D, 10 s), at most 5 minutes
  // (kube-apiserver's default); short D gives a short interval (tests).
  static std::chrono::milliseconds CompactionInterval(const config::ClusterConfig& cluster);

  // Each target's lowest allowed limit (config order): the reserve, every
  // broker's system slots and floor, and one pool slot (what the embedded
  // coordinator uses), capped by the configured limit.
  static std::vector<std::uint32_t> Minimums(const config::ClusterConfig& cluster);
  // Seconds of this component's etcd lease: max(2, ceil(D)).
  static std::int64_t LeaseTtlSeconds(const config::ClusterConfig& cluster);

  EtcdLimits(boost::asio::io_context& io, EtcdClient& client, EtcdLimitsOptions options);
  ~EtcdLimits();
  EtcdLimits(const EtcdLimits&) = delete;
  EtcdLimits& operator=(const EtcdLimits&) = delete;

  // Starts the lease, the keepalive and the keeper campaign.
  void Start();
  // Ends them; a keeper stops its LimitKeeper. Revokes this component's
  // lease (best effort; else it ends by its TTL): the keeper key and this
  // broker's unclaimed refusal reports go with it.
  void Stop();

  // A client of this broker was refused for the server's limit while this
  // broker held `held` sessions of target `target` (config order). Put into
  // etcd for the keeper; lost (logged, rate-limited) when there is no lease.
  void ReportRefusal(std::size_t target, std::uint32_t held, const std::string& who);

  // `dsbctl status`: {"ok", "coordinator" (the keeper's id, "" if none),
  // "limit_keeper", "targets": [{target, limit, limit_source,
  // limit_changed_at, limit_changed_ms_ago, limit_ceiling, limit_minimum,
  // discover, limit_store "etcd", ledger_limit, recent_limit_changes, ...}]}
  // read from etcd; {"ok": false, "message"} when etcd cannot be read. On
  // the keeper also "etcd_compaction": {interval_ms, compacted_revision,
  // compactions, failures, last_error}.
  boost::asio::awaitable<boost::json::object> Limits();

  // An operator's limit, written to etcd by this broker (any broker).
  // Success: {"ok": true, "target", fields as Limits()}. Failure replies
  // {"ok": false, "error", "message"}: kInvalidArgument outside
  // [minimum, configured limit], kConflict when this broker's cluster file is
  // not the stored ledger's (naming both generations), kBrokerUnavailable with no ledger in etcd
  // yet or etcd unreachable, kConflict after too many lost compares.
  boost::asio::awaitable<boost::json::object> SetLimit(std::size_t target, std::uint32_t limit,
                                                       std::string who);

  // The LimitKeeper while this broker is the keeper (metrics), else null.
  const broker::LimitKeeper* keeper() const { return keeper_.get(); }
  bool is_keeper() const { return keeper_ != nullptr; }

  struct Read;  // one read of the prefix (etcd_limits.cc)

 private:
  boost::asio::awaitable<void> LeaseLoop();
  boost::asio::awaitable<void> Revoke(std::int64_t lease);
  boost::asio::awaitable<void> CampaignLoop();
  boost::asio::awaitable<bool> Campaign();
  boost::asio::awaitable<Result<Read>> ReadAll();
  boost::asio::awaitable<void> BecomeKeeper(const Read& read);
  void StepDown(const std::string& why);
  boost::asio::awaitable<void> KeeperStep();
  boost::asio::awaitable<void> ClaimRefusals(const Read& read, lease::TimePoint now);
  boost::asio::awaitable<void> WriteChanges(const Read& read);
  boost::asio::awaitable<void> Put(std::string key, std::string value);
  boost::asio::awaitable<void> Compact(std::int64_t current_revision);
  boost::asio::awaitable<void> ReleaseKeeperKey(std::int64_t lease);
  // Empty when this broker may keep or set limits on `read` (no ledger yet,
  // or the stored ledger's file is this broker's), else why not.
  std::string NotMyLedger(const Read& read) const;
  boost::asio::awaitable<void> Sleep(std::chrono::milliseconds d);
  boost::json::object TargetJson(std::size_t index, const Read& read) const;
  lease::LimitPolicyConfig PolicyConfig(std::size_t index) const;
  std::optional<std::size_t> TargetIndex(std::string_view name) const;
  std::string Key(std::string_view suffix) const { return options_.prefix + std::string(suffix); }

  boost::asio::io_context& io_;
  EtcdClient& client_;
  EtcdLimitsOptions options_;
  std::vector<std::uint32_t> minimum_;
  std::int64_t ttl_s_;
  std::int64_t lease_id_ = 0;
  bool stopping_ = false;
  std::uint64_t refusal_seq_ = 0;
  std::uint64_t reports_lost_ = 0;
  std::size_t puts_in_flight_ = 0;
  std::minstd_rand rng_;
  std::set<boost::asio::steady_timer*> sleeping_;  // timers of Sleep() now waiting

  // Keeper state (keeper_ set while this broker is the keeper).
  std::unique_ptr<broker::LimitKeeper> keeper_;
  std::vector<std::unique_ptr<broker::LimitKeeper>> retired_;  // stopped keepers
  std::unique_ptr<OwedHistory> history_;
  std::int64_t first_revision_ = 0;  // the store revision of the keeper's first read
  struct Pending {
    lease::LimitChange change;
    std::string who;
    std::int64_t at_unix_ms = 0;
  };
  std::vector<std::vector<Pending>> pending_;  // per target, oldest first
  std::vector<std::int64_t> seen_record_mod_;  // per target: record mod_revision taken in
  std::string not_mine_logged_;  // the last "not my ledger" reason logged (logged once)

  // Compaction (keeper only).
  std::chrono::milliseconds compaction_interval_;
  Clock::time_point compact_due_{};
  std::int64_t compact_at_ = 0;  // the revision read at the previous tick
  std::int64_t compacted_revision_ = 0;
  std::uint64_t compactions_ = 0;
  std::uint64_t compaction_failures_ = 0;
  std::string compaction_error_;
};

}  // namespace dsb::etcd

#endif  // DSB_BROKER_ETCD_ETCD_LIMITS_H_
