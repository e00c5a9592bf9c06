#include "broker/limit_keeper.h"

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <ctime>
#include <fstream>
#include <sstream>
#include <spdlog/spdlog.h>

#include "broker/limit_command.h"
#include "broker/secure_fs.h"
#include "common/escape.h"
#include "common/utc_time.h"

namespace dsb::broker {

namespace asio = boost::asio;
namespace json = boost::json;
using Clock = LimitKeeper::Clock;

namespace {

std::int64_t MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

// A steady_clock point as ISO 8601 UTC wall time (for people reading status).
std::string WallTime(Clock::time_point t) {
  const auto wall = std::chrono::system_clock::now() -
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(Clock::now() - t);
  return IsoUtc(wall);
}

// One target's record in <state_dir>/<id>.limits.
struct LimitRecord {
  std::uint32_t limit = 0;
  lease::LimitSource source = lease::LimitSource::kConfig;
  std::uint32_t base = 0;
  lease::LimitSource base_source = lease::LimitSource::kConfig;
};

// Reads what Persist() writes: {"version":1,"targets":{name:{limit, source,
// base, base_source}}}. Success: the records by target name (none for a
// missing file). Failure: kConfig naming the file, what is wrong and what to
// do. A damaged file refuses the start rather than falling back to the
// configured limit: the file may hold an operator's or a discovered limit
// LOWER than the configured one, and starting above it could put the account
// over the server's limit (S). A restart cannot mend the file, so the
// message says to fix or remove it (removing forgets those limits).
Result<std::map<std::string, LimitRecord>> ReadLimitsFile(const std::filesystem::path& file) {
  const std::string name = file.string();
  const std::string fix =
      ": fix it or remove it (removing it starts every target from its configured limit "
      "and forgets any lower limit an operator set or the broker discovered; set it again "
      "with `dsbctl set-limit`)";
  Result<std::optional<std::string>> text = ReadFileNoFollow(file, 1u << 20);
  if (!text.ok()) {
    return Status{Errc::kConfig, "limits file " + text.status().message() + fix};
  }
  std::map<std::string, LimitRecord> out;
  if (!text->has_value()) return out;  // first start
  boost::system::error_code ec;
  json::value v = json::parse(**text, ec);
  const json::object* root = !ec && v.is_object() ? &v.as_object() : nullptr;
  const json::value* tv = root != nullptr ? root->if_contains("targets") : nullptr;
  if (tv == nullptr || !tv->is_object()) {
    return Status{Errc::kConfig, "limits file " + name +
                                     " is damaged (not the JSON this broker writes)" + fix};
  }
  auto source_of = [](const json::value* s) -> std::optional<lease::LimitSource> {
    if (s == nullptr || !s->is_string()) return std::nullopt;
    for (auto src : {lease::LimitSource::kConfig, lease::LimitSource::kDiscovered,
                     lease::LimitSource::kOperator, lease::LimitSource::kQuery}) {
      if (s->as_string() == lease::LimitSourceName(src)) return src;
    }
    return std::nullopt;
  };
  for (const auto& kv : tv->as_object()) {
    const json::object* o = kv.value().if_object();
    const json::value* l = o != nullptr ? o->if_contains("limit") : nullptr;
    const json::value* b = o != nullptr ? o->if_contains("base") : nullptr;
    const auto src = o != nullptr ? source_of(o->if_contains("source")) : std::nullopt;
    const auto bsrc = o != nullptr ? source_of(o->if_contains("base_source")) : std::nullopt;
    if (l == nullptr || b == nullptr || !l->is_int64() || !b->is_int64() || !src || !bsrc ||
        l->as_int64() < 1 || l->as_int64() > 65535 || b->as_int64() < 1 ||
        b->as_int64() > 65535) {
      return Status{Errc::kConfig, "limits file " + name + ": the record of target '" +
                                       EscapeText(kv.key(), 128) + "' is damaged" + fix};
    }
    out[std::string(kv.key())] =
        LimitRecord{static_cast<std::uint32_t>(l->as_int64()), *src,
                    static_cast<std::uint32_t>(b->as_int64()), *bsrc};
  }
  return out;
}

}  // namespace

Status CheckLimitsFile(const std::filesystem::path& file) {
  auto records = ReadLimitsFile(file);
  return records.ok() ? Status::Ok() : records.status();
}

struct LimitKeeper::Impl {
  struct PerTarget {
    config::TargetConfig config;
    std::unique_ptr<lease::LimitPolicy> policy;
    std::unique_ptr<asio::steady_timer> poll_timer;
    std::unique_ptr<asio::steady_timer> tick_timer;
    // limit_command bookkeeping
    std::optional<std::uint32_t> last_value;
    std::string last_error;
    std::optional<Clock::time_point> last_run;
    bool running = false;
    std::shared_ptr<LimitCommandRun> run;  // while running
    std::uint64_t counted_only = 0;  // refusals of folded reports beyond the evidence
    // refusal log rate limit
    Clock::time_point last_log{};
    std::uint64_t unlogged = 0;
    // The newest changes, newest last (status "recent_limit_changes", the
    // status page): kept in memory only, so a restart starts an empty list.
    struct Change {
      Clock::time_point at;
      lease::LimitChange change;
      std::string who;
    };
    std::deque<Change> recent;
  };
  static constexpr std::size_t kRecentChanges = 10;

