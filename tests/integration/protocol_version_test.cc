// The local protocol's version handshake (common/local_protocol.h): a client
// newer or older than its broker gets a clear error naming both versions and
// what to upgrade, and nothing happens on the broker (no registration, no
// slot); a current client, and an older one that sends no version, register.
// The broker is real; the client side is raw frames on the socket, and a
// listener of this test that answers in a version the client does not speak.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "common/local_frame.h"
#include "common/local_protocol.h"
#include "dsb/client.h"
#include "tests/support/broker_admin.h"
#include "tests/support/broker_process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/unique_name.h"

namespace dsb::testing {
namespace {

namespace json = boost::json;
namespace lp = local_protocol;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// One request on a fresh connection (raw frames, as any client library
// would send them); the reply object, or an empty object on no answer.
json::object RawRequest(const std::filesystem::path& socket, const json::object& request) {
  auto fd = ConnectLocal(socket.string());
  if (!fd.ok()) return {};
  const Status sent = WriteFrame(*fd, json::serialize(request));
  auto frame = sent.ok() ? ReadFrame(*fd, 10000ms) : Result<std::string>(sent);
  ::close(*fd);
  if (!frame.ok()) return {};
  auto reply = lp::ParseReply(*frame);
  return reply.ok() ? std::move(*reply) : json::object{};
}

// Sends a register on `fd` (kept open: a registration lives as long as its
// connection) and returns the version the broker's reply names.
Result<std::int64_t> RegisterOn(int fd, const json::object& request) {
  if (Status st = WriteFrame(fd, json::serialize(request)); !st.ok()) return st;
  auto frame = ReadFrame(fd, 10000ms);
  if (!frame.ok()) return frame.status();
  auto reply = lp::ParseReply(*frame);
  if (!reply.ok()) return reply.status();
  if (Status st = lp::ReplyStatus(*reply); !st.ok()) return st;
  auto decoded = lp::DecodeRegisterReply(*reply);
  if (!decoded.ok()) return decoded.status();
  return static_cast<std::int64_t>(decoded->version);
}

json::object RegisterAs(std::int64_t version) {
  json::object r = lp::RegisterRequest({.target = "exch01", .name = "versioned", .pid = ::getpid(),
                                        .owner = std::nullopt, .instance = {}});
  r[lp::req::kVersion] = version;
  r.erase(lp::req::kMinVersion);  // a client that speaks this one version
  return r;
}

// A register from a client speaking versions [min, max].
json::object RegisterSpeaking(std::int64_t min, std::int64_t max) {
  json::object r = RegisterAs(max);
  r[lp::req::kMinVersion] = min;
  return r;
}

// Registered clients and slots held on exch01, from the broker's views.
struct Footprint {
  std::size_t clients = 0;
  std::int64_t held = -1;
};
Footprint FootprintOf(const BrokerProcess& b) {
  Footprint f;
  const json::object c = AskBroker(b.socket(), lp::Op::kClients);
  if (const json::value* cs = c.if_contains("clients"); cs != nullptr && cs->is_array()) {
    f.clients = cs->as_array().size();
  }
  const json::object s = AskBroker(b.socket(), lp::Op::kStatus);
  if (const json::value* ts = s.if_contains("targets"); ts != nullptr && ts->is_array()) {
    for (const json::value& t : ts->as_array()) {
      if (t.as_object().at("name").as_string() == "exch01") {
        f.held = t.as_object().at("held").to_number<std::int64_t>();
      }
    }
  }
  return f;
}

class ProtocolVersion : public ::testing::Test {
 protected:
  void SetUp() override {
    BrokerTarget target;
    target.limit = 4;
    broker_ = std::make_unique<BrokerProcess>(dir_.path(), UniqueName("pv"),
                                              std::vector<BrokerTarget>{target});
    ASSERT_TRUE(broker_->Start()) << broker_->log();
  }
  ScratchDir dir_;
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(ProtocolVersion, BrokerRefusesANewerClientNamingBothVersionsAndChangesNothing) {
  const Footprint before = FootprintOf(*broker_);
  ASSERT_EQ(before.clients, 0u);
  ASSERT_EQ(before.held, 0);
  const std::int64_t newer = kLocalProtocolVersion + 1;
  const json::object reply = RawRequest(broker_->socket(), RegisterAs(newer));
  ASSERT_FALSE(reply.empty()) << "no answer";
  EXPECT_EQ(lp::ReplyStatus(reply).code(), Errc::kProtocol) << json::serialize(reply);
  const std::string message = lp::ReplyStatus(reply).message();
  EXPECT_THAT(message, HasSubstr("client speaks local protocol version " + std::to_string(newer)));
  EXPECT_THAT(message, HasSubstr("broker speaks local protocol version " +
                                 std::to_string(kLocalProtocolVersion)));
  EXPECT_THAT(message, HasSubstr("upgrade dsb-broker"));
  EXPECT_FALSE(reply.contains(lp::rep::kOwner)) << json::serialize(reply);
  const Footprint after = FootprintOf(*broker_);
  EXPECT_EQ(after.clients, 0u) << "a refused client was registered";
  EXPECT_EQ(after.held, 0) << "a refused client holds a slot";
  // Not only register: any op from a newer client is refused the same way.
  const json::object status = [&] {
    json::object r = lp::Request(lp::Op::kStatus);
    r[lp::req::kVersion] = newer;
    r.erase(lp::req::kMinVersion);
    return RawRequest(broker_->socket(), r);
  }();
  EXPECT_EQ(lp::ReplyStatus(status).code(), Errc::kProtocol) << json::serialize(status);
  std::printf("newer client: %s\n", message.c_str());
}

TEST_F(ProtocolVersion, BrokerRefusesAnOlderClientNamingBothVersionsAndChangesNothing) {
  const std::int64_t older = kMinLocalProtocolVersion - 1;
  const json::object reply = RawRequest(broker_->socket(), RegisterAs(older));
  ASSERT_FALSE(reply.empty()) << "no answer";
  EXPECT_EQ(lp::ReplyStatus(reply).code(), Errc::kProtocol) << json::serialize(reply);
  const std::string message = lp::ReplyStatus(reply).message();
  EXPECT_THAT(message, HasSubstr("client speaks local protocol version " + std::to_string(older)));
  EXPECT_THAT(message, HasSubstr("broker speaks local protocol version"));
  EXPECT_THAT(message, HasSubstr("upgrade the client"));
  const Footprint after = FootprintOf(*broker_);
  EXPECT_EQ(after.clients, 0u) << "a refused client was registered";
  EXPECT_EQ(after.held, 0) << "a refused client holds a slot";
  // A version that is no integer is refused too.
  json::object text = RegisterAs(1);
  text[lp::req::kVersion] = "1";
  const json::object bad = RawRequest(broker_->socket(), text);
  EXPECT_EQ(lp::ReplyStatus(bad).code(), Errc::kProtocol) << json::serialize(bad);
  EXPECT_EQ(FootprintOf(*broker_).clients, 0u);
  std::printf("older client: %s\n", message.c_str());
}

TEST_F(ProtocolVersion, CurrentAndVersionlessClientsRegisterAndAreToldTheVersion) {
  // The client library: registers (and holds its system slot in single mode).
  ClientOptions o;
  o.socket_path = broker_->socket().string();
  o.target = "exch01";
  o.name = "current";
  o.connect_timeout = 10s;
  std::error_code ec;
  std::string msg;
  auto client = Client::Connect(o, ec, &msg);
  ASSERT_TRUE(client) << msg;
  EXPECT_EQ(FootprintOf(*broker_).clients, 1u);
  // A register with no version (a client before the handshake) is version 1;
  // the reply says which version the broker speaks on the connection.
  auto fd = ConnectLocal(broker_->socket().string());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  json::object versionless = RegisterAs(1);
  versionless.erase(lp::req::kVersion);
  const Result<std::int64_t> version = RegisterOn(*fd, versionless);
  ASSERT_TRUE(version.ok()) << version.status().message();
  EXPECT_EQ(*version, 1);
  EXPECT_EQ(FootprintOf(*broker_).clients, 2u);
  ::close(*fd);
}

// A client of a later release that still speaks this release's version is
// served in it: the broker answers the newest version both speak.
TEST_F(ProtocolVersion, AClientRangeOverlappingTheBrokersGetsTheCommonVersion) {
  const std::int64_t later = kLocalProtocolVersion + 1;
  auto fd = ConnectLocal(broker_->socket().string());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  const Result<std::int64_t> version =
      RegisterOn(*fd, RegisterSpeaking(kLocalProtocolVersion, later));
  ASSERT_TRUE(version.ok()) << version.status().message();
  EXPECT_EQ(*version, kLocalProtocolVersion);
  EXPECT_EQ(FootprintOf(*broker_).clients, 1u);
  // A ping says the version too.
  json::object ping = lp::Request(lp::Op::kPing);
  ping[lp::req::kVersion] = later + 5;
  ping[lp::req::kMinVersion] = kMinLocalProtocolVersion;
  const json::object pong = RawRequest(broker_->socket(), ping);
  ASSERT_TRUE(lp::ReplyStatus(pong).ok()) << json::serialize(pong);
  ASSERT_TRUE(pong.contains(lp::rep::kVersion)) << json::serialize(pong);
  EXPECT_EQ(pong.at(lp::rep::kVersion).as_int64(), kLocalProtocolVersion);
  ::close(*fd);
}

// A client range disjoint from the broker's is refused with the broker's range
// in machine-readable fields, and nothing changes.
TEST_F(ProtocolVersion, ADisjointClientRangeIsRefusedWithTheBrokersRange) {
  const std::int64_t lo = kLocalProtocolVersion + 1;
  const std::int64_t hi = kLocalProtocolVersion + 3;
  const json::object reply = RawRequest(broker_->socket(), RegisterSpeaking(lo, hi));
  ASSERT_FALSE(reply.empty()) << "no answer";
  EXPECT_EQ(lp::ReplyStatus(reply).code(), Errc::kProtocol) << json::serialize(reply);
  EXPECT_THAT(lp::ReplyStatus(reply).message(),
              HasSubstr("client speaks local protocol versions " + std::to_string(lo) + " to " +
                        std::to_string(hi)));
  EXPECT_THAT(lp::ReplyStatus(reply).message(), HasSubstr("upgrade dsb-broker"));
  ASSERT_TRUE(reply.contains(lp::rep::kMinVersion)) << json::serialize(reply);
  ASSERT_TRUE(reply.contains(lp::rep::kMaxVersion)) << json::serialize(reply);
  EXPECT_EQ(reply.at(lp::rep::kMinVersion).as_int64(), kMinLocalProtocolVersion);
  EXPECT_EQ(reply.at(lp::rep::kMaxVersion).as_int64(), kLocalProtocolVersion);
  EXPECT_FALSE(reply.contains(lp::rep::kOwner));
  const Footprint after = FootprintOf(*broker_);
  EXPECT_EQ(after.clients, 0u) << "a refused client was registered";
  EXPECT_EQ(after.held, 0) << "a refused client holds a slot";
}

// A listener that answers every register in `version` (with a reply that is
// otherwise well formed), then waits for the client to close.
class FutureBroker {
 public:
  FutureBroker(const std::filesystem::path& path, std::int64_t version) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.string().size());
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
          ::listen(fd_, 4) == 0;
    if (!ok_) return;
    thread_ = std::thread([this, version] {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      if (ReadFrame(c, 10000ms).ok()) {
        json::object reply = lp::EncodeRegisterReply({.owner = 1,
                                                      .segment = "dsb-no-such-segment",
                                                      .instance = "1",
                                                      .system_slot_in_table = true,
                                                      .cluster = false,
                                                      .capacity = 4,
                                                      .version = version});
        (void)WriteFrame(c, json::serialize(reply));
        (void)ReadFrame(c, 10000ms);  // until the client closes (EOF)
      }
      ::close(c);
    });
  }
  ~FutureBroker() {
    if (thread_.joinable()) {
      ::shutdown(fd_, SHUT_RDWR);
      thread_.join();
    }
    if (fd_ >= 0) ::close(fd_);
    std::filesystem::remove(path_);
  }
  bool ok() const { return ok_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  bool ok_ = false;
  std::thread thread_;
};

TEST(ProtocolVersionClient, RefusesABrokerAnsweringInAVersionItDoesNotSpeak) {
  ScratchDir dir;
  for (const std::int64_t v : {std::int64_t{kLocalProtocolVersion} + 1,
                               std::int64_t{kMinLocalProtocolVersion} - 1}) {
    SCOPED_TRACE(v);
    const std::filesystem::path socket = dir.path() / "future.sock";
    FutureBroker fake(socket, v);
    ASSERT_TRUE(fake.ok());
    ClientOptions o;
    o.socket_path = socket.string();
    o.target = "exch01";
    o.connect_timeout = 10s;
    std::error_code ec;
    std::string msg;
    auto client = Client::Connect(o, ec, &msg);
    EXPECT_FALSE(client);
    EXPECT_EQ(ec, make_error_code(Errc::kProtocol)) << msg;
    EXPECT_THAT(msg, HasSubstr("answered in local protocol version " + std::to_string(v)));
    EXPECT_THAT(msg, HasSubstr("this client speaks version " +
                               std::to_string(kLocalProtocolVersion)));
    EXPECT_THAT(msg, HasSubstr(v > kLocalProtocolVersion ? "upgrade the client"
                                                         : "upgrade dsb-broker"));
    std::printf("client: %s\n", msg.c_str());
  }
}

}  // namespace
}  // namespace dsb::testing
