#include "broker/cluster.h"

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <deque>
#include <set>
#include <spdlog/spdlog.h>

#include "broker/lease/account_held.h"
#include "broker/lease/ledger.h"
#include "broker/limit_keeper.h"
#include "broker/wire/channel.h"

namespace dsb::broker {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

std::int64_t Ms(lease::Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

json::value OptMs(const std::optional<lease::Duration>& d) {
  return d ? json::value(Ms(*d)) : json::value(nullptr);
}

json::object SnapshotJson(const lease::LedgerSnapshot& s) {
  json::array targets;
  for (const auto& t : s.targets) {
    json::array brokers;
    for (const auto& b : t.brokers) {
      brokers.push_back(json::object{{"broker", b.broker_id},
                                     {"weight", b.weight},
                                     {"mode", lease::BrokerModeName(b.mode)},
                                     {"known", b.known},
                                     {"epoch", std::to_string(b.epoch)},
                                     {"owed", b.owed},
                                     {"granted", b.granted},
                                     {"pool_held", b.pool_held},
                                     {"held", b.held},
                                     {"waiting", b.waiting},
                                     {"wanted", b.wanted},
                                     {"lease_left_ms", OptMs(b.lease_left)},
                                     {"last_seen_ms", OptMs(b.last_seen_ago)},
                                     {"silence_left_ms", OptMs(b.silence_left)}});
    }
    targets.push_back(json::object{{"target", t.target},
                                   {"limit", t.limit},
                                   {"pool", t.pool},
                                   {"owed_total", t.owed_total},
                                   {"free", t.free},
                                   {"brokers", std::move(brokers)}});
  }
  return json::object{{"learning", s.learning},
                      {"learning_left_ms", Ms(s.learning_left)},
                      {"term_ms", Ms(s.term)},
                      {"drain_ms", Ms(s.drain)},
                      {"silence_ms", Ms(s.silence)},
                      {"targets", std::move(targets)}};
}

}  // namespace

struct ClusterNode::Impl {
  Impl(asio::io_context& io_context, const config::BrokerConfig& c, Hooks h)
      : io(io_context), cfg(c), hooks(std::move(h)), tick_timer(io), connect_timer(io) {}

  asio::io_context& io;
  config::BrokerConfig cfg;
  Hooks hooks;
  wire::Credentials creds;
  std::unique_ptr<lease::LeaseAgent> agent;
  std::unique_ptr<lease::Ledger> ledger;  // coordinator only
  std::unique_ptr<LimitKeeper> limits;    // coordinator only: the effective limits
  std::vector<lease::RecentOwed> recent_owed;  // coordinator only: per target
  // Messages to the coordinator, written by one writer at a time (a Channel
  // allows one Send in flight).
  std::deque<wire::Message> outbox;
  bool writing = false;
  std::uint64_t reports_lost = 0;
  std::optional<tcp::acceptor> acceptor;
  asio::steady_timer tick_timer;
  asio::steady_timer connect_timer;
  std::shared_ptr<wire::Channel> to_coordinator;
  std::set<std::shared_ptr<wire::Channel>> served;
  std::vector<lease::TargetCapacity> capacities;
  bool stopping = false;
  bool connect_failed_logged = false;

  bool is_coordinator() const { return cfg.cluster->coordinator == cfg.id; }
  const config::ClusterBroker& coordinator() const {
    return *cfg.cluster->FindBroker(cfg.cluster->coordinator);
  }
  Clock::duration receive_timeout() const {
    return std::max<Clock::duration>(3 * cfg.cluster->term, std::chrono::seconds(10));
  }

  void Apply(const lease::AgentStep& step) {
    for (std::size_t i = 0; i < step.targets.size(); ++i) {
      const lease::TargetCapacity& now = step.targets[i];
      if (i < capacities.size() && capacities[i].action_capacity != now.action_capacity) {
        spdlog::info("target {}: action capacity {} -> {} (floor {} + lease {}){}",
                     cfg.targets[i].name, capacities[i].action_capacity, now.action_capacity,
                     now.action_capacity - now.lease, now.lease,
                     now.shrunk ? ": shrink, held slots above it are asked back" : "");
      }
      hooks.apply(i, now);
    }
    capacities = step.targets;
  }

