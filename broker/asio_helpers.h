// Small helpers every Asio translation unit of the broker shares; defined once here so
// no two units carry their own copy (and a unity build of dsb_broker_core can merge them).
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>

namespace dsb {

// co_await op(..., use_nothrow) yields a tuple (error_code, results...) instead of
// throwing: the broker's coroutines handle every error where it happens.
inline constexpr auto use_nothrow = boost::asio::as_tuple(boost::asio::use_awaitable);

// A duration in whole milliseconds (truncated), for logs, replies and timers.
inline std::int64_t Ms(std::chrono::nanoseconds d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace dsb
