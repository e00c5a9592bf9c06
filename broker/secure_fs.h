// SecureFs: the broker trusts only files and folders that it (or root) made.
//
// A broker, often running as root, keeps its socket, lock files, state files
// and log in folders. If another user can write one of those folders, that
// user can rename the socket away and serve a fake broker, or plant a
// symbolic link where the broker is about to write, and make it overwrite a
// file of the attacker's choosing (issue 9). So:
//
//  - Every folder the broker writes in is *private*: resolved (realpath), and
//    every component from `/` down is a folder owned by root or the broker's
//    effective uid and not writable by group or others, unless it is sticky
//    (like /tmp, /dev/shm) and the component below it is owned by root or the
//    broker (a sticky folder lets nobody else rename or remove what is in it).
//    The folder itself is owned by the broker's effective uid and not
//    writable by group or others. Group read and search are fine: clients of
//    the configured group need to reach the socket.
//  - Files the broker writes are written whole to a temporary file made with
//    O_CREAT | O_EXCL | O_NOFOLLOW under an unpredictable name, fsynced, and
//    renamed over the target (rename replaces a symlink, never follows it).
//  - Files the broker reads back are opened with O_NOFOLLOW and must be
//    regular files.
//  - Files an operator gives the broker (broker file, cluster file, key file)
//    must be owned by root or the broker's user and writable by nobody else;
//    the key file also readable by nobody else.
//
// Refusals are kConfig statuses naming the file or folder, the offending
// component, its owner (uid and name) and mode, and what to do.
//
// Two implementations (issue 12): secure_fs_posix.cc (the rules above) and
// secure_fs_win.cc, which keeps the same contract with Windows' means:
//  - owners are account SIDs; trusted are the broker's own account,
//    LocalSystem (S-1-5-18) and BUILTIN\Administrators (S-1-5-32-544, the
//    owner of what an elevated administrator makes);
//  - "writable by group or others" is an ACL entry that grants any write,
//    delete, WRITE_DAC or WRITE_OWNER right to another SID (kSecret: any
//    access at all); a missing (NULL) DACL grants everyone everything;
//  - folders the broker makes get a protected DACL (no inheritance from
//    above): full control for the broker's account, SYSTEM and
//    Administrators; read and traverse for broker.group if given (the last
//    folder) or for Users (parents, like 0755);
//  - "no symbolic link" is no reparse point (symbolic link or junction) in
//    any component, checked with FILE_FLAG_OPEN_REPARSE_POINT opens;
//  - the chain check: no component is a reparse point, and every existing
//    parent below the drive root is owned by a trusted owner (or
//    TrustedInstaller) and grants nobody else DELETE, FILE_DELETE_CHILD,
//    WRITE_DAC, WRITE_OWNER or GENERIC_ALL (what would let another account
//    swap a folder below it for a junction after the check; %ProgramData%'s
//    "Users may create folders" is not among them: such a folder is owned by
//    its maker and refused). A %ProgramData%\dsb that another user made
//    first is refused, naming it and how to fix it; the installer makes it
//    with a protected DACL. The folder itself is checked in full;
//  - ACL entries other than plain allow and deny (object, callback,
//    conditional) are refused wherever an ACL is checked;
//  - the atomic replace is a CREATE_NEW temporary file, FlushFileBuffers,
//    MoveFileExW(MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH);
//  - a file `mode` without group/other bits (0600) gives the file a protected
//    DACL of its own (SYSTEM, Administrators, the broker); other modes and
//    OpenForAppendNoFollow's files take the folder's inherited DACL.
// Under Wine the owner and DACL calls succeed, and a descriptor set on a
// folder is stored, but Wine enforces no access check the way Windows does:
// tests there show the checks read what is stored, not that another account
// is kept out (docs/windows.md).
//
// Thread rule: the functions are thread-safe except where a comment says
// otherwise (none of them keeps state).
#ifndef DSB_BROKER_SECURE_FS_H_
#define DSB_BROKER_SECURE_FS_H_

#include <sys/types.h>  // mode_t (MinGW has it too)

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/account.h"
#include "common/status.h"

