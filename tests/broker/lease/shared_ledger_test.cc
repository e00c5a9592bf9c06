// The shared ledger (broker/lease/shared_ledger.h) against a model of the store:
// a std::map with mod revisions, a compare-and-swap commit as etcd's
// transaction does it (every ledger key read unchanged, absent ones still
// absent), live keys and the learning key as sets the test controls (the
// store's leases are the test's decision here; their timing is etcd's, tested
// with real etcd elsewhere).
#include "broker/lease/shared_ledger.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <string>

namespace dsb::lease {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;

TimePoint At(std::int64_t ms) { return TimePoint{} + milliseconds(ms); }

LedgerConfig Config(std::uint32_t pool = 10, std::uint64_t generation = 1,
                    std::string hash = "h1") {
  LedgerConfig c;
  c.targets = {{"exch", pool, pool + 4}};
  c.brokers = {{"a", 1, {1}, {1}}, {"b", 1, {1}, {1}}};
  c.term = seconds(15);
  c.drain = seconds(5);
  c.eps = 1e-3;
  c.generation = generation;
  c.file_hash = std::move(hash);
  return c;
}

RenewRequest Req(const std::string& broker, std::uint64_t epoch, std::uint64_t id,
                 std::uint32_t pool_held, std::uint64_t applied, std::uint32_t wanted,
                 std::uint64_t generation = 1, std::string hash = "h1") {
  RenewRequest r;
  r.broker_id = broker;
  r.epoch = epoch;
  r.instance = 7;
  r.request_id = id;
  r.generation = generation;
  r.file_hash = std::move(hash);
  r.targets.push_back({"exch", pool_held, applied, pool_held, 0, wanted, 0});
  return r;
}

LiveInstance Who(const std::string& broker, std::uint64_t epoch = 1) { return {broker, epoch, 7}; }

// The store: ledger keys with their mod revision; live keys; learning key.
struct Store {
  struct Entry {
    std::string value;
    std::int64_t mod = 0;
  };
  std::map<std::string, Entry> keys;
  std::set<LiveInstance> live;
  bool learning = false;
  std::int64_t revision = 1;
  int writes = 0;

  struct Read {
    StoreView view;
    std::map<std::string, std::int64_t> mods;  // every ledger key read (0: absent)
  };
  Read Get() const {
    Read r;
    for (const auto& [k, e] : keys) {
      r.view.values[k] = e.value;
      r.mods[k] = e.mod;
    }
    r.view.live = live;
    r.view.learning = learning;
    return r;
  }
  // The guarded transaction: false if any ledger key changed since `read`
  // (or appeared: the write's keys absent at the read must still be absent).
  bool Commit(const Read& read, const StoreWrite& w) {
    for (const auto& [k, mod] : read.mods) {
      const auto it = keys.find(k);
      if (it == keys.end() || it->second.mod != mod) return false;
    }
    for (const auto& [k, e] : keys) {
      if (!read.mods.contains(k)) return false;
    }
    if (w.empty()) return true;
    ++revision;
    ++writes;
    for (const auto& [k, v] : w.puts) keys[k] = {v, revision};
    for (const auto& k : w.deletes) keys.erase(k);
    if (w.start_learning) learning = true;
    return true;
  }
};

// One renew as a broker runs it: read, apply, commit; redo on a lost compare.
std::optional<Grant> Renew(Store& s, const LedgerConfig& mine, const RenewRequest& req,
                           TimePoint now) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    const Store::Read read = s.Get();
    auto step = ApplyRenew(mine, read.view, req, now);
    EXPECT_TRUE(step.ok()) << step.status().message();
    if (!step.ok()) return std::nullopt;
    if (s.Commit(read, step->write)) return step->reply;
  }
  ADD_FAILURE() << "no commit in 10 attempts";
  return std::nullopt;
}

int Amount(const std::optional<Grant>& g) {
  if (!g || g->learning || g->verdict != Verdict::kAccepted) return -1;
  return static_cast<int>(g->targets.at(0).amount);
}

// A store past learning with a and b live (epoch 1).
Store Running() {
  Store s;
  s.live = {Who("a"), Who("b")};
  return s;
}

void Admin(Store& s, AdminChange::Kind kind, const std::string& broker,
           const std::string& target = {}, std::uint32_t limit = 0) {
  const Store::Read read = s.Get();
  auto w = ApplyAdmin(Config(), read.view, {kind, broker, target, limit}, At(0));
  ASSERT_TRUE(w.ok()) << w.status().message();
  ASSERT_TRUE(s.Commit(read, *w));
}

std::uint64_t OwedOf(const Store& s, const std::string& broker) {
  auto snap = SnapshotOf(Config(), s.Get().view, At(0));
  EXPECT_TRUE(snap.ok()) << snap.status().message();
  if (!snap.ok()) return 0;
  for (const auto& b : snap->targets.at(0).brokers) {
    if (b.broker_id == broker) return b.owed;
  }
  return 0;
}

