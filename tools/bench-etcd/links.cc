#include "tools/bench-etcd/links.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cmath>
#include <optional>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <variant>

#include "broker/etcd/etcd_client.h"
#include "broker/wire/channel.h"

namespace dsb::bench {

namespace asio = boost::asio;
using asio::awaitable;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// ---------------------------------------------------------------- WireLink

struct WireLink::Impl {
  asio::any_io_executor executor;
  std::string host;
  std::uint16_t port = 0;
  wire::Credentials credentials;
  std::optional<wire::Channel> channel;

  // A new channel when the last one closed (the coordinator restarted), as
  // the broker's ConnectLoop does; bounded by 2 s.
  awaitable<Status> Ensure() {
    if (channel && channel->is_open()) co_return Status::Ok();
    channel.reset();
    auto ch = co_await wire::Channel::Connect(executor, host, port, credentials,
                                              std::chrono::seconds(2), /*log_failure=*/false);
    if (!ch.ok()) co_return ch.status();
    channel.emplace(std::move(ch).value());
    co_return Status::Ok();
  }
};

WireLink::WireLink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WireLink::~WireLink() = default;

awaitable<Result<std::unique_ptr<WireLink>>> WireLink::Connect(asio::any_io_executor executor,
                                                               std::string host,
                                                               std::uint16_t port,
                                                               wire::Credentials credentials) {
  auto impl = std::make_unique<Impl>();
  impl->executor = executor;
  impl->host = std::move(host);
  impl->port = port;
  impl->credentials = std::move(credentials);
  if (Status s = co_await impl->Ensure(); !s.ok()) co_return s;
  co_return std::unique_ptr<WireLink>(new WireLink(std::move(impl)));
}

awaitable<Result<lease::Grant>> WireLink::Renew(lease::RenewRequest request) {
  const std::uint64_t id = request.request_id;
  if (Status s = co_await impl_->Ensure(); !s.ok()) co_return s;
  wire::Message m = std::move(request);
  if (Status s = co_await impl_->channel->Send(std::move(m)); !s.ok()) co_return s;
  // The coordinator answers every request with one grant; anything else on
  // the channel (a revoke notice, an older grant) is skipped.
  for (int i = 0; i < 16; ++i) {
    auto r = co_await impl_->channel->Receive(std::chrono::seconds(5));
    if (!r.ok()) co_return r.status();
    if (auto* g = std::get_if<lease::Grant>(&*r); g != nullptr && g->request_id == id) {
      co_return *g;
    }
  }
  co_return Status(Errc::kProtocol, "no grant for request " + std::to_string(id));
}

// ---------------------------------------------------------------- EtcdLink

struct EtcdLink::Impl {
  EtcdLinkOptions o;
  std::unique_ptr<etcd::EtcdClient> client;
  std::int64_t lease_id = 0;
  std::int64_t ttl_s = 2;
  std::mt19937 rng{std::random_device{}()};
  EtcdOpStats own_stats;

  EtcdOpStats& stats() { return o.stats != nullptr ? *o.stats : own_stats; }

