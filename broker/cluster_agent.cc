#include "broker/cluster_agent.h"

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "broker/asio_helpers.h"
#include "broker/cluster_lease.h"
#include "broker/cluster_state.h"
#include "common/escape.h"
#include "common/limited_log.h"

namespace dsb::broker {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using Clock = std::chrono::steady_clock;

namespace {

}  // namespace

ClusterAgent::ClusterAgent(asio::io_context& io, const config::BrokerConfig& config,
                           ClusterHooks hooks)
    : cfg_(config), hooks_(std::move(hooks)), tick_timer_(io) {}

ClusterAgent::~ClusterAgent() = default;

Result<std::unique_ptr<ClusterAgent>> ClusterAgent::Create(asio::io_context& io,
                                                           const config::BrokerConfig& config,
                                                           ClusterHooks hooks) {
  const config::ClusterConfig& cluster = *config.cluster;
  if (!config.state_dir) {
    return Status{Errc::kConfig, "broker.state_dir is required in cluster mode"};
  }
  // R0: the epoch is a counter in state_dir (never a clock reading: a wall
  // clock stepped back must not make a restart look older); the instance id is
  // fresh per start and tells clones with a copied state_dir apart.
  auto epoch = NextEpoch(*config.state_dir, config.id);
  if (!epoch.ok()) return epoch.status();
  std::unique_ptr<ClusterAgent> side(new ClusterAgent(io, config, std::move(hooks)));
  // The parser refuses whatever Validate would (cluster_lease.h); a refusal here
  // is a bug in that contract, still reported with the file's name.
  lease::AgentConfig ac = AgentConfigOf(cluster, config.self(), *epoch);
  ac.instance = RandomInstanceId();
  for (std::size_t t = 0; t < ac.targets.size() && t < side->hooks_.inherited.size(); ++t) {
    ac.targets[t].inherited_until = side->hooks_.inherited[t];
  }
  if (Status s = lease::LeaseAgent::Validate(ac); !s.ok()) {
    return Status{s.code(), cluster.file_name + ": " + s.message()};
  }
  side->agent_ = std::make_unique<lease::LeaseAgent>(ac, Clock::now());
  spdlog::info("broker {}: epoch {}, instance {:016x}, cluster file generation {}", config.id,
               *epoch, ac.instance, cluster.generation);
  return side;
}

void ClusterAgent::Apply(const lease::AgentStep& step) {
  for (std::size_t i = 0; i < step.targets.size(); ++i) {
    const lease::TargetCapacity& now = step.targets[i];
    if (i < capacities_.size() && capacities_[i].action_capacity != now.action_capacity) {
      spdlog::info("target {}: action capacity {} -> {} (floor {} + lease {}){}",
                   cfg_.targets[i].name, capacities_[i].action_capacity, now.action_capacity,
                   now.action_capacity - now.lease, now.lease,
                   now.shrunk ? ": shrink, held slots above it are asked back" : "");
    }
    hooks_.apply(i, now);
  }
  capacities_ = step.targets;
}

awaitable<void> ClusterAgent::Run(std::function<void(const lease::RenewRequest&)> send) {
  for (;;) {
    if (stopping_) co_return;
    const auto usage = hooks_.usage();
    lease::AgentStep step = agent_->Tick(Clock::now(), usage);
    Apply(step);
    if (step.send) send(*step.send);
    // Look at usage again soon even if nothing is due: the agent renews early
    // (at most every D/24) when demand or held changed, which moves capacity
    // between brokers faster. Tick is cheap when nothing changed.
    const auto poll = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         cfg_.cluster->term / 24);
    tick_timer_.expires_at(std::min<Clock::time_point>(step.deadline, poll));
    co_await tick_timer_.async_wait(use_nothrow);
  }
}

void ClusterAgent::Poke() { tick_timer_.cancel(); }

void ClusterAgent::Stop() {
  stopping_ = true;
  tick_timer_.cancel();
}

void ClusterAgent::OnRevokeNotice() {
  Apply(agent_->OnRevokeNotice(Clock::now(), lease::RevokeNotice{cfg_.id, agent_->epoch()}));
  Poke();
}

void ClusterAgent::DropLease() {
  Apply(agent_->DropLease(Clock::now()));
  Poke();
}

