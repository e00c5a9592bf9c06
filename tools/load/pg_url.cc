// The libpq-free half of pg_client.h: URL and SQLSTATE parsing (every platform; the
// Windows build has no libpq and links pg_client_none.cc for the sessions).
#include <algorithm>
#include <cctype>
#include <charconv>

#include "tools/load/pg_client.h"

namespace dsb::load {

bool LooksLikePgUrl(std::string_view text) {
  return text.starts_with("postgresql://") || text.starts_with("postgres://");
}

bool ParsePgUrl(std::string_view text, PgUrl& out, std::string& why) {
  std::string_view rest;
  if (text.starts_with("postgresql://")) {
    rest = text.substr(13);
  } else if (text.starts_with("postgres://")) {
    rest = text.substr(11);
  } else {
    why = "'" + std::string(text) + "' does not start with postgresql://";
    return false;
  }
  const auto at = rest.find('@');
  const auto slash = rest.find('/');
  if (at == std::string_view::npos || (slash != std::string_view::npos && at > slash)) {
    why = "'" + std::string(text) + "' names no user (postgresql://USER@HOST:PORT/DB)";
    return false;
  }
  PgUrl url;
  url.user = std::string(rest.substr(0, at));
  if (url.user.empty() || url.user.find(':') != std::string::npos) {
    why = "'" + std::string(text) + "': the user must be a plain name (no password in the URL)";
    return false;
  }
  rest.remove_prefix(at + 1);
  const auto db_at = rest.find('/');
  if (db_at == std::string_view::npos || db_at + 1 >= rest.size()) {
    why = "'" + std::string(text) + "' names no database (postgresql://USER@HOST:PORT/DB)";
    return false;
  }
  url.dbname = std::string(rest.substr(db_at + 1));
  if (url.dbname.find_first_of("?/") != std::string::npos) {
    why = "'" + std::string(text) + "': parameters after the database are not supported";
    return false;
  }
  std::string_view host_port = rest.substr(0, db_at);
  const auto colon = host_port.rfind(':');
  std::string_view host = host_port;
  if (colon != std::string_view::npos) {
    const std::string_view p = host_port.substr(colon + 1);
    int port = 0;
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (p.empty() || ec != std::errc() || ptr != p.data() + p.size() || port < 1 || port > 65535) {
      why = "'" + std::string(text) + "': bad port '" + std::string(p) + "'";
      return false;
    }
    url.port = port;
    host = host_port.substr(0, colon);
  }
  if (host.empty()) {
    why = "'" + std::string(text) + "' names no host";
    return false;
  }
  url.host = std::string(host);
  out = std::move(url);
  return true;
}

std::string SqlStateOf(std::string_view message) {
  // libpq may prefix the server's message ("connection to server at ... failed: FATAL:  ...").
  for (std::string_view severity : {"FATAL:", "ERROR:", "PANIC:"}) {
    const auto at = message.find(severity);
    if (at == std::string_view::npos) continue;
    std::string_view rest = message.substr(at + severity.size());
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.size() < 6 || rest[5] != ':') return "";
    const std::string_view code = rest.substr(0, 5);
    if (!std::all_of(code.begin(), code.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c)) ||
                 std::isupper(static_cast<unsigned char>(c));
        })) {
      return "";
    }
    return std::string(code);
  }
  return "";
}

}  // namespace dsb::load
