#include "broker/etcd/etcd_ledger.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cmath>

#include "broker/asio_helpers.h"
#include "broker/etcd/prefix_keys.h"
#include "common/limited_log.h"

namespace dsb::etcd {

namespace asio = boost::asio;
using asio::awaitable;
using Clock = std::chrono::steady_clock;

namespace {

}  // namespace

std::int64_t EtcdLedger::LeaseTtlSeconds(const lease::LedgerConfig& mine) {
  const double silence_s =
      std::chrono::duration<double>(mine.term + mine.drain).count() * (1.0 + mine.eps);
  return std::max<std::int64_t>(2, static_cast<std::int64_t>(std::ceil(silence_s)));
}

EtcdLedger::EtcdLedger(asio::any_io_executor executor, EtcdClient& client,
                       EtcdLedgerOptions options, Callbacks callbacks)
    : executor_(std::move(executor)),
      client_(client),
      options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      ttl_s_(LeaseTtlSeconds(options_.mine)),
      rng_(std::random_device{}()),
      check_timer_(std::make_unique<asio::steady_timer>(executor_)),
      notify_timer_(std::make_unique<asio::steady_timer>(executor_)),
      watch_timer_(std::make_unique<asio::steady_timer>(executor_)) {}

EtcdLedger::~EtcdLedger() = default;

std::string EtcdLedger::endpoint() const { return client_.current_endpoint(); }

void EtcdLedger::Start() { asio::co_spawn(executor_, WatchLoop(), asio::detached); }

void EtcdLedger::Stop() {
  if (stopping_) return;
  stopping_ = true;
  queued_.reset();
  watch_timer_->cancel();
  check_timer_->cancel();
  notify_timer_->cancel();
  client_.Cancel();
}

void EtcdLedger::Renew(lease::RenewRequest request) {
  if (stopping_ || closing_) return;
  queued_ = std::move(request);
  if (renewing_) return;  // the loop takes the newest queued request next
  renewing_ = true;
  asio::co_spawn(executor_, RenewLoop(), asio::detached);
}

awaitable<void> EtcdLedger::RenewLoop() {
  while (queued_ && !stopping_ && !closing_) {
    const lease::RenewRequest request = std::move(*queued_);
    queued_.reset();
    co_await RunRenew(request);
  }
  renewing_ = false;
}

awaitable<void> EtcdLedger::RunRenew(const lease::RenewRequest& request) {
  const auto deadline = Clock::now() + options_.renew_bound;
  std::string last_problem = "no attempt";
  for (int attempt = 0; attempt < options_.max_attempts && !stopping_ && !closing_; ++attempt) {
    if (Clock::now() >= deadline) {
      last_problem = "over its bound of " + std::to_string(Ms(options_.renew_bound)) + " ms (" +
                     last_problem + ")";
      break;
    }
    // 1. Liveness after t_sent (the agent handed the request over after it sent it).
    if (Status s = co_await KeepLive(); !s.ok()) {
      last_problem = "keepalive: " + s.message();
      if (s.code() == Errc::kTimeout) continue;  // unknown: harmless to repeat
      break;
    }
    // 2. Everything under the prefix at one revision.
    auto read = co_await ReadAll();
    if (!read.ok()) {
      last_problem = "read: " + read.status().message();
      if (read.status().code() == Errc::kTimeout) continue;
      break;
    }
    auto own = read->live_lease.find(options_.self);
    if (own == read->live_lease.end() || own->second != lease_id_) {
      // The lease lives but the live key is gone (an operator deleted keys,
      // or the put after a new lease timed out): put it again, then redo.
      if (live_seen_) ForcedDrop(LiveKeyDeletedMessage());
      live_seen_ = false;
      last_problem = "this instance's live key was missing";
      std::vector<Op> put{Op{Op::Kind::kPut, Key(lease::LiveKey(options_.self)),
                             options_.live_value, lease_id_}};
      auto r = co_await client_.Txn({}, std::move(put));
      if (!r.ok() && r.status().code() != Errc::kTimeout) {
        last_problem = "live key: " + r.status().message();
        break;
      }
      continue;
    }
    live_seen_ = true;
    // A store that went back in time (restored from a backup) may owe less
    // than brokers hold: no grant from it; it learns again (C3).
    const std::optional<std::uint64_t> seq = lease::StoredSequence(read->view);
    if (seq && *seq < highest_seq_) {
      spdlog::critical("etcd ledger: the store went back in time (ledger write sequence {} after "
                       "{} was seen: restored from a backup?): no grant from it; the ledger "
                       "learns again (C3) before anything is granted",
                       *seq, highest_seq_);
      auto restart = lease::RestartLearning(options_.mine, read->view, Clock::now(), highest_seq_);
      if (restart.ok()) {
        auto w = co_await Write(*read, *restart, /*guard_live=*/true);
        if (w.ok() && *w) highest_seq_ = std::max(*seq, highest_seq_) + 1;
      }
      co_return;
    }
    if (seq) highest_seq_ = std::max(highest_seq_, *seq);
    // 3. The rules.
    auto step = lease::ApplyRenew(options_.mine, read->view, request, Clock::now());
    if (!step.ok()) {
      LogLimited(spdlog::level::err, "etcd ledger refused a renew", options_.self.broker_id,
                 "etcd ledger: renew {} of this broker cannot be applied: {} (no grant: the "
                 "lease lapses on this broker's clock, then only the floor is used)",
                 request.request_id, step.status().message());
      connected_ = true;
      co_return;
    }
    // 4. One compare-and-swap transaction.
    if (!step->write.empty()) {
      auto w = co_await Write(*read, step->write, /*guard_live=*/true);
      if (!w.ok()) {
        last_problem = "transaction: " + w.status().message();
        // A timed-out write may still commit: read again; the ledger answers
        // the duplicate request with the reply it stored.
        if (w.status().code() == Errc::kTimeout) continue;
        break;
      }
      if (!*w) {
        last_problem = "another broker wrote first " + std::to_string(attempt + 1) + " time(s)";
        co_await Backoff(attempt);
        continue;
      }
      LogStep(step->write);
      if (seq) highest_seq_ = std::max(highest_seq_, *seq + 1);  // every write raises it by one
    }
    if (!connected_) {
      spdlog::info("etcd ledger: renews go through {} again", client_.current_endpoint());
    }
    connected_ = true;
    if (step->reply && callbacks_.on_grant) callbacks_.on_grant(*step->reply);
    co_return;
  }
  if (stopping_ || closing_) co_return;
  if (connected_) {
    spdlog::warn("etcd ledger: renew {} got no grant: {} (retried at the agent's next resend; "
                 "the lease lapses on this broker's clock, then only the floor is used)",
                 request.request_id, last_problem);
  } else {
    LogLimited(spdlog::level::warn, "etcd renew failed", options_.self.broker_id,
               "etcd ledger: renew {} got no grant: {} (still retrying)", request.request_id,
               last_problem);
  }
  connected_ = false;
}

awaitable<Status> EtcdLedger::KeepLive() {
  if (lease_id_ == 0) co_return co_await NewLease();
  const Clock::time_point sent = Clock::now();
  auto ka = co_await client_.KeepAlive(lease_id_);
  if (!ka.ok()) co_return ka.status();
  if (ka->has_value()) {
    last_alive_sent_ = sent;
    co_return Status::Ok();
  }
  // Review item 3: etcd keeps a lease at least TTL after it applied the last
  // keepalive, which was after this broker sent it; so a lease gone sooner
  // than TTL (1 - eps) after that send, on this broker's clock, was ended
  // early (a revoke, or a stale leader: etcd-io/etcd#15247).
  bool early = false;
  if (last_alive_sent_) {
    const auto lived = Clock::now() - *last_alive_sent_;
    const auto ttl = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(static_cast<double>(ttl_s_) * (1.0 - options_.mine.eps)));
    if (lived < ttl) {
      early = true;
      ForcedDrop(fmt::format(
          "etcd ledger: etcd ended this instance's lease {:x} after only {} ms of its TTL {} s "
          "since this broker's last successful keepalive (its own clock): revoked by someone, "
          "or etcd-io/etcd#15247 (a stale leader on a slow disk revokes leases early; Debian "
          "12's etcd 3.4.23 predates the fix). The others' renews may already have given away "
          "what this instance was owed: its lease is dropped to 0 at once (floor only) until "
          "a new grant",
          lease_id_, Ms(lived), ttl_s_));
    }
  }
  if (!early) {
    spdlog::warn("etcd ledger: this instance's etcd lease {:x} is gone (etcd heard no keepalive "
                 "for its TTL of {} s, or it was revoked): the ledger counts this instance silent "
                 "and forgot what it was owed (its own lease lapsed on this broker's clock long "
                 "before). Making a new lease and live key: it is accepted again as a new "
                 "instance",
                 lease_id_, ttl_s_);
  }
  lease_id_ = 0;
  co_return co_await NewLease();
}

