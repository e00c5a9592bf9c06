#include "broker/config/broker_config.h"

#include <algorithm>

#ifndef _WIN32
#include <grp.h>
#include <unistd.h>
#endif

#include <cerrno>
#include <cstring>
#include <system_error>

#include "broker/config/paths.h"
#include "broker/config/quote.h"
#include "broker/config/toml_reader.h"
#include "common/check.h"

namespace dsb::config {
namespace {

using internal::ErrorSink;
using internal::Need;
using internal::TableReader;
using std::chrono::nanoseconds;

// sizeof(sockaddr_un::sun_path) on Linux is 108, including the terminating NUL.
constexpr std::size_t kMaxSocketPathBytes = 107;
#ifdef _WIN32
// CreateNamedPipe: "\\.\pipe\" and the name, at most 256 characters.
constexpr std::size_t kMaxPipeNameChars = 256;
#endif

struct LogLevelEntry {
  LogLevel level;
  const char* name;
};
constexpr LogLevelEntry kLogLevels[] = {{LogLevel::kTrace, "trace"},
                                        {LogLevel::kDebug, "debug"},
                                        {LogLevel::kInfo, "info"},
                                        {LogLevel::kWarn, "warn"},
                                        {LogLevel::kError, "error"}};

// Resolves a group name. Success: the gid (Windows: the group's SID string).
// Failure: the reason, for the message. `key` names the setting in the
// message ("broker.group").
Result<GroupId> LookupGroup(const std::string& name, const char* key) {
#ifdef _WIN32
  if (std::optional<GroupId> sid = dsb::LookupGroup(name)) return *sid;
  return Status(Errc::kConfig, "group " + Quote(name) +
                                   " does not exist on this machine or its domain; create it "
                                   "(net localgroup " + name + " /add) or remove " + key);
#else
  long hint = sysconf(_SC_GETGR_R_SIZE_MAX);
  std::size_t size = hint > 0 ? static_cast<std::size_t>(hint) : 16384;
  for (;;) {
    std::string buffer(size, '\0');
    group entry{};
    group* found = nullptr;
    const int rc = getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && size < (std::size_t{1} << 24)) {
      size *= 2;
      continue;
    }
    if (rc != 0) {
      return Status(Errc::kConfig,
                    "cannot look up group " + Quote(name) + ": " + std::strerror(rc));
    }
    if (found == nullptr) {
      return Status(Errc::kConfig,
                    "group " + Quote(name) + " does not exist; create it (groupadd " + name +
                        ") or remove " + key);
    }
    return static_cast<GroupId>(found->gr_gid);
  }
#endif
}

void ReadBrokerTable(TableReader& b, const std::filesystem::path& base, BrokerConfig& config) {
  config.id = b.Name("id", Need::kRequired, "._-", 64).value_or("");
#ifdef _WIN32
  // A named pipe, not a path: \\.\pipe\dsb-<id> unless given (paths.h).
  if (std::optional<std::string> socket = b.String("socket", Need::kOptional)) {
    // ASCII only: the name travels as a std::filesystem::path, which MinGW
    // converts through the ANSI code page, and clients name it in UTF-8.
    const bool ascii = std::all_of(socket->begin(), socket->end(),
                                   [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (!IsNamedPipePath(*socket) || socket->size() > kMaxPipeNameChars || !ascii) {
      b.Fail("socket", "must be a named pipe \\\\.\\pipe\\<name> of at most " +
                           std::to_string(kMaxPipeNameChars) + " ASCII characters, got " +
                           Quote(*socket));
    } else {
      config.socket = std::filesystem::path(*socket);
    }
  } else if (!config.id.empty()) {
    config.socket = DefaultLocalEndpoint(config.id);
  }
#else
  if (std::optional<std::string> socket = b.String("socket", Need::kRequired)) {
    if (!std::filesystem::path(*socket).is_absolute()) {
      b.Fail("socket", "must be an absolute path, got " + Quote(*socket));
    } else if (socket->size() > kMaxSocketPathBytes) {
      b.Fail("socket", "is " + std::to_string(socket->size()) +
                           " bytes long but a Unix socket path holds at most " +
                           std::to_string(kMaxSocketPathBytes) +
                           " bytes (sun_path); choose a shorter path");
    } else {
      config.socket = std::filesystem::path(*socket).lexically_normal();
    }
  }
#endif
  config.shm_prefix = b.Name("shm_prefix", Need::kRequired, "_-", 32).value_or("");
  if (std::optional<std::string> ns = b.String("segment_namespace", Need::kOptional)) {
#ifdef _WIN32
    if (*ns == "global" || *ns == "local") {
      config.segment_global = *ns == "global";
    } else {
      b.Fail("segment_namespace", "must be \"global\" or \"local\", got " + Quote(*ns));
    }
#else
    // Linux segments live in /dev/shm: there is no Global\\ namespace.
    if (*ns == "local") {
      config.segment_global = false;
    } else {
      b.Fail("segment_namespace",
             "must be \"local\" on Linux (\"global\" is a Windows kernel object "
             "namespace), got " + Quote(*ns));
    }
#endif
  }
  if (std::optional<std::string> group = b.String("group", Need::kOptional)) {
    Result<GroupId> gid = LookupGroup(*group, "broker.group");
    if (gid.ok()) {
      config.group = GroupRef{*group, *gid};
    } else {
      b.Fail("group", gid.status().message());
    }
  }
  if (std::optional<std::string> group = b.String("admin_group", Need::kOptional)) {
    Result<GroupId> gid = LookupGroup(*group, "broker.admin_group");
    if (gid.ok()) {
      config.admin_group = GroupRef{*group, *gid};
    } else {
      b.Fail("admin_group", gid.status().message());
    }
  }
  if (b.Has("allowed_uids")) {
    // Removed (issue 9): socket and segments are 0660 for the broker's uid and
    // broker.group, so a uid listed here could never open them.
    b.Fail("allowed_uids",
           "is no longer supported: the socket and the segments are mode 0660 (owner and "
           "broker.group), so a uid listed here could never open them; add the user to the "
           "group named by broker.group instead (a supplementary group is enough) and remove "
           "allowed_uids");
  }
  if (std::optional<std::string> level = b.String("log_level", Need::kOptional)) {
    bool known = false;
    for (const LogLevelEntry& entry : kLogLevels) {
      if (*level == entry.name) {
        config.log_level = entry.level;
        known = true;
      }
    }
    if (!known) {
      b.Fail("log_level", "must be one of trace, debug, info, warn, error, got " + Quote(*level));
    }
  }
  config.log_file = b.Path("log_file", Need::kOptional, base);
  config.adopt_grace =
      b.Duration("adopt_grace", Need::kOptional, nanoseconds(0), std::chrono::hours(1))
          .value_or(config.adopt_grace);
  config.max_clients =
      static_cast<int>(b.Int("max_clients", Need::kOptional, 1, 65535).value_or(1024));
  config.max_unregistered = static_cast<int>(
      b.Int("max_unregistered", Need::kOptional, 1, 4096).value_or(config.max_unregistered));
  config.max_unregistered_per_uid =
      static_cast<int>(b.Int("max_unregistered_per_uid", Need::kOptional, 1, 4096)
                           .value_or(config.max_unregistered_per_uid));
  if (config.max_unregistered_per_uid > config.max_unregistered && b.sink().ok()) {
    b.Fail("max_unregistered_per_uid",
           "is " + std::to_string(config.max_unregistered_per_uid) +
               " but may not exceed broker.max_unregistered (" +
               std::to_string(config.max_unregistered) + ")");
  }
  config.idle_timeout = b.Duration("idle_timeout", Need::kOptional, std::chrono::milliseconds(100),
                                   std::chrono::hours(1))
                            .value_or(config.idle_timeout);
  config.metrics = b.Address("metrics", Need::kOptional, 0);
  config.listen = b.Address("listen", Need::kOptional, 0);
  config.cluster_file = b.Path("cluster", Need::kOptional, base);
  config.key_file = b.Path("key_file", Need::kOptional, base);
  if (config.cluster_file && !config.key_file && b.sink().ok()) {
    b.Fail("key_file",
           "required when broker.cluster is set (the pre-shared key that "
           "authenticates brokers to each other)");
  }
  config.state_dir = b.Path("state_dir", Need::kOptional, base);
}

// Cluster mode: loads the cluster file and takes the targets from it.
void JoinCluster(TableReader& top, BrokerConfig& config) {
  const std::string cluster_name = Printable(config.cluster_file->string());
  if (top.Has("targets")) {
    top.Fail("targets", "not allowed in cluster mode: targets come from the cluster file " +
                            cluster_name + "; remove [[targets]] from this file");
    return;
  }
  // A file that cannot be read is reported under the key that names it; an
  // error inside it names the cluster file and its own key.
  Result<std::string> text = internal::ReadConfigFile(*config.cluster_file);
  if (!text.ok()) {
    top.Fail("broker.cluster", text.status().message());
    return;
  }
  Result<ClusterConfig> cluster = ParseClusterConfig(*text, config.cluster_file->string());
  if (!cluster.ok()) {
    top.sink().Adopt(cluster.status());
    return;
  }
  const ClusterBroker* self = cluster->FindBroker(config.id);
  if (self == nullptr) {
    top.Fail("broker.id", Quote(config.id) + " is not listed in the cluster file " + cluster_name +
                              " (brokers there: " + cluster->BrokerIds() + ")");
    return;
  }
  if (!config.state_dir) {
    top.Fail("broker.state_dir",
             "is required in cluster mode: it keeps this broker's epoch counter (a restart must "
             "never reuse an epoch, whatever the wall clock does) and its acceptance by the "
             "coordinator; e.g. state_dir = \"/var/lib/dsb\"");
    return;
  }
  if (!config.listen) config.listen = self->address;
  config.targets = cluster->targets;
  config.cluster = std::move(cluster).value();
}

}  // namespace

const char* LogLevelName(LogLevel level) {
  for (const LogLevelEntry& entry : kLogLevels) {
    if (entry.level == level) return entry.name;
  }
  return "info";
}

const ClusterBroker& BrokerConfig::self() const {
  DSB_CHECK(cluster.has_value(), "BrokerConfig::self() outside cluster mode");
  const ClusterBroker* entry = cluster->FindBroker(id);
  DSB_CHECK(entry != nullptr, "broker id %s not in its cluster file", id.c_str());
  return *entry;
}

const TargetConfig* BrokerConfig::FindTarget(std::string_view name) const {
  for (const TargetConfig& t : targets) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string BrokerConfig::SegmentName(std::string_view target_name) const {
  return "/dsb-" + shm_prefix + "-" + std::string(target_name);
}

Result<BrokerConfig> ParseBrokerConfig(std::string_view text, std::string_view file_name,
                                       const std::filesystem::path& base_dir) {
  ErrorSink sink{file_name};
  std::error_code ec;
  const std::filesystem::path base = base_dir.empty() ? std::filesystem::current_path(ec)
                                                      : std::filesystem::absolute(base_dir, ec);
  if (ec) {
    return Status(Errc::kConfig, Printable(file_name) + ": cannot resolve the folder " +
                                     Quote(base_dir.string()) + ": " + ec.message());
  }
  std::optional<toml::table> root = internal::ParseToml(text, sink);
  if (!root) return sink.status();

  // Cluster settings put in the broker file by mistake get a pointer to the right place.
  for (std::string_view cluster_key : {"cluster", "brokers"}) {
    if (root->contains(cluster_key)) {
      sink.Add(cluster_key,
               "belongs in the cluster file, not the broker file; name the cluster "
               "file with broker.cluster = \"cluster.toml\"");
    }
  }
  BrokerConfig config;
  TableReader top(*root, "", {"broker", "targets"}, sink);
  if (const toml::table* table = top.Table("broker", Need::kRequired)) {
    TableReader b(
        *table, "broker",
        {"id", "socket", "shm_prefix", "segment_namespace", "group", "admin_group", "allowed_uids",
         "log_level", "log_file", "adopt_grace", "max_clients", "max_unregistered", "max_unregistered_per_uid",
         "idle_timeout", "metrics", "listen", "cluster", "key_file", "state_dir"},
        sink);
    ReadBrokerTable(b, base.lexically_normal(), config);
  }
  if (!sink.ok()) return sink.status();

  if (config.cluster_file) {
    JoinCluster(top, config);
  } else {
    config.targets = internal::ReadTargets(top);
  }
  if (!sink.ok()) return sink.status();
  return config;
}

Result<BrokerConfig> LoadBrokerConfig(const std::filesystem::path& file) {
  Result<std::string> text = internal::ReadConfigFile(file);
  if (!text.ok()) return text.status();
  std::error_code ec;
  const std::filesystem::path absolute = std::filesystem::absolute(file, ec);
  if (ec) {
    return Status(Errc::kConfig,
                  Printable(file.string()) + ": cannot resolve its folder: " + ec.message());
  }
  Result<BrokerConfig> config = ParseBrokerConfig(*text, file.string(), absolute.parent_path());
  if (config.ok()) config->file = absolute.lexically_normal();
  return config;
}

}  // namespace dsb::config
