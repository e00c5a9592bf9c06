#include "broker/http/status_page_csp.h"

#include "broker/crypto/crypto.h"

namespace dsb::broker {

namespace {

constexpr std::string_view kPlaceholder = "@CSP@";

// The text between `open` and `close`; failure unless there is exactly one.
Result<std::string_view> OnlyElement(std::string_view html, std::string_view open,
                                     std::string_view close) {
  const std::size_t begin = html.find(open);
  if (begin == std::string_view::npos) {
    return Status{Errc::kInvalidArgument, "the status page has no " + std::string(open)};
  }
  const std::size_t from = begin + open.size();
  const std::size_t end = html.find(close, from);
  if (end == std::string_view::npos) {
    return Status{Errc::kInvalidArgument,
                  "the status page's " + std::string(open) + " has no " + std::string(close)};
  }
  if (html.find(open, end) != std::string_view::npos) {
    return Status{Errc::kInvalidArgument, "the status page has more than one " + std::string(open) +
                                              " (the policy allows exactly one)"};
  }
  return html.substr(from, end - from);
}

}  // namespace

std::string Sha256Base64(std::string_view text) {
  return crypto::Base64(crypto::Sha256(crypto::AsBytes(text)));
}

Result<std::string> StatusPagePolicy(std::string_view html) {
  Result<std::string_view> script = OnlyElement(html, "<script>", "</script>");
  if (!script.ok()) return script.status();
  Result<std::string_view> style = OnlyElement(html, "<style>", "</style>");
  if (!style.ok()) return style.status();
  return "default-src 'none'; script-src 'sha256-" + Sha256Base64(*script) +
         "'; style-src 'sha256-" + Sha256Base64(*style) +
         "'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'";
}

Result<std::string> WithStatusPagePolicy(std::string_view html) {
  const std::size_t at = html.find(kPlaceholder);
  if (at == std::string_view::npos ||
      html.find(kPlaceholder, at + kPlaceholder.size()) != std::string_view::npos) {
    return Status{Errc::kInvalidArgument,
                  "the status page needs exactly one " + std::string(kPlaceholder) +
                      " (its Content-Security-Policy meta tag)"};
  }
  Result<std::string> policy = StatusPagePolicy(html);
  if (!policy.ok()) return policy.status();
  std::string out(html.substr(0, at));
  out += *policy;
  out += html.substr(at + kPlaceholder.size());
  return out;
}

}  // namespace dsb::broker
