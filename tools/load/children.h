// dsb-load's instances as the parent sees them, and the seam that starts and collects them.
//
// Each instance is a process of its own (a DigiScope stand-in that can be killed alone) that
// writes JSON report lines ("progress" about once a second, one "result" at the end) to a pipe
// the parent reads. How the processes are made is the platform's:
// - children_posix.cc: fork() before any thread exists, a pipe per child, poll + signalfd in
//   the parent, SIGTERM passed on, SIGKILL past the grace, PR_SET_PDEATHSIG so a killed parent
//   takes its instances along;
// - children_win.cc: the same executable started again per instance with --instance-child I
//   (CreateProcess; there is no fork), its stdout a pipe the parent reads on a thread per
//   child, Ctrl-C reaching the children through the shared console, TerminateProcess past the
//   grace, a kill-on-close job object so a killed parent takes its instances along.
#ifndef DSB_TOOLS_LOAD_CHILDREN_H_
#define DSB_TOOLS_LOAD_CHILDREN_H_

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/account.h"
#include "tools/load/instance.h"

namespace dsb::load {

using ErrorCounts = std::map<std::string, std::uint64_t>;

struct Child {
  ProcessId pid{};
  std::string buffer;  // report bytes not yet split into lines
  std::uint64_t progress_actions = 0;
  std::uint64_t progress_refusals = 0;
  std::optional<boost::json::object> result;
  bool exited = false;        // its end was collected (waitpid / the process handle)
  std::optional<int> exit_code;  // it exited by itself (or by TerminateProcess's code)
  std::optional<int> signal;     // POSIX: the signal that ended it
};

// A number field of a report, 0 when missing or not a non-negative integer.
std::uint64_t U64(const boost::json::object& o, const char* key);

// Consumes the complete lines of `c.buffer` (progress and result reports); a line that is not
// a report counts errors["bad_report"].
void TakeLines(Child& c, ErrorCounts& errors);

// When instances still running are killed: the duration plus a grace that bounds a stuck one
// (they end their holds as soon as they stop).
std::chrono::steady_clock::time_point HardDeadline(const LoadOptions& o,
                                                   std::chrono::steady_clock::time_point start);

// Prints "dsb-load: t=...s actions=N refusals=M" on stderr, the sums of the progress reports.
void PrintProgress(const std::vector<Child>& children, std::chrono::steady_clock::time_point start,
                   std::chrono::steady_clock::time_point now);

// The clock of RunChildren's wait loop, the same on both platforms: a progress line about once a
// second and, once past HardDeadline, the kill, once.
class WaitClock {
 public:
  WaitClock(const LoadOptions& o, std::chrono::steady_clock::time_point start);
  // Called once per turn of the wait loop. Prints progress when due (PrintProgress). True on the
  // first turn past the hard deadline only, after saying so on stderr: the caller kills the
  // instances still running then.
  bool Turn(const std::vector<Child>& children);

 private:
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point hard_deadline_;
  // Children report at whole seconds; print a little after so their lines have arrived.
  std::chrono::steady_clock::time_point next_progress_;
  bool killed_ = false;
};

// Starts o.instances instances, reads their reports until every one has ended (printing
// progress on stderr about once a second; a stop request is passed on to them; instances still
// running `grace` after the duration are killed) and collects how each ended. Fills `children`
// (one per instance, in order). Returns 0, or 1 when an instance could not be started (the
// ones started are killed and the reason is on stderr).
int RunChildren(const LoadOptions& o, std::chrono::steady_clock::time_point start,
                std::vector<Child>& children, ErrorCounts& errors);

#ifdef _WIN32
// The child's side on Windows (dsb-load.exe --instance-child I): runs instance `index` in this
// process, its reports on stdout (switched to binary mode). Returns the instance's exit code.
int RunInstanceChild(const LoadOptions& o, int index);
#endif

}  // namespace dsb::load

#endif  // DSB_TOOLS_LOAD_CHILDREN_H_
