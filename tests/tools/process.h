// The tools' tests run real processes through the shared test support
// (tests/support/process.h, scratch_dir.h); these names keep their callers
// short. Tests only.
#ifndef DSB_TESTS_TOOLS_PROCESS_H_
#define DSB_TESTS_TOOLS_PROCESS_H_

#include <chrono>
#include <string>

#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/wait.h"

namespace dsb::tools_test {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

using dsb::testing::BinPath;
using dsb::testing::ReadFile;
using dsb::testing::ScratchDir;
using dsb::testing::WaitUntil;
// A child process with stdout and stderr in files (Start(argv, out, err)),
// killed (SIGKILL) if still running at destruction.
using ChildProcess = dsb::testing::Process;

}  // namespace dsb::tools_test

#endif  // DSB_TESTS_TOOLS_PROCESS_H_
