#!/usr/bin/env python3
"""The status page in a real browser (docs/status-page.md).

Starts a dsb-simserver, a real dsb-broker with broker.metrics on loopback and
two dsb-load runs through it:
  - target "steady": 2 instances x 6 threads that hold every session they get
    for 10 minutes, on a limit of 8: after the ramp the table is full (2
    system + 6 action slots) and 6 threads wait; nothing changes any more.
  - target "churn": 1 instance x 4 threads taking and releasing slots every
    20-200 ms, on a limit of 6 that an operator then lowers to 5 (dsbctl
    set-limit: a recent limit change for the page to show).
Then loads http://127.0.0.1:PORT/ in headless Chromium (virtual time lets the
page refresh a few times), reads the numbers it shows from the DOM (data-target
/ data-field attributes) and compares them with `dsbctl status --json` taken
just before and just after the browser ran:
  - "steady": every number must equal both dsbctl reads, and both reads must
    agree (the load cannot change them: it holds and waits; if they differ the
    test fails rather than widening the bound);
  - "churn": limit, limit source, capacity and clients must equal both reads
    (nothing changes them during the run); held and waiting change every few
    ms, so they are only checked to be in range (held <= capacity);
  - the page's uptime lies between the two reads' (it shows a live answer);
  - each target's chart has points for limit, capacity and held;
  - the limit change 6 -> 5 (source operator) is listed;
  - Chromium's own network log shows no request to anything but the broker's
    port (the host resolver maps every name to nothing, and the page carries a
    Content-Security-Policy of default-src 'none').
Also takes a 1280x900 screenshot (--screenshot PATH copies it there; the
docs' docs/img/status-page.png is made that way).

Exit 77 (CTest: skipped) when Chromium is not installed; the message says so.
"""

import argparse
import html.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SKIP = 77


def log(msg):
    print(f"status_page_test: {msg}", flush=True)


