// DSB_CHECK: a broken invariant is a bug, not a value. Abort loudly with context.
#ifndef DSB_COMMON_CHECK_H_
#define DSB_COMMON_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define DSB_CHECK(cond, ...)                                                      \
  do {                                                                            \
    if (!(cond)) [[unlikely]] {                                                   \
      std::fprintf(stderr, "%s:%d: DSB_CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, "" __VA_ARGS__);                                       \
      std::fprintf(stderr, "\n");                                                 \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

#endif  // DSB_COMMON_CHECK_H_
