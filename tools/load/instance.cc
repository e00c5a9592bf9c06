#include "tools/load/instance.h"

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tools/load/histogram.h"
#include "tools/load/instance_os.h"
#include "tools/load/line_client.h"
#include "tools/load/pg_client.h"

#ifndef DSB_LOAD_NO_CLIENT
#include "dsb/client.h"
#endif

namespace dsb::load {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr std::string_view kSessionLimitPrefix = "ERR MAPI_E_SESSION_LIMIT";

using ErrorCounts = std::map<std::string, std::uint64_t>;

Clock::duration Ms(double ms) {
  return duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(ms));
}

// State shared by an instance's threads. Thread rule: the atomics and the condition variable
// are used by every thread; everything else is written before the threads start.
struct Shared {
  explicit Shared(const LoadOptions& opts) : o(opts) {}

  // Sleeps up to `d`; returns early (false) once the instance is stopping.
  bool Sleep(Clock::duration d) {
    std::unique_lock lock(mu);
    return !cv.wait_for(lock, d, [this] { return stop.load(); });
  }

  void Stop() {
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    cv.notify_all();
#ifndef DSB_LOAD_NO_CLIENT
    cancel.Cancel();
#endif
  }

  const LoadOptions& o;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<std::uint64_t> actions{0};
  std::atomic<std::uint64_t> refusals{0};
  std::atomic<std::uint64_t> yields{0};
  std::atomic<std::uint64_t> opens{0};
  std::atomic<std::uint64_t> reports{0};  // refusals told to the broker
  PgUrl pg;                               // PostgreSQL mode: where to connect
#ifndef DSB_LOAD_NO_CLIENT
  dsb::Client* client = nullptr;  // null in --no-broker mode
  dsb::CancelToken cancel;
#endif
};

// The slot an action holds while its session is open: a Permit in broker mode, nothing in
// --no-broker mode.
struct Slot {
  bool ShouldYield() const {
#ifndef DSB_LOAD_NO_CLIENT
    return permit.valid() && permit.ShouldYield();
#else
    return false;
#endif
  }
  bool yieldable() const {
#ifndef DSB_LOAD_NO_CLIENT
    return permit.valid();
#else
    return false;
#endif
  }
  // After a close the server has not confirmed: the target's release_cooldown applies.
  void Release() {
#ifndef DSB_LOAD_NO_CLIENT
    permit.Release();
#endif
  }
  // After the server confirmed the session's end, or when no session was opened (refused).
  void ReleaseConfirmed() {
#ifndef DSB_LOAD_NO_CLIENT
    permit.ReleaseConfirmed();
#endif
  }
#ifndef DSB_LOAD_NO_CLIENT
  dsb::Permit permit;
#endif
};

// Counts a refusal and, with --report-refusals in broker mode, tells the broker. The caller
// still holds the refused attempt's permit (if any), so the broker sees what was held at the
// refusal, the refused attempt included.
void ReportRefusal(Shared& s, const Slot* slot, const std::string& reply, ErrorCounts& errors) {
  s.refusals.fetch_add(1, std::memory_order_relaxed);
#ifndef DSB_LOAD_NO_CLIENT
  if (s.client != nullptr && s.o.report_refusals) {
    // With the refused attempt's permit the broker leaves that attempt out of what it held.
    const std::error_code ec = slot != nullptr ? s.client->ReportSessionLimit(slot->permit, reply)
                                               : s.client->ReportSessionLimit(reply);
    if (ec) {
      ++errors["report_session_limit"];
    } else {
      s.reports.fetch_add(1, std::memory_order_relaxed);
    }
  }
#else
  (void)slot;
  (void)reply;
  (void)errors;
#endif
}

class Random {
 public:
  Random(const LoadOptions& o, std::uint64_t stream)
      : o_(o), rng_(o.seed * 0x9E3779B97F4A7C15ULL + stream) {}

  Clock::duration Hold() {
    if (o_.hold_dist == "exp") {
      std::exponential_distribution<double> d(1.0 / std::max(o_.hold_ms_mean, 1e-3));
      return Ms(std::min(d(rng_), 20 * o_.hold_ms_mean));  // cap the tail: bounded holds
    }
    std::uniform_real_distribution<double> d(o_.hold_ms_min, o_.hold_ms_max);
    return Ms(d(rng_));
  }
  Clock::duration Backoff() {
    std::uniform_real_distribution<double> d(o_.backoff_ms_min, o_.backoff_ms_max);
    return Ms(d(rng_));
  }

