// Running the real dsbctl against a broker's socket, for tests that check what
// an operator sees (its exit code, stdout and stderr). Tests only.
#ifndef DSB_TESTS_SUPPORT_DSBCTL_RUN_H_
#define DSB_TESTS_SUPPORT_DSBCTL_RUN_H_

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace dsb::testing {

struct CtlRun {
  int code = -1;  // exit code; -1 when it did not exit normally within the bound
  std::string out, err;
};

// Runs `dsbctl --socket <socket> <args>` to completion (bounded: 30 s, else a
// test failure and code -1); its output files go to `dir` (dsbctl-N.out/.err).
inline CtlRun Dsbctl(const ScratchDir& dir, const std::filesystem::path& socket,
                     std::vector<std::string> args) {
  static int n = 0;
  const std::string stem = dir.File("dsbctl-" + std::to_string(n++));
  std::vector<std::string> argv = {BinPath("dsbctl"), "--socket", socket.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p;
  CtlRun r;
  EXPECT_TRUE(p.Start(argv, stem + ".out", stem + ".err"));
  const auto status = p.Wait(std::chrono::seconds(30));
  EXPECT_TRUE(status.has_value()) << "dsbctl did not finish";
  if (status && WIFEXITED(*status)) r.code = WEXITSTATUS(*status);
  r.out = ReadFile(stem + ".out");
  r.err = ReadFile(stem + ".err");
  return r;
}

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_DSBCTL_RUN_H_
