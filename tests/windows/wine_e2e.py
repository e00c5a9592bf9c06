#!/usr/bin/env python3
"""End-to-end tests of the Windows executables under Wine, with the server as the judge.

Run by CTest in the windows build (tests/windows/CMakeLists.txt); each scenario is one test:

  wine_e2e.py tools   --bin WINBIN
      dsb-simserver.exe and two dsb-load.exe processes (no broker: today's DigiScope). The cap
      holds by refusal; one instance is ended with TerminateProcess (dsb-winkill.exe) mid-run
      and the server frees its sessions (its TCP connections break): the tools work under Wine.
  wine_e2e.py broker  --bin WINBIN
      dsb-broker.exe + two dsb-load.exe client processes (broker mode, named pipe) against
      dsb-simserver.exe. The server's peak never exceeds the cap and it refuses nothing; one
      client is ended with TerminateProcess mid-run and its slots come back: in a window after
      the kill the other client alone drives the server to the full cap (with the dead
      client's slots leaked it could not), and every session is closed at the end.
  wine_e2e.py cluster --bin WINBIN --linux-bin LINUXBIN
      a Linux dsb-broker (coordinator) and a Windows dsb-broker.exe in one cluster (cluster
      file, shared key, loopback TCP) sharing one limit against one dsb-simserver.exe: the
      peak stays at or under the cap while both load, and when the Windows side's demand stops
      its capacity moves to the Linux side (the server then sees the Linux side alone reach
      the cap minus the Windows broker's reserved system slot).

A scenario whose executables are not built exits 77 (CTest: skipped) and says which.
--native runs the same scenario with Linux executables from --bin (no Wine): it checks this
driver itself on a Linux build.

Timing: Wine starts a process in ~0.3-1 s and the machine has 2 cores; every wait here is for
an event (a file, a log line, a server count) bounded by a deadline, never a fixed sleep used
as synchronisation. The measuring windows (a few seconds of load) are measurements, and their
thresholds leave room for a slow machine: the cap is checked exactly (never above), the
"capacity came back" checks ask for the peak, which any moment of full demand reaches.
"""

import argparse
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "support"))
from line_call import line_call  # noqa: E402 (tests/support/line_call.py)

SKIP = 77


class Fail(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_until(pred, timeout, what, step=0.05):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise Fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)  # polling interval of a bounded wait, not synchronisation


class Platform:
    """How to start, name and kill programs of one platform (Windows under Wine, or Linux)."""

    def __init__(self, bin_dir, windows, wine_cmd):
        self.bin = bin_dir
        self.windows = windows
        self.wine = wine_cmd

    def exe(self, name):
        return os.path.join(self.bin, name + (".exe" if self.windows else ""))

    def has(self, name):
        return os.path.isfile(self.exe(name))

    def argv(self, name, args):
        return (self.wine if self.windows else []) + [self.exe(name)] + list(args)

    def path(self, p):
        """A file path as this platform's programs take it (Wine maps Z: to /)."""
        return "Z:" + p.replace("/", "\\") if self.windows else p

    def state_root(self, procs):
        r"""A folder for the brokers' state_dir, made once per run and removed at the end.

        Windows: a new folder under the Wine prefix's C:\ (mode 0700), not under Z:\ (Wine's
        view of /): the broker's secure_fs chain rule (every existing parent owned by a trusted
        account, no untrusted DELETE/WRITE_DAC/... entry) refuses Z:\tmp, since Wine shows
        /tmp's mode 1777 as an ACL letting Everyone delete. Under C:\ the parents are the
        prefix's drive_c (the drive root, not checked) and this folder, which Wine reports as
        owned by the running user (the broker's own account) with no entry for others.
        Linux: a folder in the run's work folder (mkdtemp, 0700)."""
        root = procs.state_roots.get(self.windows)
        if root is None:
            if self.windows:
                drive_c = os.path.join(wine_prefix(self), "drive_c")
                if not os.path.isdir(drive_c):
                    raise Fail(f"the Wine prefix's C:\\ ({drive_c}) does not exist")
                root = tempfile.mkdtemp(prefix=f"dsb-e2e-{os.getpid()}-", dir=drive_c)
                procs.remove_at_end.append(root)
            else:
                root = os.path.join(procs.work, "state")
                os.makedirs(root, mode=0o700)
            procs.state_roots[self.windows] = root
        return root

    def state_path(self, p):
        r"""A path under state_root as this platform's programs take it (C:\... on Windows)."""
        if not self.windows:
            return p
        drive_c = os.path.join(wine_prefix(self), "drive_c")
        return "C:\\" + os.path.relpath(p, drive_c).replace("/", "\\")

    def local_endpoint(self, name):
        """The broker's local endpoint: a named pipe on Windows, a Unix socket path on Linux."""
        return r"\\.\pipe\dsb-" + name if self.windows else None

    def kill(self, pid, procs):
        """Ends process `pid` (this platform's id) the hard way: TerminateProcess / SIGKILL."""
        if self.windows:
            r = subprocess.run(self.argv("dsb-winkill", [str(pid)]), capture_output=True,
                               text=True, timeout=60)
            if r.returncode != 0:
                raise Fail(f"dsb-winkill {pid} failed ({r.returncode}): {r.stderr.strip()}")
        else:
            os.kill(pid, signal.SIGKILL)


