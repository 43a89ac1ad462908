# SPDX-License-Identifier: MIT
"""The kernel layer through the real deputyd and `deputy run`: clients that go around the
shim (a static binary, raw syscalls, io_uring, a child without LD_PRELOAD, UDP, TCP Fast
Open, IPv6, v4-mapped IPv6, raw and packet sockets) in a session whose routes allow one
loopback port. To any other destination they get EPERM, the listener there never sees
them and the session's log says `connect` / `block`; to the allowed port they connect and
the log says `allow`, `mediated: false` (their routes say `"tls": "opaque"`, so the kernel
leaves them untouched rather than sending them to the proxy: test_redirect.py covers that).
Outside a session nothing changes; under
`"enforce": false` blocks are logged, not enforced; a burst of 10,000 connects is logged
without loss; the seal's counts add up to the records, also when deputyd reads the last
events late or was restarted mid-session (which must not loosen the session either);
sockets the shim claims are `mediated: true, mediator: "shim"`. Every record is checked
field by field against design.md's Audit log, JSON types included.
Needs root and BPF (SKIP otherwise, FAIL under DEPUTY_REQUIRE_BPF=1)."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

NET_CONNECT = dt.prog("net_connect")
NET_URING = dt.prog("net_uring")
NET_UDP = dt.prog("net_udp")
NET_TFO = dt.prog("net_tfo")
NET_SOCK = dt.prog("net_sock")
BUSYBOX = "/bin/busybox"
BURST = 10000

# Under `make SAN=1` the test clients link ASan while the shim preloaded into them in a
# session carries only UBSan, whose runtime then comes first: ASan must not refuse that.
os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                    "verify_asan_link_order=0"]))

# A dynamically linked client that connects with libc's connect(); argv: ADDR PORT.
CONNECT_PY = r'''
import socket, sys
a, p = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect((a, p))
except OSError as e:
    print("connect: errno=%d (%s)" % (e.errno, e.strerror), flush=True)
    sys.exit(e.errno)
print("connect: ok", flush=True)
'''

# Runs inside the session: prints the session id, then runs each client of argv[1] (a JSON
# list of [name, argv]) one at a time, prints its pid, exit status and output, and waits for
# a line on stdin before the next one, so the test can look at its listeners in between.
DRIVER = r'''
import json, os, subprocess, sys
print(json.dumps({"session": os.environ["DEPUTY_SESSION"]}), flush=True)
for name, argv in json.loads(sys.argv[1]):
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=60)
    print(json.dumps({"name": name, "pid": p.pid, "rc": p.returncode,
                      "out": out.decode(errors="replace")}), flush=True)
    if sys.stdin.readline() != "next\n":
        sys.exit(99)
'''


def need_bpf():
    if not dt.bpf_available():
        dt.skip("needs root and BPF (BTF, cgroup2) for the kernel layer", bpf=True)
    for p in (NET_CONNECT, NET_URING, NET_UDP, NET_TFO, NET_SOCK):
        if not os.access(p, os.X_OK):
            dt.skip("%s not built (make tests-build)" % p, bpf=True)


# ---- listeners ---------------------------------------------------------------------------------

class Listener:
    """A TCP or UDP socket of ours on 127.0.0.1 or ::1 that counts the connections (accepted
    and closed at once) or datagrams it gets, in a thread."""

    def __init__(self, family, kind, port=0):
        self.family, self.kind = family, kind
        self.addr = "127.0.0.1" if family == socket.AF_INET else "::1"
        self.s = socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
        self.s.bind((self.addr, port))
        if kind == "tcp":
            self.s.listen(4096)
        self.s.settimeout(0.1)
        self.port = self.s.getsockname()[1]
        self.count = 0
        self.stopping = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self.stopping:
            try:
                if self.kind == "tcp":
                    c, _ = self.s.accept()
                    c.close()
                else:
                    self.s.recv(2048)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            self.count += 1

    def wait_for(self, n, timeout=10):
        """Waits until the count reached n (a connect that returned has been queued, so
        this only waits for our thread), returns the count."""
        deadline = time.time() + timeout
        while self.count < n and time.time() < deadline:
            time.sleep(0.005)
        return self.count

    def close(self):
        self.stopping = True
        self.t.join(5)
        self.s.close()


def listener_pair(family):
    """TCP and UDP listeners on the same port number."""
    for _ in range(50):
        tcp = Listener(family, "tcp")
        try:
            udp = Listener(family, "udp", tcp.port)
        except OSError:
            tcp.close()
            continue
        return tcp, udp
    raise AssertionError("no free port pair")


class Net:
    """The listeners of one test: an allowed and a blocked TCP+UDP port on 127.0.0.1, an
    allowed and a blocked TCP port on ::1. Routes allow only the allowed ones."""

    def __init__(self):
        self.all = []
        self.a4, self.a4u = self._keep(*listener_pair(socket.AF_INET))
        self.b4, self.b4u = self._keep(*listener_pair(socket.AF_INET))
        self.a6 = self._keep(Listener(socket.AF_INET6, "tcp"))
        self.b6 = self._keep(Listener(socket.AF_INET6, "tcp"))

    def _keep(self, *ls):
        self.all.extend(ls)
        return ls[0] if len(ls) == 1 else ls

    def routes(self):
        return [{"host": "127.0.0.1", "port": self.a4.port, "action": "passthrough",
                 "tls": "opaque"},
                {"host": "::1", "port": self.a6.port, "action": "passthrough", "tls": "opaque"}]

    def close(self):
        for l in self.all:
            l.close()


# ---- the clients ---------------------------------------------------------------------------------

# name -> (argv prefix, target kind). A target kind says which listener a client reaches
# and how the kernel layer reports it.
CLIENTS = [
    ("busybox_static", [BUSYBOX, "nc"], "tcp4"),
    ("raw_syscall_connect", [NET_CONNECT], "tcp4"),
    ("io_uring_connect", [NET_URING], "tcp4"),
    ("io_uring_worker_connect", [NET_URING, "--async"], "tcp4"),
    ("child_without_ld_preload", ["env", "-u", "LD_PRELOAD", dt.PYTHON, "-c", CONNECT_PY],
     "tcp4"),
    ("udp_sendto", [NET_UDP], "udp4"),
    ("tcp_fast_open_sendto", [NET_TFO], "tcp4"),
    ("ipv6_connect", [NET_CONNECT], "tcp6"),
    ("v4_mapped_ipv6_connect", [NET_CONNECT], "mapped"),
    ("v4_mapped_ipv6_udp_sendto", [NET_UDP], "mapped_udp"),
]
# Clients that send through a libc function the shim may hook one day: while it does not,
# they go around it like the others.
VIA_LIBC = {"udp_sendto": "sendto", "tcp_fast_open_sendto": "sendto",
            "v4_mapped_ipv6_udp_sendto": "sendto"}
SOCKETS = [("raw_socket", "raw", "inet"), ("raw6_socket", "raw6", "inet6"),
           ("packet_socket", "packet", "packet")]


def comm_of(argv):
    """The comm the kernel gives the process that argv becomes (env execs its command)."""
    if argv[0] == "env":
        argv = argv[3:]
    return os.path.basename(argv[0])[:15]


def target(net, kind, allowed):
    """(argv suffix, listener, expected record fields) of a client aimed at a destination."""
    if kind in ("tcp4", "udp4", "mapped", "mapped_udp"):
        udp = kind in ("udp4", "mapped_udp")
        l = (net.a4u if udp else net.a4) if allowed else (net.b4u if udp else net.b4)
        addr = "::ffff:127.0.0.1" if kind.startswith("mapped") else "127.0.0.1"
        # a v4-mapped destination is IPv4 on the wire and gets the IPv4 rules: it is logged
        # as the IPv4 destination it really is
        want = {"family": "inet", "protocol": "udp" if udp else "tcp", "daddr": "127.0.0.1",
                "dport": l.port}
    else:
        l = net.a6 if allowed else net.b6
        addr = "::1"
        want = {"family": "inet6", "protocol": "tcp", "daddr": "::1", "dport": l.port}
    return [addr, str(l.port)], l, want


def refused(name, res):
    """Whether a client's run says it got EPERM."""
    if name == "busybox_static":
        return res["rc"] != 0 and os.strerror(errno.EPERM) in res["out"]
    return res["rc"] == errno.EPERM and "errno=%d" % errno.EPERM in res["out"]


