// EtcdCluster: real etcd members (Debian's etcd 3.4, /usr/bin/etcd) for a
// test, on loopback ports it reserved, with data in a temporary folder on
// tmpfs (/dev/shm when writable) and --unsafe-no-fsync.
//
// Start(1) is one member, Start(3) an HA cluster (each member's peer URL on
// loopback too). With tls, the cluster's client URLs are https with
// --client-cert-auth; the harness makes the certificates with the openssl
// CLI into its folder: a CA, a server certificate with only IP SAN 127.0.0.1
// (so "localhost" fails the host check), and a client certificate (ClientTls()). Peer traffic
// stays plain http (loopback).
//
// Every process it starts is ended by its PID (SIGKILL via Process) in
// Stop() or the destructor, which also removes the folder (when the test
// failed its logs and certificates are kept, the members' data dirs not;
// everything with DSB_KEEP_SCRATCH set). Ports stay
// reserved for the object's life, so Restart(i) finds its ports free.
//
// Skipping: DSB_SKIP_WITHOUT_ETCD() at the top of a test prints
// "SKIPPED: no /usr/bin/etcd" and skips when the binary is missing
// (tools/run installs etcd-server); nothing else skips.
//
// Thread rule: one test thread drives it (the members die with the thread
// that started them: start from the test's main thread).
#ifndef DSB_TESTS_SUPPORT_ETCD_CLUSTER_H_
#define DSB_TESTS_SUPPORT_ETCD_CLUSTER_H_

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "broker/etcd/etcd_client.h"
#include "tests/support/ports.h"
#include "tests/support/process.h"

namespace dsb::testing {

inline constexpr const char* kEtcdBinary = "/usr/bin/etcd";

#define DSB_SKIP_WITHOUT_ETCD()                                     \
  do {                                                              \
    if (!::dsb::testing::EtcdCluster::Available()) {                \
      std::printf("SKIPPED: no %s\n", ::dsb::testing::kEtcdBinary); \
      GTEST_SKIP() << "no " << ::dsb::testing::kEtcdBinary;         \
    }                                                               \
  } while (0)

struct EtcdClusterOptions {
  int members = 1;   // 1 or 3
  bool tls = false;  // https client URLs with client certificates
  // How long Start and Restart wait for a healthy cluster (a linearizable
  // read through every endpoint). 3 members need an election (~1-2 s).
  std::chrono::milliseconds start_timeout{30000};
  // More etcd flags for every member, e.g. {"--auto-compaction-mode=revision",
  // "--auto-compaction-retention=1000"} for a long run.
  std::vector<std::string> extra_args;
};

class EtcdCluster {
 public:
  EtcdCluster() = default;
  ~EtcdCluster();  // Stop()
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // True when the etcd binary exists and is executable.
  static bool Available();

  // Makes the folder (and certificates), starts every member and waits until
  // a linearizable read answers through each endpoint. False, with error()
  // saying why (and the member logs' tails), on any failure; what started
  // is stopped again.
  bool Start(const EtcdClusterOptions& options);
  bool Start(int members = 1, bool tls = false) {
    EtcdClusterOptions o;
    o.members = members;
    o.tls = tls;
    return Start(o);
  }
  const std::string& error() const { return error_; }

  int size() const { return static_cast<int>(members_.size()); }
  // Every member's client URL ("http://127.0.0.1:P" or "https://...").
  std::vector<std::string> Endpoints() const;
  std::string Endpoint(int i) const;
  // Client options for these endpoints (TLS files when tls), call timeout
  // `timeout`.
  etcd::ClientOptions Client(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) const;
  // The client's certificate files (tls only).
  etcd::TlsFiles ClientTls() const;
  // The harness folder (certificates, data dirs, logs).
  const std::string& dir() const { return dir_; }

  // SIGKILL member i by its PID and reap it. Its data stays.
  void Kill(int i);
  // SIGSTOP / SIGCONT member i by its PID: a member that accepts
  // connections (the kernel does) but answers nothing, as in a long pause.
  void Pause(int i);
  void Resume(int i);
  bool alive(int i);
  // Starts member i again on its data dir and ports (--initial-cluster-state
  // existing) and waits until it answers /health-like status. False with
  // error() on failure.
  bool Restart(int i);
  // The member that reports itself leader (asked through each alive member's
  // status), -1 when none does within `timeout`.
  int Leader(std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));
  // Waits until a linearizable read answers through every alive member.
  bool WaitHealthy(std::chrono::milliseconds timeout);

  // Makes a second, unrelated CA with a client certificate it signed, in the
  // folder (for "refused with another CA" tests). Returns its files; empty
  // ca_file on failure (error() says why).
  etcd::TlsFiles MakeOtherCa();

  // The tail of member i's log (stdout and stderr).
  std::string LogTail(int i, std::size_t bytes = 3000) const;

  // Ends every member it started (SIGKILL by PID) and removes the folder.
  void Stop();

 private:
  struct Member {
    std::string name;
    PortReservation client_port;
    PortReservation peer_port;
    std::string data_dir;
    std::string log;
    std::unique_ptr<Process> process;
  };
  bool Spawn(int i, bool existing);
  bool MakeCerts();
  std::string InitialCluster() const;

  EtcdClusterOptions options_;
  std::string dir_;
  std::vector<Member> members_;
  std::string error_;
};

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_ETCD_CLUSTER_H_
