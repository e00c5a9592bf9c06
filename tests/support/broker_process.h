// BrokerProcess: the broker fixture, a real dsb-broker child process for
// integration tests. Writes a config into a scratch folder, starts the daemon
// (a Process: it dies with the test), waits until it logs that it is ready
// (its socket is bound then), follows its log (so tests wait on log events
// instead of sleeping) and stops it by PID.
#ifndef DSB_TESTS_SUPPORT_BROKER_PROCESS_H_
#define DSB_TESTS_SUPPORT_BROKER_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace dsb::testing {

struct BrokerTarget {
  std::string name = "exch01";
  int limit = 32;
  int reserve = 0;
  std::string quarantine = "0s";
};

class BrokerProcess {
 public:
  // `dir` holds the config and the socket; `prefix` names the shm segments.
  BrokerProcess(std::filesystem::path dir, std::string prefix, std::vector<BrokerTarget> targets,
                std::string extra_broker_toml = "");
  // A broker whose config file already exists (cluster mode, for example).
  BrokerProcess(std::filesystem::path config, std::filesystem::path socket,
                std::vector<std::string> segments);
  ~BrokerProcess();

  // Starts the daemon and waits until it logs that it is ready. False (with
  // the log in `log()`) if it exits or does not get ready within `timeout`.
  bool Start(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Sends `sig` and waits for the exit (SIGKILL after a minute); returns the
  // raw wait status, -1 if not running.
  int Stop(int sig = 15);
  bool running() const { return process_.running(); }
  pid_t pid() const { return process_.running() ? process_.pid() : -1; }

  // Waits until a log line containing `needle` appears (counting lines since
  // the start), at most `timeout`. Returns true if it did.
  bool WaitForLog(const std::string& needle,
                  std::chrono::milliseconds timeout = std::chrono::seconds(20));
  std::string log() const;

  const std::filesystem::path& socket() const { return socket_; }
  const std::filesystem::path& config_path() const { return config_; }
  std::string segment(const std::string& target) const { return "dsb-" + prefix_ + "-" + target; }
  void RemoveSegments();

  // Runs dsb-broker --config FILE to completion; returns exit code + output.
  static int RunToExit(const std::filesystem::path& config, std::string* output);
  // Runs dsb-broker with `args` (a shell-quoted argument string, e.g.
  // "--check --config 'f.toml'") to completion; exit code (-1 if it did not
  // exit normally) and output.
  static int RunArgsToExit(const std::string& args, std::string* output);

 private:
  std::filesystem::path dir_;
  std::string prefix_;
  std::vector<BrokerTarget> targets_;
  std::filesystem::path socket_;
  std::filesystem::path config_;
  std::vector<std::string> segments_;
  Process process_;
};

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_BROKER_PROCESS_H_
