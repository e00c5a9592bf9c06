// libFuzzer entry: the broker's local-socket request parser (broker/local_request.h) on
// arbitrary bytes, as a client or dsbctl might send them in one frame. It may not crash,
// hang, leak or hit undefined behaviour; a refusal is kProtocol or kInvalidArgument with a
// printable message; a success satisfies the ranges the header documents.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>

#include "broker/local_request.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  dsb::Result<dsb::broker::LocalRequest> r = dsb::broker::ParseLocalRequest(body);
  if (!r.ok()) {
    const dsb::Errc code = r.status().code();
    Require(code == dsb::Errc::kProtocol || code == dsb::Errc::kInvalidArgument);
    Require(!r.status().message().empty());
    for (char c : r.status().message()) Require(c >= 0x20 && c < 0x7f);
    return 0;
  }
  using dsb::broker::LocalOp;
  const dsb::broker::LocalRequest& req = *r;
  Require(req.slot.has_value() == req.word.has_value());
  Require(req.detail.size() <= 200 && req.name.size() <= 64);
  switch (req.op) {
    case LocalOp::kRegister:
      Require(!req.owner || *req.owner != 0);
      Require(req.owner || !req.instance);
      break;
    case LocalOp::kSetLimit:
      Require(req.limit >= 1 && req.limit <= 65535);
      break;
    case LocalOp::kReportSessionLimit:
      break;
    default:
      Require(req.target.empty() && !req.owner && !req.slot && req.detail.empty());
      break;
  }
  if (req.op != LocalOp::kRegister) Require(req.name == "client" && !req.owner);
  if (req.op != LocalOp::kReportSessionLimit) Require(!req.slot && req.detail.empty());
  // The op's name parses back to the same op (what dsbctl and clients send).
  const std::string again = std::string("{\"op\":\"") + dsb::broker::LocalOpName(req.op) +
                            "\",\"target\":\"t\",\"limit\":1,\"broker\":\"b\"}";
  auto back = dsb::broker::ParseLocalRequest(again);
  Require(back.ok() && back->op == req.op);
  return 0;
}
