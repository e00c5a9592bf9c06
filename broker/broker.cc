// The daemon's entry points (broker.h): Create() opens (startup.cc), Run()
// arms the timers and serves until Shutdown() (shutdown.cc), Stop() asks for
// it. The rest of Broker::Impl (broker_impl.h) lives by concern in
// startup.cc, state_policy.cc, capacity.cc, listen.cc, shutdown.cc,
// local_server.cc, clients.cc and admin.cc.
#include "broker/broker_impl.h"

namespace dsb::broker {

Broker::Broker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Broker::~Broker() = default;

Result<std::unique_ptr<Broker>> Broker::Create(config::BrokerConfig config) {
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  if (Status s = impl->Open(); !s.ok()) {
    impl->UndoFailedOpen();
    return s;
  }
  return std::unique_ptr<Broker>(new Broker(std::move(impl)));
}

int Broker::Run() {
  Impl& b = *impl_;
  b.control.OnStop([&b](const std::string& what) {
    spdlog::info("{} received", what);  // "signal 15 received"
    b.Shutdown();
  });
  if (b.in_grace) {
    b.grace_timer.expires_after(
        std::chrono::duration_cast<Clock::duration>(b.config.adopt_grace));
    b.grace_timer.async_wait([&b](boost::system::error_code ec) {
      if (!ec) b.EndGrace();
    });
  }
  b.ArmReloadSignal();
  b.SaveOwnerRecords();  // before the first client: only the adopted segments' records
  b.ArmQuarantineTimer();
  b.ArmAuditTimer();
  b.ArmLogFlushTimer();
  if (b.http) b.http->Start();
  // The status page and its sampler (docs/status-page.md) on the same endpoint.
  if (b.http) b.status_page = StatusPage::Start(b, *b.http);
  // A limit_command answers before the first client is served, so no client
  // sees the configured ceiling when the server's cap is lower.
  if (b.limits) {
    b.limits->Start([&b] { if (!b.stopping) b.StartAccept(); });
  } else {
    b.StartAccept();
  }
  spdlog::info("broker {} ready on {} ({} mode, {} target(s))", b.config.id,
               b.config.socket.string(), b.config.cluster_mode() ? "cluster" : "single",
               b.targets.size());
  b.io.run();
  return b.exit_code;
}

void Broker::Stop() {
  asio::post(impl_->io, [this] { impl_->Shutdown(); });
}

}  // namespace dsb::broker
