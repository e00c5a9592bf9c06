// dsb-broker: flags, logging, wiring, run. Nothing else.
// On Windows also the service commands (windows_service.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>
#include <spdlog/spdlog.h>

#include "broker/broker.h"
#include "broker/config/broker_config.h"
#include "broker/config/effective_config.h"
#include "broker/etcd/etcd_check.h"
#include "broker/service/control.h"
#include "broker/file_limit.h"
#include "broker/log_file.h"
#include "broker/service/service_notify.h"
#include "broker/start_checks.h"
#include "broker/wire/format.h"
#include "common/local_protocol.h"
#include "dsb/version.h"
#ifdef _WIN32
#include "broker/service/windows_service.h"
#endif

namespace {

// Where a failure to start is told besides stderr: the Event Log in the
// Windows service mode (a service has no console); null otherwise.
using EventReport = std::function<void(bool error, const std::string& text)>;

void Fatal(const EventReport& report, const std::string& message) {
  std::fprintf(stderr, "dsb-broker: %s\n", message.c_str());
  if (report) report(true, "dsb-broker: " + message);
}

// Validates the config, sets up the log, starts the broker and serves until
// it is asked to stop. Returns the exit code: 0 after a clean stop (or a
// passed --check), 2 for a config or state-file error a restart cannot fix
// (the unit's RestartPreventExitStatus=2), 1 for a runtime failure.
int Serve(const std::string& config_path, bool check_only, const EventReport& report) {
  // One validation for the start and --check (start_checks.h), so a config
  // --check passes does not fail at start for something --check skipped.
  auto plan = dsb::broker::ValidateForStart(config_path, /*probe_ports=*/check_only);
  if (!plan.ok()) {
    Fatal(report, plan.status().message());
    return 2;
  }
  auto& config = plan->config;
  auto& budget = plan->budget;
  if (check_only) {
    // The effective config, a broker file again (feed it to --check).
    std::string header = config_path + ": OK (broker " + config.id + ", " +
                         std::to_string(config.targets.size()) + " target(s), " +
                         (config.cluster_mode() ? "cluster" : "single") + " mode)";
    if (!budget.note.empty()) header += "\n" + budget.note;
    // ledger = "etcd": --check asks etcd (the start itself waits for it).
    if (config.cluster && config.cluster->ledger == dsb::config::LedgerKind::kEtcd) {
      auto etcd = dsb::etcd::CheckEtcd(*config.cluster);
      if (!etcd.ok()) {
        Fatal(report, etcd.status().message());
        return etcd.status().code() == dsb::Errc::kConfig ? 2 : 1;
      }
      header += "\n" + *etcd;
    }
    header += "\nThe effective configuration, every default filled in:";
    std::fputs(dsb::config::EffectiveConfigToml(config, header).c_str(), stdout);
    return 0;
  }
  if (config.log_file) {
    // Opened without following a link, in a private folder (log_file.h).
    auto sink = dsb::broker::OpenLogFile(*config.log_file);
    if (!sink.ok()) {
      Fatal(report, sink.status().message());
      return 2;
    }
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("dsb", *sink));
  }
  spdlog::set_level(static_cast<spdlog::level::level_enum>(static_cast<int>(config.log_level)));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [" + config.id + "] %v");
  spdlog::flush_on(spdlog::level::info);

  if (budget.lowered) {
    spdlog::warn("{}", budget.note);
  } else if (!budget.note.empty()) {
    spdlog::info("{}", budget.note);
  }
  const std::string ready_status = "serving " + std::to_string(config.targets.size()) +
                                   " target(s) on " + config.socket.string() + " (" +
                                   (config.cluster_mode() ? "cluster" : "single") + " mode)";
  auto broker = dsb::broker::Broker::Create(std::move(config));
  if (!broker.ok()) {
    spdlog::error("cannot start: {}", broker.status().message());
    Fatal(report, broker.status().message());
    // 2: a config or state-file error a restart cannot fix (the unit's
    // RestartPreventExitStatus=2 stops systemd from looping on it); 1: a
    // runtime failure a later start may not meet.
    return broker.status().code() == dsb::Errc::kConfig ? 2 : 1;
  }
  // The signal_sets exist now: what was held back is theirs.
  dsb::broker::ReleaseHeldControlEvents();
  // Create returned with the local socket bound and listening: a unit ordered
  // after ours may connect now (its requests are served once Run starts).
  dsb::broker::NotifyServiceReady(ready_status);
  if (report) report(false, "dsb-broker " DSB_VERSION_STRING " started: " + ready_status);
  const int code = (*broker)->Run();
  broker->reset();  // the locks go with it
  // A console close or system shutdown waits for this before the system
  // ends the process (control.h).
  dsb::broker::NotifyStopped();
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // Stop and reload requests (SIGTERM, SIGHUP; Ctrl-C on Windows) are held
  // back until the broker's ControlEvents exist (Broker::Create): a
  // logrotate HUP in the first milliseconds after exec would otherwise end
  // the broker by the default action. Held, not lost (control.h).
  dsb::broker::HoldControlEvents();

