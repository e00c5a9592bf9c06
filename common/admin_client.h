// The admin client: one request to a broker's local socket and its reply,
// for dsbctl, the tests, the lease watch and the benchmarks. It connects with
// the client library's peer-trust rule (local_frame.h ConnectBroker: nothing
// is sent to a listener that is not root, us or the named broker user), sends
// one request built with common/local_protocol.h and reads one reply, all
// within one deadline, then closes the connection.
//
// Thread rule: none (each call has its own connection).
#ifndef DSB_COMMON_ADMIN_CLIENT_H_
#define DSB_COMMON_ADMIN_CLIENT_H_

#include <boost/json.hpp>
#include <chrono>
#include <string>

#include "common/local_frame.h"
#include "common/local_protocol.h"
#include "common/status.h"

namespace dsb {

// Who may serve the socket when the caller names no broker user: root, our
// effective uid, and $DSB_BROKER_USER if set. kInvalidArgument if
// $DSB_BROKER_USER names no user of this machine.
Result<BrokerTrust> AdminTrustFromEnvironment();

// Sends `request` to the broker at `socket` and returns its reply object,
// whatever its "ok" (local_protocol::ReplyStatus reads an error reply).
// Failure: ConnectBroker's (kBrokerUnavailable, kTimeout, kPermissionDenied
// naming the untrusted peer, kInvalidArgument for a bad path); WriteFrame's
// and ReadFrame's (kBrokerUnavailable, kTimeout, kProtocol); kProtocol
// "broker sent a malformed reply" for a reply that is not a JSON object.
Result<boost::json::object> AdminRequest(const std::string& socket,
                                         const boost::json::object& request,
                                         const BrokerTrust& trust, Deadline deadline);

// As above, trusting AdminTrustFromEnvironment(), within `timeout`.
Result<boost::json::object> AdminRequest(const std::string& socket,
                                         const boost::json::object& request,
                                         std::chrono::milliseconds timeout);

// As AdminRequest, but an error reply is a failure too: its code and message
// (local_protocol::ReplyStatus). Success: a reply whose "ok" is true.
Result<boost::json::object> AdminCall(const std::string& socket,
                                      const boost::json::object& request,
                                      const BrokerTrust& trust, Deadline deadline);
Result<boost::json::object> AdminCall(const std::string& socket,
                                      const boost::json::object& request,
                                      std::chrono::milliseconds timeout);

}  // namespace dsb

#endif  // DSB_COMMON_ADMIN_CLIENT_H_
