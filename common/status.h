// Status: an error code plus a human message naming the bad input.
// Internal (not installed). The OK path carries no allocation.
#ifndef DSB_COMMON_STATUS_H_
#define DSB_COMMON_STATUS_H_

#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "common/check.h"
#include "dsb/errc.h"

namespace dsb {

class Status {
 public:
  Status() = default;
  Status(Errc code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }

  bool ok() const { return code_ == Errc::kOk; }
  explicit operator bool() const { return ok(); }
  Errc code() const { return code_; }
  // The full message: the specific text if any, else the generic one for the code.
  std::string message() const {
    if (!message_.empty()) return message_;
    return make_error_code(code_).message();
  }

 private:
  Errc code_ = Errc::kOk;
  std::string message_;
};

// A value or a Status (std::expected is C++23). It holds a T only when it has
// one: an error constructs no T (T needs no default constructor and no
// "empty" state).
//  - Result(value): ok(), status() is Ok.
//  - Result(status): REQUIRES !status.ok() (an OK status carries no value: a
//    bug, checked).
//  - value(), *, ->: REQUIRES ok(); on an error they are a contract violation
//    (DSB_CHECK aborts naming the status).
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    DSB_CHECK(!status_.ok(), "Result<T> made from an OK status without a value");
  }
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return Get(); }
  const T& value() const& { return Get(); }
  T&& value() && { return std::move(Get()); }
  T* operator->() { return &Get(); }
  const T* operator->() const { return &Get(); }
  T& operator*() & { return Get(); }
  const T& operator*() const& { return Get(); }
  T&& operator*() && { return std::move(Get()); }

 private:
  T& Get() {
    DSB_CHECK(value_.has_value(), "value of a failed Result<T>: %s", status_.message().c_str());
    return *value_;
  }
  const T& Get() const {
    DSB_CHECK(value_.has_value(), "value of a failed Result<T>: %s", status_.message().c_str());
    return *value_;
  }

  std::optional<T> value_;
  Status status_;  // Ok when value_ holds a value
};

}  // namespace dsb

#endif  // DSB_COMMON_STATUS_H_
