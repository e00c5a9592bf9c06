// The local socket's request parser (broker/local_request.h): what clients and dsbctl
// send, and what a broken or hostile peer may send instead.
#include "broker/local_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dsb::broker {
namespace {

using ::testing::HasSubstr;

TEST(LocalRequest, ParsesWhatClientsAndDsbctlSend) {
  auto reg = ParseLocalRequest(
      R"({"op":"register","version":1,"target":"exch01","name":"digiscope","pid":4242})");
  ASSERT_TRUE(reg.ok()) << reg.status().message();
  EXPECT_EQ(reg->op, LocalOp::kRegister);
  EXPECT_EQ(reg->target, "exch01");
  EXPECT_EQ(reg->name, "digiscope");
  EXPECT_FALSE(reg->owner.has_value());

  auto adopt = ParseLocalRequest(
      R"({"op":"register","target":"exch01","owner":4294967295,"instance":"77"})");
  ASSERT_TRUE(adopt.ok()) << adopt.status().message();
  EXPECT_EQ(adopt->owner, 4294967295u);
  EXPECT_EQ(adopt->instance, "77");

  auto report = ParseLocalRequest(
      R"({"op":"report_session_limit","detail":"ec=1246","slot":3,"word":18446744073709551615})");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->op, LocalOp::kReportSessionLimit);
  EXPECT_EQ(report->slot, 3u);
  EXPECT_EQ(report->word, 18446744073709551615u);
  EXPECT_EQ(report->detail, "ec=1246");

  auto set = ParseLocalRequest(R"({"op":"set_limit","target":"exch01","limit":12,"who":"x"})");
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_EQ(set->op, LocalOp::kSetLimit);
  EXPECT_EQ(set->limit, 12u);

  for (const char* op : {"goodbye", "ping", "status", "clients", "leases"}) {
    auto r = ParseLocalRequest(std::string(R"({"op":")") + op + "\"}");
    ASSERT_TRUE(r.ok()) << op;
    EXPECT_STREQ(LocalOpName(r->op), op);
  }
}

// Issue 9: a name or detail is a label; it is taken, but stored escaped, so no
// log line, reply or dsbctl row can carry a control character from it.
TEST(LocalRequest, NamesAndDetailsAreStoredEscaped) {
  auto reg = ParseLocalRequest(
      R"({"op":"register","target":"t","name":"a\u001b[2J\nINFO fake\u0007\u009b\u202e"})");
  ASSERT_TRUE(reg.ok());
  EXPECT_EQ(reg->name, "a\\x1b[2J\\nINFO fake\\x07\\u{009b}\\u{202e}");
  auto report = ParseLocalRequest(R"({"op":"report_session_limit","detail":"x\ry"})");
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->detail, "x\\ry");
  // Escaped text is cut to 64 bytes, never inside an escape.
  auto many = ParseLocalRequest(R"({"op":"register","target":"t","name":")" +
                                std::string(40, 'n') + std::string(40, '\x01') + "\"}");
  ASSERT_FALSE(many.ok()) << "raw control bytes are not valid JSON";
  std::string escapes;
  for (int i = 0; i < 40; ++i) escapes += "\\u0001";
  auto cut = ParseLocalRequest(R"({"op":"register","target":"t","name":")" + escapes + "\"}");
  ASSERT_TRUE(cut.ok());
  EXPECT_LE(cut->name.size(), 64u);
  EXPECT_EQ(cut->name.substr(cut->name.size() - 3), "...");
  EXPECT_EQ(cut->name.find('\x01'), std::string::npos);
}

TEST(LocalRequest, CutsLongNamesAndDetails) {
  auto reg = ParseLocalRequest(R"({"op":"register","target":"t","name":")" +
                               std::string(300, 'n') + "\"}");
  ASSERT_TRUE(reg.ok());
  EXPECT_EQ(reg->name.size(), 64u);
  auto report = ParseLocalRequest(R"({"op":"report_session_limit","detail":")" +
                                  std::string(300, 'd') + "\"}");
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->detail.size(), 200u);
}

TEST(LocalRequest, AnOlderClientsReportWithoutAUsablePermitIsStillAReport) {
  for (const char* body : {R"({"op":"report_session_limit"})",
                           R"({"op":"report_session_limit","slot":3})",
                           R"({"op":"report_session_limit","slot":-1,"word":5})",
                           R"({"op":"report_session_limit","slot":1.5,"word":5})",
                           R"({"op":"report_session_limit","slot":1.0,"word":5})",
                           R"({"op":"report_session_limit","slot":1,"word":"5"})",
                           R"({"op":"report_session_limit","slot":4294967296,"word":5})"}) {
    auto r = ParseLocalRequest(body);
    ASSERT_TRUE(r.ok()) << body;
    EXPECT_FALSE(r->slot.has_value()) << body;
    EXPECT_FALSE(r->word.has_value()) << body;
  }
}

