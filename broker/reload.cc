#include "broker/reload.h"

#include <spdlog/spdlog.h>

#include "broker/broker_impl.h"
#include "broker/config/duration.h"
#include "broker/config/quote.h"
#include "broker/log_file.h"
#include "broker/start_checks.h"

namespace dsb::broker {
namespace {

std::string Text(const std::string& s) { return config::Quote(s); }
std::string Text(const std::filesystem::path& p) { return config::Quote(p.string(), 4096); }
std::string Text(int v) { return std::to_string(v); }
std::string Text(std::chrono::nanoseconds d) { return config::FormatDuration(d); }
std::string Text(config::LogLevel l) { return config::LogLevelName(l); }
std::string Text(const config::GroupRef& g) { return config::Quote(g.name); }
std::string Text(const config::HostPort& h) { return h.ToString(); }
template <typename T>
std::string Text(const std::optional<T>& v) {
  return v ? Text(*v) : std::string("none");
}

// Adds "key: old -> new" to `out` if the values differ.
template <typename T>
void Compare(const char* key, const T& was, const T& now, std::vector<std::string>& out) {
  if (!(was == now)) out.push_back(std::string(key) + ": " + Text(was) + " -> " + Text(now));
}

}  // namespace

std::string JoinList(const std::vector<std::string>& items) {
  std::string s;
  for (const std::string& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

ReloadDiff DiffForReload(const config::BrokerConfig& was, const config::BrokerConfig& now) {
  ReloadDiff d;
  Compare("log_level", was.log_level, now.log_level, d.applied);
  // A path change is applied by reopening only when both log to a file.
  if (was.log_file.has_value() == now.log_file.has_value()) {
    Compare("log_file", was.log_file, now.log_file, d.applied);
  } else {
    Compare("log_file", was.log_file, now.log_file, d.restart);
  }
  Compare("admin_group", was.admin_group, now.admin_group, d.applied);
  Compare("idle_timeout", was.idle_timeout, now.idle_timeout, d.applied);

  Compare("id", was.id, now.id, d.restart);
  Compare("socket", was.socket, now.socket, d.restart);
  Compare("shm_prefix", was.shm_prefix, now.shm_prefix, d.restart);
  Compare("segment_namespace", std::string(was.segment_global ? "global" : "local"),
          std::string(now.segment_global ? "global" : "local"), d.restart);
  Compare("group", was.group, now.group, d.restart);
  Compare("adopt_grace", was.adopt_grace, now.adopt_grace, d.restart);
  Compare("max_clients", was.max_clients, now.max_clients, d.restart);
  Compare("max_unregistered", was.max_unregistered, now.max_unregistered, d.restart);
  Compare("max_unregistered_per_uid", was.max_unregistered_per_uid,
          now.max_unregistered_per_uid, d.restart);
  Compare("metrics", was.metrics, now.metrics, d.restart);
  Compare("listen", was.listen, now.listen, d.restart);
  Compare("cluster", was.cluster_file, now.cluster_file, d.restart);
  Compare("key_file", was.key_file, now.key_file, d.restart);
  Compare("state_dir", was.state_dir, now.state_dir, d.restart);
  if (was.cluster.has_value() && now.cluster.has_value() &&
      was.cluster->hash != now.cluster->hash) {
    d.restart.push_back("the content of the cluster file " +
                        config::Quote(now.cluster->file_name));
  } else if (!was.cluster && !now.cluster && !(was.targets == now.targets)) {
    d.restart.push_back("targets");
  }
  return d;
}

void Broker::Impl::ArmReloadSignal() {
  control.OnReload([this](const std::string& what) {
    if (stopping) return;
    Reload(what);
    ArmReloadSignal();
  });
}

void Broker::Impl::Reload(const std::string& what) {
  spdlog::info("{}: reopening the log and reloading {}", what, config.file.string());
  auto plan = ValidateForStart(config.file, /*probe_ports=*/false);
  // The log first (logrotate renamed it): at the new path if the new file
  // changes it and is valid, else where it was.
  std::optional<std::filesystem::path> log_path = config.log_file;
  if (plan.ok() && plan->config.log_file && config.log_file) log_path = plan->config.log_file;
  bool log_moved = false;
  if (log_path) {
    if (Status st = ReopenLogFile(*spdlog::default_logger(), *log_path); !st.ok()) {
      spdlog::error("{}: cannot reopen the log file, still writing to the old one: {}", what,
                    st.message());
    } else {
      log_moved = log_path != config.log_file;
      spdlog::info("log file reopened: {}", log_path->string());
    }
  }
  if (!plan.ok()) {
    spdlog::error("reload of {} refused, nothing changed: {}", config.file.string(),
                  plan.status().message());
    return;
  }
  config::BrokerConfig& next = plan->config;
  ReloadDiff diff = DiffForReload(config, next);
  if (diff.empty()) {
    spdlog::info("reload of {}: no change", config.file.string());
    return;
  }
  if (!diff.applied.empty()) {
    if (log_moved) config.log_file = next.log_file;
    if (!log_moved && config.log_file && next.log_file && config.log_file != next.log_file) {
      // The reopen at the new path failed (logged above): not applied.
      std::erase_if(diff.applied,
                    [](const std::string& s) { return s.rfind("log_file:", 0) == 0; });
      diff.restart.push_back("log_file (could not be opened)");
    }
    config.admin_group = next.admin_group;
    config.idle_timeout = next.idle_timeout;
    if (!diff.applied.empty()) {
      spdlog::info("reload of {} applied: {}", config.file.string(), JoinList(diff.applied));
    }
    // The level last: the line above is written at the old level (a switch to
    // warn would hide it).
    if (next.log_level != config.log_level) {
      spdlog::set_level(static_cast<spdlog::level::level_enum>(static_cast<int>(next.log_level)));
    }
    config.log_level = next.log_level;
  }
  if (!diff.restart.empty()) {
    spdlog::warn("reload of {}: changed but NOT applied, needs a restart: {}",
                 config.file.string(), JoinList(diff.restart));
  }
}

}  // namespace dsb::broker
