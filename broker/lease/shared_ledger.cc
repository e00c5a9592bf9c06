#include "broker/lease/shared_ledger.h"

#include <algorithm>
#include <charconv>

#include <boost/json.hpp>

namespace dsb::lease {

namespace json = boost::json;

namespace {

constexpr std::int64_t kValueVersion = 1;
// The meta key's write sequence number (see StoredSequence).
constexpr std::string_view kSeqField = "seq";
// The cluster file's rule for target names (config::IsName(name, "._-", 48)).
constexpr std::size_t kMaxTargetName = 48;

bool IsIdChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

std::optional<std::uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 20 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

Status BadKey(std::string_view key, const std::string& problem) {
  return {Errc::kProtocol, "stored key '" + std::string(key) + "' " + problem};
}

// One stored value: a JSON object with "v" = kValueVersion.
Result<json::object> ParseValue(std::string_view key, const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return BadKey(key, "is not JSON (" + ec.message() + ")");
  if (!v.is_object()) return BadKey(key, "is not a JSON object");
  const json::value* version = v.get_object().if_contains("v");
  if (version == nullptr || !version->is_int64() || version->get_int64() != kValueVersion) {
    return BadKey(key, "has no \"v\": " + std::to_string(kValueVersion) +
                           " (written by another version of dsb?)");
  }
  return std::move(v.get_object());
}

std::string Encode(const json::object& fields) {
  json::object o;
  o["v"] = kValueVersion;
  for (const auto& kv : fields) o[kv.key()] = kv.value();
  return json::serialize(o);
}

// The ledger as stored: key -> value text; `seq` goes into the meta key.
std::map<std::string, std::string> Values(const Ledger& ledger, std::uint64_t seq) {
  std::map<std::string, std::string> out;
  const json::object state = ledger.SaveState();
  json::object meta = state.at("meta").get_object();
  meta[kSeqField] = seq;
  out[std::string(kMetaKey)] = Encode(meta);
  const json::array& targets = state.at("targets").get_array();
  for (std::size_t t = 0; t < targets.size(); ++t) {
    out[TargetKey(ledger.config().targets[t].name)] = Encode(targets[t].get_object());
  }
  return out;
}

// The store's view of liveness, as Ledger's oracle (C2). `self` (the caller of
// a renew or goodbye) is alive: its transaction commits only while its own
// live key exists.
LedgerConfig WithLiveness(const LedgerConfig& mine, const StoreView& read,
                          std::optional<LiveInstance> self) {
  LedgerConfig c = mine;
  c.persist = nullptr;  // the acceptance is stored with the ledger, same transaction
  const std::set<LiveInstance>* live = &read.live;
  c.liveness = [live, self = std::move(self)](std::string_view id, std::uint64_t epoch,
                                               std::uint64_t instance) {
    LiveInstance who{std::string(id), epoch, instance};
    return (self && who == *self) || live->contains(who);
  };
  return c;
}

// The stored ledger, or nullopt when the store holds none.
Result<std::optional<Ledger>> LoadStored(const LedgerConfig& config, const StoreView& read) {
  const auto meta_it = read.values.find(std::string(kMetaKey));
  if (meta_it == read.values.end()) {
    for (const auto& [key, value] : read.values) {
      if (ClassifyKey(key) == KeyKind::kTarget) {
        return BadKey(key, "is present without '" + std::string(kMetaKey) +
                               "' (a partly deleted ledger: delete the prefix's ledger/ keys "
                               "to start a new one)");
      }
    }
    return std::optional<Ledger>();
  }
  auto meta = ParseValue(kMetaKey, meta_it->second);
  if (!meta.ok()) return meta.status();
  // The write sequence number is the store's, not the ledger's state.
  const json::value* seq = meta->if_contains(kSeqField);
  if (seq == nullptr || !(seq->is_uint64() || (seq->is_int64() && seq->get_int64() >= 0))) {
    return BadKey(kMetaKey, "has no \"seq\" (a whole number >= 0)");
  }
  meta->erase(kSeqField);
  const json::value* names = meta->if_contains("targets");
  if (names == nullptr || !names->is_array()) {
    return BadKey(kMetaKey, "has no \"targets\" array");
  }
  std::vector<std::string> target_names;
  json::array targets;
  for (const auto& n : names->get_array()) {
    if (!n.is_string()) return BadKey(kMetaKey, "names a target by something else than a string");
    const std::string key = TargetKey(n.get_string());
    const auto it = read.values.find(key);
    if (it == read.values.end()) {
      return BadKey(key, "is missing ('" + std::string(kMetaKey) + "' names target '" +
                             std::string(n.get_string()) + "')");
    }
    auto value = ParseValue(key, it->second);
    if (!value.ok()) return value.status();
    target_names.emplace_back(n.get_string());
    targets.emplace_back(std::move(*value));
  }
  json::object state;
  state["v"] = 1;
  state["meta"] = std::move(*meta);
  state["targets"] = std::move(targets);
  auto ledger = Ledger::LoadState(config, state);
  if (!ledger.ok()) {
    // Name the key the bad field came from: "targets[i]..." is target i's key.
    const std::string& msg = ledger.status().message();
    std::string key(kMetaKey);
    const std::string marker = "field 'targets[";
    if (const auto at = msg.find(marker); at != std::string::npos) {
      const auto index = ParseDecimal(
          std::string_view(msg).substr(at + marker.size(),
                                       msg.find(']', at) - (at + marker.size())));
      if (index && *index < target_names.size()) key = TargetKey(target_names[*index]);
    }
    return Status{Errc::kProtocol, "stored key '" + key + "': " + msg};
  }
  return std::optional<Ledger>(std::move(*ledger));
}

// The keys whose value changed from `read` to `ledger`, and the deletes. A
// write that changes anything also puts meta with the sequence number raised
// (StoredSequence); `at_least` raises it further (RestartLearning).
void Diff(const StoreView& read, Ledger& ledger, StoreWrite& write, std::uint64_t at_least = 0) {
  const std::uint64_t seq = StoredSequence(read).value_or(0);
  auto values = Values(ledger, seq);
  for (const auto& [key, value] : values) {
    const auto it = read.values.find(key);
    if (it == read.values.end() || it->second != value) write.puts[key] = value;
  }
  for (const auto& [key, value] : read.values) {
    // Only keys of the exact ledger shapes: a stray or nested deployment's key
    // (kOther) is never touched.
    const KeyKind kind = ClassifyKey(key);
    if ((kind == KeyKind::kMeta || kind == KeyKind::kTarget) && !values.contains(key)) {
      write.deletes.push_back(key);
    }
  }
  if (!write.empty()) {
    const std::uint64_t next = std::max(seq, at_least) + 1;
    write.puts[std::string(kMetaKey)] = Values(ledger, next).at(std::string(kMetaKey));
  }
  for (auto& w : ledger.TakeWarnings()) write.warnings.push_back(std::move(w));
  for (auto& n : ledger.TakeNotices()) write.notices.push_back(std::move(n));
}

// R1/R3 for operators and limit keepers: only a broker running the stored
// ledger's own file may change it (an older file's keeper would raise a limit
// the newer file lowered: S).
Status SameFile(const LedgerConfig& mine, const Ledger& stored) {
  const LedgerConfig& c = stored.config();
  if (mine.generation != c.generation) {
    return {Errc::kConflict,
            "this broker runs cluster file generation " + std::to_string(mine.generation) +
                ", the shared ledger generation " + std::to_string(c.generation) +
                ": only a broker of generation " + std::to_string(c.generation) +
                " may change it"};
  }
  if (!mine.file_hash.empty() && !c.file_hash.empty() && mine.file_hash != c.file_hash) {
    return {Errc::kConflict, "this broker's cluster file (hash " + mine.file_hash +
                                 ") is not the shared ledger's (generation " +
                                 std::to_string(c.generation) + ", hash " + c.file_hash + ")"};
  }
  return Status::Ok();
}

Status NoLedger() {
  return {Errc::kBrokerUnavailable,
          "no lease ledger in the store yet (no broker of this deployment has renewed)"};
}

// The stored ledger, for what needs one and learns nothing of liveness from
// the caller (admin changes, a restart of learning, the leases view, the
// stored limits). Failure: kConfig when `mine` is not a valid config, the
// store's bad key (LoadStored), or NoLedger() when the store holds none.
Result<Ledger> StoredLedger(const LedgerConfig& mine, const StoreView& read) {
  if (Status valid = Ledger::Validate(mine); !valid.ok()) {
    return Status{Errc::kConfig, valid.message()};
  }
  auto stored = LoadStored(WithLiveness(mine, read, std::nullopt), read);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) return NoLedger();
  return std::move(**stored);
}

}  // namespace

