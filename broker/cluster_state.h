// What a cluster-mode broker keeps in its state_dir for the reconfiguration
// and identity rules (DESIGN section 7, R0-R3). Every write is atomic and
// synced before the caller acts on it (state_file.h: WriteFileSynced).
//
//   <id>.epoch        R0: the last epoch this broker id used, a decimal
//                     counter. NextEpoch() writes epoch + 1 before returning it.
//   <id>.accepted     R1: the acceptance this broker runs with (generation,
//                     coordinator, allowances), JSON; erased (and the folder
//                     synced) when the coordinator says the broker was removed.
//   <id>.acceptances  R2: the coordinator's records of every instance it
//                     accepted, JSON; restored at its next start.
//   <id>.superseded   R3: "superseded by generation g" written by a
//                     coordinator before it confirms its stop; a coordinator of
//                     an older generation that finds it never grants.
//
// Thread rule: plain functions; the broker calls them from its strand.
#ifndef DSB_BROKER_CLUSTER_STATE_H_
#define DSB_BROKER_CLUSTER_STATE_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "broker/lease/messages.h"
#include "common/status.h"

namespace dsb::broker {

// R0: reads <dir>/<id>.epoch, writes and syncs the next value, returns it.
// A missing file starts the counter at the wall clock's microseconds (so a
// lost file still most likely moves forward; a counter never goes back).
// Errors: kConfig naming the file if it is not a decimal number, or kInternal
// naming the file and step if it cannot be written.
Result<std::uint64_t> NextEpoch(const std::filesystem::path& dir, const std::string& id);

// R0: a fresh random instance id for this start (never 0, never stored).
std::uint64_t RandomInstanceId();

// R1: the broker's own acceptance.
struct AcceptedConfig {
  std::uint64_t generation = 0;
  std::string coordinator;
  std::uint64_t epoch = 0;
  std::uint32_t system_slots = 0;
  std::uint32_t floor = 0;
};
Status WriteAccepted(const std::filesystem::path& dir, const std::string& id,
                     const AcceptedConfig& accepted);
// Removes the file and syncs the folder. OK if it did not exist.
Status EraseAccepted(const std::filesystem::path& dir, const std::string& id);
std::optional<AcceptedConfig> ReadAccepted(const std::filesystem::path& dir,
                                           const std::string& id);

// R2: the coordinator's acceptance records. A missing file is an empty list;
// errors: kConfig naming the file and what is wrong.
Status WriteRecords(const std::filesystem::path& dir, const std::string& id,
                    const std::vector<lease::AcceptanceRecord>& records);
Result<std::vector<lease::AcceptanceRecord>> ReadRecords(const std::filesystem::path& dir,
                                                         const std::string& id);

// A generation number kept in <dir>/<id><suffix> (nullopt: no file).
//   ".superseded"  R3: this coordinator was superseded by that generation.
//   ".gate"        R3: this coordinator opened its gate at that generation
//                  once (its previous coordinator had stopped), so a restart at
//                  the same generation need not wait for every broker again.
// Errors: kConfig naming the file (not a number), kInternal (cannot write).
inline constexpr const char* kSupersededMark = ".superseded";
inline constexpr const char* kGateMark = ".gate";
Status WriteMark(const std::filesystem::path& dir, const std::string& id, const char* suffix,
                 std::uint64_t generation);
Result<std::optional<std::uint64_t>> ReadMark(const std::filesystem::path& dir,
                                              const std::string& id, const char* suffix);

}  // namespace dsb::broker

#endif  // DSB_BROKER_CLUSTER_STATE_H_
