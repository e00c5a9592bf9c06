// The broker's HTTP endpoint (broker/http/server.h) against a real dsb-broker
// over raw TCP: what it serves, what it refuses, and that no peer can hold up
// the broker (a silent connection is closed after the read timeout while the
// local socket still answers; connections past the cap are refused at once).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tests/http/raw_http.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/ports.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/unique_name.h"
#include "tests/support/wait.h"

namespace {

using dsb::testing::AskBroker;
using dsb::testing::BodyOf;
using dsb::testing::BrokerProcess;
using dsb::testing::HttpGet;
using dsb::testing::PortReservation;
using dsb::testing::RawConnection;
using dsb::testing::ScratchDir;
using dsb::testing::StatusOf;
using dsb::testing::UniqueName;
using namespace std::chrono_literals;

// The server's defaults (broker/http/server.h Limits).
constexpr auto kReadTimeout = 5s;
constexpr std::size_t kMaxConnections = 32;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    ASSERT_TRUE(port_.ok()) << port_.error();
    broker_ = std::make_unique<BrokerProcess>(
        dir_.path(), UniqueName("http"), std::vector<dsb::testing::BrokerTarget>{{}},
        "metrics = \"" + port_.address() + "\"");
    ASSERT_TRUE(broker_->Start()) << broker_->log();
    port_.Release();
    ASSERT_TRUE(broker_->WaitForLog("metrics on http://" + port_.address() + "/metrics"))
        << broker_->log();
  }
  void TearDown() override {
    if (broker_) {
      broker_->Stop();
      broker_->RemoveSegments();
    }
  }
  bool LocalSocketAnswers() {
    const auto r = AskBroker(broker_->socket(), dsb::local_protocol::Op::kStatus);
    return r.contains("ok") && r.at("ok").as_bool();
  }

  ScratchDir dir_{"dsb-http"};
  PortReservation port_;
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(HttpServerTest, ServesMetricsWithTheExpositionContentType) {
  const std::string r = HttpGet(port_.port(), "/metrics");
  ASSERT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos)
      << r;
  EXPECT_NE(BodyOf(r).find("# TYPE dsb_build_info gauge\n"), std::string::npos) << r;
  EXPECT_NE(r.find("X-Content-Type-Options: nosniff\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Cache-Control: no-store\r\n"), std::string::npos) << r;
  // A query string does not change the route.
  EXPECT_EQ(StatusOf(HttpGet(port_.port(), "/metrics?x=1")), 200);
}

// The status page's policy as a header (with frame-ancestors, which only a
// header can carry), framing refused, and its /api answers never cached.
TEST_F(HttpServerTest, TheStatusPageSendsItsPolicyAndForbidsFramingAndCaching) {
  const std::string r = HttpGet(port_.port(), "/");
  ASSERT_EQ(StatusOf(r), 200) << r;
  const std::size_t at = r.find("\r\nContent-Security-Policy: ");
  ASSERT_NE(at, std::string::npos) << r;
  const std::string policy = r.substr(at + 2, r.find("\r\n", at + 2) - at - 2);
  EXPECT_NE(policy.find("default-src 'none'; script-src 'sha256-"), std::string::npos) << policy;
  EXPECT_NE(policy.find("; frame-ancestors 'none'"), std::string::npos) << policy;
  EXPECT_NE(r.find("\r\nX-Frame-Options: DENY\r\n"), std::string::npos) << r;
  // The <meta> carries the same policy but frame-ancestors (ignored there).
  const std::string meta_policy = policy.substr(std::string("Content-Security-Policy: ").size(),
                                                policy.find("; frame-ancestors") -
                                                    std::string("Content-Security-Policy: ").size());
  EXPECT_NE(BodyOf(r).find("<meta http-equiv=\"Content-Security-Policy\" content=\"" +
                           meta_policy + "\">"),
            std::string::npos)
      << meta_policy;
  for (const char* api : {"/api/status", "/api/leases", "/api/history"}) {
    const std::string a = HttpGet(port_.port(), api);
    EXPECT_EQ(StatusOf(a), 200) << api << ": " << a;
    EXPECT_NE(a.find("\r\nCache-Control: no-store\r\n"), std::string::npos) << api << ": " << a;
    EXPECT_NE(a.find("\r\nContent-Type: application/json\r\n"), std::string::npos) << a;
  }
}

TEST_F(HttpServerTest, HeadAnswersTheHeadersWithoutABody) {
  RawConnection c(port_.port());
  ASSERT_GE(c.fd(), 0);
  ASSERT_TRUE(c.Send("HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
  std::string r;
  ASSERT_TRUE(c.ReadToClose(&r, 10s));
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("Content-Length: "), std::string::npos) << r;
  EXPECT_EQ(r.find("Content-Length: 0\r\n"), std::string::npos) << r;
  EXPECT_EQ(BodyOf(r), "") << r;
}

TEST_F(HttpServerTest, OtherMethodsAre405AndUnknownPaths404) {
  RawConnection c(port_.port());
  ASSERT_GE(c.fd(), 0);
  ASSERT_TRUE(c.Send("POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
                     "Connection: close\r\n\r\nabc"));
  std::string r;
  ASSERT_TRUE(c.ReadToClose(&r, 10s));
  EXPECT_EQ(StatusOf(r), 405) << r;
  EXPECT_NE(r.find("Allow: GET, HEAD\r\n"), std::string::npos) << r;
  EXPECT_EQ(StatusOf(HttpGet(port_.port(), "/nothing-here")), 404);
  EXPECT_EQ(StatusOf(HttpGet(port_.port(), "/metrics/")), 404);
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  RawConnection c(port_.port());
  ASSERT_GE(c.fd(), 0);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.Send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    std::string r;
    ASSERT_TRUE(c.ReadResponse(&r, 10s)) << "request " << i << ": " << r;
    EXPECT_EQ(StatusOf(r), 200) << r;
  }
}

