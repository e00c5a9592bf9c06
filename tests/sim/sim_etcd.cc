// The simulation's etcd mode (sim.h, "etcd mode"): each broker's store client
// (the renew sequence of broker/etcd/etcd_ledger.h) and the store's side of
// the simulated network, on tests/sim/etcd_model.h.
#include <algorithm>
#include <cmath>

#include "common/check.h"
#include "tests/sim/sim.h"

namespace dsb::sim {
namespace {

bool StartsWith(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// The store as one lease::StoreView, and the mod_revision of every ledger key
// read (the transaction's guard).
lease::StoreView ViewOf(const EtcdRange& range, std::map<std::string, std::int64_t>* mods) {
  lease::StoreView view;
  for (const auto& [key, kv] : range.kvs) {
    if (key == lease::kLearningKey) {
      view.learning = true;
    } else if (StartsWith(key, lease::kLiveKeyPrefix)) {
      auto who = lease::ParseLiveKey(key);
      DSB_CHECK(who.has_value(), "live key %s does not parse", key.c_str());
      view.live.insert(*who);
    } else if (key == lease::kMetaKey || StartsWith(key, lease::kTargetKeyPrefix)) {
      view.values[key] = kv.value;
      if (mods) (*mods)[key] = kv.mod_revision;
    }
  }
  return view;
}

// One transaction for a step's write: every ledger key read keeps its
// mod_revision, every key written that was absent is still absent (and the
// meta key's state as read, so two brokers creating the ledger conflict), and
// the writer's live key is still on its own store lease.
EtcdTxn TxnOf(const lease::StoreWrite& write, const std::map<std::string, std::int64_t>& read_mod,
              const std::string& live_key, std::int64_t lease, std::int64_t learning_lease) {
  EtcdTxn txn;
  using F = EtcdCompare::Field;
  for (const auto& [key, mod] : read_mod) txn.compares.push_back({key, F::kModRevision, mod});
  auto absent = [&](const std::string& key) {
    if (read_mod.count(key) == 0) txn.compares.push_back({key, F::kCreateRevision, 0});
  };
  absent(std::string(lease::kMetaKey));
  for (const auto& [key, value] : write.puts) absent(key);
  for (const auto& key : write.deletes) absent(key);
  if (!live_key.empty()) txn.compares.push_back({live_key, F::kLease, lease});
  for (const auto& [key, value] : write.puts) txn.success.push_back({true, key, value, 0});
  for (const auto& key : write.deletes) txn.success.push_back({false, key, "", 0});
  if (write.start_learning) {
    txn.success.push_back({true, std::string(lease::kLearningKey), "", learning_lease});
  }
  return txn;
}

const char* OpName(MsgInfo::StoreOp op) {
  switch (op) {
    case MsgInfo::kLeaseGrant:
      return "lease grant";
    case MsgInfo::kPutLive:
      return "put live key";
    case MsgInfo::kKeepAlive:
      return "keepalive";
    case MsgInfo::kRange:
      return "range";
    case MsgInfo::kTxn:
      return "txn";
    case MsgInfo::kNoOp:
      break;
  }
  return "?";
}

}  // namespace

std::int64_t Simulation::LeaderNow() const {
  return LocalNow(config_.etcd.member_ppm[leader_member_]);
}

// ceil(Silence seconds) as the broker's link computes it: (D + H)(1 + eps), or
// D + H with the C2 silence switch off.
std::int64_t Simulation::StoreTtlSeconds() const {
  double silence = static_cast<double>((config_.term + config_.drain).count());
  if (config_.switches.c2_silence_eps) silence *= 1 + config_.eps;
  return std::max<std::int64_t>(kMinTtlSeconds,
                                static_cast<std::int64_t>(std::ceil(silence / 1e9 - 1e-12)));
}

void Simulation::EtcdStart() {
  const EtcdSpec& e = config_.etcd;
  DSB_CHECK(!config_.server.enabled, "the server model has no etcd mode yet");
  DSB_CHECK(!e.member_ppm.empty(), "etcd mode needs members");
  const double max_ppm = config_.eps * 1e6 + 0.5;
  for (std::int64_t ppm : e.member_ppm) {
    DSB_CHECK(std::fabs(static_cast<double>(ppm)) <= max_ppm, "etcd member drift beyond eps");
  }
  store_ = std::make_unique<EtcdModel>();
  ledger_.reset();
}

std::uint32_t Simulation::TrustLease(int b) const {
  if (!config_.etcd.enabled || config_.etcd_switches.b1_own_clock) return 0;
  const Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up) return 0;
  return now_ < br.link.trust_until ? br.link.trust_amount : 0;
}

// ---- the broker's store client ----

void Simulation::LinkSend(int b, const lease::RenewRequest& request) {
  EtcdLink& l = brokers_[static_cast<std::size_t>(b)].link;
  if (l.phase != EtcdLink::Phase::kIdle) {
    // One renew in flight; a resend of it changes nothing, a newer request
    // waits (replacing an older waiting one).
    if (l.current && l.current->epoch == request.epoch &&
        l.current->request_id == request.request_id) {
      return;
    }
    l.queued = request;
    return;
  }
  l.current = request;
  LinkBegin(b);
}

void Simulation::LinkBegin(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  EtcdLink& l = br.link;
  const RealTime budget =
      config_.etcd.renew_budget > 0 ? config_.etcd.renew_budget : config_.term.count() / 3;
  l.budget_end = RealAt(br.spec.clock_ppm, BrokerClock(b) + Duration(budget));
  l.lost_compares = 0;
  l.lease_fresh = false;
  l.step.reset();
  LinkRetry(b);
}

void Simulation::LinkRetry(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  EtcdLink& l = br.link;
  if (now_ >= l.budget_end) {
    LinkEnd(b, false);
    return;
  }
  StoreCall call;
  if (l.lease == 0) {
    // A new store lease for this instance, then its live key (C2's liveness).
    l.phase = EtcdLink::Phase::kLeaseGrant;
    call.ttl = StoreTtlSeconds();
    LinkCall(b, MsgInfo::kLeaseGrant, std::move(call));
  } else if (l.lease_fresh) {
    l.phase = EtcdLink::Phase::kRange;
    LinkCall(b, MsgInfo::kRange, std::move(call));
  } else {
    // The keepalive comes after the request's first send (t_sent) and before
    // the transaction: the store keeps this instance live >= TTL past it.
    l.phase = EtcdLink::Phase::kKeepAlive;
    call.lease = l.lease;
    LinkCall(b, MsgInfo::kKeepAlive, std::move(call));
  }
}

void Simulation::LinkCall(int b, MsgInfo::StoreOp op, StoreCall call) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  EtcdLink& l = br.link;
  // Unique across instances: a new process never gets its predecessor's answers.
  call.call_id = l.call_id = ++store_call_seq_;
  Message m;
  m.info.kind = MsgInfo::kStoreCall;
  m.info.store_op = op;
  m.info.broker = b;
  m.info.epoch = l.current ? l.current->epoch : br.epoch;
  m.info.request_id = l.current ? l.current->request_id : 0;
  m.call = std::move(call);
  Send(std::move(m));
  const RealTime timeout =
      config_.etcd.call_timeout > 0 ? config_.etcd.call_timeout : config_.term.count() / 12;
  l.timer_seq = ++store_call_seq_;  // unique across instances, as call ids
  Push(RealAt(br.spec.clock_ppm, BrokerClock(b) + Duration(timeout)), Ev::kLinkTimeout, b,
       l.timer_seq);
}