  // ---- agent side ----

  awaitable<void> AgentLoop() {
    for (;;) {
      if (stopping) co_return;
      const auto usage = hooks.usage();
      lease::AgentStep step = agent->Tick(Clock::now(), usage);
      Apply(step);
      if (step.send) {
        if (to_coordinator && to_coordinator->is_open()) {
          auto channel = to_coordinator;
          // Name the message first: GCC 12 double-destroys temporaries made
          // inside a co_await expression.
          wire::Message renew = *step.send;
          Enqueue(std::move(renew));
        } else {
          connect_timer.cancel();  // (re)connect now
        }
      }
      // Look at usage again soon even if nothing is due: the agent renews early
      // (at most every D/24) when demand or held changed, which moves capacity
      // between brokers faster. Tick is cheap when nothing changed.
      const auto poll = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           cfg.cluster->term / 24);
      tick_timer.expires_at(std::min<Clock::time_point>(step.deadline, poll));
      co_await tick_timer.async_wait(use_nothrow);
    }
  }

  awaitable<void> ConnectLoop() {
    const config::ClusterBroker& c = coordinator();
    for (;;) {
      if (stopping) co_return;
      if (!to_coordinator || !to_coordinator->is_open()) {
        auto r = co_await wire::Channel::Connect(io.get_executor(), c.address.host,
                                                 c.address.port, creds, std::chrono::seconds(5));
        if (stopping) co_return;
        if (r.ok()) {
          spdlog::info("connected to coordinator {} at {}", c.id, c.address.ToString());
          connect_failed_logged = false;
          to_coordinator = std::make_shared<wire::Channel>(std::move(r).value());
          asio::co_spawn(io, Reader(to_coordinator), asio::detached);
          if (!outbox.empty() && !writing) {
            writing = true;
            asio::co_spawn(io, Flush(to_coordinator), asio::detached);
          }
          tick_timer.cancel();  // renew now on the new channel
        } else if (!connect_failed_logged) {
          spdlog::warn("cannot reach coordinator {} at {}: {} (retrying; the lease lapses on "
                       "this broker's clock, then only the floor is used)",
                       c.id, c.address.ToString(), r.status().message());
          connect_failed_logged = true;
        }
      }
      connect_timer.expires_after(std::chrono::milliseconds(500));
      co_await connect_timer.async_wait(use_nothrow);
    }
  }

  awaitable<void> Reader(std::shared_ptr<wire::Channel> channel) {
    for (;;) {
      auto m = co_await channel->Receive(receive_timeout());
      if (stopping) co_return;
      if (!m.ok()) {
        spdlog::warn("channel to coordinator closed: {}", m.status().message());
        channel->Close();
        connect_timer.cancel();
        co_return;
      }
      if (auto* grant = std::get_if<lease::Grant>(&*m)) {
        Apply(agent->OnGrant(Clock::now(), *grant));
        tick_timer.cancel();  // the new lease may end before the next planned tick
      } else if (auto* err = std::get_if<wire::ErrorReply>(&*m)) {
        spdlog::warn("coordinator refused our renew: {} ({})", err->message, ErrcName(err->code));
      }
    }
  }

  void Enqueue(wire::Message m) {
    constexpr std::size_t kMaxOutbox = 256;
    if (outbox.size() >= kMaxOutbox) {
      // Only refusal reports pile up (a renew is sent every D/3 at most a few
      // times): drop the oldest; discovery needs repeats, not every report.
      outbox.pop_front();
      ++reports_lost;
    }
    outbox.push_back(std::move(m));
    if (!writing && to_coordinator && to_coordinator->is_open()) {
      writing = true;
      asio::co_spawn(io, Flush(to_coordinator), asio::detached);
    }
  }

