// dsb-faultproxy: a seeded fault-injecting TCP proxy for the chaos suite. See README.md.
//
// It sits between a broker and its coordinator (the kernel here has no netem, so delay, loss,
// stalls and resets are made in user space). Every accepted connection is paired with one
// upstream connection; each direction is a reader that queues chunks with a release time and a
// writer that sends them in order once released and not stalled. Faults are switched at run
// time by one-line commands on a Unix control socket, so the test that drives the chaos decides
// when; every random choice the proxy makes (jitter, which chunk is "lost") comes from --seed.
//
// Threads: one io_context thread runs everything, so no state needs a lock.
// Bounds: at most kMaxConnections pairs; a direction buffers at most --max-buffer bytes, then
// stops reading (TCP back-pressure reaches the sender, as a real stalled link does).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dsb/version.h"

namespace dsb::faultproxy {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kMaxConnections = 64;
constexpr std::size_t kChunk = 16 * 1024;

struct Options {
  std::string listen;
  std::string connect;
  std::string control;
  std::string port_file;
  std::uint64_t seed = 1;
  std::size_t max_buffer = 1 << 20;
};

// The fault state of one direction. `up` is client -> server (broker -> coordinator).
struct DirFaults {
  milliseconds delay{0};
  milliseconds jitter{0};
  double loss = 0;             // probability a chunk is "lost" and retransmitted after rto
  milliseconds rto{200};       // what a TCP retransmission costs the application
  bool stalled = false;        // nothing is forwarded (bytes are kept, up to the bound)
};

struct Faults {
  DirFaults dir[2];  // 0 = up, 1 = down
  bool refuse = false;  // new connections are reset at once
};

bool ParseHostPort(const std::string& text, std::string& host, std::uint16_t& port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = text.substr(0, colon);
  try {
    const unsigned long p = std::stoul(text.substr(colon + 1));
    if (p > 65535) return false;
    port = static_cast<std::uint16_t>(p);
  } catch (...) {
    return false;
  }
  return true;
}

class Proxy;

// One proxied connection: a client socket, an upstream socket, two directions.
class Pair : public std::enable_shared_from_this<Pair> {
 public:
  Pair(Proxy& proxy, tcp::socket client, std::uint64_t seed);
  void Start();
  // Ends both sockets with RST (SO_LINGER 0), as a middlebox reset would.
  void Reset();
  // Wakes the writers (a fault changed).
  void Poke() {
    for (auto& d : dirs_) d.wake.cancel();
  }
  bool closed() const { return closed_; }

 private:
  struct Chunk {
    std::vector<char> bytes;
    Clock::time_point release;
  };
  struct Dir {
    explicit Dir(asio::any_io_executor ex) : wake(ex) {}
    std::deque<Chunk> queue;
    std::size_t buffered = 0;
    Clock::time_point last_release{};
    asio::steady_timer wake;  // at max(): an async condition variable
    bool eof = false;
  };

  awaitable<void> Run();
  awaitable<void> Reader(int d, tcp::socket& from);
  awaitable<void> Writer(int d, tcp::socket& to);
  void Close();

  Proxy& proxy_;
  tcp::socket client_;
  tcp::socket upstream_;
  std::mt19937_64 rng_;
  std::vector<Dir> dirs_;
  bool closed_ = false;
};

class Proxy {
 public:
  Proxy(asio::io_context& io, Options o)
      : io_(io), options_(std::move(o)), acceptor_(io), control_(io), rng_(options_.seed) {}

  bool Listen() {
    std::string host;
    std::uint16_t port = 0;
    if (!ParseHostPort(options_.listen, host, port)) {
      spdlog::error("--listen '{}' is not HOST:PORT", options_.listen);
      return false;
    }
    if (!ParseHostPort(options_.connect, upstream_host_, upstream_port_)) {
      spdlog::error("--connect '{}' is not HOST:PORT", options_.connect);
      return false;
    }
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (ec) {
      spdlog::error("--listen host '{}' is not an IP address", host);
      return false;
    }
    tcp::endpoint ep(address, port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      spdlog::error("cannot listen on {}: {}", options_.listen, ec.message());
      return false;
    }
    ::unlink(options_.control.c_str());
    asio::local::stream_protocol::endpoint cep(options_.control);
    control_.open(cep.protocol(), ec);
    if (!ec) control_.bind(cep, ec);
    if (!ec) control_.listen(8, ec);
    if (ec) {
      spdlog::error("cannot listen on control socket {}: {}", options_.control, ec.message());
      return false;
    }
    return true;
  }

