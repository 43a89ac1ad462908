# SPDX-License-Identifier: MIT
"""Packaging: --version on both programs; the service manager's notifications (READY,
RELOADING, STOPPING) on a NOTIFY_SOCKET this test listens on; `make install` into a
DESTDIR; the man pages clean under `mandoc -Tlint`; the systemd unit accepted by
`systemd-analyze`, its capability set enough to load the eBPF layer and its system-call
filter covering every call deputyd makes; the bash completion."""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

MAKE = shutil.which("make") or "/usr/bin/make"


def version_h():
    with open(os.path.join(dt.SRC, "daemon", "lib", "version.h")) as f:
        return re.search(r'#define DEPUTY_VERSION "([^"]+)"', f.read()).group(1)


@case
def both_programs_print_their_version():
    v = version_h()
    for prog, name in ((dt.DEPUTY, "deputy"), (dt.DEPUTYD, "deputyd")):
        r = dt.run([prog, "--version"])
        eq(r.returncode, 0, r.stderr)
        eq(r.stdout, "%s %s\n" % (name, v), name + " --version")


# ---- sd_notify -------------------------------------------------------------------------------

class NotifyListener:
    """The service manager's side: a datagram socket that learns each sender's pid."""

    def __init__(self, address):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.s.bind(address)
        self.s.settimeout(30)

    def next(self):
        """(message, sender pid)."""
        try:
            data, anc, _, _ = self.s.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            dt.fail("no notification within 30 s")
        pid = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
        return data.decode(), pid

    def close(self):
        self.s.close()


def notify_cycle(address, env_value):
    d = dt.Deputyd()
    n = NotifyListener(address)
    os.environ["NOTIFY_SOCKET"] = env_value
    try:
        d.start(wait=False)
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        msg, pid = n.next()
        eq(msg, "READY=1\nSTATUS=serving", "first notification")
        eq(pid, d.proc.pid, "sent by deputyd itself (NotifyAccess=main)")
        # READY means ready: the socket answers right away
        eq(d.cli("sessions").returncode, 0, "deputy sessions right after READY")
        d.proc.send_signal(signal.SIGHUP)
        msg, _ = n.next()
        check(re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", msg), repr(msg))
        eq(n.next()[0], "READY=1", "after the reload")
        d.proc.send_signal(signal.SIGTERM)
        eq(n.next()[0], "STOPPING=1", "at SIGTERM")
        eq(d.stop(), 0, "deputyd's exit status")
    finally:
        n.close()


@case
def service_manager_hears_ready_reloading_stopping():
    with dt.TempDir() as tmp:
        path = os.path.join(tmp, "notify")
        notify_cycle(path, path)


@case
def notify_socket_in_the_abstract_namespace():
    name = "deputy-test-notify-%d" % os.getpid()
    notify_cycle("\0" + name, "@" + name)


# ---- make install ----------------------------------------------------------------------------

def make_install(dest, *extra):
    r = dt.run([MAKE, "-s", "-C", dt.SRC, "install", "DESTDIR=" + dest, "BUILD=" + dt.BUILD]
               + list(extra), timeout=300)
    eq(r.returncode, 0, r.stdout + r.stderr)


@case
def make_install_puts_everything_in_place():
    with dt.TempDir() as dest:
        make_install(dest, "PREFIX=/usr")
        want = {
            "usr/sbin/deputyd": 0o755, "usr/bin/deputy": 0o755,
            "usr/share/man/man1/deputy.1": 0o644, "usr/share/man/man5/deputy.json.5": 0o644,
            "usr/share/man/man8/deputyd.8": 0o644,
            "usr/lib/systemd/system/deputyd.service": 0o644,
            "usr/share/bash-completion/completions/deputy": 0o644,
            "etc/deputy/deputy.json.example": 0o644,
        }
        for rel, mode in want.items():
            p = os.path.join(dest, rel)
            check(os.path.isfile(p), rel + " not installed")
            eq(os.stat(p).st_mode & 0o777, mode, rel + " mode")
        unit = open(os.path.join(dest, "usr/lib/systemd/system/deputyd.service")).read()
        eq(re.findall(r"@[A-Z]+@", unit), [], "placeholders left in the unit")
        check("ExecStart=/usr/sbin/deputyd -f -c /etc/deputy/deputy.json\n" in unit, unit)
        # the example is a valid config once its issuer's JWKS exists
        example = open(os.path.join(dest, "etc/deputy/deputy.json.example")).read()
        d = dt.Deputyd()
        with open(d.config_path, "w") as f:
            f.write(example.replace("/etc/deputy/idp-jwks.json", d.jwks_file))
        r = dt.run([dt.DEPUTYD, "-t", "-c", d.config_path])
        eq(r.returncode, 0, r.stderr)


@case
def man_pages_are_clean_under_mandoc_lint():
    if not shutil.which("mandoc"):
        dt.skip("mandoc is not installed (scripts/deps.sh installs it)")
    if not dt.is_root():
        dt.skip("needs root for a private mount namespace")
    with dt.TempDir() as dest:
        make_install(dest, "PREFIX=/usr")
        man = os.path.join(dest, "usr/share/man")
        # mandoc looks cross-references up under /usr/share/man: show it the installed
        # pages there, in a mount namespace of this command only
        r = dt.run(["unshare", "-m", "sh", "-c",
                    'mount --bind "$1" /usr/share/man && makewhatis /usr/share/man && '
                    "cd /usr/share/man && mandoc -Tlint man1/deputy.1 man5/deputy.json.5 "
                    "man8/deputyd.8", "sh", man])
        eq((r.returncode, r.stdout + r.stderr), (0, ""), "mandoc -Tlint")
        # and each page renders with its name
        for page, name in (("man1/deputy.1", "DEPUTY(1)"), ("man8/deputyd.8", "DEPUTYD(8)"),
                           ("man5/deputy.json.5", "DEPUTY.JSON(5)")):
            r = dt.run(["mandoc", "-Tutf8", os.path.join(man, page)])
            check(r.stdout.startswith(name), page + ": " + r.stdout[:80])


# ---- the systemd unit ----------------------------------------------------------------------

def unit_values(path, key):
    vals = []
    for line in open(path):
        if line.startswith(key + "="):
            vals += line.split("=", 1)[1].split()
    return vals


@case
def systemd_accepts_the_unit():
    if not shutil.which("systemd-analyze"):
        dt.skip("systemd-analyze is not installed")
    with dt.TempDir() as prefix:
        # a real prefix (no DESTDIR) so the unit's ExecStart= exists for verify
        make_install("", "PREFIX=" + prefix, "SYSCONFDIR=" + prefix + "/etc",
                     "SYSTEMDUNITDIR=" + prefix + "/systemd")
        unit = os.path.join(prefix, "systemd", "deputyd.service")
        env = dict(os.environ, MANPATH=os.path.join(prefix, "share", "man"))
        r = dt.run(["systemd-analyze", "verify", unit], env=env)
        eq((r.returncode, r.stdout + r.stderr), (0, ""), "systemd-analyze verify")
        r = dt.run(["systemd-analyze", "security", "--offline=yes", unit], env=env)
        m = re.search(r"Overall exposure level for deputyd.service: ([0-9.]+)", r.stdout)
        check(m, r.stdout[-500:] + r.stderr)
        check(float(m.group(1)) <= 4.0, "exposure %s: the sandboxing went" % m.group(1))
        eq(unit_values(unit, "Type"), ["notify"], "Type=")


def wrapped_deputyd(d, wrapper):
    """Starts d with deputyd run through wrapper (a shell script taking deputyd's argv)."""
    real = dt.DEPUTYD
    dt.DEPUTYD = wrapper
    try:
        d.start()
    finally:
        dt.DEPUTYD = real


def write_script(path, text):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + text)
    os.chmod(path, 0o755)


