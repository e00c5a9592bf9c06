// SecureFs on Windows (secure_fs.h, "Two implementations"): owners are SIDs,
// "writable by others" is an ACL entry, "no link" is no reparse point.
#include <windows.h>
// windows.h first: the headers below use its types.
#include <aclapi.h>
#include <fcntl.h>
#include <io.h>
#include <sddl.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "broker/crypto/crypto.h"
#include "broker/secure_fs.h"
#include "common/hex.h"

namespace dsb::broker {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kWhatToDo =
    "use a folder only this broker can write, e.g. %ProgramData%\\dsb\\state";
constexpr const char* kAdministrators = "S-1-5-32-544";

std::string ErrorText(DWORD code) {
  char* text = nullptr;
  const DWORD n = FormatMessageA(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, code, 0, reinterpret_cast<char*>(&text), 0, nullptr);
  std::string out = n > 0 && text != nullptr ? std::string(text, n) : std::string();
  if (text != nullptr) LocalFree(text);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == '.')) {
    out.pop_back();
  }
  if (out.empty()) out = "error";
  return out + " (" + std::to_string(code) + ")";
}

struct HandleCloser {
  void operator()(void* h) const {
    if (h != nullptr && h != INVALID_HANDLE_VALUE) CloseHandle(h);
  }
};
using UniqueHandle = std::unique_ptr<void, HandleCloser>;

struct LocalFreer {
  void operator()(void* p) const { LocalFree(p); }
};

std::string SidString(PSID sid) {
  char* text = nullptr;
  if (sid == nullptr || !ConvertSidToStringSidA(sid, &text)) return "(unreadable SID)";
  std::string out(text);
  LocalFree(text);
  return out;
}

// Owner and DACL of an open handle. `dacl_present` false means a NULL DACL.
struct Security {
  std::unique_ptr<void, LocalFreer> descriptor;
  AccountId owner;
  PACL dacl = nullptr;
};

Result<Security> SecurityOf(HANDLE h) {
  PSID owner = nullptr;
  PACL dacl = nullptr;
  PSECURITY_DESCRIPTOR sd = nullptr;
  const DWORD rc = GetSecurityInfo(h, SE_FILE_OBJECT,
                                   OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                                   &owner, nullptr, &dacl, nullptr, &sd);
  if (rc != ERROR_SUCCESS) return Status{Errc::kConfig, "cannot read its owner and ACL: " + ErrorText(rc)};
  Security s;
  s.descriptor.reset(sd);
  s.owner = SidString(owner);
  s.dacl = dacl;
  return s;
}

// Rights that let their holder change a file or folder, its contents or its
// protection (a folder's FILE_ADD_FILE / FILE_ADD_SUBDIRECTORY are
// FILE_WRITE_DATA / FILE_APPEND_DATA).
constexpr ACCESS_MASK kWriteRights = FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_EA |
                                     FILE_WRITE_ATTRIBUTES | FILE_DELETE_CHILD | DELETE |
                                     WRITE_DAC | WRITE_OWNER | GENERIC_WRITE | GENERIC_ALL;
constexpr ACCESS_MASK kAnyRights = 0xffffffff;

