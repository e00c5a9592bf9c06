// StateFile: what a broker must remember across a machine restart.
//
// Shared memory does not survive a reboot, but the server's sessions may: a
// dead client's session can stay counted on Exchange for up to ~15 minutes
// (MAPI over HTTP). A broker that finds no segment cannot tell a first start
// from a start after its machine went down with sessions open. With
// `broker.state_dir` set, it keeps `<state_dir>/<id>.state`:
//
//   {"version": 1, "pid": 4242, "clean": false,
//    "targets": {"exch01": {"capacity_high_water": 32}}}
//
//  - `clean` is true only after a stop with nothing held (segments removed).
//  - `capacity_high_water` is the largest capacity the broker gave the
//    target's slot table in that life: an upper bound of the sessions its
//    clients can have had open.
//
// At the next start, a target whose segment is gone while the previous life
// did not end clean starts with that many slots in quarantine (the target's
// `quarantine` period), and in cluster mode with its registrations counted
// too; the quarantined slots count as held in the lease report (B2).
//
// Writes are atomic (temporary file, fsync, rename, fsync of the folder). One
// writer: the broker holds an InstanceLock on `<id>.state.lock` for its life.
// state_dir is a private folder (secure_fs.h): the temporary file has a
// random name made with O_EXCL | O_NOFOLLOW and reads follow no link.
#ifndef DSB_BROKER_STATE_FILE_H_
#define DSB_BROKER_STATE_FILE_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "common/status.h"

namespace dsb::broker {

struct BrokerState {
  std::int64_t pid = 0;
  bool clean = false;
  std::map<std::string, std::uint32_t> capacity_high_water;  // target -> slots
};

// The state file of broker `id` in `dir`.
std::filesystem::path StateFilePath(const std::filesystem::path& dir, const std::string& id);

// nullopt if the file does not exist. Errors: kConfig naming the file
// and what is wrong with it (a symbolic link, not a regular file, unreadable,
// over 1 MiB, not JSON, wrong shape).
Result<std::optional<BrokerState>> ReadState(const std::filesystem::path& path);

// Errors: kInternal naming the file and the failing step.
Status WriteState(const std::filesystem::path& path, const BrokerState& state);

// Replaces `path` with `text` atomically and durably, mode 0600
// (WriteFileAtomically in secure_fs.h: a random temporary name made with
// O_CREAT | O_EXCL | O_NOFOLLOW, fsync, rename, fsync of the folder; a link
// at `path` is replaced, never written through).
// Errors: kInternal naming the file and step.
Status WriteFileSynced(const std::filesystem::path& path, const std::string& text);

}  // namespace dsb::broker

#endif  // DSB_BROKER_STATE_FILE_H_
