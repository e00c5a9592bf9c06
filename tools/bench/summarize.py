#!/usr/bin/env python3
"""Turns one or more dsb-bench JSON outputs into the Markdown tables of
docs/benchmarks.md: for every benchmark, the median of each metric over the
runs and its spread (min-max).

    dsb-bench --benchmark_out=run1.json --benchmark_out_format=json   # x N
    tools/bench/summarize.py run1.json run2.json run3.json
"""
import json
import statistics
import sys

# Which numbers each family reports (counter names, or cpu_time/real_time in ns).
FAMILIES = [
    ("Uncontended acquire+release pair (one thread)",
     lambda n: not any(k in n for k in ("Contended", "Wake", "Reclaim", "Rss", "Socket")),
     [("cpu_time", "CPU ns/pair"), ("real_time", "wall ns/pair")]),
    ("Unix-socket round trip", lambda n: "Socket" in n,
     [("real_time", "wall ns/round trip"), ("cpu_time", "client CPU ns")]),
    ("Contended: 2 processes x 4 threads", lambda n: "Contended" in n,
     [("cpu_ns_per_op", "CPU ns/op (both processes)"), ("ops_per_s", "ops/s"),
      ("child_share", "child share"), ("waited_share", "waited share")]),
    ("Wake latency: release in one process -> waiter running in the other",
     lambda n: "Wake" in n, [("p50_ns", "p50 ns"), ("p99_ns", "p99 ns"), ("max_ns", "max ns")]),
    ("Slot reclaim after SIGKILL (quarantine 0)", lambda n: "Reclaim" in n,
     [("p50_ns", "p50 ns"), ("p99_ns", "p99 ns"), ("max_ns", "max ns"),
      ("over_1ms_share", "share > 1 ms"), ("reap_p50_ns", "of which kill->waitpid p50 ns")]),
    ("Broker resident memory", lambda n: "Rss" in n,
     [("rss_kb_before", "VmRSS kB before"), ("rss_kb_64_clients", "VmRSS kB, 64 clients"),
      ("hwm_kb", "VmHWM kB")]),
]


def fmt(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}" if v else "0"


# The targets, as (label, numerator, denominator, metric, bound): the
# ratio num/den of `metric` is computed per run (both from the same run), then
# summarised. bound: ("<=", x) or (">=", x).
RATIOS = [
    ("fast path: client TryAcquire+release vs sem_trywait+sem_post", "BM_DsbClientTryAcquireRelease",
     "BM_PosixSemTrywaitPost", "cpu_time", ("<=", 2.0)),
    ("fast path: client Acquire+release vs sem_wait+sem_post", "BM_DsbClientAcquireRelease",
     "BM_PosixSemWaitPost", "cpu_time", ("<=", 2.0)),
    ("fast path: raw SlotTable TryAcquire+Release vs sem_trywait+sem_post",
     "BM_DsbSlotTableTryAcquireRelease", "BM_PosixSemTrywaitPost", "cpu_time", ("<=", 2.0)),
    ("SEM_UNDO wait+post vs client TryAcquire+release", "BM_SysvSemUndoWaitPost",
     "BM_DsbClientTryAcquireRelease", "cpu_time", (">=", 50.0)),
    ("contended cap 4: raw SlotTable vs sem_t (CPU/op)", "BM_DsbSlotTableContended/cap:4",
     "BM_PosixSemContended/cap:4", "cpu_ns_per_op", ("<=", 1.10)),
    ("contended cap 31: raw SlotTable vs sem_t (CPU/op)", "BM_DsbSlotTableContended/cap:31",
     "BM_PosixSemContended/cap:31", "cpu_ns_per_op", ("<=", 1.10)),
    ("contended cap 4: client vs sem_t (CPU/op)", "BM_DsbClientContended/cap:4",
     "BM_PosixSemContended/cap:4", "cpu_ns_per_op", ("<=", 1.10)),
    ("contended cap 31: client vs sem_t (CPU/op)", "BM_DsbClientContended/cap:31",
     "BM_PosixSemContended/cap:31", "cpu_ns_per_op", ("<=", 1.10)),
    ("wake p50: client Acquire vs sem_wait", "BM_DsbClientWakeLatency", "BM_PosixSemWakeLatency",
     "p50_ns", ("<=", 1.2)),
    ("wake p50: raw SlotTable Acquire vs sem_wait", "BM_DsbSlotTableWakeLatency",
     "BM_PosixSemWakeLatency", "p50_ns", ("<=", 1.2)),
]
ABSOLUTE = [
    ("reclaim after SIGKILL, shm level: p99", "BM_DsbReclaimAfterKillShm", "p99_ns", 1e6, "ns"),
    ("reclaim after SIGKILL, shm level: max", "BM_DsbReclaimAfterKillShm", "max_ns", 1e6, "ns"),
    ("reclaim after SIGKILL via broker: p50", "BM_DsbReclaimAfterKillBroker", "p50_ns", 1e6, "ns"),
    ("reclaim after SIGKILL via broker: p99", "BM_DsbReclaimAfterKillBroker", "p99_ns", 1e6, "ns"),
    ("reclaim after SIGKILL via broker: max", "BM_DsbReclaimAfterKillBroker", "max_ns", 1e6, "ns"),
    ("broker VmRSS with 64 clients", "BM_DsbBrokerRss64Clients", "rss_kb_64_clients", 20 * 1024, "kB"),
]