  awaitable<void> Flush(std::shared_ptr<wire::Channel> channel) {
    while (!outbox.empty() && !stopping && channel->is_open()) {
      wire::Message m = std::move(outbox.front());
      outbox.pop_front();
      const bool renew = std::holds_alternative<lease::RenewRequest>(m);
      Status s = co_await channel->Send(std::move(m));
      if (!s.ok()) {
        spdlog::warn("{} to coordinator {} failed: {}", renew ? "lease renew" : "refusal report",
                     cfg.cluster->coordinator, s.message());
        channel->Close();
        break;
      }
    }
    writing = false;
    if (!channel->is_open()) {
      // Renews are remade by the agent; reports of a dead channel are lost.
      for (const auto& m : outbox) reports_lost += std::holds_alternative<lease::RefusalReport>(m);
      outbox.clear();
    }
  }

  // Coordinator: what dsb held for target `t` at a refusal reported by broker
  // `reporter` with its own exact count `held`: that count plus, for every
  // other broker, system_slots + floor + the most it was owed within D (C1:
  // owed bounds the pool slots it can hold; the peak covers a report that was
  // in flight while owed fell). An upper bound, so discovery never takes the
  // server's cap for lower than what dsb held; "unknown" (never evidence)
  // while the ledger is learning. See broker/lease/account_held.h.
  std::uint32_t AccountHeld(std::size_t t, const std::string& reporter, std::uint32_t held) {
    const auto now = Clock::now();
    ObserveOwed(now);
    std::uint64_t others = 0;
    for (const auto& b : cfg.cluster->brokers) {
      if (b.id != reporter) others += static_cast<std::uint64_t>(b.system_slots + b.floor);
    }
    const auto index = ledger->FindBroker(reporter);
    if (!index) return 0xFFFFFFFFu;
    return lease::HeldAtRefusal(*ledger, recent_owed[t], *index, held, others, now);
  }
  void ObserveOwed(Clock::time_point now) {
    for (auto& r : recent_owed) r.Observe(*ledger, now);
  }

  json::object LimitsJson() const {
    json::array ts;
    for (std::size_t i = 0; i < cfg.targets.size(); ++i) {
      json::object o = limits->Json(i);
      o["target"] = cfg.targets[i].name;
      ts.push_back(std::move(o));
    }
    return json::object{{"ok", true}, {"coordinator", cfg.id}, {"targets", std::move(ts)}};
  }

  json::object SetLimitHere(std::size_t index, std::uint32_t value, const std::string& who) {
    if (index >= cfg.targets.size()) {
      return json::object{{"ok", false}, {"error", "unknown_target"}, {"message", "no such target"}};
    }
    if (Status st = limits->SetOperatorLimit(index, value, who); !st.ok()) {
      return json::object{{"ok", false},
                          {"error", ErrcName(st.code())},
                          {"message", "target " + cfg.targets[index].name + ": " + st.message()}};
    }
    json::object o = limits->Json(index);
    o["ok"] = true;
    o["target"] = cfg.targets[index].name;
    o["coordinator"] = cfg.id;
    return o;
  }

  // Asks the coordinator (another broker) an admin question over the wire.
  // `timeout` bounds the connect and the answer each (status asks with a
  // short one, so `dsbctl status` answers while the coordinator is down).
  awaitable<json::object> AskCoordinator(std::string request,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const config::ClusterBroker& c = coordinator();
    auto ch = co_await wire::Channel::Connect(io.get_executor(), c.address.host, c.address.port,
                                              creds, timeout);
    if (!ch.ok()) {
      co_return json::object{{"ok", false},
                             {"error", ErrcName(ch.status().code())},
                             {"message", "cannot reach coordinator " + c.id + ": " +
                                             ch.status().message()}};
    }
    wire::Message m = wire::AdminRequest{std::move(request)};
    Status s = co_await ch->Send(std::move(m));
    Result<wire::Message> reply(s);
    if (s.ok()) reply = co_await ch->Receive(timeout);
    ch->Close();
    if (reply.ok()) {
      if (auto* a = std::get_if<wire::AdminReply>(&*reply)) {
        boost::system::error_code ec;
        json::value v = json::parse(a->json, ec);
        if (!ec && v.is_object()) co_return v.as_object();
      }
    }
    co_return json::object{{"ok", false},
                           {"error", "protocol"},
                           {"message", "coordinator " + c.id + " gave no answer: " +
                                           (reply.ok() ? std::string("unexpected reply")
                                                       : reply.status().message())}};
  }