TEST(LocalRequest, RefusesBadRequestsWithPrintableMessages) {
  const std::string deep = std::string(5000, '[') + std::string(5000, ']');
  const std::string deep_value =
      R"({"op":"ping","x":)" + std::string(5000, '[') + std::string(5000, ']') + "}";
  const struct {
    std::string body;
    Errc code;
    std::vector<std::string> says;  // each must be in the message
  } cases[] = {
      {"", Errc::kProtocol, {"request is not a JSON object: "}},
      {"[1]", Errc::kProtocol, {"request is not a JSON object: got [1] (an array)"}},
      {R"({"op":"register","target":"ex)", Errc::kProtocol, {"request is not a JSON object: "}},
      // The parser's own error, with its nesting limit.
      {deep, Errc::kProtocol, {"request is not a JSON object: ", "levels of nesting"}},
      {deep_value, Errc::kProtocol, {"request is not a JSON object: ", "levels of nesting"}},
      {R"({"opx":1})", Errc::kProtocol, {"request has no 'op'"}},
      {R"({"op":7})", Errc::kProtocol, {"'op' must be a string, got 7 (an integer)"}},
      {R"({"op":3})", Errc::kProtocol, {"'op' must be a string, got 3 (an integer)"}},
      {R"({"op":null})", Errc::kProtocol, {"'op' must be a string, got null (null)"}},
      {R"({"op":"frob\u0001"})", Errc::kProtocol, {"unknown op 'frob\\x01' (known: register"}},
      // The version: the value and its type, whatever it is.
      {R"({"op":"ping","version":9223372036854775808})", Errc::kProtocol,
       {"'version' must be an integer", "got 9223372036854775808 (an integer)"}},
      {R"({"op":"ping","version":1.0})", Errc::kProtocol,
       {"'version' must be an integer", "got 1E0 (a number with a fraction or exponent)"}},
      {R"({"op":"ping","version":null})", Errc::kProtocol,
       {"'version' must be an integer", "got null (null)"}},
      {R"({"op":"ping","version":"1"})", Errc::kProtocol,
       {"'version' must be an integer", "got \"1\" (a string)"}},
      {R"({"op":"ping","version":1,"min_version":2})", Errc::kProtocol,
       {"'min_version' must be an integer", "got 2 (an integer)", "at most 'version', 1"}},
      {R"({"op":"ping","min_version":true})", Errc::kProtocol,
       {"'min_version' must be an integer", "got true (a boolean)"}},
      {R"({"op":"register"})", Errc::kProtocol, {"register: needs a string 'target'"}},
      {R"({"op":"register","target":1})", Errc::kProtocol,
       {"register: 'target' must be a string, got 1 (an integer)"}},
      // An instance that is not a string used to be ignored silently.
      {R"({"op":"register","target":"t","owner":5,"instance":5})", Errc::kProtocol,
       {"register: 'instance' must be a string, got 5 (an integer)"}},
      {R"({"op":"register","target":"t","instance":[1]})", Errc::kProtocol,
       {"register: 'instance' must be a string, got [1] (an array)"}},
      // An owner that is not a 32-bit id used to throw (a string) or be truncated (2^32 + 5
      // adopted owner 5).
      {R"({"op":"register","target":"t","owner":"5"})", Errc::kProtocol,
       {"register: 'owner' must be an integer between 1 and 4294967295, got \"5\" (a string)"}},
      {R"({"op":"register","target":"t","owner":4294967301})", Errc::kProtocol,
       {"register: 'owner' must be an integer between 1 and 4294967295, got 4294967301 (an "
        "integer)"}},
      {R"({"op":"register","target":"t","owner":0})", Errc::kProtocol,
       {"register: 'owner' must be an integer between 1 and 4294967295, got 0 (an integer)"}},
      // One rule for every integer: 1.0 is no integer here either.
      {R"({"op":"register","target":"t","owner":1.0})", Errc::kProtocol,
       {"register: 'owner' must be an integer", "got 1E0 (a number with a fraction or exponent)"}},
      {R"({"op":"set_limit","target":"t"})", Errc::kInvalidArgument,
       {"set_limit: needs an integer 'limit'"}},
      {R"({"op":"set_limit","limit":5})", Errc::kInvalidArgument,
       {"set_limit: needs a string 'target'"}},
      {R"({"op":"set_limit","target":5,"limit":5})", Errc::kInvalidArgument,
       {"set_limit: 'target' must be a string, got 5 (an integer)"}},
      {R"({"op":"set_limit","target":"t","limit":1.5})", Errc::kInvalidArgument,
       {"set_limit: 'limit' must be an integer", "got 1.5E0 (a number with a fraction"}},
      {R"({"op":"set_limit","target":"t","limit":5.0})", Errc::kInvalidArgument,
       {"set_limit: 'limit' must be an integer", "got 5E0 (a number with a fraction"}},
      {R"({"op":"set_limit","target":"t","limit":1e20})", Errc::kInvalidArgument,
       {"set_limit: 'limit' must be an integer", "got 1E20 (a number with a fraction"}},
      {R"({"op":"set_limit","target":"t","limit":18446744073709551615})", Errc::kInvalidArgument,
       {"set_limit: 'limit' must be an integer", "got 18446744073709551615 (an integer)"}},
      {R"({"op":"set_limit","target":"t","limit":0})", Errc::kInvalidArgument,
       {"set_limit: limit must be between 1 and 65535, got 0"}},
      {R"({"op":"set_limit","target":"t","limit":65536})", Errc::kInvalidArgument,
       {"set_limit: limit must be between 1 and 65535, got 65536"}},
      {R"({"op":"confirm_stopped","broker":""})", Errc::kInvalidArgument,
       {"confirm_stopped: 'broker': a broker id must be 1..128 bytes, got 0"}},
      {R"({"op":"confirm_stopped","broker":")" + std::string(129, 'b') + "\"}",
       Errc::kInvalidArgument, {"a broker id must be 1..128 bytes, got 129"}},
      {R"({"op":"confirm_stopped","broker":7})", Errc::kInvalidArgument,
       {"confirm_stopped: 'broker' must be a string, got 7 (an integer)"}},
      {R"({"op":"revoke"})", Errc::kInvalidArgument, {"revoke: needs a string 'broker'"}},
      {R"({"op":"drain","broker":""})", Errc::kInvalidArgument,
       {"drain: 'broker': a broker id must be 1..128 bytes, got 0"}},
      {R"({"op":"undrain","broker":[]})", Errc::kInvalidArgument,
       {"undrain: 'broker' must be a string, got [] (an array)"}},
      {R"({"op":"revoke","broker":"ws2","target":3})", Errc::kInvalidArgument,
       {"revoke: 'target' must be a string, got 3 (an integer)"}},
      {R"({"op":"revoke","broker":"ws2","force":"yes"})", Errc::kInvalidArgument,
       {"revoke: 'force' must be a boolean, got \"yes\" (a string)"}},
      {R"({"op":"revoke","broker":"ws2","confirm_dead":1})", Errc::kInvalidArgument,
       {"revoke: 'confirm_dead' must be a boolean, got 1 (an integer)"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body.substr(0, 120));
    auto r = ParseLocalRequest(c.body);
    ASSERT_FALSE(r.ok()) << "accepted";
    EXPECT_EQ(r.status().code(), c.code);
    for (const std::string& says : c.says) EXPECT_THAT(r.status().message(), HasSubstr(says));
    for (char ch : r.status().message()) EXPECT_TRUE(ch >= 0x20 && ch < 0x7f);
  }
}

