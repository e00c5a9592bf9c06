// broker.metrics: binds the HTTP endpoint (BindMetrics, broker/http/server.h)
// and serves /metrics, the Prometheus text exposition of the broker's state
// (broker/metrics/exposition.h); counts the lease events the metrics report
// (CountLeaseEvents). Every metric is listed in docs/metrics.md.
//
// The gauges are read at scrape time from what `dsbctl status` reads
// (StatusAsync: in cluster mode the effective limits come from the
// coordinator), so a scrape and a status taken together agree.
#include "broker/broker_impl.h"
#include "broker/metrics/exposition.h"
#include "broker/metrics/process.h"
#include "dsb/version.h"

namespace dsb::broker {
namespace {

double Num(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_number()) return 0;
  return v->to_number<double>();
}

std::string Str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

constexpr lease::LimitSource kSources[] = {lease::LimitSource::kConfig,
                                           lease::LimitSource::kDiscovered,
                                           lease::LimitSource::kOperator,
                                           lease::LimitSource::kQuery};

}  // namespace

Status Broker::Impl::BindMetrics() {
  if (!config.metrics) return Status::Ok();
  const config::HostPort& at = *config.metrics;
  auto server = http::Server::Listen(io, at.host, at.port, "broker.metrics");
  if (!server.ok()) return server.status();
  http = std::move(server).value();
  const auto bound = http->local_endpoint();
  if (!http::IsLoopbackHost(at.host)) {
    // Written in the config on purpose: served, but said. The endpoint has
    // no authentication: anyone who reaches it reads what the status page
    // shows, not only counts (docs/metrics.md).
    spdlog::warn("broker.metrics ({}) is not a loopback address: anyone who can reach it reads "
                 "the metrics and the status page (target names and counts, this broker's pid, "
                 "the segments' names, who changed a limit: operators' user names and pids, "
                 "reporting clients' names and pids; nothing can be changed); use 127.0.0.1 and a "
                 "local scraper, an SSH tunnel or a firewall rule if that is not wanted",
                 at.ToString());
  }
  spdlog::info("metrics on http://{}/metrics",
               config::HostPort{bound.address().to_string(), bound.port()}.ToString());
  http->RouteAsync("/metrics", [this](std::string) -> awaitable<http::Response> {
    // Awaited as a statement of its own: GCC 12 destroys temporaries twice
    // when a co_await sits inside a braced initializer with other temporaries.
    std::string body = co_await MetricsText();
    co_return http::Response{
        .status = 200, .content_type = std::string(metrics::kContentType), .body = std::move(body)};
  });
  return Status::Ok();
}

Broker::Impl::TargetMetrics& Broker::Impl::MetricsOf(std::size_t index) {
  if (target_metrics.size() < ordered.size()) target_metrics.resize(ordered.size());
  DSB_CHECK(index < target_metrics.size(), "metrics of target %zu of %zu", index,
            target_metrics.size());
  return target_metrics[index];
}

void Broker::Impl::CountLeaseEvents(std::size_t index, const lease::TargetCapacity& before,
                                    const lease::TargetCapacity& after, Clock::time_point now) {
  TargetMetrics& m = MetricsOf(index);
  if (after.applied != before.applied) ++m.lease_grants;
  // B1: the lease ran out on this broker's clock, and no newer grant (not
  // even one of 0) replaced it.
  const bool expired = before.lease > 0 && after.lease == 0 && after.applied == before.applied &&
                       before.lease_valid_until && now >= *before.lease_valid_until;
  if (!expired || !config.cluster) return;
  ++m.lease_expiries;
  // DESIGN "H is real time": what is still held above the floor H after the
  // lease ended breaks the assumption S rests on. Checked once, at the end
  // of the drain time (a newer grant before then makes the check moot).
  const Clock::time_point check_at =
      *before.lease_valid_until + std::chrono::duration_cast<Clock::duration>(config.cluster->drain);
  if (!m.drain_timer) m.drain_timer = std::make_unique<asio::steady_timer>(io);
  m.drain_timer->expires_at(check_at);
  const std::uint64_t applied = after.applied;
  m.drain_timer->async_wait([this, index, applied](boost::system::error_code ec) {
    if (ec || stopping || index >= lease_caps.size() || index >= ordered.size()) return;
    const lease::TargetCapacity& cap = lease_caps[index];
    if (cap.applied != applied || cap.lease > 0) return;  // a newer grant covers them
    const std::uint32_t floor = cap.action_capacity - cap.lease;
    const shm::Counts c = ordered[index]->Counts();
    if (c.held_action <= floor) return;
    const std::uint32_t past = c.held_action - floor;
    MetricsOf(index).held_past_drain += past;
    spdlog::warn("target {}: {} slot(s) above the floor ({}) still held {} ms after the lease "
                 "ended (drain H): S assumes they are given back by then; raise cluster drain "
                 "or make clients yield sooner (ShouldYield)",
                 ordered[index]->config().name, past, floor,
                 std::chrono::duration_cast<std::chrono::milliseconds>(config.cluster->drain)
                     .count());
  });
}

