#!/usr/bin/env python3
"""The Debian package, end to end (CTest label "package").

1. cpack -G DEB (into a temporary folder) makes dsb_<version>_<arch>.deb.
2. dpkg-deb -c / -I / -e: the files, their owners and modes, Depends, conffiles,
   maintainer scripts, shlibs ("dsb (>= version)").
3. dpkg --root=R (R a throw-away folder with an empty dpkg database;
   --force-script-chrootless: the maintainer scripts run with DPKG_ROOT=R and
   change only files below R, never this machine's users or /etc) installs it;
   the user dsb, /run/dsb and /var/lib/dsb are made below R as the unit expects.
4. The unit's files agree: ExecStart's program and config exist below R, the
   config's socket folder is the unit's RuntimeDirectory and the tmpfiles.d
   folder, its state_dir the StateDirectory; the broker links libsystemd.so.0
   (readelf -d). systemd-analyze verify, when installed.
5. A unit that starts: the unit's ExecStart, with R in front of its paths and
   the installed config pointed at temporary folders, runs with NOTIFY_SOCKET
   set to a datagram socket this test reads. READY=1 (with MAINPID) must
   arrive, and then the socket exists and `dsbctl status` answers; SIGTERM
   brings STOPPING=1 and exit status 0.
6. Installed again over itself: one user dsb, the edited conffile kept.
7. dpkg --purge removes the files, the conffile and the state folder.

Exit 0: all passed. 77 (CTest SKIP_RETURN_CODE): a tool is missing, or not
run as root (dpkg --root must chown files to root); the reason is printed.
Anything else: a failure, with what was expected and what was found.
"""

import argparse
import json
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

SKIP = 77
WAIT_S = 60  # bound on every wait for the broker (a loaded 2-core CI box)


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def run(cmd, **kw):
    """Runs cmd; a non-zero exit is a failure naming the command and its output."""
    # No terminal: a tool that wants to ask (dpkg about a conffile) fails instead.
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=kw.pop("timeout", 600), **kw)
    if p.returncode != 0:
        raise Failure(f"`{shlex.join(cmd)}` exited {p.returncode}:\n{p.stdout}")
    return p.stdout


def skip(reason):
    print(f"SKIPPED: {reason}")
    sys.exit(SKIP)


def build_deb(args, out):
    run([args.cpack, "-G", "DEB", "--config", os.path.join(args.build_dir, "CPackConfig.cmake"),
         "-B", out])
    arch = run(["dpkg", "--print-architecture"]).strip()
    deb = os.path.join(out, f"dsb_{args.version}_{arch}.deb")
    found = [f for f in os.listdir(out) if f.endswith(".deb")]
    check(os.path.isfile(deb), f"cpack made {found}, expected {os.path.basename(deb)}")
    print(f"built {os.path.basename(deb)} ({os.path.getsize(deb)} bytes)")
    return deb