awaitable<Status> EtcdLedger::NewLease() {
  const Clock::time_point sent = Clock::now();
  auto granted = co_await client_.LeaseGrant(ttl_s_);
  if (!granted.ok()) co_return granted.status();
  lease_id_ = granted->id;
  live_seen_ = false;
  last_alive_sent_ = sent;
  std::vector<Op> put{
      Op{Op::Kind::kPut, Key(lease::LiveKey(options_.self)), options_.live_value, lease_id_}};
  auto r = co_await client_.Txn({}, std::move(put));
  // A timed-out put is found (or not) by the next read, which re-puts it.
  if (!r.ok() && r.status().code() != Errc::kTimeout) co_return r.status();
  spdlog::info("etcd ledger: instance live on etcd lease {:x} (TTL {} s = (D + H)(1 + eps) "
               "rounded up), key {}",
               lease_id_, ttl_s_, Key(lease::LiveKey(options_.self)));
  co_return Status::Ok();
}

std::string EtcdLedger::LiveKeyDeletedMessage() const {
  return fmt::format(
      "etcd ledger: the live key {} was deleted while its etcd lease {:x} lives: treated as a "
      "forced revoke (the other brokers' renews forget what this instance was owed, so S may "
      "be exceeded until this broker drops its lease): its lease is dropped to 0 at once "
      "(floor only), the key is put again and a later grant is applied normally. To reset a "
      "deployment, delete its whole prefix (the ledger then learns again), never live/ keys",
      Key(lease::LiveKey(options_.self)), lease_id_);
}

