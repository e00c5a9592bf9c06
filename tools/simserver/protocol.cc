#include "tools/simserver/protocol.h"

#include <charconv>
#include <vector>

#include "tools/simserver/session_table.h"

namespace dsb::sim {

namespace {

std::vector<std::string_view> Split(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    std::size_t j = i;
    while (j < line.size() && line[j] != ' ') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

bool ValidUser(std::string_view user) {
  if (user.empty() || user.size() > kMaxUserBytes) return false;
  for (char c : user) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

template <typename T>
bool ParseUnsigned(std::string_view text, T& out) {
  if (text.empty() || text.size() > 20) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out, 10);
  return ec == std::errc() && ptr == end;
}

Request Bad(std::string error) {
  Request r;
  r.error = std::move(error);
  return r;
}

}  // namespace

Request ParseRequest(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > kMaxLineBytes) return Bad("line too long");
  for (char c : line) {
    if (c < 0x20 || c > 0x7e) return Bad("non-printable byte in line");
  }
  const std::vector<std::string_view> t = Split(line);
  if (t.empty()) return Bad("empty line");
  const std::string_view verb = t[0];
  Request r;
  if (verb == "OPEN") {
    if (t.size() != 2) return Bad("usage: OPEN <user>");
    if (!ValidUser(t[1])) return Bad("bad user name");
    r.verb = Verb::kOpen;
    r.user = std::string(t[1]);
  } else if (verb == "CLOSE") {
    if (t.size() != 2) return Bad("usage: CLOSE <session-id>");
    if (!ParseUnsigned(t[1], r.session_id)) return Bad("bad session id");
    r.verb = Verb::kClose;
  } else if (verb == "STATS") {
    if (t.size() == 1) {
      r.verb = Verb::kStats;
    } else if (t.size() == 2 && t[1] == "RESET") {
      r.verb = Verb::kStatsReset;
    } else {
      return Bad("usage: STATS [RESET]");
    }
  } else if (verb == "LIMIT") {
    if (t.size() != 3) return Bad("usage: LIMIT <user> <n>");
    if (!ValidUser(t[1])) return Bad("bad user name");
    if (!ParseUnsigned(t[2], r.limit) || r.limit > SessionTable::kMaxLimit) {
      return Bad("bad limit (0.." + std::to_string(SessionTable::kMaxLimit) + ")");
    }
    r.verb = Verb::kLimit;
    r.user = std::string(t[1]);
  } else if (verb == "PING") {
    if (t.size() != 1) return Bad("usage: PING");
    r.verb = Verb::kPing;
  } else {
    return Bad("unknown verb");
  }
  return r;
}

std::string SessionLimitReply(std::string_view user, std::uint32_t limit) {
  std::string s(kSessionLimitPrefix);
  s += " 0x80040112 ec=1246 user=";
  s += user;
  s += " limit=";
  s += std::to_string(limit);
  return s;
}

}  // namespace dsb::sim