TEST(SharedLedger, LiveKeysRoundTripAndOtherTextIsRefused) {
  const LiveInstance w{"ws-01.lab_x", 42, 18446744073709551615u};
  EXPECT_EQ(LiveKey(w), "live/ws-01.lab_x/42/18446744073709551615");
  EXPECT_EQ(ParseLiveKey(LiveKey(w)), w);
  for (const char* bad : {"live/a/1", "live//1/2", "live/a/1/2/3", "live/a/x/2", "live/a/1/",
                          "live/a/01/2", "live/a b/1/2", "ledger/meta", "live/a/-1/2",
                          "live/a/1/18446744073709551616"}) {
    EXPECT_EQ(ParseLiveKey(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(TargetKey("exch01"), "ledger/target/exch01");
}

TEST(SharedLedger, FirstRenewCreatesTheLedgerAndStartsLearning) {
  Store s;
  s.live = {Who("a")};
  const Store::Read read = s.Get();
  auto step = ApplyRenew(Config(), read.view, Req("a", 1, 1, 0, 0, 5), At(0));
  ASSERT_TRUE(step.ok()) << step.status().message();
  EXPECT_TRUE(step->write.start_learning);
  EXPECT_TRUE(step->write.puts.contains(std::string(kMetaKey)));
  EXPECT_TRUE(step->write.puts.contains(TargetKey("exch")));
  ASSERT_TRUE(step->reply);
  EXPECT_TRUE(step->reply->learning);
  ASSERT_TRUE(s.Commit(read, step->write));
  // While the learning key exists: learning replies, no acceptance.
  EXPECT_TRUE(Renew(s, Config(), Req("a", 1, 2, 0, 0, 5), At(1))->learning);
  EXPECT_EQ(Renew(s, Config(), Req("a", 1, 3, 0, 0, 5), At(2))->verdict, Verdict::kPending);
  // The store's learning lease expired: grants.
  s.learning = false;
  EXPECT_EQ(Amount(Renew(s, Config(), Req("a", 1, 4, 0, 0, 5), At(3))), 5);
}

TEST(SharedLedger, OwedFallsOnlyWhenTheLiveKeyIsGone) {
  Store s = Running();
  ASSERT_EQ(Amount(Renew(s, Config(), Req("a", 1, 1, 0, 0, 10), At(0))), -1);  // creates: learning
  s.learning = false;
  ASSERT_EQ(Amount(Renew(s, Config(), Req("a", 1, 2, 0, 0, 10), At(1))), 10);
  // b's clock runs days ahead: a's owed never falls while its live key is there.
  for (int i = 1; i <= 5; ++i) {
    EXPECT_EQ(Amount(Renew(s, Config(), Req("b", 1, static_cast<std::uint64_t>(i), 0, 0, 10),
                           At(1) + hours(24 * i))),
              0);
    EXPECT_EQ(OwedOf(s, "a"), 10u);
  }
  // C2: its live key expired (its store lease outlived every lease it used).
  s.live.erase(Who("a"));
  EXPECT_EQ(OwedOf(s, "a"), 0u);
  EXPECT_EQ(Amount(Renew(s, Config(), Req("b", 1, 6, 0, 0, 10), At(2))), 10);
}

// The caller's transaction commits only while its own live key exists, so
// its own instance is alive even if the read raced its key's re-creation.
TEST(SharedLedger, TheCallerIsAliveInItsOwnStep) {
  Store s = Running();
  Renew(s, Config(), Req("a", 1, 1, 0, 0, 6), At(0));
  s.learning = false;
  ASSERT_EQ(Amount(Renew(s, Config(), Req("a", 1, 2, 0, 0, 6), At(1))), 6);
  s.live.erase(Who("a"));
  const Store::Read read = s.Get();
  auto step = ApplyRenew(Config(), read.view, Req("a", 1, 3, 6, 2, 6), At(2));
  ASSERT_TRUE(step.ok());
  EXPECT_TRUE(step->write.notices.empty()) << step->write.notices.at(0);
  EXPECT_EQ(Amount(step->reply), 6);
  ASSERT_TRUE(s.Commit(read, step->write));
  s.live.insert(Who("a"));
  EXPECT_EQ(OwedOf(s, "a"), 6u);
}

TEST(SharedLedger, TwoLiveInstancesOfOneIdAreBothCountedAndLogged) {
  Store s = Running();
  Renew(s, Config(), Req("a", 1, 1, 0, 0, 4), At(0));
  s.learning = false;
  ASSERT_EQ(Amount(Renew(s, Config(), Req("a", 1, 2, 0, 0, 4), At(1))), 4);
  // A second instance of "a" (a clone: same epoch, other instance id), alive.
  RenewRequest clone = Req("a", 1, 1, 0, 0, 10);
  clone.instance = 8;
  s.live.insert({"a", 1, 8});
  Renew(s, Config(), clone, At(2));
  clone.request_id = 2;
  const Store::Read read = s.Get();
  auto step = ApplyRenew(Config(), read.view, clone, At(3));
  ASSERT_TRUE(step.ok());
  bool logged = false;
  for (const auto& w : step->write.warnings) logged = logged || w.find("two live instances") != std::string::npos;
  EXPECT_TRUE(logged);
  ASSERT_TRUE(s.Commit(read, step->write));
  // The first instance stays owed its 4: the clone gets at most 10 - 4.
  EXPECT_LE(Amount(step->reply), 6);
  EXPECT_EQ(OwedOf(s, "a"), 4u + static_cast<std::uint32_t>(Amount(step->reply)));
}

TEST(SharedLedger, ExactDuplicateAfterATimedOutWriteGetsTheStoredReplyAndWritesNothing) {
  Store s = Running();
  Renew(s, Config(), Req("a", 1, 1, 0, 0, 6), At(0));
  s.learning = false;
  // The write of request 2 committed, but the broker saw a timeout.
  const auto first = Renew(s, Config(), Req("a", 1, 2, 0, 0, 6), At(1));
  ASSERT_EQ(Amount(first), 6);
  const int writes = s.writes;
  // It re-reads and redoes the same request (its state changed meanwhile on b's side too).
  Renew(s, Config(), Req("b", 1, 1, 0, 0, 6), At(2));
  const Store::Read read = s.Get();
  auto again = ApplyRenew(Config(), read.view, Req("a", 1, 2, 0, 0, 6), At(3));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->reply, first);
  EXPECT_TRUE(again->write.empty()) << again->write.puts.size() << " keys written";
  EXPECT_EQ(s.writes, writes + 1);
  // An older request: no reply, nothing written.
  auto stale = ApplyRenew(Config(), read.view, Req("a", 1, 1, 0, 0, 6), At(4));
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->reply);
  EXPECT_TRUE(stale->write.empty());
}

// Brokers that read, compute and commit interleaved (a lost compare: redo)
// never hold more pool slots than the pool: judged on the amounts the brokers
// use, not on the ledger's own counters.
TEST(SharedLedger, InterleavedBrokersNeverGrantAboveThePool) {
  constexpr std::uint32_t kPool = 12;
  const LedgerConfig mine = Config(kPool);
  LedgerConfig three = mine;
  three.brokers.push_back({"c", 2, {1}, {1}});
  Store s;
  const std::vector<std::string> ids = {"a", "b", "c"};
  for (const auto& id : ids) s.live.insert(Who(id));
  struct Broker {
    std::string id;
    std::uint64_t next = 1;
    std::uint64_t applied = 0;
    std::uint32_t using_now = 0;  // pool slots in use under the applied grant
    std::optional<Store::Read> read;
    std::optional<RenewStep> step;
  };
  std::vector<Broker> brokers;
  for (const auto& id : ids) {
    Broker b;
    b.id = id;
    brokers.push_back(std::move(b));
  }
  std::mt19937 rng(13);
  int commits = 0, lost = 0;
  for (int round = 0; round < 4000; ++round) {
    if (round == 20) s.learning = false;  // the learning lease expired
    Broker& b = brokers[rng() % brokers.size()];
    const std::uint32_t wanted = static_cast<std::uint32_t>(rng() % (kPool + 1));
    if (!b.read) {
      b.read = s.Get();
      auto step = ApplyRenew(three, b.read->view,
                             Req(b.id, 1, b.next, b.using_now, b.applied, wanted), At(round));
      ASSERT_TRUE(step.ok()) << step.status().message();
      b.step = std::move(*step);
      continue;
    }
    if (!s.Commit(*b.read, b.step->write)) {
      ++lost;  // redo with a fresh read (same request id: the request was never applied)
      b.read.reset();
      continue;
    }
    ++commits;
    b.read.reset();
    const std::uint64_t id = b.next++;
    if (b.step->reply && !b.step->reply->learning &&
        b.step->reply->verdict == Verdict::kAccepted) {
      // B1a: apply the grant; use up to the amount (a lower grant shrinks at once).
      b.applied = id;
      b.using_now = std::min(b.step->reply->targets.at(0).amount,
                             static_cast<std::uint32_t>(rng() % (kPool + 1)));
    }
    std::uint32_t in_use = 0;
    for (const auto& o : brokers) in_use += o.using_now;
    ASSERT_LE(in_use, kPool) << "round " << round;
  }
  EXPECT_GT(commits, 500);
  EXPECT_GT(lost, 50);  // the interleaving really raced
}

TEST(SharedLedger, NewerGenerationRebuildKeepsAcceptancesAndLearns) {
  Store s = Running();
  Renew(s, Config(), Req("a", 1, 1, 0, 0, 3), At(0));
  s.learning = false;
  ASSERT_EQ(Renew(s, Config(), Req("a", 1, 2, 0, 0, 3), At(1))->verdict, Verdict::kAccepted);
  // A limit below the file's (discovered, or an operator's): 14 -> 11.
  Admin(s, AdminChange::Kind::kSetLimit, "", "exch", 11);
  // b restarts with generation 2 of the file (a second target, a new pool).
  LedgerConfig next = Config(20, 2, "h2");
  next.targets.push_back({"mail", 5, 5});
  // a's new allowance is 0: its accepted one (2) stays counted all the same
  // until it reports under the new file (R2), so the records must carry over.
  next.brokers[0].system_slots = {0, 0};
  next.brokers[0].floors = {0, 0};
  next.brokers[1].system_slots = {1, 0};
  next.brokers[1].floors = {1, 0};
  s.live.insert(Who("b", 2));
  const Store::Read read = s.Get();
  auto step = ApplyRenew(next, read.view, Req("b", 2, 1, 0, 0, 3, 2, "h2"), At(2));
  ASSERT_TRUE(step.ok()) << step.status().message();
  EXPECT_TRUE(step->write.start_learning);
  EXPECT_TRUE(step->reply->learning);
  EXPECT_TRUE(step->write.puts.contains(TargetKey("mail")));
  ASSERT_TRUE(s.Commit(read, step->write));
  auto limits = StoredLimits(Config(), s.Get().view);
  ASSERT_TRUE(limits.ok());
  ASSERT_EQ(limits->size(), 2u);
  // The stored limit stays below the new file's 24 (S: the server did not change).
  EXPECT_EQ(limits->at(0), (std::pair<std::string, std::uint32_t>("exch", 11)));
  EXPECT_EQ(limits->at(1), (std::pair<std::string, std::uint32_t>("mail", 5)));
  auto snap = SnapshotOf(next, s.Get().view, At(3));
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->generation, 2u);
  EXPECT_TRUE(snap->learning);
  // a's acceptance under generation 1 is carried over: counted with its allowance.
  for (const auto& b : snap->targets.at(0).brokers) {
    if (b.broker_id == "a") {
      EXPECT_EQ(b.counted, 2u);
    }
  }
  // a, still on generation 1, is refused by the stored generation-2 ledger.
  s.learning = false;
  EXPECT_EQ(Renew(s, Config(), Req("a", 1, 3, 0, 2, 3), At(4))->verdict, Verdict::kRefused);
}

