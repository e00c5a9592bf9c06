#include "broker/lease/limit_policy.h"

#include <algorithm>
#include <vector>

namespace dsb::lease {

namespace {

std::string Seconds(Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms) + " ms";
}

}  // namespace

const char* LimitSourceName(LimitSource source) {
  switch (source) {
    case LimitSource::kConfig:
      return "config";
    case LimitSource::kDiscovered:
      return "discovered";
    case LimitSource::kOperator:
      return "operator";
    case LimitSource::kQuery:
      return "query";
  }
  return "?";
}

Status LimitPolicy::Validate(const LimitPolicyConfig& c) {
  if (c.minimum < 1) return {Errc::kConfig, "limit minimum must be at least 1"};
  if (c.ceiling < c.minimum) {
    return {Errc::kConfig, "limit " + std::to_string(c.ceiling) + " is below the minimum " +
                               std::to_string(c.minimum) +
                               " (sum of system_slots + floor + reserve, plus one)"};
  }
  if (c.confirmations < 1) return {Errc::kConfig, "discovery needs at least 1 confirmation"};
  if (c.window <= Duration::zero()) return {Errc::kConfig, "discovery window must be positive"};
  if (c.event_gap < Duration::zero() || c.probation < Duration::zero()) {
    return {Errc::kConfig, "discovery event gap and probation must not be negative"};
  }
  if (c.increase_after < Duration::zero()) {
    return {Errc::kConfig, "limit_increase_after must not be negative"};
  }
  return Status::Ok();
}

LimitPolicy::LimitPolicy(LimitPolicyConfig config, TimePoint now)
    : config_(config), limit_(config.ceiling), base_(config.ceiling), changed_at_(now) {}

std::optional<LimitChange> LimitPolicy::Set(TimePoint now, std::uint32_t to, LimitSource source,
                                            std::string cause) {
  const std::uint32_t from = limit_;
  const LimitSource old_source = source_;
  limit_ = to;
  source_ = source;
  if (from == to && old_source == source) return std::nullopt;
  changed_at_ = now;
  ++changes_;
  ++changes_by_source_[static_cast<std::size_t>(source)];
  return LimitChange{from, to, source, std::move(cause)};
}

std::optional<LimitChange> LimitPolicy::OnRefusal(TimePoint now, std::uint32_t held) {
  ++refusals_;
  any_refusal_ = true;
  last_refusal_ = now;
  while (!reports_.empty() && now - reports_.front().first > config_.window) reports_.pop_front();
  if (!config_.discover || held >= limit_) return std::nullopt;  // F1
  if (limit_ <= config_.minimum) return std::nullopt;             // F3: nowhere to go
  if (config_.ratchet) {
    return Set(now, limit_ - 1, LimitSource::kDiscovered,
               "a refusal at " + std::to_string(held) + " session(s) (ratchet test switch)");
  }
  // Bounded: a flood of reports (a hostile or broken client) must not make
  // each report cost more; the newest kMaxReports carry the evidence.
  constexpr std::size_t kMaxReports = 256;
  if (reports_.size() >= kMaxReports) reports_.pop_front();
  reports_.emplace_back(now, held);
  if (reports_.size() < config_.confirmations) return std::nullopt;
  // F2: the confirmations-th smallest level among the reports in the window.
  std::vector<std::uint32_t> levels;
  levels.reserve(reports_.size());
  for (const auto& [at, h] : reports_) levels.push_back(h);
  std::nth_element(levels.begin(), levels.begin() + (config_.confirmations - 1), levels.end());
  const std::uint32_t x = std::max(levels[config_.confirmations - 1], config_.minimum);
  if (x >= limit_) return std::nullopt;
  // F2a: did the reports at or below x come from one burst?
  TimePoint first = TimePoint::max(), last = TimePoint::min();
  for (const auto& [at, h] : reports_) {
    if (h > x) continue;
    first = std::min(first, at);
    last = std::max(last, at);
  }
  if (probing_ || config_.probation <= Duration::zero() || last - first > config_.event_gap) {
    provisional_from_ = 0;  // confirmed: the cap is real at this level
  } else if (provisional_from_ == 0) {
    provisional_from_ = limit_;
  }
  probing_ = false;
  std::string cause = std::to_string(config_.confirmations) + " refusal(s) at <= " +
                      std::to_string(x) + " session(s) held within " + Seconds(config_.window);
  if (x == config_.minimum && levels[config_.confirmations - 1] < x) {
    cause += " (held at the minimum " + std::to_string(config_.minimum) + ")";
  }
  // Reports at or above the new limit can never be evidence again.
  std::erase_if(reports_, [x](const auto& r) { return r.second >= x; });
  return Set(now, x, LimitSource::kDiscovered, std::move(cause));
}