// The SIDs other than trusted owners that an allow entry of `dacl` (one that
// applies to the object itself) grants any of `rights`, as DescribeOwner
// text; {"Everyone (NULL DACL)"} for a NULL DACL.
std::vector<std::string> UntrustedHolders(PACL dacl, ACCESS_MASK rights) {
  if (dacl == nullptr) return {"everyone (the object has no DACL at all)"};
  std::vector<std::string> out;
  for (DWORD i = 0; i < dacl->AceCount; ++i) {
    void* ace = nullptr;
    if (!GetAce(dacl, i, &ace)) continue;
    const auto* header = static_cast<ACE_HEADER*>(ace);
    if (header->AceType == ACCESS_DENIED_ACE_TYPE) continue;  // deny entries only narrow
    if (header->AceType != ACCESS_ALLOWED_ACE_TYPE) {
      // Object, callback and conditional allow entries grant rights this
      // check does not weigh: each is refused, like an untrusted writer.
      out.push_back("an ACL entry of type " + std::to_string(header->AceType) +
                    " (only plain allow and deny entries are accepted)");
      continue;
    }
    if ((header->AceFlags & INHERIT_ONLY_ACE) != 0) continue;  // not for this object
    const auto* allow = static_cast<ACCESS_ALLOWED_ACE*>(ace);
    if ((allow->Mask & rights) == 0) continue;
    const AccountId sid = SidString(const_cast<DWORD*>(&allow->SidStart));
    if (IsTrustedOwner(sid)) continue;
    out.push_back(DescribeOwner(sid));
  }
  return out;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

Status Refuse(std::string_view what, const fs::path& folder, const std::string& why,
              const std::string& fix = "") {
  return {Errc::kConfig, std::string(what) + " " + folder.string() + ": " + why + "; " +
                             (fix.empty() ? "" : fix + ", or ") + std::string(kWhatToDo)};
}

// Attributes of `p` without following a reparse point; nullopt (and `err`)
// if it cannot be read (ERROR_FILE_NOT_FOUND / ERROR_PATH_NOT_FOUND: missing).
std::optional<DWORD> AttributesOf(const fs::path& p, DWORD* err) {
  const DWORD a = GetFileAttributesW(p.wstring().c_str());
  if (a == INVALID_FILE_ATTRIBUTES) {
    *err = GetLastError();
    return std::nullopt;
  }
  return a;
}

bool IsMissing(DWORD err) { return err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND; }

// Opens `p` itself (a reparse point is opened, not followed) for reading its
// attributes and security. Folders need FILE_FLAG_BACKUP_SEMANTICS.
UniqueHandle OpenNoFollow(const fs::path& p, DWORD access, DWORD* err) {
  HANDLE h = CreateFileW(p.wstring().c_str(), access,
                         FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                         OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT,
                         nullptr);
  if (h == INVALID_HANDLE_VALUE) {
    *err = GetLastError();
    return nullptr;
  }
  return UniqueHandle(h);
}

// Every component of the absolute, normalised `abs` from its root down.
std::vector<fs::path> Prefixes(const fs::path& abs) {
  std::vector<fs::path> out;
  fs::path cur = abs.root_path();
  for (const fs::path& part : abs.relative_path()) {
    cur /= part;
    out.push_back(cur);
  }
  return out;
}

// No component of `abs` below its root (up to `upto` components, all if
// larger) is a reparse point; every existing one is a folder except that
// the last may be missing when `may_be_missing`.
Status CheckNoReparse(const fs::path& abs, std::string_view what, const fs::path& folder) {
  for (const fs::path& p : Prefixes(abs)) {
    DWORD err = 0;
    const std::optional<DWORD> a = AttributesOf(p, &err);
    if (!a) {
      if (IsMissing(err)) return Status::Ok();  // the rest is to be made
      return Refuse(what, folder, p.string() + " cannot be examined: " + ErrorText(err));
    }
    if ((*a & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
      return Refuse(what, folder,
                    p.string() + " is a symbolic link or junction (the broker follows none)");
    }
    if ((*a & FILE_ATTRIBUTE_DIRECTORY) == 0) {
      return {Errc::kConfig, std::string(what) + " " + folder.string() + ": " + p.string() +
                                 " is a file, not a folder"};
    }
  }
  return Status::Ok();
}

fs::path Absolute(const fs::path& p) { return fs::absolute(p).lexically_normal(); }

// A SECURITY_DESCRIPTOR from SDDL, freed with LocalFree.
Result<std::unique_ptr<void, LocalFreer>> Descriptor(const std::string& sddl) {
  PSECURITY_DESCRIPTOR sd = nullptr;
  if (!ConvertStringSecurityDescriptorToSecurityDescriptorA(sddl.c_str(), SDDL_REVISION_1, &sd,
                                                            nullptr)) {
    return Status{Errc::kInternal, "cannot build the security descriptor " + sddl + ": " +
                                       ErrorText(GetLastError())};
  }
  return std::unique_ptr<void, LocalFreer>(sd);
}

// Protected DACL: full control for SYSTEM, Administrators and this broker's
// account (folders and files below inherit it); `reader` (a SID string) may
// read and traverse. FA = FILE_ALL_ACCESS, 0x1200a9 = FILE_GENERIC_READ |
// FILE_GENERIC_EXECUTE.
std::string FolderSddl(const std::optional<std::string>& reader) {
  std::string sddl = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;" + CurrentAccount() + ")";
  if (reader) sddl += "(A;OICI;0x1200a9;;;" + *reader + ")";
  return sddl;
}

// Rights on a parent folder that let its holder swap what is below it for a
// junction after the check: delete or rename the child (DELETE on the child
// is checked on that child as a parent in turn, FILE_DELETE_CHILD here), or
// rewrite the rules (WRITE_DAC, WRITE_OWNER, GENERIC_ALL). Adding a new
// subfolder (FILE_ADD_SUBDIRECTORY, which %ProgramData% grants Users) is not
// among them: a folder made that way has its maker as owner, and owners are
// checked.
constexpr ACCESS_MASK kParentRights =
    DELETE | FILE_DELETE_CHILD | WRITE_DAC | WRITE_OWNER | GENERIC_ALL;

// NT SERVICE\TrustedInstaller, the owner of drive roots and system folders.
constexpr const char* kTrustedInstaller =
    "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464";

// Linux's chain rule with Windows' means: every existing parent of `abs`
// below the drive root (whose rights are Windows' own) is owned by a trusted
// owner (or TrustedInstaller) and grants nobody else a right of
// kParentRights; a parent that fails names itself, its owner or the
// entries, and what to do.
Status CheckParents(const fs::path& abs, std::string_view what, const fs::path& folder) {
  const std::vector<fs::path> parts = Prefixes(abs);
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    const fs::path& p = parts[i];
    DWORD err = 0;
    UniqueHandle h = OpenNoFollow(p, READ_CONTROL | FILE_READ_ATTRIBUTES, &err);
    if (!h) {
      if (IsMissing(err)) return Status::Ok();  // the rest is to be made
      return Refuse(what, folder, "its parent " + p.string() + " cannot be opened: " +
                                      ErrorText(err));
    }
    Result<Security> sec = SecurityOf(h.get());
    if (!sec.ok()) return Refuse(what, folder, sec.status().message());
    if (!IsTrustedOwner(sec->owner) && sec->owner != kTrustedInstaller) {
      return Refuse(what, folder,
                    "its parent " + p.string() + " is owned by " + DescribeOwner(sec->owner) +
                        ", not by SYSTEM, Administrators or this broker (" +
                        DescribeOwner(CurrentAccount()) +
                        "), so that account could swap what is below it for a junction",
                    "remove " + p.string() + " (the installer makes it with a protected ACL) or "
                    "give it to Administrators as an administrator (takeown /a /f \"" +
                        p.string() + "\" and icacls \"" + p.string() +
                        "\" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F)");
    }
    const std::vector<std::string> holders = UntrustedHolders(sec->dacl, kParentRights);
    if (!holders.empty()) {
      return Refuse(what, folder,
                    "the ACL of its parent " + p.string() + " lets " + Join(holders) +
                        " delete, rename or re-permission what is below it",
                    "remove those entries (icacls \"" + p.string() + "\")");
    }
  }
  return Status::Ok();
}

}  // namespace

