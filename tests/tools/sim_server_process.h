// A dsb-simserver process for tests: started on port 0, ready once its port file appears.
#ifndef DSB_TESTS_TOOLS_SIM_SERVER_PROCESS_H_
#define DSB_TESTS_TOOLS_SIM_SERVER_PROCESS_H_

#include <boost/json.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/tools/process.h"
#include "tools/load/line_client.h"

namespace dsb::tools_test {

class SimServerProcess {
 public:
  // Starts dsb-simserver with `extra` flags; files go to `dir`. Check ok() after.
  SimServerProcess(const ScratchDir& dir, const std::vector<std::string>& extra)
      : port_file_(dir.File("sim.port")),
        stats_file_(dir.File("sim.stats.json")),
        stdout_(dir.File("sim.out")),
        stderr_(dir.File("sim.err")) {
    std::vector<std::string> argv = {
        BinPath("dsb-simserver"), "--listen", "127.0.0.1:0", "--port-file", port_file_,
        "--stats-file",           stats_file_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!process_.Start(argv, stdout_, stderr_)) return;
    ok_ = WaitUntil([this] {
      return std::filesystem::exists(port_file_) || process_.Wait(milliseconds(0)).has_value();
    });
    ok_ = ok_ && std::filesystem::exists(port_file_);
    if (ok_) {
      address_ = ReadFile(port_file_);
      while (!address_.empty() && address_.back() == '\n') address_.pop_back();
    }
  }

  bool ok() const { return ok_; }
  const std::string& address() const { return address_; }
  const std::string& stats_file() const { return stats_file_; }
  const std::string& stdout_path() const { return stdout_; }
  const std::string& stderr_path() const { return stderr_; }
  ChildProcess& process() { return process_; }

  // A new connection to the server (asserting callers check connected()).
  load::LineClient Connect() const {
    load::LineClient c;
    (void)c.Connect(address_, milliseconds(3000));
    return c;
  }

  // STATS over a fresh connection, parsed; a null value on any failure.
  boost::json::value Stats() const {
    load::LineClient c = Connect();
    std::error_code ec;
    const std::string line = c.Call("STATS", ec);
    if (ec) return nullptr;
    boost::system::error_code jec;
    boost::json::value v = boost::json::parse(line, jec);
    return jec ? boost::json::value(nullptr) : v;
  }

  // The statistics of `user` (an empty object when unknown).
  boost::json::object UserStats(const std::string& user) const {
    const boost::json::value v = Stats();
    const auto* users = v.is_object() ? v.as_object().if_contains("users") : nullptr;
    const auto* u =
        users != nullptr && users->is_object() ? users->as_object().if_contains(user) : nullptr;
    return u != nullptr && u->is_object() ? u->as_object() : boost::json::object{};
  }

 private:
  std::string port_file_, stats_file_, stdout_, stderr_;
  ChildProcess process_;
  bool ok_ = false;
  std::string address_;
};

// A number from a JSON object (0 when missing).
inline double Num(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return 0;
  boost::system::error_code ec;
  const double d = v->to_number<double>(ec);
  return ec ? 0 : d;
}

}  // namespace dsb::tools_test

#endif  // DSB_TESTS_TOOLS_SIM_SERVER_PROCESS_H_