def inspect_contents(deb):
    listing = run(["dpkg-deb", "-c", deb])
    entries = {}
    for line in listing.splitlines():
        # drwxr-xr-x root/root         0 2026-12-06 09:00 ./usr/bin/
        parts = line.split(None, 5)
        check(len(parts) == 6, f"unexpected dpkg-deb -c line: {line!r}")
        mode, owner, _, _, _, path = parts
        path = path.split(" -> ")[0].rstrip("/")
        entries[path] = (mode, owner)
    bad_owner = [p for p, (_, o) in entries.items() if o != "root/root"]
    check(not bad_owner, f"files not owned by root/root: {bad_owner}")
    want = {
        "./usr/bin/dsb-broker": "-rwxr-xr-x",
        "./usr/bin/dsbctl": "-rwxr-xr-x",
        "./usr/lib/systemd/system/dsb-broker.service": "-rw-r--r--",
        "./usr/lib/tmpfiles.d/dsb.conf": "-rw-r--r--",
        "./usr/lib/sysusers.d/dsb.conf": "-rw-r--r--",
        "./etc/dsb/dsb.toml": "-rw-r--r--",
        "./usr/include/dsb/dsb.h": "-rw-r--r--",
        "./usr/include/dsb/version.h": "-rw-r--r--",
        "./usr/share/doc/dsb/copyright": "-rw-r--r--",
        "./usr/share/doc/dsb/changelog.gz": "-rw-r--r--",
        "./usr/share/man/man8/dsb-broker.8.gz": "-rw-r--r--",
        "./usr/share/man/man8/dsbctl.8.gz": "-rw-r--r--",
    }
    for path, mode in want.items():
        check(path in entries, f"{path} is not in the package; it has:\n{listing}")
        check(entries[path][0] == mode, f"{path} has mode {entries[path][0]}, expected {mode}")
    libs = [p for p in entries if re.fullmatch(r"\./usr/lib(/[^/]+)?/libdsb\.so\.\d+(\.\d+)*", p)]
    check(libs, f"no libdsb.so.<N> in the package; it has:\n{listing}")
    # Nothing of the build machine's folders, and no test program.
    strays = [p for p in entries if "/build/" in p or "test" in os.path.basename(p)]
    check(not strays, f"unexpected files in the package: {strays}")
    print(f"dpkg-deb -c: {len(entries)} entries, {', '.join(sorted(want))} and {libs}")


def inspect_control(args, deb, work):
    info = run(["dpkg-deb", "-I", deb])
    fields = {}
    for name in ("Package", "Version", "Architecture", "Depends", "Maintainer"):
        fields[name] = run(["dpkg-deb", "-f", deb, name]).strip()
    check(fields["Package"] == "dsb", f"Package: {fields['Package']!r}")
    check(fields["Version"] == args.version, f"Version: {fields['Version']!r}, "
          f"expected the project version {args.version}")
    depends = [d.strip() for d in fields["Depends"].split(",")]
    names = [re.split(r"[ (]", d, maxsplit=1)[0] for d in depends]
    # dpkg-shlibdeps computed them: the C and C++ runtimes at least.
    for lib in ("libc6", "libstdc++6"):
        check(lib in names, f"Depends lacks {lib} (dpkg-shlibdeps did not run?): {fields['Depends']}")
    check("systemd-sysusers | adduser" in depends,
          f"Depends lacks who makes the user dsb: {fields['Depends']}")
    ctrl = os.path.join(work, "control")
    run(["dpkg-deb", "-e", deb, ctrl])
    for script in ("postinst", "prerm", "postrm"):
        p = os.path.join(ctrl, script)
        check(os.path.isfile(p) and os.access(p, os.X_OK), f"{script} missing or not executable")
        run(["sh", "-n", p])
    # Programs built against libdsb depend on this version or a later one (0.y
    # only adds to the ABI): ">=", never "=" (which would block upgrades).
    with open(os.path.join(ctrl, "shlibs")) as f:
        shlibs = [l.split(None, 2) for l in f if l.strip()]
    check(any(lib == "libdsb" for lib, _, _ in shlibs), f"shlibs has no libdsb: {shlibs}")
    for lib, major, dep in shlibs:
        check(dep.strip() == f"dsb (>= {args.version})",
              f"shlibs: {lib} {major} {dep.strip()!r}, expected 'dsb (>= {args.version})'")
    with open(os.path.join(ctrl, "conffiles")) as f:
        conffiles = f.read().split()
    check(conffiles == ["/etc/dsb/dsb.toml"], f"conffiles: {conffiles}")
    print(f"dpkg-deb -I: Depends: {fields['Depends']}; conffiles {conffiles}; "
          f"postinst, prerm, postrm\n{info}")


def make_dpkg_root(root):
    admin = os.path.join(root, "var/lib/dpkg")
    for d in ("info", "updates", "triggers", "alternatives"):
        os.makedirs(os.path.join(admin, d), exist_ok=True)
    for f in ("status", "available"):
        open(os.path.join(admin, f), "w").close()


