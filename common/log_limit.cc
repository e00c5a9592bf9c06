#include "common/log_limit.h"

#include <algorithm>

namespace dsb {

LogLimiter::LogLimiter(Options options) : options_(options) {
  options_.burst = std::max<std::uint32_t>(options_.burst, 1);
  if (options_.interval <= Clock::duration::zero()) options_.interval = Clock::duration(1);
  options_.max_keys = std::max<std::size_t>(options_.max_keys, 1);
  options_.site_keys = std::max<std::size_t>(options_.site_keys, 1);
}

std::size_t LogLimiter::PeersAt(const std::string& site) const {
  std::size_t n = 0;
  for (auto it = keys_.lower_bound(Key{site, ""}); it != keys_.end() && it->first.first == site;
       ++it) {
    if (it->first.second != kOtherPeers) ++n;
  }
  return n;
}

void LogLimiter::DropIdle(Clock::time_point now) {
  for (auto it = keys_.begin(); it != keys_.end();) {
    const bool over = now - it->second.window_start >= options_.interval;
    if (over && it->second.pending == 0) {
      it = keys_.erase(it);
    } else {
      ++it;
    }
  }
}

LogLimiter::Admission LogLimiter::Admit(std::string_view site, std::string_view peer,
                                        Clock::time_point now) {
  Key key{std::string(site), std::string(peer)};
  auto it = keys_.find(key);
  if (it == keys_.end()) {
    if (keys_.size() >= options_.max_keys || PeersAt(key.first) >= options_.site_keys) {
      DropIdle(now);
    }
    if (keys_.size() >= options_.max_keys || PeersAt(key.first) >= options_.site_keys) {
      // Full of busy keys: this peer shares its site's overflow key (which
      // may take the table one above max_keys per site: sites are constants).
      key.second = std::string(kOtherPeers);
      it = keys_.find(key);
    }
    if (it == keys_.end()) it = keys_.emplace(std::move(key), Entry{now, 0, 0, now}).first;
  }
  Entry& e = it->second;
  Admission a;
  if (now - e.window_start >= options_.interval) {
    // A new window; what the old one suppressed goes out with this line.
    e.window_start = now;
    e.emitted = 0;
  }
  if (e.emitted < options_.burst) {
    ++e.emitted;
    a.emit = true;
    a.suppressed = e.pending;
    a.over = e.pending > 0 ? now - e.first_pending : Clock::duration::zero();
    e.pending = 0;
    return a;
  }
  if (e.pending == 0) e.first_pending = now;
  ++e.pending;
  ++suppressed_total_;
  return a;
}

std::vector<LogLimiter::Summary> LogLimiter::Flush(Clock::time_point now, bool all) {
  std::vector<Summary> out;
  for (auto it = keys_.begin(); it != keys_.end();) {
    Entry& e = it->second;
    const bool over = now - e.window_start >= options_.interval;
    if (e.pending > 0 && (over || all)) {
      out.push_back(Summary{it->first.first, it->first.second, e.pending, now - e.first_pending});
      e.pending = 0;
    }
    if (over && e.pending == 0) {
      it = keys_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::optional<LogLimiter::Clock::time_point> LogLimiter::NextFlush() const {
  std::optional<Clock::time_point> next;
  for (const auto& [key, e] : keys_) {
    if (e.pending == 0) continue;
    const Clock::time_point at = e.window_start + options_.interval;
    if (!next || at < *next) next = at;
  }
  return next;
}

}  // namespace dsb