  CLI::App app{"dsb-broker: the DigiScope session broker daemon"};
  std::string config_path;
  bool check_only = false;
  CLI::Option* config_opt =
      app.add_option("-c,--config", config_path, "broker config file (TOML)")->required();
  app.add_flag("--check", check_only, "validate the config and exit");
#ifdef _WIN32
  // The Windows service (windows_service.h); --config is then required for
  // all but --uninstall-service.
  config_opt->required(false);
  std::string service_name = dsb::broker::kDefaultServiceName;
  bool install = false;
  bool uninstall = false;
  bool as_service = false;
  app.add_flag("--install-service", install,
               "register the broker as a Windows service (auto start) running --config, and exit");
  app.add_flag("--uninstall-service", uninstall,
               "stop the Windows service if it runs, remove it, and exit");
  app.add_flag("--service", as_service, "run under the service control manager (set by the install)");
  app.add_option("--service-name", service_name, "the service's name")->capture_default_str();
#else
  (void)config_opt;
#endif
  // The local protocol versions it serves ("1", or "1-2"), and its wire version.
  std::string local_versions = std::to_string(dsb::kLocalProtocolVersion);
  if (dsb::kMinLocalProtocolVersion != dsb::kLocalProtocolVersion) {
    local_versions.insert(0, std::to_string(dsb::kMinLocalProtocolVersion) + "-");
  }
  app.set_version_flag("--version", std::string("dsb-broker ") + DSB_VERSION_STRING +
                                        " (local protocol " + local_versions +
                                        ", wire protocol " +
                                        std::to_string(dsb::wire::kVersion) + ")");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with 0; a usage error exits 2 (as a bad config does).
    return app.exit(e) == 0 ? 0 : 2;
  }

#ifdef _WIN32
  if (install + uninstall + as_service + check_only > 1) {
    std::fprintf(stderr, "dsb-broker: --install-service, --uninstall-service, --service and "
                         "--check exclude each other\n");
    return 2;
  }
  if (uninstall) {
    dsb::Status st = dsb::broker::UninstallService(service_name);
    if (!st.ok()) {
      std::fprintf(stderr, "dsb-broker: %s\n", st.message().c_str());
      return 1;
    }
    std::printf("service %s removed\n", service_name.c_str());
    return 0;
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "%s", "--config is required\nRun with --help for more information.\n");
    return 2;
  }
  if (install) {
    // The config is checked first: a service that cannot start is not installed.
    auto plan = dsb::broker::ValidateForStart(config_path, /*probe_ports=*/false);
    if (!plan.ok()) {
      std::fprintf(stderr, "dsb-broker: %s\n", plan.status().message().c_str());
      return 2;
    }
    auto notes = dsb::broker::InstallService(service_name, config_path);
    if (!notes.ok()) {
      std::fprintf(stderr, "dsb-broker: %s\n", notes.status().message().c_str());
      return notes.status().code() == dsb::Errc::kConfig ? 2 : 1;
    }
    for (const std::string& note : *notes) std::fprintf(stderr, "dsb-broker: %s\n", note.c_str());
    std::printf("service %s installed (auto start); start it with: sc start %s\n",
                service_name.c_str(), service_name.c_str());
    return 0;
  }
  if (as_service) {
    return dsb::broker::RunAsService(service_name, [&] {
      return Serve(config_path, false, [&](bool error, const std::string& text) {
        dsb::broker::ReportToEventLog(service_name, error, text);
      });
    });
  }
#endif
  return Serve(config_path, check_only, nullptr);
}
