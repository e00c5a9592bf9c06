// Sample wire messages shared by the wire tests.
#ifndef DSB_TESTS_BROKER_WIRE_TEST_MESSAGES_H_
#define DSB_TESTS_BROKER_WIRE_TEST_MESSAGES_H_

#include <chrono>
#include <limits>
#include <string>

#include "broker/wire/auth.h"
#include "broker/wire/codec.h"

namespace dsb::wire::testing {

inline lease::RenewRequest SampleRenew() {
  lease::RenewRequest r;
  r.broker_id = "ws-a";
  r.epoch = 7;
  r.request_id = 42;
  r.targets.push_back({"exch01/svc-digiscope", 3, 41, 5, 2, 4});
  r.targets.push_back({"pg/digiscope", 0, 0, 0, 0, 0});
  return r;
}

inline lease::Grant SampleGrant() {
  lease::Grant g;
  g.broker_id = "ws-a";
  g.epoch = 7;
  g.request_id = 42;
  g.term = std::chrono::seconds(15);
  g.learning = false;
  g.targets.push_back({"exch01/svc-digiscope", 6});
  g.targets.push_back({"pg/digiscope", 1});
  return g;
}

inline lease::RefusalReport SampleRefusal() {
  lease::RefusalReport r;
  r.broker_id = "ws-a";
  r.epoch = 7;
  r.target = "pg/digiscope";
  r.held = 11;
  r.refusals = 3;
  return r;
}

// A key of 32 bytes all equal to `fill`.
inline ClusterKey KeyOf(std::uint8_t fill) {
  Bytes raw(32, fill);
  return ClusterKey::FromBytes(raw).value();
}

inline Credentials CredentialsOf(std::string id, std::uint8_t key_fill,
                                 std::string hash = "0123456789abcdef") {
  Credentials c;
  c.key = KeyOf(key_fill);
  c.broker_id = std::move(id);
  c.cluster_hash = std::move(hash);
  return c;
}

}  // namespace dsb::wire::testing

#endif  // DSB_TESTS_BROKER_WIRE_TEST_MESSAGES_H_
