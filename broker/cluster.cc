#include "broker/cluster.h"

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <deque>
#include <set>
#include <spdlog/spdlog.h>

#include "broker/asio_helpers.h"
#include "broker/cluster_admin.h"
#include "broker/cluster_gate.h"
#include "broker/cluster_lease.h"
#include "broker/cluster_state.h"
#include "broker/etcd/etcd_node.h"
#include "broker/lease/account_held.h"
#include "broker/lease/ledger.h"
#include "broker/limit_keeper.h"
#include "broker/wire/channel.h"
#include "common/escape.h"
#include "common/local_protocol.h"
#include "common/limited_log.h"

namespace dsb::broker {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
namespace lp = local_protocol;

namespace {

// Sends `message` and waits up to `timeout` for the answer. Failure: the
// send's (the channel is then closed), or Receive's.
awaitable<Result<wire::Message>> Ask(wire::Channel& channel, wire::Message message,
                                     Clock::duration timeout) {
  if (Status s = co_await channel.Send(std::move(message)); !s.ok()) co_return s;
  co_return co_await channel.Receive(timeout);
}

}  // namespace

struct ClusterNode::Impl {
  Impl(asio::io_context& io_context, const config::BrokerConfig& c, Hooks h)
      : io(io_context), cfg(c), hooks(std::move(h)), connect_timer(io) {}

  asio::io_context& io;
  config::BrokerConfig cfg;
  Hooks hooks;
  // Where the agent sends its renews: the file's coordinator, or the successor
  // a superseded coordinator named (R3).
  std::string coord_id;
  config::HostPort coord_address;
  // Coordinator (R3): brokers that have not answered our hello since start,
  // and the addresses of older coordinators learned from answers.
  std::set<std::string> hello_waiting;
  std::map<std::string, config::HostPort> hello_extra;
  std::map<std::string, std::string> hello_state;  // last outcome per broker, logged on change
  std::set<std::string> records_adopted_from;
  bool gate_opened_before = false;  // R3: the gate was opened at this generation in an earlier run
  std::uint64_t mark_written = 0;
  asio::steady_timer hello_timer{io};
  wire::Credentials creds;
  std::unique_ptr<ClusterAgent> side;  // the agent and what it applies (cluster_agent.h)
  lease::LeaseAgent* agent = nullptr;  // side's
  std::unique_ptr<lease::Ledger> ledger;  // coordinator only
  std::unique_ptr<LimitKeeper> limits;    // coordinator only: the effective limits
  std::unique_ptr<CoordinatorAdmin> admin;  // coordinator only: dsbctl's requests
  std::vector<lease::RecentOwed> recent_owed;  // coordinator only: per target
  // Messages to the coordinator, written by one writer at a time (a Channel
  // allows one Send in flight).
  std::deque<wire::Message> outbox;
  bool writing = false;
  std::uint64_t reports_lost = 0;
  std::optional<tcp::acceptor> acceptor;
  asio::steady_timer connect_timer;
  std::shared_ptr<wire::Channel> to_coordinator;
  // Coordinator: one authenticated broker's channel. Replies and revoke
  // notices go out through `out` (a Channel allows one Send in flight).
  struct ServedPeer {
    std::shared_ptr<wire::Channel> channel;
    std::string peer;
    bool notices = false;     // it announced that it reads RevokeNotice (kNoticesOp)
    std::uint64_t epoch = 0;  // of its newest renew on this channel (0: none yet)
    std::deque<wire::Message> out;
    bool writing = false;
  };
  std::set<std::shared_ptr<ServedPeer>> served;
  bool stopping = false;
  bool connect_failed_logged = false;

  bool is_coordinator() const { return cfg.cluster->coordinator == cfg.id; }
  std::filesystem::path state_dir() const { return *cfg.state_dir; }
  Clock::duration receive_timeout() const {
    return std::max<Clock::duration>(3 * cfg.cluster->term, std::chrono::seconds(10));
  }

  // ---- agent side ----

  // The agent's requests go on the channel to the coordinator, or make the
  // connect loop try again now.
  void Send(const lease::RenewRequest& request) {
    if (to_coordinator && to_coordinator->is_open()) {
      // Name the message first: GCC 12 double-destroys temporaries made
      // inside a co_await expression.
      wire::Message renew = request;
      Enqueue(std::move(renew));
    } else {
      connect_timer.cancel();  // (re)connect now
    }
  }

