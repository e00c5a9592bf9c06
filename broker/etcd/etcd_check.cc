#include "broker/etcd/etcd_check.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <optional>

namespace dsb::etcd {

namespace asio = boost::asio;

ClientOptions ClientOptionsFrom(const config::ClusterConfig& cluster) {
  ClientOptions o;
  o.endpoints = cluster.etcd_endpoints;
  if (cluster.etcd_tls) {
    o.tls = TlsFiles{cluster.etcd_tls->ca_file.string(), cluster.etcd_tls->cert_file.string(),
                     cluster.etcd_tls->key_file.string()};
  }
  o.call_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(cluster.etcd_timeout);
  return o;
}

namespace {

std::string Hex(std::uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

}  // namespace

Result<std::string> CheckEtcd(const config::ClusterConfig& cluster) {
  asio::io_context io;
  // Create checks the URLs and that the TLS files can be read (kConfig).
  auto made = EtcdClient::Create(io.get_executor(), ClientOptionsFrom(cluster));
  if (!made.ok())
    return Status(made.status().code(), cluster.file_name + ": " + made.status().message());
  EtcdClient& client = **made;
  std::string members;
  std::optional<Status> health;
  double read_ms = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (std::size_t i = 0; i < cluster.etcd_endpoints.size(); ++i) {
          auto st = co_await client.StatusOf(i);
          members += "\n  " + cluster.etcd_endpoints[i] + ": ";
          if (st.ok()) {
            members += "member " + Hex(st->member_id) + ", etcd " + st->version + ", " +
                       (st->leader == 0               ? std::string("knows no leader")
                        : st->leader == st->member_id ? std::string("the leader")
                                                      : "leader " + Hex(st->leader)) +
                       ", raft term " + std::to_string(st->raft_term);
          } else {
            // The client's message names the call and the endpoint; keep the reason.
            const std::string m = st.status().message();
            const std::string tag = cluster.etcd_endpoints[i] + ": ";
            const auto at = m.rfind(tag);
            members += at == std::string::npos ? m : m.substr(at + tag.size());
          }
        }
        const auto t0 = std::chrono::steady_clock::now();
        health = co_await client.CheckHealth();
        read_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                      .count();
      },
      asio::detached);
  io.run();
  if (!health || !health->ok()) {
    const Status s = health ? *health : Status(Errc::kInternal, "the health check did not run");
    return Status(s.code(), "etcd: not healthy (no linearizable read answered): " + s.message() +
                                "\netcd members:" + members);
  }
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.1f", read_ms);
  return "etcd: healthy: a linearizable read answered by " + client.current_endpoint() + " in " +
         ms + " ms (prefix " + cluster.etcd_prefix + ")\netcd members:" + members;
}

}  // namespace dsb::etcd
