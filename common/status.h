// Status: an error code plus a human message naming the bad input.
// Internal (not installed). The OK path carries no allocation.
#ifndef DSB_COMMON_STATUS_H_
#define DSB_COMMON_STATUS_H_

#include <string>
#include <system_error>
#include <utility>

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

// A value or a Status (std::expected is C++23).
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)), has_value_(true) {}  // NOLINT
  Result(Status status) : status_(std::move(status)) {}          // NOLINT
  bool ok() const { return has_value_; }
  const Status& status() const { return status_; }
  T& value() & { return value_; }
  const T& value() const& { return value_; }
  T&& value() && { return std::move(value_); }
  T* operator->() { return &value_; }
  const T* operator->() const { return &value_; }
  T& operator*() { return value_; }

 private:
  T value_{};
  Status status_;
  bool has_value_ = false;
};

}  // namespace dsb

#endif  // DSB_COMMON_STATUS_H_
