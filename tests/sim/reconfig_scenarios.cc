// Named scenarios of the reconfiguration rules R0-R5 (DESIGN section 7): the
// six failures of the first wording and the issue-8 cases, each with the
// switch whose absence breaks S. Times: D = 3 s, H = 1 s, messages 1-20 ms.
#include <algorithm>
#include <array>

#include "tests/sim/reconfig.h"

namespace dsb::sim::reconfig {
namespace {

// b0 coordinates; allowances {system_slots, floor} per broker; L.
ReconfigConfig Base(const ReconfigSwitches& sw, bool verbose, std::uint32_t limit,
                    std::vector<Allowance> allowances, std::vector<std::uint32_t> demand,
                    RealTime run_for) {
  ReconfigConfig c;
  c.switches = sw;
  c.verbose = verbose;
  c.limit = limit;
  c.file.limit = limit;
  c.file.coordinator = "b0";
  for (std::size_t i = 0; i < allowances.size(); ++i) {
    const std::string id = "b" + std::to_string(i);
    c.file.brokers[id] = allowances[i];
    c.machines.push_back(id);
    c.registrations.push_back(allowances[i].system_slots);
  }
  c.demand = std::move(demand);
  c.run_for = run_for;
  return c;
}

// R1: b1 restarts with a file whose floor is raised 2 -> 5 at the same
// generation (an operator's edit without a new generation).
ReconfigStats FloorRaisedAtSameGeneration(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 8, {{1, 0}, {1, 2}, {1, 0}}, {3, 2, 3}, Sec(20)));
  sim.At(Sec(6), [&sim] {
    ClusterFile f = sim.file(1);
    f.brokers["b1"].floor = 5;
    sim.Restart(1, Ms(100));
    sim.SetFile(1, f);
    sim.SetDemand(1, 5);
  });
  sim.Run();
  return sim.stats();
}

// R2: generation 2 moves b1's floor (3) to b2. The coordinator restarts with
// it first; b1 answers its hello and is then cut off, still running
// generation 1 with its floor in use (accepted, unreachable: R1 lets it use
// its acceptance). b2 restarts with its raised floor. The coordinator must
// count b1 with what it last ACCEPTED (its record: 1 + 3), not with the new
// file (1 + 0), and keep counting it when no instance of it is heard.
ReconfigStats LoweredFloorStillInUse(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 9, {{1, 0}, {1, 3}, {1, 0}}, {3, 3, 4}, Sec(25)));
  ClusterFile g2 = sim.file(0);
  g2.generation = 2;
  g2.brokers["b1"].floor = 0;
  g2.brokers["b2"].floor = 3;
  sim.At(Sec(5.3), [&sim, g2] {
    sim.Restart(0, Ms(30));
    sim.SetFile(0, g2);
  });
  // The hello (sent at the coordinator's start, 5.33 s) has been answered.
  sim.At(Sec(5.45), [&sim] { sim.CutLink(0, 1, true); });
  sim.At(Sec(6.5), [&sim, g2] {
    sim.Restart(2, Ms(100));
    sim.SetFile(2, g2);
  });
  sim.Run();
  return sim.stats();
}

// R2 with a clone: a second machine with b1's id and disk. Its instance is
// new and pending; it may be accepted only when both fit (the original's
// allowance and owed still count).
ReconfigStats CloneAcceptedOnlyWhenItFits(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 9, {{1, 0}, {1, 2}, {1, 0}}, {3, 2, 3}, Sec(25)));
  sim.At(Sec(6), [&sim] { sim.Clone(1, 1, 2); });
  sim.Run();
  return sim.stats();
}

// R3: generation 2 moves the coordinator to b1. The old coordinator b0 steps
// down on b1's hello; later, cut off from the others, it crashes and restarts
// with its old file (generation 1). Without the mark it forgot it stepped
// down: after its learning period it grants the pool to itself while b1
// grants it to b1 and b2.
ReconfigStats OldCoordinatorForgetsItSteppedDown(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 6, {{1, 0}, {1, 0}, {1, 0}}, {3, 3, 3}, Sec(25)));
  ClusterFile g2 = sim.file(0);
  g2.generation = 2;
  g2.coordinator = "b1";
  sim.At(Sec(3), [&sim, g2] {
    sim.Restart(1, Ms(100));
    sim.SetFile(1, g2);
  });
  sim.At(Sec(4), [&sim, g2] {
    sim.Restart(2, Ms(100));
    sim.SetFile(2, g2);
  });
  sim.At(Sec(9), [&sim] {
    sim.Partition(0, true);  // the hellos of b1 and the answers of b2 do not reach it
    sim.Crash(0);
  });
  sim.At(Sec(9.1), [&sim] { sim.Start(0); });
  sim.Run();
  return sim.stats();
}