class Proc:
    """A child process whose stderr is followed line by line (to wait on log lines)."""

    def __init__(self, name, argv, **kw):
        self.name = name
        self.lines = []
        self.cond = threading.Condition()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, errors="replace", **kw)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern, timeout):
        """The first match of `pattern` in the output, waiting up to `timeout` s."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = end - time.monotonic()
                if left <= 0 or self.p.poll() is not None and not self.t.is_alive():
                    raise AssertionError(f"{self.name}: no line matching {pattern!r} within "
                                         f"{timeout} s; output:\n" + "\n".join(self.lines[-40:]))
                self.cond.wait(min(left, 0.5))

    def stop(self):
        # Only this process, by its PID.
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class PageReader(html.parser.HTMLParser):
    """Collects what a test reads off the page: numbers, chart lines, changes."""

    def __init__(self):
        super().__init__()
        self.numbers = {}      # (target, field) -> text
        self.series = {}       # (target, series) -> points
        self.changes = []      # (target, from, to, row texts)
        self.body = {}
        self.ids = {}
        self._chart_target = None
        self._text_for = None
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = a
        if tag == "body":
            self.body = a
        if tag == "dd" and "data-target" in a and "data-field" in a:
            self._text_for = (a["data-target"], a["data-field"])
            self.numbers[self._text_for] = ""
        if tag == "svg" and "data-target" in a:
            self._chart_target = a["data-target"]
        if tag == "polyline" and self._chart_target is not None:
            self.series[(self._chart_target, a.get("data-series"))] = int(a.get("data-points", "0"))
        if tag == "tr" and self.in_changes():
            self._row = {"target": a.get("data-target"), "cells": []}
        if tag == "td" and self._row is not None:
            if "data-from" in a:
                self._row["from"] = int(a["data-from"])
                self._row["to"] = int(a["data-to"])
            self._row["cells"].append("")

    def in_changes(self):
        return "changes-table" in self.ids

    def handle_endtag(self, tag):
        if tag == "dd":
            self._text_for = None
        if tag == "svg":
            self._chart_target = None
        if tag == "tr" and self._row is not None:
            if self._row["cells"]:
                self.changes.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._text_for is not None:
            self.numbers[self._text_for] += data
        if self._row is not None and self._row["cells"]:
            self._row["cells"][-1] += data


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the build's bin folder (dsb-broker, dsbctl, ...)")
    ap.add_argument("--screenshot", help="also copy the screenshot here")
    ap.add_argument("--frames", type=int, default=4,
                    help="history frames (seconds) to wait for before the page is read "
                         "(more make a fuller chart for a screenshot)")
    args = ap.parse_args()

    chromium = find_chromium()
    if chromium is None:
        log("SKIPPED: Chromium is not installed (Debian: apt-get install chromium); "
            "the status page was not tested in a browser")
        return SKIP

    bin_dir = args.bin
    # The sanitizer runs build only test executables: without the programs
    # there is nothing to start.
    missing = [p for p in ("dsb-broker", "dsbctl", "dsb-load", "dsb-simserver")
               if not os.access(os.path.join(bin_dir, p), os.X_OK)]
    if missing:
        log(f"SKIPPED: not built in {bin_dir}: {', '.join(missing)}")
        return SKIP
    scratch = tempfile.mkdtemp(prefix="dsb-page-")
    procs = []
    try:
        return run(chromium, bin_dir, scratch, procs, args)
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def dsbctl(bin_dir, sock, *argv):
    out = subprocess.run([os.path.join(bin_dir, "dsbctl"), "--socket", sock, "--json", *argv],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError(f"dsbctl {' '.join(argv)} failed ({out.returncode}): "
                             f"{out.stdout}{out.stderr}")
    return json.loads(out.stdout)


def by_name(status):
    return {t["name"]: t for t in status["targets"]}


def run(chromium, bin_dir, scratch, procs, args):
    prefix = "pg" + str(os.getpid())
    sim_port_file = os.path.join(scratch, "sim.port")
    sim = Proc("dsb-simserver", [os.path.join(bin_dir, "dsb-simserver"), "--listen", "127.0.0.1:0",
                                 "--port-file", sim_port_file, "--limit", "100"])
    procs.append(sim)
    end = time.monotonic() + 20
    while not (os.path.exists(sim_port_file) and open(sim_port_file).read().strip()):
        if time.monotonic() > end or sim.p.poll() is not None:
            raise AssertionError("dsb-simserver did not write its port:\n" + "\n".join(sim.lines))
        time.sleep(0.02)  # a file appearing has no event to wait on here
    sim_addr = open(sim_port_file).read().strip()

    sock = os.path.join(scratch, "run", "dsb.sock")
    config = os.path.join(scratch, "broker.toml")
    with open(config, "w") as f:
        f.write(f"""[broker]
id = "page-test"
socket = "{sock}"
shm_prefix = "{prefix}"
metrics = "127.0.0.1:0"

[[targets]]
name = "steady"
limit = 8

