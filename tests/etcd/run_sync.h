// RunSync: runs one awaitable to its end on a test's io_context and returns
// its value (the etcd suites call the client as plain functions).
#ifndef DSB_TESTS_ETCD_RUN_SYNC_H_
#define DSB_TESTS_ETCD_RUN_SYNC_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdlib>
#include <optional>
#include <utility>

namespace dsb::etcd {

// Runs `a` (and whatever else is queued on `io`, e.g. a timer that cancels
// it) until `a` returns. REQUIRES: `a` completes (the client's deadlines
// bound every call but Watch; bound a Watch with a timer).
template <typename T>
T RunSync(boost::asio::io_context& io, boost::asio::awaitable<T> a) {
  std::optional<T> out;
  boost::asio::co_spawn(
      io, [&]() -> boost::asio::awaitable<void> { out.emplace(co_await std::move(a)); },
      boost::asio::detached);
  io.restart();
  while (!out && io.run_one() > 0) {
  }
  if (!out) std::abort();  // the call never finished: a bug in the test or the client
  return std::move(*out);
}

}  // namespace dsb::etcd

#endif  // DSB_TESTS_ETCD_RUN_SYNC_H_