  explicit Impl(asio::io_context& context) : io(context) {}

  asio::io_context& io;
  Hooks hooks;
  std::optional<std::filesystem::path> state_file;
  std::vector<bool> restored;

  // Writes every target's limit, source and base (write, fsync, rename).
  void Persist() {
    if (!state_file) return;
    json::object ts;
    for (const PerTarget& t : targets) {
      const lease::LimitPolicy& p = *t.policy;
      ts[t.config.name] = json::object{{"limit", p.limit()},
                                       {"source", lease::LimitSourceName(p.source())},
                                       {"base", p.base()},
                                       {"base_source", lease::LimitSourceName(p.base_source())}};
    }
    const std::string text = json::serialize(json::object{{"version", 1}, {"targets", ts}}) + "\n";
    // A random temporary name made with O_EXCL | O_NOFOLLOW (secure_fs.h):
    // nothing planted in state_dir is written through.
    if (Status st = WriteFileAtomically(*state_file, text, 0600); !st.ok()) {
      // The file still holds the limits before this change: a restart starts
      // from them (not from the configured ones). Sticky until a write works.
      persist_error = "the change applies now but " + state_file->string() +
                      " could not be written (" + st.message() +
                      "): a restart would start from the limits it held before; make it "
                      "writable and repeat the command";
      spdlog::error("{}", persist_error);
    } else {
      persist_error.clear();
    }
  }
  // Why the last write of the state file failed ("" when it holds the
  // current limits, or there is none): the status shows it as "persisted".
  std::string persist_error;

  // Restores what Persist() wrote, target by target (unknown names ignored).
  // Failure: kConfig from ParseLimitsFile (a damaged file refuses the start).
  Status Load(Clock::time_point now) {
    restored.assign(targets.size(), false);
    if (!state_file) return Status::Ok();
    auto records = ReadLimitsFile(*state_file);
    if (!records.ok()) return records.status();
    for (std::size_t i = 0; i < targets.size(); ++i) {
      auto it = records->find(targets[i].config.name);
      if (it == records->end()) continue;
      const LimitRecord& r = it->second;
      lease::LimitPolicy& p = *targets[i].policy;
      p.Restore(now, r.limit, r.source, r.base, r.base_source);
      restored[i] = true;
      spdlog::info("target {}: limit {} (source {}) restored from {}", targets[i].config.name,
                   p.limit(), lease::LimitSourceName(p.source()), state_file->string());
    }
    return Status::Ok();
  }
  std::vector<PerTarget> targets;
  bool stopping = false;
  std::size_t pending_initial = 0;
  std::function<void()> ready;

