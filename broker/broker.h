// Broker: the dsb daemon on one workstation. Owns the targets' slot tables,
// the local socket (client registration, death detection, admin requests)
// and, in cluster mode, the lease agent and possibly the coordinator role.
//
// Thread rule: Create() and Run() on one thread; Stop() from any thread or a
// signal handler context via the io_context. Everything else runs on the
// single-threaded io_context inside Run().
#ifndef DSB_BROKER_BROKER_H_
#define DSB_BROKER_BROKER_H_

#include <memory>

#include "broker/config/broker_config.h"
#include "common/status.h"

namespace dsb::broker {

class Broker {
 public:
  // Opens (or adopts) every target's segment and binds the local socket, so
  // that a returned Broker is ready to serve. Errors name the bad input:
  // kSegmentInvalid / kSegmentUnavailable, kBrokerUnavailable (socket in use
  // by a running broker, or cannot bind), kConfig.
  static Result<std::unique_ptr<Broker>> Create(config::BrokerConfig config);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Serves until SIGTERM/SIGINT or Stop(). Returns the process exit code.
  int Run();
  // Asks Run() to return after a clean shutdown. Thread-safe.
  void Stop();

  struct Impl;

 private:
  explicit Broker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsb::broker

#endif  // DSB_BROKER_BROKER_H_