awaitable<std::string> Broker::Impl::MetricsText() {
  metrics::Exposition out;
  using metrics::Type;
  out.Family("dsb_build_info", Type::kGauge, "Always 1; the broker's version in label version.");
  out.Sample("dsb_build_info", {{"version", DSB_VERSION_STRING}}, 1);

  // What `dsbctl status --json` shows (in cluster mode the coordinator is
  // asked for the effective limits, as there).
  const json::object status = co_await StatusAsync();
  out.Family("dsb_limit", Type::kGauge,
             "The effective session limit L of the target (its source: dsbctl status).");
  out.Family("dsb_slots_capacity", Type::kGauge,
             "Slots this broker may hand out for the target now (its slot table's capacity).");
  out.Family("dsb_slots_held", Type::kGauge,
             "Slots held by this broker's clients (action and system slots).");
  out.Family("dsb_waiting_threads", Type::kGauge, "Client threads waiting for a slot.");
  out.Family("dsb_slots_quarantined", Type::kGauge,
             "Slots reclaimed from dead clients, unusable until their quarantine ends.");
  out.Family("dsb_slots_cooling", Type::kGauge,
             "Released slots in their release cooldown (the server may still count them).");
  out.Family("dsb_clients", Type::kGauge, "Clients registered for the target.");
  out.Family("dsb_refusals_reported_total", Type::kCounter,
             "Session-limit refusals reported by this broker's clients.");
  out.Family("dsb_slots_reclaimed_total", Type::kCounter,
             "Slots taken back from clients that died while holding them.");
  out.Family("dsb_limit_changes_total", Type::kCounter,
             "Changes of the effective limit kept by this broker, by the new limit's source.");
  const json::array& targets = status.at("targets").as_array();
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const json::object& t = targets[i].as_object();
    const std::string name = Str(t, "name");
    const metrics::Labels labels{{"target", name}};
    if (Str(t, "limit_source") != "unknown") out.Sample("dsb_limit", labels, Num(t, "limit"));
    out.Sample("dsb_slots_capacity", labels, Num(t, "capacity"));
    out.Sample("dsb_slots_held", labels, Num(t, "held"));
    out.Sample("dsb_waiting_threads", labels, Num(t, "waiting"));
    out.Sample("dsb_slots_quarantined", labels, Num(t, "quarantined"));
    out.Sample("dsb_slots_cooling", labels, Num(t, "cooling"));
    out.Sample("dsb_clients", labels, Num(t, "clients"));
    out.Sample("dsb_refusals_reported_total", labels, Num(t, "session_limit_reports"));
    out.Sample("dsb_slots_reclaimed_total", labels, Num(t, "slots_reclaimed"));
    // Single mode: this broker's limit keeper. (In a cluster the coordinator
    // keeps the limits: below, on the coordinator only.)
    auto it = this->targets.find(name);
    if (limits && it != this->targets.end()) {
      const std::size_t index = IndexOf(*it->second);
      for (lease::LimitSource s : kSources) {
        out.Sample("dsb_limit_changes_total",
                   {{"target", name}, {"source", lease::LimitSourceName(s)}},
                   static_cast<double>(limits->changes(index, s)));
      }
    }
  }

  // Cluster mode: the coordinator's keeper decides every broker's limits; its
  // counts are exported by the coordinator alone (another broker's would
  // double them in a sum over brokers), labelled as in single mode.
  if (const LimitKeeper* keeper = cluster && !limits ? cluster->CoordinatorLimits() : nullptr) {
    const auto& cluster_targets = config.cluster->targets;
    for (std::size_t t = 0; t < cluster_targets.size(); ++t) {
      for (lease::LimitSource s : kSources) {
        out.Sample("dsb_limit_changes_total",
                   {{"target", cluster_targets[t].name}, {"source", lease::LimitSourceName(s)}},
                   static_cast<double>(keeper->changes(t, s)));
      }
    }
  }

  if (cluster) {
    out.Family("dsb_lease_slots", Type::kGauge,
               "Pool slots of this broker's valid lease (0 once it ran out).");
    out.Family("dsb_lease_grants_total", Type::kCounter,
               "Grants this broker applied (B1a), refusals of a grant not counted.");
    out.Family("dsb_lease_expiries_total", Type::kCounter,
               "Leases of this broker that ran out before a newer grant arrived (B1).");
    out.Family("dsb_slots_held_past_drain_total", Type::kCounter,
               "Slots above the floor still held when the drain time H after a lease ran out "
               "ended (DESIGN: H is real time; each is logged).");
    for (std::size_t i = 0; i < ordered.size(); ++i) {
      const metrics::Labels labels{{"target", ordered[i]->config().name}};
      const TargetMetrics& m = MetricsOf(i);
      out.Sample("dsb_lease_slots", labels,
                 i < lease_caps.size() ? static_cast<double>(lease_caps[i].lease) : 0.0);
      out.Sample("dsb_lease_grants_total", labels, static_cast<double>(m.lease_grants));
      out.Sample("dsb_lease_expiries_total", labels, static_cast<double>(m.lease_expiries));
      out.Sample("dsb_slots_held_past_drain_total", labels,
                 static_cast<double>(m.held_past_drain));
    }
  }

  // The coordinator's ledger (C1), per target and broker: only the
  // coordinator exports it, so a sum over the cluster counts each once.
  if (cluster && config.cluster && config.cluster->coordinator == config.id) {
    out.Family("dsb_ledger_pool", Type::kGauge,
               "The coordinator's pool P of the target: L - r - sum(system_slots + floor).");
    out.Family("dsb_ledger_owed", Type::kGauge, "What the coordinator counts a broker as owed (C1).");
    out.Family("dsb_ledger_granted", Type::kGauge, "The coordinator's current grant to a broker.");
    out.Family("dsb_ledger_reported_held", Type::kGauge,
               "Slots a broker held in its newest report to the coordinator.");
    out.Family("dsb_ledger_reported_waiting", Type::kGauge,
               "Threads a broker had waiting in its newest report to the coordinator.");
    const json::object leases = co_await cluster->Leases();
    const json::value* ledger = leases.if_contains("ledger");
    const json::value* lts = ledger != nullptr && ledger->is_object()
                                 ? ledger->as_object().if_contains("targets")
                                 : nullptr;
    if (lts != nullptr && lts->is_array()) {
      for (const json::value& tv : lts->as_array()) {
        if (!tv.is_object()) continue;
        const json::object& t = tv.as_object();
        const std::string target = Str(t, "target");
        out.Sample("dsb_ledger_pool", {{"target", target}}, Num(t, "pool"));
        const json::value* bs = t.if_contains("brokers");
        if (bs == nullptr || !bs->is_array()) continue;
        for (const json::value& bv : bs->as_array()) {
          if (!bv.is_object()) continue;
          const json::object& b = bv.as_object();
          const metrics::Labels labels{{"target", target}, {"broker", Str(b, "broker")}};
          out.Sample("dsb_ledger_owed", labels, Num(b, "owed"));
          out.Sample("dsb_ledger_granted", labels, Num(b, "granted"));
          out.Sample("dsb_ledger_reported_held", labels, Num(b, "held"));
          out.Sample("dsb_ledger_reported_waiting", labels, Num(b, "waiting"));
        }
      }
    }
  }

  metrics::AddProcessMetrics(out);
  co_return out.Text();
}

}  // namespace dsb::broker
