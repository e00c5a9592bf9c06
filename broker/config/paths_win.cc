// Default paths on Windows (paths.h): everything under %ProgramData%\dsb.
#include <windows.h>
// windows.h first: shlobj.h uses its types.
#include <knownfolders.h>
#include <shlobj.h>

#include <cstdlib>
#include <cwctype>

#include "broker/config/paths.h"
#include "common/account_win.h"

namespace dsb::config {
namespace {

std::filesystem::path ProgramData() {
  PWSTR folder = nullptr;
  if (SUCCEEDED(SHGetKnownFolderPath(FOLDERID_ProgramData, 0, nullptr, &folder))) {
    std::filesystem::path out(folder);
    CoTaskMemFree(folder);
    return out;
  }
  CoTaskMemFree(folder);  // the call may allocate even when it fails
  if (const wchar_t* env = _wgetenv(L"ProgramData"); env != nullptr && *env != L'\0') {
    return std::filesystem::path(env);
  }
  return std::filesystem::path(L"C:\\ProgramData");  // Windows' own default
}

}  // namespace

PlatformPaths DefaultPaths() {
  const std::filesystem::path dsb = ProgramData() / L"dsb";
  return {.config_file = dsb / L"broker.toml",
          .state_dir = dsb / L"state",
          .log_file = dsb / L"log" / L"dsb-broker.log",
          .lock_dir = dsb / L"run"};
}

std::filesystem::path DefaultLocalEndpoint(std::string_view broker_id) {
  return std::filesystem::path("\\\\.\\pipe\\dsb-" + std::string(broker_id));
}

bool IsNamedPipePath(const std::filesystem::path& endpoint) {
  // The one check the broker's pipe and the clients use (common/account_win.h).
  return win::IsPipeName(win::Narrow(endpoint.wstring()));
}

}  // namespace dsb::config
