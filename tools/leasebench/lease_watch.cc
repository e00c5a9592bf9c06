// dsb-lease-watch: polls the coordinator's ledger and one broker's agent over
// their local sockets (the request `dsbctl leases --json` sends) every few ms,
// and prints when capacity has moved from one broker to another. Used by
// move_time.sh: spawning dsbctl + jq per poll gave ~150 ms resolution on a
// busy 2-core machine; one process with a loop gives a few ms.
//
// The coordinator is asked `leases` (answered locally there); the agent's
// broker is asked `status` (its "lease" part is the agent's own view).
// Events (wall-clock epoch milliseconds, so the calling script can subtract its
// own start time taken with `date +%s%3N`):
//   release_ms  first poll where the ledger shows --from owed == 0
//   move_ms     first poll where the ledger shows --to granted >= --at-least
//   agent_ms    first poll where --agent-socket's own agent has lease >= --at-least
// Output: one JSON line {"release_ms":..,"move_ms":..,"agent_ms":..,"polls":..,
// "poll_ms_mean":..}; a missing event is null. Exit 0 when all three were seen,
// 1 on timeout, 2 on bad flags.
// Single-threaded; blocking sockets.
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "common/admin_client.h"
#include "common/local_protocol.h"
#include "dsb/version.h"

namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

std::int64_t EpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One local request (`leases` or `status`) through the admin client; the
// reply object, or nullopt if the broker did not answer.
std::optional<json::object> Ask(const std::string& socket, dsb::local_protocol::Op op) {
  auto reply = dsb::AdminRequest(socket, dsb::local_protocol::Request(op),
                                 std::chrono::milliseconds(2000));
  if (!reply.ok()) return std::nullopt;
  return std::move(*reply);
}

// A broker's numeric field in the ledger's first target, or nullopt.
std::optional<std::int64_t> LedgerField(const json::object& reply, std::string_view broker,
                                        std::string_view field) {
  const json::value* ledger = reply.if_contains("ledger");
  if (ledger == nullptr || !ledger->is_object()) return std::nullopt;
  const auto& targets = ledger->as_object().at("targets").as_array();
  if (targets.empty()) return std::nullopt;
  for (const auto& b : targets.front().as_object().at("brokers").as_array()) {
    const auto& o = b.as_object();
    if (o.at("broker").as_string() == broker) return o.at(field).to_number<std::int64_t>();
  }
  return std::nullopt;
}

// The agent's applied lease in a `status` reply (first target), or nullopt.
std::optional<std::int64_t> AgentLease(const json::object& reply) {
  const json::value* agent = reply.if_contains("lease");
  if (agent == nullptr || !agent->is_object()) return std::nullopt;
  const auto& targets = agent->as_object().at("targets").as_array();
  if (targets.empty()) return std::nullopt;
  return targets.front().as_object().at("lease").to_number<std::int64_t>();
}

json::value OrNull(const std::optional<std::int64_t>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}

int Usage() {
  std::cerr << "usage: dsb-lease-watch --coordinator SOCKET --agent-socket SOCKET --from ID "
               "--to ID --at-least N [--timeout-ms 60000] [--interval-ms 5]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == "--version") {
    std::printf("dsb-lease-watch %s\n", DSB_VERSION_STRING);
    return 0;
  }
  std::string coordinator, agent_socket, from, to;
  std::int64_t at_least = -1, timeout_ms = 60000, interval_ms = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--coordinator") {
      coordinator = value;
    } else if (flag == "--agent-socket") {
      agent_socket = value;
    } else if (flag == "--from") {
      from = value;
    } else if (flag == "--to") {
      to = value;
    } else if (flag == "--at-least") {
      at_least = std::atoll(value);
    } else if (flag == "--timeout-ms") {
      timeout_ms = std::atoll(value);
    } else if (flag == "--interval-ms") {
      interval_ms = std::atoll(value);
    } else {
      return Usage();
    }
  }
  if (argc % 2 != 1 || coordinator.empty() || agent_socket.empty() || from.empty() || to.empty() ||
      at_least < 0 || timeout_ms <= 0 || interval_ms < 0) {
    return Usage();
  }

  std::optional<std::int64_t> release_ms, move_ms, agent_ms;
  std::int64_t polls = 0;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline && !(release_ms && move_ms && agent_ms)) {
    ++polls;
    if (auto r = Ask(coordinator, dsb::local_protocol::Op::kLeases)) {
      const std::int64_t t = EpochMs();
      if (!release_ms && LedgerField(*r, from, "owed") == 0) release_ms = t;
      if (!move_ms) {
        const auto granted = LedgerField(*r, to, "granted");
        if (granted && *granted >= at_least) move_ms = t;
      }
    }
    if (!agent_ms) {
      // `status`, not `leases`: a non-coordinator answers `leases` by asking
      // the coordinator over a new TCP connection, which would load the very
      // process being measured. `status` carries the agent's view locally.
      if (auto r = Ask(agent_socket, dsb::local_protocol::Op::kStatus)) {
        const auto lease = AgentLease(*r);
        if (lease && *lease >= at_least) agent_ms = EpochMs();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
  }
  const double elapsed_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  json::object out{{"release_ms", OrNull(release_ms)},
                   {"move_ms", OrNull(move_ms)},
                   {"agent_ms", OrNull(agent_ms)},
                   {"polls", polls},
                   {"poll_ms_mean", polls > 0 ? elapsed_ms / static_cast<double>(polls) : 0.0}};
  std::cout << json::serialize(out) << std::endl;
  return release_ms && move_ms && agent_ms ? 0 : 1;
}
