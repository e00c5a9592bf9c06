// The HTTP endpoint's Host check (broker/http/server.h, CheckRequestHost):
// against DNS rebinding, a request must name the endpoint itself (its
// address, or localhost on a loopback bind). The rules as a pure function,
// then a Server on a real loopback socket answering raw requests.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "broker/http/server.h"
#include "tests/http/raw_http.h"

namespace {

using namespace std::chrono_literals;
using boost::asio::ip::make_address;
using dsb::Errc;
using dsb::http::CheckRequestHost;
using dsb::http::Response;
using dsb::testing::BodyOf;
using dsb::testing::RawConnection;
using dsb::testing::StatusOf;

dsb::Status Check(std::optional<std::string_view> host, const char* local, bool http11 = true) {
  return CheckRequestHost(host, http11, make_address(local));
}

TEST(CheckRequestHost, ALoopbackBindTakesLocalhostAndLoopbackLiteralsWithOrWithoutPort) {
  for (const char* host : {"127.0.0.1", "127.0.0.1:9464", "localhost", "LocalHost:9464",
                           "localhost:8080", "[::1]", "[::1]:9464", "127.0.0.2:1"}) {
    EXPECT_TRUE(Check(host, "127.0.0.1").ok()) << host << ": " << Check(host, "127.0.0.1").message();
    EXPECT_TRUE(Check(host, "::1").ok()) << host;
  }
}

TEST(CheckRequestHost, ANameThatOnlyPointsHereIsRefusedNamingItAndWhatIsAccepted) {
  for (const char* host : {"evil.example", "evil.example:9464", "localhost.evil.example",
                           "127.0.0.1.nip.io:9464", "ws1", "localhost.", "192.168.1.5"}) {
    const dsb::Status s = Check(host, "127.0.0.1");
    EXPECT_FALSE(s.ok()) << host;
    EXPECT_EQ(s.code(), Errc::kPermissionDenied) << host;
    EXPECT_NE(s.message().find(std::string("\"") + host + "\""), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("\"localhost\" or a loopback address"), std::string::npos)
        << s.message();
  }
}

TEST(CheckRequestHost, ANonLoopbackBindTakesItsOwnAddressOnly) {
  EXPECT_TRUE(Check("192.168.1.5", "192.168.1.5").ok());
  EXPECT_TRUE(Check("192.168.1.5:9464", "192.168.1.5").ok());
  EXPECT_TRUE(Check("[::ffff:192.168.1.5]:9464", "192.168.1.5").ok());  // the same address
  EXPECT_TRUE(Check("192.168.1.5", "::ffff:192.168.1.5").ok());  // a dual-stack socket's view
  EXPECT_TRUE(Check("[fd00::5]:9464", "fd00::5").ok());
  for (const char* host : {"localhost", "127.0.0.1", "192.168.1.6", "ws1.lab", "[fd00::6]"}) {
    const dsb::Status s = Check(host, "192.168.1.5");
    EXPECT_EQ(s.code(), Errc::kPermissionDenied) << host;
    EXPECT_NE(s.message().find("this endpoint's address (192.168.1.5)"), std::string::npos)
        << s.message();
  }
  EXPECT_NE(Check("x", "fd00::5").message().find("([fd00::5])"), std::string::npos);
}

TEST(CheckRequestHost, NoHostIsTakenFromHttp10OnlyAndMalformedOnesAreBadRequests) {
  // A browser always sends Host: only a tool omits it, and only HTTP/1.0 may.
  EXPECT_TRUE(Check(std::nullopt, "127.0.0.1", /*http11=*/false).ok());
  const dsb::Status missing = Check(std::nullopt, "127.0.0.1", /*http11=*/true);
  EXPECT_EQ(missing.code(), Errc::kInvalidArgument);
  EXPECT_NE(missing.message().find("without a Host header"), std::string::npos);
  // A Host sent with HTTP/1.0 is checked like any other.
  EXPECT_EQ(Check("evil.example", "127.0.0.1", false).code(), Errc::kPermissionDenied);
  for (const char* host : {"[::1", "[::1]x", "::1", "localhost:http", "localhost:123456"}) {
    EXPECT_EQ(Check(host, "127.0.0.1").code(), Errc::kInvalidArgument) << host;
  }
  EXPECT_EQ(Check("", "127.0.0.1").code(), Errc::kPermissionDenied);
}

// A Server on its own io_context thread; Route before the thread starts,
// Stop on that thread.
class ServerHost : public ::testing::Test {
 protected:
  void Start(const char* host) {
    auto s = dsb::http::Server::Listen(io_, host, 0, "test.http");
    ASSERT_TRUE(s.ok()) << s.status().message();
    server_ = std::move(s).value();
    server_->Route("/api/status", [this](std::string_view) {
      ++served_;  // on the io thread, before its reply is sent
      return Response{.body = "secret\n"};
    });
    server_->Start();
    port_ = server_->local_endpoint().port();
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    if (thread_.joinable()) {
      boost::asio::post(io_, [this] { server_->Stop(); });
      thread_.join();
    }
  }
  // One raw request (the bytes as given, then the end of the header).
  std::string Ask(const std::string& head) {
    RawConnection c(port_);
    if (c.fd() < 0 || !c.Send(head + "Connection: close\r\n\r\n")) return {};
    std::string out;
    c.ReadToClose(&out, 10s);
    return out;
  }