void Simulation::LinkEnd(int b, bool done) {
  EtcdLink& l = brokers_[static_cast<std::size_t>(b)].link;
  if (!done) {
    ++stats_.abandoned_renews;
    Log("%s: renew e%llu#%llu abandoned (the agent resends)",
        brokers_[static_cast<std::size_t>(b)].id.c_str(),
        static_cast<unsigned long long>(l.current ? l.current->epoch : 0),
        static_cast<unsigned long long>(l.current ? l.current->request_id : 0));
  }
  l.phase = EtcdLink::Phase::kIdle;
  l.current.reset();
  l.step.reset();
  l.timer_seq = ++store_call_seq_;  // cancels the pending timer
  if (l.queued) {
    l.current = std::move(l.queued);
    l.queued.reset();
    LinkBegin(b);
  }
}

void Simulation::LinkTimeout(int b) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  if (!br.up || br.link.phase == EtcdLink::Phase::kIdle) return;
  if (Paused(b)) {
    // A stopped process's timer fires when it runs again.
    Push(br.paused_until, Ev::kLinkTimeout, b, br.link.timer_seq);
    return;
  }
  ++stats_.store_timeouts;
  Log("%s: store call timed out (%s): read again and redo", br.id.c_str(),
      br.link.phase == EtcdLink::Phase::kTxn ? "txn: outcome unknown" : "no answer");
  LinkRetry(b);
}

