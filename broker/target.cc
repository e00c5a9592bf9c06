#include "broker/target.h"

#include <unistd.h>

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
  const std::string segment = shm::SegmentName(broker.shm_prefix, target.name);
  const auto slots = static_cast<std::uint32_t>(target.slots);
  if (shm::SlotTable::Exists(segment)) {
    t->existed_ = true;
    auto attached = shm::SlotTable::Attach(segment);
    if (!attached.ok()) {
      return Status{attached.status().code(),
                    attached.status().message() +
                        ". If no DigiScope instance uses it, remove /dev/shm/" + segment +
                        " and start again"};
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
        (void)shm::SlotTable::Remove(segment);
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
      t->table_->BumpBrokerGeneration(::getpid());
      // The config's cooldown, not the earlier broker's; slots already
      // cooling keep their deadlines.
      t->table_->SetReleaseCooldown(target.release_cooldown);
      for (const auto& [owner, holdings] : t->table_->HoldingsByOwner()) {
        t->pending_.insert(owner);
      }
      t->in_grace_ = true;
      // Learn how many ids earlier brokers handed out (this one is wasted).
      t->last_owner_at_open_ = t->table_->AllocateOwner() - 1;
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
    if (broker.group) o.group = static_cast<gid_t>(broker.group->gid);
    auto created = shm::SlotTable::Create(o);
    if (!created.ok()) return created.status();
    t->table_ = std::move(created).value();
    t->table_->BumpBrokerGeneration(::getpid());
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
  registration_quarantine_.insert(
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
  while (!registration_quarantine_.empty() && *registration_quarantine_.begin() <= now) {
    registration_quarantine_.erase(registration_quarantine_.begin());
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
