#include "broker/etcd/etcd_limits.h"

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <cmath>
#include <ctime>
#include <set>
#include <spdlog/spdlog.h>

#include "broker/asio_helpers.h"
#include "broker/lease/account_held.h"
#include "broker/etcd/prefix_keys.h"
#include "common/limited_log.h"
#include "common/utc_time.h"

namespace dsb::etcd {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using Clock = std::chrono::steady_clock;

namespace {

// Refusal puts in flight at most (a client may report in a loop).
constexpr std::size_t kMaxPutsInFlight = 64;
// Lost compares redone by one SetLimit.
constexpr int kMaxAttempts = 8;
constexpr std::size_t kMaxClaim = 100;

std::int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Unix milliseconds as ISO 8601 UTC (display only).
std::string IsoTime(std::int64_t unix_ms) {
  return IsoUtc(std::chrono::system_clock::time_point(std::chrono::milliseconds(unix_ms)));
}

// The stored ledger's cluster file (generation, hash) from its meta key;
// nullopt without a ledger (or a meta that does not parse: the renew path
// reports that, and ApplyAdmin refuses it).
struct StoredFile {
  std::uint64_t generation = 0;
  std::string file_hash;
};
std::optional<StoredFile> StoredFileOf(const lease::StoreView& view) {
  const auto it = view.values.find(std::string(lease::kMetaKey));
  if (it == view.values.end()) return std::nullopt;
  boost::system::error_code ec;
  json::value v = json::parse(it->second, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& o = v.as_object();
  StoredFile f;
  const json::value* g = o.if_contains("generation");
  if (g == nullptr) return std::nullopt;
  if (g->is_uint64()) {
    f.generation = g->as_uint64();
  } else if (g->is_int64() && g->as_int64() >= 0) {
    f.generation = static_cast<std::uint64_t>(g->as_int64());
  } else {
    return std::nullopt;
  }
  if (const json::value* h = o.if_contains("file_hash"); h != nullptr && h->is_string()) {
    f.file_hash = std::string(h->as_string());
  }
  return f;
}

std::string Describe(const KeeperValue& k) {
  return k.broker_id + " (epoch " + std::to_string(k.epoch) + ")";
}

}  // namespace

// One read of everything under the prefix at one store revision.
struct EtcdLimits::Read {
  std::int64_t revision = 0;
  lease::StoreView view;                            // ledger keys, live keys, learning
  std::map<std::string, std::int64_t> ledger_mod;   // ledger keys (and the learning key)
  std::map<std::string, StoredLimit> records;       // by target name
  std::map<std::string, std::int64_t> record_mod;   // by target name
  std::vector<KeyValue> refusals;                   // suffix in key
  std::optional<KeeperValue> keeper;
  std::int64_t keeper_lease = 0;
  std::vector<std::string> damaged;  // messages for values that do not parse
};

std::vector<std::uint32_t> EtcdLimits::Minimums(const config::ClusterConfig& cluster) {
  std::vector<std::uint32_t> out;
  for (const auto& t : cluster.targets) {
    out.push_back(static_cast<std::uint32_t>(
        std::min(t.limit, t.reserve + cluster.SumSystemAndFloor() + 1)));
  }
  return out;
}

std::chrono::milliseconds EtcdLimits::CompactionInterval(const config::ClusterConfig& cluster) {
  using std::chrono::milliseconds;
  const auto d = std::chrono::duration_cast<milliseconds>(cluster.term);
  return std::min<milliseconds>(std::chrono::minutes(5),
                                std::max<milliseconds>(10 * d, std::chrono::seconds(10)));
}

std::int64_t EtcdLimits::LeaseTtlSeconds(const config::ClusterConfig& cluster) {
  const double d = std::chrono::duration<double>(cluster.term).count();
  return std::max<std::int64_t>(2, static_cast<std::int64_t>(std::ceil(d)));
}

EtcdLimits::EtcdLimits(asio::io_context& io, EtcdClient& client, EtcdLimitsOptions options)
    : io_(io),
      client_(client),
      options_(std::move(options)),
      minimum_(Minimums(options_.cluster)),
      ttl_s_(LeaseTtlSeconds(options_.cluster)),
      rng_(std::random_device{}()),
      compaction_interval_(CompactionInterval(options_.cluster)) {}

EtcdLimits::~EtcdLimits() = default;

void EtcdLimits::Start() {
  asio::co_spawn(io_, LeaseLoop(), asio::detached);
  asio::co_spawn(io_, CampaignLoop(), asio::detached);
}

void EtcdLimits::Stop() {
  if (stopping_) return;
  stopping_ = true;
  for (asio::steady_timer* t : sleeping_) t->cancel();
  StepDown("the broker stops");
  // Best effort: revoking this lease ends the keeper key (the next keeper
  // need not wait for its TTL) and this broker's unclaimed refusal reports.
  // It is not the ledger's liveness lease (that one is never revoked, R5).
  // Not done, the keys end with the TTL.
  if (lease_id_ != 0) asio::co_spawn(io_, Revoke(lease_id_), asio::detached);
}

awaitable<void> EtcdLimits::Revoke(std::int64_t lease) {
  (void)co_await client_.LeaseRevoke(lease);
}

awaitable<void> EtcdLimits::Sleep(std::chrono::milliseconds d) {
  if (stopping_) co_return;
  asio::steady_timer t(io_);
  t.expires_after(d);
  sleeping_.insert(&t);  // Stop() cancels it: a stop never waits out a TTL/3
  co_await t.async_wait(use_nothrow);
  sleeping_.erase(&t);
}

std::optional<std::size_t> EtcdLimits::TargetIndex(std::string_view name) const {
  for (std::size_t i = 0; i < options_.cluster.targets.size(); ++i) {
    if (options_.cluster.targets[i].name == name) return i;
  }
  return std::nullopt;
}

lease::LimitPolicyConfig EtcdLimits::PolicyConfig(std::size_t i) const {
  const config::TargetConfig& tc = options_.cluster.targets[i];
  lease::LimitPolicyConfig pc;
  pc.ceiling = static_cast<std::uint32_t>(tc.limit);
  pc.minimum = minimum_[i];
  pc.discover = tc.discover;
  pc.increase_after = tc.limit_increase_after;
  return pc;
}

// ---- the lease ----

awaitable<void> EtcdLimits::LeaseLoop() {
  const auto period = std::chrono::milliseconds(ttl_s_ * 1000 / 3);
  Clock::time_point last_ok = Clock::now();
  while (!stopping_) {
    if (lease_id_ == 0) {
      auto granted = co_await client_.LeaseGrant(ttl_s_);
      if (granted.ok()) {
        lease_id_ = granted->id;
        last_ok = Clock::now();
        spdlog::info("etcd limits: etcd lease {:x} (TTL {} s) for the limit keeper election and "
                     "refusal reports",
                     lease_id_, ttl_s_);
      } else {
        LogLimited(spdlog::level::warn, "etcd limits lease", options_.self.broker_id,
                   "etcd limits: no etcd lease yet: {} (refusal reports are lost meanwhile)",
                   granted.status().message());
      }
    } else {
      auto ka = co_await client_.KeepAlive(lease_id_);
      if (ka.ok() && ka->has_value()) {
        last_ok = Clock::now();
      } else if (ka.ok()) {
        spdlog::warn("etcd limits: etcd lease {:x} is gone (no keepalive reached etcd for {} s)",
                     lease_id_, ttl_s_);
        lease_id_ = 0;
        StepDown("its etcd lease is gone");
        continue;
      } else if (Clock::now() - last_ok > std::chrono::seconds(ttl_s_)) {
        // The lease may have ended: a keeper stops deciding (its writes are
        // guarded by the lease anyway) until it can tell again.
        StepDown("etcd has not answered a keepalive for the lease's TTL: " +
                 ka.status().message());
      }
    }
    co_await Sleep(period);
  }
}

// ---- reading ----

awaitable<Result<EtcdLimits::Read>> EtcdLimits::ReadAll() {
  auto range = co_await client_.RangePrefix(options_.prefix);
  if (!range.ok()) co_return range.status();
  Read out;
  out.revision = range->revision;
  for (KeyValue& kv : range->kvs) {
    std::optional<std::string> under = SuffixUnder(options_.prefix, kv.key);
    if (!under) continue;
    std::string suffix = std::move(*under);
    if (suffix == lease::kLearningKey) {
      out.view.learning = true;
      out.ledger_mod[suffix] = kv.mod_revision;
    } else if (suffix.starts_with(kLedgerKeys)) {
      out.ledger_mod[suffix] = kv.mod_revision;
      out.view.values[std::move(suffix)] = std::move(kv.value);
    } else if (suffix.starts_with(lease::kLiveKeyPrefix)) {
      if (auto who = lease::ParseLiveKey(suffix)) out.view.live.insert(*who);
    } else if (suffix == kKeeperKey) {
      auto k = DecodeKeeper(kv.value);
      if (k.ok()) {
        out.keeper = *k;
        out.keeper_lease = kv.lease;
      } else {
        out.damaged.push_back(k.status().message());
      }
    } else if (suffix.starts_with(kLimitKeyPrefix)) {
      const std::string target = suffix.substr(kLimitKeyPrefix.size());
      auto r = DecodeLimit(suffix, kv.value);
      if (r.ok()) {
        out.records[target] = *r;
      } else {
        out.damaged.push_back(r.status().message());
      }
      out.record_mod[target] = kv.mod_revision;
    } else if (suffix.starts_with(kRefusalKeyPrefix)) {
      kv.key = std::move(suffix);
      out.refusals.push_back(std::move(kv));
    }
  }
  co_return out;
}

// ---- the keeper election ----

awaitable<bool> EtcdLimits::Campaign() {
  const std::int64_t lease = lease_id_;
  if (lease == 0) co_return false;
  const KeeperValue me{options_.self.broker_id, options_.self.epoch, options_.self.instance};
  std::vector<Compare> compares{Compare{Key(kKeeperKey), Compare::Field::kCreateRevision, 0, {}}};
  std::vector<Op> ops{Op{Op::Kind::kPut, Key(kKeeperKey), EncodeKeeper(me), lease}};
  auto r = co_await client_.Txn(std::move(compares), std::move(ops));
  if (r.ok()) co_return r->succeeded;
  // A timed-out put may still commit: the next read tells (a key with this
  // instance and lease is ours; BecomeKeeper checks both).
  co_return false;
}

awaitable<void> EtcdLimits::CampaignLoop() {
  const auto retry = std::chrono::milliseconds(std::max<std::int64_t>(250, ttl_s_ * 1000 / 4));
  while (!stopping_) {
    if (!keeper_) {
      // Only a broker of the stored ledger's file campaigns (item 1).
      auto before = co_await ReadAll();
      if (before.ok()) {
        const std::string why = NotMyLedger(*before);
        if (!why.empty()) {
          if (why != not_mine_logged_) {
            spdlog::warn("etcd limits: broker {} does not campaign for limit keeper: {}",
                         options_.self.broker_id, why);
            not_mine_logged_ = why;
          }
          co_await Sleep(retry);
          continue;
        }
        not_mine_logged_.clear();
      }
      (void)co_await Campaign();
      auto read = co_await ReadAll();
      const KeeperValue me{options_.self.broker_id, options_.self.epoch, options_.self.instance};
      if (read.ok() && read->keeper && *read->keeper == me && lease_id_ != 0 &&
          read->keeper_lease == lease_id_ && !stopping_) {
        co_await BecomeKeeper(*read);
      } else {
        co_await Sleep(retry);
        continue;
      }
    }
    while (keeper_ && !stopping_) {
      co_await KeeperStep();
      if (keeper_) co_await Sleep(kKeeperPoll);
    }
  }
}

awaitable<void> EtcdLimits::BecomeKeeper(const Read& read) {
  const std::size_t n = options_.cluster.targets.size();
  pending_.assign(n, {});
  seen_record_mod_.assign(n, 0);
  broker::LimitKeeper::Hooks hooks;
  hooks.apply = [this](std::size_t i, const lease::LimitChange& c) {
    // Written by the next step's transaction (WriteChanges).
    pending_[i].push_back(Pending{c, keeper_ ? keeper_->last_change_who(i) : std::string(),
                                  UnixMs()});
  };
  auto created = broker::LimitKeeper::Create(io_, options_.cluster.targets, minimum_,
                                             std::move(hooks));
  if (!created.ok()) {
    spdlog::error("etcd limits: cannot run the limit keeper: {}", created.status().message());
    co_return;
  }
  keeper_ = std::move(created).value();
  history_ = std::make_unique<OwedHistory>(lease::RefusalReportHorizon(options_.cluster.term));
  // Reports already in etcd when this keeper started describe moments before
  // its owed history: counted, never evidence (a keeper change loses them).
  first_revision_ = read.revision;
  // The first compaction is one interval from now, up to this revision.
  compact_at_ = read.revision;
  compact_due_ = Clock::now() + compaction_interval_;
  // Start from what etcd holds, never from the configured limit when a lower
  // one is stored (S).
  auto stored = lease::StoredLimits(options_.mine, read.view);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string& name = options_.cluster.targets[i].name;
    if (auto r = read.records.find(name); r != read.records.end()) {
      keeper_->Restore(i, {r->second.limit, r->second.source, r->second.base, r->second.base_source},
                       "the limit stored in etcd (written by broker " + r->second.writer + ")");
      seen_record_mod_[i] = read.record_mod.at(name);
      continue;
    }
    if (!stored.ok()) continue;
    for (const auto& [target, limit] : *stored) {
      if (target == name && limit < keeper_->limit(i)) {
        keeper_->Restore(i, {limit, lease::LimitSource::kDiscovered, keeper_->record(i).base,
                             keeper_->record(i).base_source},
                         "the stored ledger's limit (no limit record in etcd)");
        pending_[i].push_back(Pending{
            {limit, limit, lease::LimitSource::kDiscovered, "kept from the stored ledger"}, "",
            UnixMs()});
      }
    }
  }
  spdlog::warn("etcd limits: broker {} is the limit keeper now (key {} on etcd lease {:x}): it "
               "runs discovery and limit_command for every target",
               options_.self.broker_id, Key(kKeeperKey), lease_id_);
  keeper_->Start(nullptr);
}

void EtcdLimits::StepDown(const std::string& why) {
  if (!keeper_) return;
  spdlog::warn("etcd limits: broker {} is no longer the limit keeper: {}", options_.self.broker_id,
               why);
  keeper_->Stop();
  // Its timers and a killed limit_command may still call into it: it lives
  // as long as this object (keepers change rarely).
  retired_.push_back(std::move(keeper_));
  history_.reset();
  pending_.clear();
}

// ---- the keeper's step ----

awaitable<void> EtcdLimits::KeeperStep() {
  auto read = co_await ReadAll();
  if (!read.ok()) {
    LogLimited(spdlog::level::warn, "etcd limits read", options_.self.broker_id,
               "etcd limits: the keeper cannot read etcd: {}", read.status().message());
    co_return;
  }
  const KeeperValue me{options_.self.broker_id, options_.self.epoch, options_.self.instance};
  if (!keeper_) co_return;
  if (!read->keeper || !(*read->keeper == me) || read->keeper_lease != lease_id_) {
    StepDown(read->keeper ? "the keeper key names " + Describe(*read->keeper)
                          : std::string("the keeper key is gone"));
    co_return;
  }
  if (const std::string why = NotMyLedger(*read); !why.empty()) {
    // A newer (or another) file's ledger: this keeper's limits must not be
    // written over it (they could raise a limit that file lowered: S). Step
    // down and free the key for a broker of the stored file.
    const std::int64_t lease = lease_id_;
    StepDown(why);
    not_mine_logged_ = why;
    if (lease != 0) co_await ReleaseKeeperKey(lease);
    co_return;
  }
  for (const std::string& d : read->damaged) {
    LogLimited(spdlog::level::err, "etcd limits damaged", d, "etcd limits: {}", d);
  }
  if (Clock::now() >= compact_due_) co_await Compact(read->revision);
  if (!keeper_) co_return;
  const auto now = Clock::now();
  auto snapshot = lease::SnapshotOf(options_.mine, read->view, now);
  if (snapshot.ok()) history_->Observe(*snapshot, now);
  // Records written by someone else (an operator through another broker).
  for (std::size_t i = 0; i < options_.cluster.targets.size(); ++i) {
    const std::string& name = options_.cluster.targets[i].name;
    auto r = read->records.find(name);
    if (r == read->records.end()) continue;
    const std::int64_t mod = read->record_mod.at(name);
    if (mod == seen_record_mod_[i]) continue;
    seen_record_mod_[i] = mod;
    pending_[i].clear();  // what it decided from older evidence yields to the record
    keeper_->Restore(i, {r->second.limit, r->second.source, r->second.base, r->second.base_source},
                     "stored in etcd by broker " + r->second.writer +
                         (r->second.recent.empty() ? std::string()
                                                   : ": " + r->second.recent.front().cause));
  }
  co_await ClaimRefusals(*read, now);
  if (keeper_) co_await WriteChanges(*read);
}

std::string EtcdLimits::NotMyLedger(const Read& read) const {
  const auto stored = StoredFileOf(read.view);
  if (!stored) return {};  // no ledger yet (or unreadable: nothing is written then)
  const lease::LedgerConfig& mine = options_.mine;
  if (stored->generation != mine.generation) {
    return "the ledger in etcd runs cluster file generation " +
           std::to_string(stored->generation) + ", this broker generation " +
           std::to_string(mine.generation) + " (only a broker of generation " +
           std::to_string(stored->generation) + " keeps or sets limits" +
           (stored->generation > mine.generation ? "; restart this broker with the new file)"
                                                 : "; this broker's next renew moves it)");
  }
  if (!mine.file_hash.empty() && !stored->file_hash.empty() &&
      stored->file_hash != mine.file_hash) {
    return "the ledger in etcd runs another cluster file at generation " +
           std::to_string(stored->generation) + " (hash " + stored->file_hash +
           ", this broker's " + mine.file_hash + ")";
  }
  return {};
}

awaitable<void> EtcdLimits::ReleaseKeeperKey(std::int64_t lease) {
  // Guarded by the lease: never deletes another broker's keeper key.
  std::vector<Compare> compares{Compare{Key(kKeeperKey), Compare::Field::kLease, lease, {}}};
  std::vector<Op> ops{Op{Op::Kind::kDelete, Key(kKeeperKey), {}, 0}};
  auto r = co_await client_.Txn(std::move(compares), std::move(ops));
  if (!r.ok()) {
    LogLimited(spdlog::level::warn, "etcd limits release", options_.self.broker_id,
               "etcd limits: the keeper key could not be deleted ({}): it ends with this "
               "broker's etcd lease",
               r.status().message());
  }
}

awaitable<void> EtcdLimits::Compact(std::int64_t current_revision) {
  const std::int64_t target = compact_at_;
  compact_at_ = current_revision;
  compact_due_ = Clock::now() + compaction_interval_;
  if (target <= compacted_revision_) co_return;
  const Status s = co_await client_.Compact(target);
  if (s.ok()) {
    compacted_revision_ = target;
    ++compactions_;
    compaction_error_.clear();
    spdlog::debug("etcd limits: etcd history compacted up to revision {} (store at {})", target,
                  current_revision);
  } else {
    ++compaction_failures_;
    compaction_error_ = s.message();
    LogLimited(spdlog::level::warn, "etcd limits compact", options_.self.broker_id,
               "etcd limits: compacting etcd's history up to revision {} failed: {} ({} "
               "failures so far; retried in {} s; etcd's own --auto-compaction is the second "
               "line)",
               target, s.message(), compaction_failures_,
               std::chrono::duration_cast<std::chrono::seconds>(compaction_interval_).count());
  }
}

awaitable<void> EtcdLimits::ClaimRefusals(const Read& read, lease::TimePoint now) {
  if (read.refusals.empty()) co_return;
  // Claim them by deleting them, guarded by the keeper key's lease: a deposed
  // keeper claims nothing, and two keepers never both count one report.
  std::vector<Compare> compares{
      Compare{Key(kKeeperKey), Compare::Field::kLease, lease_id_, {}}};
  std::vector<Op> deletes;
  // etcd allows 128 operations per transaction: claim at most kMaxClaim a
  // step; the rest wait for the next poll.
  const std::size_t claim = std::min(read.refusals.size(), kMaxClaim);
  for (std::size_t k = 0; k < claim; ++k) {
    const KeyValue& kv = read.refusals[k];
    compares.push_back(Compare{Key(kv.key), Compare::Field::kModRevision, kv.mod_revision, {}});
    deletes.push_back(Op{Op::Kind::kDelete, Key(kv.key), {}, 0});
  }
  auto r = co_await client_.Txn(std::move(compares), std::move(deletes));
  // Not claimed (or unknown after a timeout): the next read shows them again
  // if they are still there; a claim that did commit shows them gone.
  if (!r.ok() || !r->succeeded || !keeper_) co_return;
  auto snapshot = lease::SnapshotOf(options_.mine, read.view, now);
  for (std::size_t k = 0; k < claim; ++k) {
    const KeyValue& kv = read.refusals[k];
    auto name = ParseRefusalKey(kv.key);
    auto report = DecodeRefusal(kv.key, kv.value);
    if (!name || !report.ok()) {
      LogLimited(spdlog::level::warn, "etcd limits bad refusal", kv.key,
                 "etcd limits: refusal report {} ignored: {}", kv.key,
                 report.ok() ? std::string("not a refusal key") : report.status().message());
      continue;
    }
    auto index = TargetIndex(report->target);
    if (!index) {
      LogLimited(spdlog::level::warn, "etcd limits unknown target", name->broker_id,
                 "etcd limits: broker {} reports a refusal for unknown target '{}': ignored",
                 name->broker_id, report->target);
      continue;
    }
    const std::uint32_t held =
        snapshot.ok() && kv.create_revision > first_revision_
            ? HeldAtRefusal(options_.mine, *snapshot, read.view.learning, *history_,
                            report->target, name->broker_id, report->held, now)
            : UINT32_MAX;
    keeper_->OnRefusal(*index, held, report->refusals, "broker " + name->broker_id);
  }
}

awaitable<void> EtcdLimits::WriteChanges(const Read& read) {
  auto stored = lease::StoredLimits(options_.mine, read.view);
  if (!stored.ok()) co_return;  // no ledger yet (or a damaged one, logged by the renew)
  lease::StoreView after = read.view;
  std::map<std::string, std::string> ledger_puts;
  std::vector<std::string> ledger_deletes;
  std::map<std::string, std::string> record_puts;  // by target name
  std::vector<std::size_t> written;
  for (std::size_t i = 0; i < options_.cluster.targets.size(); ++i) {
    const std::string& name = options_.cluster.targets[i].name;
    std::optional<std::uint32_t> ledger_limit;
    for (const auto& [target, limit] : *stored) {
      if (target == name) ledger_limit = limit;
    }
    const std::uint32_t want = keeper_->limit(i);
    // A stored record that says otherwise than this keeper (written by a
    // keeper of an older file whose ceiling was higher, restored here
    // clamped to this file's) is written again, so that status shows it.
    const auto stored_rec = read.records.find(name);
    const broker::LimitKeeper::Record mine_rec = keeper_->record(i);
    const bool record_differs =
        !pending_[i].empty() || stored_rec == read.records.end() ||
        stored_rec->second.limit != mine_rec.limit || stored_rec->second.source != mine_rec.source ||
        stored_rec->second.base != mine_rec.base ||
        stored_rec->second.base_source != mine_rec.base_source;
    if (!record_differs && ledger_limit == want) continue;
    // The ledger's limit (C2: grants shrink at once; capacity counts as free
    // only as owed falls).
    if (ledger_limit != want) {
      lease::AdminChange change;
      change.kind = lease::AdminChange::Kind::kSetLimit;
      change.target = name;
      change.limit = want;
      auto w = lease::ApplyAdmin(options_.mine, after, change, Clock::now());
      if (!w.ok()) {
        // Not retried in a loop of errors: logged once a minute per target;
        // a refusal for another file ends this keeper at its next step.
        LogLimited(spdlog::level::err, "etcd limits set", name,
                   "etcd limits: target {}: the ledger in etcd refused this keeper's limit {}: "
                   "{} (not written)",
                   name, want, w.status().message());
        continue;
      }
      for (const auto& [k, v] : w->puts) {
        after.values[k] = v;
        ledger_puts[k] = v;
      }
      for (const auto& k : w->deletes) {
        after.values.erase(k);
        ledger_deletes.push_back(k);
      }
    }
    StoredLimit record;
    if (auto r = read.records.find(name); r != read.records.end()) record = r->second;
    const broker::LimitKeeper::Record now_rec = keeper_->record(i);
    for (const Pending& p : pending_[i]) {
      record = WithChange(record, p.change, now_rec.base, now_rec.base_source, p.at_unix_ms,
                          p.who, options_.self.broker_id);
    }
    record.limit = now_rec.limit;
    record.source = now_rec.source;
    record.base = now_rec.base;
    record.base_source = now_rec.base_source;
    record.writer = options_.self.broker_id;
    if (record.changed_at_unix_ms == 0) record.changed_at_unix_ms = UnixMs();
    record_puts[name] = EncodeLimit(record);
    written.push_back(i);
  }
  if (written.empty()) co_return;
  std::vector<Compare> compares{Compare{Key(kKeeperKey), Compare::Field::kLease, lease_id_, {}}};
  for (const auto& [suffix, revision] : read.ledger_mod) {
    compares.push_back(Compare{Key(suffix), Compare::Field::kModRevision, revision, {}});
  }
  for (const auto& [k, v] : ledger_puts) {
    if (read.ledger_mod.count(k) == 0) {
      compares.push_back(Compare{Key(k), Compare::Field::kCreateRevision, 0, {}});
    }
  }
  for (const auto& [name, text] : record_puts) {
    auto m = read.record_mod.find(name);
    compares.push_back(m != read.record_mod.end()
                           ? Compare{Key(LimitKey(name)), Compare::Field::kModRevision, m->second, {}}
                           : Compare{Key(LimitKey(name)), Compare::Field::kCreateRevision, 0, {}});
  }
  std::vector<Op> ops;
  for (const auto& [k, v] : ledger_puts) ops.push_back(Op{Op::Kind::kPut, Key(k), v, 0});
  for (const auto& k : ledger_deletes) ops.push_back(Op{Op::Kind::kDelete, Key(k), {}, 0});
  for (const auto& [name, text] : record_puts) {
    ops.push_back(Op{Op::Kind::kPut, Key(LimitKey(name)), text, 0});
  }
  auto r = co_await client_.Txn(std::move(compares), std::move(ops));
  if (!r.ok()) {
    // Unknown outcome: the next read shows the record (taken in as written
    // by us: same values) or not (written again).
    LogLimited(spdlog::level::warn, "etcd limits write", options_.self.broker_id,
               "etcd limits: writing the limits failed: {} (retried)", r.status().message());
    co_return;
  }
  if (!r->succeeded) co_return;  // another broker wrote first: redone from the next read
  for (std::size_t i : written) {
    if (i < pending_.size()) pending_[i].clear();
    // Our own write: the next read must not take it in as someone else's.
    // Its mod_revision is the transaction's revision.
    if (i < seen_record_mod_.size()) seen_record_mod_[i] = r->revision;
    spdlog::info("etcd limits: target {}: limit {} (source {}) stored in etcd",
                 options_.cluster.targets[i].name, keeper_ ? keeper_->limit(i) : 0,
                 keeper_ ? lease::LimitSourceName(keeper_->record(i).source) : "");
  }
}

// ---- any broker ----

void EtcdLimits::ReportRefusal(std::size_t target, std::uint32_t held, const std::string& who) {
  if (target >= options_.cluster.targets.size() || stopping_) return;
  const std::string& name = options_.cluster.targets[target].name;
  if (lease_id_ == 0 || puts_in_flight_ >= kMaxPutsInFlight) {
    ++reports_lost_;
    LogLimited(spdlog::level::warn, "etcd refusal report lost", name,
               "target {}: {} reports a session-limit refusal, but it cannot be put into etcd "
               "now ({}): the report is lost ({} lost so far)",
               name, who, lease_id_ == 0 ? "no etcd lease" : "too many reports in flight",
               reports_lost_);
    return;
  }
  const std::string key =
      Key(RefusalKey({options_.self.broker_id, options_.self.epoch, options_.self.instance,
                      ++refusal_seq_}));
  asio::co_spawn(io_, Put(key, EncodeRefusal({name, held, 1})), asio::detached);
}

awaitable<void> EtcdLimits::Put(std::string key, std::string value) {
  ++puts_in_flight_;
  std::vector<Op> ops{Op{Op::Kind::kPut, key, std::move(value), lease_id_}};
  auto r = co_await client_.Txn({}, std::move(ops));
  --puts_in_flight_;
  if (!r.ok()) {
    ++reports_lost_;
    LogLimited(spdlog::level::warn, "etcd refusal report failed", options_.self.broker_id,
               "etcd limits: a refusal report could not be put into etcd: {} ({} lost so far)",
               r.status().message(), reports_lost_);
  }
}

json::object EtcdLimits::TargetJson(std::size_t i, const Read& read) const {
  const config::TargetConfig& tc = options_.cluster.targets[i];
  json::object o;
  o["target"] = tc.name;
  std::optional<std::uint32_t> ledger_limit;
  if (auto stored = lease::StoredLimits(options_.mine, read.view); stored.ok()) {
    for (const auto& [target, limit] : *stored) {
      if (target == tc.name) ledger_limit = limit;
    }
  }
  auto r = read.records.find(tc.name);
  if (r != read.records.end()) {
    const StoredLimit& s = r->second;
    o["limit"] = s.limit;
    o["limit_source"] = lease::LimitSourceName(s.source);
    o["limit_changed_at"] = IsoTime(s.changed_at_unix_ms);
    o["limit_changed_ms_ago"] = std::max<std::int64_t>(0, UnixMs() - s.changed_at_unix_ms);
    o["limit_base"] = s.base;
    o["limit_written_by"] = s.writer;
    json::array recent;
    for (const StoredChange& c : s.recent) {
      recent.push_back(json::object{{"at", IsoTime(c.at_unix_ms)},
                                    {"ms_ago", std::max<std::int64_t>(0, UnixMs() - c.at_unix_ms)},
                                    {"from", c.from},
                                    {"to", c.to},
                                    {"source", lease::LimitSourceName(c.source)},
                                    {"cause", c.cause},
                                    {"who", c.who}});
    }
    o["recent_limit_changes"] = std::move(recent);
  } else {
    // No record yet: the ledger's limit (the configured one until a keeper
    // stores a change).
    const std::uint32_t limit = ledger_limit.value_or(static_cast<std::uint32_t>(tc.limit));
    o["limit"] = limit;
    o["limit_source"] =
        limit < static_cast<std::uint32_t>(tc.limit) ? "discovered" : "config";
    o["limit_changed_at"] = nullptr;
    o["limit_changed_ms_ago"] = nullptr;
    o["recent_limit_changes"] = json::array{};
  }
  o["ledger_limit"] = ledger_limit ? json::value(*ledger_limit) : json::value(nullptr);
  o["limit_ceiling"] = tc.limit;
  o["limit_minimum"] = minimum_[i];
  o["discover"] = tc.discover;
  o["limit_store"] = "etcd";
  o["persisted"] = r != read.records.end();
  o["limit_keeper"] = read.keeper ? json::value(read.keeper->broker_id) : json::value(nullptr);
  if (keeper_) {
    // This broker is the keeper: what only it knows.
    json::object mine = keeper_->Json(i);
    for (const char* k : {"limit_command", "refusals_reported", "limit_changes"}) {
      if (const json::value* v = mine.if_contains(k)) o[k] = *v;
    }
  } else {
    o["limit_command"] = tc.limit_command.empty()
                             ? json::value(nullptr)
                             : json::value(json::object{{"runs_on", "the limit keeper"}});
  }
  return o;
}

awaitable<json::object> EtcdLimits::Limits() {
  auto read = co_await ReadAll();
  if (!read.ok()) {
    co_return json::object{{"ok", false},
                           {"error", ErrcName(read.status().code())},
                           {"message", "etcd cannot be read for the limits: " +
                                           read.status().message()}};
  }
  json::array ts;
  for (std::size_t i = 0; i < options_.cluster.targets.size(); ++i) {
    ts.push_back(TargetJson(i, *read));
  }
  const std::string keeper = read->keeper ? read->keeper->broker_id : std::string();
  json::object out{{"ok", true},
                   {"coordinator", keeper},
                   {"limit_keeper", keeper},
                   {"targets", std::move(ts)}};
  if (keeper_) {
    out["etcd_compaction"] = json::object{
        {"interval_ms", compaction_interval_.count()},
        {"compacted_revision", compacted_revision_},
        {"compactions", compactions_},
        {"failures", compaction_failures_},
        {"last_error", compaction_error_.empty() ? json::value(nullptr)
                                                 : json::value(compaction_error_)}};
  }
  co_return out;
}

awaitable<json::object> EtcdLimits::SetLimit(std::size_t target, std::uint32_t value,
                                             std::string who) {
  auto error = [](Errc code, const std::string& message) {
    return json::object{{"ok", false}, {"error", ErrcName(code)}, {"message", message}};
  };
  if (target >= options_.cluster.targets.size()) {
    co_return error(Errc::kUnknownTarget, "no such target");
  }
  const std::string& name = options_.cluster.targets[target].name;
  Status last{Errc::kConflict, "too many lost compares"};
  for (int attempt = 0; attempt < kMaxAttempts && !stopping_; ++attempt) {
    if (attempt > 0) {
      std::uniform_int_distribution<int> pick(1, 5 << std::min(attempt, 4));
      co_await Sleep(std::chrono::milliseconds(pick(rng_)));
    }
    auto read = co_await ReadAll();
    if (!read.ok()) {
      last = read.status();
      if (last.code() == Errc::kTimeout) continue;
      co_return error(last.code(), "target " + name + ": etcd: " + last.message());
    }
    if (const std::string why = NotMyLedger(*read); !why.empty()) {
      co_return error(Errc::kConflict, "target " + name + ": not set: " + why);
    }
    // The policy's rules (bounds, base) from the stored record.
    const auto now = Clock::now();
    lease::LimitPolicy policy(PolicyConfig(target), now);
    StoredLimit record;
    auto r = read->records.find(name);
    if (r != read->records.end()) {
      record = r->second;
      policy.Restore(now, record.limit, record.source, record.base, record.base_source);
    }
    auto change = policy.OnOperator(now, value);
    if (!change.ok()) {
      co_return error(change.status().code(), "target " + name + ": " + change.status().message());
    }
    lease::LimitChange c = change->value_or(lease::LimitChange{
        value, value, lease::LimitSource::kOperator, "set by the operator (same value)"});
    c.cause += " (" + who + " on broker " + options_.self.broker_id + ")";
    record = WithChange(record, c, policy.base(), policy.base_source(), UnixMs(), who,
                        options_.self.broker_id);
    record.limit = policy.limit();
    record.source = policy.source();
    lease::AdminChange admin;
    admin.kind = lease::AdminChange::Kind::kSetLimit;
    admin.target = name;
    admin.limit = policy.limit();
    auto w = lease::ApplyAdmin(options_.mine, read->view, admin, now);
    if (!w.ok()) {
      co_return error(w.status().code(), "target " + name + ": " + w.status().message());
    }
    std::vector<Compare> compares;
    for (const auto& [suffix, revision] : read->ledger_mod) {
      compares.push_back(Compare{Key(suffix), Compare::Field::kModRevision, revision, {}});
    }
    for (const auto& [k, v] : w->puts) {
      if (read->ledger_mod.count(k) == 0) {
        compares.push_back(Compare{Key(k), Compare::Field::kCreateRevision, 0, {}});
      }
    }
    auto m = read->record_mod.find(name);
    compares.push_back(m != read->record_mod.end()
                           ? Compare{Key(LimitKey(name)), Compare::Field::kModRevision, m->second, {}}
                           : Compare{Key(LimitKey(name)), Compare::Field::kCreateRevision, 0, {}});
    std::vector<Op> ops;
    for (const auto& [k, v] : w->puts) ops.push_back(Op{Op::Kind::kPut, Key(k), v, 0});
    for (const auto& k : w->deletes) ops.push_back(Op{Op::Kind::kDelete, Key(k), {}, 0});
    ops.push_back(Op{Op::Kind::kPut, Key(LimitKey(name)), EncodeLimit(record), 0});
    auto t = co_await client_.Txn(std::move(compares), std::move(ops));
    if (!t.ok()) {
      last = t.status();
      // Unknown outcome: read again; an operator's value already stored is
      // found by OnOperator as the same value (written once more, harmless).
      if (last.code() == Errc::kTimeout) continue;
      co_return error(last.code(), "target " + name + ": etcd: " + last.message());
    }
    if (!t->succeeded) {
      last = Status{Errc::kConflict, "etcd ledger changed while writing (lost compare)"};
      continue;
    }
    spdlog::warn("target {}: limit {} -> {} (source operator): {} (stored in etcd)", name, c.from,
                 c.to, c.cause);
    auto after = co_await ReadAll();
    json::object o = after.ok() ? TargetJson(target, *after) : json::object{};
    o["ok"] = true;
    o["target"] = name;
    o["coordinator"] = after.ok() && after->keeper ? after->keeper->broker_id : std::string();
    co_return o;
  }
  co_return error(last.code(), "target " + name + ": " + last.message());
}

}  // namespace dsb::etcd