  // ---- coordinator side ----

  awaitable<void> AcceptLoop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor->async_accept(use_nothrow);
      if (stopping || ec == asio::error::operation_aborted) co_return;
      if (ec) continue;
      asio::co_spawn(io, Serve(std::move(socket)), asio::detached);
    }
  }

  awaitable<void> Serve(tcp::socket socket) {
    auto accepted = co_await wire::Channel::Accept(std::move(socket), creds, std::chrono::seconds(5));
    if (!accepted.ok() || stopping) co_return;  // logged by the channel
    auto channel = std::make_shared<wire::Channel>(std::move(accepted).value());
    served.insert(channel);
    const std::string peer = channel->peer().broker_id;
    for (;;) {
      auto m = co_await channel->Receive(receive_timeout());
      if (!m.ok() || stopping) break;
      std::optional<wire::Message> reply;
      if (auto* req = std::get_if<lease::RenewRequest>(&*m)) {
        if (req->broker_id != peer) {
          reply = wire::ErrorReply{Errc::kConflict, "request names broker '" + req->broker_id +
                                                        "' but the channel belongs to '" + peer +
                                                        "'"};
        } else {
          ObserveOwed(Clock::now());
          auto grant = ledger->OnRequest(Clock::now(), *req);
          ObserveOwed(Clock::now());
          if (!grant.ok()) {
            reply = wire::ErrorReply{grant.status().code(), grant.status().message()};
          } else if (grant->has_value()) {
            reply = **grant;
          }
        }
      } else if (auto* report = std::get_if<lease::RefusalReport>(&*m)) {
        // No reply: a report is a hint that is safe to lose.
        std::optional<std::size_t> t;
        for (std::size_t i = 0; i < cfg.targets.size(); ++i) {
          if (cfg.targets[i].name == report->target) t = i;
        }
        if (report->broker_id != peer) {
          spdlog::warn("refusal report names broker '{}' on the channel of '{}': ignored",
                       report->broker_id, peer);
        } else if (!t) {
          spdlog::warn("broker {} reports a refusal for unknown target '{}': ignored", peer,
                       report->target);
        } else {
          limits->OnRefusal(*t, AccountHeld(*t, peer, report->held), report->refusals,
                            "broker " + peer + " (it held " + std::to_string(report->held) + ")");
        }
      } else if (auto* admin = std::get_if<wire::AdminRequest>(&*m)) {
        reply = wire::AdminReply{json::serialize(HandleAdmin(admin->json, peer))};
      } else {
        reply = wire::ErrorReply{Errc::kProtocol, "unexpected message for the coordinator"};
      }
      if (reply) {
        wire::Message out = std::move(*reply);
        Status sent = co_await channel->Send(std::move(out));
        if (!sent.ok()) break;
      }
    }
    channel->Close();
    served.erase(channel);
  }

  json::object HandleAdmin(const std::string& text, const std::string& peer) {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object() || !v.as_object().contains("op")) {
      return json::object{{"ok", false}, {"error", "protocol"}, {"message", "bad admin request"}};
    }
    const auto& op = v.as_object().at("op");
    if (op.is_string() && op.as_string() == "leases") {
      return json::object{{"ok", true},
                          {"coordinator", cfg.id},
                          {"ledger", SnapshotJson(ledger->Snapshot(Clock::now()))}};
    }
    if (op.is_string() && op.as_string() == "limits") return LimitsJson();
    if (op.is_string() && op.as_string() == "set_limit") {
      const json::object& o = v.as_object();
      const json::value* tv = o.if_contains("target");
      const json::value* lv = o.if_contains("limit");
      const json::value* wv = o.if_contains("who");
      if (tv == nullptr || !tv->is_string() || lv == nullptr || !lv->is_int64() ||
          lv->as_int64() < 1 || lv->as_int64() > 65535) {
        return json::object{{"ok", false}, {"error", "invalid_argument"},
                            {"message", "set_limit needs a target and a limit 1..65535"}};
      }
      std::optional<std::size_t> t;
      for (std::size_t i = 0; i < cfg.targets.size(); ++i) {
        if (cfg.targets[i].name == tv->as_string()) t = i;
      }
      if (!t) {
        return json::object{{"ok", false}, {"error", "unknown_target"},
                            {"message", "the cluster has no such target"}};
      }
      std::string who = "via broker " + peer;
      if (wv != nullptr && wv->is_string()) {
        who = std::string(wv->as_string().subview(0, std::min<std::size_t>(wv->as_string().size(), 64))) + ", " + who;
      }
      return SetLimitHere(*t, static_cast<std::uint32_t>(lv->as_int64()), who);
    }
    return json::object{{"ok", false}, {"error", "protocol"}, {"message", "unknown admin op"}};
  }
};

