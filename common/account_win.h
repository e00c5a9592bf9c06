// Windows-only helpers behind common/account.h, shared by the pipe transport
// (common/local_frame_win.cc: the broker's account from its process) and the
// broker's peer checks (broker/peer_access_win.cc: a client's user and group
// SIDs). Included only by *_win.cc files.
//
// Thread rule: none (each call opens and closes its own handles).
#ifndef DSB_COMMON_ACCOUNT_WIN_H_
#define DSB_COMMON_ACCOUNT_WIN_H_

#ifndef _WIN32
#error "common/account_win.h is for Windows builds only"
#endif

#include <string>
#include <string_view>
#include <vector>

#include "common/account.h"
#include "common/status.h"

namespace dsb::win {

// UTF-8 <-> UTF-16 (invalid input is replaced, never an error: for names
// and messages).
std::wstring Widen(std::string_view text);
std::string Narrow(std::wstring_view text);

// The system's text for error `code` (FormatMessageW), with the number:
// "Access is denied. (error 5)".
std::string ErrorText(unsigned long code);

// The user SID of process `pid` (OpenProcess with
// PROCESS_QUERY_LIMITED_INFORMATION, OpenProcessToken, TokenUser).
// kPermissionDenied if we may not read its token (a LocalSystem service's
// token is closed to ordinary users), kInternal otherwise (no such process
// any more, ...); each message names the pid and the system's error.
Result<AccountId> ProcessAccount(ProcessId pid);

// The process's user SID and the SIDs of its enabled groups
// (TokenGroups: groups marked SE_GROUP_ENABLED, deny-only ones left out, as
// an access check counts them) and its primary group if that is one of
// those enabled groups, else empty (a process may set any group of its
// token as primary, a deny-only one too). Failures as above.
struct ProcessIdentity {
  AccountId user;
  GroupId primary_group;
  std::vector<GroupId> groups;
};
Result<ProcessIdentity> ProcessIdentityOf(ProcessId pid);

// True for a local pipe name the broker and clients accept: "\\.\pipe\"
// (any case) and then a name with no '\' or '/' that is not "." or "..".
// The one check of the broker's Open, the client's connect and the config.
bool IsPipeName(std::string_view name);

// The owner SID of the kernel object behind `handle` (GetSecurityInfo,
// needs READ_CONTROL on the handle). kInternal naming the error.
Result<AccountId> HandleOwner(void* handle);

}  // namespace dsb::win

#endif  // DSB_COMMON_ACCOUNT_WIN_H_