std::optional<std::uint64_t> StoredSequence(const StoreView& read) {
  const auto it = read.values.find(std::string(kMetaKey));
  if (it == read.values.end()) return std::nullopt;
  boost::system::error_code ec;
  const json::value v = json::parse(it->second, ec);
  if (ec || !v.is_object()) return 0;
  const json::value* seq = v.get_object().if_contains(kSeqField);
  if (seq != nullptr && seq->is_uint64()) return seq->get_uint64();
  if (seq != nullptr && seq->is_int64() && seq->get_int64() >= 0) {
    return static_cast<std::uint64_t>(seq->get_int64());
  }
  return 0;
}

bool IsTargetName(std::string_view name) {
  return !name.empty() && name.size() <= kMaxTargetName &&
         std::all_of(name.begin(), name.end(), IsIdChar);
}

KeyKind ClassifyKey(std::string_view suffix) {
  if (suffix == kMetaKey) return KeyKind::kMeta;
  if (suffix == kLearningKey) return KeyKind::kLearning;
  if (suffix.starts_with(kTargetKeyPrefix)) {
    return IsTargetName(suffix.substr(kTargetKeyPrefix.size())) ? KeyKind::kTarget
                                                                 : KeyKind::kOther;
  }
  if (ParseLiveKey(suffix)) return KeyKind::kLive;
  return KeyKind::kOther;
}