  // A new store lease for this instance and its live key on it.
  awaitable<Status> NewLease() {
    auto g = co_await client->LeaseGrant(ttl_s);
    if (!g.ok()) co_return g.status();
    lease_id = g->id;
    etcd::Op put{etcd::Op::Kind::kPut, o.prefix + lease::LiveKey(o.who), "dsb-bench-etcd",
                 lease_id};
    std::vector<etcd::Op> ops(1, put);
    auto t = co_await client->Txn(std::vector<etcd::Compare>(), std::move(ops));
    if (!t.ok()) co_return t.status();
    co_return Status::Ok();
  }
};

EtcdLink::EtcdLink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EtcdLink::~EtcdLink() = default;

std::string EtcdLink::endpoint() const { return impl_->client->current_endpoint(); }

awaitable<Result<std::unique_ptr<EtcdLink>>> EtcdLink::Create(asio::any_io_executor executor,
                                                              EtcdLinkOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->o = std::move(options);
  etcd::ClientOptions co;
  co.endpoints = impl->o.endpoints;
  co.call_timeout = impl->o.call_timeout;
  auto client = etcd::EtcdClient::Create(executor, co);
  if (!client.ok()) co_return client.status();
  impl->client = std::move(client).value();
  // C2: TTL >= Silence() = (D + H)(1 + eps), whole seconds, etcd's minimum 2.
  const lease::LedgerConfig& lc = impl->o.mine;
  const double silence_s =
      std::chrono::duration<double>(lc.term + lc.drain).count() * (1.0 + lc.eps);
  impl->ttl_s = std::max<std::int64_t>(2, static_cast<std::int64_t>(std::ceil(silence_s)));
  if (Status s = co_await impl->NewLease(); !s.ok()) co_return s;
  co_return std::unique_ptr<EtcdLink>(new EtcdLink(std::move(impl)));
}

awaitable<Result<lease::Grant>> EtcdLink::Renew(lease::RenewRequest request) {
  Impl& m = *impl_;
  EtcdOpStats& st = m.stats();
  const auto deadline = Clock::now() + m.o.renew_bound;
  // Keepalive first: it comes after the agent's t_sent of this request, so
  // the store cannot call this instance silent before (D + H)(1 + eps) after
  // t_sent. Without a successful one there is no grant.
  for (;;) {
    const auto t = Clock::now();
    auto ka = co_await m.client->KeepAlive(m.lease_id);
    st.keepalive.Add(Clock::now() - t);
    if (ka.ok() && ka->has_value()) break;
    if (ka.ok()) {  // etcd no longer knows the lease: a new lease and live key
      ++st.lease_regrants;
      if (Status s = co_await m.NewLease(); !s.ok()) co_return s;
      break;
    }
    ++(ka.status().code() == Errc::kTimeout ? st.unknown : st.errors);
    if (Clock::now() >= deadline) co_return ka.status();
  }
  Status last(Errc::kTimeout, "no attempt");
  for (int attempt = 0; attempt < m.o.max_attempts && Clock::now() < deadline; ++attempt) {
    auto t = Clock::now();
    ++st.ranges;
    auto rr = co_await m.client->RangePrefix(m.o.prefix);
    st.range.Add(Clock::now() - t);
    if (!rr.ok()) {
      ++(rr.status().code() == Errc::kTimeout ? st.unknown : st.errors);
      last = rr.status();
      continue;
    }
    lease::StoreView view;
    std::map<std::string, std::int64_t> mod;  // ledger key suffix -> mod_revision read
    for (const auto& kv : rr->kvs) {
      if (kv.key.compare(0, m.o.prefix.size(), m.o.prefix) != 0) continue;
      const std::string suffix = kv.key.substr(m.o.prefix.size());
      if (suffix == lease::kLearningKey) {
        view.learning = true;
      } else if (suffix.rfind(lease::kLiveKeyPrefix, 0) == 0) {
        if (auto who = lease::ParseLiveKey(suffix)) view.live.insert(*who);
      } else if (suffix == lease::kMetaKey || suffix.rfind(lease::kTargetKeyPrefix, 0) == 0) {
        view.values[suffix] = kv.value;
        mod[suffix] = kv.mod_revision;
      }
    }
    auto step = lease::ApplyRenew(m.o.mine, view, request, Clock::now());
    if (!step.ok()) co_return step.status();
    if (std::getenv("DSB_BENCH_TRACE") != nullptr) {  // what each renew read and wrote
      std::string keys;
      for (const auto& [k, rev] : mod) keys += " " + k + "@" + std::to_string(rev);
      std::string puts;
      for (const auto& [k, v] : step->write.puts) puts += " " + k + "(" + std::to_string(v.size()) + ")";
      std::fprintf(stderr, "  %s read rev %lld, %zu live, keys%s; puts%s\n",
                   m.o.who.broker_id.c_str(), static_cast<long long>(rr->revision), view.live.size(),
                   keys.c_str(), puts.c_str());
    }
    if (step->write.empty()) {
      ++st.empty_writes;
      if (!step->reply) co_return Status(Errc::kConflict, "stale request: no reply");
      co_return *step->reply;
    }
    // Guard: every ledger key as read (absent ones: still absent), and this
    // instance's live key still on its lease.
    std::vector<etcd::Compare> cmp;
    for (const auto& [k, rev] : mod) {
      cmp.push_back({m.o.prefix + k, etcd::Compare::Field::kModRevision, rev, {}});
    }
    auto absent = [&](const std::string& k) {
      if (!mod.count(k)) cmp.push_back({m.o.prefix + k, etcd::Compare::Field::kCreateRevision, 0, {}});
    };
    for (const auto& [k, v] : step->write.puts) absent(k);
    for (const auto& k : step->write.deletes) absent(k);
    cmp.push_back({m.o.prefix + lease::LiveKey(m.o.who), etcd::Compare::Field::kLease,
                   m.lease_id, {}});
    std::vector<etcd::Op> ops;
    for (const auto& [k, v] : step->write.puts) {
      ops.push_back({etcd::Op::Kind::kPut, m.o.prefix + k, v, 0});
    }
    for (const auto& k : step->write.deletes) {
      ops.push_back({etcd::Op::Kind::kDelete, m.o.prefix + k, {}, 0});
    }
    if (step->write.start_learning) {
      auto lg = co_await m.client->LeaseGrant(m.ttl_s);
      if (!lg.ok()) {
        last = lg.status();
        continue;
      }
      cmp.push_back({m.o.prefix + std::string(lease::kLearningKey),
                     etcd::Compare::Field::kCreateRevision, 0, {}});
      ops.push_back({etcd::Op::Kind::kPut, m.o.prefix + std::string(lease::kLearningKey),
                     "learning", lg->id});
    }
    t = Clock::now();
    ++st.txns;
    auto tx = co_await m.client->Txn(std::move(cmp), std::move(ops));
    st.txn.Add(Clock::now() - t);
    if (!tx.ok()) {
      // kTimeout: unknown outcome; the next read finds it (a committed write
      // makes the same request an exact duplicate with a stored reply).
      ++(tx.status().code() == Errc::kTimeout ? st.unknown : st.errors);
      last = tx.status();
      continue;
    }
    if (!tx->succeeded) {
      ++st.lost_compares;
      last = Status(Errc::kConflict, "lost compare-and-swap");
      // Jitter so that two brokers that collided do not collide again.
      std::uniform_int_distribution<int> jitter(0, 2 << std::min(attempt, 5));
      asio::steady_timer backoff(co_await asio::this_coro::executor);
      backoff.expires_after(std::chrono::milliseconds(jitter(m.rng)));
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    if (!step->reply) co_return Status(Errc::kConflict, "stale request: no reply");
    co_return *step->reply;
  }
  co_return last;
}

// ---------------------------------------------------------------- EmuBroker

EmuBroker::EmuBroker(asio::any_io_executor executor, lease::AgentConfig config, LedgerLink* link)
    : config_(config), agent_(config, Clock::now()), link_(link), timer_(executor) {}

void EmuBroker::Stop() {
  stop_ = true;
  timer_.cancel();
}

void EmuBroker::SetDemand(std::uint32_t demand) {
  demand_ = demand;
  timer_.cancel();
}

std::vector<lease::TargetUsage> EmuBroker::Usage() const {
  lease::TargetUsage u;
  u.actions = std::min(demand_, capacity_);
  u.waiting = demand_ - u.actions;
  u.registered = agent_.accepted() ? 1 : 0;
  return {u};
}

void EmuBroker::Absorb(const lease::AgentStep& step, bool from_tick) {
  if (step.targets.empty()) return;
  const lease::TargetCapacity& c = step.targets.front();
  if (from_tick && lease_ > 0 && c.lease == 0) ++lapses;
  capacity_ = c.action_capacity;
  lease_ = c.lease;
}

awaitable<void> EmuBroker::Run() {
  // Look at usage at least every D/24, as the broker's tick loop does.
  const auto poll = std::chrono::duration_cast<Clock::duration>(config_.term / 24);
  while (!stop_) {
    const auto usage = Usage();
    lease::AgentStep step = agent_.Tick(Clock::now(), usage);
    Absorb(step, /*from_tick=*/true);
    if (step.send) {
      const auto t0 = Clock::now();
      auto g = co_await link_->Renew(*step.send);
      const auto t1 = Clock::now();
      if (std::getenv("DSB_BENCH_TRACE") != nullptr) {
        const auto& r = step.send->targets.front();
        std::fprintf(stderr, "trace %s req %llu held %u applied %llu wanted %u waiting %u -> %s\n",
                     config_.broker_id.c_str(),
                     static_cast<unsigned long long>(step.send->request_id), r.pool_held,
                     static_cast<unsigned long long>(r.applied), r.wanted, r.waiting,
                     g.ok() ? (std::string(g->learning ? "learning " : "") + "grant " +
                               std::to_string(g->targets.empty() ? 0u : g->targets[0].amount) +
                               " for " + std::to_string(g->request_id))
                                  .c_str()
                            : g.status().message().c_str());
      }
      if (g.ok()) {
        Absorb(agent_.OnGrant(t1, *g), /*from_tick=*/false);
        if (!g->learning && g->verdict == lease::Verdict::kAccepted) {
          ready_ = true;
          if (record) renew_ms.Add(t1 - t0);
          ok_at.push_back(t1);
        }
      } else {
        ++failed_renews;
        last_error = g.status().message();
      }
      continue;
    }
    timer_.expires_at(std::min<Clock::time_point>(step.deadline, Clock::now() + poll));
    co_await timer_.async_wait(use_nothrow);
  }
}

}  // namespace dsb::bench
