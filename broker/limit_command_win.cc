#include "broker/limit_command.h"

// Running a limit_command on Windows: not in this build. A config with one is
// refused before the start changes anything (start_checks.cc,
// ValidateForStart: "limit_command is not supported on Windows ..."), so this
// is reached only if that check is bypassed; it answers kInternal then, and
// the limit stays where it was (limit_keeper.cc logs the message).
// (A port would run `cmd.exe /c COMMAND` with CreateProcessW, stdout/stderr
// through pipes and the process in a kill-on-close job object, so a timeout
// ends the whole tree: the role of the process group on POSIX.)

#include <boost/asio/post.hpp>

namespace dsb::broker {

std::shared_ptr<LimitCommandRun> RunLimitCommand(const boost::asio::any_io_executor& executor,
                                                std::string command,
                                                std::chrono::nanoseconds,
                                                std::function<void(Result<std::uint32_t>)> done) {
  boost::asio::post(executor, [done = std::move(done), command = std::move(command)] {
    done(Status{Errc::kInternal, "cannot run \"" + command +
                                     "\": limit_command is not supported on Windows in this "
                                     "build; set the target's limit instead"});
  });
  return nullptr;
}

}  // namespace dsb::broker
