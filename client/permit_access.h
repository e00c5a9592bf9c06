// Internal: lets the C ABI turn Permits into plain (index, word) values and
// back without exposing the client's internals in the public header.
#ifndef DSB_CLIENT_PERMIT_ACCESS_H_
#define DSB_CLIENT_PERMIT_ACCESS_H_

#include <cstdint>
#include <string_view>
#include <system_error>

#include "dsb/client.h"

namespace dsb {

struct PermitAccess {
  static std::uint64_t Word(const Permit& p) { return p.word_; }
  // Forgets the slot without releasing it (ownership moves to the caller).
  static void Detach(Permit& p) { p.impl_ = nullptr; }
  static void ReleaseRaw(Client& c, std::uint32_t index, std::uint64_t word);
  static void ReleaseConfirmedRaw(Client& c, std::uint32_t index, std::uint64_t word);
  // May throw (allocation); the caller catches.
  static std::error_code ReportRefusalRaw(Client& c, std::string_view detail,
                                          std::uint32_t index, std::uint64_t word);
  static bool ShouldYieldRaw(const Client& c, std::uint32_t index, std::uint64_t word);
};

}  // namespace dsb

#endif  // DSB_CLIENT_PERMIT_ACCESS_H_
