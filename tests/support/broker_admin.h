// Admin requests to a broker's local socket (what dsbctl does), for tests.
#ifndef DSB_TESTS_SUPPORT_BROKER_ADMIN_H_
#define DSB_TESTS_SUPPORT_BROKER_ADMIN_H_

#include <boost/json.hpp>
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/admin_client.h"
#include "common/local_protocol.h"

namespace dsb::testing {

// Sends `request` through the admin client (common/admin_client.h) and
// returns the reply object, whatever its "ok"; an empty object if the broker
// cannot be reached or answers something that is not a JSON object.
inline boost::json::object AskBroker(const std::filesystem::path& socket,
                                     const boost::json::object& request) {
  auto reply = AdminRequest(socket.string(), request, std::chrono::seconds(10));
  return reply.ok() ? std::move(*reply) : boost::json::object{};
}

// One request that is only an op (status, leases, clients, ping, goodbye).
inline boost::json::object AskBroker(const std::filesystem::path& socket,
                                     local_protocol::Op op) {
  return AskBroker(socket, local_protocol::Request(op));
}

// The coordinator's ledger as broker `socket` reports it (`dsbctl leases`),
// or nullptr if it has none (not reachable, or single-machine mode).
inline const boost::json::object* LedgerOf(const boost::json::object& leases_reply) {
  const boost::json::value* l = leases_reply.if_contains("ledger");
  return l != nullptr && l->is_object() ? &l->as_object() : nullptr;
}

// True once the coordinator (asked through broker `socket`) answers and has
// left its learning period (C3).
inline bool LearningOver(const std::filesystem::path& socket) {
  const boost::json::object r = AskBroker(socket, local_protocol::Op::kLeases);
  const boost::json::object* l = LedgerOf(r);
  return l != nullptr && l->contains("learning") && l->at("learning").is_bool() &&
         !l->at("learning").as_bool();
}

// The first target's broker rows of the coordinator's ledger (empty if unavailable).
inline boost::json::array LedgerBrokers(const std::filesystem::path& socket) {
  const boost::json::object r = AskBroker(socket, local_protocol::Op::kLeases);
  const boost::json::object* l = LedgerOf(r);
  if (l == nullptr) return {};
  return l->at("targets").as_array()[0].as_object().at("brokers").as_array();
}

// Field `key` of broker `id` in ledger rows (-1 if the broker is not listed or the value is null).
inline std::int64_t LedgerField(const boost::json::array& brokers, const std::string& id,
                                const char* key) {
  for (const auto& b : brokers) {
    if (b.as_object().at("broker").as_string() == id) {
      const boost::json::value& v = b.as_object().at(key);
      return v.is_null() ? -1 : v.to_number<std::int64_t>();
    }
  }
  return -1;
}

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_BROKER_ADMIN_H_