void EtcdLedger::ForcedDrop(const std::string& why) {
  spdlog::error("{}", why);
  if (callbacks_.on_forced_drop) callbacks_.on_forced_drop(why);
}

awaitable<Result<EtcdLedger::Read>> EtcdLedger::ReadAll() {
  auto range = co_await client_.RangePrefix(options_.prefix);
  if (!range.ok()) co_return range.status();
  Read out;
  out.revision = range->revision;
  for (KeyValue& kv : range->kvs) {
    std::optional<std::string> under = SuffixUnder(options_.prefix, kv.key);
    if (!under) continue;
    std::string suffix = std::move(*under);
    const lease::KeyKind kind = lease::ClassifyKey(suffix);
    if (kind == lease::KeyKind::kOther) {
      // Not a ledger key (a stray key, a nested prefix): not read, not compared.
      if (suffix.starts_with(kLedgerKeys)) LogBadKey(kv.key, "not a key of the ledger: ignored");
      continue;
    }
    if (kind == lease::KeyKind::kLearning) {
      out.mod_revision[suffix] = kv.mod_revision;  // compared like every ledger key
      if (kv.lease == 0) {
        LogBadKey(kv.key, "a learning key without an etcd lease would never expire: not counted");
        continue;
      }
      out.view.learning = true;
      out.learning_lease = kv.lease;
    } else if (kind == lease::KeyKind::kMeta || kind == lease::KeyKind::kTarget) {
      out.mod_revision[suffix] = kv.mod_revision;
      out.view.values[std::move(suffix)] = std::move(kv.value);
    } else {
      if (auto who = lease::ParseLiveKey(suffix)) {
        if (kv.lease == 0) {
          LogBadKey(kv.key, "a live key without an etcd lease would keep its instance counted "
                            "forever: not counted");
          continue;
        }
        out.view.live.insert(*who);
        out.live_lease[*who] = kv.lease;
      }
    }
  }
  co_return out;
}

