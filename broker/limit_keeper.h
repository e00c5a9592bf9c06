// LimitKeeper: the effective limit of each target that this process decides
// (DESIGN section 8): a single-machine broker decides its own targets'; in a
// cluster, the coordinator decides for everyone and brokers forward refusals.
//
// Per target it owns a lease::LimitPolicy (sources, feedback rule, bounds,
// additive increase) and, when the target has a `limit_command`, runs it at
// Start() and every `limit_poll` (a failing or garbage answer keeps the last
// good value and is logged with the reason). Every change is logged once with
// its cause and handed to the `apply` hook; refusals are counted exactly and
// logged at most once a second per target (with the count of the rest).
//
// Thread rule: all calls on the io_context's thread.
#ifndef DSB_BROKER_LIMIT_KEEPER_H_
#define DSB_BROKER_LIMIT_KEEPER_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/config/cluster_config.h"
#include "broker/lease/limit_policy.h"
#include "common/status.h"

namespace dsb::broker {

// Whether `file` (<state_dir>/<id>.limits) is one LimitKeeper::Create
// accepts: missing, or the JSON it writes with a sound record per target.
// Run by ValidateForStart so `dsb-broker --check` refuses what the start does.
// Failure: kConfig "limits file <file> ...: fix it or remove it (...)".
Status CheckLimitsFile(const std::filesystem::path& file);

class LimitKeeper {
 public:
  using Clock = std::chrono::steady_clock;
  struct Hooks {
    // The limit of target `index` (config order) changed: apply it.
    std::function<void(std::size_t index, const lease::LimitChange& change)> apply;
  };

  // `minimum[i]` is target i's lowest allowed limit (single machine:
  // reserve + 2; cluster: reserve + sum(system_slots + floor) + 1).
  // Failure: kConfig if a target's limit is below its minimum.
  // With `state_file` (<state_dir>/<id>.limits) every change is written there
  // (atomically, synced) and Create() restores what it finds, so a restart
  // neither forgets an operator's limit nor rediscovers one through refusals.
  // Failure: kConfig for a damaged or unreadable state file (CheckLimitsFile):
  // the start is refused rather than run from the configured limit, which may
  // be higher than the one the file holds (S).
  static Result<std::unique_ptr<LimitKeeper>> Create(
      boost::asio::io_context& io, const std::vector<config::TargetConfig>& targets,
      const std::vector<std::uint32_t>& minimum, Hooks hooks,
      std::optional<std::filesystem::path> state_file = std::nullopt);
  ~LimitKeeper();

  // Runs every limit_command once; `ready` is called when each has answered,
  // failed or timed out (at once if there is none). Then polls every limit_poll.
  void Start(std::function<void()> ready);
  void Stop();

  std::size_t size() const;
  // True if target `index`'s limit came from the state file.
  bool restored(std::size_t index) const;
  // A lower limit learned elsewhere (the capacity of a segment adopted from
  // an earlier broker without a state file): taken as discovered, logged
  // with `cause`. Does nothing if not below the current limit.
  void Seed(std::size_t index, std::uint32_t limit, const std::string& cause);
  std::uint32_t limit(std::size_t index) const;
  // What a restart needs of target `index`'s policy (what the limits file
  // holds): the limit and its source, the base and its source (LimitPolicy Q1).
  struct Record {
    std::uint32_t limit = 0;
    lease::LimitSource source = lease::LimitSource::kConfig;
    std::uint32_t base = 0;
    lease::LimitSource base_source = lease::LimitSource::kConfig;
  };
  Record record(std::size_t index) const;
  // Takes a record decided elsewhere (with an etcd ledger: the stored limit a
  // new limit keeper starts from, or an operator's limit another broker
  // wrote), clamped as LimitPolicy::Restore clamps; logged once with `cause`
  // when it changes the limit, persisted, NOT handed to the apply hook (the
  // store already holds it). Clears the refusal history.
  void Restore(std::size_t index, const Record& record, const std::string& cause);
  // Who caused target `index`'s newest change (the operator or reporter;
  // "" for a limit_command answer, an increase, or none yet).
  std::string last_change_who(std::size_t index) const;
  // Changes of target `index`'s limit to `source` since this process started
  // (the metric dsb_limit_changes_total{source}).
  std::uint64_t changes(std::size_t index, lease::LimitSource source) const;
  // A session-limit refusal reported for target `index` while dsb held `held`
  // sessions of the account; `refusals` reports folded into one; `who` names
  // the reporter for the log ("client pid 42 (dsb-load#0)", "broker ws2").
  void OnRefusal(std::size_t index, std::uint32_t held, std::uint32_t refusals,
                 const std::string& who);
  // An operator's limit (`dsbctl set-limit`, `dsbctl probe --apply`).
  // Failure: kInvalidArgument naming the bounds; nothing changes.
  Status SetOperatorLimit(std::size_t index, std::uint32_t value, const std::string& who);
  // Status fields of target `index`: limit, limit_source, limit_changed_at
  // (ISO 8601 UTC), limit_changed_ms_ago, limit_ceiling, limit_minimum,
  // refusals_reported, limit_changes, discover, limit_command (null or
  // {last_value, last_error, last_run_ms_ago}), recent_limit_changes (the
  // last 10 changes since this process started, newest first: {at, ms_ago,
  // from, to, source, cause, who}; `who` names the operator or reporter, ""
  // for a limit_command answer or an additive increase).
  // With a state file, also "persisted": whether the file holds the current
  // limit (false after a failed write, with "persist_error").
  boost::json::object Json(std::size_t index) const;

  struct Impl;

 private:
  explicit LimitKeeper(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_LIMIT_KEEPER_H_