ClusterNode::ClusterNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClusterNode::~ClusterNode() = default;

Result<std::unique_ptr<ClusterNode>> ClusterNode::Create(asio::io_context& io,
                                                         const config::BrokerConfig& config,
                                                         Hooks hooks) {
  auto impl = std::make_unique<Impl>(io, config, std::move(hooks));
  const config::ClusterConfig& cluster = *config.cluster;
  if (cluster.ledger != config::LedgerKind::kEmbedded) {
    return Status{Errc::kConfig, cluster.file_name +
                                     ": ledger = \"etcd\" is not implemented in this build; use "
                                     "the embedded coordinator"};
  }
  auto key = wire::ClusterKey::LoadFile(*config.key_file);
  if (!key.ok()) return key.status();
  impl->creds.key = std::move(key).value();
  impl->creds.broker_id = config.id;
  impl->creds.cluster_hash = cluster.hash;

  lease::AgentConfig ac;
  ac.broker_id = config.id;
  // Epochs must grow across restarts of this broker; wall-clock microseconds do
  // (they are only ever compared with this broker's own earlier epochs).
  ac.epoch = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
  ac.term = cluster.term;
  ac.eps = cluster.eps;
  const config::ClusterBroker& self = config.self();
  for (const auto& t : config.targets) {
    ac.targets.push_back(lease::AgentTarget{t.name, static_cast<std::uint32_t>(self.system_slots),
                                            static_cast<std::uint32_t>(self.floor)});
  }
  if (Status s = lease::LeaseAgent::Validate(ac); !s.ok()) return s;
  impl->agent = std::make_unique<lease::LeaseAgent>(ac, Clock::now());

  if (impl->is_coordinator()) {
    lease::LedgerConfig lc;
    lc.term = cluster.term;
    lc.drain = cluster.drain;
    lc.eps = cluster.eps;
    for (const auto& t : cluster.targets) {
      lc.targets.push_back(lease::LedgerTarget{t.name, static_cast<std::uint32_t>(cluster.Pool(t)),
                                               static_cast<std::uint32_t>(t.limit)});
    }
    for (const auto& b : cluster.brokers) {
      // Weights are ratios; the ledger takes integers 1..65535 (two decimals kept).
      const long w = std::lround(b.weight * 100.0);
      lc.brokers.push_back(
          lease::LedgerBroker{b.id, static_cast<std::uint32_t>(std::clamp(w, 1L, 65535L))});
    }
    if (Status s = lease::Ledger::Validate(lc); !s.ok()) return s;
    impl->ledger = std::make_unique<lease::Ledger>(lc, Clock::now());
    std::vector<std::uint32_t> minimum;
    for (const auto& t : cluster.targets) {
      // Every broker's system slots and floor, the reserve, and one pool slot.
      minimum.push_back(static_cast<std::uint32_t>(
          std::min(t.limit, t.reserve + cluster.SumSystemAndFloor() + 1)));
    }
    // The horizon is the longest a refusal report is assumed to take to
    // arrive: min(D/4, 250 ms) (reports travel only on a live channel and are
    // dropped, not queued, while it is down). A report that takes longer may
    // count a broker by what it is owed after a fall, which can only set the
    // limit too low (a wasted slot, never a broken S); a longer horizon slows
    // convergence, because after each lowering the other brokers keep
    // counting at their old owed for that long and refusals meanwhile are not
    // evidence (PostgreSQL, 3 brokers, D = 1 s: 110 refusals with 1 s).
    const auto horizon = lease::RefusalReportHorizon(cluster.term);
    for (std::size_t t = 0; t < cluster.targets.size(); ++t) {
      impl->recent_owed.emplace_back(cluster.brokers.size(), t, horizon);
    }
    Impl* raw = impl.get();
    std::optional<std::filesystem::path> limits_file;
    if (config.state_dir) limits_file = *config.state_dir / (config.id + ".limits");
    auto keeper = LimitKeeper::Create(
        io, cluster.targets, minimum,
        {[raw](std::size_t i, const lease::LimitChange& c) {
          // C2: grants shrink at once; capacity counts as free only as owed falls.
          raw->ObserveOwed(Clock::now());
          Status s = raw->ledger->SetLimit(raw->cfg.cluster->targets[i].name, c.to, Clock::now());
          raw->ObserveOwed(Clock::now());
          if (!s.ok()) {
            spdlog::error("target {}: ledger refused limit {}: {}",
                          raw->cfg.cluster->targets[i].name, c.to, s.message());
          }
        }},
        limits_file);
    if (!keeper.ok()) return keeper.status();
    impl->limits = std::move(keeper).value();
    // Limits restored from the state_dir apply to the ledger from the start.
    for (std::size_t t = 0; t < cluster.targets.size(); ++t) {
      if (!impl->limits->restored(t)) continue;
      if (Status s = impl->ledger->SetLimit(cluster.targets[t].name, impl->limits->limit(t),
                                            Clock::now());
          !s.ok()) {
        spdlog::error("target {}: ledger refused the restored limit {}: {}",
                      cluster.targets[t].name, impl->limits->limit(t), s.message());
      }
    }
  }
  return std::unique_ptr<ClusterNode>(new ClusterNode(std::move(impl)));
}

