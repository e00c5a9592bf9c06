#include "broker/metrics/exposition.h"

#include <charconv>
#include <cmath>

#include "common/check.h"

namespace dsb::metrics {
namespace {

bool NameChar(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (alpha || (colon && c == ':')) return true;
  return !first && c >= '0' && c <= '9';
}

bool ValidName(std::string_view name, bool colon) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!NameChar(name[i], i == 0, colon)) return false;
  }
  return true;
}

}  // namespace

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // Shortest round-trip form; integral values print without a fraction.
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  DSB_CHECK(ec == std::errc(), "to_chars of a double failed");
  return std::string(buf, end);
}

void Exposition::Family(std::string name, Type type, std::string help) {
  DSB_CHECK(ValidName(name, /*colon=*/true), "metric name '%s' is not valid", name.c_str());
  DSB_CHECK(type != Type::kCounter || name.ends_with("_total"),
            "counter '%s' must end in _total", name.c_str());
  for (const Fam& f : families_) {
    DSB_CHECK(f.name != name, "metric family '%s' declared twice", name.c_str());
  }
  families_.push_back({std::move(name), type, std::move(help), {}});
}

void Exposition::Sample(std::string_view name, const Labels& labels, double value) {
  Fam* fam = nullptr;
  for (Fam& f : families_) {
    if (f.name == name) fam = &f;
  }
  DSB_CHECK(fam != nullptr, "sample of undeclared metric family '%.*s'",
            static_cast<int>(name.size()), name.data());
  std::string line(name);
  if (!labels.empty()) {
    line += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      const std::string& key = labels[i].first;
      DSB_CHECK(ValidName(key, /*colon=*/false) && !key.starts_with("__"),
                "label name '%s' is not valid", key.c_str());
      if (i > 0) line += ',';
      line += key;
      line += "=\"";
      line += EscapeLabelValue(labels[i].second);
      line += '"';
    }
    line += '}';
  }
  line += ' ';
  line += FormatValue(value);
  fam->lines.push_back(std::move(line));
}

std::string Exposition::Text() const {
  std::string out;
  for (const Fam& f : families_) {
    out += "# HELP " + f.name + " " + EscapeHelp(f.help) + "\n";
    out += "# TYPE " + f.name + (f.type == Type::kCounter ? " counter\n" : " gauge\n");
    for (const std::string& l : f.lines) {
      out += l;
      out += '\n';
    }
  }
  return out;
}

}  // namespace dsb::metrics
