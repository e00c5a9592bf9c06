// Wall-clock times as people read them in status replies and logs.
#ifndef DSB_COMMON_UTC_TIME_H_
#define DSB_COMMON_UTC_TIME_H_

#include <chrono>
#include <ctime>
#include <string>

namespace dsb {

// `t` as ISO 8601 UTC to the second: "2026-12-06T20:41:31Z".
inline std::string IsoUtc(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
#ifdef _WIN32
  ::gmtime_s(&tm, &tt);  // the MSVC CRT's form (arguments swapped), what MinGW links
#else
  ::gmtime_r(&tt, &tm);
#endif
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace dsb

#endif  // DSB_COMMON_UTC_TIME_H_