Status ClusterNode::Start() {
  Impl& n = *impl_;
  if (n.is_coordinator()) {
    const config::HostPort listen = n.cfg.listen ? *n.cfg.listen : n.cfg.self().address;
    boost::system::error_code ec;
    auto address = asio::ip::make_address(listen.host, ec);
    if (ec) {
      return {Errc::kConfig, "listen address '" + listen.host + "' is not an IP address"};
    }
    n.acceptor.emplace(n.io);
    tcp::endpoint ep(address, listen.port);
    n.acceptor->open(ep.protocol(), ec);
    if (!ec) n.acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) n.acceptor->bind(ep, ec);
    if (!ec) n.acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return {Errc::kBrokerUnavailable,
              "coordinator cannot listen on " + listen.ToString() + ": " + ec.message()};
    }
    spdlog::info("coordinator role: ledger on {} in learning mode for {} ms (C3)",
                 listen.ToString(), Ms(n.ledger->Silence()));
    asio::co_spawn(n.io, n.AcceptLoop(), asio::detached);
    n.limits->Start(nullptr);
  }
  asio::co_spawn(n.io, n.ConnectLoop(), asio::detached);
  asio::co_spawn(n.io, n.AgentLoop(), asio::detached);
  return Status::Ok();
}

void ClusterNode::Stop() {
  Impl& n = *impl_;
  n.stopping = true;
  boost::system::error_code ec;
  if (n.acceptor) n.acceptor->close(ec);
  if (n.limits) n.limits->Stop();
  n.tick_timer.cancel();
  n.connect_timer.cancel();
  if (n.to_coordinator) n.to_coordinator->Close();
  for (const auto& c : n.served) c->Close();
}

bool ClusterNode::MayRegister(std::size_t target, std::uint32_t registered) const {
  return impl_->agent->MayAdmitRegistration(target, registered);
}

