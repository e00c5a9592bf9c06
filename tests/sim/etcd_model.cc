#include "tests/sim/etcd_model.h"

#include <algorithm>

#include "common/check.h"

namespace dsb::sim {
namespace {
constexpr std::int64_t kSecond = 1'000'000'000;
}  // namespace

void EtcdModel::LoseLeader() { has_leader_ = false; }

void EtcdModel::ElectLeader(std::int64_t leader_now) {
  DSB_CHECK(!has_leader_, "ElectLeader while a leader leads");
  has_leader_ = true;
  // etcd's lessor on promotion: every lease gets its full TTL again, counted
  // on the new leader's clock (it never expires one before it renewed all).
  for (auto& [id, l] : leases_) l.expires_at = leader_now + l.ttl_ns;
}

void EtcdModel::Wipe() {
  kvs_.clear();
  leases_.clear();
  // A rebuilt cluster starts its revisions again; keep them growing here so
  // that a client's compare against an old mod_revision still fails.
  ++revision_;
}

std::int64_t EtcdModel::LeaseGrant(std::int64_t leader_now, std::int64_t ttl_seconds) {
  DSB_CHECK(has_leader_, "LeaseGrant without a leader");
  const std::int64_t ttl = std::max(ttl_seconds, kMinTtlSeconds) * kSecond;
  const std::int64_t id = next_lease_++;
  leases_[id] = Lease{ttl, leader_now + ttl};
  return id;
}

std::optional<std::int64_t> EtcdModel::KeepAlive(std::int64_t leader_now, std::int64_t lease) {
  DSB_CHECK(has_leader_, "KeepAlive without a leader");
  auto it = leases_.find(lease);
  if (it == leases_.end()) return std::nullopt;
  it->second.expires_at = leader_now + it->second.ttl_ns;
  return it->second.ttl_ns / kSecond;
}

EtcdRange EtcdModel::Range() const {
  DSB_CHECK(has_leader_, "linearizable Range without a leader");
  return EtcdRange{revision_, kvs_};
}

EtcdTxnResult EtcdModel::Txn(const EtcdTxn& txn) {
  DSB_CHECK(has_leader_, "Txn without a leader");
  EtcdTxnResult r;
  for (const EtcdCompare& c : txn.compares) {
    auto it = kvs_.find(c.key);
    std::int64_t v = 0;
    if (it != kvs_.end()) {
      switch (c.field) {
        case EtcdCompare::Field::kModRevision:
          v = it->second.mod_revision;
          break;
        case EtcdCompare::Field::kCreateRevision:
          v = it->second.create_revision;
          break;
        case EtcdCompare::Field::kLease:
          v = it->second.lease;
          break;
      }
    }
    if (v != c.value) {
      r.revision = revision_;
      return r;
    }
  }
  for (const EtcdOp& op : txn.success) {
    if (op.put && op.lease != 0 && leases_.count(op.lease) == 0) {
      r.lease_not_found = true;
      r.revision = revision_;
      return r;
    }
  }
  r.succeeded = true;
  if (txn.success.empty()) {
    r.revision = revision_;
    return r;
  }
  const std::int64_t rev = ++revision_;
  for (const EtcdOp& op : txn.success) {
    if (!op.put) {
      kvs_.erase(op.key);
      continue;
    }
    StoredKey& k = kvs_[op.key];
    if (k.create_revision == 0) k.create_revision = rev;
    k.mod_revision = rev;
    ++k.version;
    k.value = op.value;
    k.lease = op.lease;
  }
  r.revision = rev;
  return r;
}

std::optional<std::int64_t> EtcdModel::NextExpiry() const {
  if (!has_leader_ || leases_.empty()) return std::nullopt;
  std::int64_t best = leases_.begin()->second.expires_at;
  for (const auto& [id, l] : leases_) best = std::min(best, l.expires_at);
  return best;
}

std::vector<std::string> EtcdModel::ExpireDue(std::int64_t leader_now) {
  std::vector<std::string> deleted;
  if (!has_leader_) return deleted;
  std::vector<std::int64_t> due;
  for (const auto& [id, l] : leases_) {
    if (l.expires_at <= leader_now) due.push_back(id);
  }
  if (due.empty()) return deleted;
  for (std::int64_t id : due) leases_.erase(id);
  for (auto it = kvs_.begin(); it != kvs_.end();) {
    if (it->second.lease != 0 && leases_.count(it->second.lease) == 0) {
      deleted.push_back(it->first);
      it = kvs_.erase(it);
    } else {
      ++it;
    }
  }
  if (!deleted.empty()) ++revision_;
  return deleted;
}

}  // namespace dsb::sim