std::string TargetKey(std::string_view target) {
  return std::string(kTargetKeyPrefix) + std::string(target);
}

std::string LiveKey(const LiveInstance& who) {
  return std::string(kLiveKeyPrefix) + who.broker_id + "/" + std::to_string(who.epoch) + "/" +
         std::to_string(who.instance);
}

std::optional<LiveInstance> ParseLiveKey(std::string_view suffix) {
  if (!suffix.starts_with(kLiveKeyPrefix)) return std::nullopt;
  suffix.remove_prefix(kLiveKeyPrefix.size());
  const auto a = suffix.find('/');
  if (a == std::string_view::npos) return std::nullopt;
  const auto b = suffix.find('/', a + 1);
  if (b == std::string_view::npos) return std::nullopt;
  const std::string_view id = suffix.substr(0, a);
  if (id.empty() || !std::all_of(id.begin(), id.end(), IsIdChar)) return std::nullopt;
  const auto epoch = ParseDecimal(suffix.substr(a + 1, b - a - 1));
  const auto instance = ParseDecimal(suffix.substr(b + 1));
  if (!epoch || !instance) return std::nullopt;
  return LiveInstance{std::string(id), *epoch, *instance};
}

Result<RenewStep> ApplyRenew(const LedgerConfig& mine, const StoreView& read,
                             const RenewRequest& request, TimePoint now) {
  if (Status valid = Ledger::Validate(mine); !valid.ok()) {
    return Status{Errc::kConfig, valid.message()};
  }
  const LedgerConfig config =
      WithLiveness(mine, read, LiveInstance{request.broker_id, request.epoch, request.instance});
  auto stored = LoadStored(config, read);
  if (!stored.ok()) return stored.status();
  RenewStep step;
  std::optional<Ledger> ledger;
  const bool c3 = mine.switches.c3_learning;
  if (!stored->has_value()) {
    // C3: a first start or a wiped store. Grants of a ledger that was here
    // before lapse within D + H of its last write; learning covers that.
    ledger.emplace(config, now);
    ledger->SetLearning(c3);
    step.write.start_learning = c3;
  } else if (mine.generation > (*stored)->config().generation) {
    // R3: the sender runs a newer cluster file. Its ledger replaces the stored
    // one in this transaction (the compare-and-swap is the old ledger's
    // confirmed stop), adopts its acceptances (R2) and learns (C3).
    const std::uint64_t old_generation = (*stored)->config().generation;
    const std::vector<AcceptanceRecord> records = (*stored)->Records();
    ledger.emplace(config, now);
    ledger->AdoptRecords(records, now);
    // A stored limit below the new file's (discovered from the server's
    // refusals, or set by an operator) stays: the server's real limit did not
    // rise with the file (S). Raising it is the limit keeper's job
    // (set-limit), never a side effect of a new file.
    for (const auto& old : (*stored)->config().targets) {
      for (const auto& now_target : ledger->config().targets) {
        if (now_target.name != old.name || old.limit == 0 || now_target.limit == 0 ||
            old.limit >= now_target.limit) {
          continue;
        }
        // Not below the new file's reserved base (r + allowances): pool 0 then.
        const std::uint32_t base = now_target.limit - now_target.pool;
        const std::uint32_t limit = std::max(old.limit, base);
        if (ledger->SetLimit(old.name, limit, now).ok()) {
          step.write.warnings.push_back("target '" + old.name + "' keeps its stored limit " +
                                        std::to_string(limit) + " (the new file says " +
                                        std::to_string(now_target.limit) + ")");
        }
        break;
      }
    }
    ledger->SetLearning(c3);
    step.write.start_learning = c3;
    step.write.warnings.push_back(
        "the shared ledger moves from cluster file generation " + std::to_string(old_generation) +
        " to generation " + std::to_string(mine.generation) + " (broker '" + request.broker_id +
        "' runs it): acceptances carried over, learning for (D + H)(1 + eps)");
  } else {
    ledger = std::move(**stored);
    ledger->SetLearning(read.learning);
  }
  auto reply = ledger->OnRequest(now, request);
  if (!reply.ok()) return reply.status();
  step.reply = std::move(*reply);
  Diff(read, *ledger, step.write);
  return step;
}