std::vector<std::string> UntrustedAclHolders(const void* dacl, unsigned long rights) {
  return UntrustedHolders(static_cast<PACL>(const_cast<void*>(dacl)), rights);
}

bool IsTrustedOwner(const AccountId& uid) {
  return IsSuperuser(uid) || uid == kAdministrators || uid == CurrentAccount();
}

std::string DescribeOwner(const AccountId& uid) { return DescribeAccount(uid); }

std::string DescribeMode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

Status CheckPrivateFolder(const fs::path& folder, std::string_view what) {
  const fs::path abs = Absolute(folder);
  if (Status st = CheckNoReparse(abs, what, folder); !st.ok()) return st;
  if (Status st = CheckParents(abs, what, folder); !st.ok()) return st;
  DWORD err = 0;
  UniqueHandle h = OpenNoFollow(abs, READ_CONTROL | FILE_READ_ATTRIBUTES, &err);
  if (!h) {
    if (IsMissing(err)) return Refuse(what, folder, abs.string() + " does not exist");
    return Refuse(what, folder, abs.string() + " cannot be opened: " + ErrorText(err));
  }
  Result<Security> sec = SecurityOf(h.get());
  if (!sec.ok()) return Refuse(what, folder, sec.status().message());
  if (!IsTrustedOwner(sec->owner)) {
    return Refuse(what, folder,
                  "it is owned by " + DescribeOwner(sec->owner) + ", not by this broker (" +
                      DescribeOwner(CurrentAccount()) + "), SYSTEM or Administrators");
  }
  const std::vector<std::string> writers = UntrustedHolders(sec->dacl, kWriteRights);
  if (!writers.empty()) {
    return Refuse(what, folder, "its ACL lets " + Join(writers) + " change it",
                  "remove those entries (icacls \"" + abs.string() + "\")");
  }
  return Status::Ok();
}