def blocked_connect_in_a_session(d):
    """A session whose agent connects where no route allows; returns its records."""
    r = d.run(d.idp.grant(), [dt.prog("net_connect"), "127.0.0.2", "9"],
              user=dt.unprivileged_user())
    check(r.returncode != 0, "the connect went through")
    sid = d.sessions()[-1]["session"]
    return d.wait_closed(sid, kernel=True)


@case
def the_units_capabilities_load_the_kernel_layer():
    if not dt.bpf_available():
        dt.skip("needs root and BTF", bpf=True)
    unit = os.path.join(dt.SRC, "daemon", "deputyd", "deputyd.service.in")
    caps = unit_values(unit, "CapabilityBoundingSet")
    check(caps and all(c.startswith("CAP_") for c in caps), caps)
    d = dt.Deputyd(kernel="on")
    wrapper = os.path.join(d.dir, "sandboxed-deputyd")
    write_script(wrapper, 'exec setpriv --bounding-set=-all,%s --inh-caps=-all '
                          '--no-new-privs %s "$@"\n'
                 % (",".join("+" + c[4:].lower() for c in caps), dt.DEPUTYD))
    wrapped_deputyd(d, wrapper)
    status = open("/proc/%d/status" % d.proc.pid).read()
    eq(re.search(r"NoNewPrivs:\s+(\d)", status).group(1), "1", "no_new_privs")
    bnd = int(re.search(r"CapBnd:\s+([0-9a-f]+)", status).group(1), 16)
    check(bnd != (1 << 41) - 1 and bnd & (1 << 39), "bounding set %x" % bnd)  # CAP_BPF: 39
    recs = blocked_connect_in_a_session(d)
    denies = [x for x in recs if x["type"] == "deny" and x.get("layer") == "kernel"]
    check(denies, "the kernel layer did not block: %r" % [x["type"] for x in recs])
    # the proxy child drops to its own user with what the set leaves
    check("proxy (pid" not in d.log_text(), "the proxy died: " + d.log_text()[-800:])
    d.proc.send_signal(signal.SIGHUP)
    eq(d.stop(), 0, "deputyd under the unit's capabilities: " + d.log_text()[-800:])


