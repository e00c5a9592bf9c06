// The Prometheus text exposition writer (broker/metrics/exposition.h) and the
// process metrics (broker/metrics/process.h), read back by the tests' strict
// parser (exposition_parser.h), whose refusals are checked here too.
#include "broker/metrics/exposition.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <string>

#include "broker/metrics/process.h"
#include "tests/http/exposition_parser.h"

namespace {

using dsb::metrics::EscapeHelp;
using dsb::metrics::EscapeLabelValue;
using dsb::metrics::Exposition;
using dsb::metrics::FormatValue;
using dsb::metrics::Type;
using Parsed = dsb::testing::Exposition;

TEST(Exposition, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(EscapeLabelValue(R"(a\b"c)" "\n" "d"), R"(a\\b\"c\nd)");
  EXPECT_EQ(EscapeHelp(R"(a\b"c)" "\n"), R"(a\\b"c\n)");
  Exposition e;
  e.Family("x", Type::kGauge, "help with \\ and\nnewline");
  e.Sample("x", {{"target", "we\"ird\\na\nme"}}, 1);
  EXPECT_EQ(e.Text(),
            "# HELP x help with \\\\ and\\nnewline\n"
            "# TYPE x gauge\n"
            "x{target=\"we\\\"ird\\\\na\\nme\"} 1\n");
  const Parsed p(e.Text());
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p.families()[0].help, "help with \\ and\nnewline");
  EXPECT_EQ(p.Value("x", {{"target", "we\"ird\\na\nme"}}), 1.0);
}

TEST(Exposition, GroupsSamplesUnderTheirFamilyInDeclarationOrder) {
  Exposition e;
  e.Family("b_total", Type::kCounter, "B.");
  e.Family("a", Type::kGauge, "A.");
  e.Family("empty", Type::kGauge, "No series yet.");
  e.Sample("a", {{"target", "t1"}}, 1);
  e.Sample("b_total", {{"target", "t1"}, {"source", "operator"}}, 2);
  e.Sample("a", {{"target", "t2"}}, 3);
  EXPECT_EQ(e.Text(),
            "# HELP b_total B.\n# TYPE b_total counter\n"
            "b_total{target=\"t1\",source=\"operator\"} 2\n"
            "# HELP a A.\n# TYPE a gauge\n"
            "a{target=\"t1\"} 1\na{target=\"t2\"} 3\n"
            "# HELP empty No series yet.\n# TYPE empty gauge\n");
  const Parsed p(e.Text());
  ASSERT_TRUE(p.ok()) << p.error();
  ASSERT_EQ(p.families().size(), 3u);
  EXPECT_EQ(p.families()[0].type, "counter");
  EXPECT_EQ(p.families()[2].samples.size(), 0u);
}

TEST(Exposition, FormatsValues) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(4294967296.0), "4294967296");
  EXPECT_EQ(FormatValue(NAN), "NaN");
  EXPECT_EQ(FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatValue(-INFINITY), "-Inf");
  // What the format reads back is the value written.
  EXPECT_EQ(std::stod(FormatValue(0.1 + 0.2)), 0.1 + 0.2);
}

TEST(ExpositionDeathTest, RefusesBadNamesAsBugs) {
  EXPECT_DEATH(Exposition().Family("9lives", Type::kGauge, "x"), "not valid");
  EXPECT_DEATH(Exposition().Family("has-dash", Type::kGauge, "x"), "not valid");
  EXPECT_DEATH(Exposition().Family("grants", Type::kCounter, "x"), "_total");
  EXPECT_DEATH(
      {
        Exposition e;
        e.Family("a", Type::kGauge, "x");
        e.Family("a", Type::kGauge, "x");
      },
      "twice");
  EXPECT_DEATH(Exposition().Sample("nope", {}, 1), "undeclared");
  EXPECT_DEATH(
      {
        Exposition e;
        e.Family("a", Type::kGauge, "x");
        e.Sample("a", {{"__reserved", "v"}}, 1);
      },
      "label name");
}

TEST(Exposition, ProcessMetricsAreThereAndSane) {
  Exposition e;
  dsb::metrics::AddProcessMetrics(e);
  const Parsed p(e.Text());
  ASSERT_TRUE(p.ok()) << p.error() << "\n" << e.Text();
  const auto cpu = p.Value("process_cpu_seconds_total");
  const auto rss = p.Value("process_resident_memory_bytes");
  const auto fds = p.Value("process_open_fds");
  const auto max_fds = p.Value("process_max_fds");
  const auto start = p.Value("process_start_time_seconds");
  ASSERT_TRUE(cpu && rss && fds && max_fds && start) << e.Text();
  EXPECT_GE(*cpu, 0);
  EXPECT_GT(*rss, 1024 * 1024);  // a running gtest binary holds more than 1 MiB
  EXPECT_GE(*fds, 3);            // stdin, stdout, stderr
  EXPECT_GE(*max_fds, *fds);
  // Started in the last day, not in the future (wall clock, seconds).
  const double now = static_cast<double>(::time(nullptr));
  EXPECT_LE(*start, now + 1);
  EXPECT_GT(*start, now - 86400);
}

TEST(ExpositionParser, RefusesLooseText) {
  const char* bad[] = {
      "",                                                       // empty
      "# HELP a x\n# TYPE a gauge\na 1",                        // no final newline
      "# HELP a x\n# TYPE a gauge\n\na 1\n",                    // blank line
      "a 1\n",                                                  // no family
      "# TYPE a gauge\na 1\n",                                  // no HELP
      "# HELP a x\n# TYPE a summary\na 1\n",                    // type
      "# HELP a x\n# TYPE a counter\na 1\n",                    // counter without _total
      "# HELP a_total x\n# TYPE a_total counter\na_total -1\n", // negative counter
      "# HELP a x\n# TYPE a gauge\nb 1\n",                      // other family
      "# HELP a x\n# TYPE a gauge\na{t=\"1\"} 1\na{t=\"1\"} 2\n",  // series repeated
      "# HELP a x\n# TYPE a gauge\na{t=1} 1\n",                 // unquoted
      "# HELP a x\n# TYPE a gauge\na{t=\"\\x\"} 1\n",           // bad escape
      "# HELP a x\n# TYPE a gauge\na{t=\"1\",} 1\n",            // trailing comma
      "# HELP a x\n# TYPE a gauge\na 1 1700000000\n",           // timestamp
      "# HELP a x\n# TYPE a gauge\na one\n",                    // not a number
      "# HELP a x\n# TYPE a gauge\n# HELP a x\n# TYPE a gauge\n",  // family twice
      "# HELP a x\n# TYPE a gauge\n# just a comment\n",         // comment
  };
  for (const char* text : bad) {
    EXPECT_FALSE(Parsed(text).ok()) << "accepted: " << text;
  }
  EXPECT_TRUE(Parsed("# HELP a x\n# TYPE a gauge\na{t=\"1\",u=\"\\\"\"} -Inf\n").ok());
}

}  // namespace
