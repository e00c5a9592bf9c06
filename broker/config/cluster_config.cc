#include "broker/config/cluster_config.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>
#include <map>
#include <span>

#include "broker/config/quote.h"
#include "broker/crypto/crypto.h"
#include "broker/config/toml_reader.h"
#include "common/check.h"
#include "common/hex.h"

namespace dsb::config {
namespace {

using internal::ErrorSink;
using internal::Need;
using internal::TableReader;
using std::chrono::nanoseconds;

// Brokers named one by one in the "sum over brokers" message; the rest are summarised.
constexpr std::size_t kMaxBrokersInMessage = 16;

std::string FormatDouble(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", value);
  return buf;
}

std::string LowerCase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

Status BadAddress(std::string_view text, std::string_view why) {
  return Status(Errc::kConfig,
                "must be \"host:port\" (e.g. \"127.0.0.1:7401\" or \"[::1]:7401\"): " +
                    std::string(why) + ", got " + Quote(text));
}

std::vector<ClusterBroker> ReadBrokers(TableReader& root) {
  ErrorSink& sink = root.sink();
  const toml::array* array = root.TableArray("brokers", Need::kRequired);
  if (array == nullptr) return {};
  std::vector<ClusterBroker> brokers;
  std::map<std::string, std::size_t, std::less<>> index_of_id;
  std::map<std::string, std::size_t, std::less<>> index_of_address;
  for (std::size_t i = 0; i < array->size(); ++i) {
    TableReader r(*array->get(i)->as_table(), "brokers[" + std::to_string(i) + "]",
                  {"id", "address", "system_slots", "floor", "weight"}, sink);
    ClusterBroker b;
    b.id = r.Name("id", Need::kRequired, "._-", 64).value_or("");
    b.address = r.Address("address", Need::kRequired, 1).value_or(HostPort{});
    b.system_slots = static_cast<int>(r.Int("system_slots", Need::kOptional, 1, 65535).value_or(1));
    b.floor = static_cast<int>(r.Int("floor", Need::kOptional, 0, 65535).value_or(0));
    b.weight = r.Number("weight", Need::kOptional).value_or(1.0);
    // The coordinator's ledger keeps weights as integers 1..65535 in hundredths
    // (cluster_lease.h): refuse what it would clamp rather than change it silently.
    if (!(b.weight >= kMinWeight && b.weight <= kMaxWeight)) {
      r.Fail("weight", "must be between " + FormatDouble(kMinWeight) + " and " +
                           FormatDouble(kMaxWeight) + " (kept to two decimals), got " +
                           FormatDouble(b.weight));
    }
    if (auto [it, inserted] = index_of_id.emplace(b.id, i); !inserted) {
      r.Fail("id", "duplicate broker id " + Quote(b.id) + " (also brokers[" +
                       std::to_string(it->second) + "])");
    }
    const std::string address_key = LowerCase(b.address.ToString());
    if (auto [it, inserted] = index_of_address.emplace(address_key, i); !inserted) {
      r.Fail("address", "address " + Quote(b.address.ToString()) + " is also used by brokers[" +
                            std::to_string(it->second) + "] " + Quote(brokers[it->second].id));
    }
    if (!sink.ok()) return {};
    brokers.push_back(std::move(b));
  }
  return brokers;
}

// [etcd_tls]: present exactly when an etcd endpoint is https.
void ReadEtcdTls(TableReader& top, ClusterConfig& config) {
  const bool https = std::any_of(config.etcd_endpoints.begin(), config.etcd_endpoints.end(),
                                 [](const std::string& u) { return u.starts_with("https://"); });
  const toml::table* table = top.Table("etcd_tls", Need::kOptional);
  if (table == nullptr) {
    if (https) {
      top.Fail("etcd_tls",
               "required with an https etcd endpoint: add [etcd_tls] with ca_file, "
               "cert_file and key_file");
    }
    return;
  }
  if (config.ledger != LedgerKind::kEtcd || !https) {
    top.Fail("etcd_tls",
             "only used with https etcd endpoints (ledger = \"etcd\"); remove it "
             "or use https");
    return;
  }
  TableReader t(*table, "etcd_tls", {"ca_file", "cert_file", "key_file"}, top.sink());
  EtcdTlsConfig tls;
  for (auto [key, field] :
       {std::pair{"ca_file", &tls.ca_file}, std::pair{"cert_file", &tls.cert_file},
        std::pair{"key_file", &tls.key_file}}) {
    std::optional<std::filesystem::path> p = t.Path(key, Need::kRequired, {});
    if (!p) continue;
    if (!p->is_absolute()) {
      t.Fail(key, "must be an absolute path (the same file serves every workstation), got " +
                      Quote(p->string()));
      continue;
    }
    *field = std::move(*p);
  }
  config.etcd_tls = std::move(tls);
}

// [cluster]: everything but the brokers and targets.
void ReadClusterTable(TableReader& c, ClusterConfig& config) {
  config.generation = static_cast<std::uint64_t>(
      c.Int("generation", Need::kOptional, 1, std::int64_t{1} << 53).value_or(1));
  const std::string ledger = c.String("ledger", Need::kOptional).value_or("embedded");
  if (ledger == "embedded") {
    config.ledger = LedgerKind::kEmbedded;
    config.coordinator = c.String("coordinator", Need::kRequired).value_or("");
    for (const char* key : {"etcd_endpoints", "etcd_prefix", "etcd_timeout"}) {
      if (c.Has(key)) c.Fail(key, "only used with ledger = \"etcd\"; remove it or set ledger");
    }
  } else if (ledger == "etcd") {
    config.ledger = LedgerKind::kEtcd;
    if (c.Has("coordinator")) {
      c.Fail("coordinator", "not used with ledger = \"etcd\" (etcd holds the ledger); remove it");
    }
    config.etcd_endpoints =
        c.StringArray("etcd_endpoints", Need::kRequired).value_or(std::vector<std::string>{});
    if (c.sink().ok() && config.etcd_endpoints.empty()) {
      c.Fail("etcd_endpoints", "at least one endpoint is required with ledger = \"etcd\"");
    }
    for (std::size_t i = 0; i < config.etcd_endpoints.size(); ++i) {
      const std::string& url = config.etcd_endpoints[i];
      const std::size_t scheme = url.starts_with("http://")    ? 7
                                 : url.starts_with("https://") ? 8
                                                               : 0;
      std::string why;
      if (scheme == 0) {
        why = "no http:// or https://";
      } else {
        std::string_view rest = std::string_view(url).substr(scheme);
        if (rest.ends_with("/")) rest.remove_suffix(1);
        if (rest.find('/') != std::string_view::npos) {
          why = "a path is not allowed";
        } else if (Result<HostPort> hp = ParseHostPort(rest, 1); !hp.ok()) {
          why = hp.status().message();
        }
      }
      if (!why.empty()) {
        c.Fail("etcd_endpoints[" + std::to_string(i) + "]",
               "must be a URL such as \"http://127.0.0.1:2379\", got " + Quote(url) + " (" + why +
                   ")");
      }
    }
    config.etcd_prefix = c.String("etcd_prefix", Need::kOptional).value_or(config.etcd_prefix);
    const std::string& prefix = config.etcd_prefix;
    if (prefix.size() < 2 || prefix.front() != '/' || prefix.back() != '/' ||
        std::any_of(prefix.begin(), prefix.end(), [](char ch) {
          return static_cast<unsigned char>(ch) <= ' ' || ch == '\x7f';
        })) {
      c.Fail("etcd_prefix",
             "must start and end with '/', have a name between them and no "
             "spaces (e.g. \"/dsb/site1/\"), got " +
                 Quote(prefix));
    }
    config.etcd_timeout = c.Duration("etcd_timeout", Need::kOptional,
                                     std::chrono::milliseconds(100), std::chrono::seconds(60))
                              .value_or(config.etcd_timeout);
  } else {
    c.Fail("ledger", "must be \"embedded\" or \"etcd\", got " + Quote(ledger));
  }
  config.term =
      c.Duration("term", Need::kOptional, std::chrono::milliseconds(100), std::chrono::hours(1))
          .value_or(config.term);
  // H > 0: the ledger (lease::Ledger::Validate) refuses a zero drain.
  config.drain =
      c.Duration("drain", Need::kOptional, std::chrono::milliseconds(1), std::chrono::hours(24))
          .value_or(config.drain);
  config.eps = c.Number("eps", Need::kOptional).value_or(config.eps);
  if (!(config.eps >= 0 && config.eps < 0.1)) {
    c.Fail("eps", "must be at least 0 and less than 0.1, got " + FormatDouble(config.eps));
  }
}

// Invariant 2: every target can give each broker its system slots and floor.
void CheckSums(const ClusterConfig& config, ErrorSink& sink) {
  std::string detail;
  for (std::size_t i = 0; i < config.brokers.size(); ++i) {
    const ClusterBroker& b = config.brokers[i];
    if (i == kMaxBrokersInMessage) {
      detail += ", and " + std::to_string(config.brokers.size() - i) + " more";
      break;
    }
    if (i > 0) detail += ", ";
    detail += b.id + " " + std::to_string(b.system_slots) + "+" + std::to_string(b.floor);
  }
  const int sum = config.SumSystemAndFloor();
  for (std::size_t i = 0; i < config.targets.size(); ++i) {
    const TargetConfig& t = config.targets[i];
    const int available = t.limit - t.reserve;
    if (sum > available) {
      sink.Add("targets[" + std::to_string(i) + "] " + Quote(t.name),
               "sum over brokers of system_slots + floor is " + std::to_string(sum) + " (" +
                   detail + ") but limit - reserve is " + std::to_string(t.limit) + " - " +
                   std::to_string(t.reserve) + " = " + std::to_string(available));
      return;
    }
  }
}

}  // namespace

std::string HostPort::ToString() const {
  const bool bracket = host.find(':') != std::string::npos;
  return (bracket ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Result<HostPort> ParseHostPort(std::string_view text, std::uint16_t min_port) {
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) return BadAddress(text, "missing ']'");
    host = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return BadAddress(text, "missing ':port' after ']'");
    }
    port = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return BadAddress(text, "missing ':port'");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return BadAddress(text, "an IPv6 address must be in brackets");
    }
  }
  if (host.empty()) return BadAddress(text, "empty host");
  for (char c : host) {
    if (c <= ' ' || c >= '\x7f' || c == '/' || c == '[' || c == ']' || c == '@') {
      return BadAddress(text, "the host contains " + Quote(std::string_view(&c, 1)));
    }
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return BadAddress(text, "the port must be a number");
  }
  const int number = std::stoi(std::string(port));
  if (number < min_port || number > 65535) {
    return BadAddress(text, "the port must be between " + std::to_string(min_port) + " and 65535");
  }
  return HostPort{std::string(host), static_cast<std::uint16_t>(number)};
}

