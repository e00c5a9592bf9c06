// dsb-broker: flags, logging, wiring, run. Nothing else.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include "broker/broker.h"
#include "broker/config/broker_config.h"

int main(int argc, char** argv) {
  CLI::App app{"dsb-broker: the DigiScope session broker daemon"};
  std::string config_path;
  bool check_only = false;
  app.add_option("-c,--config", config_path, "broker config file (TOML)")->required();
  app.add_flag("--check", check_only, "validate the config and exit");
  CLI11_PARSE(app, argc, argv);

  auto config = dsb::config::LoadBrokerConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "dsb-broker: %s\n", config.status().message().c_str());
    return 2;
  }
  if (check_only) {
    std::printf("%s: OK (broker %s, %zu target(s), %s mode)\n", config_path.c_str(),
                config->id.c_str(), config->targets.size(),
                config->cluster_mode() ? "cluster" : "single");
    return 0;
  }
  if (config->log_file) {
    try {
      spdlog::set_default_logger(spdlog::basic_logger_mt("dsb", config->log_file->string()));
    } catch (const spdlog::spdlog_ex& e) {
      std::fprintf(stderr, "dsb-broker: cannot open log_file %s: %s\n",
                   config->log_file->c_str(), e.what());
      return 2;
    }
  }
  spdlog::set_level(static_cast<spdlog::level::level_enum>(static_cast<int>(config->log_level)));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [" + config->id + "] %v");
  spdlog::flush_on(spdlog::level::info);

  auto broker = dsb::broker::Broker::Create(std::move(config).value());
  if (!broker.ok()) {
    spdlog::error("cannot start: {}", broker.status().message());
    std::fprintf(stderr, "dsb-broker: %s\n", broker.status().message().c_str());
    return 1;
  }
  return (*broker)->Run();
}
