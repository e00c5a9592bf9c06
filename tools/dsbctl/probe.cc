#include "tools/dsbctl/probe.h"

#include <memory>
#include <vector>

#include "tools/load/line_client.h"
#include "tools/load/pg_client.h"

namespace dsb::ctl {

namespace {

ProbeResult ProbeSimserver(const ProbeOptions& o) {
  ProbeResult r;
  if (o.user.empty()) {
    r.message = "--user is required for a dsb-simserver address";
    return r;
  }
  // One connection carries every session (the simserver counts sessions per
  // user, not per connection); CLOSE each at the end.
  load::LineClient c;
  if (std::error_code ec = c.Connect(o.server, o.io_timeout)) {
    r.message = "cannot connect to " + o.server + ": " + ec.message();
    return r;
  }
  std::vector<std::string> ids;
  for (std::uint32_t i = 0; i < o.max_sessions; ++i) {
    std::error_code ec;
    const std::string reply = c.Call("OPEN " + o.user, ec);
    if (ec) {
      r.message = "server " + o.server + " failed after " + std::to_string(ids.size()) +
                  " session(s): " + ec.message();
      return r;  // closing the connection ends the sessions
    }
    if (reply.rfind("OK ", 0) == 0) {
      ids.push_back(reply.substr(3));
      continue;
    }
    if (reply.find("MAPI_E_SESSION_LIMIT") != std::string::npos) {
      r.refused = true;
      r.refusal = reply;
    } else {
      r.message = "unexpected reply after " + std::to_string(ids.size()) +
                  " session(s): " + reply.substr(0, 200);
      return r;
    }
    break;
  }
  r.opened = static_cast<std::uint32_t>(ids.size());
  for (const std::string& id : ids) {
    std::error_code ec;
    (void)c.Call("CLOSE " + id, ec);
    if (ec) break;
  }
  r.ok = true;
  return r;
}

ProbeResult ProbePostgres(const ProbeOptions& o) {
  ProbeResult r;
  load::PgUrl url;
  std::string why;
  if (!load::ParsePgUrl(o.server, url, why)) {
    r.message = "bad PostgreSQL URL '" + o.server + "': " + why;
    return r;
  }
  std::vector<std::unique_ptr<load::PgSession>> open;
  for (std::uint32_t i = 0; i < o.max_sessions; ++i) {
    auto s = std::make_unique<load::PgSession>();
    std::string message, sqlstate;
    bool server_closed = false;
    const load::PgOutcome out = s->Connect(url, o.io_timeout, message, sqlstate, server_closed);
    if (out == load::PgOutcome::kOk) {
      open.push_back(std::move(s));
      continue;
    }
    if (out == load::PgOutcome::kRefused) {
      r.refused = true;
      r.refusal = message.substr(0, message.find('\n'));
    } else {
      r.message = "connection " + std::to_string(open.size() + 1) + " failed (" +
                  (sqlstate.empty() ? std::string("no SQLSTATE") : "SQLSTATE " + sqlstate) +
                  "): " + message.substr(0, message.find('\n'));
    }
    break;
  }
  r.opened = static_cast<std::uint32_t>(open.size());
  // Confirmed closes: when the probe returns, the server counts none of them.
  for (auto& s : open) s->CloseConfirmed(o.io_timeout);
  r.ok = r.message.empty();
  return r;
}

}  // namespace

ProbeResult Probe(const ProbeOptions& options) {
  if (load::LooksLikePgUrl(options.server)) return ProbePostgres(options);
  return ProbeSimserver(options);
}

}  // namespace dsb::ctl