  void Start() {
    asio::co_spawn(io_, AcceptLoop(), asio::detached);
    asio::co_spawn(io_, ControlLoop(), asio::detached);
  }

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  const Faults& faults() const { return faults_; }
  const std::string& upstream_host() const { return upstream_host_; }
  std::uint16_t upstream_port() const { return upstream_port_; }
  std::size_t max_buffer() const { return options_.max_buffer; }
  void CountBytes(int d, std::size_t n) { bytes_[d] += n; }
  void CountLost() { ++lost_; }
  void Forget(const std::shared_ptr<Pair>& p) { pairs_.erase(p); }

  void Shutdown() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    control_.close(ec);
    ::unlink(options_.control.c_str());
    for (const auto& p : std::vector<std::shared_ptr<Pair>>(pairs_.begin(), pairs_.end())) {
      p->Reset();
    }
  }

 private:
  awaitable<void> AcceptLoop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      if (ec) continue;
      ++accepted_;
      if (faults_.refuse || pairs_.size() >= kMaxConnections) {
        boost::system::error_code ignore;
        socket.set_option(asio::socket_base::linger(true, 0), ignore);
        socket.close(ignore);
        ++refused_;
        continue;
      }
      auto pair = std::make_shared<Pair>(*this, std::move(socket), rng_());
      pairs_.insert(pair);
      pair->Start();
    }
  }

  awaitable<void> ControlLoop() {
    for (;;) {
      auto [ec, socket] = co_await control_.async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || !control_.is_open()) co_return;
      if (ec) continue;
      asio::co_spawn(io_, ControlSession(std::move(socket)), asio::detached);
    }
  }

  awaitable<void> ControlSession(asio::local::stream_protocol::socket socket) {
    std::string buffer;
    for (;;) {
      auto [ec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(buffer, 4096),
                                                     '\n', use_nothrow);
      if (ec) co_return;
      std::string line = buffer.substr(0, n - 1);
      buffer.erase(0, n);
      std::string reply = Command(line) + "\n";
      auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(reply), use_nothrow);
      if (wec) co_return;
    }
  }

  // Applies one control command; returns "OK ..." or "ERR <why>".
  //   PASS                           every fault off
  //   DELAY up|down|both MS [JITTER] each chunk waits MS (+ uniform 0..JITTER) ms
  //   LOSS up|down|both P [RTO]      each chunk with probability P waits RTO ms more
  //   STALL up|down|both             nothing is forwarded that way until PASS/RESUME
  //   RESUME up|down|both            ends a stall
  //   RESET                          every open connection gets an RST on both sides
  //   REFUSE on|off                  new connections are reset at once
  //   STATS                          counters as one JSON line
  std::string Command(const std::string& line) {
    std::istringstream in(line);
    std::string verb, which;
    in >> verb;
    auto dirs = [&](const std::string& w) -> std::vector<int> {
      if (w == "up") return {0};
      if (w == "down") return {1};
      if (w == "both") return {0, 1};
      return {};
    };
    std::string result = "OK";
    if (verb == "PASS") {
      faults_ = Faults{};
    } else if (verb == "DELAY" || verb == "LOSS" || verb == "STALL" || verb == "RESUME") {
      in >> which;
      const std::vector<int> ds = dirs(which);
      if (ds.empty()) return "ERR direction '" + which + "' is not up, down or both";
      double a = 0, b = 0;
      if (verb == "DELAY" || verb == "LOSS") {
        if (!(in >> a) || a < 0) return "ERR " + verb + " needs a non-negative number";
        if (!(in >> b)) b = verb == "LOSS" ? 200 : 0;
        // Bounded, so the casts to milliseconds below stay defined (1e300 would not).
        constexpr double kMaxMs = 86'400'000;
        if (b < 0 || b > kMaxMs || a > kMaxMs || (verb == "LOSS" && a > 1)) {
          return "ERR " + verb + ": bad value (milliseconds up to 86400000, loss up to 1)";
        }
      }
      for (int d : ds) {
        DirFaults& f = faults_.dir[d];
        if (verb == "DELAY") {
          f.delay = milliseconds(static_cast<std::int64_t>(a));
          f.jitter = milliseconds(static_cast<std::int64_t>(b));
        } else if (verb == "LOSS") {
          f.loss = a;
          f.rto = milliseconds(static_cast<std::int64_t>(b));
        } else {
          f.stalled = verb == "STALL";
        }
      }
    } else if (verb == "RESET") {
      std::size_t n = 0;
      for (const auto& p : std::vector<std::shared_ptr<Pair>>(pairs_.begin(), pairs_.end())) {
        p->Reset();
        ++n;
      }
      resets_ += n;
      result = "OK " + std::to_string(n);
    } else if (verb == "REFUSE") {
      in >> which;
      if (which != "on" && which != "off") return "ERR REFUSE needs on or off";
      faults_.refuse = which == "on";
    } else if (verb == "STATS") {
      std::ostringstream o;
      o << "{\"accepted\":" << accepted_ << ",\"refused\":" << refused_
        << ",\"open\":" << pairs_.size() << ",\"resets\":" << resets_ << ",\"lost\":" << lost_
        << ",\"bytes_up\":" << bytes_[0] << ",\"bytes_down\":" << bytes_[1] << "}";
      return o.str();
    } else {
      return "ERR unknown command '" + verb + "'";
    }
    spdlog::info("fault: {}", line);
    for (const auto& p : pairs_) p->Poke();
    return result;
  }

  asio::io_context& io_;
  Options options_;
  tcp::acceptor acceptor_;
  asio::local::stream_protocol::acceptor control_;
  std::mt19937_64 rng_;
  std::string upstream_host_;
  std::uint16_t upstream_port_ = 0;
  Faults faults_;
  std::set<std::shared_ptr<Pair>> pairs_;
  std::uint64_t accepted_ = 0, refused_ = 0, resets_ = 0, lost_ = 0;
  std::uint64_t bytes_[2] = {0, 0};
};

