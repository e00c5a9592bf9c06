// dsb error codes: every expected failure in dsb has exactly one name here.
//
// The codes, their numbers, wire names and texts are listed once, in
// dsb/errc_list.h (C-compatible): Errc here and DSB_OK/DSB_E_* in dsb.h both
// expand that list. The numbers are part of the C ABI: never renumber, only
// append.
#ifndef DSB_ERRC_H_
#define DSB_ERRC_H_

#include <system_error>

#include "dsb/errc_list.h"

namespace dsb {

// One enumerator per entry of dsb/errc_list.h (kOk = 0, kTimeout = 1, ...;
// see that list for each code's meaning), which dsb.h's DSB_E_* expand too.
enum class Errc : int {
#define DSB_ERRC_CPP_ENUMERATOR_(c_name, cpp_name, value, wire_name, message) cpp_name = value,
  DSB_ERRC_LIST(DSB_ERRC_CPP_ENUMERATOR_)
#undef DSB_ERRC_CPP_ENUMERATOR_
};

const std::error_category& dsb_category() noexcept;

inline std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), dsb_category()};
}

// A stable short name ("timeout", "unknown_target", ...) used on the wire and in JSON.
const char* ErrcName(Errc e) noexcept;
// The fixed English text of a code (static storage; never null).
const char* ErrcMessage(Errc e) noexcept;
// The inverse of ErrcName; kInternal for an unknown name.
Errc ErrcFromName(const char* name) noexcept;

}  // namespace dsb

template <>
struct std::is_error_code_enum<dsb::Errc> : std::true_type {};

#endif  // DSB_ERRC_H_
