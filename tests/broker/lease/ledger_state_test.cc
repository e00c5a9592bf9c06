// Ledger's liveness mode and SaveState/LoadState (broker/lease/ledger.h): a
// ledger kept in memory and one saved and loaded between every call give the
// same replies, warnings, notices and snapshots through a scripted sequence
// that touches every part of the state.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>

#include "broker/lease/ledger.h"

namespace dsb::lease {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TimePoint At(std::int64_t ms) { return TimePoint{} + milliseconds(ms); }

using Live = std::set<std::tuple<std::string, std::uint64_t, std::uint64_t>>;

LedgerConfig Config(const Live* live) {
  LedgerConfig c;
  c.targets = {{"exch", 10, 16}, {"mail", 4, 6}};
  c.brokers = {{"a", 1, {1, 1}, {1, 0}}, {"b", 2, {1, 0}, {2, 1}}};
  c.term = seconds(15);
  c.drain = seconds(5);
  c.generation = 3;
  c.file_hash = "h3";
  c.liveness = [live](std::string_view id, std::uint64_t epoch, std::uint64_t instance) {
    return live->contains({std::string(id), epoch, instance});
  };
  return c;
}

RenewRequest Req(const std::string& broker, std::uint64_t epoch, std::uint64_t instance,
                 std::uint64_t id, std::uint32_t held, std::uint64_t applied,
                 std::uint32_t wanted) {
  RenewRequest r;
  r.broker_id = broker;
  r.epoch = epoch;
  r.instance = instance;
  r.request_id = id;
  r.generation = 3;
  r.file_hash = "h3";
  r.targets.push_back({"exch", held, applied, held, 1, wanted, 1});
  r.targets.push_back({"mail", held / 2, applied, held / 2, 0, wanted / 2, 0});
  return r;
}

std::string Text(const std::optional<Duration>& d) {
  return d ? std::to_string(d->count()) : "-";
}

std::string Describe(const LedgerSnapshot& s) {
  std::ostringstream o;
  o << GateName(s.gate) << " g" << s.generation << " learning " << s.learning << " "
    << s.learning_left.count() << " " << s.term.count() << " " << s.drain.count() << " "
    << s.silence.count() << "\n";
  for (const auto& t : s.targets) {
    o << t.target << " L" << t.limit << " P" << t.pool << " owed " << t.owed_total << " free "
      << t.free << "\n";
    for (const auto& b : t.brokers) {
      o << "  " << b.broker_id << " w" << b.weight << " " << BrokerModeName(b.mode) << " known "
        << b.known << " e" << b.epoch << " r" << b.newest_request << " owed " << b.owed
        << " granted " << b.granted << " ph " << b.pool_held << " ap " << b.applied << " "
        << b.held << "/" << b.waiting << "/" << b.wanted << " " << Text(b.lease_left) << " "
        << Text(b.last_seen_ago) << " " << Text(b.silence_left) << " "
        << VerdictName(b.verdict) << " inst " << b.instances << " counted " << b.counted
        << " in_file " << b.in_file << "\n";
    }
  }
  return o.str();
}

std::string Describe(const Result<std::optional<Grant>>& r) {
  if (!r.ok()) return "error " + r.status().message();
  if (!*r) return "none";
  const Grant& g = **r;
  std::ostringstream o;
  o << g.broker_id << " e" << g.epoch << " i" << g.instance << " r" << g.request_id << " "
    << g.term.count() << " learning " << g.learning << " " << VerdictName(g.verdict) << " g"
    << g.generation << " '" << g.reason << "' '" << g.successor << "'";
  for (const auto& t : g.targets) o << " " << t.target << "=" << t.amount;
  return o.str();
}

// Every call of the script, as text (reply or status) plus what the ledger
// logged and its snapshot after the call.
using Step = std::function<std::string(Ledger&, TimePoint)>;

std::vector<std::string> RunScript(const std::vector<Step>& script, Live& live,
                             const std::vector<std::function<void(Live&)>>& live_changes,
                             bool reload) {
  live.clear();
  Ledger mem(Config(&live), At(0));
  boost::json::object saved = mem.SaveState();
  std::vector<std::string> out;
  for (std::size_t i = 0; i < script.size(); ++i) {
    if (live_changes[i]) live_changes[i](live);
    std::optional<Ledger> loaded;
    Ledger* l = &mem;
    if (reload) {
      // Through text, as the store keeps it.
      const auto parsed = boost::json::parse(boost::json::serialize(saved)).as_object();
      auto r = Ledger::LoadState(Config(&live), parsed);
      EXPECT_TRUE(r.ok()) << r.status().message();
      if (!r.ok()) return out;
      loaded.emplace(std::move(*r));
      l = &*loaded;
      // Learning is the store's key, kept outside the state: carried by hand.
      l->SetLearning(i < 2);
    } else {
      mem.SetLearning(i < 2);
    }
    const TimePoint now = At(static_cast<std::int64_t>(1000 * (i + 1)));
    std::string line = std::to_string(i) + ": " + script[i](*l, now);
    for (const auto& w : l->TakeWarnings()) line += "\n  warn " + w;
    for (const auto& n : l->TakeNotices()) line += "\n  notice " + n;
    line += "\n" + Describe(l->Snapshot(now));
    out.push_back(std::move(line));
    if (reload) saved = l->SaveState();
  }
  return out;
}

Step Renew(RenewRequest r) {
  return [r](Ledger& l, TimePoint now) { return Describe(l.OnRequest(now, r)); };
}
Step Do(std::function<Status(Ledger&, TimePoint)> f) {
  return [f](Ledger& l, TimePoint now) {
    const Status s = f(l, now);
    return s.ok() ? std::string("ok") : s.message();
  };
}

TEST(LedgerState, SavedAndLoadedBetweenEveryCallActsAsInMemory) {
  std::vector<Step> script;
  std::vector<std::function<void(Live&)>> live;
  auto add = [&](Step s, std::function<void(Live&)> change = nullptr) {
    script.push_back(std::move(s));
    live.push_back(std::move(change));
  };
  auto up = [](std::string id, std::uint64_t e, std::uint64_t i) {
    return [=](Live& l) { l.insert({id, e, i}); };
  };
  auto down = [](std::string id, std::uint64_t e, std::uint64_t i) {
    return [=](Live& l) { l.erase({id, e, i}); };
  };
  add(Renew(Req("a", 1, 7, 1, 0, 0, 6)), up("a", 1, 7));  // learning
  add(Renew(Req("b", 1, 9, 1, 0, 0, 8)), up("b", 1, 9));  // learning
  add(Renew(Req("a", 1, 7, 2, 0, 0, 6)));                  // accepted, granted
  add(Renew(Req("b", 1, 9, 2, 0, 0, 8)));
  add(Renew(Req("a", 1, 7, 3, 4, 2, 9)));
  add(Renew(Req("a", 1, 7, 3, 4, 2, 9)));  // exact duplicate
  add(Renew(Req("a", 1, 7, 2, 4, 2, 9)));  // stale
  add(Renew(Req("a", 1, 8, 1, 0, 0, 3)), up("a", 1, 8));  // clone, first request
  add(Renew(Req("a", 1, 8, 2, 0, 1, 3)));                  // clone logged
  add(Renew(Req("a", 1, 8, 3, 0, 2, 3)));                  // logged once only; reply says so
  add(Renew(Req("b", 1, 9, 3, 2, 2, 8)), down("a", 1, 8));  // clone silent: forgotten
  add(Renew(Req("z", 1, 1, 1, 0, 0, 2)), up("z", 1, 1));    // not in the file: removed
  add(Do([](Ledger& l, TimePoint now) { return l.Revoke("a", now); }));
  add(Renew(Req("a", 1, 7, 4, 4, 3, 9)));
  add(Do([](Ledger& l, TimePoint now) { return l.Drain("b", now); }));
  add(Renew(Req("b", 1, 9, 4, 2, 3, 8)));
  add(Do([](Ledger& l, TimePoint now) { return l.Resume("a", now); }));
  add(Do([](Ledger& l, TimePoint now) { return l.Resume("b", now); }));
  add(Do([](Ledger& l, TimePoint now) { return l.RevokeTarget("b", "mail", now); }));
  add(Renew(Req("b", 1, 9, 5, 2, 4, 8)));
  add(Do([](Ledger& l, TimePoint now) { return l.SetLimit("exch", 12, now); }));
  add(Do([](Ledger& l, TimePoint now) { return l.SetLimit("exch", 1, now); }));  // refused
  add(Do([](Ledger& l, TimePoint now) { return l.SetPool("mail", 2, now); }));
  add(Renew(Req("a", 1, 7, 5, 0, 4, 9)));
  add(Renew(Req("b", 2, 3, 1, 0, 0, 8)), up("b", 2, 3));  // restart of b beside epoch 1
  add(Renew(Req("b", 1, 4, 1, 0, 0, 8)), up("b", 1, 4));  // an older epoch, new instance: refused
  add(Do([](Ledger& l, TimePoint now) {
    l.OnGoodbye(now, {"a", 1, 7, {{"exch", 2, 6, 3}, {"mail", 0, 1, 2}}});
    return Status::Ok();
  }));
  add(Renew(Req("b", 2, 3, 2, 0, 0, 9)));  // counts a with what it handed over
  add(Renew(Req("a", 2, 5, 1, 2, 0, 4)), up("a", 2, 5));  // a's successor
  add(Renew(Req("b", 1, 9, 6, 0, 5, 1)), down("a", 1, 7));
  add(Do([](Ledger& l, TimePoint now) { return l.ForceRevoke("z", now); }));
  add(Renew(Req("y", 1, 2, 1, 0, 0, 0)), up("y", 1, 2));  // removed too
  add(Renew([] {
    RenewRequest r = Req("y", 1, 2, 2, 0, 0, 0);  // erased, holds nothing: leaves the count
    r.erased = true;
    r.targets[0].registered = 0;
    return r;
  }()));
  add(Renew(Req("b", 2, 3, 3, 0, 0, 8)), down("z", 1, 1));
  add(Do([](Ledger& l, TimePoint now) { return l.ForceRevoke("b", now); }));
  add(Renew(Req("a", 2, 5, 2, 0, 1, 9)));

  Live live_set;
  const auto in_memory = RunScript(script, live_set, live, false);
  const auto reloaded = RunScript(script, live_set, live, true);
  ASSERT_EQ(in_memory.size(), script.size());
  ASSERT_EQ(reloaded.size(), script.size());
  for (std::size_t i = 0; i < script.size(); ++i) EXPECT_EQ(in_memory[i], reloaded[i]);
  // The script reached what it means to test.
  const std::string all = [&] {
    std::string s;
    for (const auto& l : in_memory) s += l + "\n";
    return s;
  }();
  for (const char* seen : {"learning 1", "two live instances", "forgotten", "removed",
                           "erased its acceptance",
                           "refused", "revoked", "drained", "is below", "accepted"}) {
    EXPECT_NE(all.find(seen), std::string::npos) << seen << "\n" << all;
  }
}

TEST(LedgerState, SilenceIsTheOraclesNotTheClock) {
  Live live{{"a", 1, 7}};
  LedgerConfig c = Config(&live);
  Ledger l(c, At(0));
  l.SetLearning(false);
  ASSERT_EQ((*l.OnRequest(At(1), Req("a", 1, 7, 1, 0, 0, 6)))->targets[0].amount, 6u);
  // Years later on this clock, a is still alive: still owed.
  const TimePoint later = At(1) + std::chrono::hours(24 * 365);
  EXPECT_EQ(l.Owed(0, 0, later), 6u);
  live.clear();
  EXPECT_EQ(l.Owed(0, 0, At(2)), 0u);
}

TEST(LedgerState, LoadStateRefusesWhatItCannotRead) {
  Live live;
  Ledger l(Config(&live), At(0));
  const boost::json::object good = l.SaveState();
  LedgerConfig no_oracle = Config(&live);
  no_oracle.liveness = nullptr;
  EXPECT_EQ(Ledger::LoadState(no_oracle, good).status().code(), Errc::kInvalidArgument);
  ASSERT_TRUE(Ledger::LoadState(Config(&live), good).ok());
  auto broken = good;
  broken["meta"].as_object().erase("gate");
  auto r = Ledger::LoadState(Config(&live), broken);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Errc::kProtocol);
  EXPECT_NE(r.status().message().find("meta.gate"), std::string::npos) << r.status().message();
  broken = good;
  broken["meta"].as_object()["brokers"].as_array().pop_back();
  EXPECT_EQ(Ledger::LoadState(Config(&live), broken).status().code(), Errc::kProtocol);
  broken = good;
  broken["v"] = 2;
  EXPECT_EQ(Ledger::LoadState(Config(&live), broken).status().code(), Errc::kProtocol);
}

}  // namespace
}  // namespace dsb::lease