TEST(SharedLedger, OlderGenerationOrOtherHashIsRefusedAndLeavesTheConfig) {
  Store s = Running();
  s.live.insert(Who("b", 2));
  Renew(s, Config(10, 2, "h2"), Req("a", 1, 1, 0, 0, 3, 2, "h2"), At(0));
  s.learning = false;
  const auto meta = s.keys.at(std::string(kMetaKey)).value;
  EXPECT_EQ(Renew(s, Config(10, 1, "h1"), Req("b", 1, 1, 0, 0, 3, 1, "h1"), At(1))->verdict,
            Verdict::kRefused);
  EXPECT_EQ(Renew(s, Config(10, 2, "hX"), Req("b", 2, 1, 0, 0, 3, 2, "hX"), At(2))->verdict,
            Verdict::kRefused);
  auto snap = SnapshotOf(Config(), s.Get().view, At(3));
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->generation, 2u);
  EXPECT_NE(s.keys.at(std::string(kMetaKey)).value.find("\"file_hash\":\"h2\""), std::string::npos);
}

TEST(SharedLedger, AdminChangesGoThroughTheStore) {
  Store s = Running();
  {
    const Store::Read read = s.Get();
    auto none = ApplyAdmin(Config(), read.view, {AdminChange::Kind::kRevoke, "a", {}, 0}, At(0));
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.status().code(), Errc::kBrokerUnavailable);
  }
  Renew(s, Config(), Req("a", 1, 1, 0, 0, 6), At(0));
  s.learning = false;
  ASSERT_EQ(Amount(Renew(s, Config(), Req("a", 1, 2, 0, 0, 6), At(1))), 6);
  Admin(s, AdminChange::Kind::kRevoke, "a");
  EXPECT_EQ(Amount(Renew(s, Config(), Req("a", 1, 3, 6, 2, 6), At(2))), 0);
  EXPECT_EQ(OwedOf(s, "a"), 6u);  // C2: owed does not fall by revoke
  Admin(s, AdminChange::Kind::kResume, "a");
  EXPECT_EQ(Amount(Renew(s, Config(), Req("a", 1, 4, 0, 3, 6), At(3))), 6);
  Admin(s, AdminChange::Kind::kDrain, "a");
  EXPECT_EQ(Amount(Renew(s, Config(), Req("a", 1, 5, 6, 4, 6), At(4))), 0);
  Admin(s, AdminChange::Kind::kResume, "a");
  Admin(s, AdminChange::Kind::kRevokeTarget, "a", "exch");
  EXPECT_EQ(Amount(Renew(s, Config(), Req("a", 1, 6, 0, 5, 6), At(5))), 0);
  Admin(s, AdminChange::Kind::kResume, "a");
  // set-limit: L 14 -> 10 (base 4): pool 6.
  Admin(s, AdminChange::Kind::kSetLimit, "", "exch", 10);
  auto limits = StoredLimits(Config(), s.Get().view);
  ASSERT_TRUE(limits.ok());
  EXPECT_EQ(limits->at(0), (std::pair<std::string, std::uint32_t>("exch", 10)));
  EXPECT_EQ(Amount(Renew(s, Config(), Req("a", 1, 7, 0, 6, 10), At(6))), 6);
  const Store::Read read = s.Get();
  auto below = ApplyAdmin(Config(), read.view, {AdminChange::Kind::kSetLimit, "", "exch", 3}, At(7));
  ASSERT_FALSE(below.ok());
  EXPECT_EQ(below.status().code(), Errc::kInvalidArgument);
  auto unknown = ApplyAdmin(Config(), read.view, {AdminChange::Kind::kDrain, "zz", {}, 0}, At(7));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), Errc::kConflict);
  // Forced revoke: forgets what a is owed at once.
  Admin(s, AdminChange::Kind::kForceRevoke, "a");
  EXPECT_EQ(OwedOf(s, "a"), 0u);
}

