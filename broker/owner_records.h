// OwnerRecords: which uid registered each owner id, so that after a broker
// restart only that uid may adopt the owner (issue 9: "an allowed client can
// fool the broker").
//
// A client of the previous broker re-registers with its owner id and the
// segment's instance id to keep its slots. Both can be read from the segment
// by any member of broker.group, so the id alone proves nothing: another
// user could adopt the owner first, and when it closed, the real client's
// slots would be reclaimed while its sessions are still open. The broker
// therefore records (target, segment instance, owner) -> uid in a file beside
// its socket, "<socket>.owners": the socket's folder is private to the broker
// (secure_fs.h), and lies on /run (tmpfs) like the segments on /dev/shm, so
// the record lives as long as the segments do. It is rewritten whole
// (temporary file + rename, never following a link) at each registration,
// each client's end and the end of the adoption grace; without fsync: after a
// machine crash the segments are gone too, and a record of another segment
// instance is ignored.
//
// Adoption rule (AdoptionRefusal):
//  - a recorded owner may be adopted only by the uid that registered it;
//  - an owner with no record (the file was missing or unreadable, e.g. the
//    first restart after an upgrade from a broker that wrote none, or a
//    write failed) only by root or the broker's own uid. Any other client is
//    refused (not_registered) and registers anew: it loses the slots it held
//    (they are reclaimed, and quarantined, when the grace ends), never
//    another user's.
//
// Thread rule: not thread-safe (the broker's io thread only).
#ifndef DSB_BROKER_OWNER_RECORDS_H_
#define DSB_BROKER_OWNER_RECORDS_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "common/account.h"
#include "common/status.h"

namespace dsb::broker {

class OwnerRecords {
 public:
  struct Entry {
    std::uint64_t instance = 0;  // the segment instance the owner id belongs to
    AccountId uid{};             // who registered it (SO_PEERCRED; Windows: user SID)
  };

  // "<socket>.owners".
  static std::filesystem::path Beside(const std::filesystem::path& socket);

  // Reads `file` and keeps the records of the targets in `adopted` (target ->
  // instance id of the segment this broker adopted) whose instance matches;
  // every other record is dropped (a re-created segment's ids are new).
  // Success: Ok, also for a missing file (no records). Failure: kConfig
  // naming the file and what is wrong (a link, not a regular file, too large,
  // not the expected JSON); then no record is kept (the caller warns; the
  // next Save replaces the file).
  // REQUIRES: `file`'s folder is private to the broker (CheckPrivateFolder).
  Status Load(const std::filesystem::path& file,
              const std::map<std::string, std::uint64_t>& adopted);

  // nullopt if `uid` may adopt `owner` of `target` (rule above); else the
  // reason, naming the owner, the target and both uids.
  std::optional<std::string> AdoptionRefusal(const std::string& target, std::uint32_t owner,
                                             const AccountId& uid) const;

  void Set(const std::string& target, std::uint32_t owner, Entry entry);
  void Erase(const std::string& target, std::uint32_t owner);
  // Keeps only the records for which `keep(target, owner)` is true.
  void Retain(const std::function<bool(const std::string&, std::uint32_t)>& keep);
  std::size_t size() const { return records_.size(); }

  // Replaces the file with the records (atomically, no fsync: see above).
  // Success: Ok. Failure: kInternal "<file>: <step> failed: <reason>"; the
  // file is unchanged. REQUIRES: Load was called (it names the file).
  Status Save() const;
  // Removes the file (the segments were removed: nothing to adopt).
  void RemoveFile() const;

  // The file's text for `records` (tests; Save writes it).
  static std::string Serialize(
      const std::map<std::pair<std::string, std::uint32_t>, Entry>& records);

 private:
  std::filesystem::path file_;
  std::map<std::pair<std::string, std::uint32_t>, Entry> records_;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_OWNER_RECORDS_H_