void Simulation::OnStoreReply(int b, const Message& m) {
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  EtcdLink& l = br.link;
  if (l.phase == EtcdLink::Phase::kIdle || m.reply.call_id != l.call_id) return;  // late
  const StoreReply& r = m.reply;
  using P = EtcdLink::Phase;
  const std::string live_key = lease::LiveKey({br.id, br.epoch, 0});
  // The renew is over (written, or nothing to write): the grant, if any, to
  // the broker at once (the store's reply carried it here).
  auto end_with_grant = [this, b, &l]() {
    std::optional<lease::Grant> reply = l.step->reply;
    LinkEnd(b, true);
    if (!reply) return;
    Message g;
    g.info.kind = MsgInfo::kGrant;
    g.info.broker = b;
    g.info.epoch = reply->epoch;
    g.info.request_id = reply->request_id;
    g.info.amount = reply->targets.empty() ? 0 : reply->targets[0].amount;
    g.info.learning = reply->learning;
    g.grant = *reply;
    OnBrokerMessage(b, g);
  };
  switch (l.phase) {
    case P::kLeaseGrant: {
      l.lease = r.lease;
      l.lease_fresh = true;
      l.phase = P::kPutLive;
      StoreCall call;
      call.lease = l.lease;
      call.key = live_key;
      call.value = br.id;
      LinkCall(b, MsgInfo::kPutLive, std::move(call));
      return;
    }
    case P::kPutLive:
      if (!r.txn.succeeded) {
        l.lease = 0;  // the lease is gone (lease not found): a new one
        LinkRetry(b);
        return;
      }
      l.phase = P::kRange;
      LinkCall(b, MsgInfo::kRange, StoreCall{});
      return;
    case P::kKeepAlive:
      if (!r.ttl) {
        Log("%s: store lease gone (the ledger counts this instance silent): a new lease and "
            "live key",
            br.id.c_str());
        l.lease = 0;
        LinkRetry(b);
        return;
      }
      if (!config_.etcd_switches.b1_own_clock) {
        // The switch: the store's word on the lease, from the answer's arrival.
        const Duration keep =
            std::chrono::seconds(*r.ttl) - config_.drain -
            Duration(static_cast<std::int64_t>(static_cast<double>(*r.ttl) * 1e9 * config_.eps));
        l.trust_until = RealAt(br.spec.clock_ppm, BrokerClock(b) + keep);
        Poke(b);
        if (!br.up || l.phase != P::kKeepAlive) return;
      }
      l.phase = P::kRange;
      LinkCall(b, MsgInfo::kRange, StoreCall{});
      return;
    case P::kRange: {
      l.read_mod.clear();
      const lease::StoreView view = ViewOf(r.range, &l.read_mod);
      auto own = r.range.kvs.find(live_key);
      if (own == r.range.kvs.end() || own->second.lease != l.lease) {
        // Our lease lives (the keepalive said so) but the live key is not on
        // it (its put timed out, or the store was wiped): put it again on the
        // SAME lease, then redo. Never on a new lease while the old one may
        // live: a late put could then move the key onto a lease nobody keeps
        // alive, and the instance would look silent while it holds a grant.
        l.phase = P::kPutLive;
        StoreCall call;
        call.lease = l.lease;
        call.key = live_key;
        call.value = br.id;
        LinkCall(b, MsgInfo::kPutLive, std::move(call));
        return;
      }
      auto step = lease::ApplyRenew(LedgerCfg(!store_wiped_), view, *l.current, BrokerClock(b));
      DSB_CHECK(step.ok(), "ApplyRenew: %s", step.status().message().c_str());
      l.step = std::move(step.value());
      if (l.step->write.empty()) {
        end_with_grant();
        return;
      }
      if (l.step->write.start_learning) {
        l.phase = P::kLearnGrant;
        StoreCall call;
        call.ttl = StoreTtlSeconds();
        LinkCall(b, MsgInfo::kLeaseGrant, std::move(call));
        return;
      }
      l.learning_lease = 0;
      l.phase = P::kTxn;
      StoreCall call;
      call.txn = TxnOf(l.step->write, l.read_mod, live_key, l.lease, 0);
      LinkCall(b, MsgInfo::kTxn, std::move(call));
      return;
    }
    case P::kLearnGrant: {
      l.learning_lease = r.lease;
      l.phase = P::kTxn;
      StoreCall call;
      call.txn = TxnOf(l.step->write, l.read_mod, live_key, l.lease, l.learning_lease);
      LinkCall(b, MsgInfo::kTxn, std::move(call));
      return;
    }
    case P::kTxn: {
      if (r.txn.succeeded) {
        for (const auto& w : l.step->write.warnings)
          Log("%s: ledger: %s", br.id.c_str(), w.c_str());
        end_with_grant();
        return;
      }
      if (r.txn.lease_not_found) {
        LinkRetry(b);  // the keepalive finds out which lease is gone
        return;
      }
      ++stats_.lost_compares;
      if (++l.lost_compares > config_.etcd.max_lost_compares || now_ >= l.budget_end) {
        LinkEnd(b, false);
        return;
      }
      l.phase = P::kRange;  // another broker wrote first: read again and redo
      LinkCall(b, MsgInfo::kRange, StoreCall{});
      return;
    }
    case P::kIdle:
      return;
  }
}

