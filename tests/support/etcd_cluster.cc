#include "tests/support/etcd_cluster.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <sstream>

#include "tests/support/wait.h"

namespace dsb::testing {

namespace asio = boost::asio;

namespace {

// Runs one client call to its end on a private io_context.
template <typename T>
std::optional<T> RunSync(const etcd::ClientOptions& options,
                         std::function<asio::awaitable<T>(etcd::EtcdClient&)> call) {
  asio::io_context io;
  auto client = etcd::EtcdClient::Create(io.get_executor(), options);
  if (!client.ok()) return std::nullopt;
  std::optional<T> out;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { out.emplace(co_await call(**client)); }, asio::detached);
  io.run();
  return out;
}

// A folder on tmpfs when /dev/shm is writable (etcd's data and WAL), else
// the temp folder.
std::string MakeDir() {
  std::vector<std::string> bases;
  if (::access("/dev/shm", W_OK) == 0) bases.push_back("/dev/shm");
  std::error_code ec;
  const auto tmp = std::filesystem::temp_directory_path(ec);
  bases.push_back(ec ? "/tmp" : tmp.string());
  for (const auto& base : bases) {
    std::string tmpl = base + "/dsb-etcd-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) return tmpl;
  }
  return {};
}

bool Openssl(const std::vector<std::string>& args, const std::string& dir, std::string* error) {
  std::vector<std::string> argv{"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions so;
  so.env.push_back("RANDFILE=" + dir + "/.rnd");
  const Outcome o = RunProgram(argv, std::chrono::seconds(30), so);
  if (o.exit_code == 0) return true;
  std::string cmd;
  for (const auto& a : argv) cmd += a + " ";
  *error = "openssl failed (" + std::to_string(o.exit_code) + "): " + cmd + "\n" + o.output;
  return false;
}

bool WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  return static_cast<bool>(out);
}

// A CA (ca.crt/ca.key) and certificates it signs, all P-256 keys.
bool MakeCa(const std::string& dir, const std::string& stem, std::string* error) {
  return Openssl(
      {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", dir + "/" + stem + ".key", "-out", dir + "/" + stem + ".crt", "-days", "2",
       "-subj", "/CN=" + stem, "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
       "keyUsage=critical,keyCertSign,cRLSign"},
      dir, error);
}

bool MakeSigned(const std::string& dir, const std::string& ca, const std::string& stem,
                const std::string& cn, const std::string& extensions, std::string* error) {
  const std::string ext = dir + "/" + stem + ".ext";
  if (!WriteText(ext, extensions)) {
    *error = "cannot write " + ext;
    return false;
  }
  return Openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", dir + "/" + stem + ".key", "-out", dir + "/" + stem + ".csr", "-subj",
                  "/CN=" + cn},
                 dir, error) &&
         Openssl({"x509", "-req", "-in", dir + "/" + stem + ".csr", "-CA", dir + "/" + ca + ".crt",
                  "-CAkey", dir + "/" + ca + ".key", "-CAcreateserial", "-out",
                  dir + "/" + stem + ".crt", "-days", "2", "-extfile", ext},
                 dir, error);
}

}  // namespace

EtcdCluster::~EtcdCluster() { Stop(); }

bool EtcdCluster::Available() { return ::access(kEtcdBinary, X_OK) == 0; }

bool EtcdCluster::MakeCerts() {
  return MakeCa(dir_, "ca", &error_) &&
         MakeSigned(dir_, "ca", "server", "etcd",
                    "subjectAltName=IP:127.0.0.1\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n",
                    &error_) &&
         MakeSigned(dir_, "ca", "client", "dsb-broker", "extendedKeyUsage=clientAuth\n", &error_);
}

etcd::TlsFiles EtcdCluster::MakeOtherCa() {
  if (MakeCa(dir_, "other-ca", &error_) &&
      MakeSigned(dir_, "other-ca", "other-client", "dsb-broker", "extendedKeyUsage=clientAuth\n",
                 &error_)) {
    return {dir_ + "/other-ca.crt", dir_ + "/other-client.crt", dir_ + "/other-client.key"};
  }
  return {};
}

