#include "common/admin_client.h"

#include <utility>

namespace dsb {

Result<BrokerTrust> AdminTrustFromEnvironment() {
  return ResolveBrokerTrust("", "", "set " + std::string(kBrokerUserEnv) + " to its user");
}

Result<boost::json::object> AdminRequest(const std::string& socket,
                                         const boost::json::object& request,
                                         const BrokerTrust& trust, Deadline deadline) {
  auto conn = ConnectBroker(socket, trust, deadline);
  if (!conn.ok()) return conn.status();
  const Status sent = WriteFrame(conn->fd, boost::json::serialize(request), deadline);
  auto frame = sent.ok() ? ReadFrame(conn->fd, deadline) : Result<std::string>(sent);
  CloseLocal(conn->fd);
  if (!frame.ok()) return frame.status();
  return local_protocol::ParseReply(*frame);
}

Result<boost::json::object> AdminRequest(const std::string& socket,
                                         const boost::json::object& request,
                                         std::chrono::milliseconds timeout) {
  const Deadline deadline = std::chrono::steady_clock::now() + timeout;
  auto trust = AdminTrustFromEnvironment();
  if (!trust.ok()) return trust.status();
  return AdminRequest(socket, request, *trust, deadline);
}

namespace {

Result<boost::json::object> OkOnly(Result<boost::json::object> reply) {
  if (!reply.ok()) return reply;
  if (Status s = local_protocol::ReplyStatus(*reply); !s.ok()) return s;
  return reply;
}

}  // namespace

Result<boost::json::object> AdminCall(const std::string& socket,
                                      const boost::json::object& request,
                                      const BrokerTrust& trust, Deadline deadline) {
  return OkOnly(AdminRequest(socket, request, trust, deadline));
}

Result<boost::json::object> AdminCall(const std::string& socket,
                                      const boost::json::object& request,
                                      std::chrono::milliseconds timeout) {
  return OkOnly(AdminRequest(socket, request, timeout));
}

}  // namespace dsb