def dpkg_root(root, *cmd):
    # --force-depends: the throw-away root has no libc6 package (Depends was
    # checked above); --force-script-chrootless: scripts run with DPKG_ROOT.
    return run(["dpkg", f"--root={root}", "--log=/dev/null", "--force-depends",
                "--force-script-chrootless", *cmd])


def root_user(root, name):
    """(uid, gid) of `name` in root's /etc/passwd, or None."""
    try:
        with open(os.path.join(root, "etc/passwd")) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if fields[0] == name:
                    return int(fields[2]), int(fields[3])
    except FileNotFoundError:
        pass
    return None


def unit_settings(path):
    settings = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                k, v = line.split("=", 1)
                settings[k.strip()] = v.strip()
    return settings


def toml_string(text, key):
    m = re.search(rf'^{key}\s*=\s*"([^"]*)"', text, re.M)
    return m.group(1) if m else None


def check_installed(root, has_scripts):
    unit_path = os.path.join(root, "usr/lib/systemd/system/dsb-broker.service")
    unit = unit_settings(unit_path)
    check(unit.get("Type") == "notify", f"Type={unit.get('Type')}, expected notify")
    exec_start = shlex.split(unit["ExecStart"])
    program = os.path.join(root, exec_start[0].lstrip("/"))
    check(os.access(program, os.X_OK), f"ExecStart's {exec_start[0]} is not installed")
    check("--config" in exec_start, f"ExecStart has no --config: {exec_start}")
    config = exec_start[exec_start.index("--config") + 1]
    config_in_root = os.path.join(root, config.lstrip("/"))
    check(os.path.isfile(config_in_root), f"ExecStart's config {config} is not installed")
    with open(config_in_root) as f:
        text = f.read()
    sock = toml_string(text, "socket")
    state = toml_string(text, "state_dir")
    check(os.path.dirname(sock) == "/run/" + unit.get("RuntimeDirectory", ""),
          f"the config's socket {sock} is not in the unit's RuntimeDirectory="
          f"{unit.get('RuntimeDirectory')}")
    check(state == "/var/lib/" + unit.get("StateDirectory", ""),
          f"the config's state_dir {state} is not the unit's StateDirectory")
    check(unit.get("User") == "dsb" and unit.get("Group") == "dsb", "User=/Group= are not dsb")
    check(toml_string(text, "group") == "dsb", "the config's broker.group is not dsb")
    with open(os.path.join(root, "usr/lib/tmpfiles.d/dsb.conf")) as f:
        tmpfiles = [l.split() for l in f if l.strip() and not l.startswith("#")]
    check(["d", os.path.dirname(sock), "0750", "dsb", "dsb", "-"] in tmpfiles,
          f"tmpfiles.d has no 'd {os.path.dirname(sock)} 0750 dsb dsb -': {tmpfiles}")
    check(["d", state, "0700", "dsb", "dsb", "-"] in tmpfiles,
          f"tmpfiles.d has no 'd {state} 0700 dsb dsb -': {tmpfiles}")
    if has_scripts:
        # What postinst made below the root (systemd-sysusers / -tmpfiles --root).
        ids = root_user(root, "dsb")
        check(ids is not None, "postinst made no user dsb in the root's /etc/passwd")
        for folder, mode in ((os.path.dirname(sock), 0o750), (state, 0o700)):
            st = os.lstat(os.path.join(root, folder.lstrip("/")))
            check(stat.S_ISDIR(st.st_mode) and (st.st_uid, st.st_gid) == ids and
                  stat.S_IMODE(st.st_mode) == mode,
                  f"{folder} below the root: uid {st.st_uid} gid {st.st_gid} mode "
                  f"{oct(stat.S_IMODE(st.st_mode))}, expected dsb {ids} {oct(mode)}")
        print(f"postinst: user dsb {ids}, /run/dsb 0750 and /var/lib/dsb 0700 below the root")
    # The unit is Type=notify: a broker without libsystemd would never say
    # READY=1 (cpack refuses such a build; this checks what was shipped).
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        run(["readelf", "-d", program]))
    check("libsystemd.so.0" in needed,
          f"{exec_start[0]} does not link libsystemd.so.0 (no sd_notify); NEEDED: {needed}")
    print(f"unit: ExecStart={unit['ExecStart']}; socket {sock}, state_dir {state}; "
          f"the broker links libsystemd.so.0")
    return unit_path, exec_start, config_in_root


