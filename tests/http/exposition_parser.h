// A strict reader of the Prometheus text exposition format 0.0.4 for tests:
// it accepts what the broker must write and refuses anything loose, so a test
// that reads a scrape also checks its form. Rules (stricter than Prometheus
// where the broker has no reason to differ):
//  - every line ends in '\n'; no blank lines, no other comments;
//  - a family is "# HELP name text", then "# TYPE name counter|gauge", then
//    its samples, whose metric name is the family's; a family appears once;
//  - labels are name="value" separated by ',', with the escapes \\ \" \n
//    only; a label name appears once per sample; a series (name + labels)
//    appears once;
//  - the value is a number (std::from_chars), NaN, +Inf or -Inf; no timestamp;
//  - a counter's name ends in _total and its values are >= 0.
#ifndef DSB_TESTS_HTTP_EXPOSITION_PARSER_H_
#define DSB_TESTS_HTTP_EXPOSITION_PARSER_H_

#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace dsb::testing {

struct ExpoSample {
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct ExpoFamily {
  std::string name;
  std::string type;  // "counter" or "gauge"
  std::string help;  // unescaped
  std::vector<ExpoSample> samples;
};

class Exposition {
 public:
  // Parses `text`. ok() false: error() names the line and what is wrong.
  explicit Exposition(std::string_view text) { error_ = Parse(text); }

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const std::vector<ExpoFamily>& families() const { return families_; }
  const ExpoFamily* Find(std::string_view name) const {
    for (const ExpoFamily& f : families_) {
      if (f.name == name) return &f;
    }
    return nullptr;
  }
  // The value of the series with exactly `labels`; nullopt if absent.
  std::optional<double> Value(std::string_view name,
                              const std::map<std::string, std::string>& labels = {}) const {
    const ExpoFamily* f = Find(name);
    if (f == nullptr) return std::nullopt;
    for (const ExpoSample& s : f->samples) {
      if (s.labels == labels) return s.value;
    }
    return std::nullopt;
  }

 private:
  static bool ValidName(std::string_view n, bool colon) {
    if (n.empty()) return false;
    for (std::size_t i = 0; i < n.size(); ++i) {
      const char c = n[i];
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                      (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
      if (!ok) return false;
    }
    return true;
  }
  static std::optional<double> ParseValue(std::string_view v) {
    if (v == "NaN") return NAN;
    if (v == "+Inf") return INFINITY;
    if (v == "-Inf") return -INFINITY;
    double d = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
    if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
    return d;
  }
  static std::string Unescape(std::string_view s, bool quotes, bool* ok) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\\') {
        out += s[i];
        continue;
      }
      if (++i == s.size()) {
        *ok = false;
        return out;
      }
      if (s[i] == '\\') {
        out += '\\';
      } else if (s[i] == 'n') {
        out += '\n';
      } else if (quotes && s[i] == '"') {
        out += '"';
      } else {
        *ok = false;
      }
    }
    return out;
  }

  std::string Parse(std::string_view text) {
    if (text.empty()) return "empty exposition";
    if (text.back() != '\n') return "the last line does not end in a newline";
    std::set<std::string> series;
    ExpoFamily* current = nullptr;
    std::string pending_help_name;
    std::string pending_help;
    int number = 0;
    while (!text.empty()) {
      const std::size_t nl = text.find('\n');
      const std::string_view line = text.substr(0, nl);
      text.remove_prefix(nl + 1);
      ++number;
      const std::string where = "line " + std::to_string(number) + " '" + std::string(line) + "': ";
      if (line.empty()) return where + "blank line";
      if (line.starts_with("# HELP ")) {
        std::string_view rest = line.substr(7);
        const std::size_t sp = rest.find(' ');
        if (sp == std::string_view::npos) return where + "HELP without text";
        pending_help_name = std::string(rest.substr(0, sp));
        if (!ValidName(pending_help_name, true)) return where + "bad metric name";
        if (Find(pending_help_name) != nullptr) return where + "family seen before";
        bool ok = true;
        pending_help = Unescape(rest.substr(sp + 1), false, &ok);
        if (!ok) return where + "bad escape in HELP";
        continue;
      }
      if (line.starts_with("# TYPE ")) {
        std::string_view rest = line.substr(7);
        const std::size_t sp = rest.find(' ');
        if (sp == std::string_view::npos) return where + "TYPE without type";
        const std::string name(rest.substr(0, sp));
        const std::string type(rest.substr(sp + 1));
        if (name != pending_help_name) return where + "TYPE not right after its HELP";
        if (type != "counter" && type != "gauge") return where + "type not counter or gauge";
        if (type == "counter" && !name.ends_with("_total")) return where + "counter without _total";
        families_.push_back({name, type, pending_help, {}});
        current = &families_.back();
        pending_help_name.clear();
        continue;
      }
      if (line.starts_with("#")) return where + "unexpected comment";
      if (current == nullptr || !pending_help_name.empty()) return where + "sample outside a family";
      std::size_t i = 0;
      while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
      const std::string_view name = line.substr(0, i);
      if (name != current->name) return where + "sample of another family than " + current->name;
      ExpoSample s;
      if (i < line.size() && line[i] == '{') {
        ++i;
        while (true) {
          const std::size_t eq = line.find('=', i);
          if (eq == std::string_view::npos) return where + "label without '='";
          const std::string key(line.substr(i, eq - i));
          if (!ValidName(key, false) || key.starts_with("__")) return where + "bad label name";
          if (eq + 1 >= line.size() || line[eq + 1] != '"') return where + "label value not quoted";
          std::size_t j = eq + 2;
          while (j < line.size() && line[j] != '"') j += line[j] == '\\' ? 2u : 1u;
          if (j >= line.size()) return where + "unterminated label value";
          bool ok = true;
          const std::string value = Unescape(line.substr(eq + 2, j - eq - 2), true, &ok);
          if (!ok) return where + "bad escape in a label value";
          if (!s.labels.emplace(key, value).second) return where + "label repeated";
          i = j + 1;
          if (i < line.size() && line[i] == ',') {
            ++i;
            continue;
          }
          if (i < line.size() && line[i] == '}') {
            ++i;
            break;
          }
          return where + "expected ',' or '}' after a label";
        }
      }
      if (i >= line.size() || line[i] != ' ') return where + "no space before the value";
      const std::optional<double> value = ParseValue(line.substr(i + 1));
      if (!value) return where + "bad value (or a timestamp)";
      if (current->type == "counter" && !(*value >= 0)) return where + "negative counter";
      s.value = *value;
      const std::string key = std::string(line.substr(0, i));
      if (!series.insert(key).second) return where + "series repeated";
      current->samples.push_back(std::move(s));
    }
    if (!pending_help_name.empty()) return "HELP of " + pending_help_name + " without TYPE";
    return "";
  }

  std::vector<ExpoFamily> families_;
  std::string error_;
};

}  // namespace dsb::testing

#endif  // DSB_TESTS_HTTP_EXPOSITION_PARSER_H_
