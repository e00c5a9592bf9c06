#include "broker/config/toml_reader.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

#include "broker/config/duration.h"
#include "broker/config/quote.h"

namespace dsb::config::internal {
namespace {

using std::chrono::nanoseconds;

constexpr std::size_t kMaxFileBytes = 1 << 20;

std::string FormatDouble(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", value);
  return buf;
}

// "a, b, c" for the list of allowed keys.
std::string JoinKeys(std::initializer_list<std::string_view> keys) {
  std::string out;
  for (std::string_view key : keys) {
    if (!out.empty()) out += ", ";
    out += key;
  }
  return out;
}

std::string CharsetText(std::string_view extra) {
  std::string out = "A-Z a-z 0-9";
  for (char c : extra) {
    out += ' ';
    out += c;
  }
  return out;
}

}  // namespace

ErrorSink::ErrorSink(std::string_view file) : file_(Printable(file)) {}

void ErrorSink::Add(std::string_view key, std::string_view reason) {
  if (!ok()) return;
  std::string message = file_;
  message += ": ";
  message += key;
  message += ": ";
  message += reason;
  status_ = Status(Errc::kConfig, std::move(message));
}

void ErrorSink::AddMessage(std::string message) {
  if (ok()) status_ = Status(Errc::kConfig, std::move(message));
}

void ErrorSink::Adopt(const Status& status) {
  if (ok() && !status.ok()) status_ = status;
}

std::optional<toml::table> ParseToml(std::string_view text, ErrorSink& sink) {
  try {
    return toml::parse(text, std::string_view(sink.file()));
  } catch (const toml::parse_error& e) {
    const toml::source_position& where = e.source().begin;
    sink.AddMessage(sink.file() + ":" + std::to_string(where.line) + ":" +
                    std::to_string(where.column) + ": invalid TOML: " + Printable(e.description()));
    return std::nullopt;
  }
}

Result<std::string> ReadConfigFile(const std::filesystem::path& file) {
  const std::string name = Printable(file.string());
  auto fail = [&name](std::string_view why) {
    return Status(Errc::kConfig, name + ": cannot read: " + std::string(why));
  };
  // Open first and check the open descriptor, so the checked file is the one read.
#ifdef _WIN32
  // A wide name (any Unicode path); Windows handles are not inherited by default.
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(_wfopen(file.c_str(), L"rb"), &std::fclose);
#else
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(file.c_str(), "rbe"), &std::fclose);
#endif
  if (!f) return fail(std::strerror(errno));
  struct stat st {};
  if (fstat(fileno(f.get()), &st) != 0) return fail(std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail("not a regular file");
  if (static_cast<std::size_t>(st.st_size) > kMaxFileBytes) {
    return fail("larger than 1 MiB; this is not a dsb config file");
  }
  std::string text;
  char buf[8192];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    text.append(buf, n);
    if (text.size() > kMaxFileBytes)
      return fail("larger than 1 MiB; this is not a dsb config file");
  }
  if (std::ferror(f.get())) return fail(std::strerror(errno));
  return text;
}

std::string Describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string " + Quote(node.as_string()->get());
    case toml::node_type::integer:
      return std::to_string(node.as_integer()->get());
    case toml::node_type::floating_point:
      return "a float " + FormatDouble(node.as_floating_point()->get());
    case toml::node_type::boolean:
      return node.as_boolean()->get() ? "a boolean true" : "a boolean false";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

bool IsName(std::string_view text, std::string_view extra, std::size_t max_len) {
  if (text.empty() || text.size() > max_len) return false;
  for (char c : text) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && extra.find(c) == std::string_view::npos) return false;
  }
  return true;
}