 private:
  const LoadOptions& o_;
  std::mt19937_64 rng_;
};

bool ParseSessionId(const std::string& reply, std::uint64_t& id) {
  if (!reply.starts_with("OK ")) return false;
  const char* begin = reply.data() + 3;
  const char* end = reply.data() + reply.size();
  auto [ptr, ec] = std::from_chars(begin, end, id);
  return ec == std::errc() && ptr == end;
}

// Holds a session for `hold`, ending early when the instance stops or the broker asks for the
// slot back. Returns true when it ended because of ShouldYield().
bool Hold(Shared& s, Clock::duration hold, const Slot& slot) {
  const Clock::time_point end = Clock::now() + hold;
  for (;;) {
    if (slot.ShouldYield()) return true;
    const Clock::time_point now = Clock::now();
    if (now >= end || s.stop) return false;
    Clock::duration step = end - now;
    if (slot.yieldable()) step = std::min<Clock::duration>(step, milliseconds(5));
    s.Sleep(step);
  }
}

struct ThreadResult {
  Histogram acquire_wait;
  ErrorCounts errors;
};

enum class Took { kSlot, kRetry, kStop };

// Takes a slot in broker mode (records the wait); nothing to take in --no-broker mode.
Took TakeSlot(Shared& s, Random& random, ThreadResult& r, Slot& slot) {
#ifndef DSB_LOAD_NO_CLIENT
  if (s.client != nullptr) {
    const LoadOptions& o = s.o;
    const Clock::time_point t0 = Clock::now();
    std::error_code ec;
    slot.permit = s.client->Acquire(milliseconds(o.acquire_timeout_ms), ec, &s.cancel);
    if (ec) {
      if (s.stop) return Took::kStop;
      const bool ours = ec.category() == dsb::dsb_category();
      ++r.errors[std::string("acquire_") +
                 (ours ? dsb::ErrcName(static_cast<dsb::Errc>(ec.value())) : "system")];
      if (ec == dsb::Errc::kNotRegistered) return Took::kStop;
      if (ec != dsb::Errc::kTimeout) s.Sleep(random.Backoff());
      return Took::kRetry;
    }
    r.acquire_wait.Add(duration_cast<microseconds>(Clock::now() - t0));
  }
#else
  (void)random;
  (void)r;
  (void)slot;
#endif
  return s.stop ? Took::kStop : Took::kSlot;
}

std::string PgErrorKind(const std::string& sqlstate) {
  return sqlstate.empty() ? "pg_connect" : "pg_connect_" + sqlstate;
}

// PostgreSQL mode: one action is a new connection (the server's session), one statement that
// lasts the sampled hold time, and a close. The slot is given back only after the close: with
// --close confirmed, after the server closed its end (it no longer counts the session).
void ActionThreadPg(Shared& s, int index, int thread, ThreadResult& r) {
  const LoadOptions& o = s.o;
  Random random(o,
                static_cast<std::uint64_t>(index) * 1000 + static_cast<std::uint64_t>(thread) + 1);
  const bool confirmed = o.close_mode == "confirmed";
  const milliseconds io_timeout(o.io_timeout_ms);
  while (!s.stop) {
    Slot slot;
    const Took took = TakeSlot(s, random, r, slot);
    if (took == Took::kStop) break;
    if (took == Took::kRetry) continue;
    PgSession session;
    std::string message, sqlstate;
    bool server_closed = false;
    const PgOutcome outcome = session.Connect(s.pg, io_timeout, message, sqlstate, server_closed);
    if (outcome != PgOutcome::kOk) {
      if (outcome == PgOutcome::kRefused) {
        ReportRefusal(s, &slot, message, r.errors);
      } else {
        ++r.errors[PgErrorKind(sqlstate)];
      }
      // The refused (or failed) backend counted against the role until it exited.
      if (server_closed) {
        slot.ReleaseConfirmed();
      } else {
        ++r.errors["pg_connect_unconfirmed"];
        slot.Release();
      }
      s.Sleep(random.Backoff());  // never a tight retry loop against a refusing server
      continue;
    }
    s.opens.fetch_add(1, std::memory_order_relaxed);
    const Clock::duration hold = random.Hold();
    char sql[64];
    std::snprintf(sql, sizeof(sql), "SELECT pg_sleep(%.6f)",
                  std::chrono::duration<double>(hold).count());
    const bool ran = session.Exec(sql, duration_cast<milliseconds>(hold) + io_timeout, message);
    if (!ran) ++r.errors["pg_query"];
    if (confirmed && session.connected()) {
      if (session.CloseConfirmed(io_timeout)) {
        slot.ReleaseConfirmed();  // the server closed its end: it no longer counts the session
      } else {
        ++r.errors["pg_close_unconfirmed"];
        slot.Release();
      }
    } else {
      session.ClosePlain();  // --close plain, or a failed statement already dropped it
      slot.Release();
    }
    if (!ran) {
      s.Sleep(random.Backoff());
      continue;
    }
    s.actions.fetch_add(1, std::memory_order_relaxed);
    if (o.think_ms > 0) s.Sleep(Ms(o.think_ms));
  }
}