awaitable<Result<bool>> EtcdLedger::Write(const Read& read, const lease::StoreWrite& write,
                                          bool guard_live) {
  std::vector<Compare> compares;
  // Every ledger key as read; every ledger key this config knows (and every
  // key written) that was absent must still be absent.
  for (const auto& [suffix, revision] : read.mod_revision) {
    compares.push_back(Compare{Key(suffix), Compare::Field::kModRevision, revision, {}});
  }
  std::set<std::string> absent{std::string(lease::kMetaKey), std::string(lease::kLearningKey)};
  for (const auto& t : options_.mine.targets) absent.insert(lease::TargetKey(t.name));
  for (const auto& [suffix, value] : write.puts) absent.insert(suffix);
  for (const auto& suffix : write.deletes) absent.insert(suffix);
  for (const auto& suffix : absent) {
    if (read.mod_revision.count(suffix) != 0) continue;
    compares.push_back(Compare{Key(suffix), Compare::Field::kCreateRevision, 0, {}});
  }
  if (guard_live) {
    compares.push_back(
        Compare{Key(lease::LiveKey(options_.self)), Compare::Field::kLease, lease_id_, {}});
  }
  std::vector<Op> ops;
  for (const auto& [suffix, value] : write.puts) {
    ops.push_back(Op{Op::Kind::kPut, Key(suffix), value, 0});
  }
  for (const auto& suffix : write.deletes) ops.push_back(Op{Op::Kind::kDelete, Key(suffix), {}, 0});
  if (write.start_learning) {
    // C3: the learning key lives on a lease of its own that nobody keeps
    // alive: it ends (Silence() after this write) whoever is still running.
    auto learning = co_await client_.LeaseGrant(ttl_s_);
    if (!learning.ok()) co_return learning.status();
    ops.push_back(Op{Op::Kind::kPut, Key(lease::kLearningKey), "{\"v\":1}", learning->id});
  }
  auto r = co_await client_.Txn(std::move(compares), std::move(ops));
  if (!r.ok()) co_return r.status();
  if (r->succeeded && write.start_learning) {
    spdlog::info("etcd ledger: a ledger was started in etcd (none there, or a newer cluster "
                 "file generation): learning (C3) for {} s, no grant meanwhile",
                 ttl_s_);
  }
  co_return r->succeeded;
}

awaitable<void> EtcdLedger::Backoff(int attempt) {
  // Random, growing with the attempts, well inside the renew's bound.
  const auto cap = std::max<std::int64_t>(
      1, std::min<std::int64_t>(Ms(options_.renew_bound) / 8, 5LL << std::min(attempt, 5)));
  std::uniform_int_distribution<std::int64_t> pick(1, cap);
  asio::steady_timer t(executor_);
  t.expires_after(std::chrono::milliseconds(pick(rng_)));
  co_await t.async_wait(use_nothrow);
}

void EtcdLedger::LogStep(const lease::StoreWrite& write) const {
  // A refused or removed broker's every renew may repeat its warning: the same
  // text is rate-limited, a new one goes out at once.
  for (const std::string& w : write.warnings) {
    LogLimited(spdlog::level::err, "etcd ledger", w, "etcd ledger: {}", w);
  }
  // One line per instance forgotten by silence (C2).
  for (const std::string& n : write.notices) spdlog::warn("etcd ledger: {}", n);
}