TEST(SharedLedger, GoodbyeCountsWhatWasHandedOver) {
  Store s = Running();
  Renew(s, Config(), Req("a", 1, 1, 0, 0, 6), At(0));
  s.learning = false;
  ASSERT_EQ(Amount(Renew(s, Config(), Req("a", 1, 2, 0, 0, 6), At(1))), 6);
  const Store::Read read = s.Get();
  auto w = ApplyGoodbye(Config(), read.view, {"a", 1, 7, {{"exch", 2, 3, 1}}}, At(2));
  ASSERT_TRUE(w.ok());
  ASSERT_FALSE(w->empty());
  ASSERT_TRUE(s.Commit(read, *w));
  EXPECT_EQ(OwedOf(s, "a"), 2u);
  auto unknown = ApplyGoodbye(Config(), s.Get().view, {"a", 9, 7, {}}, At(3));
  ASSERT_TRUE(unknown.ok());
  EXPECT_TRUE(unknown->empty());
}

TEST(SharedLedger, EveryMalformedValueIsAProtocolErrorNamingItsKey) {
  Store good = Running();
  Renew(good, Config(), Req("a", 1, 1, 0, 0, 6), At(0));
  good.learning = false;
  Renew(good, Config(), Req("a", 1, 2, 0, 0, 6), At(1));
  const std::string meta(kMetaKey);
  const std::string target = TargetKey("exch");
  auto with = [&](const std::string& key, std::optional<std::string> value) {
    Store s = good;
    if (value) {
      s.keys[key].value = *value;
    } else {
      s.keys.erase(key);
    }
    return s.Get().view;
  };
  auto replace = [&](const std::string& key, const std::string& from, const std::string& to) {
    std::string v = good.keys.at(key).value;
    const auto at = v.find(from);
    EXPECT_NE(at, std::string::npos) << from << " in " << v;
    if (at != std::string::npos) v.replace(at, from.size(), to);
    return with(key, v);
  };
  const std::vector<std::pair<std::string, StoreView>> cases = {
      {meta, with(meta, "{not json")},
      {meta, with(meta, "[1,2]")},
      {meta, replace(meta, "\"v\":1", "\"v\":2")},
      {meta, replace(meta, "\"term_ns\":", "\"term_ms\":")},
      {meta, replace(meta, "\"gate\":\"open\"", "\"gate\":\"ajar\"")},
      {meta, replace(meta, "\"verdict\":1", "\"verdict\":9")},
      {meta, replace(meta, "\"mode\":\"active\"", "\"mode\":7")},
      {meta, replace(meta, "\"brokers_config\":[{\"id\":\"a\"", "\"brokers_config\":[{\"id\":\"b\"")},
      {target, with(target, std::nullopt)},
      {target, with(target, "")},
      {target, replace(target, "\"pool\":10", "\"pool\":-1")},
      {target, replace(target, "\"pool_held\":0", "\"pool_held\":\"0\"")},
      {target, replace(target, "\"grants\":[", "\"grants\":[1,")},
      {target, replace(target, "\"epoch\":1", "\"epoch\":5")},
      {target, replace(target, "\"limit\":14", "\"limit\":99999999999")},
  };
  for (const auto& [key, view] : cases) {
    auto step = ApplyRenew(Config(), view, Req("a", 1, 3, 0, 2, 6), At(2));
    ASSERT_FALSE(step.ok()) << key;
    EXPECT_EQ(step.status().code(), Errc::kProtocol) << step.status().message();
    EXPECT_NE(step.status().message().find("'" + key + "'"), std::string::npos)
        << step.status().message();
    auto snap = SnapshotOf(Config(), view, At(2));
    EXPECT_EQ(snap.status().code(), Errc::kProtocol);
  }
  // A target key without the meta key: refused, never a guess.
  auto orphan = ApplyRenew(Config(), with(meta, std::nullopt), Req("a", 1, 3, 0, 2, 6), At(2));
  ASSERT_FALSE(orphan.ok());
  EXPECT_NE(orphan.status().message().find(target), std::string::npos);
  // A config of mine that the ledger refuses.
  LedgerConfig bad = Config();
  bad.brokers.clear();
  EXPECT_EQ(ApplyRenew(bad, good.Get().view, Req("a", 1, 3, 0, 2, 6), At(2)).status().code(),
            Errc::kConfig);
}

