// The local protocol's schema (common/local_protocol.h) as the broker's parser
// (broker/local_request.h) reads it: what the builders send parses back to the
// same request, every op is known by its name, and the version rule.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "broker/local_request.h"
#include "common/local_protocol.h"

namespace dsb::broker {
namespace {

namespace json = boost::json;
namespace lp = local_protocol;
using ::testing::HasSubstr;

Result<LocalRequest> Parse(const json::object& o) { return ParseLocalRequest(json::serialize(o)); }

TEST(LocalProtocol, WhatTheBuildersSendParsesBack) {
  auto reg = Parse(lp::RegisterRequest(
      {.target = "exch01", .name = "scope", .pid = 42, .owner = 7, .instance = "99"}));
  ASSERT_TRUE(reg.ok()) << reg.status().message();
  EXPECT_EQ(reg->op, LocalOp::kRegister);
  EXPECT_EQ(reg->version, kLocalProtocolVersion);
  EXPECT_EQ(reg->target, "exch01");
  EXPECT_EQ(reg->name, "scope");
  EXPECT_EQ(reg->owner, 7u);
  EXPECT_EQ(reg->instance, "99");

  auto report = Parse(lp::ReportSessionLimitRequest("ec=1", std::pair{3u, std::uint64_t{1} << 63}));
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->slot, 3u);
  EXPECT_EQ(report->word, std::uint64_t{1} << 63);
  EXPECT_EQ(report->detail, "ec=1");

  auto set = Parse(lp::SetLimitRequest("exch01", 12));
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_EQ(set->limit, 12u);

  auto confirm = Parse(lp::ConfirmStoppedRequest("ws2"));
  ASSERT_TRUE(confirm.ok()) << confirm.status().message();
  EXPECT_EQ(confirm->broker, "ws2");

  for (const lp::OpName& o : lp::kOps) {
    auto r = Parse(lp::Request(o.op));
    if (o.op == LocalOp::kRegister || o.op == LocalOp::kSetLimit ||
        o.op == LocalOp::kConfirmStopped) {
      EXPECT_FALSE(r.ok()) << o.name << " needs arguments";
      continue;
    }
    ASSERT_TRUE(r.ok()) << o.name << ": " << r.status().message();
    EXPECT_EQ(r->op, o.op);
    EXPECT_EQ(LocalOpName(r->op), o.name);
  }
}

TEST(LocalProtocol, UnknownOpListsEveryOp) {
  auto r = ParseLocalRequest(R"({"op":"frob"})");
  ASSERT_FALSE(r.ok());
  for (const lp::OpName& o : lp::kOps) EXPECT_THAT(r.status().message(), HasSubstr(o.name));
  EXPECT_THAT(r.status().message(), HasSubstr("(known: " + lp::KnownOps() + ")"));
}

TEST(LocalProtocol, VersionOutsideTheBrokersRangeIsRefusedBeforeTheOp) {
  // Table: version as sent -> accepted, or the words the refusal must carry.
  struct Case {
    json::value version;
    bool ok;
    std::string says;
  };
  const Case cases[] = {
      {json::value(kLocalProtocolVersion), true, ""},
      {json::value(kMinLocalProtocolVersion), true, ""},
      {json::value(kLocalProtocolVersion + 1), false, "upgrade dsb-broker"},
      {json::value(kMinLocalProtocolVersion - 1), false, "upgrade the client"},
      {json::value(-5), false, "upgrade the client"},
      {json::value("1"), false, "'version' must be an integer"},
      {json::value(1.5), false, "'version' must be an integer"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(json::serialize(c.version));
    json::object reg = lp::RegisterRequest(
        {.target = "t", .name = "n", .pid = 1, .owner = std::nullopt, .instance = {}});
    reg[lp::req::kVersion] = c.version;
    auto r = Parse(reg);
    EXPECT_EQ(r.ok(), c.ok) << (r.ok() ? "" : r.status().message());
    if (c.ok) continue;
    EXPECT_EQ(r.status().code(), Errc::kProtocol);
    EXPECT_THAT(r.status().message(), HasSubstr(c.says));
    // Even an unknown op with a bad version is told about the version.
    json::object frob = reg;
    frob[lp::req::kOp] = "frob";
    auto f = Parse(frob);
    ASSERT_FALSE(f.ok());
    EXPECT_THAT(f.status().message(), HasSubstr(c.says));
  }
  // Absent: version 1 (a client before the handshake).
  auto none = ParseLocalRequest(R"({"op":"ping"})");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->version, 1);
}

TEST(LocalProtocol, ClientAcceptsOnlyBrokerVersionsItSpeaks) {
  EXPECT_TRUE(lp::CheckBrokerVersion(std::nullopt).ok()) << "a broker before the handshake";
  EXPECT_TRUE(lp::CheckBrokerVersion(kLocalProtocolVersion).ok());
  const Status newer = lp::CheckBrokerVersion(kLocalProtocolVersion + 1);
  EXPECT_EQ(newer.code(), Errc::kProtocol);
  EXPECT_THAT(newer.message(), HasSubstr("upgrade the client"));
  const Status older = lp::CheckBrokerVersion(kMinLocalProtocolVersion - 1);
  EXPECT_THAT(older.message(), HasSubstr("upgrade dsb-broker"));
}

TEST(LocalProtocol, RegisterReplyRoundTripsAndMissingFieldsAreNamed) {
  const lp::RegisterReply sent{.owner = 5,
                               .segment = "dsb-x-exch01",
                               .instance = "123",
                               .system_slot_in_table = true,
                               .cluster = false,
                               .capacity = 9,
                               .version = kLocalProtocolVersion};
  json::object o = lp::EncodeRegisterReply(sent);
  EXPECT_TRUE(lp::ReplyStatus(o).ok());
  auto got = lp::DecodeRegisterReply(o);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(got->owner, 5u);
  EXPECT_EQ(got->segment, "dsb-x-exch01");
  EXPECT_EQ(got->instance, "123");
  EXPECT_TRUE(got->system_slot_in_table);
  EXPECT_FALSE(got->cluster);
  EXPECT_EQ(got->capacity, 9u);
  EXPECT_EQ(got->version, kLocalProtocolVersion);
  o.erase(lp::rep::kVersion);
  EXPECT_EQ(lp::DecodeRegisterReply(o)->version, 1) << "a broker before the handshake";
  o.erase(lp::rep::kSegment);
  auto missing = lp::DecodeRegisterReply(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("'segment'"));
  const Status err = lp::ReplyStatus(lp::ErrorReply(Errc::kUnknownTarget, "no such"));
  EXPECT_EQ(err.code(), Errc::kUnknownTarget);
  EXPECT_EQ(err.message(), "no such");
}

}  // namespace
}  // namespace dsb::broker
