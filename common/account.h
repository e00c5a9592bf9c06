// Who a process runs as, spelled the same on every platform (issue 12).
//
// On POSIX an account is a uid, a group a gid and a process a pid_t: the
// aliases below are exactly those types, so Linux code that uses them is
// unchanged. On Windows an account or a group is its security identifier in
// string form ("S-1-5-21-...-1001", what ConvertSidToStringSidW prints) and
// a process id is a DWORD. Code that compares, stores or prints identities
// uses these names; code that asks the OS about them lives in *_posix.cc /
// *_win.cc files behind small headers (common/local_frame.h for a peer's
// credentials, broker/admin_rights.h for group membership).
#ifndef DSB_COMMON_ACCOUNT_H_
#define DSB_COMMON_ACCOUNT_H_

#include <optional>
#include <string>

#ifdef _WIN32
#include <cstdint>
#else
#include <sys/types.h>
#endif

namespace dsb {

#ifdef _WIN32
using AccountId = std::string;  // a user's SID string
using GroupId = std::string;    // a group's SID string
using ProcessId = std::uint32_t;
#else
using AccountId = uid_t;
using GroupId = gid_t;
using ProcessId = pid_t;
#endif

// ---- Asking the OS (common/account_posix.cc, common/account_win.cc) ---------

// This process's id: getpid(), GetCurrentProcessId().
ProcessId CurrentProcessId();

// The account this process acts as: geteuid(), or the user SID of the
// process token. Never fails (a process always has one; on Windows a token
// that cannot be read aborts loudly: it is a bug, not an input).
AccountId CurrentAccount();

// Whether `account` is the machine's all-powerful account, trusted by every
// local check: root (uid 0), or LocalSystem (S-1-5-18) on Windows.
bool IsSuperuser(const AccountId& account);

// How messages name the superuser: "root" or "LocalSystem (S-1-5-18)".
extern const char* const kSuperuserName;

// The id alone, for log keys and short messages: "1001" or "S-1-5-21-...".
std::string AccountText(const AccountId& account);

// For messages: "uid 1001 (mallory)", or "uid 1001" if the uid has no name;
// on Windows "S-1-5-21-...-1001 (DOMAIN\mallory)", or the SID alone if
// LookupAccountSidW knows no name for it.
std::string DescribeAccount(const AccountId& account);

// The account's user name ("alice"; on Windows "DOMAIN\\alice"), or "" if
// it has none.
std::string AccountName(const AccountId& account);

// The user account called `name` (getpwnam_r / LookupAccountNameW, a user
// SID only), or nullopt if there is none.
std::optional<AccountId> LookupAccount(const std::string& name);

// An account given by number rather than name: a decimal uid below
// (uid_t)-1 on POSIX, a SID string ("S-1-5-21-...") on Windows. nullopt if
// `text` is not of that form (the caller says so, naming where it came from).
std::optional<AccountId> ParseAccountNumber(const std::string& text);

// The group called `name` (getgrnam_r / LookupAccountNameW: a group, alias
// or well-known group SID), or nullopt if there is none.
std::optional<GroupId> LookupGroup(const std::string& name);

}  // namespace dsb

#endif  // DSB_COMMON_ACCOUNT_H_
