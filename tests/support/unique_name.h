// Names for test resources (segments, sockets, folders) that never collide
// between concurrently running tests, and clean up after themselves.
#ifndef DSB_TESTS_SUPPORT_UNIQUE_NAME_H_
#define DSB_TESTS_SUPPORT_UNIQUE_NAME_H_

#include <unistd.h>

#include <atomic>
#include <string>

// ScratchDir used to live here; many tests include this header for it.
#include "tests/support/scratch_dir.h"

namespace dsb::testing {

inline std::string UniqueName(const std::string& stem) {
  static std::atomic<int> counter{0};
  return stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_UNIQUE_NAME_H_
