// Names for test resources (segments, sockets, folders) that never collide
// between concurrently running tests, and clean up after themselves.
#ifndef DSB_TESTS_SUPPORT_UNIQUE_NAME_H_
#define DSB_TESTS_SUPPORT_UNIQUE_NAME_H_

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace dsb::testing {

inline std::string UniqueName(const std::string& stem) {
  static std::atomic<int> counter{0};
  return stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

// A scratch folder under /tmp removed (recursively) when the object dies.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& stem = "dsbtest") {
    std::string tmpl = "/tmp/" + stem + "-XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    path_ = p != nullptr ? std::filesystem::path(p) : std::filesystem::path();
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty() && std::getenv("DSB_KEEP_SCRATCH") == nullptr) {
      std::filesystem::remove_all(path_, ec);
    }
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_UNIQUE_NAME_H_