// Stored values damaged at random (one character replaced, dropped or
// doubled; digits raised to huge numbers): every step either works on a
// consistent ledger or fails with kProtocol; never a crash (run under the asan
// preset too).
TEST(SharedLedger, RandomlyDamagedValuesNeverCrash) {
  Store good = Running();
  Renew(good, Config(), Req("a", 1, 1, 0, 0, 6), At(0));
  good.learning = false;
  Renew(good, Config(), Req("a", 1, 2, 0, 0, 6), At(1));
  Renew(good, Config(), Req("b", 1, 1, 2, 0, 6), At(2));
  Admin(good, AdminChange::Kind::kDrain, "b");
  std::mt19937 rng(20261206);
  const std::string alphabet = "{}[]\":,0123456789-eE.truefalsn ab";
  int refused = 0, worked = 0;
  for (int round = 0; round < 3000; ++round) {
    Store s = good;
    auto it = s.keys.begin();
    std::advance(it, static_cast<long>(rng() % s.keys.size()));
    std::string& v = it->second.value;
    const std::size_t at = rng() % v.size();
    switch (rng() % 4) {
      case 0: v[at] = alphabet[rng() % alphabet.size()]; break;
      case 1: v.erase(at, 1); break;
      case 2: v.insert(at, 1, v[at]); break;
      default:
        if (std::isdigit(static_cast<unsigned char>(v[at]))) v.insert(at, "99999999999999999999");
        break;
    }
    const Store::Read read = s.Get();
    auto step = ApplyRenew(Config(), read.view, Req("a", 1, 3, 6, 2, 6), At(3));
    auto snap = SnapshotOf(Config(), read.view, At(3));
    auto bye = ApplyGoodbye(Config(), read.view, {"b", 1, 7, {{"exch", 1, 2, 1}}}, At(3));
    if (step.ok()) {
      ++worked;
      EXPECT_TRUE(snap.ok()) << snap.status().message();
    } else {
      ++refused;
      EXPECT_EQ(step.status().code(), Errc::kProtocol) << step.status().message();
      EXPECT_EQ(snap.status().code(), Errc::kProtocol);
      EXPECT_EQ(bye.status().code(), Errc::kProtocol);
    }
  }
  EXPECT_GT(refused, 1000);
  EXPECT_GT(worked, 10);  // damage that still parses (a reason text, a number) is a value like any
}

