// The status page's Content-Security-Policy (docs/status-page.md): the page
// (broker/http/page/status.html) is one HTML document with one inline <style>
// and one inline <script>; its policy allows exactly those two (by their
// SHA-256, as CSP level 2 hashes) and requests to the page's own origin
// (connect-src 'self'), and nothing else: no script, style, font, image or
// frame from anywhere, no form target, no <base>.
//
// The policy is computed from the page itself when the broker starts, so an
// edit of the page can never leave a stale hash behind (the browser would
// refuse to run the script, and the page test fails).
//
// Thread rule: pure functions.
#ifndef DSB_BROKER_HTTP_STATUS_PAGE_CSP_H_
#define DSB_BROKER_HTTP_STATUS_PAGE_CSP_H_

#include <string>
#include <string_view>

#include "common/status.h"

namespace dsb::broker {

// The policy for `html`: "default-src 'none'; script-src 'sha256-..'; ...".
// Failure (kInvalidArgument): `html` has not exactly one "<script>" ..
// "</script>" and one "<style>" .. "</style>" (the tags written without
// attributes).
Result<std::string> StatusPagePolicy(std::string_view html);

// `html` with its placeholder "@CSP@" (the content of its
// <meta http-equiv="Content-Security-Policy">) replaced by StatusPagePolicy.
// Failure: as StatusPagePolicy, or (kInvalidArgument) no placeholder or more
// than one.
Result<std::string> WithStatusPagePolicy(std::string_view html);

// base64 of the SHA-256 of `text` (what a CSP 'sha256-...' source names).
std::string Sha256Base64(std::string_view text);

}  // namespace dsb::broker

#endif  // DSB_BROKER_HTTP_STATUS_PAGE_CSP_H_
