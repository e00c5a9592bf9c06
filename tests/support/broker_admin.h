// One admin request to a broker's local socket (what dsbctl does), for tests.
#ifndef DSB_TESTS_SUPPORT_BROKER_ADMIN_H_
#define DSB_TESTS_SUPPORT_BROKER_ADMIN_H_

#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>

#include "common/local_frame.h"

namespace dsb::testing {

// Sends `request` and returns the reply object; an empty object if the
// broker cannot be reached or answers something that is not a JSON object.
inline boost::json::object AskBroker(const std::filesystem::path& socket,
                                     const boost::json::object& request) {
  auto fd = ConnectLocal(socket.string());
  if (!fd.ok()) return {};
  auto frame = WriteFrame(*fd, boost::json::serialize(request)).ok()
                   ? ReadFrame(*fd, std::chrono::seconds(10))
                   : Result<std::string>(Status{Errc::kBrokerUnavailable, ""});
  ::close(*fd);
  if (!frame.ok()) return {};
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(*frame, ec);
  return !ec && v.is_object() ? v.as_object() : boost::json::object{};
}

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_BROKER_ADMIN_H_
