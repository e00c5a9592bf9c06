// Where a broker keeps its files when the operator names none: one function
// per platform (paths_posix.cc, paths_win.cc), so config code, the instance
// lock and the service installer agree on the names.
//
//                 Linux (the Debian package)    Windows
//   config file   /etc/dsb/dsb.toml             %ProgramData%\dsb\broker.toml
//   state_dir     /var/lib/dsb                  %ProgramData%\dsb\state
//   log_file      none (stderr / the journal)   %ProgramData%\dsb\log\dsb-broker.log
//   lock folder   /run/dsb                      %ProgramData%\dsb\run
//   local socket  /run/dsb/dsb.sock             \\.\pipe\dsb-<id>
//
// %ProgramData% is SHGetKnownFolderPath(FOLDERID_ProgramData) (C:\ProgramData
// on a default install; under Wine C:\ProgramData of the prefix), or the
// ProgramData environment variable if the shell call fails.
// Thread rule: thread-safe (the Windows folder is looked up on each call).
#ifndef DSB_BROKER_CONFIG_PATHS_H_
#define DSB_BROKER_CONFIG_PATHS_H_

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace dsb::config {

struct PlatformPaths {
  std::filesystem::path config_file;
  std::filesystem::path state_dir;
  std::optional<std::filesystem::path> log_file;  // none: the broker logs to stderr
  std::filesystem::path lock_dir;  // instance locks that have no file of their own beside them
};

// The defaults above for this platform. Always absolute.
PlatformPaths DefaultPaths();

// The broker's local endpoint when broker.socket is not given: on Windows
// "\\.\pipe\dsb-<id>"; on Linux the Debian package's "/run/dsb/dsb.sock"
// (there broker.socket stays required: this is for messages and tools).
std::filesystem::path DefaultLocalEndpoint(std::string_view broker_id);

// True when `endpoint` names a Windows named pipe ("\\.\pipe\..."); false
// on Linux for every path.
bool IsNamedPipePath(const std::filesystem::path& endpoint);

}  // namespace dsb::config

#endif  // DSB_BROKER_CONFIG_PATHS_H_
