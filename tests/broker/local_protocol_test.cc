// The local protocol's schema (common/local_protocol.h) as the broker's parser
// (broker/local_request.h) reads it: what the builders send parses back to the
// same request, every op is known by its name, and the version rule.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

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

  auto revoke = Parse(lp::RevokeRequest("ws2", "exch01", true, true));
  ASSERT_TRUE(revoke.ok()) << revoke.status().message();
  EXPECT_EQ(revoke->op, LocalOp::kRevoke);
  EXPECT_EQ(revoke->broker, "ws2");
  EXPECT_EQ(revoke->target, "exch01");
  EXPECT_TRUE(revoke->force);
  EXPECT_TRUE(revoke->confirm_dead);

  for (LocalOp op : {LocalOp::kDrain, LocalOp::kUndrain}) {
    auto drain = Parse(lp::DrainRequest(op, "ws3"));
    ASSERT_TRUE(drain.ok()) << drain.status().message();
    EXPECT_EQ(drain->op, op);
    EXPECT_EQ(drain->broker, "ws3");
  }

  for (const lp::OpName& o : lp::kOps) {
    auto r = Parse(lp::Request(o.op));
    if (o.op == LocalOp::kRegister || o.op == LocalOp::kSetLimit ||
        o.op == LocalOp::kConfirmStopped || o.op == LocalOp::kRevoke ||
        o.op == LocalOp::kDrain || o.op == LocalOp::kUndrain) {
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
    reg.erase(lp::req::kMinVersion);  // a client that speaks this one version
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

// The handshake's rule as a pure function: the newest version both speak,
// min(client max, broker max), if it is >= max(client min, broker min).
TEST(LocalProtocol, NegotiateVersionPicksTheNewestVersionBothSpeak) {
  struct Case {
    lp::VersionRange client;
    lp::VersionRange broker;
    std::int64_t agreed;  // 0: refused
    std::vector<std::string> says;
  };
  const Case cases[] = {
      {{1, 1}, {1, 1}, 1, {}},
      {{1, 2}, {1, 1}, 1, {}},  // a later client that still speaks 1, a broker of version 1
      {{1, 1}, {1, 2}, 1, {}},  // an older client, a later broker that still serves 1
      {{2, 3}, {1, 2}, 2, {}},
      {{1, 5}, {3, 4}, 4, {}},
      {{3, 4}, {1, 5}, 4, {}},
      {{2, 2}, {2, 2}, 2, {}},
      {{2, 2},
       {1, 1},
       0,
       {"the client speaks local protocol version 2 but this broker speaks local protocol "
        "version 1",
        "upgrade dsb-broker to a release that speaks version 2"}},
      {{5, 7},
       {1, 3},
       0,
       {"client speaks local protocol versions 5 to 7", "broker speaks local protocol versions "
        "1 to 3", "upgrade dsb-broker to a release that speaks version 5"}},
      {{1, 1},
       {2, 3},
       0,
       {"client speaks local protocol version 1 but this broker speaks local protocol versions "
        "2 to 3",
        "upgrade the client (libdsb, dsbctl) to a release that speaks version 2"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(lp::DescribeVersions(c.client) + " / " + lp::DescribeVersions(c.broker));
    auto v = lp::NegotiateVersion(c.client, c.broker);
    if (c.agreed != 0) {
      ASSERT_TRUE(v.ok()) << v.status().message();
      EXPECT_EQ(*v, c.agreed);
      continue;
    }
    ASSERT_FALSE(v.ok()) << "agreed on " << *v;
    EXPECT_EQ(v.status().code(), Errc::kProtocol);
    for (const std::string& says : c.says) EXPECT_THAT(v.status().message(), HasSubstr(says));
  }
}

// The parser applies the rule to "version" and "min_version", and a refusal's
// reply carries the broker's range.
TEST(LocalProtocol, ParserNegotiatesFromTheClientsRange) {
  json::object overlapping = lp::Request(lp::Op::kPing);
  overlapping[lp::req::kVersion] = kLocalProtocolVersion + 1;
  overlapping[lp::req::kMinVersion] = kLocalProtocolVersion;
  auto ok = Parse(overlapping);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->version, kLocalProtocolVersion);

  json::object disjoint = lp::Request(lp::Op::kPing);
  disjoint[lp::req::kVersion] = kLocalProtocolVersion + 2;
  disjoint[lp::req::kMinVersion] = kLocalProtocolVersion + 1;
  auto refused = Parse(disjoint);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(),
              HasSubstr("client speaks local protocol versions " +
                        std::to_string(kLocalProtocolVersion + 1) + " to " +
                        std::to_string(kLocalProtocolVersion + 2)));
  const json::object reply = lp::RefusalReply(refused.status());
  EXPECT_EQ(lp::ReplyStatus(reply).code(), Errc::kProtocol);
  EXPECT_EQ(reply.at(lp::rep::kMinVersion).as_int64(), kMinLocalProtocolVersion);
  EXPECT_EQ(reply.at(lp::rep::kMaxVersion).as_int64(), kLocalProtocolVersion);
  // Not a protocol refusal: no range.
  EXPECT_FALSE(lp::RefusalReply(Status{Errc::kInvalidArgument, "x"}).contains(lp::rep::kMinVersion));

  // What the builders send: the client's whole range.
  const json::object sent = lp::Request(lp::Op::kStatus);
  EXPECT_EQ(sent.at(lp::req::kVersion).as_int64(), kLocalProtocolVersion);
  EXPECT_EQ(sent.at(lp::req::kMinVersion).as_int64(), kMinLocalProtocolVersion);
}

TEST(LocalProtocol, SharedArgumentChecks) {
  EXPECT_TRUE(lp::CheckLimit(1).ok());
  EXPECT_TRUE(lp::CheckLimit(65535).ok());
  EXPECT_THAT(lp::CheckLimit(0).message(), HasSubstr("between 1 and 65535, got 0"));
  EXPECT_EQ(lp::CheckLimit(65536).code(), Errc::kInvalidArgument);
  EXPECT_TRUE(lp::CheckBrokerId("ws2").ok());
  EXPECT_TRUE(lp::CheckBrokerId(std::string(128, 'b')).ok());
  EXPECT_THAT(lp::CheckBrokerId("").message(), HasSubstr("1..128 bytes, got 0"));
  EXPECT_EQ(lp::CheckBrokerId(std::string(129, 'b')).code(), Errc::kInvalidArgument);
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
