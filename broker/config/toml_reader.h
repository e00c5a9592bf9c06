// Internal to dsb::config: typed, range-checked reads of TOML tables with errors that name
// the file, the full key path and the reason. Includes toml++: include only from .cc files.
#ifndef DSB_BROKER_CONFIG_TOML_READER_H_
#define DSB_BROKER_CONFIG_TOML_READER_H_

#include <toml++/toml.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/config/cluster_config.h"
#include "common/status.h"

namespace dsb::config::internal {

// Keeps the first error found in one file. Later errors are dropped: a value that failed
// to read comes back empty and checks that depend on it would only add noise.
class ErrorSink {
 public:
  // `file` is shown with non-printable bytes escaped.
  explicit ErrorSink(std::string_view file);

  // Records "<file>: <key>: <reason>" unless an error is already recorded.
  void Add(std::string_view key, std::string_view reason);
  // Records `message` as is (already names the file) unless an error is already recorded.
  void AddMessage(std::string message);
  // Adopts a failed Status (e.g. from the cluster file) unless an error is already recorded.
  void Adopt(const Status& status);

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  const std::string& file() const { return file_; }

 private:
  std::string file_;
  Status status_;
};

enum class Need { kOptional, kRequired };

// Parses TOML text. Success: the root table. Failure: records
// "<file>:<line>:<column>: invalid TOML: <what>" in `sink` and returns nullopt.
std::optional<toml::table> ParseToml(std::string_view text, ErrorSink& sink);

// Reads a whole config file. Failure (Errc::kConfig): missing, unreadable, not a regular file
// (a FIFO would block), or over 1 MiB.
Result<std::string> ReadConfigFile(const std::filesystem::path& file);

// "a string", "an integer -3", ... for "got ..." in messages.
std::string Describe(const toml::node& node);

// true when `text` is 1..max_len bytes, each alphanumeric ASCII or one of `extra`.
bool IsName(std::string_view text, std::string_view extra, std::size_t max_len);

// Reads one table. Each accessor names its key by the full path ("targets[1].limit"),
// records an error in the sink for a missing required key, a wrong type or a value out of
// range, and then returns an empty value.
class TableReader {
 public:
  // `path` is the table's own key path ("" for the root). Records an error for the first
  // key of `table` that is not in `allowed` (so typos are reported before "missing" errors).
  TableReader(const toml::table& table, std::string path,
              std::initializer_list<std::string_view> allowed, ErrorSink& sink);

  // The full key path of `key` in this table.
  std::string KeyPath(std::string_view key) const;
  bool Has(std::string_view key) const { return table_.contains(key); }
  ErrorSink& sink() { return sink_; }
  // Records "<file>: <path.key>: <reason>".
  void Fail(std::string_view key, std::string_view reason) { sink_.Add(KeyPath(key), reason); }

  // A string without NUL bytes.
  std::optional<std::string> String(std::string_view key, Need need);
  // A string made of IsName(extra, max_len) characters.
  std::optional<std::string> Name(std::string_view key, Need need, std::string_view extra,
                                  std::size_t max_len);
  // An integer in [lo, hi].
  std::optional<std::int64_t> Int(std::string_view key, Need need, std::int64_t lo,
                                  std::int64_t hi);
  // A finite number; integers are accepted. The range is checked by the caller.
  std::optional<double> Number(std::string_view key, Need need);
  // true or false.
  std::optional<bool> Bool(std::string_view key, Need need);
  // A duration string ("15s") in [lo, hi].
  std::optional<std::chrono::nanoseconds> Duration(std::string_view key, Need need,
                                                   std::chrono::nanoseconds lo,
                                                   std::chrono::nanoseconds hi);
  // A "host:port" string with port >= min_port.
  std::optional<HostPort> Address(std::string_view key, Need need, std::uint16_t min_port);
  // A path string; relative ones are resolved against `base_dir` when it is non-empty.
  std::optional<std::filesystem::path> Path(std::string_view key, Need need,
                                            const std::filesystem::path& base_dir);
  // A sub-table ([key]).
  const toml::table* Table(std::string_view key, Need need);
  // An array of tables ([[key]]); an empty array counts as missing.
  const toml::array* TableArray(std::string_view key, Need need);
  // An array of strings.
  std::optional<std::vector<std::string>> StringArray(std::string_view key, Need need);
  // An array of integers in [lo, hi].
  std::optional<std::vector<std::int64_t>> IntArray(std::string_view key, Need need,
                                                    std::int64_t lo, std::int64_t hi);

 private:
  const toml::node* Get(std::string_view key, Need need);

  const toml::table& table_;
  std::string path_;
  ErrorSink& sink_;
};

// Reads the [[targets]] array of `root` (key "targets"): at least one, unique names.
// Returns an empty vector after recording an error.
std::vector<TargetConfig> ReadTargets(TableReader& root);

}  // namespace dsb::config::internal

#endif  // DSB_BROKER_CONFIG_TOML_READER_H_
