#include "dsb/errc.h"

#include <cstring>
#include <string>

namespace dsb {
namespace {

struct Entry {
  Errc code;
  const char* name;
  const char* message;
};

// From the one list of codes (dsb/errc_list.h): every Errc has its entry.
constexpr Entry kEntries[] = {
#define DSB_ERRC_ENTRY_(c_name, cpp_name, value, wire_name, message) \
  {Errc::cpp_name, wire_name, message},
    DSB_ERRC_LIST(DSB_ERRC_ENTRY_)
#undef DSB_ERRC_ENTRY_
};

const Entry* Find(int code) {
  for (const Entry& e : kEntries) {
    if (static_cast<int>(e.code) == code) return &e;
  }
  return nullptr;
}

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "dsb"; }
  std::string message(int code) const override {
    const Entry* e = Find(code);
    return e != nullptr ? e->message : "unknown dsb error " + std::to_string(code);
  }
};

}  // namespace

const std::error_category& dsb_category() noexcept {
  static const Category category;
  return category;
}

const char* ErrcName(Errc e) noexcept {
  const Entry* entry = Find(static_cast<int>(e));
  return entry != nullptr ? entry->name : "internal";
}

const char* ErrcMessage(Errc e) noexcept {
  const Entry* entry = Find(static_cast<int>(e));
  return entry != nullptr ? entry->message : "unknown dsb error";
}

Errc ErrcFromName(const char* name) noexcept {
  if (name == nullptr) return Errc::kInternal;
  for (const Entry& e : kEntries) {
    if (std::strcmp(e.name, name) == 0) return e.code;
  }
  return Errc::kInternal;
}

}  // namespace dsb
