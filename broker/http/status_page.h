// StatusPage: the broker's status page on its HTTP endpoint (broker.metrics,
// http::Server), docs/status-page.md. Routes:
//   /              the page: one self-contained HTML document (inline CSS and
//                  JS, broker/http/page/status.html embedded at build time,
//                  a Content-Security-Policy allowing nothing external) that
//                  fetches the three below every 1.5 s and redraws;
//   /api/status    what `dsbctl status --json` prints, built by the same code
//                  (Broker::Impl::StatusAsync: in cluster mode it asks the
//                  coordinator for the effective limits);
//   /api/history   the History ring (broker/history.h) as columns: per
//                  target limit, capacity, held, waiting, and per broker
//                  owed, granted, held, one frame a second, 10 minutes;
//   /api/leases    what `dsbctl leases --json` prints (Broker::Impl::Leases).
//
// The sampler runs on the broker's io_context every second: it reads the
// local status (no network) and, in cluster mode, asks the coordinator for
// its limits and ledger (local when this broker is the coordinator). A
// broker that is not the coordinator asks every second while the page was
// fetched within the last minute, else every 5 s, so an unwatched page costs
// the coordinator little.
//
// Thread rule: everything on the broker's io_context thread.
#ifndef DSB_BROKER_HTTP_STATUS_PAGE_H_
#define DSB_BROKER_HTTP_STATUS_PAGE_H_

#include <memory>

#include "broker/broker.h"

namespace dsb::http {
class Server;
}

namespace dsb::broker {

class StatusPage {
 public:
  // Routes the paths above on `server` and starts the sampler.
  // REQUIRES: `broker` and `server` outlive the StatusPage; Stop() before
  // the broker's io_context stops running.
  static std::unique_ptr<StatusPage> Start(Broker::Impl& broker, http::Server& server);
  ~StatusPage();
  StatusPage(const StatusPage&) = delete;
  StatusPage& operator=(const StatusPage&) = delete;

  // Ends the sampler (a sample in flight is dropped). Idempotent.
  void Stop();

  struct State;

 private:
  explicit StatusPage(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_HTTP_STATUS_PAGE_H_
