// dsb-broker: flags, logging, wiring, run. Nothing else.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <spdlog/spdlog.h>

#include "broker/broker.h"
#include "broker/config/broker_config.h"
#include "broker/log_file.h"
#include "broker/start_checks.h"
#include "broker/file_limit.h"
#include "broker/service_notify.h"
#include "broker/wire/format.h"
#include "common/local_protocol.h"
#include "dsb/version.h"

int main(int argc, char** argv) {
  CLI::App app{"dsb-broker: the DigiScope session broker daemon"};
  std::string config_path;
  bool check_only = false;
  app.add_option("-c,--config", config_path, "broker config file (TOML)")->required();
  app.add_flag("--check", check_only, "validate the config and exit");
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

  auto config = dsb::config::LoadBrokerConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "dsb-broker: %s\n", config.status().message().c_str());
    return 2;
  }
  // max_clients fitted under the file limit (raised first where allowed):
  // --check says what the broker would do.
  auto budget = dsb::broker::FitFileLimit(*config, /*raise=*/true);
  if (!budget.ok()) {
    std::fprintf(stderr, "dsb-broker: %s\n", budget.status().message().c_str());
    return 2;
  }
  // The files it runs from: owned by root or the broker's user, writable by
  // nobody else (start_checks.h).
  if (dsb::Status st = dsb::broker::CheckOperatorFiles(config_path, *config); !st.ok()) {
    std::fprintf(stderr, "dsb-broker: %s\n", st.message().c_str());
    return 2;
  }
  if (check_only) {
    // The folders and files the start would use, by the same rules.
    if (dsb::Status st = dsb::broker::CheckStartPaths(*config); !st.ok()) {
      std::fprintf(stderr, "dsb-broker: %s: %s\n", config_path.c_str(), st.message().c_str());
      return 2;
    }
    if (!budget->note.empty()) std::printf("%s: %s\n", config_path.c_str(), budget->note.c_str());
    std::printf("%s: OK (broker %s, %zu target(s), %s mode)\n", config_path.c_str(),
                config->id.c_str(), config->targets.size(),
                config->cluster_mode() ? "cluster" : "single");
    return 0;
  }
  if (config->log_file) {
    // Opened without following a link, in a private folder (log_file.h).
    auto sink = dsb::broker::OpenLogFile(*config->log_file);
    if (!sink.ok()) {
      std::fprintf(stderr, "dsb-broker: %s\n", sink.status().message().c_str());
      return 2;
    }
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("dsb", *sink));
  }
  spdlog::set_level(static_cast<spdlog::level::level_enum>(static_cast<int>(config->log_level)));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [" + config->id + "] %v");
  spdlog::flush_on(spdlog::level::info);

  if (budget->lowered) {
    spdlog::warn("{}", budget->note);
  } else if (!budget->note.empty()) {
    spdlog::info("{}", budget->note);
  }
  const std::string ready_status = "serving " + std::to_string(config->targets.size()) +
                                   " target(s) on " + config->socket.string() + " (" +
                                   (config->cluster_mode() ? "cluster" : "single") + " mode)";
  auto broker = dsb::broker::Broker::Create(std::move(config).value());
  if (!broker.ok()) {
    spdlog::error("cannot start: {}", broker.status().message());
    std::fprintf(stderr, "dsb-broker: %s\n", broker.status().message().c_str());
    return 1;
  }
  // Create returned with the local socket bound and listening: a unit ordered
  // after ours may connect now (its requests are served once Run starts).
  dsb::broker::NotifyServiceReady(ready_status);
  return (*broker)->Run();
}