TableReader::TableReader(const toml::table& table, std::string path,
                         std::initializer_list<std::string_view> allowed, ErrorSink& sink)
    : table_(table), path_(std::move(path)), sink_(sink) {
  for (auto&& [key, value] : table_) {
    bool known = false;
    for (std::string_view name : allowed) known = known || key.str() == name;
    if (!known) {
      // The key is untrusted text: quote it unless it is a plain name.
      const std::string shown =
          IsName(key.str(), "_-", 64) ? std::string(key.str()) : Quote(key.str());
      sink_.Add(path_.empty() ? shown : path_ + "." + shown,
                "unknown key (allowed here: " + JoinKeys(allowed) + ")");
      return;
    }
  }
}

std::string TableReader::KeyPath(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

const toml::node* TableReader::Get(std::string_view key, Need need) {
  const toml::node* node = table_.get(key);
  if (node == nullptr && need == Need::kRequired) Fail(key, "required key is missing");
  return node;
}

std::optional<std::string> TableReader::String(std::string_view key, Need need) {
  const toml::node* node = Get(key, need);
  if (node == nullptr) return std::nullopt;
  if (!node->is_string()) {
    Fail(key, "must be a string, got " + Describe(*node));
    return std::nullopt;
  }
  const std::string& value = node->as_string()->get();
  if (value.find('\0') != std::string::npos) {
    Fail(key, "must not contain a NUL character");
    return std::nullopt;
  }
  return value;
}

std::optional<std::string> TableReader::Name(std::string_view key, Need need,
                                             std::string_view extra, std::size_t max_len) {
  const toml::node* node = Get(key, need);
  if (node == nullptr) return std::nullopt;
  const std::string rule =
      "must be 1-" + std::to_string(max_len) + " characters from " + CharsetText(extra) + ", got ";
  if (!node->is_string()) {
    Fail(key, rule + Describe(*node));
    return std::nullopt;
  }
  const std::string& value = node->as_string()->get();
  if (!IsName(value, extra, max_len)) {
    Fail(key, rule + Quote(value));
    return std::nullopt;
  }
  return value;
}

std::optional<std::int64_t> TableReader::Int(std::string_view key, Need need, std::int64_t lo,
                                             std::int64_t hi) {
  const toml::node* node = Get(key, need);
  if (node == nullptr) return std::nullopt;
  const std::string rule =
      "must be an integer between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got ";
  if (!node->is_integer()) {
    Fail(key, rule + Describe(*node));
    return std::nullopt;
  }
  const std::int64_t value = node->as_integer()->get();
  if (value < lo || value > hi) {
    Fail(key, rule + std::to_string(value));
    return std::nullopt;
  }
  return value;
}

std::optional<double> TableReader::Number(std::string_view key, Need need) {
  const toml::node* node = Get(key, need);
  if (node == nullptr) return std::nullopt;
  double value = 0;
  if (node->is_integer()) {
    value = static_cast<double>(node->as_integer()->get());
  } else if (node->is_floating_point()) {
    value = node->as_floating_point()->get();
  } else {
    Fail(key, "must be a number, got " + Describe(*node));
    return std::nullopt;
  }
  if (!std::isfinite(value)) {
    Fail(key, "must be a finite number, got " + Describe(*node));
    return std::nullopt;
  }
  return value;
}

std::optional<bool> TableReader::Bool(std::string_view key, Need need) {
  const toml::node* node = Get(key, need);
  if (node == nullptr) return std::nullopt;
  if (!node->is_boolean()) {
    Fail(key, "must be true or false, got " + Describe(*node));
    return std::nullopt;
  }
  return node->as_boolean()->get();
}

std::optional<nanoseconds> TableReader::Duration(std::string_view key, Need need, nanoseconds lo,
                                                 nanoseconds hi) {
  const toml::node* node = Get(key, need);
  if (node == nullptr) return std::nullopt;
  if (node->is_integer()) {
    Fail(key, "must be a duration string with a unit, got the integer " + Describe(*node) +
                  "; add a unit (ms, s, m or h), e.g. \"" + Describe(*node) + "s\"");
    return std::nullopt;
  }
  if (!node->is_string()) {
    Fail(key, "must be a duration string such as \"15s\", got " + Describe(*node));
    return std::nullopt;
  }
  Result<nanoseconds> value = ParseDuration(node->as_string()->get());
  if (!value.ok()) {
    Fail(key, value.status().message());
    return std::nullopt;
  }
  if (*value < lo || *value > hi) {
    Fail(key, "must be between " + FormatDuration(lo) + " and " + FormatDuration(hi) + ", got " +
                  Quote(node->as_string()->get()));
    return std::nullopt;
  }
  return *value;
}

std::optional<HostPort> TableReader::Address(std::string_view key, Need need,
                                             std::uint16_t min_port) {
  std::optional<std::string> text = String(key, need);
  if (!text) return std::nullopt;
  Result<HostPort> value = ParseHostPort(*text, min_port);
  if (!value.ok()) {
    Fail(key, value.status().message());
    return std::nullopt;
  }
  return *value;
}

std::optional<std::filesystem::path> TableReader::Path(std::string_view key, Need need,
                                                       const std::filesystem::path& base_dir) {
  std::optional<std::string> text = String(key, need);
  if (!text) return std::nullopt;
  if (text->empty()) {
    Fail(key, "must not be empty");
    return std::nullopt;
  }
  // From UTF-8 explicitly: a path from a std::string is read in the ANSI
  // code page on Windows (MinGW), which garbles C:\Zürich; POSIX: the same bytes.
  std::filesystem::path path(std::u8string(text->begin(), text->end()));
  if (path.is_relative() && !base_dir.empty()) path = base_dir / path;
  return path.lexically_normal();
}

const toml::table* TableReader::Table(std::string_view key, Need need) {
  const toml::node* node = Get(key, Need::kOptional);
  if (node == nullptr) {
    if (need == Need::kRequired) Fail(key, "required table [" + std::string(key) + "] is missing");
    return nullptr;
  }
  if (!node->is_table()) {
    Fail(key, "must be a table ([" + std::string(key) + "]), got " + Describe(*node));
    return nullptr;
  }
  return node->as_table();
}

const toml::array* TableReader::TableArray(std::string_view key, Need need) {
  const toml::node* node = Get(key, Need::kOptional);
  const toml::array* array = node != nullptr ? node->as_array() : nullptr;
  if (node == nullptr || (array != nullptr && array->empty())) {
    if (need == Need::kRequired) Fail(key, "at least one [[" + std::string(key) + "]] is required");
    return nullptr;
  }
  if (array == nullptr || !array->is_array_of_tables()) {
    Fail(key, "must be an array of tables ([[" + std::string(key) + "]]), got " + Describe(*node) +
                  (array != nullptr ? " with non-table elements" : ""));
    return nullptr;
  }
  return array;
}

std::optional<std::vector<std::string>> TableReader::StringArray(std::string_view key, Need need) {
  const toml::node* node = Get(key, need);
  if (node == nullptr) return std::nullopt;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    Fail(key, "must be an array of strings, got " + Describe(*node));
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    const std::string where = std::string(key) + "[" + std::to_string(i) + "]";
    if (!element.is_string()) {
      Fail(where, "must be a string, got " + Describe(element));
      return std::nullopt;
    }
    out.push_back(element.as_string()->get());
  }
  return out;
}