std::optional<LimitChange> LimitPolicy::OnQuery(TimePoint now, std::uint32_t value) {
  if (last_query_ && *last_query_ == value) return std::nullopt;  // Q1: nothing new
  last_query_ = value;
  const std::uint32_t clamped = std::clamp(value, config_.minimum, config_.ceiling);
  std::string cause = "limit_command answered " + std::to_string(value);
  if (clamped != value) {
    cause += value > config_.ceiling
                 ? " (above the configured limit " + std::to_string(config_.ceiling) +
                       ", which is the ceiling)"
                 : " (below the minimum " + std::to_string(config_.minimum) + ")";
  }
  if (base_source_ == LimitSource::kOperator) {
    // An operator's value is trusted over a query: remember the answer only.
    return std::nullopt;
  }
  base_ = clamped;
  base_source_ = LimitSource::kQuery;
  reports_.clear();
  provisional_from_ = 0;
  probing_ = false;
  return Set(now, clamped, LimitSource::kQuery, std::move(cause));
}

Result<std::optional<LimitChange>> LimitPolicy::OnOperator(TimePoint now, std::uint32_t value) {
  if (value < config_.minimum || value > config_.ceiling) {
    return Status{Errc::kInvalidArgument,
                  "limit " + std::to_string(value) + " is outside " +
                      std::to_string(config_.minimum) + ".." + std::to_string(config_.ceiling) +
                      " (the minimum is sum(system_slots + floor) + reserve + 1; the ceiling is "
                      "the configured limit)"};
  }
  base_ = value;
  base_source_ = LimitSource::kOperator;
  reports_.clear();
  provisional_from_ = 0;
  probing_ = false;
  return Set(now, value, LimitSource::kOperator, "set by the operator");
}

void LimitPolicy::Restore(TimePoint now, std::uint32_t limit, LimitSource source,
                          std::uint32_t base, LimitSource base_source) {
  const auto clamp = [&](std::uint32_t v) { return std::clamp(v, config_.minimum, config_.ceiling); };
  if (base_source == LimitSource::kConfig && base != config_.ceiling) {
    base = config_.ceiling;  // the configured limit changed: it is the base now
    if (source == LimitSource::kConfig) limit = config_.ceiling;
  }
  base_ = clamp(base);
  base_source_ = base_source == LimitSource::kDiscovered ? LimitSource::kConfig : base_source;
  limit_ = std::min(clamp(limit), base_);
  source_ = limit_ == base_ ? base_source_ : source;
  if (source_ == LimitSource::kConfig && limit_ < base_) source_ = LimitSource::kDiscovered;
  if (base_source_ == LimitSource::kQuery) last_query_ = base_;  // the same answer changes nothing
  changed_at_ = now;
  reports_.clear();
}

TimePoint LimitPolicy::NextTick() const {
  TimePoint quiet_since = changed_at_;
  if (any_refusal_) quiet_since = std::max(quiet_since, last_refusal_);
  TimePoint next = TimePoint::max();
  if (provisional_from_ > limit_) next = quiet_since + config_.probation;  // F2a
  if (config_.increase_after > Duration::zero() && limit_ < base_) {
    next = std::min(next, quiet_since + config_.increase_after);  // F4
  }
  return next;
}

std::optional<LimitChange> LimitPolicy::Tick(TimePoint now) {
  const TimePoint next = NextTick();
  if (next == TimePoint::max() || now < next) return std::nullopt;
  if (provisional_from_ > limit_) {
    // F2a: a probe one level up; a refusal there confirms the level below.
    const std::uint32_t to = limit_ + 1;
    probing_ = true;
    if (to >= provisional_from_) provisional_from_ = 0;
    reports_.clear();
    return Set(now, to, to >= base_ ? base_source_ : LimitSource::kDiscovered,
               "no refusal for " + Seconds(config_.probation) +
                   " after a single burst of refusals lowered it (probation)");
  }
  const std::uint32_t to = limit_ + 1;
  const LimitSource source = to >= base_ ? base_source_ : LimitSource::kDiscovered;
  reports_.clear();
  return Set(now, to, source,
             "no refusal for " + Seconds(config_.increase_after) + " (limit_increase_after)");
}

}  // namespace dsb::lease