awaitable<Status> EtcdLedger::Goodbye(lease::Goodbye goodbye) {
  if (lease_id_ == 0) {
    co_return Status{Errc::kConflict, "this instance has no etcd lease (it never renewed)"};
  }
  // R5: no renew after this point; wait for the one in flight (bounded), so
  // the goodbye is the instance's last word.
  closing_ = true;
  queued_.reset();
  const auto renew_deadline = Clock::now() + options_.renew_bound;
  while (renewing_ && Clock::now() < renew_deadline) {
    asio::steady_timer t(executor_);
    t.expires_after(std::chrono::milliseconds(5));
    co_await t.async_wait(use_nothrow);
  }
  // The goodbye's own bound starts after the renew in flight: sharing one
  // bound left a goodbye nothing when a slow renew used it up (CI run of
  // 2026-12-06, a loaded machine). At most two renew bounds in all.
  const auto deadline = Clock::now() + options_.renew_bound;
  Status last{Errc::kTimeout, "goodbye over its bound of " +
                                  std::to_string(Ms(options_.renew_bound)) + " ms"};
  for (int attempt = 0; attempt < options_.max_attempts && Clock::now() < deadline; ++attempt) {
    auto read = co_await ReadAll();
    if (!read.ok()) {
      last = read.status();
      if (last.code() == Errc::kTimeout) continue;
      co_return last;
    }
    auto own = read->live_lease.find(options_.self);
    if (own == read->live_lease.end() || own->second != lease_id_) {
      co_return Status{Errc::kConflict,
                       "this instance's live key is gone (the ledger counted it silent): "
                       "nothing to hand over"};
    }
    auto write = lease::ApplyGoodbye(options_.mine, read->view, goodbye, Clock::now());
    if (!write.ok()) co_return write.status();
    if (write->empty()) co_return Status::Ok();  // unknown instance: nothing to hand over
    auto w = co_await Write(*read, *write, /*guard_live=*/true);
    if (!w.ok()) {
      last = w.status();
      if (last.code() == Errc::kTimeout) continue;
      co_return last;
    }
    if (*w) {
      LogStep(*write);
      co_return Status::Ok();
    }
    last = Status{Errc::kConflict, "another broker wrote first every time"};
    co_await Backoff(attempt);
  }
  co_return last;
}

awaitable<Result<LedgerRead>> EtcdLedger::Admin(lease::AdminChange change) {
  Status last{Errc::kConflict, "another broker wrote first every time"};
  for (int attempt = 0; attempt < options_.max_attempts && !stopping_; ++attempt) {
    auto read = co_await ReadAll();
    if (!read.ok()) {
      if (read.status().code() == Errc::kTimeout) {
        last = read.status();
        continue;
      }
      co_return read.status();
    }
    auto write = lease::ApplyAdmin(options_.mine, read->view, change, Clock::now());
    if (!write.ok()) co_return write.status();
    if (!write->empty()) {
      auto w = co_await Write(*read, *write, /*guard_live=*/false);
      if (!w.ok()) {
        // Every admin change is idempotent (a mode, a limit): a timed-out one
        // is simply applied again on a fresh read.
        last = w.status();
        if (last.code() == Errc::kTimeout) continue;
        co_return last;
      }
      if (!*w) {
        co_await Backoff(attempt);
        continue;
      }
      LogStep(*write);
    }
    co_return co_await Snapshot();
  }
  co_return last;
}

awaitable<Result<LedgerRead>> EtcdLedger::Snapshot() {
  auto read = co_await ReadAll();
  if (!read.ok()) co_return read.status();
  auto snap = lease::SnapshotOf(options_.mine, read->view, Clock::now());
  if (!snap.ok()) co_return snap.status();
  // silence_left: the time to live of the etcd lease of each broker's newest
  // live instance (one call per lease).
  std::map<std::int64_t, std::optional<std::int64_t>> ttl;
  for (auto& t : snap->targets) {
    for (auto& b : t.brokers) {
      std::int64_t lease_of = 0;
      for (const auto& [who, id] : read->live_lease) {
        if (who.broker_id == b.broker_id && who.epoch == b.epoch) lease_of = id;
      }
      if (lease_of == 0) continue;
      if (ttl.count(lease_of) == 0) {
        auto left = co_await client_.TimeToLive(lease_of);
        ttl[lease_of] = left.ok() ? *left : std::nullopt;
      }
      if (const auto& left = ttl[lease_of]) b.silence_left = std::chrono::seconds(*left);
    }
  }
  if (snap->learning && read->learning_lease != 0) {
    // C3 ends when the learning key's lease expires (whole seconds in etcd).
    auto left = co_await client_.TimeToLive(read->learning_lease);
    if (left.ok() && left->has_value()) snap->learning_left = std::chrono::seconds(**left);
  }
  co_return LedgerRead{std::move(snap).value(), read->revision, client_.current_endpoint()};
}

awaitable<Result<std::vector<std::pair<std::string, std::uint32_t>>>> EtcdLedger::Limits() {
  auto read = co_await ReadAll();
  if (!read.ok()) co_return read.status();
  co_return lease::StoredLimits(options_.mine, read->view);
}

// ---- the watch (early renew) ----

