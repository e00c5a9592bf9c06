// Accounts on Windows: SIDs in string form (contracts in common/account.h and
// common/account_win.h).
#include <windows.h>
// After windows.h:
#include <aclapi.h>
#include <sddl.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "common/account.h"
#include "common/account_win.h"
#include "common/check.h"

namespace dsb {
namespace win {

std::wstring Widen(std::string_view text) {
  if (text.empty()) return {};
  const int n =
      ::MultiByteToWideChar(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), nullptr, 0);
  std::wstring out(static_cast<std::size_t>(n > 0 ? n : 0), L'\0');
  if (n > 0) {
    ::MultiByteToWideChar(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), out.data(), n);
  }
  return out;
}

std::string Narrow(std::wstring_view text) {
  if (text.empty()) return {};
  const int n = ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()),
                                      nullptr, 0, nullptr, nullptr);
  std::string out(static_cast<std::size_t>(n > 0 ? n : 0), '\0');
  if (n > 0) {
    ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), out.data(), n,
                          nullptr, nullptr);
  }
  return out;
}

std::string ErrorText(unsigned long code) {
  wchar_t* text = nullptr;
  const DWORD n = ::FormatMessageW(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, code, 0, reinterpret_cast<wchar_t*>(&text), 0, nullptr);
  std::string out;
  if (n > 0 && text != nullptr) {
    out = Narrow(std::wstring_view(text, n));
    while (!out.empty() &&
           (out.back() == '\n' || out.back() == '\r' || out.back() == ' ' || out.back() == '.')) {
      out.pop_back();
    }
  }
  if (text != nullptr) ::LocalFree(text);
  if (out.empty()) out = "system error";
  return out + " (error " + std::to_string(code) + ")";
}

namespace {

struct HandleCloser {
  void operator()(HANDLE h) const {
    if (h != nullptr && h != INVALID_HANDLE_VALUE) ::CloseHandle(h);
  }
};
using UniqueHandle = std::unique_ptr<void, HandleCloser>;

// "S-1-5-..." of `sid`; "" if it cannot be converted (not a valid SID).
std::string SidText(PSID sid) {
  wchar_t* text = nullptr;
  if (!::ConvertSidToStringSidW(sid, &text)) return {};
  std::string out = Narrow(text);
  ::LocalFree(text);
  return out;
}

// The token's information of class `cls`, in a buffer of the size it needs.
Result<std::vector<unsigned char>> TokenInfo(HANDLE token, TOKEN_INFORMATION_CLASS cls,
                                             const char* what) {
  DWORD size = 0;
  ::GetTokenInformation(token, cls, nullptr, 0, &size);
  std::vector<unsigned char> buf(size > 0 ? size : 1);
  if (!::GetTokenInformation(token, cls, buf.data(), static_cast<DWORD>(buf.size()), &size)) {
    return Status{Errc::kInternal, std::string("cannot read the process token's ") + what + ": " +
                                       ErrorText(::GetLastError())};
  }
  return buf;
}

Result<AccountId> TokenUserSid(HANDLE token) {
  auto buf = TokenInfo(token, TokenUser, "user");
  if (!buf.ok()) return buf.status();
  std::string sid = SidText(reinterpret_cast<TOKEN_USER*>(buf->data())->User.Sid);
  if (sid.empty()) return Status{Errc::kInternal, "the process token's user SID is not valid"};
  return sid;
}

// The token of process `pid`, opened for TOKEN_QUERY.
Result<UniqueHandle> OpenProcessTokenOf(ProcessId pid) {
  UniqueHandle process(::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid));
  if (!process) {
    const DWORD e = ::GetLastError();
    return Status{e == ERROR_ACCESS_DENIED ? Errc::kPermissionDenied : Errc::kInternal,
                  "cannot open process " + std::to_string(pid) + ": " + ErrorText(e)};
  }
  HANDLE token = nullptr;
  if (!::OpenProcessToken(process.get(), TOKEN_QUERY, &token)) {
    const DWORD e = ::GetLastError();
    return Status{e == ERROR_ACCESS_DENIED ? Errc::kPermissionDenied : Errc::kInternal,
                  "cannot read the token of process " + std::to_string(pid) + ": " + ErrorText(e)};
  }
  return UniqueHandle(token);
}

// A SID string's SID, or nullptr if `text` is no SID string. LocalFree it.
PSID ParseSid(const std::string& text) {
  PSID sid = nullptr;
  if (text.size() < 4 || text.compare(0, 2, "S-") != 0) return nullptr;
  if (!::ConvertStringSidToSidW(Widen(text).c_str(), &sid)) return nullptr;
  return sid;
}

// LookupAccountNameW: the SID of `name` if its type is one of `types`.
std::optional<std::string> LookupName(const std::string& name,
                                      std::initializer_list<SID_NAME_USE> types) {
  if (name.empty()) return std::nullopt;
  const std::wstring wname = Widen(name);
  DWORD sid_size = 0;
  DWORD domain_size = 0;
  SID_NAME_USE use{};
  ::LookupAccountNameW(nullptr, wname.c_str(), nullptr, &sid_size, nullptr, &domain_size, &use);
  if (sid_size == 0) return std::nullopt;
  std::vector<unsigned char> sid(sid_size);
  std::wstring domain(domain_size + 1, L'\0');
  if (!::LookupAccountNameW(nullptr, wname.c_str(), sid.data(), &sid_size, domain.data(),
                            &domain_size, &use)) {
    return std::nullopt;
  }
  bool wanted = false;
  for (SID_NAME_USE t : types) wanted = wanted || t == use;
  if (!wanted) return std::nullopt;
  std::string text = SidText(sid.data());
  if (text.empty()) return std::nullopt;
  return text;
}

}  // namespace

