#!/usr/bin/env python3
"""Estimate the wall time of `ctest -jN` in a build folder from its measured test costs.

    tools/ctest_schedule.py BUILD_DIR [-j 2] [--skip-labels 'realserver|bench|...']

Reads the tests and their RESOURCE_LOCK / RUN_SERIAL / COST properties from
`ctest --show-only=json-v1` and each test's measured time from
BUILD_DIR/Testing/Temporary/CTestCostData.txt (a past run there), then replays CTest's
scheduler: the costliest test first (ties in declaration order), a test waits while a lock it
needs is held, a RUN_SERIAL test runs alone. It prints the estimate for a fresh clone (no cost
history: CTest orders by the COST property alone) and for a folder with history (ordered by
the measured costs), the sum of all test times and the chain through each lock (the floor the
lock sets). Measured times are taken as they are: a test's own time is assumed not to change
with what runs beside it, so this is the idle-machine estimate of docs/notes.md "CI time".
"""
import argparse
import heapq
import json
import re
import subprocess
import sys
from pathlib import Path


def load(build_dir, skip_labels):
    listing = json.loads(subprocess.run(
        ["ctest", "--test-dir", str(build_dir), "--show-only=json-v1"],
        check=True, capture_output=True, text=True).stdout)
    cost_file = Path(build_dir, "Testing", "Temporary", "CTestCostData.txt")
    if not cost_file.is_file():
        sys.exit(f"ctest_schedule: {cost_file} does not exist: run the tests there once first")
    measured = {}
    for line in cost_file.read_text().splitlines():
        if line.startswith("---"):
            break
        parts = line.split()
        if len(parts) == 3:
            measured[parts[0]] = float(parts[2])
    tests, unmeasured = [], 0
    for index, t in enumerate(listing["tests"]):
        props = {p["name"]: p["value"] for p in t.get("properties", [])}
        labels = props.get("LABELS", [])
        if t["name"].endswith("_NOT_BUILT"):
            continue
        if skip_labels and any(re.search(skip_labels, label) for label in labels):
            continue
        if t["name"] not in measured:
            unmeasured += 1
        tests.append({"index": index, "name": t["name"], "time": measured.get(t["name"], 0.0),
                      "cost": float(props.get("COST", 0.0)),
                      "locks": props.get("RESOURCE_LOCK", []),
                      "serial": bool(props.get("RUN_SERIAL", False))})
    return tests, unmeasured


def simulate(tests, jobs, key):
    pending = sorted(tests, key=lambda t: (-key(t), t["index"]))
    now, running, held, serial = 0.0, [], set(), False
    while pending or running:
        progress = True
        while progress and not serial and len(running) < jobs:
            progress = False
            for k, t in enumerate(pending):
                if (t["serial"] and running) or any(lock in held for lock in t["locks"]):
                    continue
                pending.pop(k)
                heapq.heappush(running, (now + t["time"], t["index"], t))
                held.update(t["locks"])
                serial = t["serial"]
                progress = True
                break
        if not running:
            break
        now, _, t = heapq.heappop(running)
        held.difference_update(t["locks"])
        if t["serial"]:
            serial = False
    return now


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--skip-labels", default="", help="regex of labels left out (as ctest -LE)")
    args = ap.parse_args()
    tests, unmeasured = load(args.build_dir, args.skip_labels)
    total = sum(t["time"] for t in tests)
    print(f"{len(tests)} tests ({unmeasured} without a measured time), sum {total:.0f} s")
    for lock in sorted({lock for t in tests for lock in t["locks"]}):
        chain = sum(t["time"] for t in tests if lock in t["locks"])
        print(f"  chain through lock {lock}: {chain:.0f} s")
    plain = simulate(tests, args.jobs, lambda t: 0.0)
    fresh = simulate(tests, args.jobs, lambda t: t["cost"])
    history = simulate(tests, args.jobs, lambda t: t["time"])
    print(f"ctest -j{args.jobs}: fresh clone {fresh:.0f} s (COST properties; {plain:.0f} s in "
          f"declaration order, as without them), with cost history {history:.0f} s")


if __name__ == "__main__":
    main()
