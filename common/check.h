// DSB_CHECK: a broken invariant is a bug, not a value. Abort loudly with context.
#ifndef DSB_COMMON_CHECK_H_
#define DSB_COMMON_CHECK_H_

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace dsb::detail {
// Prints the optional printf-style context of a failed DSB_CHECK.
// MinGW's GCC reads the "printf" archetype as Microsoft's (no %zu); its
// libstdc++ turns on the C99 printf (__USE_MINGW_ANSI_STDIO), so gnu_printf.
#if defined(__MINGW32__)
[[gnu::format(gnu_printf, 1, 2)]]
#else
[[gnu::format(printf, 1, 2)]]
#endif
inline void CheckMessage(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
}
// No context given.
inline void CheckMessage() {}
}  // namespace dsb::detail

#define DSB_CHECK(cond, ...)                                                      \
  do {                                                                            \
    if (!(cond)) [[unlikely]] {                                                   \
      std::fprintf(stderr, "%s:%d: DSB_CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      ::dsb::detail::CheckMessage(__VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                                 \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

#endif  // DSB_COMMON_CHECK_H_
