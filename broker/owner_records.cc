#include "broker/owner_records.h"

#include <boost/json.hpp>

#include "broker/secure_fs.h"

namespace dsb::broker {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

// A record per registered client (max_clients is at most a few thousand):
// far below this.
constexpr std::size_t kMaxFileBytes = 8u << 20;

// A non-negative integer up to `max` (boost parses small ones as int64).
std::optional<std::uint64_t> Unsigned(const json::value* v, std::uint64_t max) {
  if (v == nullptr) return std::nullopt;
  boost::system::error_code ec;
  const auto n = v->to_number<std::uint64_t>(ec);
  if (ec || n > max || !(v->is_int64() || v->is_uint64())) return std::nullopt;
  return n;
}

// The "uid" field: a number on POSIX, a SID string on Windows (the file never
// moves between machines: it lives as long as the segments).
#ifdef _WIN32
constexpr const char* kUidFormat = "SID string";
std::optional<AccountId> UidField(const json::value* v) {
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return ParseAccountNumber(std::string(v->as_string()));
}
json::value UidJson(const AccountId& uid) { return json::value(uid); }
#else
constexpr const char* kUidFormat = "uint32";
std::optional<AccountId> UidField(const json::value* v) {
  const auto n = Unsigned(v, UINT32_MAX);
  if (!n) return std::nullopt;
  return static_cast<AccountId>(*n);
}
json::value UidJson(const AccountId& uid) { return static_cast<std::uint64_t>(uid); }
#endif

}  // namespace

fs::path OwnerRecords::Beside(const fs::path& socket) {
  fs::path p = socket;
  p += ".owners";
  return p;
}

Status OwnerRecords::Load(const fs::path& file,
                          const std::map<std::string, std::uint64_t>& adopted) {
  file_ = file;
  records_.clear();
  auto read = ReadFileNoFollow(file, kMaxFileBytes);
  if (!read.ok()) return read.status();
  if (!read->has_value()) return Status::Ok();
  auto bad = [&](const std::string& why) {
    return Status{Errc::kConfig, file.string() + ": " + why +
                                     " (the broker's record of who registered each owner id)"};
  };
  boost::system::error_code ec;
  const json::value v = json::parse(**read, ec);
  if (ec) return bad("not JSON: " + ec.message());
  const json::object* root = v.if_object();
  const json::value* list = root ? root->if_contains("records") : nullptr;
  if (list == nullptr || !list->is_array()) return bad("no \"records\" array");
  std::map<std::pair<std::string, std::uint32_t>, Entry> kept;
  for (const json::value& r : list->as_array()) {
    const json::object* o = r.if_object();
    const json::value* target = o ? o->if_contains("target") : nullptr;
    const auto instance = Unsigned(o ? o->if_contains("instance") : nullptr, UINT64_MAX);
    const auto owner = Unsigned(o ? o->if_contains("owner") : nullptr, UINT32_MAX);
    const auto uid = UidField(o ? o->if_contains("uid") : nullptr);
    if (target == nullptr || !target->is_string() || !instance || !owner || !uid) {
      return bad(std::string("a record is not {\"target\": string, \"instance\": uint64, "
                             "\"owner\": uint32, \"uid\": ") +
                 kUidFormat + "}");
    }
    const std::string name(target->as_string());
    auto it = adopted.find(name);
    if (it == adopted.end() || it->second != *instance) continue;
    kept[{name, static_cast<std::uint32_t>(*owner)}] =
        Entry{*instance, *uid};
  }
  records_ = std::move(kept);
  return Status::Ok();
}

std::optional<std::string> OwnerRecords::AdoptionRefusal(const std::string& target,
                                                         std::uint32_t owner,
                                                         const AccountId& uid) const {
  auto it = records_.find({target, owner});
  const std::string what = "owner " + std::to_string(owner) + " of target '" + target + "'";
  if (it != records_.end()) {
    if (it->second.uid == uid) return std::nullopt;
    return what + " was registered by " + DescribeOwner(it->second.uid) + "; " +
           DescribeOwner(uid) + " may not adopt it";
  }
  // No record: the earlier broker wrote none (an upgrade) or the file was
  // lost. Root and the broker's user could take any slot anyway.
  if (IsTrustedOwner(uid)) return std::nullopt;
  return "the broker has no record of who registered " + what + " (" + file_.string() +
         " was missing, unreadable or lacks it), so only root or the broker's user may adopt "
         "it, not " + DescribeOwner(uid);
}

void OwnerRecords::Set(const std::string& target, std::uint32_t owner, Entry entry) {
  records_[{target, owner}] = entry;
}

void OwnerRecords::Erase(const std::string& target, std::uint32_t owner) {
  records_.erase({target, owner});
}

void OwnerRecords::Retain(const std::function<bool(const std::string&, std::uint32_t)>& keep) {
  for (auto it = records_.begin(); it != records_.end();) {
    it = keep(it->first.first, it->first.second) ? std::next(it) : records_.erase(it);
  }
}

std::string OwnerRecords::Serialize(
    const std::map<std::pair<std::string, std::uint32_t>, Entry>& records) {
  json::array list;
  list.reserve(records.size());
  for (const auto& [key, e] : records) {
    list.push_back(json::object{{"target", key.first},
                                {"instance", e.instance},
                                {"owner", key.second},
                                {"uid", UidJson(e.uid)}});
  }
  return json::serialize(json::object{{"version", 1}, {"records", std::move(list)}}) + "\n";
}

Status OwnerRecords::Save() const {
  // No fsync: the file lives beside the socket (tmpfs), no longer than the
  // segments whose owners it names.
  return WriteFileAtomically(file_, Serialize(records_), 0600, /*durable=*/false);
}

void OwnerRecords::RemoveFile() const {
  std::error_code ec;
  if (!file_.empty()) fs::remove(file_, ec);
}

}  // namespace dsb::broker