etcd::TlsFiles EtcdCluster::ClientTls() const {
  return {dir_ + "/ca.crt", dir_ + "/client.crt", dir_ + "/client.key"};
}

std::string EtcdCluster::Endpoint(int i) const {
  return std::string(options_.tls ? "https" : "http") +
         "://127.0.0.1:" + std::to_string(members_[static_cast<std::size_t>(i)].client_port.port());
}

std::vector<std::string> EtcdCluster::Endpoints() const {
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i) out.push_back(Endpoint(i));
  return out;
}

etcd::ClientOptions EtcdCluster::Client(std::chrono::milliseconds timeout) const {
  etcd::ClientOptions o;
  o.endpoints = Endpoints();
  if (options_.tls) o.tls = ClientTls();
  o.call_timeout = timeout;
  return o;
}

std::string EtcdCluster::InitialCluster() const {
  std::string out;
  for (const auto& m : members_) {
    if (!out.empty()) out += ",";
    out += m.name + "=http://127.0.0.1:" + std::to_string(m.peer_port.port());
  }
  return out;
}

bool EtcdCluster::Spawn(int i, bool existing) {
  Member& m = members_[static_cast<std::size_t>(i)];
  const std::string client_url = Endpoint(i);
  const std::string peer_url = "http://127.0.0.1:" + std::to_string(m.peer_port.port());
  std::vector<std::string> argv{kEtcdBinary,
                                "--name",
                                m.name,
                                "--data-dir",
                                m.data_dir,
                                "--listen-client-urls",
                                client_url,
                                "--advertise-client-urls",
                                client_url,
                                "--listen-peer-urls",
                                peer_url,
                                "--initial-advertise-peer-urls",
                                peer_url,
                                "--initial-cluster",
                                InitialCluster(),
                                "--initial-cluster-state",
                                existing ? "existing" : "new",
                                "--initial-cluster-token",
                                "dsb-test-" + dir_.substr(dir_.size() - 6),
                                "--unsafe-no-fsync",
                                "--logger",
                                "zap",
                                "--log-outputs",
                                "stderr"};
  if (options_.tls) {
    argv.insert(argv.end(),
                {"--cert-file", dir_ + "/server.crt", "--key-file", dir_ + "/server.key",
                 "--trusted-ca-file", dir_ + "/ca.crt", "--client-cert-auth"});
  }
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  SpawnOptions so;
  so.output = Output::kFiles;
  so.stdout_file = m.log;
  so.stderr_file = m.log;
  so.append = true;
  // Go's resolver and proxies must not matter on loopback.
  so.env = {"ETCDCTL_API=3", "no_proxy=*"};
  m.process = std::make_unique<Process>();
  if (!m.process->Start(argv, so)) {
    error_ = "cannot start " + std::string(kEtcdBinary) + ": " + m.process->error();
    return false;
  }
  return true;
}

bool EtcdCluster::Start(const EtcdClusterOptions& options) {
  Stop();
  options_ = options;
  error_.clear();
  if (options.members < 1) {
    error_ = "EtcdCluster::Start: members must be at least 1";
    return false;
  }
  if (!Available()) {
    error_ = std::string("no ") + kEtcdBinary;
    return false;
  }
  dir_ = MakeDir();
  if (dir_.empty()) {
    error_ = "cannot make a folder for etcd in /dev/shm or the temp folder";
    return false;
  }
  if (options.tls && !MakeCerts()) return false;
  members_.resize(static_cast<std::size_t>(options.members));
  for (int i = 0; i < options.members; ++i) {
    Member& m = members_[static_cast<std::size_t>(i)];
    m.name = "m" + std::to_string(i);
    if (!m.client_port.ok() || !m.peer_port.ok()) {
      error_ = "cannot reserve a port: " + m.client_port.error() + m.peer_port.error();
      return false;
    }
    m.data_dir = dir_ + "/" + m.name + ".data";
    m.log = dir_ + "/" + m.name + ".log";
  }
  for (int i = 0; i < options.members; ++i) {
    if (!Spawn(i, false)) return false;
  }
  if (!WaitHealthy(options.start_timeout)) {
    error_ = "etcd did not become healthy within " + std::to_string(options.start_timeout.count()) +
             " ms: " + error_;
    for (int i = 0; i < size(); ++i)
      error_ += "\n--- " + members_[static_cast<std::size_t>(i)].name + " log tail:\n" + LogTail(i);
    return false;
  }
  return true;
}