// One Database Action Thread: take a slot, open a session, hold, close, give the slot back.
void ActionThread(Shared& s, int index, int thread, ThreadResult& r) {
  const LoadOptions& o = s.o;
  Random random(o,
                static_cast<std::uint64_t>(index) * 1000 + static_cast<std::uint64_t>(thread) + 1);
  const std::string open_line = "OPEN " + o.user;
  LineClient conn;  // one TCP connection per thread, reused for all its sessions
  while (!s.stop) {
    if (!conn.connected()) {
      if (conn.Connect(o.server, milliseconds(o.io_timeout_ms))) {
        ++r.errors["connect"];
        s.Sleep(random.Backoff());
        continue;
      }
    }
    Slot slot;
    const Took took = TakeSlot(s, random, r, slot);
    if (took == Took::kStop) break;
    if (took == Took::kRetry) continue;
    std::error_code ec;
    const std::string reply = conn.Call(open_line, ec);
    if (ec) {
      ++r.errors["io"];
      continue;
    }
    std::uint64_t id = 0;
    if (!ParseSessionId(reply, id)) {
      if (reply.starts_with(kSessionLimitPrefix)) {
        ReportRefusal(s, &slot, reply, r.errors);
        slot.ReleaseConfirmed();  // refused: the server opened no session
      } else {
        ++r.errors["unexpected_reply"];
        slot.Release();
      }
      s.Sleep(random.Backoff());  // never a tight retry loop against a refusing server
      continue;
    }
    s.opens.fetch_add(1, std::memory_order_relaxed);
    if (Hold(s, random.Hold(), slot)) s.yields.fetch_add(1, std::memory_order_relaxed);
    const std::string closed = conn.Call("CLOSE " + std::to_string(id), ec);
    slot.Release();
    if (ec) {
      ++r.errors["io"];
      continue;
    }
    if (closed != "OK") {
      ++r.errors["unexpected_reply"];
      continue;
    }
    s.actions.fetch_add(1, std::memory_order_relaxed);
    if (o.think_ms > 0) s.Sleep(Ms(o.think_ms));
  }
}

void WriteLine(int fd, const boost::json::value& v) {
  std::string line = boost::json::serialize(v);
  line += '\n';
  WriteAll(fd, line);
}

boost::json::object ErrorsJson(const ErrorCounts& errors) {
  boost::json::object out;
  for (const auto& [kind, n] : errors) out[kind] = n;
  return out;
}

}  // namespace

int RunInstance(const LoadOptions& o, int index, int report_fd) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + Ms(o.duration_s * 1000.0);
  Shared s(o);
  ErrorCounts errors;
  bool signalled = false;
  std::uint64_t system_refusals = 0;
  Random random(o, static_cast<std::uint64_t>(index) * 1000);

  auto result = [&](bool system_session, const Histogram& waits) {
    boost::json::object r;
    r["type"] = "result";
    r["instance"] = index;
    r["pid"] = CurrentProcessId();
    r["actions"] = s.actions.load();
    r["opens"] = s.opens.load();
    r["refusals"] = s.refusals.load();
    r["system_refusals"] = system_refusals;
    r["yields"] = s.yields.load();
    r["reports"] = s.reports.load();
    r["system_session"] = system_session;
    r["signalled"] = signalled;
    r["acquire_wait"] = waits.ToJson();
    r["errors"] = ErrorsJson(errors);
    WriteLine(report_fd, r);
  };

