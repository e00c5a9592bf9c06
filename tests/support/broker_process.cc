#include "tests/support/broker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

namespace dsb::testing {

std::string BinPath(const std::string& name) { return std::string(DSB_BIN_DIR) + "/" + name; }

BrokerProcess::BrokerProcess(std::filesystem::path dir, std::string prefix,
                             std::vector<BrokerTarget> targets, std::string extra)
    : dir_(std::move(dir)), prefix_(std::move(prefix)), targets_(std::move(targets)) {
  socket_ = dir_ / "dsb.sock";
  config_ = dir_ / (prefix_ + ".toml");
  std::ofstream f(config_);
  f << "[broker]\nid = \"" << prefix_ << "\"\nsocket = \"" << socket_.string()
    << "\"\nshm_prefix = \"" << prefix_ << "\"\n"
    << extra << "\n";
  for (const auto& t : targets_) {
    f << "[[targets]]\nname = \"" << t.name << "\"\nlimit = " << t.limit
      << "\nreserve = " << t.reserve << "\nquarantine = \"" << t.quarantine << "\"\n";
  }
}

BrokerProcess::BrokerProcess(std::filesystem::path config, std::filesystem::path socket,
                             std::vector<std::string> segments)
    : socket_(std::move(socket)), config_(std::move(config)), segments_(std::move(segments)) {}

BrokerProcess::~BrokerProcess() {
  if (pid_ > 0) Stop(SIGKILL);
  RemoveSegments();
}

void BrokerProcess::RemoveSegments() {
  for (const auto& t : targets_) {
    ::unlink(("/dev/shm/" + segment(t.name)).c_str());
    ::unlink(("/dev/shm/.dsb-lock-" + segment(t.name)).c_str());
  }
  for (const auto& s : segments_) {
    ::unlink(("/dev/shm/" + s).c_str());
    ::unlink(("/dev/shm/.dsb-lock-" + s).c_str());
  }
}

bool BrokerProcess::Start(std::chrono::milliseconds timeout) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  const std::string bin = BinPath("dsb-broker");
  const std::string cfg = config_.string();
  {
    std::lock_guard lock(mu_);
    log_.clear();
    eof_ = false;
  }
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::execl(bin.c_str(), bin.c_str(), "--config", cfg.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(fds[1]);
  out_fd_ = fds[0];
  if (reader_.joinable()) reader_.join();
  reader_ = std::thread([this, fd = out_fd_] {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      std::lock_guard lock(mu_);
      if (n <= 0) {
        eof_ = true;
        cv_.notify_all();
        break;
      }
      log_.append(buf, static_cast<std::size_t>(n));
      cv_.notify_all();
    }
    ::close(fd);
  });
  return WaitForLog(" ready on ", timeout);
}

bool BrokerProcess::WaitForLog(const std::string& needle, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout,
                      [&] { return log_.find(needle) != std::string::npos || eof_; }) &&
         log_.find(needle) != std::string::npos;
}

std::string BrokerProcess::log() const {
  std::lock_guard lock(mu_);
  return log_;
}

int BrokerProcess::Stop(int sig) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  if (reader_.joinable()) reader_.join();
  return status;
}

int BrokerProcess::RunToExit(const std::filesystem::path& config, std::string* output) {
  return RunArgsToExit("--config '" + config.string() + "'", output);
}

int BrokerProcess::RunArgsToExit(const std::string& args, std::string* output) {
  const std::string cmd = BinPath("dsb-broker") + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace dsb::testing
