// Test-only switches that turn off one clause of the lease protocol each.
//
// Production code always uses the default (every clause on). The deterministic
// simulation (tests/sim) turns one clause off at a time to show that a named
// scenario then breaks S, i.e. that the clause guards something (DESIGN section 7).
#ifndef DSB_BROKER_LEASE_SWITCHES_H_
#define DSB_BROKER_LEASE_SWITCHES_H_

namespace dsb::lease {

struct ProtocolSwitches {
  // C1: owed counts every grant sent with request id >= applied. Off: owed is
  // max(pool_held, amount of the newest grant sent) ("the coordinator trusts its
  // latest decision").
  bool c1_owed_counts_unacked_grants = true;
  // C2: Revoke/Drain do not lower owed. Off: they set owed to 0 at once.
  bool c2_revoke_keeps_owed = true;
  // C3: a ledger started without state answers no request for (D + H)(1 + eps).
  // Off: it grants at once.
  bool c3_learning = true;
  // B1: the lease counts from the FIRST send of the request. Off: from the last
  // resend.
  bool b1_first_t_sent = true;
  // B1: the lease counts until t_sent + D(1 - eps). Off: until t_sent + D.
  bool b1_eps_margin = true;
  // B1: registrations and actions are two counters. Off: an action may use an
  // idle system slot (one shared capacity system_slots + floor + lease).
  bool b1_two_counters = true;
  // B1a: apply a grant only if its request id is greater than the applied one.
  // Off: any grant for a request we sent is applied, in arrival order.
  bool b1a_order = true;
  // B1a: apply a grant only if its epoch is ours. Off: the epoch is not checked.
  bool b1a_epoch = true;
  // B2: pool_held and applied are read at one instant. Off: pool_held is the
  // value read at the previous renew, applied is read now.
  bool b2_one_instant = true;
  // Requests: a request not newer than the newest processed changes nothing but
  // the silence timer. Off: every request is processed as the newest.
  bool request_staleness = true;
  // C2/C3: the coordinator's silence (and learning) period is (D + H)(1 + eps)
  // on its own clock. Off: D + H, without the drift factor (issue 8).
  bool c2_silence_eps = true;
  // R1: a started instance uses nothing (floor 0, no registration) until the
  // coordinator accepted it. Off: it uses its file's allowance at once.
  bool r1_nothing_until_accepted = true;
  // R1: the ledger refuses a file that differs at its generation, or an older
  // generation. Off: any file is accepted with the ledger's allowance for that id.
  bool r1_refuse_other_file = true;
  // R2: a new instance is accepted only when its allowance fits. Off: at once.
  bool r2_fit_test = true;
  // R2: a broker no instance of which is heard still counts its allowance.
  // Off: only heard instances count.
  bool r2_count_unheard = true;
  // R3: a request of a newer generation makes the ledger step down, and
  // WaitForPrevious closes the gate. Off: both are ignored.
  bool r3_step_down = true;
  // R4: an older instance's owed is kept until it is silent. Off: a new
  // instance of an id drops the older instances' grants (the pre-R4 rule).
  bool r4_keep_older = true;

  bool operator==(const ProtocolSwitches&) const = default;
};

}  // namespace dsb::lease

#endif  // DSB_BROKER_LEASE_SWITCHES_H_