# ---- running clients in a session -----------------------------------------------------------

def run_in_session(d, plan, on_result, user=None, status=0):
    """Runs plan ([name, argv] list) inside one session through `deputy run`, one client at
    a time; on_result(name, result) is called after each, before the next starts. Returns
    (session id, {name: result}) after the session closed."""
    script = os.path.join(d.dir, "driver.py")
    with open(script, "w") as f:
        f.write(DRIVER)
    os.chmod(script, 0o644)
    p = subprocess.Popen([dt.DEPUTY, "run", "--grant", d.grant_file(d.idp.grant()), "--agent",
                          "mailbot", "--", dt.PYTHON, script, json.dumps(plan)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=d.env(),
                         preexec_fn=dt.demote(user) if user else None)
    results, sid = {}, None
    try:
        first = p.stdout.readline()
        if not first.startswith("{"):
            raise AssertionError("session did not start: %r %r" % (first, p.stderr.read()))
        sid = json.loads(first)["session"]
        for _ in plan:
            line = p.stdout.readline()
            if not line.startswith("{"):
                raise AssertionError("driver: %r %r" % (line, p.stderr.read()))
            res = json.loads(line)
            results[res["name"]] = res
            on_result(res["name"], res)
            p.stdin.write("next\n")
            p.stdin.flush()
        p.stdin.close()
        rc = p.wait(timeout=60)
        if status is not None:
            eq(rc, status, "deputy run: " + p.stderr.read())
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return sid, d.wait_closed(sid, kernel=True), results


# The exact types of a connect record's fields (design.md, "Audit log").
CONNECT_TYPES = {"pid": int, "comm": str, "family": str, "protocol": str, "daddr": str,
                 "dport": int, "verdict": str, "enforced": bool, "mediated": bool}


def check_connect(rec, what, **want):
    for k, t in CONNECT_TYPES.items():
        check(k in rec, "%s: connect record without %s: %r" % (what, k, rec))
        check(type(rec[k]) is t, "%s: %s is %s, not %s: %r" % (what, k, type(rec[k]).__name__,
                                                               t.__name__, rec))
    for k, v in want.items():
        eq(rec[k], v, "%s: %s" % (what, k))


def inet_connects(recs, pid=None):
    return [r for r in recs if r["type"] == "connect" and r.get("family") in ("inet", "inet6")
            and (pid is None or r["pid"] == pid)]


def kernel_denies(recs, pid):
    return [r for r in recs if r["type"] == "deny" and r.get("layer") == "kernel" and
            r.get("pid") == pid]


class Matrix:
    """Every client against the blocked then the allowed destination, in one session, with
    what the listeners saw after each run."""

    def __init__(self, user=None, enforce=True, sockets=True):
        need_bpf()
        self.net = Net()
        try:
            self.d = dt.Deputyd(routes=self.net.routes(), enforce=enforce).start()
            plan, self.expect = [], {}
            for name, argv, kind in CLIENTS:
                for allowed in (False, True):
                    suffix, l, want = target(self.net, kind, allowed)
                    key = name + (":allowed" if allowed else ":blocked")
                    plan.append([key, argv + suffix])
                    self.expect[key] = (l, want, comm_of(argv))
            if sockets:
                plan += [[name, [NET_SOCK, kind]] for name, kind, _ in SOCKETS]
            self.seen = {}

            def on_result(key, res):
                if key not in self.expect:
                    return
                l = self.expect[key][0]
                before = sum(self.seen.get(k, 0) for k in self.seen if
                             self.expect[k][0] is l)
                # an allowed client's connection is queued when its connect returned; a
                # blocked one's never is: wait only for what must come
                want = before + (1 if res["rc"] == 0 else 0)
                self.seen[key] = l.wait_for(want, timeout=10 if res["rc"] == 0 else 0) - before

            self.sid, self.recs, self.res = run_in_session(self.d, plan, on_result, user=user)
            self.verify = self.d.cli("audit", "verify", self.d.log_path(self.sid))
            time.sleep(0.2)  # late arrivals at a blocked listener would show up in the totals
            self.blocked_totals = {"tcp 127.0.0.1": self.net.b4.count,
                                   "udp 127.0.0.1": self.net.b4u.count,
                                   "tcp ::1": self.net.b6.count}
        finally:
            self.net.close()

    def close(self):
        self.d.cleanup()


_matrix = {}


def matrix(key, **kw):
    """One run of the matrix per mode, shared by the cases that check its parts."""
    if key not in _matrix:
        try:
            m = Matrix(**kw)
            m.close()
            _matrix[key] = m
        except dt.Skip as e:
            _matrix[key] = e
        except Exception as e:  # noqa: BLE001 - every case of this mode reports it
            _matrix[key] = AssertionError("the %s run failed: %s" % (key, e))
            raise
    if isinstance(_matrix[key], Exception):
        raise _matrix[key]
    return _matrix[key]


def check_client(m, name, enforce=True):
    """A client of the matrix: blocked (or, unenforced, logged) and allowed as it must be."""
    for outcome in ("blocked", "allowed"):
        key = "%s:%s" % (name, outcome)
        res = m.res[key]
        l, want, comm = m.expect[key]
        allowed = outcome == "allowed"
        if allowed or not enforce:
            eq(res["rc"], 0, "%s must connect: %s" % (key, res["out"]))
            eq(m.seen[key], 1, "%s: connections the listener saw" % key)
        else:
            check(refused(name, res), "%s must get EPERM: rc %d: %s" % (key, res["rc"],
                                                                          res["out"]))
            eq(m.seen[key], 0, "%s: the listener saw a connection" % key)
        recs = inet_connects(m.recs, res["pid"])
        eq(len(recs), 1, "%s: connect records of pid %d: %r" % (key, res["pid"], recs))
        mediated = {} if shim_exports(VIA_LIBC.get(name)) else {"mediated": False}
        check_connect(recs[0], key, pid=res["pid"], comm=comm,
                      verdict="allow" if allowed else "block", enforced=enforce,
                      **mediated, **want)
        denies = kernel_denies(m.recs, res["pid"])
        if allowed or not enforce:
            eq(denies, [], key + ": deny records")
        else:
            eq(len(denies), 1, key + ": one deny record of layer kernel")
            eq((denies[0]["daddr"], denies[0]["dport"], denies[0]["enforced"]),
               (want["daddr"], want["dport"], True), key + ": deny record")
    if not enforce:
        return
    eq(sum(m.blocked_totals.values()), 0, "a blocked listener saw something: %r"
       % m.blocked_totals)


def check_socket(m, name, enforce=True):
    kind, family = [(k, f) for n, k, f in SOCKETS if n == name][0]
    res = m.res[name]
    if not enforce:
        eq(res["rc"], 0, "%s: not enforced, the socket must open: %s" % (name, res["out"]))
    elif kind == "packet":
        # a tracepoint cannot fail socket(): the process is killed before the socket exists
        eq(res["rc"], -9, "%s must be killed: %s" % (name, res["out"]))
    else:
        check(refused(name, res), "%s must get EPERM: rc %d: %s" % (name, res["rc"],
                                                                      res["out"]))
    denies = kernel_denies(m.recs, res["pid"])
    eq(len(denies), 1, "%s: deny records %r" % (name, denies))
    dn = denies[0]
    eq((dn["family"], dn["comm"], dn["enforced"]), (family, "net_sock", enforce), name)
    check(type(dn["pid"]) is int and type(dn["enforced"]) is bool, "types: %r" % dn)
    eq(inet_connects(m.recs, res["pid"]), [], name + ": no connect record")


_shim_symbols = None


def shim_exports(symbol):
    """Whether the built shim defines (hooks) a libc function."""
    global _shim_symbols
    if symbol is None:
        return False
    if _shim_symbols is None:
        try:
            r = subprocess.run(["nm", "-D", "--defined-only", dt.SHIM], capture_output=True,
                               text=True, timeout=30)
            out = r.stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        _shim_symbols = {l.split()[-1].split("@")[0] for l in out.splitlines() if l.split()}
    return symbol in _shim_symbols


def tally(recs):
    """The counts a session's records add up to (what the seal's counts must say)."""
    conns = inet_connects(recs)
    kinds = [r["type"] for r in recs]
    rep = [r["counts"] for r in recs if r["type"] == "repeated"]  # coalesced repeats
    return {"tokens": kinds.count("token"),
            "denies": kinds.count("deny") + sum(c["denies"] for c in rep),
            "passthrough": kinds.count("passthrough") + len(
                [r for r in recs if r["type"] == "deny" and r.get("layer") == "daemon" and
                 r.get("enforced") is False]),
            "responses": kinds.count("response"),
            "connects": len(conns) + sum(c["connects"] for c in rep),
            "blocked": len([r for r in conns if r["verdict"] == "block"]) +
            sum(c["blocked"] for c in rep),
            "unmediated": len([r for r in conns if r["mediated"] is False]) +
            sum(c["unmediated"] for c in rep)}


def check_counts(recs):
    eq(recs[-1]["type"], "session_close")
    c = recs[-1]["counts"]
    eq({k: c.get(k) for k in tally(recs)}, tally(recs), "the seal's counts vs the records")


def session_close_counts(m):
    close = m.recs[-1]
    eq(close["type"], "session_close")
    return close["counts"]


# ---- the clients in an enforced session, as root -------------------------------------------------

def _client_case(name):
    def fn():
        check_client(matrix("root"), name)
    fn.__name__ = name
    return case(fn)


for _name, _, _ in CLIENTS:
    _client_case(_name)


@case
def raw_socket():
    check_socket(matrix("root"), "raw_socket")
    check_socket(matrix("root"), "raw6_socket")


@case
def packet_socket():
    check_socket(matrix("root"), "packet_socket")


@case
def session_close_counts_the_kernel_records():
    m = matrix("root")
    c = session_close_counts(m)
    conns = inet_connects(m.recs)
    eq(c["connects"], len(conns), "counts.connects vs connect records")
    eq(c["blocked"], len([r for r in conns if r["verdict"] == "block"]), "counts.blocked")
    eq(c["unmediated"], len([r for r in conns if not r["mediated"]]), "counts.unmediated")
    eq(c["lost_events"], 0, "lost events")
    check_counts(m.recs)
    for k in ("connects", "blocked", "unmediated", "lost_events", "denies"):
        check(type(c[k]) is int, "counts.%s is a number: %r" % (k, c))
    eq(m.verify.returncode, 0, "audit verify: " + m.verify.stderr.decode())


@case
def records_have_the_design_fields_and_types():
    """Every connect record of the session, not only those the other cases look at (e.g.
    the Unix-socket connects of deputy run and the shim), has the design's fields with the
    design's JSON types; the other kernel records have numbers and flags where numbers and
    flags belong."""
    m = matrix("root")
    common = {k: CONNECT_TYPES[k] for k in ("pid", "comm", "family", "verdict", "enforced",
                                             "mediated")}
    n = 0
    for rec in m.recs:
        if rec["type"] == "connect":
            n += 1
            types = CONNECT_TYPES if rec["family"] in ("inet", "inet6") else common
            for k, t in types.items():
                check(type(rec.get(k)) is t, "%s of %r" % (k, rec))
            check(rec["verdict"] in ("allow", "block"), "verdict of %r" % rec)
            check(rec["family"] in ("inet", "inet6", "unix"), "family of %r" % rec)
            if rec["family"] != "unix":
                check(rec["protocol"] in ("tcp", "udp"), "protocol of %r" % rec)
                check(0 < rec["dport"] < 65536, "dport of %r" % rec)
        elif rec["type"] == "disconnect":
            for k, t in (("pid", int), ("daddr", str), ("dport", int), ("duration_us", int),
                         ("established", bool)):
                check(type(rec.get(k)) is t, "%s of %r" % (k, rec))
        elif rec["type"] == "deny" and rec.get("layer") == "kernel":
            for k, t in (("pid", int), ("comm", str), ("reason", str), ("enforced", bool)):
                check(type(rec.get(k)) is t, "%s of %r" % (k, rec))
    check(n >= 2 * len(CLIENTS), "connect records: %d" % n)


# ---- unprivileged agents ---------------------------------------------------------------------------

@case
def clients_of_an_unprivileged_user():
    if not dt.is_root():
        dt.skip("needs root to switch to an unprivileged user", bpf=True)
    uid, gid = dt.unprivileged_user()
    m = matrix("unprivileged", user=(uid, gid), sockets=False)
    eq(m.recs[0]["uid"], uid, "session_open uid")
    errors = []
    for name, _, _ in CLIENTS:
        try:
            check_client(m, name)
        except AssertionError as e:
            errors.append(str(e))
    check(not errors, "; ".join(errors))


# ---- "enforce": false ----------------------------------------------------------------------------

@case
def enforce_false_logs_blocks_but_allows():
    m = matrix("unenforced", enforce=False)
    errors = []
    for name, _, _ in CLIENTS:
        try:
            check_client(m, name, enforce=False)
        except AssertionError as e:
            errors.append(str(e))
    for name, _, _ in SOCKETS:
        try:
            check_socket(m, name, enforce=False)
        except AssertionError as e:
            errors.append(str(e))
    check(not errors, "; ".join(errors))
    c = session_close_counts(m)
    eq(c["lost_events"], 0)


# ---- outside any session -------------------------------------------------------------------------

@case
def processes_outside_sessions_are_never_affected():
    need_bpf()
    net = Net()
    p = None
    try:
        d = dt.Deputyd(routes=net.routes()).start()
        p, sid = d.start_session()
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        users = [None] + ([dt.unprivileged_user()] if dt.is_root() else [])
        for user in users:
            for name, argv, kind in CLIENTS:
                suffix, l, _ = target(net, kind, allowed=False)
                before = l.count
                r = subprocess.run(argv + suffix, stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=30, env=env,
                                   preexec_fn=dt.demote(user) if user else None)
                what = "%s outside a session%s" % (name, " as uid %d" % user[0] if user else "")
                eq(r.returncode, 0, "%s: %s%s" % (what, r.stdout, r.stderr))
                eq(l.wait_for(before + 1), before + 1, what + ": connections seen")
        if dt.is_root():
            for name, kind, _ in SOCKETS:
                r = subprocess.run([NET_SOCK, kind], capture_output=True, text=True, timeout=30)
                eq(r.returncode, 0, "%s outside a session: %s" % (name, r.stdout))
        check(p.poll() is None, "the session is still open")
        p.kill()
        p.wait()
        recs = d.wait_closed(sid, kernel=True)
        eq(inet_connects(recs), [], "the open session logged connections it did not make")
        eq([r for r in recs if r["type"] == "deny"], [], "deny records")
        eq(recs[-1]["counts"]["connects"], 0)
    finally:
        if p and p.poll() is None:
            p.kill()
            p.wait()
        net.close()


# ---- a burst --------------------------------------------------------------------------------------

@case
def burst_of_connects_loses_no_event():
    need_bpf()
    net = Net()
    try:
        d = dt.Deputyd(routes=net.routes()).start()
        r = d.run(d.idp.grant(), ["sh", "-c", 'echo "session=$DEPUTY_SESSION pid=$$"; exec "$@"',
                                  "sh", NET_CONNECT, "--count", str(BURST), "127.0.0.1",
                                  str(net.a4.port)], timeout=120)
        eq(r.returncode, 0, "burst: %s %s" % (r.stdout, r.stderr))
        check("attempts=%d ok=%d eperm=0 other=0" % (BURST, BURST) in r.stdout, r.stdout)
        head = dict(kv.split("=", 1) for kv in r.stdout.splitlines()[0].split())
        sid, pid = head["session"], int(head["pid"])
        recs = d.wait_closed(sid, kernel=True, timeout=60)
        conns = inet_connects(recs)
        eq(len(conns), BURST, "connect records")
        eq({(x["pid"], x["verdict"], x["daddr"], x["dport"]) for x in conns},
           {(pid, "allow", "127.0.0.1", net.a4.port)}, "what the records say")
        eq(len({x["cookie"] for x in conns}), BURST, "one record per socket")
        c = recs[-1]["counts"]
        eq(c["lost_events"], 0, "lost events")
        eq(c["connects"], BURST, "counts.connects")
        listed = [x for x in d.sessions() if x["session"] == sid]
        eq(len(listed), 1, "deputy sessions --json lists the session")
        eq((listed[0]["counts"]["connects"], listed[0]["counts"]["lost_events"]), (BURST, 0),
           "deputy sessions --json counts")
        eq(net.a4.wait_for(BURST, timeout=30), BURST, "connections the listener saw")
    finally:
        net.close()


@case
def session_close_counts_include_the_last_events():
    """The seal's counts cover every connect record of the session, also those whose events
    were still in the ring buffer when deputyd noticed the session was over: here deputyd
    is stopped while the agent connects and ends, so that on waking it has the timer tick,
    the kernel events and the ended session all at once."""
    need_bpf()
    net = Net()
    p = None
    try:
        d = dt.Deputyd(routes=net.routes()).start()
        p = subprocess.Popen([dt.DEPUTY, "run", "--grant", d.grant_file(d.idp.grant()),
                              "--agent", "mailbot", "--", "sh", "-c",
                              'echo "session=$DEPUTY_SESSION"; read go; "$@"; echo done', "sh",
                              NET_CONNECT, "--count", "50", "127.0.0.1", str(net.a4.port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=d.env())
        line = p.stdout.readline()
        check(line.startswith("session="), "session did not start: %r" % line)
        sid = line.split("=", 1)[1].strip()
        procs = os.path.join(dt.cgroup2_root(), d.cgroup, sid, "cgroup.procs")
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(0.5)  # the daemon's timer expires meanwhile
            p.stdin.write("go\n")
            p.stdin.flush()
            out = ""
            while not out.endswith("done\n"):
                line = p.stdout.readline()
                check(line, "the agent ended early: %r" % out)
                out += line
            check("attempts=50 ok=50" in out, out)
            p.kill()
            p.wait()
            deadline = time.time() + 10
            while open(procs).read().strip() and time.time() < deadline:
                time.sleep(0.01)
            eq(open(procs).read().strip(), "", "processes left in the session")
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        recs = d.wait_closed(sid, kernel=True)
        conns = inet_connects(recs)
        eq(len(conns), 50, "connect records")
        eq(recs[-1]["counts"]["connects"], len(conns), "counts.connects of the seal")
    finally:
        if p and p.poll() is None:
            p.kill()
            p.wait()
        net.close()


# ---- deputyd restarts ----------------------------------------------------------------------------

@case
def a_session_stays_enforced_while_deputyd_is_down_and_after():
    """deputyd killed mid-session: the session's processes stay confined while no daemon
    runs, and the restarted deputyd resumes the session and logs what it missed."""
    need_bpf()
    net = Net()
    try:
        d = dt.Deputyd(routes=net.routes()).start()
        blocked = [NET_CONNECT, "127.0.0.1", str(net.b4.port)]
        plan = [["before", blocked], ["down", blocked], ["after", blocked],
                ["after_allowed", [NET_CONNECT, "127.0.0.1", str(net.a4.port)]]]

        def between(name, res):
            if name == "before":
                d.proc.kill()
                d.proc.wait()
            elif name == "down":
                d.start()

        # deputy run lost its daemon on the way: its own exit status is not the point here
        sid, recs, res = run_in_session(d, plan, between, status=None)
        check("session %s resumed" % sid in d.log_text(), d.log_text()[-1500:])
        for name in ("before", "down", "after"):
            check(refused(name, res[name]), "%s: must get EPERM: %s" % (name, res[name]))
        eq(res["after_allowed"]["rc"], 0, res["after_allowed"]["out"])
        eq(net.b4.count, 0, "the blocked listener saw a connection")
        eq(net.a4.wait_for(1), 1, "the allowed listener")
        for name, verdict in (("before", "block"), ("down", "block"), ("after", "block"),
                              ("after_allowed", "allow")):
            conns = inet_connects(recs, res[name]["pid"])
            eq(len(conns), 1, "%s: connect records %r" % (name, conns))
            check_connect(conns[0], name, verdict=verdict, daddr="127.0.0.1")
        eq(recs[-1]["counts"]["lost_events"], 0)
        check(d.proc.poll() is None, "deputyd died: %s" % d.log_text()[-3000:])
        check_counts(recs)
        v = d.cli("audit", "verify", sid)
        eq(v.returncode, 0, "audit verify: " + v.stderr.decode())
    finally:
        net.close()


# ---- mediated ------------------------------------------------------------------------------------

# Inside a session: does what the shim does for a connection it mediates — claims the
# socket (DP_SO_CLAIM) before connecting — for some sockets and not others.
# argv: allowed port, blocked port. Prints {name: {"cookie", "err"}}.
MEDIATED_AGENT = r"""
import json, os, socket, struct, sys
SOL_DEPUTY, SO_CLAIM = 0x64707479, 1
allowed, blocked = int(sys.argv[1]), int(sys.argv[2])
out = {}
for name, port, claim in (("claimed", allowed, True), ("unclaimed", allowed, False),
                          ("claimed_blocked", blocked, True)):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cookie = struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, 57, 8))[0]  # SO_COOKIE
    if claim:
        s.setsockopt(SOL_DEPUTY, SO_CLAIM, None, 0)
    try:
        s.connect(("127.0.0.1", port))
        err = 0
    except OSError as e:
        err = e.errno
    s.close()
    out[name] = {"cookie": cookie, "err": err}
print(json.dumps({"session": os.environ["DEPUTY_SESSION"], "pid": os.getpid(), "out": out}))
"""


@case
def claimed_connections_are_mediated():
    need_bpf()
    net = Net()
    try:
        d = dt.Deputyd(routes=net.routes()).start()
        script = os.path.join(d.dir, "mediated.py")
        with open(script, "w") as f:
            f.write(MEDIATED_AGENT)
        # without the shim, which would claim sockets itself
        r = d.run(d.idp.grant(), ["env", "-u", "LD_PRELOAD", dt.PYTHON, script,
                                  str(net.a4.port), str(net.b4.port)])
        eq(r.returncode, 0, "agent: %s %s" % (r.stdout, r.stderr))
        res = json.loads(r.stdout.splitlines()[-1])
        out = res["out"]
        eq((out["claimed"]["err"], out["unclaimed"]["err"], out["claimed_blocked"]["err"]),
           (0, 0, errno.EPERM), "connect results")
        recs = d.wait_closed(res["session"], kernel=True)
        by_cookie = {x["cookie"]: x for x in inet_connects(recs, res["pid"])}
        # a blocked connection is mediated by nobody, claimed or not
        for name, verdict, mediated in (("claimed", "allow", True),
                                        ("unclaimed", "allow", False),
                                        ("claimed_blocked", "block", False)):
            rec = by_cookie.get(out[name]["cookie"])
            check(rec, "%s: no connect record with its cookie: %r" % (name, by_cookie))
            check_connect(rec, name, pid=res["pid"], comm=os.path.basename(dt.PYTHON)[:15],
                          family="inet", protocol="tcp", daddr="127.0.0.1",
                          verdict=verdict, enforced=True, mediated=mediated)
        eq(by_cookie[out["claimed"]["cookie"]].get("mediator"), "shim", "mediator")
        eq(by_cookie[out["unclaimed"]["cookie"]].get("reason"), "tls opaque", "reason")
        check("mediator" not in by_cookie[out["unclaimed"]["cookie"]], "no mediator")
        eq(recs[-1]["counts"]["unmediated"], 2, "counts.unmediated")
    finally:
        net.close()


@case
def shim_connections_are_mediated():
    need_bpf()
    if not shim_exports("connect"):
        dt.skip("%s does not hook connect() yet" % os.path.basename(dt.SHIM))
    net = Net()
    try:
        d = dt.Deputyd(routes=net.routes()).start()
        # a dynamically linked client with the system's libssl loaded: libc's connect() goes
        # through the shim, which claims it; the same client without LD_PRELOAD does not
        plan = [["shim", [dt.PYTHON, "-c", "import ssl\n" + CONNECT_PY, "127.0.0.1",
                          str(net.a4.port)]],
                ["no_shim", ["env", "-u", "LD_PRELOAD", dt.PYTHON, "-c", CONNECT_PY,
                             "127.0.0.1", str(net.a4.port)]]]
        sid, recs, res = run_in_session(d, plan, lambda name, res: None)
        for name, mediated in (("shim", True), ("no_shim", False)):
            eq(res[name]["rc"], 0, "%s: %s" % (name, res[name]["out"]))
            conns = inet_connects(recs, res[name]["pid"])
            eq(len(conns), 1, "%s: connect records %r" % (name, conns))
            check_connect(conns[0], name, pid=res[name]["pid"], verdict="allow",
                          enforced=True, mediated=mediated, daddr="127.0.0.1",
                          dport=net.a4.port)
            eq(conns[0].get("mediator"), "shim" if mediated else None, name + ": mediator")
    finally:
        net.close()


if __name__ == "__main__":
    dt.main()
