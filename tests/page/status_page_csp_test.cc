// The status page's Content-Security-Policy (broker/http/status_page_csp.h)
// and the embedded page itself.
#include "broker/http/status_page_csp.h"

#include <gtest/gtest.h>

#include <string>

namespace dsb::broker {
extern const std::string_view kStatusPageHtml;
namespace {

TEST(StatusPageCsp, Sha256Base64MatchesAKnownDigest) {
  // sha256("") = e3b0c442...; its base64 (as `openssl dgst -sha256 -binary | base64`).
  EXPECT_EQ(Sha256Base64(""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
  EXPECT_EQ(Sha256Base64("abc"), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
}

TEST(StatusPageCsp, PolicyAllowsExactlyThePagesOwnScriptAndStyle) {
  const std::string html =
      "<meta http-equiv=\"Content-Security-Policy\" content=\"@CSP@\">"
      "<style>b{}</style><script>go()</script>";
  Result<std::string> page = WithStatusPagePolicy(html);
  ASSERT_TRUE(page.ok()) << page.status().message();
  const std::string policy = *StatusPagePolicy(html);
  EXPECT_NE(page->find("content=\"" + policy + "\""), std::string::npos);
  EXPECT_EQ(page->find("@CSP@"), std::string::npos);
  EXPECT_NE(policy.find("default-src 'none'"), std::string::npos);
  EXPECT_NE(policy.find("script-src 'sha256-" + Sha256Base64("go()") + "'"), std::string::npos);
  EXPECT_NE(policy.find("style-src 'sha256-" + Sha256Base64("b{}") + "'"), std::string::npos);
  EXPECT_NE(policy.find("connect-src 'self'"), std::string::npos);
  EXPECT_EQ(policy.find("unsafe"), std::string::npos);
  EXPECT_EQ(policy.find("http"), std::string::npos);  // no origin but 'self'
}

TEST(StatusPageCsp, RefusesAPageItCannotDescribe) {
  EXPECT_FALSE(StatusPagePolicy("<style>a</style>").ok());                      // no script
  EXPECT_FALSE(StatusPagePolicy("<script>a</script><style>b").ok());            // unclosed
  EXPECT_FALSE(StatusPagePolicy("<script>a</script><script>b</script><style>c</style>").ok());
  const Result<std::string> no_placeholder =
      WithStatusPagePolicy("<script>a</script><style>b</style>");
  ASSERT_FALSE(no_placeholder.ok());
  EXPECT_NE(no_placeholder.status().message().find("@CSP@"), std::string::npos);
  EXPECT_FALSE(WithStatusPagePolicy("@CSP@ @CSP@ <script>a</script><style>b</style>").ok());
}

TEST(StatusPageCsp, TheEmbeddedPageGetsAPolicyAndLoadsNothingFromOutside) {
  Result<std::string> page = WithStatusPagePolicy(kStatusPageHtml);
  ASSERT_TRUE(page.ok()) << page.status().message();
  EXPECT_EQ(page->rfind("<!DOCTYPE html>", 0), 0u);
  // Nothing that names another origin or loads a file: no src=, no
  // stylesheet link, no @import, no url(), no http(s) address except the
  // SVG namespace (an identifier, never fetched).
  std::string rest = *page;
  const std::string svg_ns = "http://www.w3.org/2000/svg";
  for (std::size_t at; (at = rest.find(svg_ns)) != std::string::npos;) rest.erase(at, svg_ns.size());
  for (const char* bad : {"src=", "<link", "@import", "url(", "http:", "https:", "//cdn"}) {
    EXPECT_EQ(rest.find(bad), std::string::npos) << bad;
  }
  // ASCII only: the hashed text is the same bytes whatever charset a browser
  // would guess.
  for (char c : kStatusPageHtml) ASSERT_LT(static_cast<unsigned char>(c), 0x80u);
}

}  // namespace
}  // namespace dsb::broker
