// Accounts on POSIX: uids and gids from the account database (contracts in
// common/account.h).
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include "common/account.h"

namespace dsb {

const char* const kSuperuserName = "root";

ProcessId CurrentProcessId() { return ::getpid(); }

AccountId CurrentAccount() { return ::geteuid(); }

bool IsSuperuser(const AccountId& account) { return account == 0; }

std::string AccountText(const AccountId& account) { return std::to_string(account); }

std::string DescribeAccount(const AccountId& account) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  std::string out = "uid " + std::to_string(account);
  if (::getpwuid_r(account, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr &&
      found->pw_name != nullptr) {
    out += std::string(" (") + found->pw_name + ")";
  }
  return out;
}

std::string AccountName(const AccountId& account) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::size_t size = hint > 0 ? static_cast<std::size_t>(hint) : 16384;
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::string buffer(size, '\0');
    passwd entry{};
    passwd* found = nullptr;
    const int rc = ::getpwuid_r(account, &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE) {
      size *= 2;
      continue;
    }
    if (rc != 0 || found == nullptr) return "";
    return found->pw_name;
  }
  return "";
}

std::optional<AccountId> LookupAccount(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
    return std::nullopt;
  }
  return found->pw_uid;
}

std::optional<AccountId> ParseAccountNumber(const std::string& text) {
  if (text.empty() || text.size() > 10 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const unsigned long long n = std::strtoull(text.c_str(), nullptr, 10);
  // (uid_t)-1 means "no uid" to chown and friends: never an account.
  if (n >= static_cast<unsigned long long>(static_cast<uid_t>(-1))) return std::nullopt;
  return static_cast<uid_t>(n);
}

std::optional<GroupId> LookupGroup(const std::string& name) {
  std::size_t size = 16384;
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::vector<char> buf(size);
    group entry{};
    group* found = nullptr;
    const int rc = ::getgrnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE) {
      size *= 2;
      continue;
    }
    if (rc != 0 || found == nullptr) return std::nullopt;
    return found->gr_gid;
  }
  return std::nullopt;
}

}  // namespace dsb
