// Starting an EtcdWorld in a GoogleTest test (etcd_quorum_test, etcd_restart_test).
#ifndef DSB_TESTS_INTEGRATION_ETCD_WORLD_START_H_
#define DSB_TESTS_INTEGRATION_ETCD_WORLD_START_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "tests/integration/etcd_world.h"

namespace dsb::etcdit {

// Starts the world (or says why it skips); true when the test may go on. Without
// /usr/bin/etcd it prints "SKIPPED: <why>" and returns false; any other failure to start
// fails the test.
inline bool StartOrSkip(EtcdWorld& w, const WorldSpec& spec) {
  bool skip = false;
  const std::string why = w.Start(spec, &skip);
  if (skip) {
    std::printf("SKIPPED: %s\n", why.c_str());
    return false;
  }
  EXPECT_EQ(why, "");
  return why.empty();
}

}  // namespace dsb::etcdit

#endif  // DSB_TESTS_INTEGRATION_ETCD_WORLD_START_H_