Pair::Pair(Proxy& proxy, tcp::socket client, std::uint64_t seed)
    : proxy_(proxy),
      client_(std::move(client)),
      upstream_(client_.get_executor()),
      rng_(seed) {
  dirs_.emplace_back(client_.get_executor());
  dirs_.emplace_back(client_.get_executor());
}

void Pair::Start() {
  asio::co_spawn(client_.get_executor(), [self = shared_from_this()] { return self->Run(); },
                 asio::detached);
}

awaitable<void> Pair::Run() {
  auto self = shared_from_this();
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(proxy_.upstream_host(), ec);
  if (!ec) {
    auto [cec] = co_await upstream_.async_connect(tcp::endpoint(address, proxy_.upstream_port()),
                                                  use_nothrow);
    ec = cec;
  }
  if (ec || closed_) {
    Reset();
    co_return;
  }
  upstream_.set_option(tcp::no_delay(true), ec);
  client_.set_option(tcp::no_delay(true), ec);
  for (auto& d : dirs_) d.wake.expires_at(Clock::time_point::max());
  asio::co_spawn(client_.get_executor(), Reader(0, client_), asio::detached);
  asio::co_spawn(client_.get_executor(), Writer(0, upstream_), asio::detached);
  asio::co_spawn(client_.get_executor(), Reader(1, upstream_), asio::detached);
  asio::co_spawn(client_.get_executor(), Writer(1, client_), asio::detached);
}

awaitable<void> Pair::Reader(int d, tcp::socket& from) {
  auto self = shared_from_this();
  Dir& dir = dirs_[static_cast<std::size_t>(d)];
  std::vector<char> buf(kChunk);
  asio::steady_timer pause(from.get_executor());
  while (!closed_) {
    if (dir.buffered >= proxy_.max_buffer()) {
      // Bounded: stop reading until the writer drains (back-pressure to the sender).
      pause.expires_after(milliseconds(20));
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buf), use_nothrow);
    if (closed_) co_return;
    if (ec) {
      dir.eof = true;
      dir.wake.cancel();
      co_return;
    }
    const DirFaults& f = proxy_.faults().dir[d];
    auto release = Clock::now() + f.delay;
    if (f.jitter.count() > 0) {
      release += milliseconds(static_cast<std::int64_t>(
          rng_() % static_cast<std::uint64_t>(f.jitter.count() + 1)));
    }
    if (f.loss > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < f.loss) {
      release += f.rto;
      proxy_.CountLost();
    }
    release = std::max(release, dir.last_release);  // a byte stream keeps its order
    dir.last_release = release;
    dir.queue.push_back(Chunk{std::vector<char>(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n)), release});
    dir.buffered += n;
    dir.wake.cancel();
  }
}