// ---- the store's side ----

void Simulation::OnStoreCall(const Message& m) {
  const std::size_t member =
      static_cast<std::size_t>(m.info.broker) % config_.etcd.member_ppm.size();
  if (now_ < stale_until_ && member == deposed_member_) {
    // The broker's client talks to the deposed leader, cut off from the
    // majority and not yet stepped down: it renews keepalives in its own
    // lessor (an answer with the full TTL that the real leader never saw);
    // its reads and proposals never complete.
    if (m.info.store_op != MsgInfo::kKeepAlive) return;
    Message r;
    r.info = m.info;
    r.info.kind = MsgInfo::kStoreReply;
    r.reply.call_id = m.call.call_id;
    r.reply.ttl = StoreTtlSeconds();
    Log("store: the deposed leader answers %s's keepalive (TTL %lld s, not kept)",
        brokers_[static_cast<std::size_t>(m.info.broker)].id.c_str(),
        static_cast<long long>(*r.reply.ttl));
    Send(std::move(r));
    return;
  }
  if (store_->has_leader()) {
    ExecuteStoreCall(m, false);
    return;
  }
  // No leader: a proposal waits (it may commit after the next election, long
  // after its client gave up); a read or keepalive is not answered.
  const auto op = m.info.store_op;
  if (op == MsgInfo::kLeaseGrant || op == MsgInfo::kPutLive || op == MsgInfo::kTxn) {
    waiting_writes_.push_back(m);
  }
}

void Simulation::ExecuteStoreCall(const Message& m, bool late) {
  Message r;
  r.info = m.info;
  r.info.kind = MsgInfo::kStoreReply;
  r.reply.call_id = m.call.call_id;
  const Broker& br = brokers_[static_cast<std::size_t>(m.info.broker)];
  switch (m.info.store_op) {
    case MsgInfo::kLeaseGrant:
      r.reply.lease = store_->LeaseGrant(LeaderNow(), m.call.ttl);
      break;
    case MsgInfo::kPutLive: {
      EtcdTxn txn;
      txn.success.push_back({true, m.call.key, m.call.value, m.call.lease});
      r.reply.txn = store_->Txn(txn);
      break;
    }
    case MsgInfo::kKeepAlive:
      r.reply.ttl = store_->KeepAlive(LeaderNow(), m.call.lease);
      break;
    case MsgInfo::kRange:
      r.reply.range = store_->Range();
      break;
    case MsgInfo::kTxn:
      r.reply.txn = store_->Txn(m.call.txn);
      if (r.reply.txn.succeeded && !m.call.txn.success.empty()) ++stats_.store_txns;
      r.info.committed = r.reply.txn.succeeded;
      break;
    case MsgInfo::kNoOp:
      return;
  }
  if (late) ++stats_.late_commits;
  Log("store: %s of %s for e%llu#%llu%s%s", OpName(m.info.store_op), br.id.c_str(),
      static_cast<unsigned long long>(m.info.epoch),
      static_cast<unsigned long long>(m.info.request_id), late ? " (committed late)" : "",
      m.info.store_op == MsgInfo::kTxn
          ? (r.reply.txn.succeeded ? ": committed" : ": compare failed")
          : "");
  ArmStoreTick();
  Send(std::move(r));
}