// R1 (and R2's erase): generation 2 removes b2 (its floor goes to b1). b2,
// refused as removed, erases its acceptance; its users leave; it is turned
// off, and later boots again with its old file and new users.
ReconfigStats RemovedBrokerReboots(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 9, {{1, 0}, {1, 2}, {1, 2}}, {3, 2, 2}, Sec(25)));
  ClusterFile g2 = sim.file(0);
  g2.generation = 2;
  g2.brokers.erase("b2");
  g2.brokers["b1"].floor = 4;
  sim.At(Sec(3), [&sim, g2] {
    sim.Restart(0, Ms(30));
    sim.SetFile(0, g2);
  });
  sim.At(Sec(4), [&sim, g2] {
    sim.Restart(1, Ms(30));
    sim.SetFile(1, g2);
    sim.SetDemand(1, 5);
  });
  sim.At(Sec(5), [&sim] {
    sim.SetRegistrations(2, 0);
    sim.SetDemand(2, 0);
  });
  sim.At(Sec(12), [&sim] { sim.PowerOff(2); });
  sim.At(Sec(13), [&sim] { sim.Reboot(2, 1, 2); });
  sim.Run();
  return sim.stats();
}

// R1: a cloned workstation (b1's disk and file) boots while the original
// runs; its DigiScope registers and asks for actions at once.
ReconfigStats CloneRegistersAtOnce(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 8, {{1, 0}, {1, 2}, {1, 0}}, {3, 2, 3}, Sec(20)));
  sim.At(Sec(6), [&sim] { sim.Clone(1, 1, 2); });
  sim.Run();
  return sim.stats();
}

// R0: the image of b1 was copied; after a power cut the original and the
// copy boot at the same moment. With the instance id stored in state_dir
// both run epoch e + 1 with one instance id: the coordinator sees one
// instance and answers both (exact duplicates get the same grant).
ReconfigStats InstanceIdCopiedWithDiskImage(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 8, {{1, 0}, {1, 2}, {1, 0}}, {2, 4, 2}, Sec(20)));
  sim.At(Sec(5), [&sim] {
    const int clone = sim.Clone(1, 1, 4, /*start=*/false);
    sim.Crash(1);
    sim.At(sim.now() + Ms(500), [&sim, clone] {
      sim.Start(1);
      sim.Start(clone);
    });
  });
  sim.Run();
  return sim.stats();
}

// R4: a clone with a newer epoch; the original keeps using its lease. The
// ledger must keep the original's owed until it is silent.
ReconfigStats TwoLiveInstancesOfOneId(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 6, {{1, 0}, {1, 0}, {1, 0}}, {0, 3, 0}, Sec(20)));
  sim.At(Sec(4), [&sim] {
    sim.SetDemand(0, 3);
    sim.SetDemand(2, 3);
  });
  sim.At(Sec(4.01), [&sim] { sim.Clone(1, 0, 0); });
  sim.Run();
  return sim.stats();
}