  // `who`: the operator or reporter behind the change ("" for a query, a tick).
  void Apply(std::size_t i, const std::optional<lease::LimitChange>& change,
             const std::string& who = {}) {
    if (!change) return;
    PerTarget& t = targets[i];
    if (t.recent.size() == kRecentChanges) t.recent.pop_front();
    t.recent.push_back(PerTarget::Change{Clock::now(), *change, who});
    spdlog::warn("target {}: limit {} -> {} (source {}): {}", t.config.name, change->from,
                 change->to, lease::LimitSourceName(change->source), change->cause);
    Persist();
    hooks.apply(i, *change);
    ArmTick(i);
  }

  void ArmTick(std::size_t i) {
    PerTarget& t = targets[i];
    const Clock::time_point next = t.policy->NextTick();
    if (next == Clock::time_point::max() || stopping) return;
    t.tick_timer->expires_at(next);
    t.tick_timer->async_wait([this, i](boost::system::error_code ec) {
      if (ec || stopping) return;
      Apply(i, targets[i].policy->Tick(Clock::now()));
      ArmTick(i);
    });
  }

  void RunCommand(std::size_t i) {
    PerTarget& t = targets[i];
    if (t.running || stopping) return;
    t.running = true;
    t.run = RunLimitCommand(io.get_executor(), t.config.limit_command,
                            t.config.limit_command_timeout,
                            [this, i](Result<std::uint32_t> r) { OnAnswer(i, std::move(r)); });
  }