awaitable<void> Pair::Writer(int d, tcp::socket& to) {
  auto self = shared_from_this();
  Dir& dir = dirs_[static_cast<std::size_t>(d)];
  while (!closed_) {
    const bool stalled = proxy_.faults().dir[d].stalled;
    if (dir.queue.empty() && dir.eof) {
      // The sender closed: pass the close on (half-close), then end the pair once both are done.
      boost::system::error_code ec;
      to.shutdown(tcp::socket::shutdown_send, ec);
      if (dirs_[static_cast<std::size_t>(1 - d)].eof) Close();
      co_return;
    }
    if (dir.queue.empty() || stalled) {
      dir.wake.expires_at(Clock::time_point::max());
      co_await dir.wake.async_wait(use_nothrow);
      continue;
    }
    if (dir.queue.front().release > Clock::now()) {
      dir.wake.expires_at(dir.queue.front().release);
      co_await dir.wake.async_wait(use_nothrow);
      continue;
    }
    Chunk c = std::move(dir.queue.front());
    dir.queue.pop_front();
    dir.buffered -= c.bytes.size();
    auto [ec, n] = co_await asio::async_write(to, asio::buffer(c.bytes), use_nothrow);
    if (ec) {
      Reset();
      co_return;
    }
    proxy_.CountBytes(d, n);
  }
}

void Pair::Close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  client_.close(ec);
  upstream_.close(ec);
  for (auto& d : dirs_) d.wake.cancel();
  proxy_.Forget(shared_from_this());
}

void Pair::Reset() {
  if (closed_) return;
  boost::system::error_code ec;
  client_.set_option(asio::socket_base::linger(true, 0), ec);
  upstream_.set_option(asio::socket_base::linger(true, 0), ec);
  Close();
}

int Run(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("faultproxy"));
  spdlog::set_pattern("%H:%M:%S.%e faultproxy %v");
  Options o;
  CLI::App app{"dsb-faultproxy: a seeded fault-injecting TCP proxy (chaos tests)"};
  app.set_version_flag("--version", std::string("dsb-faultproxy ") + DSB_VERSION_STRING);
  app.add_option("--listen", o.listen, "HOST:PORT to accept on (port 0 picks one)")->required();
  app.add_option("--connect", o.connect, "HOST:PORT of the upstream (IP literal)")->required();
  app.add_option("--control", o.control, "Unix socket path for fault commands")->required();
  app.add_option("--port-file", o.port_file, "write HOST:PORT here once listening");
  app.add_option("--seed", o.seed, "seed for every random choice (jitter, loss)")
      ->capture_default_str();
  app.add_option("--max-buffer", o.max_buffer, "bytes buffered per direction before reading stops")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{4096}, std::size_t{64} << 20));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help/--version: 0; a usage error: 2
  }
  ::signal(SIGPIPE, SIG_IGN);
  asio::io_context io(1);
  Proxy proxy(io, o);
  if (!proxy.Listen()) return 2;
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) {
      proxy.Shutdown();
      io.stop();
    }
  });
  proxy.Start();
  const tcp::endpoint ep = proxy.local_endpoint();
  const std::string where = ep.address().to_string() + ":" + std::to_string(ep.port());
  if (!o.port_file.empty()) {
    const std::string tmp = o.port_file + ".tmp";
    std::ofstream(tmp) << where << "\n";
    if (std::rename(tmp.c_str(), o.port_file.c_str()) != 0) {
      spdlog::error("cannot write port file {}", o.port_file);
      return 2;
    }
  }
  spdlog::info("listening on {} -> {} (control {}, seed {})", where, o.connect, o.control, o.seed);
  io.run();
  return 0;
}

}  // namespace
}  // namespace dsb::faultproxy

int main(int argc, char** argv) { return dsb::faultproxy::Run(argc, argv); }