#ifndef DSB_LOAD_NO_CLIENT
  std::unique_ptr<dsb::Client> client;
  if (!o.no_broker) {
    dsb::ClientOptions co;
    co.socket_path = o.socket_path;
    co.target = o.target;
    co.name = "dsb-load#" + std::to_string(index);
    co.connect_timeout = std::max(milliseconds(100), duration_cast<milliseconds>(deadline - start));
    std::error_code ec;
    std::string message;
    client = dsb::Client::Connect(co, ec, &message);
    if (client == nullptr) {
      const bool ours = ec.category() == dsb::dsb_category();
      ++errors[std::string("broker_connect_") +
               (ours ? dsb::ErrcName(static_cast<dsb::Errc>(ec.value())) : "system")];
      std::fprintf(stderr, "dsb-load[%d]: cannot register with the broker: %s\n", index,
                   message.empty() ? ec.message().c_str() : message.c_str());
      result(false, Histogram());
      return 3;
    }
    s.client = client.get();
  }
#endif

  // The system session: opened first and held for the instance's whole life.
  const std::string open_line = "OPEN " + o.user;
  LineClient system;
  PgSession pg_system;
  std::uint64_t system_id = 0;
  bool have_system = false;
  if (o.postgres) {
    std::string why;
    if (!ParsePgUrl(o.server, s.pg, why)) {  // main checked it; a child never gets here
      std::fprintf(stderr, "dsb-load[%d]: %s\n", index, why.c_str());
      result(false, Histogram());
      return 2;
    }
  }
  while (o.postgres && !have_system && !signalled && Clock::now() < deadline) {
    std::string message, sqlstate;
    bool server_closed = false;
    const PgOutcome outcome =
        pg_system.Connect(s.pg, milliseconds(o.io_timeout_ms), message, sqlstate, server_closed);
    if (outcome == PgOutcome::kOk) {
      have_system = true;
      s.opens.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    if (outcome == PgOutcome::kRefused) {
      ++system_refusals;
      ReportRefusal(s, nullptr, message, errors);
    } else {
      ++errors[PgErrorKind(sqlstate)];
      std::fprintf(stderr, "dsb-load[%d]: system session: %s\n", index, message.c_str());
    }
    signalled = WaitForStop(random.Backoff());
  }
  while (!o.postgres && !have_system && !signalled && Clock::now() < deadline) {
    if (!system.connected() && system.Connect(o.server, milliseconds(o.io_timeout_ms))) {
      ++errors["connect"];
      signalled = WaitForStop(random.Backoff());
      continue;
    }
    std::error_code ec;
    const std::string reply = system.Call(open_line, ec);
    if (ec) {
      ++errors["io"];
      continue;
    }
    if (ParseSessionId(reply, system_id)) {
      have_system = true;
      s.opens.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    if (reply.starts_with(kSessionLimitPrefix)) {
      ++system_refusals;
      ReportRefusal(s, nullptr, reply, errors);
    } else {
      ++errors["unexpected_reply"];
    }
    signalled = WaitForStop(random.Backoff());
  }
  if (!have_system) ++errors["no_system_session"];

  std::vector<ThreadResult> results(static_cast<std::size_t>(o.threads));
  std::vector<std::thread> threads;
  if (have_system) {
    for (int t = 0; t < o.threads; ++t) {
      threads.emplace_back(o.postgres ? ActionThreadPg : ActionThread, std::ref(s), index, t,
                           std::ref(results[static_cast<std::size_t>(t)]));
    }
  }

  Clock::time_point next_progress = Clock::now() + std::chrono::seconds(1);
  while (!signalled) {
    const Clock::time_point now = Clock::now();
    if (now >= deadline) break;
    if (now >= next_progress) {
      WriteLine(report_fd, boost::json::object{{"type", "progress"},
                                               {"instance", index},
                                               {"actions", s.actions.load()},
                                               {"refusals", s.refusals.load()}});
      next_progress += std::chrono::seconds(1);
    }
    signalled = WaitForStop(std::min(deadline, next_progress) - now);
  }
  s.Stop();
  for (std::thread& t : threads) t.join();

  if (have_system && o.postgres) {
    if (o.close_mode == "confirmed") {
      if (!pg_system.CloseConfirmed(milliseconds(o.io_timeout_ms))) ++errors["system_close"];
    } else {
      pg_system.ClosePlain();
    }
  } else if (have_system) {
    std::error_code ec;
    const std::string reply = system.Call("CLOSE " + std::to_string(system_id), ec);
    if (ec || reply != "OK") ++errors["system_close"];
  }
  Histogram waits;
  for (const ThreadResult& r : results) {
    waits.Merge(r.acquire_wait);
    for (const auto& [kind, n] : r.errors) errors[kind] += n;
  }
  result(have_system, waits);
#ifndef DSB_LOAD_NO_CLIENT
  client.reset();  // after every Permit is gone (the threads are joined)
#endif
  return 0;
}

}  // namespace dsb::load