def find(run, prefix):
    for name, b in run.items():
        if (name == prefix or name.startswith(prefix + "/")) and not b.get("error_occurred"):
            return b
    return None


def targets(runs):
    print("### Targets (each ratio taken within one run)\n")
    print("| target | per-run values | median | bound | met in |")
    print("|---|---|---|---|---|")
    for label, num, den, metric, (op, bound) in RATIOS:
        vals = []
        for r in runs:
            a, b = find(r, num), find(r, den)
            if a and b and metric in a and metric in b and b[metric]:
                vals.append(a[metric] / b[metric])
        if not vals:
            continue  # not in these runs (filtered out, or failed)
        met = sum(1 for v in vals if (v <= bound if op == "<=" else v >= bound))
        print(f"| {label} | {', '.join(f'{v:.2f}' for v in vals)} | {statistics.median(vals):.2f} "
              f"| {op} {bound} | {met}/{len(vals)} runs |")
    for label, name, metric, bound, unit in ABSOLUTE:
        vals = [b[metric] for r in runs if (b := find(r, name)) and metric in b]
        if not vals:
            continue
        met = sum(1 for v in vals if v < bound)
        print(f"| {label} | {', '.join(fmt(v) for v in vals)} {unit} | {fmt(statistics.median(vals))} "
              f"| < {fmt(bound)} {unit} | {met}/{len(vals)} runs |")
    print()


def main(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append({b["name"]: b for b in json.load(f)["benchmarks"]
                         if b.get("run_type", "iteration") == "iteration"})
    names = list(runs[0].keys())
    print(f"Runs: {len(runs)}. Cells: median [min-max] over the runs.\n")
    for title, match, metrics in FAMILIES:
        rows = [n for n in names if match(n)]
        if not rows:
            continue
        present = [(k, h) for k, h in metrics if any(k in r.get(n, {}) for r in runs for n in rows)]
        print(f"### {title}\n")
        print("| benchmark | " + " | ".join(h for _, h in present) + " |")
        print("|---|" + "---|" * len(present))
        for n in rows:
            cells = []
            for k, _ in present:
                vals = [r[n][k] for r in runs if n in r and k in r[n] and not r[n].get("error_occurred")]
                if not vals:
                    cells.append("-")
                elif len(vals) == 1:
                    cells.append(fmt(vals[0]))
                else:
                    cells.append(f"{fmt(statistics.median(vals))} [{fmt(min(vals))}-{fmt(max(vals))}]")
            print(f"| `{n}` | " + " | ".join(cells) + " |")
        print()
    targets(runs)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