def wine_prefix(plat):
    """The Wine prefix the .exe files run in, found as the emulator finds it: WINEPREFIX, else
    for cmake/wine-run the build's own (<folder above --bin holding CMakeCache.txt>/wineprefix),
    else Wine's default ~/.wine."""
    if os.environ.get("WINEPREFIX"):
        return os.environ["WINEPREFIX"]
    if os.path.basename(plat.wine[0]) == "wine-run":
        d = os.path.abspath(plat.bin)
        while d != "/" and not os.path.isfile(os.path.join(d, "CMakeCache.txt")):
            d = os.path.dirname(d)
        if d != "/":
            return os.path.join(d, "wineprefix")
    return os.path.expanduser("~/.wine")


class Procs:
    """Every process this run started; all are ended at the end (by their own pid)."""

    def __init__(self, work):
        self.work = work
        self.items = []
        self.state_roots = {}  # Platform.windows -> that platform's state folder (state_root)
        self.remove_at_end = []  # folders outside `work` made for this run (Wine's C:\)

    def start(self, plat, name, args, tag):
        out = open(os.path.join(self.work, tag + ".out"), "wb")
        err = open(os.path.join(self.work, tag + ".err"), "wb")
        p = subprocess.Popen(plat.argv(name, args), stdout=out, stderr=err, cwd=self.work,
                             stdin=subprocess.DEVNULL)
        p.tag = tag
        self.items.append(p)
        log(f"started {tag}: {name} {' '.join(args)} (host pid {p.pid})")
        return p

    def text(self, tag, stream):
        with open(os.path.join(self.work, f"{tag}.{stream}"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait(self, p, timeout):
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail(f"{p.tag} did not exit within {timeout} s;\nstderr: "
                       f"{self.text(p.tag, 'err')[-3000:]}")

    def stop_all(self):
        for p in self.items:
            if p.poll() is None:
                p.kill()  # SIGKILL to the pid we started (the wine process of that .exe)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass


class Server:
    """dsb-simserver: the judge. Talks its line protocol over loopback TCP."""

    def __init__(self, procs, plat, limit, tag="simserver"):
        port_file = os.path.join(procs.work, tag + ".port")
        self.proc = procs.start(plat, "dsb-simserver",
                                ["--listen", "127.0.0.1:0", "--port-file", plat.path(port_file),
                                 "--limit", str(limit)], tag)
        addr = wait_until(lambda: _read_if(port_file), 60, "the simserver's port file")
        self.address = addr.strip()
        host, port = self.address.rsplit(":", 1)
        self.endpoint = (host, int(port))

    def call(self, line):
        return line_call(self.endpoint, line)

    def stats(self, user="digiscope"):
        v = json.loads(self.call("STATS"))
        return v["users"].get(user, {}), v["open_sessions"]

    def reset(self):
        if self.call("STATS RESET") != "OK":
            raise Fail("STATS RESET refused")


def _read_if(path):
    try:
        with open(path) as f:
            t = f.read()
        return t if t.endswith("\n") else None
    except OSError:
        return None


def fresh_window(server, opens):
    """STATS RESET, wait for `opens` new sessions, STATS RESET again: the second window's
    starting count (its first peak) holds only sessions of clients still opening. Returns the
    server's stats of the window that ended at the first reset (read just before it)."""
    ended, _ = server.stats()
    server.reset()
    wait_until(lambda: server.stats()[0].get("opened", 0) >= opens, 30,
               f"{opens} sessions opened in a fresh window")
    server.reset()
    return ended


def check_cap(stats, cap, where):
    """The invariant S as the server saw it."""
    if stats.get("peak", 0) > cap or stats.get("over_limit_events", 0) != 0 or \
            stats.get("peak_over_limit", 0) != 0:
        raise Fail(f"{where}: the server saw more than {cap} sessions: {stats}")


def instance_pids(procs, tag, count, timeout=60):
    """The instance process ids dsb-load prints ("dsb-load: instance I pid P")."""
    def found():
        pids = re.findall(r"dsb-load: instance (\d+) pid (\d+)", procs.text(tag, "err"))
        return [int(p) for _, p in pids] if len(pids) >= count else None
    return wait_until(found, timeout, f"{tag}'s instance pids")


def summary(procs, tag):
    lines = [l for l in procs.text(tag, "out").splitlines() if l.startswith("{")]
    if not lines:
        raise Fail(f"{tag} printed no summary; stderr:\n{procs.text(tag, 'err')[-3000:]}")
    return json.loads(lines[-1])


def wait_progress(procs, tag, timeout):
    """Until dsb-load's progress line says its instances have finished actions."""
    def seen():
        counts = re.findall(r"dsb-load: t=[0-9.]+s actions=(\d+)", procs.text(tag, "err"))
        return counts and int(counts[-1]) > 0
    wait_until(seen, timeout, f"{tag} reporting finished actions")


# ---------------------------------------------------------------- scenarios

def scenario_tools(plat, procs, args):
    need = ["dsb-simserver", "dsb-load"] + (["dsb-winkill"] if plat.windows else [])
    missing = [n for n in need if not plat.has(n)]
    if missing:
        return skip(f"not built: {', '.join(plat.exe(n) for n in missing)}")
    cap = 6
    server = Server(procs, plat, cap)
    common = ["--server", server.address, "--no-broker", "--threads", "6",
              "--hold-ms-min", "5", "--hold-ms-max", "15", "--backoff-ms-min", "5",
              "--backoff-ms-max", "15"]
    a = procs.start(plat, "dsb-load", common + ["--duration", "60", "--seed", "1"], "load-a")
    b = procs.start(plat, "dsb-load", common + ["--duration", "6", "--seed", "2"], "load-b")
    [victim] = instance_pids(procs, "load-a", 1)
    wait_progress(procs, "load-a", 60)  # the victim holds sessions when it is killed
    st, _ = server.stats()
    log(f"before the kill: {st}")
    plat.kill(victim, procs)
    log(f"ended instance pid {victim} of load-a the hard way")
    procs.wait(a, 60)  # its parent sees the pipe break and reports the instance lost
    sa = summary(procs, "load-a")
    if "instance_lost" not in sa["errors"]:
        raise Fail(f"load-a does not report its killed instance: {sa}")
    procs.wait(b, 90)
    sb = summary(procs, "load-b")
    if sb["actions"] <= 0 or sb["errors"]:
        raise Fail(f"load-b did not run cleanly: {sb}")
    # The killed instance's sessions are freed by the server when its connections break. Under
    # Wine that is Wine's teardown of a TerminateProcess'd process's sockets, which sometimes
    # never comes (seen twice: 30 s and 90 s with load-a and load-b both ended and reported;
    # wineserver keeps a copy of each socket). That is not a property of dsb-load, dsb-simserver
    # or dsb-winkill (the server's close on a broken connection is tested on Linux), so it is
    # waited for and said, not required; every other session (load-b's) must be gone.
    try:
        wait_until(lambda: server.stats()[1] == 0, 90, "every session closed (the killed "
                   "instance's freed by its broken connections)")
    except Fail:
        left = server.stats()[1]
        held = st.get("current", 0)  # the server's count just before the kill
        if left > held:
            raise Fail(f"{left} session(s) still open, more than the {held} open before the "
                       f"kill: load-b's or load-a's parent's did not close")
        log(f"note: Wine kept {left} session(s) of the killed instance open for 90 s "
            "(a Wine limitation, not checked further)")
    st, _ = server.stats()
    check_cap(st, cap, "no broker")
    log(f"final server stats: {st}")
    log(f"load-a: {sa}")
    log(f"load-b: {sb}")
    return 0


def load_lacks_broker_mode(plat):
    """Why this platform's dsb-load cannot talk to a broker, or None when it can."""
    r = subprocess.run(plat.argv("dsb-load", ["--server", "127.0.0.1:9", "--socket", "x",
                                              "--target", "t", "--duration", "0"]),
                       capture_output=True, text=True, timeout=120)
    if "built without dsb::client" in r.stderr:
        return f"{plat.exe('dsb-load')} was built without dsb::client (--no-broker only)"
    return None


def write_broker_config(plat, procs, bid, targets_toml, extra=""):
    work = procs.work
    conf = os.path.join(work, bid + ".toml")
    endpoint = plat.local_endpoint(f"{bid}-{os.getpid()}") or os.path.join(work, bid + ".sock")
    # Not made here: the broker makes its state folder itself, private (EnsurePrivateFolder).
    state = os.path.join(plat.state_root(procs), "state-" + bid)
    with open(conf, "w") as f:
        f.write(f'[broker]\nid = "{bid}"\nsocket = {json.dumps(endpoint)}\n'
                f'shm_prefix = "wt{os.getpid()}{bid}"\n'
                f'state_dir = {json.dumps(plat.state_path(state))}\n{extra}\n{targets_toml}')
    return conf, endpoint


def start_broker(procs, plat, conf, tag):
    p = procs.start(plat, "dsb-broker", ["--config", plat.path(conf)], tag)
    wait_until(lambda: " ready on " in procs.text(tag, "err") + procs.text(tag, "out")
               or p.poll() is not None, 90, f"{tag} ready")
    if p.poll() is not None:
        raise Fail(f"{tag} exited ({p.returncode}):\n{procs.text(tag, 'err')[-3000:]}")
    return p


def scenario_broker(plat, procs, args):
    need = ["dsb-simserver", "dsb-load", "dsb-broker"] + (["dsb-winkill"] if plat.windows else [])
    missing = [n for n in need if not plat.has(n)]
    if missing:
        return skip(f"not built yet: {', '.join(plat.exe(n) for n in missing)}")
    if why := load_lacks_broker_mode(plat):
        return skip(why)
    cap = 8
    server = Server(procs, plat, cap)
    # quarantine = "1s": a client is killed here. Its slots are freed when its pipe breaks, but
    # its TCP sessions may close on the server a little later: under Wine TerminateProcess
    # closes the pipe handle in wineserver at once and the sockets only when the Unix process
    # has died (~1 ms later, seen: with "0s" load-b opened a 9th session in that gap and the
    # server refused it); Windows defines no order between those closes either. That lingering
    # is what a target's quarantine is for (a dead client's slots stay taken for a while). The
    # judge is unchanged: the server's peak never above the cap and 0 refusals. 3 s, not 1 s:
    # on a loaded machine Wine closes a killed process's sockets later (a review of 2026-12-06).
    conf, endpoint = write_broker_config(
        plat, procs, "wb",
        f'[[targets]]\nname = "exch01"\nlimit = {cap}\nquarantine = "3s"\n')
    start_broker(procs, plat, conf, "broker")
    common = ["--server", server.address, "--socket", endpoint, "--target", "exch01",
              "--threads", "8", "--hold-ms-min", "5", "--hold-ms-max", "15",
              "--acquire-timeout-ms", "2000"]
    a = procs.start(plat, "dsb-load", common + ["--duration", "60", "--seed", "1"], "load-a")
    # load-b runs long enough for the kill, the quarantine and the judging window even when
    # Wine starts slowly (its length would otherwise be a hidden deadline for the waits below).
    b = procs.start(plat, "dsb-load", common + ["--duration", "30", "--seed", "2"], "load-b")
    [victim] = instance_pids(procs, "load-a", 1)
    wait_progress(procs, "load-a", 60)  # the victim holds slots when it is killed
    wait_progress(procs, "load-b", 60)
    before, _ = server.stats()
    check_cap(before, cap, "both clients loading")
    log(f"both loading: {before}")
    plat.kill(victim, procs)
    log(f"ended client instance pid {victim} (load-a) the hard way")
    procs.wait(a, 60)
    # After the death the broker frees every slot of the dead owner. The server is the judge:
    # from a fresh window on, load-b alone (8 threads + its system session = 9 wanted) must
    # reach the full cap; with the dead client's slots leaked it would stay below it.
    # A window's peak starts at the count at its reset, so the judging window opens only after
    # load-b has opened 30 fresh sessions in a first one: the killed client's server sessions
    # (freed when its connections broke, with its process gone: dsb-winkill waits for that)
    # are long gone by then, and every session counted is load-b's.
    around_kill = fresh_window(server, 30)
    check_cap(around_kill, cap, "around the kill")
    log(f"around the kill: {around_kill}")
    wait_until(lambda: server.stats()[0].get("peak", 0) >= cap, 30,
               f"load-b alone reaching the cap of {cap} (the killed client's slots back)")
    after, _ = server.stats()
    check_cap(after, cap, "after the kill")
    log(f"after the kill, load-b alone: {after}")
    procs.wait(b, 90)
    sb = summary(procs, "load-b")
    if sb["refusals"] != 0 or sb["actions"] <= 0 or sb["errors"]:
        raise Fail(f"load-b did not run cleanly through the broker: {sb}")
    wait_until(lambda: server.stats()[1] == 0, 90, "every session closed")
    for st in (before, around_kill, after):
        if st.get("refused", 0) != 0:
            raise Fail(f"the server refused sessions behind the broker: {before} / "
                       f"{around_kill} / {after}")
    log(f"load-b: {sb}")
    return 0


def scenario_cluster(plat, procs, args):
    if not args.linux_bin:
        return skip("DSB_LINUX_BIN is not set: the mixed cluster needs a Linux build's bin "
                    "folder (tools/run windows-test builds one and passes it)")
    linux = Platform(args.linux_bin, False, [])
    need = [(plat, "dsb-simserver"), (plat, "dsb-load"), (plat, "dsb-broker"),
            (linux, "dsb-broker"), (linux, "dsb-load")]
    missing = [p.exe(n) for p, n in need if not p.has(n)]
    if missing:
        return skip(f"not built yet: {', '.join(missing)}")
    for p in (plat, linux):
        if why := load_lacks_broker_mode(p):
            return skip(why)
    cap = 10
    server = Server(procs, plat, cap)
    work = procs.work
    key = os.path.join(work, "cluster.key")
    with open(key, "w") as f:
        f.write("%064x\n" % random.getrandbits(256))
    os.chmod(key, 0o600)
    ports = [_free_port(), _free_port()]
    cluster = os.path.join(work, "cluster.toml")
    with open(cluster, "w") as f:
        f.write('[cluster]\ncoordinator = "ws1"\nterm = "1s"\ndrain = "1s"\n'
                f'[[brokers]]\nid = "ws1"\naddress = "127.0.0.1:{ports[0]}"\n'
                f'[[brokers]]\nid = "ws2"\naddress = "127.0.0.1:{ports[1]}"\n'
                # quarantine 0s: no client is killed here (see scenario_broker's 1s)
                f'[[targets]]\nname = "exch01"\nlimit = {cap}\nquarantine = "0s"\n')
    side = {"ws1": linux, "ws2": plat}
    endpoints = {}
    for bid, p in side.items():
        extra = (f'cluster = {json.dumps(p.path(cluster))}\n'
                 f'key_file = {json.dumps(p.path(key))}\nadopt_grace = "2s"\n')
        conf, endpoints[bid] = write_broker_config(p, procs, bid, "", extra)
        start_broker(procs, p, conf, "broker-" + bid)
    common = ["--server", server.address, "--target", "exch01", "--threads", "8",
              "--hold-ms-min", "5", "--hold-ms-max", "15", "--acquire-timeout-ms", "2000"]
    lin = procs.start(linux, "dsb-load",
                      common + ["--socket", endpoints["ws1"], "--duration", "300", "--seed", "1"],
                      "load-linux")
    win = procs.start(plat, "dsb-load",
                      common + ["--socket", endpoints["ws2"], "--duration", "10", "--seed", "2"],
                      "load-windows")
    wait_progress(procs, "load-linux", 90)
    wait_progress(procs, "load-windows", 90)
    both, _ = server.stats()
    check_cap(both, cap, "both sides loading")
    log(f"both sides loading: {both}")
    procs.wait(win, 90)
    sw = summary(procs, "load-windows")
    if sw["actions"] <= 0 or sw["refusals"] != 0 or sw["errors"]:
        raise Fail(f"the Windows side did not run cleanly: {sw}")
    # The Windows side's demand has stopped: its lease lapses and its share moves to the Linux
    # side; ws2's system slot stays reserved for it (system_slots = 1), so the Linux side alone
    # can reach cap - 1, and the server must see it get there.
    # The window ending here covers the whole run up to now (both sides, then the Windows
    # side's end); after it the Windows side's sessions are gone (see scenario_broker).
    until_moved = fresh_window(server, 30)
    check_cap(until_moved, cap, "both sides, until the Windows side stopped")
    log(f"both sides, until the Windows side stopped: {until_moved}")
    wait_until(lambda: server.stats()[0].get("peak", 0) >= cap - 1, 30,
               f"the Linux side alone reaching {cap - 1} (capacity moved)")
    moved, _ = server.stats()
    check_cap(moved, cap, "after the Windows side stopped")
    log(f"Linux side alone: {moved}")
    lin.send_signal(signal.SIGTERM)  # our own child; it stops its instances and reports
    procs.wait(lin, 60)
    sl = summary(procs, "load-linux")
    if sl["refusals"] != 0 or sl["actions"] <= 0:
        raise Fail(f"the Linux side did not run cleanly: {sl}")
    for st in (both, until_moved, moved):
        if st.get("refused", 0) != 0:
            raise Fail(f"the server refused sessions behind the brokers: {st}")
    log(f"load-windows: {sw}")
    log(f"load-linux: {sl}")
    return 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skip(why):
    print(f"SKIPPED: {why}", flush=True)
    return SKIP


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario", choices=["tools", "broker", "cluster"])
    ap.add_argument("--bin", required=True, help="bin folder of the Windows build (.exe files)")
    ap.add_argument("--linux-bin", default="", help="bin folder of a Linux release build")
    ap.add_argument("--wine", default="wine", help="the command that runs a .exe (split on ;)")
    ap.add_argument("--native", action="store_true",
                    help="run Linux executables from --bin instead (checks this driver)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    wine = [w for w in args.wine.split(";") if w]
    if not args.native:
        if shutil.which(wine[0]) is None and not os.path.isfile(wine[0]):
            return skip(f"{wine[0]} not found (apt-get install wine64 wine)")
        os.environ.setdefault("WINEDEBUG", "-all")
    plat = Platform(args.bin, not args.native, wine)
    work = tempfile.mkdtemp(prefix=f"dsb-wine-{args.scenario}-")
    procs = Procs(work)
    log(f"scenario {args.scenario}, work folder {work}, "
        f"{'native Linux' if args.native else 'Windows under ' + ' '.join(wine)}")
    fn = {"tools": scenario_tools, "broker": scenario_broker, "cluster": scenario_cluster}
    rc = 1
    try:
        rc = fn[args.scenario](plat, procs, args)
        if rc == 0:
            log("PASS")
    except Fail as e:
        log(f"FAIL: {e}")
        for p in procs.items:
            for stream in ("err", "out"):
                t = procs.text(p.tag, stream)
                if t.strip():
                    print(f"--- {p.tag}.{stream} (last 2000 chars)\n{t[-2000:]}", flush=True)
    finally:
        procs.stop_all()
        # A Linux broker of the mixed cluster ends by SIGKILL above: its segments and lock
        # files under this run's own prefix (shm_prefix "wt<pid>...") are removed here.
        for leftover in (glob.glob(f"/dev/shm/dsb-wt{os.getpid()}*") +
                         glob.glob(f"/dev/shm/.dsb-lock-dsb-wt{os.getpid()}*")):
            try:
                os.remove(leftover)
            except OSError:
                pass
        if not args.keep:  # the brokers' state under Wine's C:\, made for this run only
            for d in procs.remove_at_end:
                shutil.rmtree(d, ignore_errors=True)
        if not args.keep and rc in (0, SKIP):
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work folder kept: {work}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