Result<StoreWrite> ApplyGoodbye(const LedgerConfig& mine, const StoreView& read,
                                const Goodbye& goodbye, TimePoint now) {
  if (Status valid = Ledger::Validate(mine); !valid.ok()) {
    return Status{Errc::kConfig, valid.message()};
  }
  auto stored = LoadStored(
      WithLiveness(mine, read, LiveInstance{goodbye.broker_id, goodbye.epoch, goodbye.instance}),
      read);
  if (!stored.ok()) return stored.status();
  StoreWrite write;
  if (!stored->has_value()) return write;
  Ledger& ledger = **stored;
  ledger.SetLearning(read.learning);
  if (!ledger.OnGoodbye(now, goodbye)) return write;
  Diff(read, ledger, write);
  return write;
}

Result<StoreWrite> ApplyAdmin(const LedgerConfig& mine, const StoreView& read,
                              const AdminChange& change, TimePoint now) {
  auto stored = StoredLedger(mine, read);
  if (!stored.ok()) return stored.status();
  Ledger& ledger = *stored;
  if (Status same = SameFile(mine, ledger); !same.ok()) return same;
  ledger.SetLearning(read.learning);
  Status done = Status::Ok();
  switch (change.kind) {
    case AdminChange::Kind::kRevoke: done = ledger.Revoke(change.broker_id, now); break;
    case AdminChange::Kind::kDrain: done = ledger.Drain(change.broker_id, now); break;
    case AdminChange::Kind::kResume: done = ledger.Resume(change.broker_id, now); break;
    case AdminChange::Kind::kRevokeTarget:
      done = ledger.RevokeTarget(change.broker_id, change.target, now);
      break;
    case AdminChange::Kind::kForceRevoke: done = ledger.ForceRevoke(change.broker_id, now); break;
    case AdminChange::Kind::kSetLimit: done = ledger.SetLimit(change.target, change.limit, now); break;
  }
  if (!done.ok()) return done;
  StoreWrite write;
  Diff(read, ledger, write);
  return write;
}

Result<StoreWrite> RestartLearning(const LedgerConfig& mine, const StoreView& read,
                                   TimePoint /*now*/, std::uint64_t at_least_seq) {
  auto stored = StoredLedger(mine, read);
  if (!stored.ok()) return stored.status();
  Ledger& ledger = *stored;
  ledger.SetLearning(true);
  StoreWrite write;
  write.start_learning = true;
  write.warnings.push_back("the shared ledger (generation " +
                           std::to_string(ledger.config().generation) +
                           ") learns again for (D + H)(1 + eps): the store may have gone back in "
                           "time (restored from a backup?)");
  Diff(read, ledger, write, at_least_seq);
  return write;
}

Result<LedgerSnapshot> SnapshotOf(const LedgerConfig& mine, const StoreView& read, TimePoint now) {
  auto stored = StoredLedger(mine, read);
  if (!stored.ok()) return stored.status();
  stored->SetLearning(read.learning);
  return stored->Snapshot(now);
}

Result<std::vector<std::pair<std::string, std::uint32_t>>> StoredLimits(const LedgerConfig& mine,
                                                                        const StoreView& read) {
  auto stored = StoredLedger(mine, read);
  if (!stored.ok()) return stored.status();
  std::vector<std::pair<std::string, std::uint32_t>> out;
  for (const auto& t : stored->config().targets) out.emplace_back(t.name, t.limit);
  return out;
}

}  // namespace dsb::lease