bool EtcdCluster::alive(int i) {
  auto& p = members_[static_cast<std::size_t>(i)].process;
  return p && p->alive();
}

void EtcdCluster::Kill(int i) {
  auto& p = members_[static_cast<std::size_t>(i)].process;
  if (p) p->Kill();
}

void EtcdCluster::Pause(int i) {
  auto& p = members_[static_cast<std::size_t>(i)].process;
  if (p) p->Signal(SIGSTOP);
}

void EtcdCluster::Resume(int i) {
  auto& p = members_[static_cast<std::size_t>(i)].process;
  if (p) p->Signal(SIGCONT);
}

bool EtcdCluster::Restart(int i) {
  Kill(i);
  if (!Spawn(i, true)) return false;
  return WaitHealthy(options_.start_timeout);
}

bool EtcdCluster::WaitHealthy(std::chrono::milliseconds timeout) {
  std::string last;
  const bool ok = WaitUntil(
      [&] {
        for (int i = 0; i < size(); ++i) {
          if (!alive(i)) continue;
          etcd::ClientOptions o = Client(std::chrono::milliseconds(1000));
          o.endpoints = {Endpoint(i)};
          auto s = RunSync<Status>(o, [](etcd::EtcdClient& c) -> asio::awaitable<Status> {
            co_return co_await c.CheckHealth();
          });
          if (!s || !s->ok()) {
            last = s ? s->message() : "cannot make a client";
            return false;
          }
        }
        return true;
      },
      timeout);
  if (!ok) error_ = "not healthy: " + last;
  return ok;
}

int EtcdCluster::Leader(std::chrono::milliseconds timeout) {
  int leader = -1;
  WaitUntil(
      [&] {
        for (int i = 0; i < size(); ++i) {
          if (!alive(i)) continue;
          etcd::ClientOptions o = Client(std::chrono::milliseconds(1000));
          o.endpoints = {Endpoint(i)};
          auto s = RunSync<Result<etcd::MemberStatus>>(
              o, [](etcd::EtcdClient& c) -> asio::awaitable<Result<etcd::MemberStatus>> {
                co_return co_await c.StatusOf(0);
              });
          if (s && s->ok() && (*s)->leader != 0 && (*s)->leader == (*s)->member_id) {
            leader = i;
            return true;
          }
        }
        return false;
      },
      timeout);
  return leader;
}

std::string EtcdCluster::LogTail(int i, std::size_t bytes) const {
  const std::string text = [&] {
    std::ifstream in(members_[static_cast<std::size_t>(i)].log);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

void EtcdCluster::Stop() {
  for (auto& m : members_) {
    if (m.process) m.process->Kill();
  }
  members_.clear();
  if (dir_.empty()) return;
  const bool keep = std::getenv("DSB_KEEP_SCRATCH") != nullptr ||
                    (::testing::UnitTest::GetInstance()->current_test_info() != nullptr &&
                     ::testing::Test::HasFailure());
  if (keep) {
    // The logs and certificates tell what happened; the data dirs (a 64 MB
    // preallocated WAL each, in RAM on /dev/shm) only with DSB_KEEP_SCRATCH.
    if (std::getenv("DSB_KEEP_SCRATCH") == nullptr) {
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
        if (entry.path().extension() == ".data") std::filesystem::remove_all(entry.path(), ec);
      }
    }
    std::fprintf(stderr, "note: etcd folder kept (logs, certificates): %s\n", dir_.c_str());
  } else {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  dir_.clear();
}

}  // namespace dsb::testing