Status EnsurePrivateFolder(const fs::path& folder, std::string_view what,
                           const PrivateFolderSpec& spec, std::vector<fs::path>* created) {
  const fs::path abs = Absolute(folder);
  if (Status st = CheckNoReparse(abs, what, folder); !st.ok()) return st;
  const std::vector<fs::path> parts = Prefixes(abs);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const fs::path& p = parts[i];
    DWORD err = 0;
    if (AttributesOf(p, &err)) continue;
    if (!IsMissing(err)) return Refuse(what, folder, p.string() + " cannot be examined: " + ErrorText(err));
    const bool is_last = i + 1 == parts.size();
    // Parents are readable by Users (like 0755); the folder itself by the
    // group only, if one is given.
    Result<std::unique_ptr<void, LocalFreer>> sd =
        Descriptor(FolderSddl(is_last ? spec.group : std::optional<std::string>("BU")));
    if (!sd.ok()) return sd.status();
    SECURITY_ATTRIBUTES sa{sizeof sa, sd->get(), FALSE};
    if (CreateDirectoryW(p.wstring().c_str(), &sa)) {
      if (created) created->push_back(p);
      continue;
    }
    err = GetLastError();
    if (err == ERROR_ALREADY_EXISTS) {
      // Made by someone else since the check: it is checked below (the last)
      // or must at least be no reparse point (a parent).
      if (Status st = CheckNoReparse(p, what, folder); !st.ok()) return st;
      continue;
    }
    return {Errc::kConfig, std::string(what) + " " + folder.string() + ": cannot create " +
                               p.string() + ": " + ErrorText(err) +
                               "; make it as an administrator for this broker's account, or use "
                               "a folder this broker can create"};
  }
  return CheckPrivateFolder(folder, what);
}

Status CheckPrivateFolderOrCreatable(const fs::path& folder, std::string_view what) {
  const fs::path abs = Absolute(folder);
  DWORD err = 0;
  if (const std::optional<DWORD> a = AttributesOf(abs, &err)) {
    if ((*a & FILE_ATTRIBUTE_DIRECTORY) == 0) {
      return {Errc::kConfig, std::string(what) + " " + folder.string() + " is a file, not a folder"};
    }
    return CheckPrivateFolder(folder, what);
  }
  return CheckNoReparse(abs, what, folder);
}

std::vector<fs::path> RemoveCreatedFolders(const std::vector<fs::path>& created) {
  std::vector<fs::path> removed;
  for (auto it = created.rbegin(); it != created.rend(); ++it) {
    if (RemoveDirectoryW(it->wstring().c_str())) removed.push_back(*it);
  }
  return removed;
}