// R3: a rolling update to generation 2 that moves the coordinator b0 -> b1,
// brokers restarted cleanly one at a time, 6 s apart, in every one of the
// six orders (one run each; the figures add up).
ReconfigStats RollingUpdateMovesCoordinator(const ReconfigSwitches& sw, bool verbose) {
  ReconfigStats total;
  std::array<int, 3> order{0, 1, 2};
  do {
    ReconfigSim sim(Base(sw, verbose, 8, {{1, 0}, {1, 1}, {1, 1}}, {3, 3, 3}, Sec(30)));
    ClusterFile g2 = sim.file(0);
    g2.generation = 2;
    g2.coordinator = "b1";
    for (std::size_t k = 0; k < order.size(); ++k) {
      const int m = order[k];
      sim.At(Sec(4 + 6 * static_cast<double>(k)), [&sim, g2, m] {
        sim.Restart(m, Ms(200));
        sim.SetFile(m, g2);
      });
    }
    sim.Run();
    const ReconfigStats& s = sim.stats();
    total.events += s.events;
    total.s_violations += s.s_violations;
    total.max_used = std::max(total.max_used, s.max_used);
    total.warnings += s.warnings;
    total.accepted += s.accepted;
    if (total.first_violation.empty() && !s.first_violation.empty()) {
      total.first_violation = "order " + std::to_string(order[0]) + std::to_string(order[1]) +
                              std::to_string(order[2]) + ": " + s.first_violation;
    }
  } while (std::next_permutation(order.begin(), order.end()));
  return total;
}

// R5: b1 holds a lease of 4 (the whole pool) and uses 3 of it when it stops
// cleanly; its goodbye names 3 (owed from then on: the goodbye drops its
// grants). A thread asks for an action 10 ms later, while b0 and b2 wait for
// the pool. Frozen first, the thread waits; with the goodbye sent before the
// freeze it gets the 4th slot of the lease, which the coordinator no longer
// counts and gives to b0 or b2. The successor starts 2 s later.
ReconfigStats PlannedRestartWithGoodbye(const ReconfigSwitches& sw, bool verbose) {
  ReconfigSim sim(Base(sw, verbose, 7, {{1, 0}, {1, 0}, {1, 0}}, {0, 4, 0}, Sec(20)));
  sim.At(Sec(6), [&sim] {
    sim.SetDemand(1, 3);
    sim.SetDemand(0, 4);
    sim.SetDemand(2, 4);
    sim.Restart(1, Sec(2));
  });
  sim.At(Sec(6.01), [&sim] { sim.SetDemand(1, 4); });
  sim.Run();
  return sim.stats();
}

}  // namespace

const std::vector<ReconfigScenario>& ReconfigScenarios() {
  static const std::vector<ReconfigScenario> list = {
      {"FloorRaisedAtSameGeneration",
       "b1 restarts with its floor raised 2 -> 5 and the same generation", "r1-refuse-other-file",
       FloorRaisedAtSameGeneration},
      {"CloneAcceptedOnlyWhenItFits", "a clone of b1 is accepted only when both fit",
       "r2-fit-test", CloneAcceptedOnlyWhenItFits},
      {"LastAcceptedFromFileNotRecord",
       "generation 2 moves b1's floor to b2; b1, cut off, still uses it when b2's raise is "
       "accepted: the restarted coordinator must count b1 by its record",
       "r2-records", LoweredFloorStillInUse},
      {"UnheardBrokerStillCounted",
       "as LastAcceptedFromFileNotRecord: b1, unheard past silence, still counts",
       "r2-count-unheard",
       LoweredFloorStillInUse},
      {"OldCoordinatorForgetsItSteppedDown",
       "the generation-1 coordinator restarts, cut off from the new one, with its old file",
       "r3-superseded-mark", OldCoordinatorForgetsItSteppedDown},
      {"RemovedBrokerReboots", "a removed broker boots again with its old file and new users",
       "r1-nothing-until-accepted", RemovedBrokerReboots},
      {"CloneRegistersAtOnce", "a cloned workstation's DigiScope registers at once",
       "r1-nothing-until-accepted", CloneRegistersAtOnce},
      {"InstanceIdCopiedWithDiskImage",
       "b1 and a copy of its disk boot at the same moment after a power cut",
       "r0-fresh-instance", InstanceIdCopiedWithDiskImage},
      {"TwoLiveInstancesOfOneId", "a clone of b1 with a newer epoch while b1 uses its lease",
       "r4-keep-older", TwoLiveInstancesOfOneId},
      {"RollingUpdateMovesCoordinator",
       "generation 2 moves the coordinator b0 -> b1, restarts in all six orders", "r3-step-down",
       RollingUpdateMovesCoordinator},
      {"PlannedRestartWithGoodbye",
       "b1 restarts cleanly holding 3 of a lease of 4; a thread asks right after the goodbye",
       "r5-freeze-first", PlannedRestartWithGoodbye},
  };
  return list;
}

}  // namespace dsb::sim::reconfig
