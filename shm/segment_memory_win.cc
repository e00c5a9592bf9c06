// SegmentMemory on Windows: a named, pagefile-backed section (see
// segment_memory.h for the naming, the DACL and the lifetime rules).
#include "shm/segment_memory.h"

#include <windows.h>
// After windows.h:
#include <aclapi.h>
#include <sddl.h>

#include <cctype>
#include <cstddef>
#include <cstring>
#include <optional>
#include <utility>

#include "common/account_win.h"
#include "shm/segment_layout.h"

namespace dsb::shm {

namespace {

constexpr char kLocal[] = "Local\\";
constexpr char kGlobal[] = "Global\\";

// Names and the system's error text: the one copy in common/account_win.h.
using win::ErrorText;
using win::Widen;

bool StartsWith(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

// "Local\" or "Global\" and the bare name.
std::pair<std::string, std::string> Split(const std::string& name) {
  if (StartsWith(name, kGlobal)) return {kGlobal, name.substr(std::strlen(kGlobal))};
  if (StartsWith(name, kLocal)) return {kLocal, name.substr(std::strlen(kLocal))};
  return {kLocal, name};
}

std::string SidString(PSID sid) {
  LPSTR text = nullptr;
  if (sid == nullptr || !::ConvertSidToStringSidA(sid, &text)) return "?";
  std::string out(text);
  ::LocalFree(text);
  return out;
}

// This process's account, as a SID string ("" if the token cannot be read).
std::string CurrentAccountSid() {
  HANDLE token = nullptr;
  if (!::OpenProcessToken(::GetCurrentProcess(), TOKEN_QUERY, &token)) return "";
  DWORD len = 0;
  ::GetTokenInformation(token, TokenUser, nullptr, 0, &len);
  std::string buf(len, '\0');
  std::string out;
  if (len != 0 && ::GetTokenInformation(token, TokenUser, buf.data(), len, &len)) {
    out = SidString(reinterpret_cast<TOKEN_USER*>(buf.data())->User.Sid);
  }
  ::CloseHandle(token);
  return out;
}

// A SECURITY_ATTRIBUTES made from an SDDL string; freed with it.
struct Security {
  SECURITY_ATTRIBUTES sa{};
  PSECURITY_DESCRIPTOR sd = nullptr;
  ~Security() {
    if (sd != nullptr) ::LocalFree(sd);
  }
  bool Make(const std::string& sddl) {
    if (!::ConvertStringSecurityDescriptorToSecurityDescriptorW(
            Widen(sddl).c_str(), SDDL_REVISION_1, &sd, nullptr)) {
      return false;
    }
    sa.nLength = sizeof sa;
    sa.lpSecurityDescriptor = sd;
    sa.bInheritHandle = FALSE;
    return true;
  }
};

// The exact size the section was made with (the view is rounded to pages).
// NtQuerySection is not in the SDK headers: looked up in ntdll.
std::optional<std::size_t> SectionSize(HANDLE section) {
  struct SectionBasicInformation {
    PVOID base;
    ULONG attributes;
    LARGE_INTEGER size;
  };
  using NtQuerySectionFn = LONG(NTAPI*)(HANDLE, int, PVOID, SIZE_T, PSIZE_T);
  static const auto fn = reinterpret_cast<NtQuerySectionFn>(reinterpret_cast<void*>(
      ::GetProcAddress(::GetModuleHandleW(L"ntdll.dll"), "NtQuerySection")));
  if (fn == nullptr) return std::nullopt;
  SectionBasicInformation info{};
  if (fn(section, 0 /* SectionBasicInformation */, &info, sizeof info, nullptr) != 0) {
    return std::nullopt;
  }
  if (info.size.QuadPart < 0) return std::nullopt;
  return static_cast<std::size_t>(info.size.QuadPart);
}

// Accounts a segment must never admit: everyone, or every user of the
// machine or of a domain, or anyone who is merely logged on some way.
bool BroadSid(const std::string& sid) {
  static const char* const kBroad[] = {
      "S-1-1-0",       // Everyone
      "S-1-2-0",       // Local (anyone logged on locally)
      "S-1-2-1",       // Console Logon
      "S-1-3-0",       // Creator Owner (a placeholder, never a real group)
      "S-1-3-1",       // Creator Group
      "S-1-5-1",       // Dialup
      "S-1-5-2",       // Network
      "S-1-5-3",       // Batch
      "S-1-5-4",       // Interactive
      "S-1-5-6",       // Service
      "S-1-5-7",       // Anonymous
      "S-1-5-11",      // Authenticated Users
      "S-1-5-13",      // Terminal Server Users
      "S-1-5-14",      // Remote Interactive Logon
      "S-1-5-15",      // This Organization
      "S-1-5-32-545",  // BUILTIN\Users
      "S-1-5-32-546",  // BUILTIN\Guests
      "S-1-5-32-555",  // BUILTIN\Remote Desktop Users
      "S-1-15-2-1",    // All Application Packages
      "S-1-15-2-2",    // All Restricted Application Packages
  };
  for (const char* b : kBroad) {
    if (sid == b) return true;
  }
  // Domain Users, Domain Guests, Domain Computers (S-1-5-21-<domain>-513..515).
  if (StartsWith(sid, "S-1-5-21-")) {
    const auto dash = sid.rfind('-');
    const std::string rid = sid.substr(dash + 1);
    if (rid == "513" || rid == "514" || rid == "515") return true;
  }
  return false;
}

// The configured group as a canonical SID string ("S-1-5-21-...-1010"):
// parsed, not pasted, so nothing but digits and dashes reaches an SDDL
// string. Refused: anything that is no "S-" SID string (an SDDL alias such
// as WD or BU, a name, SDDL syntax) and the broad SIDs above.
Result<std::string> ParseGroup(const std::string& segment, const std::string& group) {
  const auto refuse = [&](const std::string& why) {
    return Status{Errc::kSegmentUnavailable,
                  "segment " + segment + ": cannot give it to group '" + group + "': " + why};
  };
  if (!StartsWith(group, "S-")) {
    return refuse("not a SID string (give the group's SID, S-1-5-21-... or S-1-5-32-...)");
  }
  PSID sid = nullptr;
  if (!::ConvertStringSidToSidW(Widen(group).c_str(), &sid)) {
    return refuse("not a valid SID: " + ErrorText(::GetLastError()));
  }
  const std::string canonical = SidString(sid);
  ::LocalFree(sid);
  if (canonical == "?" ||
      canonical.find_first_not_of("S-0123456789") != std::string::npos) {
    return refuse("its SID does not read back as digits and dashes");
  }
  if (BroadSid(canonical)) {
    return refuse("it stands for every user (or every logged-on user) of the machine or "
                  "domain; give a group of the DigiScope accounts only");
  }
  return canonical;
}

// The descriptors of a segment made (or adopted) by account `self` for
// `group` (a canonical SID from ParseGroup, or ""):
// P: protected (nothing inherited). SYSTEM and the broker's account: all.
// The group: map read/write (GR also grants READ_CONTROL and SECTION_QUERY,
// which attachers use to check the owner and the size); on the events and
// the mutex, wait (GX: SYNCHRONIZE) and signal (GW: modify state).
// O: the owner is the broker's account itself, which attachers check
// (AttachOptions::owner): without it Windows makes an elevated creator's
// objects owned by BUILTIN\Administrators, and Wine by the primary group.
std::string SectionSddl(const std::string& self, const std::string& group) {
  std::string sddl = "O:" + self + "D:P(A;;GA;;;SY)(A;;GA;;;" + self + ")";
  if (!group.empty()) sddl += "(A;;GRGW;;;" + group + ")";
  return sddl;
}
std::string ObjectSddl(const std::string& self, const std::string& group) {
  std::string sddl = "O:" + self + "D:P(A;;GA;;;SY)(A;;GA;;;" + self + ")";
  if (!group.empty()) sddl += "(A;;GRGWGX;;;" + group + ")";
  return sddl;
}

// The allow list of an attacher that checks the owner: SYSTEM, the owner,
// the group. `group` "" (not known to the attacher, e.g. a client): at most
// one other SID, and not a broad one (the broker's configured group,
// whichever it is; only the owner's account can have made the section).
// Returns "" if `dacl` grants nothing to anyone else, else what it grants
// wrongly. Deny ACEs take access away and are fine; every other
// ACE type in a DACL grants (plain, callback, object, compound): a SID read
// from it must be on the list, and a type whose SID is not read here is
// refused as a whole.
std::string DaclOutsideAllowList(PACL dacl, const std::string& owner, const std::string& group) {
  if (dacl == nullptr) return "a null DACL (everyone has access)";
  std::string other;  // the one unnamed group allowed when `group` is ""
  for (DWORD i = 0; i < dacl->AceCount; ++i) {
    void* ace = nullptr;
    if (!::GetAce(dacl, i, &ace)) return "an ACE that cannot be read (#" + std::to_string(i) + ")";
    const auto* header = static_cast<ACE_HEADER*>(ace);
    switch (header->AceType) {
      case ACCESS_DENIED_ACE_TYPE:
      case ACCESS_DENIED_OBJECT_ACE_TYPE:
      case ACCESS_DENIED_CALLBACK_ACE_TYPE:
      case ACCESS_DENIED_CALLBACK_OBJECT_ACE_TYPE:
        continue;
      case ACCESS_ALLOWED_ACE_TYPE:
      case ACCESS_ALLOWED_CALLBACK_ACE_TYPE: {
        // Both have the layout of ACCESS_ALLOWED_ACE (header, mask, SID).
        auto* allowed = static_cast<ACCESS_ALLOWED_ACE*>(ace);
        const std::string sid = SidString(reinterpret_cast<PSID>(&allowed->SidStart));
        if (sid == "S-1-5-18" || sid == owner || (!group.empty() && sid == group)) continue;
        if (group.empty() && !BroadSid(sid) && (other.empty() || other == sid)) {
          other = sid;
          continue;
        }
        return "access for " + sid;
      }
      default:
        return "an access-granting ACE of type " + std::to_string(header->AceType) +
               " (not one the broker writes)";
    }
  }
  return "";
}
}  // namespace

struct SegmentMemory::Impl {
  HANDLE section = nullptr;
  void* view = nullptr;
  Security objects;  // for the events and the mutex (creator only)
  bool has_objects = false;
  ~Impl() {
    if (view != nullptr) ::UnmapViewOfFile(view);
    if (section != nullptr) ::CloseHandle(section);
  }
};

SegmentMemory::SegmentMemory() = default;
SegmentMemory::~SegmentMemory() = default;

const void* SegmentMemory::object_security() const noexcept {
  return impl_ != nullptr && impl_->has_objects ? &impl_->objects.sa : nullptr;
}

std::string SegmentMemory::Where(const std::string& name) {
  const auto [ns, bare] = Split(name);
  return ns + bare;
}

bool SegmentMemory::ValidName(const std::string& name) {
  const std::string bare = Split(name).second;
  if (bare.empty() || bare.size() > 200) return false;
  for (char c : bare) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  }
  return true;
}

bool SegmentMemory::Exists(const std::string& name) {
  if (!ValidName(name)) return false;
  HANDLE h = ::OpenFileMappingW(SECTION_QUERY, FALSE, Widen(Where(name)).c_str());
  if (h != nullptr) {
    ::CloseHandle(h);
    return true;
  }
  return ::GetLastError() == ERROR_ACCESS_DENIED;  // there, but not ours to see
}

Status SegmentMemory::Remove(const std::string& name) {
  if (!ValidName(name)) {
    return {Errc::kInvalidArgument, "invalid segment name '" + name + "'"};
  }
  // A section goes with its last handle: nothing to remove by name. Say so
  // while one exists, so that a caller does not go on to Create in place.
  if (!Exists(name)) return Status::Ok();
  return {Errc::kSegmentUnavailable,
          "segment " + name + " (" + Where(name) +
              ") cannot be removed on Windows while a process maps it (it goes with its last "
              "handle): keep it, or stop its clients first"};
}

Result<std::unique_ptr<SegmentMemory>> SegmentMemory::Create(const std::string& name,
                                                             std::size_t size,
                                                             const std::optional<GroupId>& group) {
  if (!ValidName(name)) {
    return Status{Errc::kInvalidArgument,
                  "invalid segment name '" + name +
                      "' (letters, digits, '-', '_', '.', after an optional Local\\ or Global\\)"};
  }
  const std::string where = Where(name);
  const std::string self = CurrentAccountSid();
  if (self.empty()) {
    return Status{Errc::kSegmentUnavailable, "segment " + name + " (" + where +
                                                 "): cannot read this process's account: " +
                                                 ErrorText(::GetLastError())};
  }
  std::string group_sid;
  if (group) {
    auto parsed = ParseGroup(name, *group);
    if (!parsed.ok()) return parsed.status();
    group_sid = *parsed;
  }
  const std::string section_sddl = SectionSddl(self, group_sid);
  const std::string object_sddl = ObjectSddl(self, group_sid);
  auto out = std::unique_ptr<SegmentMemory>(new SegmentMemory());
  out->impl_ = std::make_unique<Impl>();
  Security section_security;
  if (!section_security.Make(section_sddl) || !out->impl_->objects.Make(object_sddl)) {
    return Status{Errc::kSegmentUnavailable,
                  "segment " + name + ": cannot make its security descriptor (group " +
                      (group ? *group : std::string("(none)")) + "): " +
                      ErrorText(::GetLastError())};
  }
  out->impl_->has_objects = true;
  const auto size64 = static_cast<std::uint64_t>(size);
  // SEC_COMMIT: the pages are charged against the commit limit now, so a
  // full system fails here and not at a client's first touch.
  HANDLE h = ::CreateFileMappingW(INVALID_HANDLE_VALUE, &section_security.sa,
                                  PAGE_READWRITE | SEC_COMMIT,
                                  static_cast<DWORD>(size64 >> 32),
                                  static_cast<DWORD>(size64 & 0xFFFFFFFFu), Widen(where).c_str());
  const DWORD err = ::GetLastError();
  if (h == nullptr || err == ERROR_ALREADY_EXISTS) {
    if (h != nullptr) ::CloseHandle(h);
    std::string why = ErrorText(err);
    if (err == ERROR_ALREADY_EXISTS) {
      why = "it already exists (another broker with the same shm_prefix, or clients of an "
            "earlier broker still hold it)";
    } else if (err == ERROR_ACCESS_DENIED &&
               Split(name).first == kGlobal) {
      why += " (a Global\\ section needs SeCreateGlobalPrivilege: run as a service or an "
             "administrator, or use Local\\)";
    }
    return Status{Errc::kSegmentUnavailable,
                  "segment " + name + " (" + where + "): cannot create: " + why};
  }
  out->impl_->section = h;
  out->impl_->view = ::MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, size);
  if (out->impl_->view == nullptr) {
    return Status{Errc::kSegmentUnavailable, "segment " + name + " (" + where +
                                                 "): cannot map " + std::to_string(size) +
                                                 " bytes: " + ErrorText(::GetLastError())};
  }
  out->address_ = out->impl_->view;
  out->size_ = size;
  out->object_namespace_ = Split(name).first;
  return out;
}