TEST(LocalRequest, ParsesRevokeDrainAndUndrain) {
  namespace lp = local_protocol;
  auto r = ParseLocalRequest(boost::json::serialize(lp::RevokeRequest("ws2", "exch01", true, true)));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->op, LocalOp::kRevoke);
  EXPECT_EQ(r->broker, "ws2");
  EXPECT_EQ(r->target, "exch01");
  EXPECT_TRUE(r->force);
  EXPECT_TRUE(r->confirm_dead);
  r = ParseLocalRequest(boost::json::serialize(lp::RevokeRequest("ws2")));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->target, "");
  EXPECT_FALSE(r->force);
  EXPECT_FALSE(r->confirm_dead);
  for (lp::Op op : {lp::Op::kDrain, lp::Op::kUndrain}) {
    r = ParseLocalRequest(boost::json::serialize(lp::DrainRequest(op, "ws3")));
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->op, op);
    EXPECT_EQ(r->broker, "ws3");
  }
}

// Echoed values are cut: a huge value does not make a huge message.
TEST(LocalRequest, EchoedValuesAreCut) {
  auto r = ParseLocalRequest(R"({"op":"ping","version":")" + std::string(10000, 'v') + "\"}");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("(a string)"));
  EXPECT_LT(r.status().message().size(), 200u);
}

}  // namespace
}  // namespace dsb::broker
