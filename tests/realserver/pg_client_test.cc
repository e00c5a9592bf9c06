// dsb-load's PostgreSQL pieces that need no server: the URL and the SQLSTATE of a libpq message.
// (Against a real server they run in pg_limit_test.)
#include "tools/load/pg_client.h"

#include <gtest/gtest.h>

namespace dsb::load {
namespace {

TEST(PgUrl, ParsesUserHostPortAndDatabase) {
  PgUrl url;
  std::string why;
  ASSERT_TRUE(ParsePgUrl("postgresql://digiscope@127.0.0.1:54321/postgres", url, why)) << why;
  EXPECT_EQ(url.user, "digiscope");
  EXPECT_EQ(url.host, "127.0.0.1");
  EXPECT_EQ(url.port, 54321);
  EXPECT_EQ(url.dbname, "postgres");
  ASSERT_TRUE(ParsePgUrl("postgres://u@db.example/x", url, why)) << why;
  EXPECT_EQ(url.port, 5432);
  EXPECT_EQ(url.host, "db.example");
}

TEST(PgUrl, RefusesWhatItCannotUseNamingThePart) {
  const struct {
    const char* text;
    const char* says;
  } cases[] = {
      {"127.0.0.1:5432", "postgresql://"},
      {"postgresql://127.0.0.1:5432/db", "no user"},
      {"postgresql://u:secret@h:5432/db", "plain name"},
      {"postgresql://u@h:5432", "no database"},
      {"postgresql://u@h:5432/", "no database"},
      {"postgresql://u@h:99999/db", "bad port"},
      {"postgresql://u@h:/db", "bad port"},
      {"postgresql://u@:5432/db", "no host"},
      {"postgresql://u@h:5432/db?sslmode=require", "parameters"},
  };
  for (const auto& c : cases) {
    PgUrl url;
    std::string why;
    EXPECT_FALSE(ParsePgUrl(c.text, url, why)) << c.text;
    EXPECT_NE(why.find(c.says), std::string::npos) << c.text << " -> " << why;
  }
  EXPECT_TRUE(LooksLikePgUrl("postgres://x"));
  EXPECT_FALSE(LooksLikePgUrl("127.0.0.1:5432"));
}

TEST(PgSqlState, ReadsTheCodeOfAVerboseMessage) {
  EXPECT_EQ(SqlStateOf("connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  53300: "
                       "too many connections for role \"digiscope\"\nLOCATION:  x"),
            "53300");
  EXPECT_EQ(SqlStateOf("FATAL:  28P01: password authentication failed"), "28P01");
  EXPECT_EQ(SqlStateOf("ERROR:  57014: canceling statement due to statement timeout"), "57014");
  // libpq's own failures carry none.
  EXPECT_EQ(SqlStateOf("connection to server at \"127.0.0.1\", port 1 failed: Connection "
                       "refused"),
            "");
  EXPECT_EQ(SqlStateOf("FATAL:  too many connections"), "");  // terse: no code
  EXPECT_EQ(SqlStateOf(""), "");
}

}  // namespace
}  // namespace dsb::load
