// Messages of the lease protocol (DESIGN section 7), as plain values.
//
// These structs are what the ledger (coordinator side) and the lease agent
// (broker side) exchange. broker/wire/ encodes them on the wire; the
// deterministic simulation (tests/sim) passes them through a simulated network.
// Field meanings follow DESIGN.md rules B1, B1a, B2, C1-C3.
#ifndef DSB_BROKER_LEASE_MESSAGES_H_
#define DSB_BROKER_LEASE_MESSAGES_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace dsb::lease {

using Duration = std::chrono::nanoseconds;
// A point on one machine's own monotonic clock. Never sent between machines.
using TimePoint = std::chrono::steady_clock::time_point;

// What a broker reports for one target in each renew (B2: pool_held and
// applied are read at one instant).
struct TargetReport {
  std::string target;
  std::uint32_t pool_held = 0;   // max(0, actions - floor)
  std::uint64_t applied = 0;     // request id of the grant applied (0 if none)
  std::uint32_t held = 0;        // all action slots held (for display)
  std::uint32_t waiting = 0;     // threads waiting for an action slot
  std::uint32_t wanted = 0;      // pool slots this broker would use (demand above floor)
  bool operator==(const TargetReport&) const = default;
};

// Broker -> coordinator, every D/3. A resend keeps request_id (and the broker
// keeps the first send time as t_sent).
struct RenewRequest {
  std::string broker_id;
  std::uint64_t epoch = 0;       // bumped on every broker start
  std::uint64_t request_id = 0;  // strictly increasing within an epoch
  std::vector<TargetReport> targets;
  bool operator==(const RenewRequest&) const = default;
};

struct TargetGrant {
  std::string target;
  std::uint32_t amount = 0;  // pool slots this broker may use (on top of its floor)
  bool operator==(const TargetGrant&) const = default;
};

// Coordinator -> broker: the answer to one request (names epoch + request id, B1a).
struct Grant {
  std::string broker_id;
  std::uint64_t epoch = 0;
  std::uint64_t request_id = 0;
  Duration term{};           // D; the lease counts from the request's first send
  bool learning = false;     // coordinator in learning mode (C3): no grant applied
  std::vector<TargetGrant> targets;
  bool operator==(const Grant&) const = default;
};

// Broker -> coordinator: a client reported that the server refused a session
// for exceeding its limit (DESIGN section 8). `held` is what this broker held
// for the target at the refusal (its system slots + action slots held, cooling
// and quarantined ones included, the refused attempt not counted). The
// coordinator adds an upper bound of what the other brokers held and feeds its
// LimitPolicy. No reply. `refusals` counts reports folded into this one (>= 1).
struct RefusalReport {
  std::string broker_id;
  std::uint64_t epoch = 0;
  std::string target;
  std::uint32_t held = 0;
  std::uint32_t refusals = 1;
  bool operator==(const RefusalReport&) const = default;
};

// Coordinator -> broker after Revoke/Drain: "renew now" (a hint only; losing it
// only delays the shrink to the broker's next renew, and owed does not fall
// meanwhile, C2). Ignored unless the epoch is the broker's own.
struct RevokeNotice {
  std::string broker_id;
  std::uint64_t epoch = 0;
  bool operator==(const RevokeNotice&) const = default;
};

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_MESSAGES_H_
