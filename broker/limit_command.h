// LimitCommand: runs a target's `limit_command` (an operator's shell command
// that prints the server's session cap) without blocking the broker's loop.
//
// The command runs as `/bin/sh -c COMMAND` in its own process group, with
// stdin from /dev/null. Its stdout (at most 4 KiB kept) must be one decimal
// integer in 1..65535, surrounded by whitespace at most. After `timeout` the
// whole process group is killed (SIGKILL): only what this broker started.
//
// Thread rule: Run() on the io_context's thread; the callback runs there too.
#ifndef DSB_BROKER_LIMIT_COMMAND_H_
#define DSB_BROKER_LIMIT_COMMAND_H_

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dsb::broker {

// Parses a command's stdout. Success: the integer. Failure (kInvalidArgument):
// a sentence naming what was printed (quoted, control bytes escaped) and what
// was expected.
Result<std::uint32_t> ParseLimitOutput(std::string_view out);

// A running command. Kill() ends its whole process group now (the broker
// stops); `done` is then called with kTimeout.
class LimitCommandRun {
 public:
  virtual ~LimitCommandRun() = default;
  virtual void Kill() = 0;
};

// Runs `command`; calls `done` exactly once with the parsed cap, or with
// kInvalidArgument (garbage output), kTimeout (killed after `timeout`, or by
// Kill()), kInternal (cannot start, exit status != 0, killed by a signal):
// each message says which, with the first line of stderr when there is one.
// The answer is the shell's: once it exited, a child it left holding its
// output gets 100 ms, then the group is killed. Returns the run (nullptr if it
// could not start; `done` is then posted with the reason).
std::shared_ptr<LimitCommandRun> RunLimitCommand(const boost::asio::any_io_executor& executor,
                                                std::string command,
                                                std::chrono::nanoseconds timeout,
                                                std::function<void(Result<std::uint32_t>)> done);

}  // namespace dsb::broker

#endif  // DSB_BROKER_LIMIT_COMMAND_H_
