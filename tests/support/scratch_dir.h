// ScratchDir: one test's own folder for configs, sockets, logs and state,
// removed with the object.
//
// Kept (and its path printed) when the running test has failed, or when
// DSB_KEEP_SCRATCH is set, so the broker logs of a failure can be read.
//
// Header-only, so a unit test needs no library for it.
//
// Thread rule: none (made and dropped by the test's thread).
#ifndef DSB_TESTS_SUPPORT_SCRATCH_DIR_H_
#define DSB_TESTS_SUPPORT_SCRATCH_DIR_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace dsb::testing {

class ScratchDir {
 public:
  // A new folder <temp>/<stem>-XXXXXX, mode 0700 (Windows: <stem>-<random
  // number>, the user's temp folder's DACL). ok() is false (and path() empty)
  // if it cannot be made.
  explicit ScratchDir(const std::string& stem = "dsbtest") {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::temp_directory_path(ec);
    if (ec) base = "/tmp";
#ifndef _WIN32
    std::string tmpl = (base / (stem + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
#else
    // MinGW has no mkdtemp: a random name made with create_directory, which
    // fails on an existing name, so a folder is never shared (the folder
    // inherits the temp folder's DACL: the user's own %TEMP%).
    std::random_device rd;
    for (int attempt = 0; attempt < 16 && path_.empty(); ++attempt) {
      const std::filesystem::path p = base / (stem + "-" + std::to_string(rd()));
      if (std::filesystem::create_directory(p, ec) && !ec) path_ = p;
    }
#endif
  }
  ~ScratchDir() {
    if (path_.empty() || std::getenv("DSB_KEEP_SCRATCH") != nullptr) return;
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "note: the test failed; its scratch folder is kept: %s\n",
                   path_.string().c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::filesystem::path& path() const { return path_; }
  // path()/name as a string.
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The whole content of `path` ("" if it cannot be read).
inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_SCRATCH_DIR_H_
