// The chaos suite's world: three workstations as network namespaces on one bridge, each with a
// real dsb-broker (ws1 coordinates) and DigiScope-like dsb-load processes, a dsb-simserver that
// counts sessions (the judge), and a dsb-faultproxy between each other broker and the
// coordinator. Everything is made and removed by the test; see docs/chaos.md.
//
// Thread rule: one test thread uses a ChaosWorld (NetnsCall starts a short-lived thread of its
// own to open a socket inside a namespace).
#ifndef DSB_TESTS_CHAOS_CHAOS_WORLD_H_
#define DSB_TESTS_CHAOS_CHAOS_WORLD_H_

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace dsb::chaos {

using Clock = std::chrono::steady_clock;

// Runs `command` through /bin/sh with output appended to `log`; true on exit status 0.
bool Sh(const std::string& command, const std::filesystem::path& log);

// A child process (argv[0] absolute) with stdout and stderr appended to `log`. Ended by PID only.
// A testing::Process underneath (it dies with the test).
class Proc {
 public:
  Proc() = default;
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;
  ~Proc() { Kill(); }

  bool Start(const std::vector<std::string>& argv, const std::filesystem::path& log);
  // True while started and not yet reaped (a stopped process counts as alive).
  bool alive() { return process_.alive(); }
  pid_t pid() const { return process_.running() ? process_.pid() : -1; }
  bool Signal(int sig) { return process_.Signal(sig); }
  // SIGKILL (SIGCONT too, so a stopped process dies at once) and reap.
  void Kill() { process_.Kill(); }
  // `sig`, then waits up to `timeout` for the exit; SIGKILL after that. True if it exited in time.
  bool Stop(int sig, std::chrono::milliseconds timeout);

 private:
  testing::Process process_;
};

// Three workstation namespaces and a hub namespace holding the bridge.
// Addresses (inside the namespaces only, so they never meet the host's):
//   hub  br0 10.77.0.254/24 (the simserver)
//   wsK  eth0 10.77.0.K/24; ws1 also 10.77.0.101 (the coordinator behind the proxies)
//   ws2, ws3: 10.77.0.1/32 on lo, where their fault proxy listens in place of the coordinator
// Each ws2/ws3 namespace has an nftables table `dsbchaos` with chains `out` and `in`.
class Netns {
 public:
  // `stem` is unique per run (it carries the test's PID).
  explicit Netns(std::string stem, std::filesystem::path log) : stem_(std::move(stem)), log_(std::move(log)) {}
  ~Netns() { Remove(); }
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

  // Makes everything. False with `why` (for a clear skip message) if any step fails; what was
  // made is removed.
  bool Make(std::string* why);
  void Remove();
  std::string hub() const { return stem_ + "h"; }
  std::string ws(int k) const { return stem_ + "w" + std::to_string(k); }
  // argv prefix that runs a command inside namespace `ns` (ip and setpriv exec in place, so the
  // PID is the command's). With SIGKILL as its parent-death signal: if the test itself is killed
  // (a CTest timeout), its brokers and loads die with it instead of running on.
  std::vector<std::string> In(const std::string& ns) const {
    return {"/usr/sbin/ip", "netns", "exec", ns, "/usr/bin/setpriv", "--pdeathsig", "KILL", "--"};
  }
  // Drops traffic between workstation k and the coordinator in one direction
  // (up: k -> coordinator; down: coordinator -> k). Heal(k) removes both.
  bool Drop(int k, bool up);
  bool Heal(int k);

  // Removes the namespaces and broker segments left by earlier runs of this suite whose
  // process is gone (killed before its destructors ran).
  static void SweepStale(const std::filesystem::path& log);

 private:
  std::string stem_;
  std::filesystem::path log_;
  std::vector<std::string> made_;
};

// One request line to a TCP server inside namespace `ns`; the reply line, or nullopt.
std::optional<std::string> NetnsCall(const std::string& ns, const std::string& host,
                                     std::uint16_t port, const std::string& line);

// One command line to a fault proxy's control socket; the reply line, or nullopt.
std::optional<std::string> ProxyCommand(const std::filesystem::path& control, const std::string& line);

}  // namespace dsb::chaos

#endif  // DSB_TESTS_CHAOS_CHAOS_WORLD_H_
