// EtcdClient: a small etcd v3 client over the JSON gateway (/v3/...), on
// Boost.Beast HTTP/1.1 with keep-alive connections, plain or TLS (OpenSSL;
// the Windows build has no OpenSSL and refuses https endpoints with kConfig).
//
// Only what the shared ledger needs (broker/lease/shared_ledger.h): a prefix
// range at one revision, a compare-and-swap transaction, leases (grant,
// keepalive, time to live, revoke), the member list / status for health, and
// a watch of a prefix (its own connection, a chunked stream).
//
// etcd facts this code relies on (../shared/REAL-PARTS.md, etcd section):
// keys and values are base64 in JSON; every 64-bit number is a JSON string;
// default values are omitted (a failed txn has no "succeeded"; a keepalive on
// a dead lease answers 200 without "TTL"); errors are {"error", "message",
// "code"} with an HTTP status; the minimum lease TTL is 2 s.
//
// Endpoints and failover: calls go to the endpoint that last answered; on a
// connection failure or an HTTP 5xx the next endpoint is tried, each at most
// once per call, all within the call's deadline. After a call timed out on an
// endpoint (a member that takes calls and never answers), the next call starts
// at the following endpoint.
//
// Outcomes (the difference matters for safety):
//   ok                         the call took effect (for Txn: see succeeded)
//   kTimeout                   no answer within the deadline. For a write
//                              (Txn, Put, LeaseGrant, KeepAlive) the outcome
//                              is UNKNOWN: it may still commit later. Callers
//                              re-read; they never assume it failed.
//   kBrokerUnavailable         no endpoint could be reached (connection
//                              refused or reset before the request was sent:
//                              the write did not happen), or etcd answered
//                              that it has no leader / no quorum (5xx).
//   kProtocol                  an answer that does not parse as etcd's JSON
//                              (message names the call and the endpoint)
//   kAuthFailed                TLS handshake or certificate check failed
//   kConflict                  etcd refused the request (4xx) with its message
//                              (e.g. "etcdserver: requested lease not found")
//
// Thread rule: one client per io_context strand; calls may overlap (each
// takes a pooled connection); not thread-safe across threads.
#ifndef DSB_BROKER_ETCD_ETCD_CLIENT_H_
#define DSB_BROKER_ETCD_ETCD_CLIENT_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace dsb::etcd {

struct TlsFiles {
  std::string ca_file;    // PEM CA bundle that signs the members' certificates
  std::string cert_file;  // client certificate (PEM), for etcd's --client-cert-auth
  std::string key_file;   // its private key (PEM)
};

struct ClientOptions {
  std::vector<std::string> endpoints;            // "http://host:port" or "https://host:port"
  std::optional<TlsFiles> tls;                   // required for https endpoints
  std::chrono::milliseconds call_timeout{2000};  // default deadline of one call
};

struct KeyValue {
  std::string key;  // raw bytes (decoded)
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;  // 0: no lease
};

struct RangeResult {
  std::int64_t revision = 0;  // the store revision the read was served at
  // The etcd cluster that answered (header.cluster_id): another id means
  // another (e.g. rebuilt or restored) store.
  std::uint64_t cluster_id = 0;
  std::vector<KeyValue> kvs;
};

// A transaction guard: compares one key's field with a value.
struct Compare {
  enum class Field { kModRevision, kCreateRevision, kVersion, kLease, kValue };
  std::string key;
  Field field = Field::kModRevision;
  std::int64_t number = 0;  // for all fields but kValue (== only)
  std::string value;        // for kValue
};

struct Op {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;
  std::int64_t lease = 0;  // kPut: attach to this lease (0: none)
};

struct TxnResult {
  bool succeeded = false;     // every compare held and the success ops ran
  std::int64_t revision = 0;  // the store revision after the txn
  std::uint64_t cluster_id = 0;  // as RangeResult::cluster_id
};

struct LeaseGrantResult {
  std::int64_t id = 0;
  std::int64_t ttl_s = 0;
};

// One member's view (/v3/maintenance/status). Member ids exceed int64.
struct MemberStatus {
  std::uint64_t member_id = 0;
  std::uint64_t leader = 0;  // 0: this member knows no leader
  std::uint64_t raft_term = 0;
  std::string version;  // etcd's version, e.g. "3.4.23"
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;
};

class EtcdClient {
 public:
  // Checks the options (non-empty endpoints, each a http(s)://host:port URL;
  // TLS files readable when an https endpoint is given; https refused on a
  // build without TLS). Failure: kConfig naming the endpoint or file.
  static Result<std::unique_ptr<EtcdClient>> Create(boost::asio::any_io_executor executor,
                                                    ClientOptions options);
  ~EtcdClient();

  // Every key starting with `prefix`, at one revision (serializable = false:
  // a linearizable read through the leader).
  boost::asio::awaitable<Result<RangeResult>> RangePrefix(std::string prefix);
  // One key (kvs empty when absent).
  boost::asio::awaitable<Result<RangeResult>> Get(std::string key);
  // if all `compares` hold: `success` ops, else `failure` ops.
  boost::asio::awaitable<Result<TxnResult>> Txn(std::vector<Compare> compares,
                                                std::vector<Op> success,
                                                std::vector<Op> failure = {});
  boost::asio::awaitable<Result<LeaseGrantResult>> LeaseGrant(std::int64_t ttl_s);
  // Remaining TTL after the keepalive; nullopt when etcd no longer knows the
  // lease (it expired or was revoked).
  boost::asio::awaitable<Result<std::optional<std::int64_t>>> KeepAlive(std::int64_t lease_id);
  // Remaining TTL in seconds; nullopt when the lease is gone.
  boost::asio::awaitable<Result<std::optional<std::int64_t>>> TimeToLive(std::int64_t lease_id);
  boost::asio::awaitable<Status> LeaseRevoke(std::int64_t lease_id);
  // Health of the cluster as a client sees it: a linearizable read of one key
  // answered within the deadline (a member without quorum cannot). Failure:
  // as the outcomes above, the message naming the endpoints tried.
  boost::asio::awaitable<Status> CheckHealth();

  // Compacts etcd's history below `revision` (physical = false: returns once
  // the compaction is scheduled). Keys and their current values stay; reads
  // at an older revision and watches starting before it are refused from then
  // on ("compacted": a watch returns kConflict naming the compacted revision).
  // Success also when the store was already compacted at or past `revision`
  // (a retried call, or another broker first). Failure: kConflict for a
  // future revision (etcd's message), else as the outcomes above.
  boost::asio::awaitable<Status> Compact(std::int64_t revision);

  // Asks the one endpoint options.endpoints[endpoint_index] for its status
  // (no failover: for health checks, tests and `dsbctl status`). A member
  // without quorum still answers (leader 0 or stale). REQUIRES: index < the
  // number of endpoints. Failure: as the outcomes above.
  boost::asio::awaitable<Result<MemberStatus>> StatusOf(std::size_t endpoint_index);

  // Watches every key under `prefix` from revision `start_revision` (0: now)
  // on a connection of its own until `on_event` returns false, the stream
  // ends or fails (returned), or Cancel(). Events arrive in revision order.
  boost::asio::awaitable<Status> Watch(std::string prefix, std::int64_t start_revision,
                                       std::function<bool(const WatchEvent&)> on_event);
  // Ends every call in flight (they return kCancelled) and closes connections.
  void Cancel();

  // The endpoint that answered last (for logs and `dsbctl status`).
  std::string current_endpoint() const;

  struct Impl;

 private:
  explicit EtcdClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsb::etcd

#endif  // DSB_BROKER_ETCD_ETCD_CLIENT_H_