  void OnAnswer(std::size_t i, Result<std::uint32_t> r) {
    PerTarget& t = targets[i];
    t.running = false;
    t.run.reset();
    t.last_run = Clock::now();
    if (stopping) return;
    if (r.ok()) {
      if (!t.last_error.empty()) {
        spdlog::info("target {}: limit_command answers again ({})", t.config.name, *r);
      }
      t.last_error.clear();
      t.last_value = *r;
      Apply(i, t.policy->OnQuery(Clock::now(), *r));
    } else {
      const std::string why = r.status().message();
      if (why != t.last_error) {
        spdlog::error("target {}: limit_command {}; the limit stays {} (source {})",
                      t.config.name, why, t.policy->limit(),
                      lease::LimitSourceName(t.policy->source()));
      }
      t.last_error = why;
    }
    if (pending_initial > 0 && --pending_initial == 0 && ready) {
      auto cb = std::move(ready);
      ready = nullptr;
      cb();
    }
    t.poll_timer->expires_after(std::chrono::duration_cast<Clock::duration>(t.config.limit_poll));
    t.poll_timer->async_wait([this, i](boost::system::error_code ec) {
      if (!ec) RunCommand(i);
    });
  }
};

LimitKeeper::LimitKeeper(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LimitKeeper::~LimitKeeper() { Stop(); }

Result<std::unique_ptr<LimitKeeper>> LimitKeeper::Create(
    asio::io_context& io, const std::vector<config::TargetConfig>& targets,
    const std::vector<std::uint32_t>& minimum, Hooks hooks,
    std::optional<std::filesystem::path> state_file) {
  auto impl = std::make_unique<Impl>(io);
  impl->hooks = std::move(hooks);
  impl->state_file = std::move(state_file);
  const auto now = Clock::now();
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const config::TargetConfig& tc = targets[i];
    lease::LimitPolicyConfig pc;
    pc.ceiling = static_cast<std::uint32_t>(tc.limit);
    pc.minimum = i < minimum.size() ? minimum[i] : 1;
    pc.discover = tc.discover;
    pc.increase_after = tc.limit_increase_after;
    if (Status s = lease::LimitPolicy::Validate(pc); !s.ok()) {
      return Status{Errc::kConfig, "target " + tc.name + ": " + s.message()};
    }
    Impl::PerTarget t;
    t.config = tc;
    t.policy = std::make_unique<lease::LimitPolicy>(pc, now);
    t.poll_timer = std::make_unique<asio::steady_timer>(io);
    t.tick_timer = std::make_unique<asio::steady_timer>(io);
    impl->targets.push_back(std::move(t));
  }
  if (Status st = impl->Load(now); !st.ok()) return st;
  return std::unique_ptr<LimitKeeper>(new LimitKeeper(std::move(impl)));
}

bool LimitKeeper::restored(std::size_t index) const {
  return index < impl_->restored.size() && impl_->restored[index];
}

void LimitKeeper::Seed(std::size_t index, std::uint32_t limit, const std::string& cause) {
  Impl& k = *impl_;
  if (index >= k.targets.size()) return;
  lease::LimitPolicy& p = *k.targets[index].policy;
  if (limit >= p.limit()) return;
  p.Restore(Clock::now(), limit, lease::LimitSource::kDiscovered, p.base(), p.base_source());
  spdlog::warn("target {}: limit {} (source {}): {}", k.targets[index].config.name, p.limit(),
               lease::LimitSourceName(p.source()), cause);
  k.Persist();
}

LimitKeeper::Record LimitKeeper::record(std::size_t index) const {
  const lease::LimitPolicy& p = *impl_->targets.at(index).policy;
  return Record{p.limit(), p.source(), p.base(), p.base_source()};
}

void LimitKeeper::Restore(std::size_t index, const Record& r, const std::string& cause) {
  Impl& k = *impl_;
  if (index >= k.targets.size()) return;
  Impl::PerTarget& t = k.targets[index];
  lease::LimitPolicy& p = *t.policy;
  const Record before = record(index);
  p.Restore(Clock::now(), r.limit, r.source, r.base, r.base_source);
  const Record after = record(index);
  if (after.limit != before.limit || after.source != before.source) {
    spdlog::warn("target {}: limit {} -> {} (source {}): {}", t.config.name, before.limit,
                 after.limit, lease::LimitSourceName(after.source), cause);
  }
  k.Persist();
  k.ArmTick(index);
}

std::string LimitKeeper::last_change_who(std::size_t index) const {
  const auto& recent = impl_->targets.at(index).recent;
  return recent.empty() ? std::string() : recent.back().who;
}

void LimitKeeper::Start(std::function<void()> ready) {
  Impl& k = *impl_;
  std::vector<std::size_t> with_command;
  for (std::size_t i = 0; i < k.targets.size(); ++i) {
    if (!k.targets[i].config.limit_command.empty()) with_command.push_back(i);
  }
  k.pending_initial = with_command.size();
  if (with_command.empty()) {
    if (ready) ready();
  } else {
    k.ready = std::move(ready);
    for (std::size_t i : with_command) k.RunCommand(i);
  }
}

void LimitKeeper::Stop() {
  if (!impl_) return;
  impl_->stopping = true;
  for (auto& t : impl_->targets) {
    t.poll_timer->cancel();
    t.tick_timer->cancel();
    // A command still running would keep the broker from exiting.
    if (t.run) t.run->Kill();
  }
}

std::size_t LimitKeeper::size() const { return impl_->targets.size(); }

std::uint32_t LimitKeeper::limit(std::size_t index) const {
  return impl_->targets.at(index).policy->limit();
}

std::uint64_t LimitKeeper::changes(std::size_t index, lease::LimitSource source) const {
  return impl_->targets.at(index).policy->changes(source);
}

void LimitKeeper::OnRefusal(std::size_t index, std::uint32_t held, std::uint32_t refusals,
                            const std::string& who) {
  Impl& k = *impl_;
  if (index >= k.targets.size() || refusals == 0) return;
  Impl::PerTarget& t = k.targets[index];
  const auto now = Clock::now();
  std::optional<lease::LimitChange> change;
  // A report may fold many refusals (a peer says how many): a few are
  // evidence enough; the rest are only counted (a hostile count must not
  // stall the loop).
  const std::uint32_t as_evidence = std::min<std::uint32_t>(refusals, 4);
  for (std::uint32_t n = 0; n < as_evidence; ++n) {
    auto c = t.policy->OnRefusal(now, held);
    if (c) change = c;
  }
  t.counted_only += refusals - as_evidence;
  // Every refusal is counted (status); the log gets one line a second.
  if (now - t.last_log >= std::chrono::seconds(1)) {
    spdlog::warn("target {}: {} reports the server refused a session for its limit with {} "
                 "session(s) held by dsb (limit {}){}",
                 t.config.name, who, held, t.policy->limit(),
                 t.unlogged > 0 ? fmt::format("; {} more refusal(s) since the last line",
                                              t.unlogged)
                                : std::string());
    t.last_log = now;
    t.unlogged = refusals - 1;
  } else {
    t.unlogged += refusals;
  }
  k.Apply(index, change, who);
}

Status LimitKeeper::SetOperatorLimit(std::size_t index, std::uint32_t value,
                                     const std::string& who) {
  Impl& k = *impl_;
  if (index >= k.targets.size()) return {Errc::kUnknownTarget, "no such target"};
  auto r = k.targets[index].policy->OnOperator(Clock::now(), value);
  if (!r.ok()) return r.status();
  if (*r) (*r)->cause += " (" + who + ")";
  k.Apply(index, *r, who);
  return Status::Ok();
}

json::object LimitKeeper::Json(std::size_t index) const {
  const Impl::PerTarget& t = impl_->targets.at(index);
  const lease::LimitPolicy& p = *t.policy;
  const auto now = Clock::now();
  json::value command = nullptr;
  if (!t.config.limit_command.empty()) {
    command = json::object{
        {"last_value", t.last_value ? json::value(*t.last_value) : json::value(nullptr)},
        {"last_error", t.last_error.empty() ? json::value(nullptr) : json::value(t.last_error)},
        {"last_run_ms_ago", t.last_run ? json::value(MsBetween(*t.last_run, now))
                                       : json::value(nullptr)},
        {"poll_ms",
         std::chrono::duration_cast<std::chrono::milliseconds>(t.config.limit_poll).count()}};
  }
  json::array recent;
  for (auto it = t.recent.rbegin(); it != t.recent.rend(); ++it) {
    recent.push_back(json::object{{"at", WallTime(it->at)},
                                  {"ms_ago", MsBetween(it->at, now)},
                                  {"from", it->change.from},
                                  {"to", it->change.to},
                                  {"source", lease::LimitSourceName(it->change.source)},
                                  {"cause", it->change.cause},
                                  {"who", it->who}});
  }
  json::object out{{"limit", p.limit()},
                   {"limit_source", lease::LimitSourceName(p.source())},
                   {"limit_changed_at", WallTime(p.changed_at())},
                   {"limit_changed_ms_ago", MsBetween(p.changed_at(), now)},
                   {"limit_ceiling", p.config().ceiling},
                   {"limit_minimum", p.config().minimum},
                   {"refusals_reported", p.refusals_reported() + t.counted_only},
                   {"limit_changes", p.changes()},
                   {"discover", p.config().discover},
                   {"limit_command", std::move(command)},
                      {"recent_limit_changes", std::move(recent)}};
  // Whether <state_dir>/<id>.limits holds this limit (a coordinator restart
  // starts from what it holds); false with the reason after a failed write.
  if (impl_->state_file) out["persisted"] = impl_->persist_error.empty();
  if (!impl_->persist_error.empty()) out["persist_error"] = impl_->persist_error;
  return out;
}

}  // namespace dsb::broker
