#include "tests/support/broker_process.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>

namespace dsb::testing {

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
  if (process_.running()) Stop(SIGKILL);
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
  if (!process_.Start({BinPath("dsb-broker"), "--config", config_.string()})) return false;
  return WaitForLog(" ready on ", timeout);
}

bool BrokerProcess::WaitForLog(const std::string& needle, std::chrono::milliseconds timeout) {
  return process_.WaitForOutput(needle, timeout);
}

std::string BrokerProcess::log() const { return process_.output(); }

int BrokerProcess::Stop(int sig) {
  if (!process_.running()) return -1;
  process_.Signal(sig);
  if (!process_.Wait(std::chrono::minutes(1))) process_.Kill();
  return process_.wait_status().value_or(-1);
}

int BrokerProcess::RunToExit(const std::filesystem::path& config, std::string* output) {
  return RunArgsToExit("--config '" + config.string() + "'", output);
}

int BrokerProcess::RunArgsToExit(const std::string& args, std::string* output) {
  // Through the shell: `args` is a shell-quoted string.
  const Outcome o = RunProgram({"/bin/sh", "-c", "exec " + BinPath("dsb-broker") + " " + args},
                               std::chrono::minutes(2));
  output->append(o.output);
  return o.exit_code >= 0 && o.exit_code < 128 && !o.timed_out ? o.exit_code : -1;
}

}  // namespace dsb::testing
