// Registered clients of the local socket: registration and adoption after a
// restart (only by the uid that registered an owner), a client's end (its
// slots reclaimed and quarantined), the adoption grace, and the periodic
// audit of every segment. Part of Broker::Impl (broker_impl.h); everything on
// the broker's io_context.
#include "broker/broker_impl.h"
#include "common/escape.h"
#include "common/local_protocol.h"
#include "common/limited_log.h"

namespace dsb::broker {

std::uint32_t Broker::Impl::RegisteredOn(const std::string& target) const {
  std::uint32_t n = 0;
  for (const auto& [key, rec] : clients) n += rec.target == target ? 1u : 0u;
  return n;
}

json::object Broker::Impl::HandleRegister(Session& s, const LocalRequest& req) {
  if (s.record()) return ErrorReply(Errc::kProtocol, "this connection is already registered");
  const std::string& target_name = req.target;
  auto it = targets.find(target_name);
  if (it == targets.end()) {
    std::string known;
    for (const auto& [n, t] : targets) known += (known.empty() ? "" : ", ") + n;
    return ErrorReply(Errc::kUnknownTarget, "this broker serves no target '" +
                                                EscapeText(target_name, 64) +
                                                "'; it serves: " + known);
  }
  Target& target = *it->second;
  if (clients.size() >= static_cast<std::size_t>(config.max_clients)) {
    return ErrorReply(Errc::kTooManyClients, "broker has max_clients (" +
                                                 std::to_string(config.max_clients) +
                                                 ") registrations; raise broker.max_clients");
  }
  const bool adopting = req.owner.has_value();
  if (config.cluster_mode() && !adopting) {
    if (target.in_grace()) {
      return ErrorReply(Errc::kBrokerUnavailable,
                        "broker " + config.id + " restarted and is re-adopting its earlier "
                        "clients (adopt_grace); new registrations are taken after it ends, retry");
    }
    const auto system_slots = static_cast<std::uint32_t>(config.self().system_slots);
    const auto index = static_cast<std::size_t>(
        std::find(ordered.begin(), ordered.end(), &target) - ordered.begin());
    const std::uint32_t counted = RegisteredOn(target_name) + target.quarantined_registrations();
    if (const auto why = cluster->NotAcceptedReason()) {
      // R1: nothing new until the coordinator accepts this broker (the client retries).
      return ErrorReply(Errc::kBrokerUnavailable, *why + "; new registrations wait, retry");
    }
    if (!cluster->MayRegister(index, counted)) {
      // Name why the registrations without a client are counted: a dead
      // client's is in quarantine (wait for it); a clean exit's only cools
      // for release_cooldown (retry in a moment).
      const std::uint32_t cooling = target.cooling_registrations();
      const std::uint32_t dead = target.quarantined_registrations() - cooling;
      std::string held_back;
      if (dead > 0) {
        held_back += ", " + std::to_string(dead) + " of them a dead client's, in quarantine";
      }
      if (cooling > 0) {
        held_back += ", " + std::to_string(cooling) +
                     " of them a client's that exited cleanly, cooling for release_cooldown (" +
                     std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        target.config().release_cooldown)
                                        .count()) +
                     " ms; retry after it)";
      }
      return ErrorReply(Errc::kTooManyClients,
                        "broker " + config.id + " already has " + std::to_string(system_slots) +
                            " DigiScope instance(s) registered for target '" + target_name +
                            "' (system_slots = " + std::to_string(system_slots) + held_back +
                            "); raise brokers[id=\"" + config.id +
                            "\"].system_slots in the cluster file");
    }
  }
  const std::string& name = req.name;
  ClientRecord rec;
  rec.target = target_name;
  rec.name = name;
  rec.pid = s.peer_pid();
  rec.uid = s.peer_uid();
  rec.since = Clock::now();
  const std::string instance = std::to_string(target.instance_id());
  if (req.owner) {
    // A client of the previous broker instance reconnects to keep its slots.
    const std::uint32_t owner = *req.owner;
    if (req.instance != instance) {
      return ErrorReply(Errc::kNotRegistered, "segment of target '" + target_name +
                                                  "' was re-created; register anew");
    }
    // The owner id and instance are readable by every group member: only
    // the uid that registered the owner may adopt it (owner_records.h).
    // Checked before Adopt, which would take the owner off the waiting list.
    if (auto refusal = owner_records.AdoptionRefusal(target_name, owner, rec.uid)) {
      LogLimited(spdlog::level::warn, "adoption refused", "uid " + AccountText(rec.uid),
                 "target {}: refused adoption by pid {} ({}): {}", target_name, rec.pid,
                 EscapeText(name, 64), *refusal);
      return ErrorReply(Errc::kNotRegistered, *refusal + "; register anew");
    }
    if (clients.count({target_name, owner}) > 0 || !target.Adopt(owner)) {
      return ErrorReply(Errc::kNotRegistered,
                        "owner " + std::to_string(owner) + " is not waiting for adoption on '" +
                            target_name + "' (grace over, or never held slots); register anew");
    }
    rec.owner = owner;
    rec.adopted = true;
    spdlog::info("target {}: adopted owner {} (pid {}, {}) after broker restart", target_name,
                 owner, rec.pid, name);
  } else {
    rec.owner = target.AllocateOwner();
    if (rec.owner == 0) {
      return ErrorReply(Errc::kTooManyClients,
                        "segment " + target.segment_name() +
                            " has handed out every owner id; restart the broker with no client "
                            "registered on target '" + target_name + "' to re-create it");
    }
    spdlog::info("target {}: registered owner {} (pid {}, uid {}, {})", target_name, rec.owner,
                 rec.pid, rec.uid, name);
  }
  s.record() = rec;
  clients[{rec.target, rec.owner}] = rec;
  owner_records.Set(rec.target, rec.owner,
                    {.instance = target.instance_id(), .uid = rec.uid});
  SaveOwnerRecords();
  // The handshake's answer: the version both speak (ParseLocalRequest
  // refused any the broker does not, so it is the client's).
  return local_protocol::EncodeRegisterReply({.owner = rec.owner,
                                              .segment = target.segment_name(),
                                              .instance = instance,
                                              .system_slot_in_table = !config.cluster_mode(),
                                              .cluster = config.cluster_mode(),
                                              .capacity = target.capacity(),
                                              .version = req.version});
}

