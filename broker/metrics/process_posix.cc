#include "broker/metrics/process.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace dsb::metrics {
namespace {

// Fields of /proc/self/stat after the command (which may hold spaces and
// parentheses: everything up to the last ')' is skipped). Field 3 (state) is
// index 0 here.
std::optional<std::vector<std::string>> StatFields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  const std::size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

std::optional<double> BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      double value = 0;
      if (in >> value) return value;
      return std::nullopt;
    }
    std::string skip;
    std::getline(in, skip);
  }
  return std::nullopt;
}

std::optional<double> OpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return std::nullopt;
  double count = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the descriptor opendir itself holds
}

}  // namespace

void AddProcessSamples(Exposition& out) {
  const long ticks = ::sysconf(_SC_CLK_TCK);
  const long page = ::sysconf(_SC_PAGESIZE);
  // After the command: [0] state ... [11] utime, [12] stime, [19] starttime,
  // [21] rss (pages); proc(5) numbers them 3, 14, 15, 22, 24.
  if (auto f = StatFields(); f && f->size() > 21 && ticks > 0) {
    try {
      const double utime = std::stod((*f)[11]);
      const double stime = std::stod((*f)[12]);
      out.Sample("process_cpu_seconds_total", {}, (utime + stime) / static_cast<double>(ticks));
      if (auto boot = BootTimeSeconds()) {
        out.Sample("process_start_time_seconds", {},
                   *boot + std::stod((*f)[19]) / static_cast<double>(ticks));
      }
      if (page > 0) {
        out.Sample("process_resident_memory_bytes", {},
                   std::stod((*f)[21]) * static_cast<double>(page));
      }
    } catch (const std::exception&) {
      // A field that is not a number: those samples stay out.
    }
  }
  if (auto fds = OpenFds()) out.Sample("process_open_fds", {}, *fds);
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    out.Sample("process_max_fds", {},
               rl.rlim_cur == RLIM_INFINITY ? -1.0 : static_cast<double>(rl.rlim_cur));
  }
}

}  // namespace dsb::metrics