namespace dsb::broker {

// True for root and for the process's effective uid: the only owners the
// broker trusts for its folders and files. (Windows: LocalSystem,
// Administrators and the broker's own account SID.)
bool IsTrustedOwner(const AccountId& uid);

#ifdef _WIN32
// The entries of `dacl` (a PACL; nullptr: a NULL DACL) that make a folder or
// file not private: each allow entry for an untrusted SID granting any of
// `rights` (an ACCESS_MASK), and every entry of a type other than plain
// allow and deny (object, callback, conditional entries are not weighed,
// so they are refused), as text for messages. Empty: none. For tests.
std::vector<std::string> UntrustedAclHolders(const void* dacl, unsigned long rights);
#endif

// "uid 1001 (alice)"; "uid 4242 (no such user)". (Windows: "S-1-5-... (DOMAIN\name)".)
std::string DescribeOwner(const AccountId& uid);

// "0755" (permission bits, set-id and sticky bits included).
std::string DescribeMode(mode_t mode);

// How EnsurePrivateFolder makes a missing folder.
struct PrivateFolderSpec {
  // The folder itself. Missing parents are made 0755 (root or the broker
  // owns them; others may search them, as for /run).
  mode_t mode = 0700;
  // Given to the folder itself after it is made (e.g. 0750 + the broker's
  // group, so clients of that group can reach a socket inside).
  std::optional<GroupId> group;
};

// Checks that `folder` is private to this broker (rules at the top).
// `what` names the setting in messages, e.g. "broker.state_dir".
// Success: Ok. Failure: kConfig "<what> <folder>: <component> ..." naming
// the first offending component (missing, not a folder, owned by another
// user, writable by group or others), its owner and mode, and ending with
// "use a folder only this broker can write, e.g. /run/dsb".
Status CheckPrivateFolder(const std::filesystem::path& folder, std::string_view what);

// As CheckPrivateFolder, but a folder that does not exist yet is made first
// (parents 0755, the folder itself spec.mode and spec.group; the umask does
// not narrow these). Each component is checked before anything is made in
// it, so nothing is created inside a folder another user controls.
// `created` (optional) receives the folders this call made, outermost first,
// so a failed start can remove them again.
// Failure: as CheckPrivateFolder, or kConfig naming a folder that cannot be
// made and why. A folder made before a later failure stays (and is listed).
Status EnsurePrivateFolder(const std::filesystem::path& folder, std::string_view what,
                           const PrivateFolderSpec& spec,
                           std::vector<std::filesystem::path>* created = nullptr);

// For `dsb-broker --check`: as CheckPrivateFolder for an existing folder;
// for a missing one, the nearest existing ancestor must be a folder that
// EnsurePrivateFolder could build in (its chain is checked; it may be owned
// by root). Nothing is created. A path that exists but is not a folder is
// refused ("... is a file, not a folder").
Status CheckPrivateFolderOrCreatable(const std::filesystem::path& folder, std::string_view what);

// Removes the folders in `created` (as EnsurePrivateFolder filled it),
// innermost first, each only if empty. Returns those removed.
std::vector<std::filesystem::path> RemoveCreatedFolders(
    const std::vector<std::filesystem::path>& created);

// Replaces `path` with `text` atomically and durably: a temporary file
// "<path>.tmp.XXXXXX" (random suffix) made with O_CREAT | O_EXCL |
// O_NOFOLLOW and mode `mode`, written, fsynced, renamed over `path`, then
// the folder fsynced. A symbolic link at `path` is replaced, never followed.
// REQUIRES: path's folder is private (CheckPrivateFolder), so the name
// cannot be swapped between the checks and the rename.
// Failure: kInternal "<file>: <step> failed: <reason>"; the temporary file
// is removed and `path` is unchanged.
// `durable` false skips both fsyncs (a file on tmpfs that lives no longer
// than the machine's run, e.g. beside the socket).
Status WriteFileAtomically(const std::filesystem::path& path, std::string_view text,
                           mode_t mode = 0600, bool durable = true);

// Reads a file the broker wrote, without following a symbolic link.
// Success: nullopt if there is no such file; the text otherwise.
// Failure: kConfig "<file>: ..." if it is a symbolic link ("the broker
// follows no link here; remove it"), not a regular file, larger than
// `max_bytes`, or cannot be read.
Result<std::optional<std::string>> ReadFileNoFollow(const std::filesystem::path& path,
                                                    std::size_t max_bytes);

// Opens (creating with `mode` if missing) a file to append to: the log.
// O_NOFOLLOW, O_NONBLOCK then cleared; the file must be a regular file
// owned by the broker's effective uid or root, not writable by others.
// Success: the descriptor (O_CLOEXEC; the caller closes it).
// Failure: kConfig "<what> <file>: ..." (a symbolic link, a folder, another
// user's file, ...).
Result<int> OpenForAppendNoFollow(const std::filesystem::path& path, std::string_view what,
                                  mode_t mode = 0640);

// For `--check`: `path` is missing or a regular file (not a folder, not a
// symbolic link) owned by root or the broker. Failure: kConfig naming `what`.
Status CheckWritableFileSlot(const std::filesystem::path& path, std::string_view what);

// What an operator's file must satisfy (CheckOperatorFile).
enum class FileSecrecy {
  kConfig,  // owned by root or the broker's user; writable by nobody else
  kSecret,  // as kConfig, and no access at all for group or others (mode & 077 == 0)
};

// Checks the open descriptor `fd` of an operator's file named `path` (a
// config or key file): a regular file, owned by root or the broker's
// effective uid, writable by nobody else (kSecret: no group/other access).
// Failure: kConfig "<path>: <what> is owned by uid N (name), mode 0664:
// ...; run `chmod 600 <path>` ..." (or `chown`).
Status CheckOperatorFile(int fd, const std::filesystem::path& path, std::string_view what,
                         FileSecrecy secrecy);

// Reads a secret an operator gives the broker (the cluster key file), named
// `what` in messages ("cluster key file"): a regular file owned by root or
// the broker's user, with no access for group or others (Windows: owned by
// a trusted SID, no ACL entry for any other SID, no reparse point).
// Success: its first max_bytes + 1 bytes at most (one more than allowed, so
// the caller can say it is too large); the caller wipes them after use.
// Failure: kConfig "cannot open <what> <file>: ...", "<what> <file> is owned
// by ...", "... has mode 0644: group or others may access it; ...",
// "... is larger than N bytes", "cannot read <what> <file>: ...".
Result<std::vector<std::uint8_t>> ReadSecretFile(const std::filesystem::path& path,
                                                 std::string_view what, std::size_t max_bytes);

}  // namespace dsb::broker

#endif  // DSB_BROKER_SECURE_FS_H_