void Broker::Impl::OnSessionClosed(Session& s) {
  sessions.erase(&s);
  if (!s.record() || stopping) return;
  const ClientRecord rec = *s.record();
  s.record().reset();
  clients.erase({rec.target, rec.owner});
  owner_records.Erase(rec.target, rec.owner);
  SaveOwnerRecords();
  auto it = targets.find(rec.target);
  if (it == targets.end()) return;
  // Whatever is still marked with the owner may hold a session: quarantined
  // as for a death, even after a goodbye (a caller that closed with permits
  // outstanding).
  const std::uint32_t freed = it->second->Reclaim(rec.owner, Clock::now());
  const auto q = it->second->config().quarantine;
  const std::string quarantined =
      freed > 0 && q.count() > 0
          ? fmt::format(", quarantined for {} ms",
                        std::chrono::duration_cast<std::chrono::milliseconds>(q).count())
          : std::string();
  if (rec.leaving) {
    if (freed == 0) {
      spdlog::info("target {}: client pid {} ({}, owner {}) left cleanly", rec.target, rec.pid,
                   rec.name, rec.owner);
    } else {
      spdlog::warn("target {}: client pid {} ({}, owner {}) left with {} slot(s) still held (its "
                   "permits must be released before closing); reclaimed{}",
                   rec.target, rec.pid, rec.name, rec.owner, freed, quarantined);
    }
  } else {
    spdlog::info("target {}: client pid {} ({}, owner {}) gone; {} slot(s) reclaimed{}",
                 rec.target, rec.pid, rec.name, rec.owner, freed, quarantined);
  }
  // A dead client's system session may linger on the server; a clean one
  // closed it before saying goodbye.
  if (config.cluster_mode()) {
    if (rec.leaving && freed == 0) {
      it->second->CoolRegistration(Clock::now());
    } else {
      it->second->QuarantineRegistration(Clock::now());
    }
  }
  ArmQuarantineTimer();
}

void Broker::Impl::ArmQuarantineTimer() {
  Clock::time_point next = Clock::time_point::max();
  for (auto& [n, t] : targets) next = std::min(next, t->next_quarantine_end());
  if (next == Clock::time_point::max()) return;
  quarantine_timer.expires_at(next);
  quarantine_timer.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    const auto now = Clock::now();
    for (auto& [n, t] : targets) t->ExpireQuarantine(now);
    ArmQuarantineTimer();
  });
}

void Broker::Impl::ArmAuditTimer() {
  audit_timer.expires_after(kAuditInterval);
  audit_timer.async_wait([this](boost::system::error_code ec) {
    if (ec || stopping) return;
    const auto now = Clock::now();
    bool quarantined = false;
    for (auto& [n, t] : targets) {
      std::map<std::uint32_t, ProcessId> registered;
      for (const auto& [key, rec] : clients) {
        if (key.first == n) registered.emplace(key.second, rec.pid);
      }
      quarantined |= t->Audit(now, registered);
    }
    if (quarantined) ArmQuarantineTimer();
    ArmAuditTimer();
  });
}

void Broker::Impl::SaveOwnerRecords() {
  if (Status st = owner_records.Save(); !st.ok()) {
    LogLimited(spdlog::level::err, "owner records not written", "",
               "{}: clients registered since cannot re-adopt their slots after a broker "
               "restart",
               st.message());
  }
}

void Broker::Impl::EndGrace() {
  in_grace = false;
  const auto now = Clock::now();
  for (auto& [n, t] : targets) {
    const std::size_t missing = t->pending_owners().size();
    std::set<std::uint32_t> registered;
    for (const auto& [key, rec] : clients) {
      if (key.first == n) registered.insert(key.second);
    }
    const std::uint32_t freed = t->ReleaseUnadopted(now, registered);
    if (missing > 0) {
      spdlog::info("target {}: adoption grace over; {} owner(s) did not come back, {} slot(s) "
                   "reclaimed",
                   n, missing, freed);
    }
  }
  // Owners that did not come back can no longer be adopted.
  owner_records.Retain([this](const std::string& target, std::uint32_t owner) {
    return clients.count({target, owner}) > 0;
  });
  SaveOwnerRecords();
  ArmQuarantineTimer();
}

}  // namespace dsb::broker
