#include "tools/simserver/session_table.h"

#include <algorithm>
#include <boost/json.hpp>

#include "common/check.h"

namespace dsb::sim {

namespace {
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

SessionTable::SessionTable(std::uint32_t default_limit) : default_limit_(default_limit) {
  DSB_CHECK(default_limit <= kMaxLimit, "limit %u", default_limit);
}

SessionTable::User* SessionTable::FindOrAdd(std::string_view user) {
  auto it = users_.find(user);
  if (it != users_.end()) return &it->second;
  if (users_.size() >= kMaxUsers) return nullptr;
  User u;
  u.limit = default_limit_;
  return &users_.emplace(std::string(user), u).first->second;
}

void SessionTable::Advance(User& u, Clock::time_point now) {
  if (u.window_started && now > u.last_change) {
    u.area += static_cast<double>(u.current) * Seconds(now - u.last_change);
  }
  if (now > u.last_change) u.last_change = now;
}

bool SessionTable::SetLimit(std::string_view user, std::uint32_t limit, Clock::time_point now) {
  DSB_CHECK(limit <= kMaxLimit, "limit %u", limit);
  User* u = FindOrAdd(user);
  if (u == nullptr) return false;
  Advance(*u, now);
  u->limit = limit;
  return true;
}

SessionTable::OpenResult SessionTable::Open(std::string_view user, Clock::time_point now) {
  User* u = FindOrAdd(user);
  if (u == nullptr) return {OpenOutcome::kTooManyUsers, 0, 0};
  if (!u->window_started) {
    u->window_started = true;
    u->window_start = now;
    u->last_change = now;
  }
  Advance(*u, now);
  if (u->current >= u->limit) {
    ++u->refused;
    return {OpenOutcome::kSessionLimit, 0, u->limit};
  }
  ++u->current;
  ++u->opened;
  if (u->current > u->peak) u->peak = u->current;
  if (u->current > u->limit) {  // Invariant 2: unreachable; kept as a visible self-check.
    ++u->over_limit_events;
    u->peak_over_limit = std::max(u->peak_over_limit, u->current - u->limit);
  }
  const std::uint64_t id = next_id_++;
  sessions_.emplace(id, u);
  return {OpenOutcome::kOk, id, u->limit};
}

bool SessionTable::Close(std::uint64_t id, Clock::time_point now) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  User& u = *it->second;
  DSB_CHECK(u.current > 0, "session %llu of a user with no sessions",
            static_cast<unsigned long long>(id));
  Advance(u, now);
  --u.current;
  sessions_.erase(it);
  return true;
}

void SessionTable::ResetWindow(Clock::time_point now) {
  for (auto& [name, u] : users_) {
    u.window_started = true;
    u.window_start = now;
    u.last_change = now;
    u.area = 0;
    u.peak = u.current;
    u.opened = 0;
    u.refused = 0;
  }
}

UserStats SessionTable::StatsOf(const User& u, Clock::time_point now) {
  UserStats s;
  s.peak = u.peak;
  s.opened = u.opened;
  s.refused = u.refused;
  s.current = u.current;
  s.limit = u.limit;
  s.over_limit_events = u.over_limit_events;
  s.peak_over_limit = u.peak_over_limit;
  if (u.window_started) {
    const Clock::time_point end = now > u.last_change ? now : u.last_change;
    s.window_s = Seconds(end - u.window_start);
    const double area = u.area + static_cast<double>(u.current) * Seconds(end - u.last_change);
    s.mean = s.window_s > 0 ? area / s.window_s : static_cast<double>(u.current);
  }
  return s;
}

std::map<std::string, UserStats, std::less<>> SessionTable::Snapshot(Clock::time_point now) const {
  std::map<std::string, UserStats, std::less<>> out;
  for (const auto& [name, u] : users_) out.emplace(name, StatsOf(u, now));
  return out;
}

std::string SessionTable::StatsJson(Clock::time_point now) const {
  boost::json::object users;
  for (const auto& [name, s] : Snapshot(now)) {
    boost::json::object o;
    o["peak"] = s.peak;
    o["mean"] = s.mean;
    o["opened"] = s.opened;
    o["refused"] = s.refused;
    o["current"] = s.current;
    o["limit"] = s.limit;
    o["over_limit_events"] = s.over_limit_events;
    o["peak_over_limit"] = s.peak_over_limit;
    o["window_s"] = s.window_s;
    users[name] = std::move(o);
  }
  boost::json::object root;
  root["users"] = std::move(users);
  root["open_sessions"] = sessions_.size();
  return boost::json::serialize(root);
}

}  // namespace dsb::sim