// Review item 1: a limit keeper or an operator on an older cluster file must
// not raise the limit a newer file lowered (S): ApplyAdmin refuses a broker
// whose file is not the stored ledger's, and no limit rises above the stored
// file's configured limit (the ceiling), even after it was lowered.
TEST(SharedLedger, AdminOfAnotherFileIsRefusedAndNoLimitRisesAboveTheStoredCeiling) {
  // Generation 1: L = 40 (pool 36, base 4). Generation 2: the server was
  // lowered, L = 30 (pool 26).
  Store s = Running();
  Renew(s, Config(36, 1, "h1"), Req("a", 1, 1, 0, 0, 3), At(0));
  s.learning = false;
  s.live.insert(Who("b", 2));
  ASSERT_TRUE(Renew(s, Config(26, 2, "h2"), Req("b", 2, 1, 0, 0, 3, 2, "h2"), At(1))->learning);
  // The old keeper (generation 1) sets its limit 40 again: refused, naming both.
  const std::string before = s.keys.at(std::string(kMetaKey)).value;
  for (const std::uint32_t limit : {40u, 38u, 20u}) {
    auto old = ApplyAdmin(Config(36, 1, "h1"), s.Get().view,
                          {AdminChange::Kind::kSetLimit, "", "exch", limit}, At(2));
    ASSERT_FALSE(old.ok()) << limit;
    EXPECT_EQ(old.status().code(), Errc::kConflict);
    EXPECT_NE(old.status().message().find("generation 1"), std::string::npos) << old.status().message();
    EXPECT_NE(old.status().message().find("generation 2"), std::string::npos) << old.status().message();
  }
  auto drain = ApplyAdmin(Config(36, 1, "h1"), s.Get().view, {AdminChange::Kind::kDrain, "a", {}, 0},
                          At(2));
  EXPECT_EQ(drain.status().code(), Errc::kConflict);
  // Same generation, another file: refused too, naming both hashes.
  auto other = ApplyAdmin(Config(26, 2, "hX"), s.Get().view,
                          {AdminChange::Kind::kSetLimit, "", "exch", 28}, At(2));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), Errc::kConflict);
  EXPECT_NE(other.status().message().find("hX"), std::string::npos) << other.status().message();
  EXPECT_NE(other.status().message().find("h2"), std::string::npos) << other.status().message();
  EXPECT_EQ(s.keys.at(std::string(kMetaKey)).value, before);
  // A broker of generation 2 cannot go above ITS file's 30 either, before or
  // after lowering it (the ceiling is stored with the ledger).
  auto Set = [&](std::uint32_t limit) {
    const Store::Read read = s.Get();
    auto w = ApplyAdmin(Config(26, 2, "h2"), read.view,
                        {AdminChange::Kind::kSetLimit, "", "exch", limit}, At(3));
    if (w.ok()) {
      EXPECT_TRUE(s.Commit(read, *w));
    }
    return w.status();
  };
  Status above = Set(31);
  EXPECT_EQ(above.code(), Errc::kInvalidArgument);
  EXPECT_NE(above.message().find("ceiling 30"), std::string::npos) << above.message();
  ASSERT_TRUE(Set(25).ok());
  EXPECT_EQ(Set(40).code(), Errc::kInvalidArgument);
  EXPECT_EQ(Set(31).code(), Errc::kInvalidArgument);
  ASSERT_TRUE(Set(30).ok());
  auto limits = StoredLimits(Config(), s.Get().view);
  ASSERT_TRUE(limits.ok());
  EXPECT_EQ(limits->at(0), (std::pair<std::string, std::uint32_t>("exch", 30)));
}