Result<std::unique_ptr<SegmentMemory>> SegmentMemory::Open(const std::string& name,
                                                           const std::optional<AccountId>& owner,
                                                           const std::optional<GroupId>& group,
                                                           bool adopt) {
  if (!ValidName(name)) {
    return Status{Errc::kInvalidArgument,
                  "invalid segment name '" + name +
                      "' (letters, digits, '-', '_', '.', after an optional Local\\ or Global\\)"};
  }
  const std::string where = Where(name);
  auto out = std::unique_ptr<SegmentMemory>(new SegmentMemory());
  out->impl_ = std::make_unique<Impl>();
  HANDLE h = ::OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE | SECTION_QUERY |
                                    (owner ? READ_CONTROL : 0),
                                FALSE, Widen(where).c_str());
  if (h == nullptr) {
    const DWORD err = ::GetLastError();
    const std::string why = err == ERROR_FILE_NOT_FOUND
                                ? "it does not exist (is the broker running?)"
                                : ErrorText(err);
    return Status{Errc::kSegmentUnavailable,
                  "segment " + name + " (" + where + "): cannot open: " + why};
  }
  out->impl_->section = h;
  std::string group_sid;
  if (group) {
    auto parsed = ParseGroup(name, *group);
    if (!parsed.ok()) return Status{Errc::kSegmentInvalid, parsed.status().message()};
    group_sid = *parsed;
  }
  if (adopt) {
    // The broker re-creates missing events or the mutex with the segment's
    // descriptor (never its default DACL, which would shut the group out).
    const std::string self = CurrentAccountSid();
    if (self.empty() || !out->impl_->objects.Make(ObjectSddl(self, group_sid))) {
      return Status{Errc::kSegmentUnavailable,
                    "segment " + name + " (" + where +
                        "): cannot make the descriptor for its objects: " +
                        ErrorText(::GetLastError())};
    }
    out->impl_->has_objects = true;
  }
  if (owner) {
    // On the open handle: the section checked is the section mapped.
    PSID owner_sid = nullptr;
    PACL dacl = nullptr;
    PSECURITY_DESCRIPTOR sd = nullptr;
    const DWORD rc = ::GetSecurityInfo(h, SE_KERNEL_OBJECT,
                                       OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                                       &owner_sid, nullptr, &dacl, nullptr, &sd);
    if (rc != ERROR_SUCCESS) {
      return Status{Errc::kSegmentInvalid,
                    "segment " + name + " (" + where + "): cannot read its owner: " +
                        ErrorText(rc) + "; refused and left alone"};
    }
    const std::string found = SidString(owner_sid);
    const std::string broad = DaclOutsideAllowList(dacl, *owner, group_sid);
    ::LocalFree(sd);
    if (found != *owner || !broad.empty()) {
      return Status{Errc::kSegmentInvalid,
                    "segment " + name + " (" + where + ") is owned by " + found +
                        (broad.empty() ? "" : " with " + broad) + ", not by " + *owner +
                        " with access for SYSTEM and group " +
                        (group_sid.empty() ? std::string("(none)") : group_sid) +
                        " only: it was not made by the broker; refused and left alone"};
    }
  }
  const std::optional<std::size_t> size = SectionSize(h);
  if (!size) {
    return Status{Errc::kSegmentInvalid, "segment " + name + ": cannot read its size"};
  }
  if (*size < HeaderBytes()) {
    return Status{Errc::kSegmentInvalid,
                  "segment " + name + " is " + std::to_string(*size) +
                      " bytes, smaller than a dsb slot-table header (" +
                      std::to_string(HeaderBytes()) + "): not a dsb segment"};
  }
  out->impl_->view = ::MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, *size);
  if (out->impl_->view == nullptr) {
    return Status{Errc::kSegmentUnavailable, "segment " + name + " (" + where +
                                                 "): cannot map it: " +
                                                 ErrorText(::GetLastError())};
  }
  // The section's size may come back rounded up to whole pages (Wine does
  // so). The header's total_size is the size it was made with if it lies in
  // the last page; the header validation then checks it against the
  // geometry, and nothing past the section is ever used.
  std::size_t used = *size;
  std::uint64_t recorded = 0;
  std::memcpy(&recorded, static_cast<const char*>(out->impl_->view) +
                             offsetof(SegmentHeader, total_size),
              sizeof recorded);
  if (recorded <= used && used - recorded < 4096) used = static_cast<std::size_t>(recorded);
  out->address_ = out->impl_->view;
  out->size_ = used;
  out->object_namespace_ = Split(name).first;
  return out;
}

}  // namespace dsb::shm