  boost::asio::io_context io_;
  std::unique_ptr<dsb::http::Server> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<int> served_{0};
};

TEST_F(ServerHost, AForeignHostIsRefused421AndTheHandlerNeverRuns) {
  Start("127.0.0.1");
  for (const std::string& host : std::vector<std::string>{
           "evil.example", "evil.example:" + std::to_string(port_), "localhost.evil.example"}) {
    const std::string r = Ask("GET /api/status HTTP/1.1\r\nHost: " + host + "\r\n");
    EXPECT_EQ(StatusOf(r), 421) << r;
    EXPECT_NE(BodyOf(r).find("misdirected request: Host \"" + host + "\" does not name this"),
              std::string::npos)
        << r;
    EXPECT_EQ(r.find("secret"), std::string::npos) << r;
  }
  // A HEAD is refused alike; two Host headers are a bad request.
  EXPECT_EQ(StatusOf(Ask("HEAD /api/status HTTP/1.1\r\nHost: evil.example\r\n")), 421);
  EXPECT_EQ(StatusOf(Ask("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n")),
            400);
  // Every reply above has arrived: the handler would have run before it.
  const std::string ok = Ask("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  EXPECT_EQ(StatusOf(ok), 200) << ok;
  EXPECT_EQ(served_, 1);
}

TEST_F(ServerHost, LocalhostAndTheAddressAreServedWithOrWithoutThePort) {
  Start("127.0.0.1");
  const std::string p = std::to_string(port_);
  for (const std::string& host :
       std::vector<std::string>{"localhost", "localhost:" + p, "127.0.0.1", "127.0.0.1:" + p,
                                "localhost:8080" /* an ssh tunnel's local port */}) {
    const std::string r = Ask("GET /api/status HTTP/1.1\r\nHost: " + host + "\r\n");
    EXPECT_EQ(StatusOf(r), 200) << host << ": " << r;
    EXPECT_EQ(BodyOf(r), "secret\n") << r;
  }
}

TEST_F(ServerHost, Http10WithoutHostIsServedHttp11WithoutHostIs400) {
  Start("127.0.0.1");
  const std::string old = Ask("GET /api/status HTTP/1.0\r\n");
  EXPECT_EQ(StatusOf(old), 200) << old;
  EXPECT_EQ(BodyOf(old), "secret\n");
  const std::string missing = Ask("GET /api/status HTTP/1.1\r\n");
  EXPECT_EQ(StatusOf(missing), 400) << missing;
  EXPECT_NE(BodyOf(missing).find("without a Host header"), std::string::npos) << missing;
}

TEST_F(ServerHost, AWildcardBindChecksAgainstTheAddressTheConnectionReached) {
  Start("0.0.0.0");  // reached here through 127.0.0.1
  EXPECT_EQ(StatusOf(Ask("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:" +
                         std::to_string(port_) + "\r\n")),
            200);
  EXPECT_EQ(StatusOf(Ask("GET /api/status HTTP/1.1\r\nHost: localhost\r\n")), 200);
  EXPECT_EQ(StatusOf(Ask("GET /api/status HTTP/1.1\r\nHost: evil.example\r\n")), 421);
}

}  // namespace
