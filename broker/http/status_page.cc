#include "broker/http/status_page.h"

#include "broker/broker_impl.h"
#include "broker/history.h"
#include "broker/http/server.h"
#include "broker/http/status_page_csp.h"

namespace dsb::broker {

// broker/http/page/status.html, embedded by broker/http/page/page.cmake.
extern const std::string_view kStatusPageHtml;

namespace {

constexpr auto kStep = std::chrono::seconds(1);
// How long after the page's last fetch the coordinator is still asked every
// second; after that every kUnwatchedStep.
constexpr auto kWatched = std::chrono::minutes(1);
constexpr auto kUnwatchedStep = std::chrono::seconds(5);
constexpr std::size_t kFrames = 600;  // 10 minutes at kStep

// The /api answers carry Cache-Control: no-store as every answer of the
// server does (server.cc): a sample of now must never be shown again later.
http::Response Json(const json::object& o) {
  return http::Response{
      .status = 200, .content_type = "application/json", .body = json::serialize(o)};
}

http::Response Stopping() { return http::Response{.status = 503, .body = "stopping\n"}; }

}  // namespace

struct StatusPage::State {
  State(Broker::Impl& b) : broker(b), timer(b.io), history(kFrames) {}

  Broker::Impl& broker;
  asio::steady_timer timer;
  History history;
  bool stopped = false;
  // The page with its policy filled in, or why it could not be (a bug in the
  // page's source: served as a 500 naming it).
  std::string page;
  std::string page_error;
  // The page's policy as its Content-Security-Policy header: the <meta>'s
  // plus frame-ancestors 'none', which a <meta> policy cannot carry (browsers
  // ignore it there).
  std::string page_policy;
  // Cluster mode: the coordinator's limits and the leases reply as last
  // asked, and when.
  std::optional<json::object> limits;
  json::object leases;
  Clock::time_point last_remote = Clock::time_point::min();
  Clock::time_point last_viewed = Clock::time_point::min();

  bool LedgerIsLocal() const {
    const config::BrokerConfig& c = broker.config;
    return c.cluster_mode() && c.cluster->coordinator == c.id;
  }

  // The sampler's status: the local numbers now, the coordinator's limits as
  // last asked (the endpoint /api/status asks afresh, StatusAsync).
  json::object Status() const {
    json::object s = broker.StatusReply();
    if (broker.cluster) {
      Broker::Impl::MergeClusterLimits(
          s, limits ? *limits
                    : json::object{{"ok", false}, {"message", "not asked the coordinator yet"}});
    }
    return s;
  }

  awaitable<void> Sample(std::shared_ptr<State> self) {
    Clock::time_point next = Clock::now();
    while (!stopped) {
      const Clock::time_point now = Clock::now();
      const bool remote_due = !broker.cluster || LedgerIsLocal() ||
                              (last_viewed != Clock::time_point::min() &&
                               now - last_viewed < kWatched) ||
                              last_remote == Clock::time_point::min() ||
                              now - last_remote >= kUnwatchedStep;
      if (remote_due) {
        if (broker.cluster) {
          json::object l = co_await broker.cluster->Limits();
          if (stopped) break;
          limits = std::move(l);
        }
        json::object le = co_await broker.Leases();
        if (stopped) break;
        leases = std::move(le);
        last_remote = Clock::now();
      }
      const json::object status = Status();
      history.Record(Clock::now(), History::SampleFrom(status, &leases));
      // A steady cadence; after a slow answer (a coordinator timing out), the
      // next sample is a step from now, not a burst to catch up.
      next += kStep;
      if (next < Clock::now()) next = Clock::now() + kStep;
      timer.expires_at(next);
      auto [ec] = co_await timer.async_wait(use_nothrow);
      if (ec) break;
    }
    (void)self;  // kept alive until the loop ends
  }
};

namespace {

awaitable<http::Response> ApiStatus(std::weak_ptr<StatusPage::State> weak) {
  std::shared_ptr<StatusPage::State> s = weak.lock();
  if (!s || s->stopped) co_return Stopping();
  s->last_viewed = Clock::now();
  json::object o = co_await s->broker.StatusAsync();
  co_return Json(o);
}

awaitable<http::Response> ApiLeases(std::weak_ptr<StatusPage::State> weak) {
  std::shared_ptr<StatusPage::State> s = weak.lock();
  if (!s || s->stopped) co_return Stopping();
  s->last_viewed = Clock::now();
  json::object o = co_await s->broker.Leases();
  co_return Json(o);
}

}  // namespace

StatusPage::StatusPage(std::shared_ptr<State> state) : state_(std::move(state)) {}
StatusPage::~StatusPage() { Stop(); }

std::unique_ptr<StatusPage> StatusPage::Start(Broker::Impl& broker, http::Server& server) {
  auto state = std::make_shared<State>(broker);
  Result<std::string> page = WithStatusPagePolicy(kStatusPageHtml);
  Result<std::string> policy = StatusPagePolicy(kStatusPageHtml);
  if (page.ok() && policy.ok()) {
    state->page = std::move(page).value();
    state->page_policy = *policy + "; frame-ancestors 'none'";
  } else {
    if (page.ok()) page = policy.status();
    state->page_error = "the status page cannot be served: " + page.status().message();
    spdlog::error("{}", state->page_error);
  }
  // The handlers hold the state weakly: after Stop (and the StatusPage's end)
  // a late request is answered 503, never from freed memory.
  std::weak_ptr<State> weak = state;
  auto route = [&server, weak](std::string path, auto body) {
    server.Route(std::move(path), [weak, body](std::string_view target) -> http::Response {
      std::shared_ptr<State> s = weak.lock();
      if (!s || s->stopped) return Stopping();
      return body(*s, target);
    });
  };
  route("/", [](State& s, std::string_view) {
    if (!s.page_error.empty()) {
      return http::Response{.status = 500, .body = s.page_error + "\n"};
    }
    // The policy as a header too: it binds before the first byte of the page
    // is parsed, and only a header can forbid framing (frame-ancestors;
    // X-Frame-Options for browsers without CSP 2). The <meta> stays so that
    // a copy of the page saved to disk keeps its policy; the two are the same
    // but for frame-ancestors, so the browser enforcing both changes nothing.
    return http::Response{.status = 200,
                          .content_type = "text/html; charset=utf-8",
                          .body = s.page,
                          .headers = {{"Content-Security-Policy", s.page_policy},
                                      {"X-Frame-Options", "DENY"}}};
  });
  route("/api/history", [](State& s, std::string_view) {
    s.last_viewed = Clock::now();
    json::object o = s.history.Json(Clock::now());
    o["step_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(kStep).count();
    return Json(o);
  });
  // Fresh answers by the very code of `dsbctl status --json` and `dsbctl
  // leases --json` (in cluster mode they ask the coordinator, bounded by its
  // timeouts). Plain functions taking values: the coroutine must not refer
  // to a handler object the server might replace meanwhile.
  server.RouteAsync("/api/status", [weak](std::string) { return ApiStatus(weak); });
  server.RouteAsync("/api/leases", [weak](std::string) { return ApiLeases(weak); });
  asio::co_spawn(broker.io, state->Sample(state), asio::detached);
  return std::unique_ptr<StatusPage>(new StatusPage(std::move(state)));
}

void StatusPage::Stop() {
  if (!state_ || state_->stopped) return;
  state_->stopped = true;
  state_->timer.cancel();
}

}  // namespace dsb::broker