TEST_F(HttpServerTest, GarbageIsAnswered400AndClosed) {
  RawConnection c(port_.port());
  ASSERT_GE(c.fd(), 0);
  ASSERT_TRUE(c.Send(std::string("\x01\x02 hello there\r\n\r\n", 19)));
  std::string r;
  ASSERT_TRUE(c.ReadToClose(&r, 10s)) << "not closed";
  EXPECT_EQ(StatusOf(r), 400) << r;
  EXPECT_TRUE(LocalSocketAnswers());
}

TEST_F(HttpServerTest, AHugeHeaderIsAnswered431AndClosed) {
  RawConnection c(port_.port());
  ASSERT_GE(c.fd(), 0);
  // 64 KiB of header: far past the 8 KiB limit. The server may close before
  // it has read everything (then send fails): that is fine too.
  c.Send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(64 * 1024, 'a') +
         "\r\n\r\n");
  std::string r;
  ASSERT_TRUE(c.ReadToClose(&r, 10s)) << "not closed";
  if (!r.empty()) {
    EXPECT_EQ(StatusOf(r), 431) << r;
  }
  EXPECT_EQ(StatusOf(HttpGet(port_.port(), "/metrics")), 200);
}

TEST_F(HttpServerTest, ASilentConnectionIsClosedAfterTheReadTimeoutWhileTheBrokerAnswers) {
  RawConnection silent(port_.port());
  ASSERT_GE(silent.fd(), 0);
  RawConnection trickle(port_.port());
  ASSERT_GE(trickle.fd(), 0);
  ASSERT_TRUE(trickle.Send("GET /metr"));  // a request that never ends
  const auto opened = std::chrono::steady_clock::now();
  // Meanwhile the broker serves its local socket and other HTTP peers.
  EXPECT_TRUE(LocalSocketAnswers());
  EXPECT_EQ(StatusOf(HttpGet(port_.port(), "/metrics")), 200);
  std::string r;
  // Bounded: the timeout plus a generous margin for a loaded machine.
  ASSERT_TRUE(silent.ReadToClose(&r, kReadTimeout + 30s)) << "the silent peer was never closed";
  EXPECT_GE(std::chrono::steady_clock::now() - opened, kReadTimeout - 500ms);
  EXPECT_EQ(r, "");
  ASSERT_TRUE(trickle.ReadToClose(&r, 30s)) << "the trickling peer was never closed";
  EXPECT_TRUE(LocalSocketAnswers());
}

TEST_F(HttpServerTest, ConnectionsPastTheCapAreRefusedAtOnce) {
  std::vector<RawConnection> held;
  for (std::size_t i = 0; i < kMaxConnections; ++i) {
    held.emplace_back(port_.port());
    ASSERT_GE(held.back().fd(), 0);
  }
  // The held connections are accepted in order; until the server has taken
  // all of them a new one may still be served, so wait for a 503.
  std::string refused;
  ASSERT_TRUE(dsb::testing::WaitUntil(
      [&] {
        refused = HttpGet(port_.port(), "/metrics", 10s);
        return StatusOf(refused) == 503;
      },
      20s))
      << refused;
  EXPECT_NE(refused.find("Retry-After: 1"), std::string::npos) << refused;
  EXPECT_TRUE(LocalSocketAnswers());
  held.clear();  // closed: the server drops them and serves again
  std::string r;
  EXPECT_TRUE(dsb::testing::WaitUntil(
      [&] {
        r = HttpGet(port_.port(), "/metrics", 10s);
        return StatusOf(r) == 200;
      },
      20s))
      << r;
}

TEST(HttpServerStart, APortInUseIsAStartErrorNamingTheKey) {
  ScratchDir dir("dsb-http");
  ASSERT_TRUE(dir.ok());
  // A listening socket on the port (not a reservation: it must refuse).
  std::string port;
  const int fd = dsb::testing::ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  const std::string address = "127.0.0.1:" + port;
  BrokerProcess broker(dir.path(), UniqueName("http"), {{}}, "metrics = \"" + address + "\"");
  std::string out;
  const int code = BrokerProcess::RunToExit(broker.config_path(), &out);
  ::close(fd);
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("broker.metrics (" + address + "): cannot listen"), std::string::npos) << out;
  broker.RemoveSegments();
}

TEST(HttpServerStart, AHostNameIsRefusedAtStart) {
  ScratchDir dir("dsb-http");
  ASSERT_TRUE(dir.ok());
  BrokerProcess broker(dir.path(), UniqueName("http"), {{}}, "metrics = \"example.org:9100\"");
  std::string out;
  EXPECT_NE(BrokerProcess::RunToExit(broker.config_path(), &out), 0) << out;
  EXPECT_NE(out.find("must be an IP address"), std::string::npos) << out;
  broker.RemoveSegments();
}

}  // namespace
