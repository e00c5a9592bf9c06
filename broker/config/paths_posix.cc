// Default paths on Linux (paths.h): those of the Debian package
// (packaging/dsb.toml, packaging/tmpfiles.conf).
#include "broker/config/paths.h"

namespace dsb::config {

PlatformPaths DefaultPaths() {
  return {.config_file = "/etc/dsb/dsb.toml",
          .state_dir = "/var/lib/dsb",
          .log_file = std::nullopt,
          .lock_dir = "/run/dsb"};
}

std::filesystem::path DefaultLocalEndpoint(std::string_view /*broker_id*/) {
  return "/run/dsb/dsb.sock";
}

bool IsNamedPipePath(const std::filesystem::path& /*endpoint*/) { return false; }

}  // namespace dsb::config