void Simulation::ArmStoreTick() {
  const std::optional<std::int64_t> next = store_->NextExpiry();
  if (!next) return;
  const RealTime at =
      RealAt(config_.etcd.member_ppm[leader_member_], lease::TimePoint{} + Duration(*next));
  Push(at, Ev::kStoreTick, 0, ++store_tick_seq_);
}

void Simulation::StoreTick() {
  for (const std::string& key : store_->ExpireDue(LeaderNow())) {
    if (StartsWith(key, lease::kLiveKeyPrefix)) ++stats_.live_keys_expired;
    Log("store: lease expired, %s deleted", key.c_str());
  }
  ArmStoreTick();
}

void Simulation::LeaderChange(RealTime election, RealTime stale_for) {
  if (store_->has_leader()) {
    store_->LoseLeader();
    deposed_member_ = leader_member_;
    stale_until_ = now_ + stale_for;
  }
  Log("store: leader %zu lost (%s; it answers keepalives until t=%.3f)", deposed_member_,
      election == kNever ? "no election yet" : "election pending",
      static_cast<double>(stale_until_) / 1e9);
  ++election_seq_;
  if (election != kNever) Push(now_ + election, Ev::kElect, 0, election_seq_);
}

void Simulation::ElectLeader() {
  if (store_->has_leader()) return;
  ++election_seq_;
  leader_member_ = (leader_member_ + 1) % config_.etcd.member_ppm.size();
  store_->ElectLeader(LeaderNow());
  ++stats_.leader_changes;
  Log("store: member %zu leads; every lease reset to its full TTL (%zu proposals waiting)",
      leader_member_, waiting_writes_.size());
  std::vector<Message> waiting = std::move(waiting_writes_);
  waiting_writes_.clear();
  for (const Message& m : waiting) {
    if (Uniform() < config_.etcd.commit_late) ExecuteStoreCall(m, true);
  }
  ArmStoreTick();
}

void Simulation::WipeStore() {
  store_->Wipe();
  store_wiped_ = true;
  waiting_writes_.clear();
  Log("store: every key and lease lost (the cluster rebuilt empty)");
  ArmStoreTick();
}

void Simulation::EtcdRevoke(int b, bool resume) {
  if (!store_->has_leader()) return;  // the admin tool's write fails without quorum
  Broker& br = brokers_[static_cast<std::size_t>(b)];
  std::map<std::string, std::int64_t> mods;
  const lease::StoreView view = ViewOf(store_->Range(), &mods);
  lease::AdminChange change;
  change.kind = resume ? lease::AdminChange::Kind::kResume : lease::AdminChange::Kind::kRevoke;
  change.broker_id = br.id;
  auto write = lease::ApplyAdmin(LedgerCfg(!store_wiped_), view, change,
                                 lease::TimePoint{} + Duration(LeaderNow()));
  if (!write.ok()) {
    Log("admin %s %s: %s", resume ? "resume" : "revoke", br.id.c_str(),
        write.status().message().c_str());
    return;
  }
  const EtcdTxnResult r = store_->Txn(TxnOf(*write, mods, "", 0, 0));
  DSB_CHECK(r.succeeded, "an admin transaction at one instant cannot lose its compare");
  Log("admin %s %s (through the store)", resume ? "resumes" : "revokes", br.id.c_str());
  if (resume) return;
  // The watch's event: the broker renews at once (lossy like any message).
  Message m;
  m.info.kind = MsgInfo::kNotice;
  m.info.broker = b;
  m.info.epoch = br.epoch;
  m.notice = {br.id, br.epoch};
  Send(std::move(m));
}

}  // namespace dsb::sim
