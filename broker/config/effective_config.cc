#include "broker/config/effective_config.h"

#include <cstdio>
#include <sstream>

#include "broker/config/duration.h"

namespace dsb::config {
namespace {

std::string Dur(std::chrono::nanoseconds d) { return TomlString(FormatDuration(d)); }

void Comment(std::ostringstream& out, std::string_view text) {
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = text.find('\n', start);
    const std::string_view line =
        text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    out << "# " << line << '\n';
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
}

// The keys of one target; `prefix` is "" or "# " (the cluster file's targets
// are shown as comments: a broker file in cluster mode may not hold them).
void WriteTarget(std::ostringstream& out, const TargetConfig& t, const char* prefix) {
  out << prefix << "[[targets]]\n";
  out << prefix << "name = " << TomlString(t.name) << '\n';
  out << prefix << "limit = " << t.limit << '\n';
  out << prefix << "reserve = " << t.reserve << '\n';
  out << prefix << "slots = " << t.slots << '\n';
  out << prefix << "quarantine = " << Dur(t.quarantine) << '\n';
  out << prefix << "release_cooldown = " << Dur(t.release_cooldown) << '\n';
  out << prefix << "discover = " << (t.discover ? "true" : "false") << '\n';
  out << prefix << "limit_increase_after = " << Dur(t.limit_increase_after) << '\n';
  if (t.limit_command.empty()) {
    // limit_poll and limit_command_timeout are refused without a command.
    out << "# limit_command: none (limit_poll, limit_command_timeout apply only with one)\n";
  } else {
    out << prefix << "limit_command = " << TomlString(t.limit_command) << '\n';
    out << prefix << "limit_poll = " << Dur(t.limit_poll) << '\n';
    out << prefix << "limit_command_timeout = " << Dur(t.limit_command_timeout) << '\n';
  }
}

}  // namespace

std::string TomlString(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

std::string EffectiveConfigToml(const BrokerConfig& c, std::string_view header) {
  std::ostringstream out;
  if (!header.empty()) Comment(out, header);
  out << "[broker]\n";
  out << "id = " << TomlString(c.id) << '\n';
  out << "socket = " << TomlString(c.socket.string()) << '\n';
  out << "shm_prefix = " << TomlString(c.shm_prefix) << '\n';
#ifdef _WIN32
  // Windows only: Linux has one namespace (/dev/shm) and refuses "global".
  out << "segment_namespace = " << TomlString(c.segment_global ? "global" : "local") << '\n';
#endif
  if (c.group) {
    out << "group = " << TomlString(c.group->name) << "  # gid " << c.group->gid << '\n';
  } else {
    out << "# group: none (socket and segments for root and the broker's user only)\n";
  }
  if (c.admin_group) {
    out << "admin_group = " << TomlString(c.admin_group->name) << "  # gid "
        << c.admin_group->gid << '\n';
  } else {
    out << "# admin_group: none (only root and the broker's user may change limits)\n";
  }
  out << "log_level = " << TomlString(LogLevelName(c.log_level)) << '\n';
  if (c.log_file) {
    out << "log_file = " << TomlString(c.log_file->string()) << '\n';
  } else {
    out << "# log_file: none (the log goes to stderr)\n";
  }
  out << "adopt_grace = " << Dur(c.adopt_grace) << '\n';
  out << "max_clients = " << c.max_clients << '\n';
  out << "max_unregistered = " << c.max_unregistered << '\n';
  out << "max_unregistered_per_uid = " << c.max_unregistered_per_uid << '\n';
  out << "idle_timeout = " << Dur(c.idle_timeout) << '\n';
  if (c.metrics) {
    out << "metrics = " << TomlString(c.metrics->ToString()) << '\n';
  } else {
    out << "# metrics: none (no Prometheus endpoint)\n";
  }
  if (c.listen) {
    out << "listen = " << TomlString(c.listen->ToString());
    if (c.cluster && c.listen == c.self().address) {
      out << "  # this broker's address in the cluster file";
    }
    out << '\n';
  } else {
    out << "# listen: none (single-machine mode)\n";
  }
  if (c.cluster_file) out << "cluster = " << TomlString(c.cluster_file->string()) << '\n';
  if (c.key_file) {
    out << "key_file = " << TomlString(c.key_file->string())
        << "  # the key itself is not shown\n";
  }
  if (c.state_dir) {
    out << "state_dir = " << TomlString(c.state_dir->string()) << '\n';
  } else {
    out << "# state_dir: none (no state file; single-machine mode only)\n";
  }
  if (!c.cluster) {
    for (const TargetConfig& t : c.targets) {
      out << '\n';
      WriteTarget(out, t, "");
    }
    return out.str();
  }
  const ClusterConfig& k = *c.cluster;
  out << "\n# From the cluster file " << k.file_name << " (sha256 " << k.hash << "):\n";
  out << "# [cluster]\n";
  out << "# generation = " << k.generation << '\n';
  out << "# ledger = " << (k.ledger == LedgerKind::kEmbedded ? "\"embedded\"" : "\"etcd\"")
      << '\n';
  if (!k.coordinator.empty()) out << "# coordinator = " << TomlString(k.coordinator) << '\n';
  if (k.ledger == LedgerKind::kEtcd) {
    out << "# etcd_endpoints = [";
    for (std::size_t i = 0; i < k.etcd_endpoints.size(); ++i) {
      out << (i == 0 ? "" : ", ") << TomlString(k.etcd_endpoints[i]);
    }
    out << "]\n";
    out << "# etcd_prefix = " << TomlString(k.etcd_prefix) << '\n';
    out << "# etcd_timeout = " << Dur(k.etcd_timeout) << '\n';
    if (k.etcd_tls) {
      out << "# [etcd_tls] ca_file = " << TomlString(k.etcd_tls->ca_file.string())
          << ", cert_file = " << TomlString(k.etcd_tls->cert_file.string())
          << ", key_file = " << TomlString(k.etcd_tls->key_file.string()) << '\n';
    }
  }
  out << "# term = " << Dur(k.term) << '\n';
  out << "# drain = " << Dur(k.drain) << '\n';
  out << "# eps = " << k.eps << '\n';
  for (const ClusterBroker& b : k.brokers) {
    out << "# [[brokers]] id = " << TomlString(b.id)
        << ", address = " << TomlString(b.address.ToString())
        << ", system_slots = " << b.system_slots << ", floor = " << b.floor
        << ", weight = " << b.weight << (b.id == c.id ? "  (this broker)" : "") << '\n';
  }
  for (const TargetConfig& t : k.targets) {
    out << "#\n";
    WriteTarget(out, t, "# ");
  }
  return out.str();
}

}  // namespace dsb::config
