#include "broker/config/duration.h"

#include <cstdint>

#include "broker/config/quote.h"

namespace dsb::config {
namespace {

using std::chrono::nanoseconds;

// Far below INT64_MAX nanoseconds (~2.5e6 h), so sums of a few durations cannot overflow.
constexpr std::int64_t kMaxNanos = std::int64_t{100000} * 3600 * 1000 * 1000 * 1000;

Status Bad(std::string_view text, std::string_view why) {
  return Status(Errc::kConfig, "invalid duration " + Quote(text) + ": " + std::string(why));
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace

Result<nanoseconds> ParseDuration(std::string_view text) {
  if (text.empty()) return Bad(text, "empty; write a number and a unit, e.g. \"15s\"");
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    if (!IsDigit(text[i])) {
      return Bad(text, "expected a digit at offset " + std::to_string(i) +
                           "; write whole numbers with a unit (ms, s, m, h), e.g. \"1500ms\"");
    }
    std::int64_t number = 0;
    while (i < text.size() && IsDigit(text[i])) {
      number = number * 10 + (text[i] - '0');
      if (number > kMaxNanos) return Bad(text, "too large (at most 100000h)");
      ++i;
    }
    const std::size_t unit_begin = i;
    while (i < text.size() && IsAlpha(text[i])) ++i;
    const std::string_view unit = text.substr(unit_begin, i - unit_begin);
    std::int64_t scale = 0;
    if (unit == "ms") {
      scale = 1000 * 1000;
    } else if (unit == "s") {
      scale = std::int64_t{1000} * 1000 * 1000;
    } else if (unit == "m") {
      scale = std::int64_t{60} * 1000 * 1000 * 1000;
    } else if (unit == "h") {
      scale = std::int64_t{3600} * 1000 * 1000 * 1000;
    } else if (unit.empty()) {
      if (i < text.size() && text[i] == '.') {
        return Bad(text, "fractions are not accepted; use a smaller unit, e.g. \"1500ms\"");
      }
      return Bad(text, "missing unit; add a unit (ms, s, m or h), e.g. \"" +
                           std::to_string(number) + "s\"");
    } else {
      return Bad(text, "unknown unit " + Quote(unit) + "; use ms, s, m or h");
    }
    if (number > (kMaxNanos - total) / scale) return Bad(text, "too large (at most 100000h)");
    total += number * scale;
  }
  return nanoseconds(total);
}

std::string FormatDuration(nanoseconds d) {
  using std::chrono::duration_cast;
  std::int64_t ms = duration_cast<std::chrono::milliseconds>(d).count();
  if (ms <= 0) return "0s";
  std::string out;
  const std::int64_t h = ms / 3600000;
  ms %= 3600000;
  const std::int64_t m = ms / 60000;
  ms %= 60000;
  const std::int64_t s = ms / 1000;
  ms %= 1000;
  if (h > 0) out += std::to_string(h) + "h";
  if (m > 0) out += std::to_string(m) + "m";
  if (s > 0) out += std::to_string(s) + "s";
  if (ms > 0) out += std::to_string(ms) + "ms";
  return out;
}

}  // namespace dsb::config
