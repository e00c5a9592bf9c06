// The platform-neutral part of children.h: reading the instances' report lines.
#include "tools/load/children.h"

#include <cstdio>

namespace dsb::load {

std::uint64_t U64(const boost::json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return 0;
  boost::system::error_code ec;
  const auto n = v->to_number<std::uint64_t>(ec);
  return ec ? 0 : n;
}

void TakeLines(Child& c, ErrorCounts& errors) {
  for (;;) {
    const auto nl = c.buffer.find('\n');
    if (nl == std::string::npos) return;
    const std::string line = c.buffer.substr(0, nl);
    c.buffer.erase(0, nl + 1);
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(line, ec);
    if (ec || !v.is_object()) {
      ++errors["bad_report"];
      continue;
    }
    auto& o = v.as_object();
    const auto* type = o.if_contains("type");
    if (type != nullptr && type->is_string() && type->as_string() == "progress") {
      c.progress_actions = U64(o, "actions");
      c.progress_refusals = U64(o, "refusals");
    } else if (type != nullptr && type->is_string() && type->as_string() == "result") {
      c.result = std::move(o);
    } else {
      ++errors["bad_report"];
    }
  }
}

using Clock = std::chrono::steady_clock;

Clock::time_point HardDeadline(const LoadOptions& o, Clock::time_point start) {
  const auto grace = std::chrono::milliseconds(o.acquire_timeout_ms + 2 * o.io_timeout_ms + 3000);
  return start +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s)) +
         grace;
}

void PrintProgress(const std::vector<Child>& children, Clock::time_point start,
                   Clock::time_point now) {
  std::uint64_t actions = 0, refusals = 0;
  for (const Child& c : children) {
    actions += c.progress_actions;
    refusals += c.progress_refusals;
  }
  std::fprintf(stderr, "dsb-load: t=%.1fs actions=%llu refusals=%llu\n",
               std::chrono::duration<double>(now - start).count(),
               static_cast<unsigned long long>(actions),
               static_cast<unsigned long long>(refusals));
}

WaitClock::WaitClock(const LoadOptions& o, std::chrono::steady_clock::time_point start)
    : start_(start),
      hard_deadline_(HardDeadline(o, start)),
      next_progress_(start + std::chrono::milliseconds(1200)) {}

bool WaitClock::Turn(const std::vector<Child>& children) {
  const auto now = std::chrono::steady_clock::now();
  if (now >= next_progress_) {
    PrintProgress(children, start_, now);
    next_progress_ += std::chrono::seconds(1);
  }
  if (killed_ || now < hard_deadline_) return false;
  std::fprintf(stderr, "dsb-load: instances still running past the grace; killing them\n");
  killed_ = true;
  return true;
}

}  // namespace dsb::load
