// What the etcd ledger (etcd_ledger.cc) and the etcd limits (etcd_limits.cc)
// share about the keys they read under a deployment's prefix (the key names
// themselves are lease/shared_ledger.h's).
#ifndef DSB_BROKER_ETCD_PREFIX_KEYS_H_
#define DSB_BROKER_ETCD_PREFIX_KEYS_H_

#include <optional>
#include <string>
#include <string_view>

namespace dsb::etcd {

// Every key of the stored ledger starts so (lease::kMetaKey, kTargetKeyPrefix,
// kLearningKey): a key so named that lease::ClassifyKey does not know is a
// stray one, worth a log line.
inline constexpr std::string_view kLedgerKeys = "ledger/";

// `key` without the deployment's `prefix` (what the ledger's key names are
// relative to). nullopt: `key` is not under `prefix` (a range or watch by
// prefix gives only such keys; checked anyway, so a wrong answer is skipped,
// never misread).
inline std::optional<std::string> SuffixUnder(std::string_view prefix, std::string_view key) {
  if (!key.starts_with(prefix)) return std::nullopt;
  return std::string(key.substr(prefix.size()));
}

}  // namespace dsb::etcd

#endif  // DSB_BROKER_ETCD_PREFIX_KEYS_H_