json::object ClusterNode::AgentView() const {
  const Impl& n = *impl_;
  const auto now = Clock::now();
  json::array targets;
  for (std::size_t i = 0; i < n.cfg.targets.size(); ++i) {
    const lease::TargetCapacity c = n.agent->Capacity(i, now);
    targets.push_back(json::object{
        {"target", n.cfg.targets[i].name},
        {"floor", n.cfg.self().floor},
        {"system_slots", n.cfg.self().system_slots},
        {"lease", c.lease},
        {"action_capacity", c.action_capacity},
        {"applied", std::to_string(c.applied)},
        {"lease_left_ms", c.lease_valid_until && *c.lease_valid_until > now
                              ? json::value(Ms(*c.lease_valid_until - now))
                              : json::value(nullptr)}});
  }
  return json::object{{"broker", n.cfg.id},
                      {"epoch", std::to_string(n.agent->epoch())},
                      {"connected", n.to_coordinator && n.to_coordinator->is_open()},
                      {"targets", std::move(targets)}};
}

void ClusterNode::ReportRefusal(std::size_t target, std::uint32_t held, const std::string& who) {
  Impl& n = *impl_;
  if (target >= n.cfg.targets.size() || n.stopping) return;
  if (!n.to_coordinator || !n.to_coordinator->is_open()) {
    ++n.reports_lost;
    spdlog::warn("target {}: {} reports a session-limit refusal, but coordinator {} is not "
                 "connected: the report is lost ({} lost so far)",
                 n.cfg.targets[target].name, who, n.cfg.cluster->coordinator, n.reports_lost);
    return;
  }
  lease::RefusalReport r;
  r.broker_id = n.cfg.id;
  r.epoch = n.agent->epoch();
  r.target = n.cfg.targets[target].name;
  r.held = held;
  r.refusals = 1;
  n.Enqueue(std::move(r));
}

awaitable<json::object> ClusterNode::Limits() {
  Impl& n = *impl_;
  if (n.limits) co_return n.LimitsJson();
  co_return co_await n.AskCoordinator(R"({"op":"limits"})", std::chrono::milliseconds(1000));
}

awaitable<json::object> ClusterNode::SetLimit(std::size_t target, std::uint32_t limit,
                                              std::string who) {
  Impl& n = *impl_;
  if (n.limits) co_return n.SetLimitHere(target, limit, who + " on broker " + n.cfg.id);
  json::object req{{"op", "set_limit"},
                   {"target", n.cfg.targets.at(target).name},
                   {"limit", limit},
                   {"who", who}};
  co_return co_await n.AskCoordinator(json::serialize(req), std::chrono::milliseconds(2000));
}

awaitable<json::object> ClusterNode::Leases() {
  Impl& n = *impl_;
  json::object out{{"ok", true}, {"coordinator", n.cfg.cluster->coordinator},
                   {"agent", AgentView()}};
  if (n.ledger) {
    out["ledger"] = SnapshotJson(n.ledger->Snapshot(Clock::now()));
    co_return out;
  }
  const config::ClusterBroker& c = n.coordinator();
  auto ch = co_await wire::Channel::Connect(n.io.get_executor(), c.address.host, c.address.port,
                                            n.creds, std::chrono::seconds(5));
  if (!ch.ok()) {
    out["ledger"] = nullptr;
    out["ledger_error"] = "cannot reach coordinator " + c.id + ": " + ch.status().message();
    co_return out;
  }
  wire::Message request = wire::AdminRequest{R"({"op":"leases"})"};
  Status s = co_await ch->Send(std::move(request));
  Result<wire::Message> reply(s);
  if (s.ok()) reply = co_await ch->Receive(std::chrono::seconds(5));
  ch->Close();
  if (reply.ok()) {
    if (auto* a = std::get_if<wire::AdminReply>(&*reply)) {
      boost::system::error_code ec;
      json::value v = json::parse(a->json, ec);
      if (!ec && v.is_object() && v.as_object().contains("ledger")) {
        out["ledger"] = v.as_object().at("ledger");
        co_return out;
      }
    }
  }
  out["ledger"] = nullptr;
  out["ledger_error"] = "coordinator gave no ledger: " +
                        (reply.ok() ? std::string("unexpected reply") : reply.status().message());
  co_return out;
}

}  // namespace dsb::broker
