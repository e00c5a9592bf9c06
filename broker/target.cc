#include "broker/target.h"

#ifndef _WIN32
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <spdlog/spdlog.h>

namespace dsb::broker {

namespace {

// Clock is steady_clock, CLOCK_MONOTONIC on Linux: the same for every process
// of the machine, so other brokers can read what this one records.
std::int64_t NsOf(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

Result<std::unique_ptr<Target>> Target::Open(const config::BrokerConfig& broker,
                                             const config::TargetConfig& target,
                                             std::uint32_t initial_capacity,
                                             Clock::time_point now, bool keep_lower_adopted,
                                             bool adopted_holds_only) {
  auto t = std::unique_ptr<Target>(new Target());
  t->config_ = target;
  // With segment_namespace = "global" (Windows): "Global\\dsb-...", the name
  // clients are told and open as given.
  const std::string segment =
      broker.SegmentNamespacePrefix() + shm::SegmentName(broker.shm_prefix, target.name);
  const auto slots = static_cast<std::uint32_t>(target.slots);
  // Only a segment this broker's uid made, open to nobody else, is adopted
  // (issue 9: a segment planted by another user before the broker's first
  // start, after a clean stop or a reboot was adopted and its slots freed).
  const AccountId self = CurrentAccount();
  const std::optional<GroupId> group =
      broker.group ? std::optional<GroupId>(broker.group->gid) : std::nullopt;
#ifndef _WIN32
  const std::string path = "/dev/shm/" + segment;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == self &&
      (st.st_mode & 0007) == 0 && static_cast<std::size_t>(st.st_size) < shm::HeaderBytes()) {
    // Ours, but smaller than a header: left by a create that failed before
    // the header was written (ENOSPC in an older build). Nothing can be in
    // it, and nobody but this uid can have replaced it (/dev/shm is sticky).
    spdlog::warn("target {}: segment {} is {} bytes, smaller than a slot-table header: left by a "
                 "failed create, it holds nothing; removing and re-creating it",
                 target.name, path, st.st_size);
    (void)shm::SlotTable::Remove(segment);
  }
#endif
  if (shm::SlotTable::Exists(segment)) {
    t->existed_ = true;
    // (Windows: `group` is the only account besides SYSTEM and this one the
    // section may admit, and `adopt` re-creates the waiter events and queue
    // mutex gone with an earlier broker. POSIX ignores both.)
    auto attached = shm::SlotTable::Attach(
        segment, shm::AttachOptions{.owner = self, .group = group, .adopt = true});
    if (!attached.ok()) {
#ifdef _WIN32
      // Attach checked the section's owner SID and DACL (the message says
      // which failed). A section goes with its last handle: nothing to remove.
      return Status{attached.status().code(),
                    "target " + target.name + ": " + attached.status().message() +
                        ". This broker (" + DescribeAccount(self) +
                        ") adopts only segments it made; it did not touch this one. Stop the "
                        "processes that map it (its clients, an earlier broker) and start again"};
#else
      struct stat now_st {};
      const bool foreign = ::lstat(path.c_str(), &now_st) == 0 &&
                           (now_st.st_uid != self || (now_st.st_mode & 0007) != 0 ||
                            !S_ISREG(now_st.st_mode));
      if (foreign) {
        return Status{attached.status().code(),
                      "target " + target.name + ": " + attached.status().message() +
                          ". This broker (uid " + std::to_string(self) +
                          ") adopts only segments it made; it did not touch this one. Find out "
                          "who made it (owner above), remove it, and start again"};
      }
      return Status{attached.status().code(),
                    attached.status().message() +
                        ". If no DigiScope instance uses it, remove /dev/shm/" + segment +
                        " and start again"};
#endif
    }
    auto& table = *attached;
    if (table->target() != target.name || table->slot_count() != slots) {
      const shm::Counts c = table->Count();
      // Cooling slots count: the server may still count their sessions.
      if (c.held_action + c.held_system + c.quarantined + c.cooling == 0) {
        // Nothing to keep: make a segment of the configured shape.
        spdlog::info("target {}: segment {} has another shape (target '{}', {} slots); "
                     "nothing held, re-creating it with {} slots",
                     target.name, segment, table->target(), table->slot_count(), slots);
        table.reset();
        const Status removed = shm::SlotTable::Remove(segment);
#ifdef _WIN32
        // A section cannot be removed while any process maps it (a client
        // attached with nothing held): a Create would find it still there.
        if (!removed.ok()) {
          return Status{removed.code(), "target " + target.name + ": segment " + segment +
                                            " has another shape and cannot be re-made: " +
                                            removed.message() + "; stop its clients first"};
        }
#else
        (void)removed;
#endif
      } else {
        return Status{Errc::kSegmentInvalid,
                      "segment " + segment + " holds slots but was made for target '" +
                          table->target() + "' with " + std::to_string(table->slot_count()) +
                          " slots, the config says '" + target.name + "' with " +
                          std::to_string(slots) +
                          "; stop its clients or restore the old config"};
      }
    }
    if (table) {
      t->table_ = std::move(table);
      t->adopted_ = true;
      t->table_->BumpBrokerGeneration(CurrentProcessId());
      // The config's cooldown, not the earlier broker's; slots already
      // cooling keep their deadlines (up to the earlier cooldown from now).
      t->inherited_cooling_until_ns_ = NsOf(now) + t->table_->release_cooldown_ns();
      t->table_->SetReleaseCooldown(target.release_cooldown);
      for (const auto& [owner, holdings] : t->table_->HoldingsByOwner()) {
        t->pending_.insert(owner);
      }
      t->in_grace_ = true;
      // Learn how many ids earlier brokers handed out: the segment's record
      // and every id in it (a client may have rewound the record). From here
      // on ids come from the table's own counter (SlotTable::AllocateOwner),
      // after a gap: an idle earlier client's id is in no word, and if the
      // record was rewound it lies above the seed (it is then refused
      // re-adoption and registers anew, but its id is never handed out).
      t->last_owner_at_open_ = t->table_->SeedOwners(shm::SlotTable::kAdoptionOwnerGap);
      // The summary of free slots is a hint a process killed mid-update (the
      // earlier broker included) may have left stale: rebuilt from the words.
      (void)t->table_->RepairSummary();
      // Whatever was quarantined stays so until the latest end an earlier
      // broker recorded (no later than a full period from now); a segment
      // without a record gets a full period again.
      Clock::time_point end = t->QuarantineEnd(now);
      if (const std::int64_t rec = t->table_->quarantine_record_ns(); rec > 0) {
        end = std::min(end, Clock::time_point(std::chrono::nanoseconds(rec)));
      } else {
        t->table_->RaiseQuarantineRecord(NsOf(end));
      }
      t->QuarantineUntil(t->table_->QuarantinedSlots(), end);
      // Nothing here waits on the queue mutex any more, but say what an
      // earlier life left in it (a stopped client holding it, garbage).
      const shm::SlotTable::QueueHealth q = t->table_->CheckQueue();
      if (q.state != shm::SlotTable::QueueHealth::kOk) {
        spdlog::warn("target {}: {}", target.name, q.detail);
        if (q.state == shm::SlotTable::QueueHealth::kHeld) t->queue_holder_logged_ = q.holder_tid;
      }
    }
  }
  if (!t->table_) {
    shm::CreateOptions o;
    o.name = segment;
    o.target = target.name;
    o.slot_count = slots;
    o.capacity = 0;
    o.release_cooldown = target.release_cooldown;
    o.group = group;
    auto created = shm::SlotTable::Create(o);
    if (!created.ok() && broker.segment_global) {
      // Name the key: a console broker under a plain account lacks
      // SeCreateGlobalPrivilege (docs/windows.md, section 3).
      return Status{created.status().code(),
                    created.status().message() +
                        " (broker.segment_namespace is \"global\"; a broker that is not a "
                        "service or an administrator may set it to \"local\", with its clients "
                        "in its own session)"};
    }
    if (!created.ok()) return created.status();
    t->table_ = std::move(created).value();
    t->table_->BumpBrokerGeneration(CurrentProcessId());
  }
  if (keep_lower_adopted && t->adopted_) {
    initial_capacity = std::min(initial_capacity, t->table_->capacity());
  }
  if (adopted_holds_only && t->adopted_) {
    // Enabled but not free: held (not retiring), quarantined, cooling. Taking
    // the free ones away leaves every held slot as it is (no revocation).
    const shm::Counts c = t->table_->Count();
    const std::uint32_t in_use = c.enabled - std::min(c.free, c.enabled);
    initial_capacity = std::min(t->table_->capacity(), in_use);
  }
  t->SetCapacity(initial_capacity);
  return t;
}

std::optional<Clock::time_point> Target::lease_deadline() const {
  const std::int64_t ns = table_->lease_deadline_ns();
  if (ns <= 0) return std::nullopt;
  return Clock::time_point(std::chrono::nanoseconds(ns));
}

void Target::FreezeAtHeld() {
  const shm::Counts c = table_->Count();
  const std::uint32_t held = c.held_action - std::min(c.retiring, c.held_action);
  if (held < table_->capacity()) SetCapacity(held);
}

bool Target::Adopt(std::uint32_t owner) {
  if (pending_.erase(owner) > 0) return true;
  return in_grace_ && owner != 0 && owner <= last_owner_at_open_;
}

std::uint32_t Target::ReleaseUnadopted(Clock::time_point now,
                                       const std::set<std::uint32_t>& registered) {
  std::uint32_t total = 0;
  for (const auto& [owner, holdings] : table_->HoldingsByOwner()) {
    if (registered.count(owner) == 0) total += Reclaim(owner, now);
  }
  pending_.clear();
  in_grace_ = false;
  return total;
}

void Target::QuarantineRegistration(Clock::time_point now) {
  if (config_.quarantine.count() <= 0) return;
  registration_quarantine_.insert(QuarantineEnd(now));
}

void Target::CoolRegistration(Clock::time_point now) {
  if (config_.release_cooldown.count() <= 0) return;
  registration_cooling_.insert(
      now + std::chrono::duration_cast<Clock::duration>(config_.release_cooldown));
}

std::uint32_t Target::HoldBackAfterUncleanEnd(std::uint32_t slots, std::uint32_t registrations,
                                              Clock::time_point now) {
  table_->RaiseQuarantineRecord(NsOf(QuarantineEnd(now)));
  const std::vector<std::uint32_t> held = table_->QuarantineUnheld(slots);
  Quarantine(held, now);
  for (std::uint32_t i = 0; i < registrations; ++i) QuarantineRegistration(now);
  return static_cast<std::uint32_t>(held.size());
}

std::uint32_t Target::Reclaim(std::uint32_t owner, Clock::time_point now) {
  std::uint32_t freed = 0;
  const bool quarantine = config_.quarantine.count() > 0;
  if (quarantine) table_->RaiseQuarantineRecord(NsOf(QuarantineEnd(now)));  // before any slot
  Quarantine(table_->Reclaim(owner, quarantine, &freed), now);
  slots_reclaimed_ += freed;
  ServiceQueue(now);
  return freed;
}

Clock::time_point Target::QuarantineEnd(Clock::time_point now) const {
  return now + std::chrono::duration_cast<Clock::duration>(config_.quarantine);
}

void Target::Quarantine(const std::vector<std::uint32_t>& slots, Clock::time_point now) {
  QuarantineUntil(slots, QuarantineEnd(now));
}

void Target::QuarantineUntil(const std::vector<std::uint32_t>& slots, Clock::time_point end) {
  for (std::uint32_t s : slots) quarantine_.emplace(end, s);
}

Clock::time_point Target::ExpireQuarantine(Clock::time_point now) {
  for (auto* ends : {&registration_quarantine_, &registration_cooling_}) {
    while (!ends->empty() && *ends->begin() <= now) ends->erase(ends->begin());
  }
  while (!quarantine_.empty() && quarantine_.begin()->first <= now) {
    table_->EndQuarantine(quarantine_.begin()->second);
    quarantine_.erase(quarantine_.begin());
  }
  ServiceQueue(now);
  return next_quarantine_end();
}

Clock::time_point Target::next_quarantine_end() const {
  Clock::time_point next = quarantine_.empty() ? Clock::time_point::max() : quarantine_.begin()->first;
  if (!registration_quarantine_.empty()) next = std::min(next, *registration_quarantine_.begin());
  if (!registration_cooling_.empty()) next = std::min(next, *registration_cooling_.begin());
  return next;
}

void Target::SetLeaseCapacity(std::uint32_t capacity, std::uint32_t floor,
                              std::optional<Clock::time_point> lease_end) {
  const std::int64_t deadline =
      lease_end && capacity > floor ? NsOf(*lease_end) : 0;
  // Order: a new deadline before a larger capacity, a smaller capacity before
  // clearing the deadline, so lease capacity never exists without one. No
  // client changes the capacity (the table itself refuses lease slots past
  // the deadline), so the table's capacity is the one this broker set.
  const std::uint32_t current = table_->capacity();
  if (capacity >= current) {
    table_->SetLeaseFence(floor, deadline);
    if (capacity != current) SetCapacity(capacity);
  } else {
    SetCapacity(capacity);
    table_->SetLeaseFence(floor, deadline);
  }
  ServiceQueue(Clock::now());
}

void Target::ServiceQueue(Clock::time_point now) {
  if (table_->Pump()) {
    queue_busy_since_.reset();
    return;
  }
  if (!queue_busy_since_) queue_busy_since_ = now;
  if (now - *queue_busy_since_ < std::chrono::seconds(1)) return;
  queue_busy_since_ = now;  // look again in a second at the earliest
  const shm::SlotTable::QueueHealth q = table_->CheckQueue();
  if (q.state == shm::SlotTable::QueueHealth::kReinitialised) {
    spdlog::warn("target {}: {}", config_.name, q.detail);
    queue_holder_logged_ = 0;
  } else if (q.state == shm::SlotTable::QueueHealth::kHeld && q.holder_tid != queue_holder_logged_) {
    spdlog::warn("target {}: {}", config_.name, q.detail);
    queue_holder_logged_ = q.holder_tid;
  }
}

namespace {

// The processes that have `segment` mapped (from /proc/<pid>/maps), at most
// `max` of them: whoever wrote what the audit found is one of them (or has
// since unmapped it). Only read when the audit found something.
// Windows: nullopt, not read (which processes hold a section handle needs
// the system handle table, NtQuerySystemInformation: not done here).
#ifdef _WIN32
std::optional<std::vector<ProcessId>> MappersOf(const std::string&, std::size_t) {
  return std::nullopt;
}
#else
std::optional<std::vector<ProcessId>> MappersOf(const std::string& segment, std::size_t max) {
  std::vector<ProcessId> out;
  const std::string needle = "/dev/shm/" + segment;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string pid_text = it->path().filename().string();
    if (pid_text.empty() ||
        !std::all_of(pid_text.begin(), pid_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    std::ifstream maps(it->path() / "maps");
    std::string line;
    while (std::getline(maps, line)) {
      // The path ends the line (a removed segment adds " (deleted)").
      const std::size_t at = line.find(needle);
      if (at != std::string::npos &&
          (at + needle.size() == line.size() || line[at + needle.size()] == ' ')) {
        out.push_back(static_cast<ProcessId>(std::stol(pid_text)));
        break;
      }
    }
    if (out.size() >= max) break;
  }
  return out;
}
#endif

}  // namespace

bool Target::Audit(Clock::time_point now, const std::map<std::uint32_t, ProcessId>& registered) {
  shm::SlotTable::AuditPolicy p;
  p.now_ns = NsOf(now);
  p.known_owner = [&](std::uint32_t owner) {
    return registered.count(owner) > 0 || pending_.count(owner) > 0 ||
           (in_grace_ && owner <= last_owner_at_open_);
  };
  for (const auto& [end, slot] : quarantine_) p.quarantined.push_back(slot);
  std::sort(p.quarantined.begin(), p.quarantined.end());
  p.quarantine = config_.quarantine.count() > 0;
  p.cooling_horizon_ns =
      std::max(NsOf(now) + table_->release_cooldown_ns(), inherited_cooling_until_ns_);
  if (p.quarantine) p.quarantine_end_ns = NsOf(QuarantineEnd(now));  // recorded before any slot
  const shm::SlotTable::AuditFindings f = table_->Audit(p);
  ++audit_.runs;
  // Every slot the audit quarantined gets a full period from now: the
  // server may hold a session on it (with quarantine 0 it ends at the next
  // expiry, and comes back free or disabled per capacity).
  Quarantine(f.quarantined, now);
  slots_reclaimed_ += f.forged_owners;
  ServiceQueue(now);
  if (!f.any()) {
    LogAudit(now, registered);  // what earlier runs found, once the interval allows
    return false;
  }
  audit_.Add(f);

  for (const std::uint32_t o : f.forged_owner_ids) {
    if (forged_ids_seen_.size() < 8 &&
        std::find(forged_ids_seen_.begin(), forged_ids_seen_.end(), o) == forged_ids_seen_.end()) {
      forged_ids_seen_.push_back(o);
    }
  }
  LogAudit(now, registered);
  return !f.quarantined.empty();
}

void Target::LogAudit(Clock::time_point now, const std::map<std::uint32_t, ProcessId>& registered) {
  // One report per target per kAuditLogInterval at most, with the counts
  // since the last one: a client rewriting the segment in a loop cannot
  // flood the log (and /proc is scanned at that rate at most).
  if (audit_.findings() == audit_logged_.findings()) return;
  if (last_audit_log_ && now - *last_audit_log_ < kAuditLogInterval) return;
  last_audit_log_ = now;
  AuditCounters d = audit_;
  d.excess_enabled -= audit_logged_.excess_enabled;
  d.lost_capacity -= audit_logged_.lost_capacity;
  d.forged_owners -= audit_logged_.forged_owners;
  d.forged_waiters -= audit_logged_.forged_waiters;
  d.stray_quarantine -= audit_logged_.stray_quarantine;
  d.quarantine_cleared -= audit_logged_.quarantine_cleared;
  d.future_cooling -= audit_logged_.future_cooling;
  d.invalid_words -= audit_logged_.invalid_words;
  d.header_fields -= audit_logged_.header_fields;
  d.queue_repairs -= audit_logged_.queue_repairs;
  audit_logged_ = audit_;
  // Who may have written it: the processes with the segment mapped.
  std::string mappers;
  const std::optional<std::vector<ProcessId>> pids = MappersOf(table_->name(), 16);
  for (const ProcessId pid : pids.value_or(std::vector<ProcessId>{})) {
    if (pid == CurrentProcessId()) continue;
    std::string owner = "not registered";
    for (const auto& [o, client_pid] : registered) {
      if (client_pid == pid) owner = "owner " + std::to_string(o);
    }
    mappers += (mappers.empty() ? "" : ", ") + std::to_string(pid) + " (" + owner + ")";
  }
  const std::string who =
      !pids ? std::string("; written by a process with write access to the segment")
            : "; written by a process with write access to the segment (mapped now by pid(s) " +
                  (mappers.empty() ? std::string("none") : mappers) + ")";
  const std::string q_ms = std::to_string(
      std::chrono::duration_cast<std::chrono::milliseconds>(config_.quarantine).count());
  const std::string& n = config_.name;
  const std::string& seg = table_->name();
  if (d.excess_enabled > 0) {
    spdlog::warn("target {}: audit: segment {} had {} enabled slot(s) above the capacity {} this "
                 "broker set (FREE written over DISABLED words): disabled, or asked back from "
                 "their holders{}",
                 n, seg, d.excess_enabled, capacity_, who);
  }
  if (d.lost_capacity > 0) {
    spdlog::warn("target {}: audit: segment {} had {} enabled slot(s) fewer than the capacity {} "
                 "(DISABLED written over usable words): enabled again{}",
                 n, seg, d.lost_capacity, capacity_, who);
  }
  if (d.forged_owners > 0) {
    std::string ids;
    for (const std::uint32_t o : forged_ids_seen_) ids += (ids.empty() ? "" : ", ") + std::to_string(o);
    spdlog::warn("target {}: audit: {} slot(s) in segment {} were held by owner id(s) {} that no "
                 "registered client has (forged, or never handed out; ids up to {} were): "
                 "reclaimed{}{}",
                 n, d.forged_owners, seg, ids, table_->owner_high_water(),
                 config_.quarantine.count() > 0 ? ", quarantined for " + q_ms + " ms" : std::string(), who);
  }
  if (d.forged_waiters > 0) {
    spdlog::warn("target {}: audit: {} waiter entr(ies) in segment {} of unknown owners or with "
                 "invalid words: cancelled{}",
                 n, d.forged_waiters, seg, who);
  }
  if (d.stray_quarantine > 0) {
    spdlog::warn("target {}: audit: {} slot(s) in segment {} were QUARANTINED without this broker "
                 "quarantining them (no end scheduled): quarantined for a full {} ms from now{}",
                 n, d.stray_quarantine, seg, q_ms, who);
  }
  if (d.quarantine_cleared > 0) {
    spdlog::warn("target {}: audit: {} slot(s) this broker holds in quarantine in segment {} were "
                 "written over (free ones put back in quarantine){}",
                 n, d.quarantine_cleared, seg, who);
  }
  if (d.future_cooling > 0) {
    spdlog::warn("target {}: audit: {} cooling slot(s) in segment {} had a deadline beyond the "
                 "target's release_cooldown: clamped to it{}",
                 n, d.future_cooling, seg, who);
  }
  if (d.invalid_words > 0) {
    spdlog::warn("target {}: audit: {} slot word(s) in segment {} were no valid state: treated as "
                 "held by an unknown owner{}{}",
                 n, d.invalid_words, seg,
                 config_.quarantine.count() > 0 ? ", quarantined for " + q_ms + " ms" : std::string(), who);
  }
  if (d.header_fields > 0) {
    spdlog::warn("target {}: audit: {} field(s) of segment {}'s header that only the broker "
                 "writes (capacity, scan bound, cooldown, lease fence, owner counter, quarantine "
                 "record) were changed: restored{}",
                 n, d.header_fields, seg, who);
  }
  if (d.queue_repairs > 0) {
    spdlog::warn("target {}: audit: segment {}'s waiter queue had impossible indices or an "
                 "impossible waiter count: repaired{}",
                 n, seg, who);
  }
  forged_ids_seen_.clear();
}


void Target::SetCapacity(std::uint32_t capacity) {
  capacity_ = capacity;
  const bool revoked =
      retire_first_ ? table_->SetCapacityRetiringFirst(capacity, retire_first_->first,
                                                       retire_first_->second)
                    : table_->SetCapacity(capacity);
  retire_first_.reset();
  if (revoked) {
    spdlog::info("target {}: capacity lowered to {}: held slots asked back (revocation)",
                 config_.name, capacity);
  }
}

}  // namespace dsb::broker
