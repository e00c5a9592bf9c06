#!/usr/bin/env python3
"""The real dsb-broker.exe in console mode under Wine (issue 12, lane "link").

(No state_dir in the config: the default %ProgramData%\\dsb\\state of the build's Wine prefix. A
Z:\\ folder is refused since lane winsec's chain rule: Wine maps Z:\\ = / with Everyone allowed.)

Run on the Linux host by CTest in the windows build (tests/broker/CMakeLists.txt):
  windows_broker_console.py --bin <build>/bin --wine <emulator>

Cases, each against the real broker:
  1. It starts on a config in a temp folder (named pipe, one target) and logs
     " ready on \\\\.\\pipe\\...".
     The config sets segment_namespace = "global" (the Windows default, what a service needs):
     dsbctl.exe status --json must name the segment "Global\\dsb-<prefix>-exch01" (the name
     every client is told in its register reply and opens as given).
  2. Clients use it: dsbctl.exe status answers over the pipe; dsb-load.exe (broker mode, 4
     threads) takes and gives back slots against dsb-simserver.exe, and the server, the judge,
     never sees more sessions than the cap. (Each part runs only if that tool is built; the
     test says which ran.)
  3. Ctrl-C: the broker runs under `script` (a pty), because Wine delivers a console control
     event only on a terminal console; ^C written to the pty reaches it as CTRL_C_EVENT (the
     line discipline sends SIGINT, Wine's ntdll turns it into the event; see Pty). It must
     exit 0 with the Linux shutdown lines ("console Ctrl-C received" in place of "signal 15
     received", then "shutting down; ...").
  4. A bad config exits 2 and names the file and the bad key on stderr.
Every wait is bounded; every process it starts is ended by its own pid at the end.
Exit 0 pass, 1 fail, 77 skipped (dsb-broker.exe or `script` missing).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "support"))
from line_call import line_call  # noqa: E402 (tests/support/line_call.py)


class Fail(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_until(pred, seconds, what):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise Fail(f"timed out after {seconds} s waiting for {what}")


def win_path(p):
    return "Z:" + p.replace("/", "\\")


class Pty:
    """A Windows program on a terminal console: `script` gives Wine a pty; the pty's output is
    collected, and bytes written to `script`'s stdin reach the program as keys.

    The program must be `script`'s own child, so that `script -e`'s exit status is the
    program's: `script -c` runs its command through $SHELL -c (/bin/sh when SHELL is unset, as
    in CI), and dash does not exec a lone command. The ^C written to the pty is turned into
    SIGINT by the pty's line discipline (Wine leaves the tty in cooked mode while nothing reads
    console input) for its whole foreground process group: a shell in that group catches it
    and, once the program has exited 0, kills itself with SIGINT, so `script` reported 130 for
    a broker that stopped cleanly (the CI failure of issue 13: every time with SHELL unset,
    never with SHELL=/bin/bash, which execs a lone command itself). Hence `exec`, and SHELL
    fixed to /bin/sh so that every host runs the same chain: script -> the program (wine-run
    and Wine's loader exec)."""

    def __init__(self, argv):
        cmd = "exec " + " ".join("'" + a.replace("'", "'\\''") + "'" for a in argv)
        env = dict(os.environ, SHELL="/bin/sh")
        self.proc = subprocess.Popen(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self.chunks = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            b = self.proc.stdout.read1(65536)
            if not b:
                return
            with self.lock:
                self.chunks.append(b)

    def text(self):
        with self.lock:
            raw = b"".join(self.chunks).decode("utf-8", "replace")
        # Wine's console repaints with VT sequences and wraps at 80 columns: drop both so the
        # log lines can be searched.
        out, i = [], 0
        while i < len(raw):
            if raw[i] == "\x1b":
                j = i + 1
                if j < len(raw) and raw[j] == "[":
                    j += 1
                    while j < len(raw) and not ("@" <= raw[j] <= "~"):
                        j += 1
                i = j + 1
                continue
            if raw[i] not in "\r\n":
                out.append(raw[i])
            i += 1
        return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--wine", required=True, help="the emulator (';'-separated argv)")
    args = ap.parse_args()
    wine = [a for a in args.wine.split(";") if a]
    exe = lambda n: os.path.join(args.bin, n + ".exe")
    if not os.path.isfile(exe("dsb-broker")):
        print(f"SKIPPED: {exe('dsb-broker')} is not built")
        return 77
    if shutil.which("script") is None:
        print("SKIPPED: no `script` (bsdutils) to give Wine a terminal console")
        return 77

    work = tempfile.mkdtemp(prefix="dsb-wincon-")
    started = []
    pipe = rf"\\.\pipe\dsb-con-{os.getpid()}"
    try:
        os.mkdir(os.path.join(work, "state"), 0o700)
        conf = os.path.join(work, "broker.toml")
        cap = 4
        with open(conf, "w") as f:
            f.write(f'[broker]\nid = "con{os.getpid()}"\nsocket = {json.dumps(pipe)}\n'
                    f'shm_prefix = "con{os.getpid()}"\nsegment_namespace = "global"\n\n'
                    f'[[targets]]\nname = "exch01"\nlimit = {cap}\nquarantine = "0s"\n')

        # 1. ready
        broker = Pty(wine + [exe("dsb-broker"), "--config", win_path(conf)])
        started.append(broker.proc)
        wait_until(lambda: " ready on " in broker.text() or broker.proc.poll() is not None, 90,
                   "the broker's ready line")
        if broker.proc.poll() is not None:
            raise Fail(f"the broker exited ({broker.proc.returncode}) before ready:\n"
                       f"{broker.text()[-3000:]}")
        if f"ready on {pipe}" not in broker.text():
            raise Fail(f"ready line does not name the pipe {pipe}:\n{broker.text()[-2000:]}")
        log(f"broker ready on {pipe}")

        # 2. clients
        ran = []
        if os.path.isfile(exe("dsbctl")):
            r = subprocess.run(wine + [exe("dsbctl"), "--socket", pipe, "status"],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0 or "exch01" not in r.stdout:
                raise Fail(f"dsbctl status: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
            ran.append("dsbctl status")
            r = subprocess.run(wine + [exe("dsbctl"), "--socket", pipe, "--json", "status"],
                               capture_output=True, text=True, timeout=120)
            want = rf"Global\dsb-con{os.getpid()}-exch01"
            segments = []

            def walk(v):
                if isinstance(v, dict):
                    for k, x in v.items():
                        if k == "segment" and isinstance(x, str):
                            segments.append(x)
                        walk(x)
                elif isinstance(v, list):
                    for x in v:
                        walk(x)
            try:
                walk(json.loads(r.stdout))
            except ValueError:
                pass
            if r.returncode != 0 or segments != [want]:
                raise Fail(f"dsbctl status --json: exit {r.returncode}, segments {segments}, "
                           f"want [{want}]\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
            log(f"segment as clients are told: {segments[0]}")
            ran.append(f"dsbctl status --json (segment {segments[0]})")
        if os.path.isfile(exe("dsb-load")) and os.path.isfile(exe("dsb-simserver")):
            port_file = os.path.join(work, "sim.port")
            sim = subprocess.Popen(wine + [exe("dsb-simserver"), "--listen", "127.0.0.1:0",
                                           "--port-file", win_path(port_file),
                                           "--limit", str(cap)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            started.append(sim)
            wait_until(lambda: os.path.isfile(port_file) and open(port_file).read().strip(), 60,
                       "the simserver's port file")
            address = open(port_file).read().strip()
            r = subprocess.run(wine + [exe("dsb-load"), "--server", address, "--socket", pipe,
                                       "--target", "exch01", "--threads", "4",
                                       "--hold-ms-min", "5", "--hold-ms-max", "15",
                                       "--acquire-timeout-ms", "2000", "--duration", "4",
                                       "--seed", "1"],
                               capture_output=True, text=True, timeout=180)
            if r.returncode != 0:
                raise Fail(f"dsb-load: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
            host, port = address.rsplit(":", 1)
            stats = json.loads(line_call((host, int(port)), "STATS"))
            user = stats["users"].get("digiscope", {})
            peak, refused = user.get("peak", 0), user.get("refused", 0)
            log(f"server: peak {peak} of cap {cap}, refused {refused}, stats {user}")
            if not 0 < peak <= cap or refused:
                raise Fail(f"server saw peak {peak} (cap {cap}), {refused} refusals: {user}")
            ran.append(f"dsb-load (server peak {peak} of {cap}, 0 refusals)")
            sim.kill()
            sim.wait(timeout=20)
        log("clients: " + (", ".join(ran) if ran else "none built (dsbctl, dsb-load)"))

        # 3. Ctrl-C
        broker.proc.stdin.write(b"\x03")
        broker.proc.stdin.flush()
        try:
            rc = broker.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise Fail(f"no exit within 60 s of Ctrl-C:\n{broker.text()[-3000:]}")
        broker.reader.join(timeout=10)
        text = broker.text()
        for line in ("console Ctrl-C received", "shutting down; "):
            if line not in text:
                raise Fail(f"no '{line}' in the broker's output:\n{text[-3000:]}")
        if rc != 0:
            raise Fail(f"exit code {rc} after Ctrl-C, expected 0:\n{text[-3000:]}")
        log("Ctrl-C: exit 0, " + text[text.index("shutting down; "):][:80])

        # 4. bad config
        bad = os.path.join(work, "bad.toml")
        with open(bad, "w") as f:
            f.write(f'[broker]\nid = "bad"\nsocket = {json.dumps(pipe + "-bad")}\n'
                    f'no_such_key = 1\n\n[[targets]]\nname = "exch01"\nlimit = 4\n')
        r = subprocess.run(wine + [exe("dsb-broker"), "--config", win_path(bad)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 2 or "no_such_key" not in r.stderr or "bad.toml" not in r.stderr:
            raise Fail(f"bad config: exit {r.returncode} (expected 2), stderr:\n{r.stderr}")
        log("bad config: exit 2: " + r.stderr.strip().splitlines()[-1][:160])
        log("PASS")
        return 0
    except Fail as e:
        log(f"FAIL: {e}")
        return 1
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()  # the pid this test started
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
