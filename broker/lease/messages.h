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
  // Registered clients (system slots in use; adopted ones included). R2 counts
  // an instance with its registrations where they exceed its allowance.
  std::uint32_t registered = 0;
  bool operator==(const TargetReport&) const = default;
};

// Broker -> coordinator, every D/3. A resend keeps request_id (and the broker
// keeps the first send time as t_sent).
struct RenewRequest {
  std::string broker_id;
  std::uint64_t epoch = 0;       // R0: a counter in state_dir, bumped on every broker start
  std::uint64_t instance = 0;    // R0: random per start, never stored (tells clones apart)
  std::uint64_t request_id = 0;  // strictly increasing within an epoch
  std::uint64_t generation = 0;  // R1: the `generation` of the broker's cluster file
  std::string file_hash;         // R1: hex SHA-256 of the broker's cluster file
  // R2: a broker the coordinator refused as removed has erased its accepted
  // configuration (written and synced) and reports what it still holds.
  bool erased = false;
  std::vector<TargetReport> targets;
  bool operator==(const RenewRequest&) const = default;
};

struct TargetGrant {
  std::string target;
  std::uint32_t amount = 0;  // pool slots this broker may use (on top of its floor)
  bool operator==(const TargetGrant&) const = default;
};

// The coordinator's word on one broker instance (R1). Only kAccepted lets the
// instance use its allowance (system_slots, floor) and the amounts granted.
enum class Verdict : std::uint8_t {
  kAccepted = 1,    // use the allowance of the (identical) cluster file, and the grant
  kPending = 2,     // not yet (learning, waiting for the previous coordinator, or it does
                    // not fit yet): keep the last accepted allowance, admit nothing new
                    // if none was accepted
  kRefused = 3,     // file differs at one generation, or an older generation, or an
                    // older instance the ledger forgot: floor 0, no new registration
  kRemoved = 4,     // not in the coordinator's file: as kRefused, and erase the
                    // accepted configuration before the next report
  kSuperseded = 5,  // this coordinator stepped down (R3): as kRefused
};
const char* VerdictName(Verdict v);

// Coordinator -> broker: the answer to one request (names epoch, instance and
// request id, B1a).
struct Grant {
  std::string broker_id;
  std::uint64_t epoch = 0;
  std::uint64_t instance = 0;
  std::uint64_t request_id = 0;
  Duration term{};           // D; the lease counts from the request's first send
  bool learning = false;     // coordinator in learning mode (C3): no grant applied
  Verdict verdict = Verdict::kAccepted;
  std::uint64_t generation = 0;  // the coordinator's cluster file generation
  std::string reason;            // why not accepted (for the broker's log); may be empty
  // With kSuperseded: the coordinator that took over, "id@host:port", if known
  // (the broker then reports there, so its registrations stay counted).
  std::string successor;
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
  std::uint64_t instance = 0;
  std::string target;
  std::uint32_t held = 0;
  std::uint32_t refusals = 1;
  bool operator==(const RefusalReport&) const = default;
};

// Broker -> coordinator on a clean stop (R5), after the instance stopped
// admitting anything: what it still holds per target, handed to its successor
// on this machine (which adopts those clients and counts them in its first
// report). The coordinator counts the instance with exactly that from then on,
// until the successor's first request or silence. No reply.
struct GoodbyeTarget {
  std::string target;
  std::uint32_t pool_held = 0;   // max(0, actions - accepted floor)
  std::uint32_t actions = 0;     // action slots held
  std::uint32_t registered = 0;  // registrations held
  bool operator==(const GoodbyeTarget&) const = default;
};
struct Goodbye {
  std::string broker_id;
  std::uint64_t epoch = 0;
  std::uint64_t instance = 0;
  std::vector<GoodbyeTarget> targets;
  bool operator==(const Goodbye&) const = default;
};

// A coordinator's acceptance of one broker instance (R2), kept durably by the
// coordinator and handed to its successor (R3).
struct AcceptanceRecord {
  std::string broker_id;
  std::uint64_t epoch = 0;
  std::uint64_t instance = 0;
  std::uint64_t generation = 0;
  std::vector<std::string> targets;           // names, in the order of the two below
  std::vector<std::uint32_t> system_slots;    // per target
  std::vector<std::uint32_t> floors;          // per target
  bool operator==(const AcceptanceRecord&) const = default;
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