awaitable<void> EtcdLedger::WatchLoop() {
  while (!stopping_) {
    auto read = co_await ReadAll();
    Status ended = read.status();
    if (read.ok() && !stopping_) {
      watched_ = read->view;
      CheckWatched();
      ended = co_await client_.Watch(
          options_.prefix, read->revision + 1, [this](const WatchEvent& e) {
            const std::optional<std::string> under = SuffixUnder(options_.prefix, e.kv.key);
            if (stopping_ || !under) return !stopping_;
            const std::string& suffix = *under;
            const lease::KeyKind kind = lease::ClassifyKey(suffix);
            // A live or learning key without an etcd lease is not counted
            // (ReadAll logs it): as if absent.
            const bool put = e.type == WatchEvent::Type::kPut;
            const bool leased_put = put && e.kv.lease != 0;
            if (kind == lease::KeyKind::kLearning) {
              watched_.learning = leased_put;
            } else if (kind == lease::KeyKind::kMeta || kind == lease::KeyKind::kTarget) {
              if (put) {
                watched_.values[suffix] = e.kv.value;
              } else {
                watched_.values.erase(suffix);
              }
            } else if (auto who = kind == lease::KeyKind::kLive ? lease::ParseLiveKey(suffix)
                                                                : std::nullopt) {
              if (leased_put) {
                watched_.live.insert(*who);
              } else {
                watched_.live.erase(*who);
              }
            }
            ScheduleCheck();
            return true;
          });
    }
    if (stopping_) break;
    LogLimited(spdlog::level::warn, "etcd watch ended", options_.self.broker_id,
               "etcd ledger: the watch of {} ended: {} (re-made in 1 s; meanwhile revoke, drain "
               "and limit changes reach this broker at its next renew)",
               options_.prefix, ended.ok() ? std::string("stream closed") : ended.message());
    watch_timer_->expires_after(std::chrono::seconds(1));
    co_await watch_timer_->async_wait(use_nothrow);
  }
}

void EtcdLedger::ScheduleCheck() {
  // Coalesces the events of about 50 ms into one look (each look re-reads the
  // whole ledger copy; every renew of every broker is an event).
  if (check_posted_) return;
  check_posted_ = true;
  check_timer_->expires_after(std::chrono::milliseconds(50));
  check_timer_->async_wait([this](boost::system::error_code ec) {
    check_posted_ = false;
    if (!ec && !stopping_) CheckWatched();
  });
}

void EtcdLedger::LogBadKey(const std::string& key, const std::string& why) {
  if (!bad_keys_logged_.insert(key).second || bad_keys_logged_.size() > 64) return;
  spdlog::error("etcd ledger: key {}: {} (remove it; dsb writes it only on an etcd lease)", key,
                why);
}

void EtcdLedger::CheckWatched() {
  auto snap = lease::SnapshotOf(options_.mine, watched_, Clock::now());
  if (!snap.ok()) return;  // no ledger yet, or a value that does not parse: the renew says
  std::string signature = snap->learning ? "learning;" : "open;";
  signature += lease::GateName(snap->gate);
  for (const auto& t : snap->targets) {
    signature += ";" + t.target + "=" + std::to_string(t.limit) + ":";
    for (const auto& b : t.brokers) {
      if (b.broker_id == options_.self.broker_id) signature += lease::BrokerModeName(b.mode);
    }
  }
  const bool changed = !watched_signature_.empty() && signature != watched_signature_;
  watched_signature_ = std::move(signature);
  if (!changed || !callbacks_.on_change || notify_pending_) return;
  // Every broker sees the change at the same instant: a random delay of
  // 0..D/24 spreads their renews, which would otherwise race on the same keys.
  notify_pending_ = true;
  const auto span = std::max<std::int64_t>(1, Ms(options_.mine.term / 24));
  std::uniform_int_distribution<std::int64_t> pick(0, span);
  notify_timer_->expires_after(std::chrono::milliseconds(pick(rng_)));
  notify_timer_->async_wait([this](boost::system::error_code ec) {
    notify_pending_ = false;
    if (!ec && !stopping_ && !closing_ && callbacks_.on_change) callbacks_.on_change();
  });
}

}  // namespace dsb::etcd