std::optional<std::vector<std::int64_t>> TableReader::IntArray(std::string_view key, Need need,
                                                               std::int64_t lo, std::int64_t hi) {
  const toml::node* node = Get(key, need);
  if (node == nullptr) return std::nullopt;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    Fail(key, "must be an array of integers, got " + Describe(*node));
    return std::nullopt;
  }
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    const std::string where = std::string(key) + "[" + std::to_string(i) + "]";
    const std::string rule = "must be an integer between " + std::to_string(lo) + " and " +
                             std::to_string(hi) + ", got ";
    if (!element.is_integer()) {
      Fail(where, rule + Describe(element));
      return std::nullopt;
    }
    const std::int64_t value = element.as_integer()->get();
    if (value < lo || value > hi) {
      Fail(where, rule + std::to_string(value));
      return std::nullopt;
    }
    out.push_back(value);
  }
  return out;
}

std::vector<TargetConfig> ReadTargets(TableReader& root) {
  ErrorSink& sink = root.sink();
  const toml::array* array = root.TableArray("targets", Need::kRequired);
  if (array == nullptr) return {};
  std::vector<TargetConfig> targets;
  std::map<std::string, std::size_t, std::less<>> index_of_name;
  for (std::size_t i = 0; i < array->size(); ++i) {
    TableReader r(*array->get(i)->as_table(), "targets[" + std::to_string(i) + "]",
                  {"name", "limit", "reserve", "quarantine", "slots", "release_cooldown", "discover",
                   "limit_increase_after", "limit_command", "limit_poll", "limit_command_timeout"},
                  sink);
    TargetConfig t;
    t.name = r.Name("name", Need::kRequired, "._-", 48).value_or("");
    t.limit = static_cast<int>(r.Int("limit", Need::kRequired, 1, 65535).value_or(1));
    t.reserve = static_cast<int>(r.Int("reserve", Need::kOptional, 0, 65535).value_or(0));
    if (t.reserve >= t.limit) {
      r.Fail("reserve", "must be less than limit (" + std::to_string(t.limit) + "), got " +
                            std::to_string(t.reserve));
    }
    t.quarantine = r.Duration("quarantine", Need::kOptional, nanoseconds(0), std::chrono::hours(24))
                       .value_or(nanoseconds(0));
    t.release_cooldown =
        r.Duration("release_cooldown", Need::kOptional, nanoseconds(0), std::chrono::hours(1))
            .value_or(nanoseconds(0));
    t.discover = r.Bool("discover", Need::kOptional).value_or(true);
    t.limit_increase_after = r.Duration("limit_increase_after", Need::kOptional, nanoseconds(0),
                                        std::chrono::hours(24 * 7))
                                 .value_or(nanoseconds(0));
    if (t.limit_increase_after.count() > 0 && t.limit_increase_after < std::chrono::seconds(1)) {
      r.Fail("limit_increase_after", "must be \"0s\" (off) or at least \"1s\"");
    }
    if (r.Has("limit_command")) {
      t.limit_command = r.String("limit_command", Need::kOptional).value_or("");
      if (t.limit_command.empty() ||
          t.limit_command.find_first_not_of(" \t") == std::string::npos) {
        r.Fail("limit_command", "must be a non-empty shell command (or leave the key out)");
      }
    }
    t.limit_poll = r.Duration("limit_poll", Need::kOptional, std::chrono::seconds(1),
                              std::chrono::hours(24))
                       .value_or(t.limit_poll);
    t.limit_command_timeout =
        r.Duration("limit_command_timeout", Need::kOptional, std::chrono::milliseconds(100),
                   std::chrono::minutes(10))
            .value_or(t.limit_command_timeout);
    if (t.limit_command.empty() && (r.Has("limit_poll") || r.Has("limit_command_timeout"))) {
      r.Fail(r.Has("limit_poll") ? "limit_poll" : "limit_command_timeout",
             "has no effect without limit_command");
    }
    t.slots =
        static_cast<int>(r.Int("slots", Need::kOptional, 1, 65535).value_or(std::max(t.limit, 64)));
    if (t.slots < t.limit) {
      r.Fail("slots", "must be at least limit (" + std::to_string(t.limit) + "), got " +
                          std::to_string(t.slots));
    }
    if (auto [it, inserted] = index_of_name.emplace(t.name, i); !inserted) {
      r.Fail("name", "duplicate target name " + Quote(t.name) + " (also targets[" +
                         std::to_string(it->second) + "])");
    }
    if (!sink.ok()) return {};
    targets.push_back(std::move(t));
  }
  return targets;
}

}  // namespace dsb::config::internal
