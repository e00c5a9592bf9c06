// Durations as written in config files: "250ms", "15s", "2m", "1h", "1h30m", "0s".
#ifndef DSB_BROKER_CONFIG_DURATION_H_
#define DSB_BROKER_CONFIG_DURATION_H_

#include <chrono>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsb::config {

// Parses one or more "<digits><unit>" groups, unit one of ms, s, m, h; the groups add up
// ("1h30m"). No sign, no fraction, no spaces.
// Success: the total as nanoseconds (>= 0).
// Failure (Errc::kConfig; the message names the text but no file or key, callers prefix those):
//   empty text; digits without a unit ("15": the message says to add a unit); an unknown unit;
//   a fraction or sign; a total above 100000h (kept far below int64 nanoseconds).
Result<std::chrono::nanoseconds> ParseDuration(std::string_view text);

// The shortest exact spelling ParseDuration accepts back ("1h30m", "250ms", "0s").
// Sub-millisecond remainders are written as ms rounded down.
std::string FormatDuration(std::chrono::nanoseconds d);

}  // namespace dsb::config

#endif  // DSB_BROKER_CONFIG_DURATION_H_