void ClusterAgent::OnGrant(const lease::Grant& grant, const std::string& ledger,
                           const std::string& ledger_id) {
  Apply(agent_->OnGrant(Clock::now(), grant));
  Poke();  // the new lease may end before the next planned tick
  if (grant.broker_id != cfg_.id || grant.epoch != agent_->epoch() ||
      grant.instance != agent_->instance()) {
    return;
  }
  // R1: every change of the ledger's word on this instance is logged; the
  // acceptance is kept in state_dir; a removed broker erases it before it
  // reports again.
  const lease::Verdict v = agent_->verdict();
  if (v != logged_verdict_ || agent_->verdict_reason() != logged_reason_) {
    const std::string why =
        agent_->verdict_reason().empty() ? "" : ": " + EscapeText(agent_->verdict_reason(), 1024);
    // Logged on each change; a ledger whose word flaps (every renew, up to
    // every D/24) is rate-limited per verdict.
    const std::string key = ledger + " " + lease::VerdictName(v);
    if (v == lease::Verdict::kAccepted || v == lease::Verdict::kPending) {
      LogLimited(spdlog::level::info, "coordinator's verdict", key,
                 "{}: this broker (epoch {}) is {}{}", ledger, agent_->epoch(),
                 lease::VerdictName(v), why);
    } else {
      LogLimited(spdlog::level::err, "coordinator's verdict", key,
                 "{} {} this broker{} -- it admits no action above floor 0 and no new "
                 "registration (registrations it has stay)",
                 ledger, lease::VerdictName(v), why);
    }
    logged_verdict_ = v;
    logged_reason_ = agent_->verdict_reason();
  }
  if (v == lease::Verdict::kAccepted && !acceptance_written_) {
    const config::ClusterBroker& self = cfg_.self();
    Status st = WriteAccepted(*cfg_.state_dir, cfg_.id,
                              {cfg_.cluster->generation, ledger_id, agent_->epoch(),
                               static_cast<std::uint32_t>(self.system_slots),
                               static_cast<std::uint32_t>(self.floor)});
    if (!st.ok()) spdlog::error("cannot record the acceptance: {}", st.message());
    acceptance_written_ = st.ok();
  }
  if (v == lease::Verdict::kRemoved && !erased_) {
    if (Status st = EraseAccepted(*cfg_.state_dir, cfg_.id); st.ok()) {
      erased_ = true;
      agent_->MarkErased();
      spdlog::error("broker {} is not in {}'s cluster file: its accepted configuration was "
                    "erased; it stays counted until it holds nothing",
                    cfg_.id, ledger);
    } else {
      spdlog::error("{}", st.message());
    }
  }
}

std::optional<lease::Goodbye> ClusterAgent::Freeze() {
  if (!agent_->accepted()) return std::nullopt;
  if (hooks_.freeze) hooks_.freeze();
  const auto usage = hooks_.usage();
  lease::Goodbye bye;
  bye.broker_id = cfg_.id;
  bye.epoch = agent_->epoch();
  bye.instance = agent_->instance();
  for (std::size_t i = 0; i < usage.size() && i < cfg_.targets.size(); ++i) {
    const std::uint32_t actions = std::max(usage[i].actions, usage[i].actions_upper_bound);
    const auto floor = static_cast<std::uint32_t>(cfg_.self().floor);
    bye.targets.push_back({cfg_.targets[i].name, actions > floor ? actions - floor : 0, actions,
                           usage[i].registered});
  }
  return bye;
}

std::optional<std::string> ClusterAgent::NotAcceptedReason(const std::string& ledger) const {
  if (agent_->accepted()) return std::nullopt;
  std::string why = agent_->verdict() == lease::Verdict::kPending
                        ? "broker " + cfg_.id + " is not yet accepted by " + ledger +
                              " (it learns for (D + H)(1 + eps) after a start)"
                        : ledger + " " + lease::VerdictName(agent_->verdict()) + " broker " +
                              cfg_.id;
  if (!agent_->verdict_reason().empty()) why += ": " + agent_->verdict_reason();
  return why;
}

json::object ClusterAgent::View() const {
  const auto now = Clock::now();
  json::array targets;
  for (std::size_t i = 0; i < cfg_.targets.size(); ++i) {
    const lease::TargetCapacity c = agent_->Capacity(i, now);
    targets.push_back(json::object{
        {"target", cfg_.targets[i].name},
        {"floor", cfg_.self().floor},
        {"system_slots", cfg_.self().system_slots},
        {"lease", c.lease},
        {"action_capacity", c.action_capacity},
        {"applied", std::to_string(c.applied)},
        {"lease_left_ms", c.lease_valid_until && *c.lease_valid_until > now
                              ? json::value(Ms(*c.lease_valid_until - now))
                              : json::value(nullptr)}});
  }
  return json::object{{"broker", cfg_.id},
                      {"epoch", std::to_string(agent_->epoch())},
                      {"instance", std::to_string(agent_->instance())},
                      {"generation", std::to_string(cfg_.cluster->generation)},
                      {"verdict", lease::VerdictName(agent_->verdict())},
                      {"verdict_reason", agent_->verdict_reason()},
                      {"targets", std::move(targets)}};
}

}  // namespace dsb::broker