Result<AccountId> ProcessAccount(ProcessId pid) {
  auto token = OpenProcessTokenOf(pid);
  if (!token.ok()) return token.status();
  auto user = TokenUserSid(token->get());
  if (!user.ok()) {
    return Status{user.status().code(),
                  "process " + std::to_string(pid) + ": " + user.status().message()};
  }
  return user;
}

Result<ProcessIdentity> ProcessIdentityOf(ProcessId pid) {
  auto token = OpenProcessTokenOf(pid);
  if (!token.ok()) return token.status();
  ProcessIdentity id;
  auto user = TokenUserSid(token->get());
  if (!user.ok()) return user.status();
  id.user = std::move(*user);
  std::string primary_group;
  if (auto primary = TokenInfo(token->get(), TokenPrimaryGroup, "primary group"); primary.ok()) {
    primary_group = SidText(reinterpret_cast<TOKEN_PRIMARY_GROUP*>(primary->data())->PrimaryGroup);
  }
  auto groups = TokenInfo(token->get(), TokenGroups, "groups");
  if (!groups.ok()) return groups.status();
  const auto* tg = reinterpret_cast<const TOKEN_GROUPS*>(groups->data());
  for (DWORD i = 0; i < tg->GroupCount; ++i) {
    const DWORD attrs = tg->Groups[i].Attributes;
    // An access check counts enabled groups and never a deny-only one.
    if ((attrs & SE_GROUP_ENABLED) == 0 || (attrs & SE_GROUP_USE_FOR_DENY_ONLY) != 0) continue;
    std::string sid = SidText(tg->Groups[i].Sid);
    if (!sid.empty()) id.groups.push_back(std::move(sid));
  }
  // A process may make any group of its token its primary group, a
  // deny-only one too (UAC's filtered Administrators): it counts only if it
  // is one of the enabled groups above, as an access check would count it.
  if (std::find(id.groups.begin(), id.groups.end(), primary_group) != id.groups.end()) {
    id.primary_group = std::move(primary_group);
  }
  return id;
}

bool IsPipeName(std::string_view name) {
  static constexpr std::string_view kPrefix = "\\\\.\\pipe\\";
  if (name.size() <= kPrefix.size()) return false;
  for (std::size_t i = 0; i < kPrefix.size(); ++i) {
    const char c = name[i];
    const char lower = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower != kPrefix[i]) return false;
  }
  const std::string_view rest = name.substr(kPrefix.size());
  if (rest == "." || rest == "..") return false;
  return rest.find_first_of("\\/") == std::string_view::npos;
}

Result<AccountId> HandleOwner(void* handle) {
  PSID owner = nullptr;
  PSECURITY_DESCRIPTOR sd = nullptr;
  const DWORD rc = ::GetSecurityInfo(handle, SE_KERNEL_OBJECT, OWNER_SECURITY_INFORMATION, &owner,
                                     nullptr, nullptr, nullptr, &sd);
  if (rc != ERROR_SUCCESS) {
    return Status{Errc::kInternal, "cannot read the pipe's owner: " + ErrorText(rc)};
  }
  std::string text = owner != nullptr ? SidText(owner) : std::string();
  ::LocalFree(sd);
  if (text.empty()) return Status{Errc::kInternal, "the pipe has no valid owner SID"};
  return text;
}

}  // namespace win

const char* const kSuperuserName = "LocalSystem (S-1-5-18)";

ProcessId CurrentProcessId() { return static_cast<ProcessId>(::GetCurrentProcessId()); }

AccountId CurrentAccount() {
  // The token's user does not change during a process's life: read it once.
  static const AccountId self = [] {
    HANDLE token = nullptr;
    DSB_CHECK(::OpenProcessToken(::GetCurrentProcess(), TOKEN_QUERY, &token),
              "cannot open this process's token: %s", win::ErrorText(::GetLastError()).c_str());
    auto user = win::TokenUserSid(token);
    ::CloseHandle(token);
    DSB_CHECK(user.ok(), "%s", user.status().message().c_str());
    return *user;
  }();
  return self;
}

bool IsSuperuser(const AccountId& account) { return account == "S-1-5-18"; }

std::string AccountText(const AccountId& account) { return account; }

std::string AccountName(const AccountId& account) {
  PSID sid = win::ParseSid(account);
  if (sid == nullptr) return "";
  wchar_t name[256];
  wchar_t domain[256];
  DWORD name_size = 256;
  DWORD domain_size = 256;
  SID_NAME_USE use{};
  std::string who;
  if (::LookupAccountSidW(nullptr, sid, name, &name_size, domain, &domain_size, &use)) {
    who = win::Narrow(name);
    if (domain_size > 0) who = win::Narrow(domain) + "\\" + who;
  }
  ::LocalFree(sid);
  return who;
}

std::string DescribeAccount(const AccountId& account) {
  const std::string who = AccountName(account);
  return who.empty() ? account : account + " (" + who + ")";
}

std::optional<AccountId> LookupAccount(const std::string& name) {
  return win::LookupName(name, {SidTypeUser});
}

std::optional<AccountId> ParseAccountNumber(const std::string& text) {
  PSID sid = win::ParseSid(text);
  if (sid == nullptr) return std::nullopt;
  // The canonical spelling, so that comparisons of strings compare SIDs.
  std::string canonical = win::SidText(sid);
  ::LocalFree(sid);
  if (canonical.empty()) return std::nullopt;
  return canonical;
}

std::optional<GroupId> LookupGroup(const std::string& name) {
  if (auto sid = ParseAccountNumber(name)) return sid;  // "S-1-5-32-544" names a group too
  return win::LookupName(name, {SidTypeGroup, SidTypeAlias, SidTypeWellKnownGroup});
}

}  // namespace dsb