// Review item 2: every write raises the meta key's sequence number by one, so
// a broker can tell a store that went back in time (restored from a backup),
// and RestartLearning makes that ledger learn again, keeping its state.
TEST(SharedLedger, EveryWriteRaisesTheSequenceAndRestartLearningRecoversARollback) {
  Store s = Running();
  EXPECT_EQ(StoredSequence(s.Get().view), std::nullopt);
  std::uint64_t request = 0;
  Renew(s, Config(), Req("a", 1, ++request, 0, 0, 6), At(0));
  EXPECT_EQ(StoredSequence(s.Get().view), std::optional<std::uint64_t>(1));
  s.learning = false;
  // Every committed write: seq + 1, meta put; a duplicate writes nothing.
  for (int i = 0; i < 5; ++i) {
    const Store::Read read = s.Get();
    const auto seq = StoredSequence(read.view);
    ++request;
    const RenewRequest req = Req("a", 1, request, 2, request - 1, 6);
    auto step = ApplyRenew(Config(), read.view, req, At(1 + i));
    ASSERT_TRUE(step.ok()) << step.status().message();
    ASSERT_FALSE(step->write.empty());
    EXPECT_TRUE(step->write.puts.contains(std::string(kMetaKey)));
    ASSERT_TRUE(s.Commit(read, step->write));
    EXPECT_EQ(StoredSequence(s.Get().view), *seq + 1);
    auto again = ApplyRenew(Config(), s.Get().view, req, At(1 + i));
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(again->write.empty());
  }
  const std::uint64_t writes_then = static_cast<std::uint64_t>(s.writes);
  EXPECT_EQ(StoredSequence(s.Get().view), writes_then);
  ++request;
  ASSERT_EQ(Amount(Renew(s, Config(), Req("a", 1, request, 2, request - 1, 6), At(10))), 6);
  const Store backup = s;  // etcdctl snapshot save
  // a is granted more after the backup; b renews, admin writes.
  Renew(s, Config(), Req("b", 1, 1, 0, 0, 6), At(11));
  Admin(s, AdminChange::Kind::kDrain, "b");
  const std::uint64_t highest = *StoredSequence(s.Get().view);
  // Restored: the ledger reads as valid but its sequence went back.
  s = backup;
  const Store::Read read = s.Get();
  ASSERT_LT(*StoredSequence(read.view), highest);
  auto w = RestartLearning(Config(), read.view, At(12), highest);
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_TRUE(w->start_learning);
  EXPECT_FALSE(w->warnings.empty());
  ASSERT_TRUE(s.Commit(read, *w));
  EXPECT_EQ(StoredSequence(s.Get().view), highest + 1);
  EXPECT_EQ(OwedOf(s, "a"), 6u);  // the stored state stays
  auto snap = SnapshotOf(Config(), s.Get().view, At(12));
  ASSERT_TRUE(snap.ok());
  EXPECT_TRUE(snap->learning);
  EXPECT_TRUE(Renew(s, Config(), Req("b", 1, 2, 0, 0, 6), At(13))->learning);
  // Without at_least: one above the stored one. No ledger: nothing to restart.
  auto plain = RestartLearning(Config(), s.Get().view, At(14));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(StoredSequence(StoreView{plain->puts, {}, false}),
            *StoredSequence(s.Get().view) + 1);
  EXPECT_EQ(RestartLearning(Config(), StoreView{}, At(14)).status().code(),
            Errc::kBrokerUnavailable);
  // A generation step continues the count (it is no rollback).
  const auto seq = *StoredSequence(s.Get().view);
  s.live.insert(Who("b", 2));
  Renew(s, Config(10, 2, "h2"), Req("b", 2, 1, 0, 0, 3, 2, "h2"), At(15));
  EXPECT_EQ(StoredSequence(s.Get().view), seq + 1);
}

