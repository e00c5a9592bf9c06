#include "broker/start_checks.h"

#include <fcntl.h>
#ifdef _WIN32
#include <io.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "common/local_frame.h"
#else
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#endif

#include <cerrno>
#include <cstring>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "broker/cluster_admin.h"
#include "broker/cluster_state.h"
#include "broker/limit_keeper.h"
#include "broker/secure_fs.h"
#include "broker/state_file.h"
#include "broker/wire/auth.h"

namespace dsb::broker {

Status CheckStartPaths(const config::BrokerConfig& config) {
#ifndef _WIN32
  // (Windows: broker.socket is a pipe name, \\.\pipe\..., in no folder; the
  // start refuses a name another process serves: LocalPipeAcceptor's
  // first-instance check.)
  if (Status st = CheckPrivateFolderOrCreatable(config.socket.parent_path(),
                                                "broker.socket's folder");
      !st.ok()) {
    return st;
  }
  struct stat st {};
  // A socket or a symbolic link there is replaced by the start (never
  // followed: SecureFiles.ALinkPlantedAtTheSocketPathIsReplacedNotFollowed);
  // anything else is the operator's and is not removed.
  if (::lstat(config.socket.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode) &&
      !S_ISLNK(st.st_mode)) {
    return {Errc::kConfig, "broker.socket " + config.socket.string() +
                               " exists and is not a socket: remove it or choose another path"};
  }
#endif
  if (config.state_dir) {
    if (Status s = CheckPrivateFolderOrCreatable(*config.state_dir, "broker.state_dir"); !s.ok()) {
      return s;
    }
  }
  if (config.log_file) {
    const std::filesystem::path& f = *config.log_file;
    // A folder named as the file is the likelier mistake: say that first.
    if (Status s = CheckWritableFileSlot(f, "broker.log_file"); !s.ok()) return s;
    if (Status s = CheckPrivateFolderOrCreatable(f.parent_path(), "broker.log_file's folder");
        !s.ok()) {
      return s;
    }
  }
  if (config.key_file) {
    auto key = wire::ClusterKey::LoadFile(*config.key_file);
    if (!key.ok()) return {Errc::kConfig, "broker.key_file: " + key.status().message()};
  }
  return Status::Ok();
}

Status CheckOperatorFiles(const std::filesystem::path& broker_file,
                          const config::BrokerConfig& config) {
  std::vector<std::filesystem::path> files{broker_file};
  if (config.cluster_file) files.push_back(*config.cluster_file);
  for (const std::filesystem::path& f : files) {
#ifdef _WIN32
    // A CRT descriptor over the file's HANDLE, what CheckOperatorFile reads.
    const int fd = ::_wopen(f.c_str(), _O_RDONLY | _O_BINARY | _O_NOINHERIT);
#else
    const int fd = ::open(f.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
#endif
    if (fd < 0) {
      return {Errc::kConfig, f.string() + ": cannot open: " + std::strerror(errno)};
    }
    Status st = CheckOperatorFile(fd, f, "config file", FileSecrecy::kConfig);
#ifdef _WIN32
    ::_close(fd);
#else
    ::close(fd);
#endif
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

namespace {

// Whether a broker answers on `socket` (connect succeeds): then the ports of
// its config are its own, not another program's.
#ifdef _WIN32
bool SocketAnswers(const std::filesystem::path& socket) {
  // The pipe; a broker whose every instance is busy counts as not answering
  // after a second (the probe must not hang a --check).
  Result<LocalHandle> h =
      ConnectLocal(socket.string(), std::chrono::steady_clock::now() + std::chrono::seconds(1));
  if (!h.ok()) return false;
  CloseLocal(*h);
  return true;
}

// The outcome of binding a TCP port once (TryBind).
struct BindOutcome {
  bool ok = false;
  bool in_use = false;         // EADDRINUSE / WSAEADDRINUSE
  bool not_available = false;  // EADDRNOTAVAIL / WSAEADDRNOTAVAIL
  std::string text;            // the OS's reason
};

// Binds (and closes at once) a TCP socket on address:port with Asio. No
// SO_REUSEADDR: on Windows it lets a bind take a port another socket holds.
BindOutcome BindOnce(const boost::asio::ip::address& address, std::uint16_t port) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io);
  const boost::asio::ip::tcp::endpoint at(address, port);
  boost::system::error_code ec;
  a.open(at.protocol(), ec);
  if (!ec) a.bind(at, ec);
  BindOutcome out;
  out.ok = !ec;
  out.in_use = ec == boost::asio::error::address_in_use;
  out.not_available = ec == std::errc::address_not_available;
  out.text = ec.message();
  return out;
}
#else
bool SocketAnswers(const std::filesystem::path& socket) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string p = socket.string();
  if (p.size() >= sizeof a.sun_path) {
    ::close(fd);
    return false;
  }
  std::memcpy(a.sun_path, p.c_str(), p.size() + 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}
#endif

// Binds (and closes at once) a TCP socket on `where`, as the start will.
// Success: Ok. Failure: the reason (errno text).
Status TryBind(const config::HostPort& where, const std::string& key,
               const config::BrokerConfig& config) {
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(where.host, ec);
  if (ec) {
    return {Errc::kConfig, key + " " + where.ToString() + ": '" + where.host +
                               "' is not an IP address; the broker binds an address, it does "
                               "not resolve names (write e.g. 127.0.0.1 or ::1)"};
  }
#ifdef _WIN32
  const BindOutcome b = BindOnce(address, where.port);
  if (b.ok) return Status::Ok();
  if (b.in_use && SocketAnswers(config.socket)) {
    return Status::Ok();  // the running broker of this config holds it
  }
  std::string why = b.text;
  if (b.in_use) {
    why += " (another program listens there and no broker answers on " +
           config.socket.string() + "); stop that program or choose another port";
  } else if (b.not_available) {
    why += " (the address is not one of this machine's)";
  }
  return {Errc::kConfig, key + " " + where.ToString() + ": cannot bind: " + why};
#else
  const bool v6 = address.is_v6();
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {Errc::kConfig, key + ": cannot make a socket: " + std::strerror(errno)};
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // as the start does
  int rc = 0;
  if (v6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(where.port);
    const auto bytes = address.to_v6().to_bytes();
    std::memcpy(&a.sin6_addr, bytes.data(), bytes.size());
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(where.port);
    a.sin_addr.s_addr = htonl(address.to_v4().to_uint());
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  const int err = errno;
  ::close(fd);
  if (rc == 0) return Status::Ok();
  if (err == EADDRINUSE && SocketAnswers(config.socket)) {
    return Status::Ok();  // the running broker of this config holds it
  }
  std::string why = std::strerror(err);
  if (err == EADDRINUSE) {
    why += " (another program listens there and no broker answers on " +
           config.socket.string() + "); stop that program or choose another port";
  } else if (err == EADDRNOTAVAIL) {
    why += " (the address is not one of this machine's)";
  }
  return {Errc::kConfig, key + " " + where.ToString() + ": cannot bind: " + why};
#endif
}

// broker.metrics: an IP address or "localhost" (http::Server::Listen does
// no name lookup) and, with `probe_ports`, its port free or this config's
// running broker's.
Status CheckMetricsAddress(const config::BrokerConfig& config, bool probe_ports) {
  if (!config.metrics) return Status::Ok();
  config::HostPort at = *config.metrics;
  if (at.host == "localhost") at.host = "127.0.0.1";  // as the server binds it
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(at.host, ec);
  if (ec) {
    return {Errc::kConfig, "broker.metrics " + config.metrics->ToString() +
                               ": the host must be an IP address or \"localhost\" ('" +
                               config.metrics->host +
                               "' is neither; the broker binds an address, it does not "
                               "resolve names: write e.g. 127.0.0.1 or ::1)"};
  }
  if (!probe_ports) return Status::Ok();
  return TryBind(at, "broker.metrics", config);
}

}  // namespace

Status CheckClusterStart(const config::BrokerConfig& config, bool probe_ports) {
  if (config.state_dir) {
    // The state file (<id>.state) is not checked here: a damaged one of our
    // own is no reason to refuse, the start assumes the worst (an unclean end
    // at full capacity, state_policy.cc) and rewrites it.
    // The operator's state: the limits (single mode, or the coordinator) and
    // the revoke/drain state (the coordinator). A damaged one refuses the
    // start, never falls back to the configured limit or to "all active"
    // (limit_keeper.h, cluster_admin.h), so --check refuses it too.
    const bool coordinator = config.cluster && config.cluster->ledger ==
                                                   config::LedgerKind::kEmbedded &&
                             config.cluster->coordinator == config.id;
    if (!config.cluster || coordinator) {
      if (Status s = CheckLimitsFile(*config.state_dir / (config.id + ".limits")); !s.ok()) {
        return {Errc::kConfig, "broker.state_dir: " + s.message()};
      }
    }
    if (coordinator) {
      if (Status s = CheckModesFile(*config.state_dir / (config.id + ".modes")); !s.ok()) {
        return {Errc::kConfig, "broker.state_dir: " + s.message()};
      }
    }
  }
  if (Status s = CheckMetricsAddress(config, probe_ports); !s.ok()) return s;
  if (!config.cluster) return Status::Ok();
  const config::ClusterConfig& cluster = *config.cluster;
  // The epoch counter and the coordinator's marks: a start refuses a
  // malformed one (it never guesses an epoch).
  for (const char* suffix : {".epoch", kSupersededMark, kGateMark}) {
    auto mark = ReadMark(*config.state_dir, config.id, suffix);
    if (!mark.ok()) return {Errc::kConfig, "broker.state_dir: " + mark.status().message()};
    if (std::string_view(suffix) == ".epoch" && mark->has_value() && **mark == UINT64_MAX) {
      return {Errc::kConfig, "broker.state_dir: the epoch counter of " + config.id +
                                 " is at its maximum; write 1 into it and restart the "
                                 "coordinator too"};
    }
  }
  // ledger = "etcd": no coordinator and no hello, so no cluster listener.
  if (!probe_ports || cluster.ledger == config::LedgerKind::kEtcd) return Status::Ok();
  const config::HostPort listen = config.listen ? *config.listen : config.self().address;
  const std::string key = config.listen && !(*config.listen == config.self().address)
                              ? std::string("broker.listen")
                              : cluster.file_name + ": address of broker \"" + config.id + "\"";
  return TryBind(listen, key, config);
}

Result<StartPlan> ValidateForStart(const std::filesystem::path& file, bool probe_ports) {
  auto config = config::LoadBrokerConfig(file);
  if (!config.ok()) return config.status();
#ifdef _WIN32
  // No limit_command on Windows yet (limit_command_win.cc): refused here, at
  // the start and by --check, rather than failing at every poll.
  for (const config::TargetConfig& t : config->targets) {
    if (!t.limit_command.empty()) {
      return Status(Errc::kConfig, file.string() + ": target " + t.name +
                                       ": limit_command is not supported on Windows in this "
                                       "build; remove it and set the target's limit");
    }
  }
#endif
  // The files it runs from: owned by root or the broker's user, writable by
  // nobody else.
  if (Status st = CheckOperatorFiles(file, *config); !st.ok()) return st;
  // max_clients fitted under the file limit (raised first where allowed).
  auto budget = FitFileLimit(*config, /*raise=*/true);
  if (!budget.ok()) return budget.status();
  // The folders and files the start would use, by the same rules.
  if (Status st = CheckStartPaths(*config); !st.ok()) {
    return Status(Errc::kConfig, file.string() + ": " + st.message());
  }
  if (Status st = CheckClusterStart(*config, probe_ports); !st.ok()) {
    return Status(Errc::kConfig, file.string() + ": " + st.message());
  }
  return StartPlan{std::move(config).value(), std::move(budget).value()};
}

}  // namespace dsb::broker