[[targets]]
name = "churn"
limit = 6
""")
    broker = Proc("dsb-broker", [os.path.join(bin_dir, "dsb-broker"), "--config", config])
    procs.append(broker)
    port = int(broker.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", 30).group(1))
    base = f"http://127.0.0.1:{port}"
    log(f"broker pid {broker.p.pid}, page at {base}/")

    load = os.path.join(bin_dir, "dsb-load")
    steady = Proc("dsb-load steady", [load, "--server", sim_addr, "--socket", sock, "--target",
                                      "steady", "--instances", "2", "--threads", "6",
                                      "--duration", "300", "--hold-ms-min", "600000",
                                      "--hold-ms-max", "600000", "--acquire-timeout-ms", "600000",
                                      "--seed", "1"])
    procs.append(steady)
    churn = Proc("dsb-load churn", [load, "--server", sim_addr, "--socket", sock, "--target",
                                    "churn", "--instances", "1", "--threads", "4",
                                    "--duration", "300", "--hold-ms-min", "20",
                                    "--hold-ms-max", "200", "--think-ms", "5", "--seed", "2"])
    procs.append(churn)

    # The steady target fills up: 2 system + 6 action slots held, 6 waiting.
    end = time.monotonic() + 60
    while True:
        s = by_name(dsbctl(bin_dir, sock, "status"))["steady"]
        if s["held"] == 8 and s["waiting"] == 6:
            break
        if time.monotonic() > end:
            raise AssertionError(f"the steady load did not fill its target: {s}")
        time.sleep(0.1)  # another process's counter: polled (tests/support/wait.h's rule)
    dsbctl(bin_dir, sock, "set-limit", "churn", "5")
    # A few samples in the history (one a second) before the page is read.
    end = time.monotonic() + 30 + args.frames * 2
    while True:
        with urllib.request.urlopen(base + "/api/history", timeout=10) as r:
            frames = json.loads(r.read())["frames"]
        if frames >= args.frames:
            break
        if time.monotonic() > end:
            raise AssertionError(f"the history has {frames} frame(s), want {args.frames}")
        time.sleep(0.2)  # the sampler's own 1 s timer: polled, bounded

    user_dir = os.path.join(scratch, "chromium")
    net_log = os.path.join(scratch, "netlog.json")
    common = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
              "--no-first-run", "--no-default-browser-check", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--disable-domain-reliability",
              "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={user_dir}"]
    before = dsbctl(bin_dir, sock, "status")
    dom = subprocess.run(common + [f"--log-net-log={net_log}", "--virtual-time-budget=5000",
                                   "--dump-dom", base + "/"],
                         capture_output=True, text=True, timeout=120)
    after = dsbctl(bin_dir, sock, "status")
    if dom.returncode != 0 or "<body" not in dom.stdout:
        raise AssertionError(f"chromium --dump-dom failed ({dom.returncode}):\n{dom.stderr[-3000:]}")

    page = PageReader()
    page.feed(dom.stdout)
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    refreshes = int(page.body.get("data-refreshes", "0"))
    check(refreshes >= 1, f"the page never rendered an answer (body {page.body})")
    check(page.body.get("data-failures") is None, f"the page failed to fetch: {page.body}")
    check(page.ids.get("broker-id") is not None, "no broker id element")

    b, a = by_name(before), by_name(after)
    shown = lambda t, f: page.numbers.get((t, f))
    # The steady target: nothing may change; the page shows exactly dsbctl's.
    for field in ("limit", "limit_source", "capacity", "held", "held_action", "held_system",
                  "waiting", "free", "quarantined", "cooling", "clients"):
        check(b["steady"][field] == a["steady"][field],
              f"steady.{field} changed between the dsbctl reads ({b['steady'][field]} -> "
              f"{a['steady'][field]}): the load was to hold still")
        check(shown("steady", field) == str(b["steady"][field]),
              f"steady.{field}: page shows {shown('steady', field)!r}, dsbctl {b['steady'][field]}")
    # The churning target: what the load cannot change must match exactly;
    # held and waiting change every few ms, so only their range is checked.
    for field in ("limit", "limit_source", "capacity", "clients"):
        check(b["churn"][field] == a["churn"][field], f"churn.{field} changed between the reads")
        check(shown("churn", field) == str(b["churn"][field]),
              f"churn.{field}: page shows {shown('churn', field)!r}, dsbctl {b['churn'][field]}")
    check(b["churn"]["limit"] == 5 and b["churn"]["limit_source"] == "operator",
          f"churn limit is not the operator's 5: {b['churn']['limit']} ({b['churn']['limit_source']})")
    try:
        held = int(shown("churn", "held"))
        check(0 <= held <= b["churn"]["capacity"], f"churn.held {held} outside 0..capacity")
        int(shown("churn", "waiting"))
    except (TypeError, ValueError):
        failures.append(f"churn held/waiting not numbers: {shown('churn', 'held')!r}, "
                        f"{shown('churn', 'waiting')!r}")
    # A live answer: the uptime the page shows was read between the two dsbctl reads.
    up = page.ids.get("uptime", {}).get("data-ms")
    check(up is not None and before["uptime_ms"] <= int(up) <= after["uptime_ms"],
          f"page uptime {up} ms not between the dsbctl reads ({before['uptime_ms']}, "
          f"{after['uptime_ms']})")
    # Charts: one per target, with points for limit, capacity and held.
    for t in ("steady", "churn"):
        for series in ("limit", "capacity", "held"):
            n = page.series.get((t, series), 0)
            check(n >= 3, f"chart of {t}: series {series} has {n} points (want >= 3)")
    # The operator's change is listed.
    rows = [r for r in page.changes if r.get("target") == "churn" and r.get("from") == 6
            and r.get("to") == 5]
    check(len(rows) == 1, f"limit change churn 6 -> 5 not listed once: {page.changes}")
    if rows:
        check(any("operator" in c for c in rows[0]["cells"]), f"change row without source: {rows[0]}")
        check(any("uid 0" in c or "uid " in c for c in rows[0]["cells"]),
              f"change row without who: {rows[0]}")
    # The lease table says single-machine mode has none.
    check("leases-none" in page.ids, "no 'no leases' note in single-machine mode")

    # Every request the page made went to the broker's port. Chromium's net log
    # names each request's initiator: the page's own (the document, its
    # fetches, the favicon) carry the broker's origin or its site; the
    # browser's background requests (update checks, ...) carry "not an
    # origin", and the resolver rules send those nowhere.
    page_urls, browser_urls = set(), set()
    try:
        with open(net_log) as f:
            text = f.read()
        try:
            netlog = json.loads(text)
        except ValueError:  # an unclean end can leave the closing brackets out
            netlog = json.loads(text.rstrip().rstrip(",") + "]}")
        names = {v: k for k, v in netlog["constants"]["logEventTypes"].items()}
        for e in netlog["events"]:
            p = e.get("params") or {}
            if names.get(e.get("type")) != "URL_REQUEST_START_JOB" or "url" not in p:
                continue
            mine = (p.get("initiator") == base or
                    p.get("network_isolation_key", "").startswith("http://127.0.0.1 "))
            (page_urls if mine else browser_urls).add(p["url"])
    except (OSError, ValueError, KeyError) as e:
        failures.append(f"no readable network log from chromium: {e}")
    outside = sorted(u for u in page_urls if not u.startswith(base + "/"))
    check(not outside, f"the page requested outside the broker: {outside}")
    check(base + "/api/status" in page_urls and base + "/api/history" in page_urls,
          f"the network log shows no /api/status and /api/history: {sorted(page_urls)}")
    urls = page_urls

    # The screenshot (a picture for the docs and for whoever reads a failure).
    shot = os.path.join(scratch, "status-page.png")
    subprocess.run(common + ["--virtual-time-budget=5000", "--window-size=1280,900",
                             f"--screenshot={shot}", base + "/"],
                   capture_output=True, text=True, timeout=120)
    ok_shot = os.path.exists(shot) and os.path.getsize(shot) > 10000
    check(ok_shot, "no screenshot (or an empty one)")
    if ok_shot and args.screenshot:
        shutil.copyfile(shot, args.screenshot)
        log(f"screenshot written to {args.screenshot}")

    log(f"page refreshed {refreshes} time(s); steady held {shown('steady', 'held')} waiting "
        f"{shown('steady', 'waiting')} = dsbctl; churn held {shown('churn', 'held')}; "
        f"{len(urls)} distinct URL(s) from the page, all on {base} "
        f"({len(browser_urls)} of Chromium's own, resolved to nothing); chart points "
        f"{ {k: v for k, v in page.series.items()} }")
    if failures:
        for f in failures:
            log("FAIL: " + f)
        return 1
    log("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