// Review items 8 and 15: only keys of the exact shapes are ledger keys.
TEST(SharedLedger, KeysAreClassifiedByTheirExactShape) {
  EXPECT_EQ(ClassifyKey("ledger/meta"), KeyKind::kMeta);
  EXPECT_EQ(ClassifyKey("ledger/learning"), KeyKind::kLearning);
  EXPECT_EQ(ClassifyKey("ledger/target/exch-01.x_y"), KeyKind::kTarget);
  EXPECT_EQ(ClassifyKey(TargetKey(std::string(48, 'a'))), KeyKind::kTarget);
  EXPECT_EQ(ClassifyKey("live/ws1/3/77"), KeyKind::kLive);
  for (const char* other :
       {"", "ledger", "ledger/", "ledger/meta/", "ledger/metax", "ledger/learning/x",
        "ledger/target/", "ledger/target/x/ledger/meta", "ledger/target/a b", "ledger/target/é",
        "ledger/target/x/", "ledger/other", "live/ws1/3", "live/ws1/3/77/", "live/a/01/2",
        "limits/keeper", "x/ledger/meta"}) {
    EXPECT_EQ(ClassifyKey(other), KeyKind::kOther) << other;
  }
  EXPECT_EQ(ClassifyKey(TargetKey(std::string(49, 'a'))), KeyKind::kOther);
  EXPECT_TRUE(IsTargetName("exch01"));
  EXPECT_FALSE(IsTargetName("a/b"));
}

// A stray target key (a name the stored config does not list) never breaks a
// renew; a write deletes it. Keys of other shapes (a nested deployment's
// ledger, say) are never loaded, written or deleted.
TEST(SharedLedger, StrayKeysNeverBreakARenewAndOnlyStrayTargetKeysAreDeleted) {
  Store s = Running();
  Renew(s, Config(), Req("a", 1, 1, 0, 0, 6), At(0));
  s.learning = false;
  const std::string nested_meta = "ledger/target/x/ledger/meta";
  s.keys["ledger/target/gone"] = {"not even json", 1};
  s.keys[nested_meta] = {"{\"v\":1}", 1};
  s.keys["ledger/junk"] = {"junk", 1};
  ASSERT_EQ(Amount(Renew(s, Config(), Req("a", 1, 2, 0, 0, 6), At(1))), 6);
  EXPECT_FALSE(s.keys.contains("ledger/target/gone"));
  EXPECT_EQ(s.keys.at(nested_meta).value, "{\"v\":1}");
  EXPECT_TRUE(s.keys.contains("ledger/junk"));
  EXPECT_TRUE(SnapshotOf(Config(), s.Get().view, At(2)).ok());
  // Without meta, only a key of the target shape means a partly deleted ledger.
  Store empty = Running();
  empty.keys[nested_meta] = {"{\"v\":1}", 1};
  auto created = ApplyRenew(Config(), empty.Get().view, Req("a", 1, 1, 0, 0, 6), At(3));
  ASSERT_TRUE(created.ok()) << created.status().message();
  EXPECT_TRUE(created->write.start_learning);
}

}  // namespace
}  // namespace dsb::lease
