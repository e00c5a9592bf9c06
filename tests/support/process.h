// Process: one child program for a test (a broker, dsb-load, dsb-simserver,
// a tool of the OS). The one place tests fork and exec.
//
// A Process starts argv[0] (an absolute path, or a name looked up in PATH)
// with the test's environment plus `env`, optionally as another user, with
// stdin on /dev/null and stdout/stderr captured in memory, written to files,
// or inherited. By default the child dies with the thread that started it
// (PR_SET_PDEATHSIG, SIGKILL): a test killed by its timeout leaves no broker
// holding shared memory behind. It is only ever signalled by its own PID (or
// its own process group if it made one), and only until it is reaped, so a
// reused PID is never hit.
//
// Between fork and exec the child calls only async-signal-safe functions
// (everything it needs is prepared before the fork), so spawning from a test
// that runs threads cannot deadlock on a lock held by another thread.
//
// Thread rule: one test thread drives a Process; output() and
// WaitForOutput() may be called from any thread (the capture has its own
// lock). PR_SET_PDEATHSIG follows the *thread* that forked: start a child
// that must outlive a helper thread from the test's main thread, or set
// die_with_parent = false.
#ifndef DSB_TESTS_SUPPORT_PROCESS_H_
#define DSB_TESTS_SUPPORT_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dsb::testing {

// The path of a program built by this project (DSB_BIN_DIR/name; for
// "dsb-broker", DSB_TEST_BROKER when the build names one).
std::string BinPath(const std::string& name);

// Who a child process runs as.
struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;              // primary group
  std::vector<gid_t> groups;  // supplementary groups
};

// Where a child's stdout and stderr go.
enum class Output {
  kInherit,  // the test's own stdout/stderr
  kCapture,  // a pipe read by a thread of the Process: output(), WaitForOutput()
  kFiles,    // stdout_file and stderr_file (the same path: one file for both)
  kNull,     // /dev/null
};

struct SpawnOptions {
  // "NAME=value" entries replacing or adding to the test's environment.
  std::vector<std::string> env;
  // Run as this user (setgroups, setgid, setuid before exec; needs root).
  std::optional<Identity> as;
  Output output = Output::kCapture;
  // kCapture: stderr goes into the same capture as stdout (interleaved);
  // false leaves stderr on the test's stderr.
  bool capture_stderr = true;
  // kFiles: where stdout and stderr go (created 0644; `append` or truncated).
  std::filesystem::path stdout_file;
  std::filesystem::path stderr_file;
  bool append = false;
  // A descriptor to use as the child's stdin instead of /dev/null.
  int stdin_fd = -1;
  // SIGKILL the child when the thread that started it ends (PR_SET_PDEATHSIG).
  bool die_with_parent = true;
  // setpgid(0, 0): the child leads a process group, which Signal/Kill reach
  // as a whole (a shell and what it started).
  bool new_process_group = false;
  // setsid(): the child leads a new session (outlives a kill of the test's group).
  bool new_session = false;
};

// The exit code of a wait status: the exit status, 128 + signal if killed,
// -1 if neither (or no status).
int ExitCodeOf(int wait_status);

class Process {
 public:
  Process() = default;
  // Kills (SIGKILL, group too if it made one) and reaps a child still running.
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Starts `argv` (argv[0] an absolute path or a name in PATH). False, with
  // error() saying why, if the program cannot be found, an output file cannot
  // be opened, or fork fails. A program that exists but fails to exec or to
  // switch users exits with 127 or 126 and says why on its stderr.
  // Fails (error() says so) if argv is empty or the last child still runs; a
  // Process whose child ended may start another.
  bool Start(const std::vector<std::string>& argv, const SpawnOptions& options = {});
  // Shorthand: stdout and stderr written (truncated) to two files.
  bool Start(const std::vector<std::string>& argv, const std::string& stdout_path,
             const std::string& stderr_path);

  pid_t pid() const { return pid_; }
  // True once started until reaped (a stopped or zombie child counts as running).
  bool running() const { return pid_ > 0 && !status_; }
  // Started and not yet reaped, after reaping it if it has already exited.
  bool alive();
  const std::string& error() const { return error_; }

  // Sends `sig` to the child (and its group if it leads one). False if it
  // is not running (never signals a reaped PID).
  bool Signal(int sig);
  // Waits up to `timeout` for the exit (a pidfd wakes the wait at once);
  // returns its wait status, or nullopt if still running or never started.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // The exit code (ExitCodeOf) once reaped; -1 before.
  int exit_code() const { return status_ ? ExitCodeOf(*status_) : -1; }
  // The raw wait status once reaped.
  std::optional<int> wait_status() const { return status_; }
  // SIGKILL (SIGCONT too, so a stopped child dies at once) and reap.
  void Kill();
  // Sends `sig`, waits up to `timeout`, then SIGKILL. Returns the exit code
  // (128 + signal when killed by one); -1 if never started.
  int Stop(int sig, std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Output::kCapture: everything read so far.
  std::string output() const;
  // Output::kCapture: waits until the output contains `needle`. False after
  // `timeout`, or once the child closed its output without writing it.
  bool WaitForOutput(const std::string& needle, std::chrono::milliseconds timeout);
  // Output::kCapture: waits until the child closed its output (usually: it
  // ended). False after `timeout`.
  bool WaitForOutputEnd(std::chrono::milliseconds timeout);

 private:
  void JoinReader();

  pid_t pid_ = -1;
  bool group_ = false;
  std::optional<int> status_;
  std::string error_;
  std::thread reader_;
  int stop_[2] = {-1, -1};  // a byte on stop_[1] ends the reader
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;
  bool output_end_ = false;
};

// What a program run to completion did.
struct Outcome {
  int exit_code = -1;  // 128 + signal if killed; -1 if it could not start
  std::string output;  // stdout and stderr, interleaved (Output::kCapture)
  bool timed_out = false;
};

// Runs `argv` to its end with `options` (output captured unless the options
// say otherwise); SIGKILL (its group too) after `timeout`.
Outcome RunProgram(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                   const SpawnOptions& options = {});

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_PROCESS_H_