  awaitable<void> ConnectLoop() {
    for (;;) {
      if (stopping) co_return;
      if (!to_coordinator || !to_coordinator->is_open()) {
        const std::string cid = coord_id;
        const config::HostPort where = coord_address;
        auto r = co_await wire::Channel::Connect(io.get_executor(), where.host, where.port, creds,
                                                 std::chrono::seconds(5));
        if (stopping) co_return;
        if (r.ok()) {
          spdlog::info("connected to coordinator {} at {}", cid, where.ToString());
          connect_failed_logged = false;
          to_coordinator = std::make_shared<wire::Channel>(std::move(r).value());
          asio::co_spawn(io, Reader(to_coordinator), asio::detached);
          // This broker reads revoke notices (cluster_admin.h, kNoticesOp):
          // first on the channel, before the renew.
          outbox.push_front(wire::AdminRequest{
              json::serialize(json::object{{lp::req::kOp, kNoticesOp}})});
          if (!outbox.empty() && !writing) {
            writing = true;
            asio::co_spawn(io, Flush(to_coordinator), asio::detached);
          }
          side->Poke();  // renew now on the new channel
        } else if (!connect_failed_logged) {
          spdlog::warn("cannot reach coordinator {} at {}: {} (retrying; the lease lapses on "
                       "this broker's clock, then only the floor is used)",
                       cid, where.ToString(), r.status().message());
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
        side->OnGrant(*grant, "coordinator " + coord_id, coord_id);
        FollowSuccessor(*grant);
      } else if (auto* notice = std::get_if<lease::RevokeNotice>(&*m)) {
        // C2: revoked, drained or undrained: renew now rather than at the
        // next planned renew, so capacity follows within one round trip.
        if (notice->broker_id == cfg.id && notice->epoch == agent->epoch()) {
          spdlog::info("coordinator {} sent a revoke notice (revoke, drain or undrain): renewing "
                       "now, before the planned renew",
                       coord_id);
          side->OnRevokeNotice();
        }
      } else if (auto* err = std::get_if<wire::ErrorReply>(&*m)) {
        // Each renew (up to every D/24) may be refused the same way.
        LogLimited(spdlog::level::warn, "coordinator refused our renew", coord_id,
                   "coordinator {} refused our renew: {} ({})", coord_id, err->message,
                   ErrcName(err->code));
      }
    }
  }

  // R3: a superseded coordinator's successor becomes the coordinator.
  void FollowSuccessor(const lease::Grant& grant) {
    if (grant.broker_id != cfg.id || grant.epoch != agent->epoch() ||
        grant.instance != agent->instance()) {
      return;
    }
    const lease::Verdict v = agent->verdict();
    if (v == lease::Verdict::kSuperseded && !grant.successor.empty()) {
      const auto at = grant.successor.find('@');
      auto hp = at == std::string::npos
                    ? Result<config::HostPort>(Status(Errc::kProtocol, "no '@'"))
                    : config::ParseHostPort(grant.successor.substr(at + 1), 1);
      if (hp.ok() && hp->ToString() != coord_address.ToString()) {
        spdlog::warn("coordinator {} was superseded by {}: reporting there from now on (this "
                     "broker's cluster file is older, so it is refused there; its clients stay "
                     "counted)",
                     coord_id, grant.successor);
        coord_id = grant.successor.substr(0, at);
        coord_address = *hp;
        if (to_coordinator) to_coordinator->Close();
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
                     coord_id, s.message());
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

  // Forwards an admin request to the coordinator (cluster_admin.h).
  awaitable<json::object> AskCoordinator(std::string request,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    co_return co_await broker::AskCoordinator(io.get_executor(), coord_id, coord_address, creds,
                                              std::move(request), timeout);
  }

  // ---- coordinator side ----

  // Accepts and authenticates (ClusterGate: bounds, handshake timeout, backoff).
  std::unique_ptr<ClusterGate> gate;

  // One authenticated broker's channel, until it ends.
  awaitable<void> Serve(wire::Channel accepted) {
    if (stopping) co_return;
    auto channel = std::make_shared<wire::Channel>(std::move(accepted));
    auto self = std::make_shared<ServedPeer>();
    self->channel = channel;
    self->peer = channel->peer().broker_id;
    served.insert(self);
    const std::string peer = self->peer;
    for (;;) {
      auto m = co_await channel->Receive(receive_timeout());
      if (!m.ok() || stopping) break;
      std::optional<wire::Message> reply;
      if (auto* note = std::get_if<wire::AdminRequest>(&*m); note != nullptr && IsNoticesOp(*note)) {
        // The broker reads revoke notices: send them on this channel.
        self->notices = true;
        reply = wire::AdminReply{json::serialize(json::object{{"ok", true}, {"notices", true}})};
      } else if (auto* hello = std::get_if<wire::CoordinatorHello>(&*m)) {
        reply = AnswerHello(*hello, peer);
      } else if (!ledger) {
        reply = wire::ErrorReply{Errc::kConflict, "broker " + cfg.id + " is not the coordinator "
                                                  "(it answers only a coordinator's hello)"};
      } else if (auto* bye = std::get_if<lease::Goodbye>(&*m)) {
        if (bye->broker_id == peer && ledger->OnGoodbye(Clock::now(), *bye)) {
          spdlog::info("broker {} (epoch {}) stopped cleanly and handed its clients to its "
                       "successor",
                       peer, bye->epoch);
        }
      } else if (auto* req = std::get_if<lease::RenewRequest>(&*m)) {
        if (req->broker_id != peer) {
          reply = wire::ErrorReply{Errc::kConflict, "request names broker '" + req->broker_id +
                                                        "' but the channel belongs to '" + peer +
                                                        "'"};
        } else {
          self->epoch = std::max(self->epoch, req->epoch);
          ObserveOwed(Clock::now());
          auto grant = ledger->OnRequest(Clock::now(), *req);
          ObserveOwed(Clock::now());
          LogLedgerWarnings();
          PersistSupersededMark();
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
        // A peer may send these in a loop: rate-limited per peer.
        if (report->broker_id != peer) {
          LogLimited(spdlog::level::warn, "refusal report for another broker", peer,
                     "refusal report names broker '{}' on the channel of '{}': ignored",
                     EscapeText(report->broker_id), peer);
        } else if (!t) {
          LogLimited(spdlog::level::warn, "refusal report for an unknown target", peer,
                     "broker {} reports a refusal for unknown target '{}': ignored", peer,
                     EscapeText(report->target));
        } else {
          limits->OnRefusal(*t, AccountHeld(*t, peer, report->held), report->refusals,
                            "broker " + peer + " (it held " + std::to_string(report->held) + ")");
        }
      } else if (auto* admin = std::get_if<wire::AdminRequest>(&*m)) {
        reply = wire::AdminReply{json::serialize(this->admin->Handle(admin->json, peer))};
      } else {
        reply = wire::ErrorReply{Errc::kProtocol, "unexpected message for the coordinator"};
      }
      if (reply) SendTo(self, std::move(*reply));
      if (!channel->is_open()) break;
    }
    channel->Close();
    served.erase(self);
  }

  static bool IsNoticesOp(const wire::AdminRequest& r) {
    boost::system::error_code ec;
    json::value v = json::parse(r.json, ec);
    if (ec || !v.is_object()) return false;
    const json::value* op = v.as_object().if_contains(lp::req::kOp);
    return op != nullptr && op->is_string() && op->as_string() == kNoticesOp;
  }

  void SendTo(const std::shared_ptr<ServedPeer>& to, wire::Message m) {
    to->out.push_back(std::move(m));
    if (to->writing) return;
    to->writing = true;
    asio::co_spawn(io, FlushServed(to), asio::detached);
  }

  awaitable<void> FlushServed(std::shared_ptr<ServedPeer> to) {
    while (!to->out.empty() && to->channel->is_open()) {
      wire::Message m = std::move(to->out.front());
      to->out.pop_front();
      if (Status s = co_await to->channel->Send(std::move(m)); !s.ok()) {
        to->channel->Close();  // its Serve loop ends on the failed Receive
        break;
      }
    }
    to->out.clear();
    to->writing = false;
  }

  // C2: tells broker `broker` ("" = every broker) to renew now, on each
  // channel where it announced that it reads the notice. A hint only: lost,
  // the broker's next renew (at most D/3 later) gets the same answer.
  void Notify(const std::string& broker) {
    std::size_t sent = 0;
    for (const auto& p : served) {
      if (!p->notices || p->epoch == 0 || !p->channel->is_open()) continue;
      if (!broker.empty() && p->peer != broker) continue;
      SendTo(p, lease::RevokeNotice{p->peer, p->epoch});
      ++sent;
    }
    if (!broker.empty()) {
      spdlog::info("revoke notice to broker {}: {}", broker,
                   sent > 0 ? "sent (it renews now)"
                            : "not connected or too old to read it (it learns at its next "
                              "renew, at most D/3 from now)");
    }
  }

  void LogLedgerWarnings() {
    // A refused or removed broker's every renew (up to every D/24) repeats its
    // warning: the same text is rate-limited, a new one goes out at once.
    for (const std::string& w : ledger->TakeWarnings()) {
      LogLimited(spdlog::level::err, "ledger", w, "ledger: {}", w);
    }
    // One line per instance forgotten by silence (C2): a dead workstation
    // shows up here, S after its last renew.
    for (const std::string& n : ledger->TakeNotices()) spdlog::warn("ledger: {}", n);
  }

  // R3: a superseded ledger's mark goes to state_dir before the stop is
  // confirmed to anyone; a coordinator that finds it never grants.
  bool PersistSupersededMark() {
    const std::uint64_t g = ledger->newer_generation_seen();
    if (g == 0 || g <= mark_written) return g != 0;
    if (Status st = WriteMark(state_dir(), cfg.id, kSupersededMark, g); !st.ok()) {
      spdlog::error("cannot write the superseded mark: {} (this coordinator grants nothing "
                    "anyway; it will not confirm its stop)",
                    st.message());
      return false;
    }
    mark_written = g;
    spdlog::error("coordinator {} (generation {}) is superseded by generation {}: it grants "
                  "nothing from now on",
                  cfg.id, cfg.cluster->generation, g);
    return true;
  }

  // Where brokers reach this one: its cluster-file address (`listen` may be a
  // wildcard such as 0.0.0.0).
  std::string SelfAddress() const { return cfg.self().address.ToString(); }

  // R3, answering side (every broker).
  wire::HelloReply AnswerHello(const wire::CoordinatorHello& hello, const std::string& peer) {
    wire::HelloReply r;
    r.broker_id = cfg.id;
    r.generation = cfg.cluster->generation;
    r.file_hash = cfg.cluster->hash;
    r.coordinator_id = coord_id;
    r.coordinator_address = coord_address.ToString();
    r.is_coordinator = ledger != nullptr;
    if (hello.coordinator_id != peer) return r;  // names another broker: answer, change nothing
    if (!ledger) {
      // This machine may have been the coordinator under an older file
      // (restarted as a plain broker before the new coordinator came up):
      // hand over the acceptances it recorded then, if older than the
      // hello's file (R2, R3).
      auto records = ReadRecords(state_dir(), cfg.id);
      if (records.ok()) {
        for (auto& rec : *records) {
          if (rec.generation < hello.generation) r.records.push_back(std::move(rec));
        }
      }
    }
    if (hello.generation > cfg.cluster->generation && agent->accepted()) {
      // A newer coordinator: tell it the allowance this broker uses under its
      // older file, so it is counted (R2) ...
      lease::AcceptanceRecord own;
      own.broker_id = cfg.id;
      own.epoch = agent->epoch();
      own.instance = agent->instance();
      own.generation = cfg.cluster->generation;
      for (const auto& t : cfg.targets) {
        own.targets.push_back(t.name);
        own.system_slots.push_back(static_cast<std::uint32_t>(cfg.self().system_slots));
        own.floors.push_back(static_cast<std::uint32_t>(cfg.self().floor));
      }
      r.records.push_back(std::move(own));
    }
    if (!ledger && hello.generation > cfg.cluster->generation) {
      // ... and report there from now on: it refuses this older file, so the
      // floor goes (registrations stay, counted) until the new file is
      // installed here.
      auto hp = config::ParseHostPort(hello.address, 1);
      if (hp.ok() && (hello.coordinator_id != coord_id || hp->ToString() != coord_address.ToString())) {
        spdlog::warn("coordinator {} of cluster file generation {} took over (this broker runs "
                     "generation {}): reporting there; install the new file and restart",
                     hello.coordinator_id, hello.generation, cfg.cluster->generation);
        coord_id = hello.coordinator_id;
        coord_address = *hp;
        if (to_coordinator) to_coordinator->Close();
      }
    }
    if (ledger && hello.generation > cfg.cluster->generation) {
      ledger->Supersede(hello.generation, hello.coordinator_id + "@" + hello.address);
      r.stopped = PersistSupersededMark();
      if (r.stopped) {
        for (auto& rec : ledger->Records()) r.records.push_back(std::move(rec));
      }
    } else if (ledger && hello.generation == cfg.cluster->generation &&
               hello.file_hash != cfg.cluster->hash && hello.coordinator_id != cfg.id) {
      spdlog::critical("two coordinators at generation {} with different cluster files: {} "
                       "and {}; this one stops granting. Install one file with a higher "
                       "generation everywhere",
                       hello.generation, cfg.id, hello.coordinator_id);
      ledger->Supersede(hello.generation);
      r.conflict = true;
    }
    return r;
  }

  // R3, asking side: the coordinator says hello to every broker of its file
  // (and to older coordinators it learns of) every second; until each has
  // answered once, a coordinator of generation > 1 grants nothing.
  awaitable<void> HelloLoop() {
    for (const auto& b : cfg.cluster->brokers) {
      if (b.id != cfg.id) hello_waiting.insert(b.id);
    }
    if (cfg.cluster->generation > 1 && !hello_waiting.empty() && !gate_opened_before) {
      ledger->WaitForPrevious();
      spdlog::info("coordinator {} (generation {}): grants nothing until every broker of the "
                   "file has answered its hello (a coordinator of an older generation may still "
                   "run): waiting for {}",
                   cfg.id, cfg.cluster->generation, Join(hello_waiting));
    }
    auto last_log = Clock::now();
    while (!stopping) {
      std::map<std::string, config::HostPort> to_ask = hello_extra;
      for (const auto& b : cfg.cluster->brokers) {
        if (b.id != cfg.id) to_ask.emplace(b.id, b.address);
      }
      for (const auto& [id, where] : to_ask) {
        if (stopping) co_return;
        co_await SayHello(id, where);
      }
      if (ledger->gate() == lease::Gate::kWaiting && hello_waiting.empty()) {
        // Remembered, so a restart at this generation does not wait for every
        // broker again (a workstation off for the night answers nothing); the
        // hellos go on and still stop an older coordinator that comes back.
        if (Status st = WriteMark(state_dir(), cfg.id, kGateMark, cfg.cluster->generation);
            !st.ok()) {
          spdlog::error("{}", st.message());
        }
        ledger->OpenGate(Clock::now());
        spdlog::info("coordinator {}: every broker answered; learning (C3) for {} ms from now",
                     cfg.id, Ms(ledger->Silence()));
      } else if (ledger->gate() == lease::Gate::kWaiting &&
                 Clock::now() - last_log > std::chrono::seconds(10)) {
        last_log = Clock::now();
        spdlog::warn("coordinator {}: still waiting for the hello answer of {} (grants nothing "
                     "meanwhile; if that machine is gone for good, `dsbctl confirm-stopped ID` "
                     "on this broker tells the coordinator so: it breaks S if it is wrong)",
                     cfg.id, Join(hello_waiting));
      }
      hello_timer.expires_after(std::chrono::seconds(1));
      co_await hello_timer.async_wait(use_nothrow);
    }
  }

  static std::string Join(const std::set<std::string>& ids) {
    std::string out;
    for (const auto& id : ids) out += (out.empty() ? "" : ", ") + id;
    return out;
  }

  awaitable<void> SayHello(const std::string& id, const config::HostPort& where) {
    auto ch = co_await wire::Channel::Connect(io.get_executor(), where.host, where.port, creds,
                                              std::chrono::seconds(2), /*log_failure=*/false);
    if (!ch.ok()) {
      // ECONNREFUSED: nothing listens there, so no coordinator of any
      // generation runs there. Anything else (timeout, no route, a broker
      // that does not finish the handshake) may hide one: keep waiting.
      const bool nothing_listens =
          ch.status().message().find("Connection refused") != std::string::npos;
      if (nothing_listens) hello_waiting.erase(id);
      const std::string state = nothing_listens ? "not running" : ch.status().message();
      if (hello_state[id] != state && !nothing_listens) {
        spdlog::warn("coordinator {}: hello to broker {} at {} failed: {}", cfg.id, id,
                     where.ToString(), state);
      }
      hello_state[id] = state;
      co_return;
    }
    hello_state[id] = "answered";
    wire::Message m = wire::CoordinatorHello{cfg.id, cfg.cluster->generation, cfg.cluster->hash,
                                             SelfAddress()};
    Result<wire::Message> reply = co_await Ask(*ch, std::move(m), std::chrono::seconds(2));
    ch->Close();
    if (!reply.ok() || stopping) co_return;
    auto* r = std::get_if<wire::HelloReply>(&*reply);
    if (r == nullptr) co_return;
    if (r->broker_id != id) {
      // Addresses swapped between files, or a stale entry: this answer says
      // nothing about broker `id`.
      LogLimited(spdlog::level::warn, "hello answered by another broker", id,
                 "coordinator {}: the hello to broker {} at {} was answered by broker {}", cfg.id,
                 id, where.ToString(), r->broker_id);
      co_return;
    }
    if (r->generation > cfg.cluster->generation) {
      // Only the coordinator of the newer file takes over (R3); a plain broker
      // with a newer (staged, mistyped) file does not stop this one.
      if (r->is_coordinator) {
        ledger->Supersede(r->generation, id + "@" + where.ToString());
        PersistSupersededMark();
      }
      co_return;
    }
    if (r->conflict) {
      spdlog::critical("broker {} also coordinates generation {} with another cluster file: "
                       "this coordinator stops granting too",
                       id, r->generation);
      ledger->Supersede(cfg.cluster->generation);
      co_return;
    }
    if (r->is_coordinator && r->generation < cfg.cluster->generation && !r->stopped) {
      co_return;  // it could not record its stop yet: ask again
    }
    if (!r->records.empty() && records_adopted_from.insert(id).second) {
      // Once per broker and run: adopting again would renew instances that
      // have fallen silent since.
      ledger->AdoptRecords(r->records, Clock::now());
      spdlog::info("broker {} ({} of generation {}) handed over {} acceptance record(s)", id,
                   r->is_coordinator ? "stopped coordinator" : "earlier coordinator",
                   r->generation, r->records.size());
    }
    if (!r->is_coordinator && r->generation < cfg.cluster->generation &&
        r->coordinator_id != cfg.id && !r->coordinator_address.empty()) {
      // An older file names another coordinator: it may still grant. Ask it too.
      auto hp = config::ParseHostPort(r->coordinator_address, 1);
      if (hp.ok() && hello_extra.emplace(r->coordinator_id, *hp).second) {
        hello_waiting.insert(r->coordinator_id);
      }
    }
    hello_waiting.erase(id);
  }

};

ClusterNode::ClusterNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClusterNode::ClusterNode(std::unique_ptr<etcd::EtcdNode> etcd) : etcd_(std::move(etcd)) {}
ClusterNode::~ClusterNode() = default;

Result<std::unique_ptr<ClusterNode>> ClusterNode::Create(asio::io_context& io,
                                                         const config::BrokerConfig& config,
                                                         Hooks hooks) {
  const config::ClusterConfig& cluster = *config.cluster;
  if (cluster.ledger == config::LedgerKind::kEtcd) {
    auto node = etcd::EtcdNode::Create(io, config, std::move(hooks));
    if (!node.ok()) return node.status();
    return std::unique_ptr<ClusterNode>(new ClusterNode(std::move(node).value()));
  }
  auto impl = std::make_unique<Impl>(io, config, std::move(hooks));
  auto key = wire::ClusterKey::LoadFile(*config.key_file);
  if (!key.ok()) return key.status();
  impl->creds.key = std::move(key).value();
  impl->creds.broker_id = config.id;
  impl->creds.cluster_hash = cluster.hash;
  // The lease layer decides about a peer with another file (R1, R3).
  impl->creds.accept_other_file = true;
  impl->coord_id = cluster.coordinator;
  impl->coord_address = cluster.FindBroker(cluster.coordinator)->address;
  auto side = ClusterAgent::Create(io, impl->cfg, impl->hooks);
  if (!side.ok()) return side.status();
  impl->side = std::move(side).value();
  impl->agent = &impl->side->agent();

  if (impl->is_coordinator()) {
    lease::LedgerConfig lc = LedgerConfigOf(cluster);
    if (Status s = lease::Ledger::Validate(lc); !s.ok()) {
      return Status{s.code(), cluster.file_name + ": " + s.message()};
    }
    // R2: every acceptance is on disk before it is sent.
    const std::filesystem::path dir = *config.state_dir;
    const std::string self_id = config.id;
    lc.persist = [dir, self_id](const std::vector<lease::AcceptanceRecord>& records) {
      Status st = WriteRecords(dir, self_id, records);
      if (!st.ok()) spdlog::error("cannot record acceptances: {}", st.message());
      return st.ok();
    };
    auto records = ReadRecords(dir, self_id);
    if (!records.ok()) return records.status();
    auto mark = ReadMark(dir, self_id, kSupersededMark);
    if (!mark.ok()) return mark.status();
    auto gate = ReadMark(dir, self_id, kGateMark);
    if (!gate.ok()) return gate.status();
    impl->gate_opened_before = gate->has_value() && **gate == cluster.generation;
    impl->ledger = std::make_unique<lease::Ledger>(lc, Clock::now());
    if (!records->empty()) {
      impl->ledger->AdoptRecords(*records, Clock::now());
      spdlog::info("coordinator: {} acceptance(s) of the previous run restored from {}",
                   records->size(), dir.string());
    }
    if (mark->has_value() && **mark > cluster.generation) {
      impl->ledger->Supersede(**mark);
      impl->mark_written = **mark;
      spdlog::critical("coordinator {} was superseded by generation {} (mark in {}): this "
                       "generation-{} coordinator grants nothing; install the newer cluster file",
                       config.id, **mark, dir.string(), cluster.generation);
    }
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
          // A lower limit shrinks grants now: tell every broker to renew.
          if (s.ok() && c.to < c.from) raw->Notify("");
          if (!s.ok()) {
            spdlog::error("target {}: ledger refused limit {}: {}",
                          raw->cfg.cluster->targets[i].name, c.to, s.message());
          }
        }},
        limits_file);
    if (!keeper.ok()) return keeper.status();
    impl->limits = std::move(keeper).value();
    std::optional<std::filesystem::path> modes_file;
    if (config.state_dir) modes_file = *config.state_dir / (config.id + ".modes");
    impl->admin = std::make_unique<CoordinatorAdmin>(
        impl->cfg, *impl->ledger, *impl->limits, impl->hello_waiting,
        [raw](const std::string& broker) { raw->Notify(broker); }, modes_file);
    // Revoke and drain set by an operator survive a coordinator restart.
    if (Status s = impl->admin->RestoreModes(); !s.ok()) return s;
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
  if (etcd_) return etcd_->Start();
  Impl& n = *impl_;
  {
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
      // Name the key that chose the address, so the operator knows what to change
      // (broker.listen defaults to this broker's address in the cluster file).
      const std::string key =
          listen == n.cfg.self().address
              ? n.cfg.cluster->file_name + ": address of broker \"" + n.cfg.id + "\""
              : std::string("broker.listen in the broker file");
      return {Errc::kBrokerUnavailable, std::string(n.ledger ? "coordinator" : "broker") +
                                            " cannot listen on " + listen.ToString() + " (" +
                                            key + "): " + ec.message()};
    }
    n.gate = std::make_unique<ClusterGate>(n.io, *n.acceptor, n.creds,
                                           "cluster port " + listen.ToString());
    asio::co_spawn(n.io,
                   n.gate->AcceptLoop([&n](wire::Channel c) { return n.Serve(std::move(c)); }),
                   asio::detached);
  }
  if (n.ledger) {
    spdlog::info("coordinator role: ledger in learning mode for {} ms (C3)",
                 Ms(n.ledger->Silence()));
    asio::co_spawn(n.io, n.HelloLoop(), asio::detached);
    n.limits->Start(nullptr);
  }
  asio::co_spawn(n.io, n.ConnectLoop(), asio::detached);
  asio::co_spawn(n.io, n.side->Run([&n](const lease::RenewRequest& r) { n.Send(r); }),
                 asio::detached);
  return Status::Ok();
}

void ClusterNode::Stop() {
  if (etcd_) return etcd_->Stop();
  Impl& n = *impl_;
  if (n.stopping) return;
  // R5: admit nothing new, then tell the coordinator what is handed to the
  // next instance on this machine, so it need not wait for our silence.
  std::optional<lease::Goodbye> bye;
  if (n.to_coordinator && n.to_coordinator->is_open()) bye = n.side->Freeze();
  if (bye) {
    auto channel = n.to_coordinator;
    asio::co_spawn(
        n.io,
        [channel, bye]() -> awaitable<void> {
          wire::Message m = *bye;
          (void)co_await channel->Send(std::move(m));
          channel->Close();
        },
        asio::detached);
    n.to_coordinator.reset();
  }
  n.stopping = true;
  n.hello_timer.cancel();
  boost::system::error_code ec;
  if (n.gate) n.gate->Stop();
  if (n.acceptor) n.acceptor->close(ec);
  if (n.limits) n.limits->Stop();
  n.side->Stop();
  n.connect_timer.cancel();
  if (n.to_coordinator) n.to_coordinator->Close();
  for (const auto& c : n.served) c->channel->Close();
}

std::optional<std::string> ClusterNode::NotAcceptedReason() const {
  if (etcd_) return etcd_->NotAcceptedReason();
  return impl_->side->NotAcceptedReason("coordinator " + impl_->coord_id);
}

bool ClusterNode::MayRegister(std::size_t target, std::uint32_t registered) const {
  if (etcd_) return etcd_->MayRegister(target, registered);
  return impl_->side->MayRegister(target, registered);
}

const LimitKeeper* ClusterNode::CoordinatorLimits() const {
  return etcd_ ? etcd_->CoordinatorLimits() : impl_->limits.get();
}

json::object ClusterNode::AgentView() const {
  if (etcd_) return etcd_->AgentView();
  const Impl& n = *impl_;
  json::object view = n.side->View();
  view["coordinator"] = n.coord_id;
  view["connected"] = n.to_coordinator && n.to_coordinator->is_open();
  return view;
}

void ClusterNode::ReportRefusal(std::size_t target, std::uint32_t held, const std::string& who) {
  if (etcd_) return etcd_->ReportRefusal(target, held, who);
  Impl& n = *impl_;
  if (target >= n.cfg.targets.size() || n.stopping) return;
  if (!n.to_coordinator || !n.to_coordinator->is_open()) {
    ++n.reports_lost;
    // A client may report in a loop (rate-limited per target).
    LogLimited(spdlog::level::warn, "refusal report lost", n.cfg.targets[target].name,
               "target {}: {} reports a session-limit refusal, but coordinator {} is not "
               "connected: the report is lost ({} lost so far)",
               n.cfg.targets[target].name, who, n.coord_id, n.reports_lost);
    return;
  }
  lease::RefusalReport r;
  r.broker_id = n.cfg.id;
  r.epoch = n.agent->epoch();
  r.instance = n.agent->instance();
  r.target = n.cfg.targets[target].name;
  r.held = held;
  r.refusals = 1;
  n.Enqueue(std::move(r));
}

awaitable<json::object> ClusterNode::Limits() {
  if (etcd_) co_return co_await etcd_->Limits();
  Impl& n = *impl_;
  if (n.admin) co_return n.admin->LimitsJson(n.cfg.id);
  json::object req;
  req[lp::req::kOp] = kLimitsOp;
  co_return co_await n.AskCoordinator(json::serialize(req), std::chrono::milliseconds(1000));
}

awaitable<json::object> ClusterNode::SetLimit(std::size_t target, std::uint32_t limit,
                                              std::string who) {
  if (etcd_) co_return co_await etcd_->SetLimit(target, limit, std::move(who));
  Impl& n = *impl_;
  if (n.admin) co_return n.admin->SetLimit(target, limit, who + " on broker " + n.cfg.id);
  json::object req = lp::SetLimitRequest(n.cfg.targets.at(target).name, limit);
  req[kWho] = who;
  co_return co_await n.AskCoordinator(json::serialize(req), std::chrono::milliseconds(2000));
}

awaitable<json::object> ClusterNode::Steer(json::object request, std::string who) {
  if (etcd_) co_return co_await etcd_->Steer(std::move(request), std::move(who));
  Impl& n = *impl_;
  request[kWho] = who;
  if (n.admin) co_return n.admin->Handle(json::serialize(request), n.cfg.id);
  co_return co_await n.AskCoordinator(json::serialize(request), std::chrono::milliseconds(2000));
}

awaitable<json::object> ClusterNode::ConfirmStopped(std::string broker) {
  if (etcd_) co_return co_await etcd_->ConfirmStopped(std::move(broker));
  Impl& n = *impl_;
  const json::object req = lp::ConfirmStoppedRequest(broker);
  if (n.admin) co_return n.admin->Handle(json::serialize(req), n.cfg.id);
  co_return co_await n.AskCoordinator(json::serialize(req), std::chrono::milliseconds(2000));
}

awaitable<json::object> ClusterNode::Leases() {
  if (etcd_) co_return co_await etcd_->Leases();
  Impl& n = *impl_;
  json::object out{{"ok", true}, {"coordinator", n.coord_id},
                   {"agent", AgentView()}};
  if (n.ledger) {
    out["ledger"] = SnapshotJson(n.ledger->Snapshot(Clock::now()));
    co_return out;
  }
  json::object reply = co_await n.AskCoordinator(json::serialize(lp::Request(lp::Op::kLeases)));
  if (const json::value* ledger = reply.if_contains("ledger")) {
    out["ledger"] = *ledger;
  } else {
    out["ledger"] = nullptr;
    const json::value* message = reply.if_contains("message");
    out["ledger_error"] = message != nullptr && message->is_string()
                              ? json::value(message->as_string())
                              : json::value("coordinator gave no ledger");
  }
  co_return out;
}

}  // namespace dsb::broker