@case
def the_units_syscall_filter_covers_deputyd():
    if not dt.bpf_available():
        dt.skip("needs root and BTF", bpf=True)
    if not shutil.which("strace") or not shutil.which("systemd-analyze"):
        dt.skip("needs strace and systemd-analyze")
    unit = os.path.join(dt.SRC, "daemon", "deputyd", "deputyd.service.in")
    allowed = set()
    for item in unit_values(unit, "SystemCallFilter"):
        if item.startswith("@"):
            r = dt.run(["systemd-analyze", "syscall-filter", item])
            allowed |= {ln.strip() for ln in r.stdout.splitlines()
                        if ln.startswith("    ") and not ln.strip().startswith(("#", "@"))}
            # nested groups the set names
            for grp in re.findall(r"^\s+(@[a-z-]+)$", r.stdout, re.M):
                g = dt.run(["systemd-analyze", "syscall-filter", grp]).stdout
                allowed |= {ln.strip() for ln in g.splitlines()
                            if ln.startswith("    ") and not ln.strip().startswith("#")}
        else:
            allowed.add(item)
    d = dt.Deputyd(kernel="on", audit_export={"syslog": "/nonexistent/log.sock"})
    trace = os.path.join(d.dir, "strace.out")
    wrapper = os.path.join(d.dir, "traced-deputyd")
    write_script(wrapper, 'exec strace -f -qq -c -U name -o %s %s "$@"\n' % (trace, dt.DEPUTYD))
    wrapped_deputyd(d, wrapper)
    # d.proc is strace: signals go to deputyd, its child
    with open("/proc/%d/task/%d/children" % (d.proc.pid, d.proc.pid)) as f:
        deputyd = int(f.read().split()[0])
    blocked_connect_in_a_session(d)
    os.kill(deputyd, signal.SIGHUP)
    check(dt.wait_until(lambda: "reloaded" in d.log_text(), timeout=20), "no reload")
    os.kill(deputyd, signal.SIGTERM)
    d.proc.wait(60)
    d.stop()
    used = set()
    for line in open(trace):
        words = line.split()
        if len(words) == 1 and re.fullmatch(r"[a-z_0-9]+", words[0]) and words[0] not in ("total", "syscall"):
            used.add(words[0])
    check(len(used) > 20 and "bpf" in used, "strace saw too little: %r" % sorted(used))
    eq(sorted(used - allowed), [], "system calls deputyd made that the unit's filter refuses")


# ---- bash completion -------------------------------------------------------------------------

def complete(line, env):
    """What bash completion offers for line (the word under the cursor is its last)."""
    script = os.path.join(dt.SRC, "daemon", "cli", "deputy.bash-completion")
    prog = ('source /usr/share/bash-completion/bash_completion; source "$1"; '
            'read -ra COMP_WORDS <<< "$2"; [[ $2 == *" " ]] && COMP_WORDS+=(""); '
            'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE=$2; COMP_POINT=${#2}; '
            '_deputy deputy "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; '
            'printf "%s\\n" "${COMPREPLY[@]}"')
    r = dt.run(["bash", "-c", prog, "bash", script, line], env=env)
    eq(r.returncode, 0, r.stderr)
    return r.stdout.split()


@case
def bash_completes_commands_options_and_sessions():
    if not os.path.exists("/usr/share/bash-completion/bash_completion"):
        dt.skip("bash-completion is not installed (scripts/deps.sh installs it)")
    d = dt.Deputyd().start()
    env = d.env(PATH=os.path.dirname(dt.DEPUTY) + ":" + os.environ.get("PATH", ""))
    eq(complete("deputy rep", env), ["report"])
    eq(sorted(complete("deputy ", env)),
       sorted(["run", "sessions", "logs", "audit", "report", "grant", "verify", "login",
               "route", "help", "kill", "revoke", "--help", "--version"]))
    eq(complete("deputy logs --ve", env), ["--verdict"])
    eq(complete("deputy logs --verdict b", env), ["block"])
    eq(complete("deputy route ", env), ["test"])
    eq(complete("deputy help ru", env), ["run"])
    eq(complete("deputy report S --h", env), ["--html", "--help"])
    eq(complete("deputy audit ", env), ["verify"])
    r = d.run(d.idp.grant(), ["true"])
    eq(r.returncode, 0, r.stderr)
    sid = d.sessions()[0]["session"]
    check(sid in complete("deputy logs ", env), "session ids offered")
    check(sid in complete("deputy report " + sid[:3], env), "by prefix")


if __name__ == "__main__":
    dt.main()
