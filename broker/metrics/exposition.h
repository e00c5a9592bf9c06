// Prometheus text exposition format 0.0.4 (the format every Prometheus server
// scrapes: https://prometheus.io/docs/instrumenting/exposition_formats/),
// written by hand: Debian's prometheus-cpp-dev brings its own HTTP server
// (civetweb), libcurl and zlib as build dependencies and a shared library the
// broker's package would depend on, for a format of a few lines; and it has no
// process collector either (process.h).
//
// An Exposition is one scrape's text: families are written in the order they
// were declared, each with its HELP and TYPE lines, then its samples in the
// order they were added (grouped under their family even when added
// interleaved, as the format requires). Label values and HELP text are
// escaped (backslash, newline; and '"' in label values).
//
// Thread rule: none (a value type).
#ifndef DSB_BROKER_METRICS_EXPOSITION_H_
#define DSB_BROKER_METRICS_EXPOSITION_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsb::metrics {

// The content type of format 0.0.4, for the HTTP reply.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

enum class Type { kCounter, kGauge };

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  // Declares a family. A family without samples still gets its HELP and TYPE
  // lines (a scraper then knows the metric exists with no series yet).
  // REQUIRES (checked, a bug otherwise): `name` matches
  // [a-zA-Z_:][a-zA-Z0-9_:]*, is not yet declared, and a counter's name ends
  // in "_total".
  void Family(std::string name, Type type, std::string help);
  // Adds one sample of family `name`. REQUIRES: `name` declared; label names
  // match [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__".
  void Sample(std::string_view name, const Labels& labels, double value);
  std::string Text() const;

 private:
  struct Fam {
    std::string name;
    Type type;
    std::string help;
    std::vector<std::string> lines;
  };
  std::vector<Fam> families_;
};

// `\` -> `\\`, newline -> `\n`, `"` -> `\"` (label values).
std::string EscapeLabelValue(std::string_view value);
// `\` -> `\\`, newline -> `\n` (HELP text).
std::string EscapeHelp(std::string_view text);
// A sample value: integers without a fraction ("3", "-2"), others in the
// shortest form that reads back the same ("0.25"), "NaN", "+Inf", "-Inf".
std::string FormatValue(double value);

}  // namespace dsb::metrics

#endif  // DSB_BROKER_METRICS_EXPOSITION_H_
