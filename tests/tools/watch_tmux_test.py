#!/usr/bin/env python3
"""dsbctl watch in a real terminal: a detached tmux session of 80x24.

    watch_tmux_test.py BIN_DIR

Starts a real dsb-broker (two targets, one with a name too long for 80
columns), runs `dsbctl watch` in a shell inside tmux and reads the screen with
capture-pane. Checks, each awaited by polling capture-pane or `dsbctl status`
until a bounded deadline (the screen has no event of its own):
  - the numbers on screen are those of `dsbctl status --json`;
  - a client taking slots changes HELD on screen, and the highlight of the
    change ends;
  - no line is wider than 80 columns, the long name is cut with '~';
  - `q` ends it with exit 0, the alternate screen left, the cursor shown and
    the terminal's modes (stty -g) as before; Ctrl-C the same; SIGTERM too
    (exit 143); Ctrl-Z gives the shell its terminal back and fg resumes;
  - the broker stopped mid-watch: DISCONNECTED on screen, the view keeps
    running, and shows the numbers again when the broker is back;
  - TERM=dumb: frames one after another, no alternate screen;
  - stdout a pipe: plain frames of at most 80 columns without escapes, and
    the reader closing the pipe ends it with exit 0;
  - cluster mode (two brokers, ws1 the coordinator): the lease table shows
    `dsbctl leases --json`'s numbers per broker, before and after a client
    takes 3 slots on ws2;
  - --once against no broker: one frame saying DISCONNECTED, exit 1.
Processes are ended by PID; the tmux server is private (its own socket).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

STEP_TIMEOUT = 30.0  # seconds for one awaited condition (a loaded 2-core box)
LONG_NAME = "svc-digiscope-exchange-account-of-migration-42"  # 46 of the 48 allowed


class Failure(Exception):
    pass


def await_true(what, pred, timeout=STEP_TIMEOUT, last=None):
    """Polls pred() until it returns a true value or timeout passes."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            detail = last() if last else ""
            raise Failure(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(0.1)


class Broker:
    """A dsb-broker child: single mode with two targets, or `toml` as its file."""

    def __init__(self, bin_dir, scratch, name="ws", toml=None):
        self.bin = bin_dir
        self.scratch = scratch
        self.socket = os.path.join(scratch, name + ".sock")
        self.config = os.path.join(scratch, name + ".toml")
        self.log = os.path.join(scratch, name + ".log")
        with open(self.config, "w") as f:
            f.write(toml if toml is not None else
                    f'[broker]\nid = "wsw"\nsocket = "{self.socket}"\n'
                    f'shm_prefix = "watch{os.getpid()}"\n\n'
                    '[[targets]]\nname = "exch01"\nlimit = 32\nquarantine = "0s"\n\n'
                    f'[[targets]]\nname = "{LONG_NAME}"\nlimit = 8\nquarantine = "0s"\n')
        self.proc = None

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([os.path.join(self.bin, "dsb-broker"), "--config",
                                          self.config], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        await_true("the broker to answer status", lambda: self.status() is not None,
                   last=lambda: open(self.log).read()[-3000:])

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def status(self, op="status"):
        if self.proc is not None and self.proc.poll() is not None:
            raise Failure("the broker exited:\n" + open(self.log).read()[-3000:])
        r = subprocess.run([os.path.join(self.bin, "dsbctl"), "--socket", self.socket,
                            "--timeout-ms", "2000", op, "--json"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)


class Tmux:
    """A private tmux server with one 80x24 pane running a plain bash."""

    def __init__(self, scratch, bin_dir):
        self.sock = os.path.join(scratch, "tmux.sock")
        env_shell = (f"env -i PATH={os.environ.get('PATH', '/usr/bin:/bin')} HOME={scratch} "
                     f"TERM=screen LANG=C.UTF-8 PS1='watch-test$ ' HISTFILE=/dev/null "
                     f"bash --norc --noprofile -i")  # no history written after the cleanup
        self.run("-f", "/dev/null", "new-session", "-d", "-s", "w", "-x", "80", "-y", "24",
                 env_shell, ";", "set-option", "-g", "status", "off")
        size = self.run("display-message", "-p", "-t", "w", "#{pane_width}x#{pane_height}")
        if size.strip() != "80x24":
            raise Failure(f"the tmux pane is {size.strip()}, not 80x24")
        await_true("the shell prompt", lambda: "watch-test$" in self.screen(), last=self.screen)

    def run(self, *args):
        r = subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise Failure(f"tmux {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def screen(self, escapes=False, joined=False):
        """The pane's text; `joined`: lines the terminal wrapped joined again."""
        return self.run("capture-pane", "-p", "-t", "w", *(["-e"] if escapes else []),
                        *(["-J"] if joined else []))

    def lines(self):
        return self.screen().split("\n")

    def send_line(self, text):
        self.run("send-keys", "-t", "w", "-l", text)
        self.run("send-keys", "-t", "w", "Enter")

    def keys(self, *keys):
        self.run("send-keys", "-t", "w", *keys)

    def flag(self, name):
        return self.run("display-message", "-p", "-t", "w", "#{" + name + "}").strip()

    def clear(self):
        self.send_line("clear")
        await_true("a cleared screen", lambda: self.screen().strip() == "watch-test$",
                   last=self.screen)

    def kill(self):
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=30)


def row_cells(screen, name):
    """The cells of the table row of target `name` (as shown), or None."""
    for line in screen.split("\n"):
        if line.startswith(name + " ") or line.startswith(name + "~"):
            return line.replace("*", " ").split()
    return None


def numbers_match(screen, status):
    """True if each target's row on screen shows status's numbers."""
    for t in status["targets"]:
        # Cut in the middle at 80 columns (27): 13 + '~' + 13.
        shown_name = t["name"] if len(t["name"]) <= 27 else t["name"][:13] + "~" + t["name"][-13:]
        cells = row_cells(screen, shown_name)
        want = [shown_name, str(t["limit"]), t.get("limit_source", "-"), str(t["capacity"]),
                str(t["held"]), str(t["waiting"]), str(t["quarantined"]), str(t.get("cooling", "-"))]
        if cells != want:
            return False
    return True


def await_numbers(tmux, broker, what):
    state = {}

    def check():
        st = broker.status()
        scr = tmux.screen()
        state["st"], state["scr"] = st, scr
        return st is not None and numbers_match(scr, st)

    await_true(what, check,
               last=lambda: f"status: {json.dumps(state.get('st'))}\nscreen:\n{state.get('scr')}")
    return state["st"]


def descendant_states(root, name):
    """The /proc states (R, S, T, ...) of the processes called `name` below `root`."""
    children = {}
    info = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(entry)
        info[pid] = (comm, fields[0])
        children.setdefault(int(fields[1]), []).append(pid)
    states, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if info[pid][0] == name:
            states.append(info[pid][1])
        todo.extend(children.get(pid, []))
    return states


def start_watch(tmux, bin_dir, socket, extra="", subshell=False):
    tmux.clear()
    # The markers the shell prints ("EXIT=0", "TERMIOS=same") never appear in
    # the command line itself, so the echoed command cannot pass for them.
    # `subshell`: one job, so Ctrl-Z stops it whole and fg resumes the rest.
    line = (f"S0=$(stty -g); {extra}{os.path.join(bin_dir, 'dsbctl')} --socket {socket} "
            f"watch --interval 300ms; R=$?; T=same; "
            f"[ \"$(stty -g)\" = \"$S0\" ] || T=changed; echo \"EXIT=$R\"; "
            f"echo \"TERMIOS=$T\"")
    tmux.send_line(f"( {line} )" if subshell else line)


def await_exit(tmux, code):
    def answered():
        lines = tmux.screen(joined=True).split("\n")
        for i, line in enumerate(lines):
            if line.startswith("TERMIOS=") and any(l.startswith("watch-test$")
                                                   for l in lines[i + 1:]):
                return lines
        return None

    lines = await_true("dsbctl to exit and the shell to answer", answered, last=tmux.screen)
    scr = "\n".join(lines)
    if f"EXIT={code}" not in lines:
        raise Failure(f"dsbctl did not exit with {code}:\n{scr}")
    if "TERMIOS=same" not in lines:
        raise Failure(f"the terminal's modes were not restored:\n{scr}")
    if tmux.flag("alternate_on") != "0":
        raise Failure("the alternate screen is still on after dsbctl ended")
    if tmux.flag("cursor_flag") != "1":
        raise Failure("the cursor is still hidden after dsbctl ended")


def await_view(tmux):
    await_true("the watch view (alternate screen, connected)",
               lambda: tmux.flag("alternate_on") == "1" and "connected" in tmux.screen(),
               last=tmux.screen)


def check_widths_only(tmux):
    for line in tmux.lines():
        if len(line) > 80:
            raise Failure(f"a line of {len(line)} columns: {line!r}")


def check_widths(tmux):
    check_widths_only(tmux)
    scr = tmux.screen()
    if LONG_NAME[:13] + "~" + LONG_NAME[-13:] not in scr:
        raise Failure(f"the long target name is not cut with '~' at 80 columns:\n{scr}")
    # Nothing wrapped: the header and the table header each start a line.
    if not any(l.startswith("dsb watch ") for l in tmux.lines()):
        raise Failure(f"the header does not start a line:\n{scr}")
    if not any(l.startswith("TARGET ") for l in tmux.lines()):
        raise Failure(f"the table header does not start a line:\n{scr}")


def free_ports(n):
    """n loopback ports free at this instant (the kernel picks them)."""
    import socket
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_brokers(bin_dir, scratch):
    """Two brokers sharing exch01 (limit 32) through ws1's ledger; short lease times."""
    ports = free_ports(2)
    key = os.path.join(scratch, "cluster.key")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32).hex().encode())
    os.close(fd)
    with open(os.path.join(scratch, "cluster.toml"), "w") as f:
        f.write('[cluster]\ncoordinator = "ws1"\nterm = "3s"\ndrain = "2s"\neps = 0.001\n\n')
        for i, port in enumerate(ports, 1):
            f.write(f'[[brokers]]\nid = "ws{i}"\naddress = "127.0.0.1:{port}"\n'
                    'system_slots = 1\nfloor = 0\n\n')
        f.write('[[targets]]\nname = "exch01"\nlimit = 32\nreserve = 0\nquarantine = "0s"\n')
    brokers = []
    for i in (1, 2):
        state = os.path.join(scratch, f"state{i}")
        os.mkdir(state, 0o700)
        brokers.append(Broker(bin_dir, scratch, f"ws{i}", toml=(
            f'[broker]\nid = "ws{i}"\nsocket = "{os.path.join(scratch, f"ws{i}.sock")}"\n'
            f'shm_prefix = "watchc{i}x{os.getpid()}"\ncluster = "cluster.toml"\n'
            f'key_file = "{key}"\nadopt_grace = "2s"\nstate_dir = "{state}"\n')))
    return brokers


def lease_rows(screen):
    """broker -> [mode, owed, granted, held, waiting, wanted] from the lease table."""
    rows = {}
    for line in screen.split("\n"):
        cells = line.replace("*", " ").split()
        if line.startswith("  ws") and len(cells) == 8:
            rows[cells[0]] = cells[1:7]
    return rows


def ledger_matches(screen, leases):
    if leases is None or not isinstance(leases.get("ledger"), dict):
        return False
    shown = lease_rows(screen)
    for t in leases["ledger"]["targets"]:
        if f"target {t['target']}: limit {t['limit']} pool {t['pool']} owed {t['owed_total']} " \
           f"free {t['free']}" not in screen.replace("*", ""):
            return False
        for b in t["brokers"]:
            want = [b["mode"]] + [str(b[k]) for k in
                                  ("owed", "granted", "held", "waiting", "wanted")]
            if shown.get(b["broker"]) != want:
                return False
    return True


def await_ledger(tmux, broker, what):
    state = {}

    def check():
        le = broker.status("leases")
        scr = tmux.screen()
        state["le"], state["scr"] = le, scr
        return ledger_matches(scr, le) and le

    return await_true(what, check, timeout=60,
                      last=lambda: f"leases: {json.dumps(state.get('le'))}\n"
                                   f"screen:\n{state.get('scr')}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    bin_dir = sys.argv[1]
    if shutil.which("tmux") is None:
        print("watch_tmux_test: tmux is not installed (Debian package tmux; tools/run setup "
              "installs it)")
        return 1
    for program in ("dsb-broker", "dsbctl", "watch_holder"):
        if not os.access(os.path.join(bin_dir, program), os.X_OK):
            print(f"watch_tmux_test: {program} is not built in {bin_dir}")
            return 1
    scratch = tempfile.mkdtemp(prefix="dsb-watch-")
    broker = Broker(bin_dir, scratch)
    tmux = None
    holder = None
    cluster = []
    step = "start"
    try:
        broker.start()
        tmux = Tmux(scratch, bin_dir)

        step = "numbers as in status --json"
        start_watch(tmux, bin_dir, broker.socket)
        await_view(tmux)
        await_numbers(tmux, broker, "the screen to show status --json's numbers")
        check_widths(tmux)

        step = "a client takes slots"
        holder = subprocess.Popen([os.path.join(bin_dir, "watch_holder"), broker.socket,
                                   "exch01"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        if holder.stdout.readline().strip() != "connected":
            raise Failure("watch_holder did not connect")
        holder.stdin.write("take 3\n")
        holder.stdin.flush()
        if holder.stdout.readline().strip() != "held 3":
            raise Failure("watch_holder did not take 3 slots")
        st = await_numbers(tmux, broker, "HELD on screen to follow the client's slots")
        held = [t for t in st["targets"] if t["name"] == "exch01"][0]["held"]
        if held != 4:  # 3 action slots and the system slot
            raise Failure(f"status says held {held}, expected 4")
        # The change was highlighted (reverse video) for a second; that ends.
        await_true("the highlight of the change to end",
                   lambda: "\x1b[7m" not in tmux.screen(escapes=True)
                   and ";7m" not in tmux.screen(escapes=True)
                   and row_cells(tmux.screen(), "exch01")[4] == "4",
                   last=lambda: repr(tmux.screen(escapes=True)))
        check_widths(tmux)

        step = "q quits"
        tmux.keys("q")
        await_exit(tmux, 0)

        step = "Ctrl-C quits"
        start_watch(tmux, bin_dir, broker.socket)
        await_view(tmux)
        tmux.keys("C-c")
        await_exit(tmux, 0)

        step = "Ctrl-Z gives the terminal back, fg takes it again"
        start_watch(tmux, bin_dir, broker.socket, subshell=True)
        await_view(tmux)
        tmux.keys("C-z")
        # Awaited: dsbctl itself stopped (state T) with the main screen back.
        # Not bash's "Stopped" line: the job here is a subshell, which stops at
        # once, so bash may print that line onto the alternate screen before
        # dsbctl has left it (then it vanishes with it: failed 1 run in 3).
        shell = int(tmux.flag("pane_pid"))
        await_true("dsbctl stopped and the main screen back",
                   lambda: tmux.flag("alternate_on") == "0"
                   and descendant_states(shell, "dsbctl") == ["T"], last=tmux.screen)
        if tmux.flag("cursor_flag") != "1":
            raise Failure("the cursor is hidden while the view is stopped")
        tmux.send_line("fg")
        await_view(tmux)
        await_numbers(tmux, broker, "the numbers after fg")
        tmux.keys("q")
        await_exit(tmux, 0)

        step = "SIGTERM quits"
        start_watch(tmux, bin_dir, broker.socket)
        await_view(tmux)
        shell = int(tmux.flag("pane_pid"))
        children = subprocess.run(["pgrep", "-P", str(shell), "-x", "dsbctl"],
                                  capture_output=True, text=True).stdout.split()
        if len(children) != 1:
            raise Failure(f"expected one dsbctl under the pane's shell, found {children}")
        os.kill(int(children[0]), signal.SIGTERM)
        await_exit(tmux, 143)

        step = "the broker stopped and back"
        holder.stdin.close()
        holder.wait(timeout=30)
        holder = None
        start_watch(tmux, bin_dir, broker.socket)
        await_view(tmux)
        await_numbers(tmux, broker, "the numbers before the broker stops")
        broker.stop()
        await_true("DISCONNECTED on screen", lambda: "DISCONNECTED" in tmux.screen(),
                   last=tmux.screen)
        scr = tmux.screen()
        if "retrying every 300ms" not in scr or "exch01" not in scr:
            raise Failure(f"the disconnected view does not say it retries or lost its numbers:\n"
                          f"{scr}")
        check_widths(tmux)
        broker.start()
        await_true("connected again", lambda: "DISCONNECTED" not in tmux.screen(),
                   last=tmux.screen)
        await_numbers(tmux, broker, "the numbers after the broker came back")
        tmux.keys("q")
        await_exit(tmux, 0)

        step = "TERM=dumb: frames one after another"
        start_watch(tmux, bin_dir, broker.socket, extra="TERM=dumb ")
        await_true("two frames one after another",
                   lambda: tmux.screen().count("dsb watch ") >= 2, last=tmux.screen)
        if tmux.flag("alternate_on") != "0":
            raise Failure("TERM=dumb: the alternate screen is on")
        if "\x1b[7m" in tmux.screen(escapes=True):
            raise Failure("TERM=dumb: reverse video on screen")
        tmux.keys("q")
        await_exit(tmux, 0)

        step = "stdout a pipe"
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        p = subprocess.Popen([os.path.join(bin_dir, "dsbctl"), "--socket", broker.socket,
                              "watch", "--interval", "200ms"], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, env=env)
        frame = []
        while True:
            line = p.stdout.readline()
            if not line:
                raise Failure("dsbctl watch into a pipe ended before one frame")
            line = line.decode().rstrip("\n")
            if line == "" and frame and frame[-1] != "" and any(
                    l.startswith(LONG_NAME[:10]) for l in frame):
                break
            frame.append(line)
        for line in frame:
            if "\x1b" in line or len(line) > 80:
                raise Failure(f"a plain frame line with an escape or over 80 columns: {line!r}")
        if not frame[0].startswith("dsb watch ") or "connected" not in frame[0]:
            raise Failure(f"the plain frame's header: {frame[0]!r}")
        p.stdout.close()  # the reader goes away: the next write fails, dsbctl ends
        try:
            code = p.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise Failure("dsbctl watch did not end after its stdout was closed")
        if code != 0:
            raise Failure(f"dsbctl watch ended with {code} after its stdout was closed")

        step = "cluster: the coordinator's ledger per broker"
        cluster = cluster_brokers(bin_dir, scratch)
        for b in cluster:
            b.start()
        start_watch(tmux, bin_dir, cluster[1].socket)
        await_view(tmux)
        await_true("the lease table", lambda: "LEASES  coordinator ws1" in tmux.screen(),
                   last=tmux.screen)
        await_ledger(tmux, cluster[1], "the lease table to show leases --json's numbers")
        holder = subprocess.Popen([os.path.join(bin_dir, "watch_holder"), cluster[1].socket,
                                   "exch01"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        if holder.stdout.readline().strip() != "connected":
            raise Failure("watch_holder did not connect to ws2")
        holder.stdin.write("take 3\n")
        holder.stdin.flush()
        if holder.stdout.readline().strip() != "held 3":
            raise Failure("watch_holder did not take 3 slots on ws2")
        await_true("ws2's 3 slots in the ledger",
                   lambda: lease_rows(tmux.screen()).get("ws2", [None] * 4)[3] == "3",
                   timeout=60, last=tmux.screen)
        await_ledger(tmux, cluster[1], "the lease table after ws2 took 3 slots")
        check_widths_only(tmux)
        tmux.keys("q")
        await_exit(tmux, 0)
        holder.stdin.close()
        holder.wait(timeout=30)
        holder = None
        for b in cluster:
            b.stop()

        step = "--once without a broker"
        broker.stop()
        r = subprocess.run([os.path.join(bin_dir, "dsbctl"), "--socket", broker.socket, "watch",
                            "--once"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 1 or "DISCONNECTED" not in r.stdout:
            raise Failure(f"--once without a broker: exit {r.returncode}, output:\n{r.stdout}"
                          f"{r.stderr}")
        print("watch_tmux_test: all checks passed")
        return 0
    except Failure as e:
        print(f"watch_tmux_test: FAILED at step '{step}': {e}")
        if tmux is not None:
            try:
                print("screen:\n" + tmux.screen())
            except Exception:  # the failure above is what matters
                pass
        return 1
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        if tmux is not None:
            tmux.kill()
        for b in cluster:
            b.stop()
        broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