const ClusterBroker* ClusterConfig::FindBroker(std::string_view id) const {
  for (const ClusterBroker& b : brokers) {
    if (b.id == id) return &b;
  }
  return nullptr;
}

const TargetConfig* ClusterConfig::FindTarget(std::string_view name) const {
  for (const TargetConfig& t : targets) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

int ClusterConfig::SumSystemAndFloor() const {
  // Each broker adds at most 2 * 65535: int64 cannot overflow for any file that fits in
  // memory. The result is clamped; for a validated config it is at most 65535.
  std::int64_t sum = 0;
  for (const ClusterBroker& b : brokers) sum += b.system_slots + b.floor;
  return static_cast<int>(std::min<std::int64_t>(sum, std::numeric_limits<int>::max()));
}

int ClusterConfig::Pool(const TargetConfig& target) const {
  return target.limit - target.reserve - SumSystemAndFloor();
}

std::string ClusterConfig::BrokerIds() const {
  std::string out;
  for (const ClusterBroker& b : brokers) {
    if (!out.empty()) out += ", ";
    out += b.id;
  }
  return out;
}

std::string Sha256Hex(std::string_view bytes) {
  return HexEncode(crypto::Sha256(crypto::AsBytes(bytes)));
}

Result<ClusterConfig> ParseClusterConfig(std::string_view text, std::string_view file_name) {
  ErrorSink sink{file_name};
  std::optional<toml::table> root = internal::ParseToml(text, sink);
  if (!root) return sink.status();

  if (root->contains("broker")) {
    sink.Add("broker", "belongs in a broker file, not the cluster file");
  }
  ClusterConfig config;
  config.file_name = std::string(file_name);
  config.hash = Sha256Hex(text);
  TableReader top(*root, "", {"cluster", "brokers", "targets", "etcd_tls"}, sink);
  if (const toml::table* table = top.Table("cluster", Need::kRequired)) {
    TableReader c(*table, "cluster",
                  {"generation", "ledger", "coordinator", "etcd_endpoints", "etcd_prefix",
                   "etcd_timeout", "term", "drain", "eps"},
                  sink);
    ReadClusterTable(c, config);
  }
  ReadEtcdTls(top, config);
  config.brokers = ReadBrokers(top);
  config.targets = internal::ReadTargets(top);
  if (!sink.ok()) return sink.status();
  if (config.ledger == LedgerKind::kEtcd && config.targets.size() > kMaxEtcdTargets) {
    sink.Add("targets", "at most " + std::to_string(kMaxEtcdTargets) +
                            " targets with ledger = \"etcd\", got " +
                            std::to_string(config.targets.size()) +
                            ": a renew or limit change writes every target's key in one etcd "
                            "transaction, and etcd allows 128 operations per transaction; split "
                            "the targets over two deployments (two cluster files with their own "
                            "etcd_prefix)");
  }

  if (config.ledger == LedgerKind::kEmbedded && config.FindBroker(config.coordinator) == nullptr) {
    sink.Add("cluster.coordinator",
             Quote(config.coordinator) + " is not one of the brokers (" + config.BrokerIds() + ")");
  }
  CheckSums(config, sink);
  if (!sink.ok()) return sink.status();
  return config;
}

Result<ClusterConfig> LoadClusterConfig(const std::filesystem::path& file) {
  Result<std::string> text = internal::ReadConfigFile(file);
  if (!text.ok()) return text.status();
  return ParseClusterConfig(*text, file.string());
}

}  // namespace dsb::config
