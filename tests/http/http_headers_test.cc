// Response headers of the HTTP endpoint (broker/http/server.h): CheckHeader's
// rules, and a Server on a real loopback socket sending a handler's headers
// and refusing (500, never sent) a handler's header that would split the
// response.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <memory>
#include <string>
#include <thread>

#include "broker/http/server.h"
#include "tests/http/raw_http.h"

namespace {

using dsb::http::CheckHeader;
using dsb::http::Response;
using dsb::testing::BodyOf;
using dsb::testing::HttpGet;
using dsb::testing::StatusOf;

TEST(CheckHeader, AcceptsTokensAndPlainValues) {
  EXPECT_TRUE(CheckHeader("X-Frame-Options", "DENY").ok());
  EXPECT_TRUE(CheckHeader("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
                  .ok());
  EXPECT_TRUE(CheckHeader("Cache-Control", "no-store").ok());
  EXPECT_TRUE(CheckHeader("X-A", "tab\tis allowed").ok());
  EXPECT_TRUE(CheckHeader("X-Empty", "").ok());
}

TEST(CheckHeader, RefusesWhatCouldEndOrSplitTheHeader) {
  for (const std::string& value : {std::string("a\r\nX-Evil: 1"), std::string("a\nb"),
                                  std::string("a\rb"), std::string("a\0b", 3),
                                  std::string("a\x7f")}) {
    const dsb::Status s = CheckHeader("X-A", value);
    EXPECT_FALSE(s.ok()) << value;
    EXPECT_EQ(s.code(), dsb::Errc::kInvalidArgument);
    EXPECT_NE(s.message().find("\"X-A\""), std::string::npos) << s.message();
  }
  for (const std::string& name : {std::string(""), std::string("X A"), std::string("X:A"),
                                 std::string("X\r\nA"), std::string("Caf\xc3\xa9")}) {
    EXPECT_FALSE(CheckHeader(name, "v").ok()) << name;
  }
  // The server's own framing and type: never a handler's.
  for (const char* name :
       {"Content-Length", "content-length", "Transfer-Encoding", "Connection", "Content-Type"}) {
    const dsb::Status s = CheckHeader(name, "x");
    EXPECT_FALSE(s.ok()) << name;
    EXPECT_NE(s.message().find("server's to set"), std::string::npos) << s.message();
  }
}

// A Server on its own io_context thread; Route before the thread starts,
// Stop on that thread.
class ServerHeaders : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = dsb::http::Server::Listen(io_, "127.0.0.1", 0, "test.http");
    ASSERT_TRUE(s.ok()) << s.status().message();
    server_ = std::move(s).value();
    server_->Route("/good", [](std::string_view) {
      return Response{.body = "ok\n",
                      .headers = {{"X-Frame-Options", "DENY"}, {"Cache-Control", "max-age=5"}}};
    });
    server_->Route("/split", [](std::string_view) {
      return Response{.body = "never sent\n", .headers = {{"X-A", "1\r\nX-Evil: 1"}}};
    });
    server_->Route("/type", [](std::string_view) {
      return Response{.content_type = "text/plain\r\nX-Evil: 1", .body = "never sent\n"};
    });
    server_->Route("/framing", [](std::string_view) {
      return Response{.body = "never sent\n", .headers = {{"Content-Length", "0"}}};
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

  boost::asio::io_context io_;
  std::unique_ptr<dsb::http::Server> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

TEST_F(ServerHeaders, SendsAHandlersHeadersAndLetsThemReplaceTheDefaults) {
  const std::string r = HttpGet(port_, "/good");
  ASSERT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("\r\nX-Frame-Options: DENY\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\nCache-Control: max-age=5\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.find("no-store"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\nX-Content-Type-Options: nosniff\r\n"), std::string::npos) << r;
  EXPECT_EQ(BodyOf(r), "ok\n");
}

TEST_F(ServerHeaders, AHeaderThatWouldSplitTheResponseIsA500AndNeverSent) {
  for (const char* path : {"/split", "/type", "/framing"}) {
    const std::string r = HttpGet(port_, path);
    EXPECT_EQ(StatusOf(r), 500) << path << ": " << r;
    EXPECT_EQ(r.find("X-Evil"), std::string::npos) << r;
    EXPECT_EQ(r.find("never sent"), std::string::npos) << r;
    EXPECT_EQ(BodyOf(r), "internal error\n") << r;
  }
  // The server goes on serving.
  EXPECT_EQ(StatusOf(HttpGet(port_, "/good")), 200);
}

}  // namespace