Status WriteFileAtomically(const fs::path& path, std::string_view text, mode_t mode,
                           bool durable) {
  // An unpredictable name made with CREATE_NEW, which fails on anything at
  // the name (a planted file or link is never opened).
  std::array<std::uint8_t, 6> random{};
  if (!crypto::RandomBytes(random)) {
    return Status{Errc::kInternal, path.string() + ": random temporary name failed"};
  }
  fs::path tmp = path;
  tmp += ".tmp." + HexEncode(random);
  auto failed = [&](const fs::path& p, const char* step, DWORD e) {
    return Status{Errc::kInternal, p.string() + ": " + step + " failed: " + ErrorText(e)};
  };
  // A mode with no group/other bits (0600, the state files) gets a
  // protected DACL of its own (SYSTEM, Administrators, this account) rather
  // than relying on inheritance from the folder; Wine applies no inheritance
  // to new files, Windows does. Other modes inherit the folder's DACL.
  std::unique_ptr<void, LocalFreer> sd;
  SECURITY_ATTRIBUTES sa{sizeof sa, nullptr, FALSE};
  if ((mode & 077) == 0) {
    Result<std::unique_ptr<void, LocalFreer>> made =
        Descriptor("D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" + CurrentAccount() + ")");
    if (!made.ok()) return made.status();
    sd = std::move(*made);
    sa.lpSecurityDescriptor = sd.get();
  }
  HANDLE h = CreateFileW(tmp.wstring().c_str(), GENERIC_WRITE, 0, &sa, CREATE_NEW,
                         FILE_ATTRIBUTE_NORMAL, nullptr);
  if (h == INVALID_HANDLE_VALUE) return failed(tmp, "create", GetLastError());
  auto discard = [&](const char* step) {
    const DWORD e = GetLastError();
    CloseHandle(h);
    DeleteFileW(tmp.wstring().c_str());
    return failed(tmp, step, e);
  };
  std::size_t done = 0;
  while (done < text.size()) {
    const DWORD chunk = static_cast<DWORD>(std::min<std::size_t>(text.size() - done, 1u << 30));
    DWORD n = 0;
    if (!WriteFile(h, text.data() + done, chunk, &n, nullptr)) return discard("write");
    if (n == 0) {
      // Success that wrote nothing: no error code to report, so name one
      // (GetLastError would say "completed successfully").
      SetLastError(ERROR_WRITE_FAULT);
      return discard("write (no byte written)");
    }
    done += n;
  }
  if (durable && !FlushFileBuffers(h)) return discard("flush");
  if (!CloseHandle(h)) {
    const DWORD e = GetLastError();
    DeleteFileW(tmp.wstring().c_str());
    return failed(tmp, "close", e);
  }
  // Replaces a link at `path` rather than writing through it (a rename acts
  // on the name). A reader that has the old file open (ReadFileNoFollow
  // shares delete) can make Windows refuse for a moment: retry briefly.
  const DWORD flags = MOVEFILE_REPLACE_EXISTING | (durable ? MOVEFILE_WRITE_THROUGH : 0);
  for (int attempt = 0;; ++attempt) {
    if (MoveFileExW(tmp.wstring().c_str(), path.wstring().c_str(), flags)) return Status::Ok();
    const DWORD e = GetLastError();
    if ((e == ERROR_ACCESS_DENIED || e == ERROR_SHARING_VIOLATION) && attempt < 50) {
      Sleep(10);  // bounded: at most ~0.5 s in all
      continue;
    }
    DeleteFileW(tmp.wstring().c_str());
    return failed(path, "rename", e);
  }
}

