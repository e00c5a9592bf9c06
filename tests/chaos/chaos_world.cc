#include "tests/chaos/chaos_world.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "tests/support/wait.h"

namespace dsb::chaos {

bool Sh(const std::string& command, const std::filesystem::path& log) {
  testing::SpawnOptions options;
  options.output = testing::Output::kFiles;
  options.stdout_file = log;
  options.stderr_file = log;
  options.append = true;
  options.new_process_group = true;  // a timeout takes what the command started along
  // ip and nft return in milliseconds; the bound only catches a hung command.
  return testing::RunProgram({"/bin/sh", "-c", command}, std::chrono::minutes(2), options)
             .exit_code == 0;
}

bool Proc::Start(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  Kill();
  testing::SpawnOptions options;
  options.output = testing::Output::kFiles;
  options.stdout_file = log;
  options.stderr_file = log;
  options.append = true;
  return process_.Start(argv, options);
}

bool Proc::Stop(int sig, std::chrono::milliseconds timeout) {
  if (!alive()) return true;
  process_.Signal(SIGCONT);
  process_.Signal(sig);
  const bool exited = process_.Wait(timeout).has_value();
  Kill();
  return exited;
}

bool Netns::Make(std::string* why) {
  auto step = [&](const std::string& cmd) {
    if (Sh(cmd, log_)) return true;
    *why = "'" + cmd + "' failed (see " + log_.string() + ")";
    Remove();
    return false;
  };
  for (const std::string& ns : {hub(), ws(1), ws(2), ws(3)}) {
    if (!step("ip netns add " + ns)) return false;
    made_.push_back(ns);
    if (!step("ip -n " + ns + " link set lo up")) return false;
  }
  if (!step("ip -n " + hub() + " link add br0 type bridge") ||
      !step("ip -n " + hub() + " addr add 10.77.0.254/24 dev br0") ||
      !step("ip -n " + hub() + " link set br0 up")) {
    return false;
  }
  for (int k = 1; k <= 3; ++k) {
    const std::string v = "v" + std::to_string(k);
    const std::string w = ws(k);
    if (!step("ip -n " + hub() + " link add " + v + " type veth peer name eth0 netns " + w) ||
        !step("ip -n " + hub() + " link set " + v + " master br0 up") ||
        !step("ip -n " + w + " addr add 10.77.0." + std::to_string(k) + "/24 dev eth0") ||
        !step("ip -n " + w + " link set eth0 up")) {
      return false;
    }
  }
  if (!step("ip -n " + ws(1) + " addr add 10.77.0.101/24 dev eth0")) return false;
  for (int k = 2; k <= 3; ++k) {
    const std::string nft = "ip netns exec " + ws(k) + " nft ";
    if (!step("ip -n " + ws(k) + " addr add 10.77.0.1/32 dev lo") ||
        !step(nft + "add table inet dsbchaos") ||
        !step(nft + "'add chain inet dsbchaos out { type filter hook output priority 0 ; }'") ||
        !step(nft + "'add chain inet dsbchaos in { type filter hook input priority 0 ; }'")) {
      return false;
    }
  }
  return true;
}

void Netns::Remove() {
  for (auto it = made_.rbegin(); it != made_.rend(); ++it) Sh("ip netns del " + *it, log_);
  made_.clear();
}

bool Netns::Drop(int k, bool up) {
  const std::string rule = up ? "add rule inet dsbchaos out ip daddr 10.77.0.101 drop"
                              : "add rule inet dsbchaos in ip saddr 10.77.0.101 drop";
  return Sh("ip netns exec " + ws(k) + " nft " + rule, log_);
}

bool Netns::Heal(int k) {
  return Sh("ip netns exec " + ws(k) + " nft flush chain inet dsbchaos out", log_) &&
         Sh("ip netns exec " + ws(k) + " nft flush chain inet dsbchaos in", log_);
}

namespace {

// True when `name` (after `prefix`) is dsbc<pid>... of a process that is gone.
bool StaleName(const std::string& name, const std::string& prefix) {
  const std::string stem = prefix + "dsbc";
  if (name.rfind(stem, 0) != 0) return false;
  const std::size_t start = stem.size();
  const std::size_t end = name.find_first_not_of("0123456789", start);
  if (end == start || end == std::string::npos) return false;
  const pid_t pid = static_cast<pid_t>(std::strtol(name.substr(start, end - start).c_str(), nullptr, 10));
  return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
}

}  // namespace

void Netns::SweepStale(const std::filesystem::path& log) {
  // Namespaces dsbc<pid>h / dsbc<pid>w<k>, and the brokers' segments dsb-dsbc<pid>ws<k>-<target>
  // (with their lock files), of a run that was killed before it could clean up.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string name = e.path().filename().string();
    if (StaleName(name, "")) Sh("ip netns del " + name, log);
  }
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = e.path().filename().string();
    if (StaleName(name, "dsb-") || StaleName(name, ".dsb-lock-dsb-")) {
      std::filesystem::remove(e.path(), ec);
    }
  }
}

namespace {

std::optional<std::string> ReadLine(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string out;
  char c = 0;
  while (out.size() < 65536) {
    const ssize_t n = ::read(fd, &c, 1);
    if (n <= 0) return std::nullopt;
    if (c == '\n') return out;
    out.push_back(c);
  }
  return std::nullopt;
}

bool WriteAll(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

std::optional<std::string> NetnsCall(const std::string& ns, const std::string& host,
                                     std::uint16_t port, const std::string& line) {
  // A socket belongs to the namespace of the thread that made it: make it on a thread that
  // joined `ns` (the test's own threads stay in the host namespace).
  int fd = -1;
  std::thread t([&] {
    const int nsfd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) return;
    const bool joined = ::setns(nsfd, CLONE_NEWNET) == 0;
    ::close(nsfd);
    if (!joined) return;
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  });
  t.join();
  if (fd < 0) return std::nullopt;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  std::optional<std::string> reply;
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) == 1 &&
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && WriteAll(fd, line + "\n")) {
    reply = ReadLine(fd);
  }
  ::close(fd);
  return reply;
}

std::optional<std::string> ProxyCommand(const std::filesystem::path& control, const std::string& line) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, control.c_str(), sizeof a.sun_path - 1);
  std::optional<std::string> reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && WriteAll(fd, line + "\n")) {
    reply = ReadLine(fd);
  }
  ::close(fd);
  return reply;
}

}  // namespace dsb::chaos