def verify_unit(root, unit_path, work):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("note: systemd-analyze is not installed: `systemd-analyze verify` not run")
        return
    # verify --root wants the system's own units (sysinit.target, ...) below the
    # root too; instead, a copy of the unit whose ExecStart paths point below it.
    with open(unit_path) as f:
        text = f.read()
    text = re.sub(r"^(ExecStart=)(.*)$", lambda m: m.group(1) + shlex.join(
        os.path.join(root, a.lstrip("/")) if a.startswith("/") else a
        for a in shlex.split(m.group(2))), text, flags=re.M)
    copy = os.path.join(work, "verify", os.path.basename(unit_path))
    os.makedirs(os.path.dirname(copy))
    with open(copy, "w") as f:
        f.write(text)
    p = subprocess.run([analyze, "verify", "--man=no", copy], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    out = p.stdout.strip()
    check(p.returncode == 0 and not out, f"systemd-analyze verify (exit {p.returncode}):\n{out}")
    print("systemd-analyze verify: OK")


def start_unit(root, exec_start, config_in_root, work, shm_prefix):
    """Runs ExecStart below `root` as systemd would start Type=notify."""
    run_dir = os.path.join(work, "run", "dsb")
    sock = os.path.join(run_dir, "dsb.sock")
    state = os.path.join(work, "state")
    with open(config_in_root) as f:
        text = f.read()
    # Temporary folders instead of /run/dsb and /var/lib/dsb; no group (there is
    # no group dsb on this machine); a segment name of this run.
    text = text.replace('"/run/dsb/dsb.sock"', f'"{sock}"')
    text = text.replace('"/var/lib/dsb"', f'"{state}"')
    text = re.sub(r'^shm_prefix = "[^"]*"', f'shm_prefix = "{shm_prefix}"', text, flags=re.M)
    text = re.sub(r'^group = .*$', "", text, flags=re.M)
    with open(config_in_root, "w") as f:
        f.write(text)
    os.chmod(config_in_root, 0o644)

    notify_path = os.path.join(work, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    argv = [os.path.join(root, exec_start[0].lstrip("/"))] + [
        os.path.join(root, a.lstrip("/")) if a.startswith("/") else a for a in exec_start[1:]]
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    log_path = os.path.join(work, "broker.log")
    log = open(log_path, "w")
    print(f"starting {shlex.join(argv)} with NOTIFY_SOCKET={notify_path}")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    pidfd = os.pidfd_open(proc.pid)

    def broker_log():
        with open(log_path) as f:
            return f.read()

    def await_message(want):
        """Datagrams until one holds the line `want`; fails if the broker exits first."""
        seen = []
        while True:
            ready, _, _ = select.select([notify, pidfd], [], [], WAIT_S)
            if notify in ready:
                msg = notify.recv(4096).decode()
                seen.append(msg)
                if want in msg.split("\n"):
                    return msg
                continue
            if pidfd in ready:
                raise Failure(f"the broker exited ({proc.wait()}) before {want}; messages "
                              f"{seen}; its log:\n{broker_log()}")
            raise Failure(f"no {want} within {WAIT_S} s (a broker built without libsystemd "
                          f"sends nothing); messages {seen}; log:\n{broker_log()}")

    try:
        msg = await_message("READY=1")
        fields = dict(l.split("=", 1) for l in msg.split("\n") if "=" in l)
        check(fields.get("MAINPID") == str(proc.pid),
              f"READY=1 with MAINPID={fields.get('MAINPID')}, the broker is pid {proc.pid}")
        check("STATUS" in fields, f"READY=1 without STATUS=: {msg!r}")
        # At that moment the socket is there and answers.
        check(stat.S_ISSOCK(os.lstat(sock).st_mode), f"{sock} is not a socket at READY=1")
        dsbctl = os.path.join(root, "usr/bin/dsbctl")
        out = run([dsbctl, "--socket", sock, "status", "--json"], timeout=WAIT_S)
        status = json.loads(out)
        check("exch01" in json.dumps(status), f"dsbctl status does not show exch01: {out}")
        print(f"READY=1 (MAINPID={fields['MAINPID']}, STATUS={fields['STATUS']}); "
              f"dsbctl status answered")
        proc.send_signal(signal.SIGTERM)
        msg = await_message("STOPPING=1")
        rc = proc.wait(timeout=WAIT_S)
        check(rc == 0, f"the broker exited {rc} after SIGTERM; log:\n{broker_log()}")
        check(not os.path.exists(sock), f"{sock} is left after a clean stop")
        print(f"SIGTERM: {msg.splitlines()[0]}, exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(pidfd)
        notify.close()
        log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--cpack", required=True)
    args = ap.parse_args()

    for tool in ("dpkg-deb", "dpkg", "dpkg-shlibdeps", "readelf"):
        if not shutil.which(tool):
            skip(f"{tool} is not installed (Debian: dpkg-dev, binutils); the package cannot "
                 "be built or inspected")
    if not hasattr(os, "pidfd_open"):
        skip("this Python has no os.pidfd_open (needs 3.9 and Linux 5.3)")

    work = tempfile.mkdtemp(prefix="dsb-package-test.")
    shm_prefix = f"pkg{os.getpid()}"
    is_root = os.geteuid() == 0
    try:
        deb = build_deb(args, os.path.join(work, "out"))
        inspect_contents(deb)
        inspect_control(args, deb, work)
        root = os.path.join(work, "root")
        os.makedirs(root)
        if is_root:
            make_dpkg_root(root)
            dpkg_root(root, "-i", deb)
            status = run(["dpkg", f"--root={root}", "-s", "dsb"])
            check("Status: install ok installed" in status, f"dpkg -s dsb:\n{status}")
        else:
            print("note: not root: dpkg --root would fail to give files to root; "
                  "using dpkg-deb -x without the maintainer scripts")
            run(["dpkg-deb", "-x", deb, root])
        unit_path, exec_start, config_in_root = check_installed(root, has_scripts=is_root)
        verify_unit(root, unit_path, work)
        start_unit(root, exec_start, config_in_root, work, shm_prefix)
        if is_root:
            # Again over itself: the postinst is idempotent (one user dsb), and the
            # conffile the operator changed (start_unit did) is kept, without a prompt.
            with open(config_in_root) as f:
                edited = f.read()
            dpkg_root(root, "-i", deb)
            with open(config_in_root) as f:
                check(f.read() == edited, "reinstalling replaced the edited /etc/dsb/dsb.toml")
            with open(os.path.join(root, "etc/passwd")) as f:
                users = [l for l in f if l.startswith("dsb:")]
            check(len(users) == 1, f"after reinstalling, /etc/passwd has {len(users)} users dsb")
            print("reinstall: edited conffile kept, one user dsb")
            dpkg_root(root, "--purge", "dsb")
            for gone in ("usr/bin/dsb-broker", "etc/dsb/dsb.toml", "var/lib/dsb", "run/dsb"):
                check(not os.path.lexists(os.path.join(root, gone)),
                      f"{gone} is left below the root after dpkg --purge")
            print("dpkg --purge: files, conffile and folders gone")
    except Failure as e:
        print(f"FAILED: {e}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for name in os.listdir("/dev/shm"):
            if name.startswith((f"dsb-{shm_prefix}-", f".dsb-lock-dsb-{shm_prefix}-")):
                os.unlink(os.path.join("/dev/shm", name))
    if not is_root:
        skip("ran as a non-root user: the maintainer scripts (dpkg --root) were not run; "
             "every other check passed")
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