Result<std::optional<std::string>> ReadFileNoFollow(const fs::path& path, std::size_t max_bytes) {
  auto bad = [&](const std::string& why) {
    return Status{Errc::kConfig, path.string() + ": " + why};
  };
  // FILE_SHARE_DELETE: a writer may rename a new version over it meanwhile.
  HANDLE raw = CreateFileW(path.wstring().c_str(), GENERIC_READ,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                           OPEN_EXISTING, FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS,
                           nullptr);
  if (raw == INVALID_HANDLE_VALUE) {
    const DWORD e = GetLastError();
    if (IsMissing(e)) return std::optional<std::string>();
    return bad("cannot open: " + ErrorText(e));
  }
  UniqueHandle h(raw);
  BY_HANDLE_FILE_INFORMATION info{};
  if (!GetFileInformationByHandle(raw, &info)) return bad("cannot examine: " + ErrorText(GetLastError()));
  if ((info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
    return bad("is a symbolic link; the broker follows no link to its own files: remove it");
  }
  if ((info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0) {
    return bad("is a folder, not a regular file");
  }
  const std::uint64_t size = (std::uint64_t{info.nFileSizeHigh} << 32) | info.nFileSizeLow;
  if (size > max_bytes) return bad("larger than " + std::to_string(max_bytes) + " bytes");
  std::string text;
  char buf[8192];
  for (;;) {
    DWORD n = 0;
    if (!ReadFile(raw, buf, sizeof buf, &n, nullptr)) {
      return bad("cannot read: " + ErrorText(GetLastError()));
    }
    if (n == 0) break;
    text.append(buf, n);
    if (text.size() > max_bytes) return bad("larger than " + std::to_string(max_bytes) + " bytes");
  }
  return std::optional<std::string>(std::move(text));
}

Result<int> OpenForAppendNoFollow(const fs::path& path, std::string_view what, mode_t /*mode*/) {
  auto bad = [&](const std::string& why) {
    return Status{Errc::kConfig, std::string(what) + " " + path.string() + ": " + why};
  };
  // FILE_SHARE_DELETE lets an operator rotate (rename) the file while it is
  // open, as logrotate does on Linux; a reload opens the new name.
  HANDLE raw = CreateFileW(path.wstring().c_str(), FILE_APPEND_DATA | READ_CONTROL | SYNCHRONIZE,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                           OPEN_ALWAYS, FILE_FLAG_OPEN_REPARSE_POINT | FILE_ATTRIBUTE_NORMAL,
                           nullptr);
  if (raw == INVALID_HANDLE_VALUE) {
    const DWORD e = GetLastError();
    if (e == ERROR_ACCESS_DENIED) {
      DWORD err = 0;
      const std::optional<DWORD> a = AttributesOf(path, &err);
      if (a && (*a & FILE_ATTRIBUTE_DIRECTORY) != 0) return bad("is a folder, not a file");
    }
    return bad("cannot open: " + ErrorText(e));
  }
  UniqueHandle h(raw);
  BY_HANDLE_FILE_INFORMATION info{};
  std::string why;
  if (!GetFileInformationByHandle(raw, &info)) {
    why = "cannot examine: " + ErrorText(GetLastError());
  } else if ((info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
    why = "is a symbolic link; the broker follows none: remove it";
  } else if ((info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0) {
    why = "is a folder, not a file";
  } else if (Result<Security> sec = SecurityOf(raw); !sec.ok()) {
    why = sec.status().message();
  } else if (!IsTrustedOwner(sec->owner)) {
    why = "is owned by " + DescribeOwner(sec->owner) + ", not by this broker (" +
          DescribeOwner(CurrentAccount()) + "), SYSTEM or Administrators: remove it";
  } else if (std::vector<std::string> w = UntrustedHolders(sec->dacl, kWriteRights); !w.empty()) {
    why = "its ACL lets " + Join(w) + " change it; remove those entries (icacls)";
  }
  if (!why.empty()) return bad(why);
  // A CRT descriptor owns the handle from here (_close closes it).
  const int fd = _open_osfhandle(reinterpret_cast<intptr_t>(raw), _O_WRONLY | _O_APPEND | _O_BINARY);
  if (fd < 0) return bad("cannot make a descriptor for it");
  (void)h.release();
  return fd;
}

Status CheckWritableFileSlot(const fs::path& path, std::string_view what) {
  DWORD err = 0;
  UniqueHandle h = OpenNoFollow(path, READ_CONTROL | FILE_READ_ATTRIBUTES, &err);
  if (!h) {
    if (IsMissing(err)) return Status::Ok();
    return {Errc::kConfig, std::string(what) + " " + path.string() + ": cannot be examined: " +
                               ErrorText(err)};
  }
  BY_HANDLE_FILE_INFORMATION info{};
  std::string why;
  if (!GetFileInformationByHandle(h.get(), &info)) {
    why = "cannot be examined: " + ErrorText(GetLastError());
  } else if ((info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0) {
    why = "is a folder, not a file";
  } else if ((info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
    why = "is a symbolic link; the broker follows none: remove it";
  } else if (Result<Security> sec = SecurityOf(h.get()); !sec.ok()) {
    why = sec.status().message();
  } else if (!IsTrustedOwner(sec->owner)) {
    why = "is owned by " + DescribeOwner(sec->owner) + ", not by this broker (" +
          DescribeOwner(CurrentAccount()) + "), SYSTEM or Administrators: remove it";
  }
  if (why.empty()) return Status::Ok();
  return {Errc::kConfig, std::string(what) + " " + path.string() + " " + why};
}

Status CheckOperatorFile(int fd, const fs::path& path, std::string_view what,
                         FileSecrecy secrecy) {
  const std::string name = path.string();
  const auto h = reinterpret_cast<HANDLE>(_get_osfhandle(fd));
  BY_HANDLE_FILE_INFORMATION info{};
  if (h == INVALID_HANDLE_VALUE || !GetFileInformationByHandle(h, &info)) {
    return {Errc::kConfig, name + ": cannot examine " + std::string(what) + ": " +
                               ErrorText(GetLastError())};
  }
  if ((info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0) {
    return {Errc::kConfig, name + ": " + std::string(what) + " is a folder, not a regular file"};
  }
  Result<Security> sec = SecurityOf(h);
  if (!sec.ok()) return {Errc::kConfig, name + ": " + std::string(what) + ": " + sec.status().message()};
  const std::string fix = "run `icacls \"" + name + "\" /inheritance:r /grant:r *" +
                          CurrentAccount() + ":F *S-1-5-18:F *S-1-5-32-544:F`";
  if (!IsTrustedOwner(sec->owner)) {
    return {Errc::kConfig, name + ": " + std::string(what) + " is owned by " +
                               DescribeOwner(sec->owner) +
                               ": only the broker's account (" + DescribeOwner(CurrentAccount()) +
                               "), SYSTEM or Administrators may own it, or that account could "
                               "change it; take ownership (`takeown /f \"" + name + "\"`) and " + fix};
  }
  const bool secret = secrecy == FileSecrecy::kSecret;
  const std::vector<std::string> holders =
      UntrustedHolders(sec->dacl, secret ? kAnyRights : kWriteRights);
  if (!holders.empty()) {
    return {Errc::kConfig, name + ": " + std::string(what) + "'s ACL lets " + Join(holders) +
                               (secret ? " access it" : " change it") + "; " + fix};
  }
  return Status::Ok();
}

Result<std::vector<std::uint8_t>> ReadSecretFile(const fs::path& path, std::string_view what,
                                                 std::size_t max_bytes) {
  const std::string name = path.string();
  const std::string file = std::string(what) + " " + name;
  HANDLE raw = CreateFileW(path.wstring().c_str(), GENERIC_READ | READ_CONTROL, FILE_SHARE_READ,
                           nullptr, OPEN_EXISTING, FILE_FLAG_OPEN_REPARSE_POINT, nullptr);
  if (raw == INVALID_HANDLE_VALUE) {
    return Status(Errc::kConfig, "cannot open " + file + ": " + ErrorText(GetLastError()));
  }
  UniqueHandle h(raw);
  BY_HANDLE_FILE_INFORMATION info{};
  if (!GetFileInformationByHandle(raw, &info)) {
    return Status(Errc::kConfig, "cannot examine " + file + ": " + ErrorText(GetLastError()));
  }
  if ((info.dwFileAttributes & (FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT)) != 0) {
    return Status(Errc::kConfig, file + " is not a regular file");
  }
  Result<Security> sec = SecurityOf(raw);
  if (!sec.ok()) return Status(Errc::kConfig, file + ": " + sec.status().message());
  const std::string fix = "run `icacls \"" + name + "\" /inheritance:r /grant:r *" +
                          CurrentAccount() + ":F *S-1-5-18:F *S-1-5-32-544:F`";
  if (!IsTrustedOwner(sec->owner)) {
    return Status(Errc::kConfig, file + " is owned by " + DescribeOwner(sec->owner) +
                                     ", not by the broker's account (" +
                                     DescribeOwner(CurrentAccount()) +
                                     "), SYSTEM or Administrators; take ownership (`takeown /f \"" +
                                     name + "\"`) and " + fix);
  }
  if (std::vector<std::string> others = UntrustedHolders(sec->dacl, kAnyRights); !others.empty()) {
    return Status(Errc::kConfig, file + "'s ACL lets " + Join(others) + " access it; " + fix);
  }
  const std::uint64_t size = (std::uint64_t{info.nFileSizeHigh} << 32) | info.nFileSizeLow;
  if (size > max_bytes) {
    return Status(Errc::kConfig, file + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  std::vector<std::uint8_t> contents(max_bytes + 1);
  std::size_t got = 0;
  while (got < contents.size()) {
    DWORD n = 0;
    if (!ReadFile(raw, contents.data() + got, static_cast<DWORD>(contents.size() - got), &n,
                  nullptr)) {
      const DWORD err = GetLastError();
      SecureZeroMemory(contents.data(), contents.size());
      return Status(Errc::kConfig, "cannot read " + file + ": " + ErrorText(err));
    }
    if (n == 0) break;
    got += n;
  }
  contents.resize(got);  // the bytes past `got` were never written
  return contents;
}

}  // namespace dsb::broker
