# SPDX-License-Identifier: MIT
"""deputyd against hostile agents and clients: a session escaping its cgroup through a
nested session, clients that never read, floods of connections, logs grown to make every
read expensive, and strings that jansson cannot encode. Each case speaks the real protocol to
a real deputyd; some run the attacker inside a session, some as an unprivileged user."""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

def in_session(d, code, token=None, user=None, agent="mailbot"):
    """Run Python code inside a session; it has dt, c (a Conn) and sid. Returns
    (CompletedProcess, session id)."""
    script = os.path.join(d.dir, "hostile-%d.py" % time.monotonic_ns())
    with open(script, "w") as f:
        f.write("import json, os, socket, struct, sys, time\n"
                "sys.path.insert(0, %r)\n"
                "import deputytest as dt\n"
                "sid = os.environ['DEPUTY_SESSION']\n"
                "print('session=' + sid, flush=True)\n"
                "c = dt.Conn(os.environ['DEPUTY_SOCKET'])\n" % dt.LIB + code)
    os.chmod(script, 0o644)
    r = d.run(token or d.idp.grant(), [dt.PYTHON, script], user=user, agent=agent)
    sid = None
    for line in r.stdout.splitlines():
        if line.startswith("session="):
            sid = line.split("=", 1)[1]
    check(sid, "no session: %r %r" % (r.stdout, r.stderr))
    return r, sid


def proc_io(pid, key="rchar"):
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            k, v = line.split(":")
            if k == key:
                return int(v)
    raise AssertionError("no %s in /proc/%d/io" % (key, pid))


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def big_log(d, megabytes=12):
    """A closed session whose own agent grew its log with deny reports (each different, so
    none is coalesced; deputyd keeps 512 bytes of each field); returns its id."""
    n = megabytes * 1024 * 1024 // (3 * 500) + 1
    r, sid = in_session(d, """
for i in range(%d):
    f = [("SESSION", sid)] + [(k, "%%d " %% i + "x" * 500) for k in ("REASON", "HOST", "TARGET")]
    c.send_raw(dt.frame("DENY_REPORT", f, flags=dt.NOREPLY))
print("rc=", c.call("JWKS", [])["type"], flush=True)
""" % n)
    eq(r.returncode, 0, r.stderr)
    d.wait_closed(sid)
    check(os.path.getsize(d.log_path(sid)) >= megabytes * 1024 * 1024, "log grew")
    return sid


@case
def a_session_cannot_open_another_and_leave_its_cgroup():
    d = dt.Deputyd().start()
    grant = d.grant_file(d.idp.grant(user="alice"))
    r, sid = in_session(d, """
r = __import__("subprocess").run([%r, "run", "--grant", %r, "--agent", "mailbot", "--",
                                  "cat", "/proc/self/cgroup"], capture_output=True, text=True,
                                 env=dict(os.environ, ASAN_OPTIONS="verify_asan_link_order=0"))
print("nested rc=%%d out=%%r err=%%r" %% (r.returncode, r.stdout, r.stderr), flush=True)
print("cgroup=" + [l for l in open("/proc/self/cgroup").read().splitlines()
                   if l.startswith("0::")][0], flush=True)
""" % (dt.DEPUTY, grant))
    eq(r.returncode, 0, r.stderr)
    out = r.stdout
    check("nested rc=0" not in out, "a nested deputy run opened a session: " + out)
    check("cannot open another session" in out or "deputy: session" in out, out)
    cg = [l for l in out.splitlines() if l.startswith("cgroup=")][0]
    check(cg.endswith("/" + sid), "the agent left its session's cgroup: " + cg)
    opened = [s for s in d.sessions() if s["session"] != sid]
    eq(opened, [], "only the outer session exists")


@case
def reading_a_big_log_costs_a_chunk_not_the_file():
    d = dt.Deputyd().start()
    sid = big_log(d)
    size = os.path.getsize(d.log_path(sid))
    c = dt.Conn(d.socket)
    before = proc_io(d.proc.pid)
    rep = c.call("LOG_READ", [("SESSION", sid), ("OFFSET", 0)])
    eq(rep["type"], "LOG_DATA", "reply %r" % rep.get("REASON"))
    rep = c.call("SESSIONS", [])
    eq(rep["type"], "DATA_REPLY")
    read = proc_io(d.proc.pid) - before
    check(read < size // 4, "one chunk and one listing read %d bytes of a %d-byte log"
          % (read, size))
    check(sid in rep["DATA"], "the big session is listed")
    r = d.cli("logs", sid, "--json")
    eq(r.returncode, 0, r.stderr.decode())
    eq(len(r.stdout), size, "deputy logs prints the whole log")


@case
def strings_jansson_cannot_encode_are_logged_escaped():
    d = dt.Deputyd().start()
    frames = [
        ("DECIDE", [("SESSION", None), ("SCHEME", "https"), ("HOST", "api.test"),
                    ("PORT", 443), ("METHOD", "POST"), ("TARGET", b"/send/\xff\xfe")]),
        ("DENY_REPORT", [("SESSION", None), ("REASON", b"bad \xc3"), ("HOST", b"h\xff")]),
        ("RESPONSE", [("SESSION", None), ("JTI", b"\xff"), ("STATUS", 200)]),
    ]
    code = "frames = %r\n" % frames + """
for msg, fields in frames:
    fields = [(k, sid if v is None else v) for k, v in fields]
    if msg == "DECIDE":
        fields += dt.route_conn_fields()
    payload = b""
    for k, v in fields:
        if k in dt.U64:
            v = struct.pack("<Q", v)
        elif isinstance(v, str):
            v = v.encode()
        payload += struct.pack("<HH", dt.TAG[k], len(v)) + v
    c.send_raw(struct.pack("<IBBHI", len(payload), 1, 0, dt.MSG[msg], 1) + payload)
    print(json.dumps(c.recv_reply()), flush=True)
"""
    r, sid = in_session(d, code)
    eq(r.returncode, 0, r.stderr)
    replies = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    eq(len(replies), 3, "replies: %r" % replies)
    eq(dt.VERDICT[replies[0]["VERDICT"]], "delegate", "a raw byte in a path is encoded")
    eq(dt.decode_jwt(replies[0]["TOKEN"])["htu"], "https://api.test/send/%FF%FE")
    eq([x["type"] for x in replies[1:]], ["OK", "OK"])
    recs = d.wait_closed(sid)
    types = [x["type"] for x in recs]
    eq(types, ["session_open", "token", "deny", "response", "session_close"],
       "every request left a record")
    eq(recs[2]["layer"], "shim")
    eq(recs[2]["reason"], "bad \\xc3")
    eq(recs[2]["host"], "h\\xff")
    eq(recs[3]["jti"], "\\xff")
    eq(d.cli("audit", "verify", sid).returncode, 0)


@case
def a_process_name_that_is_not_utf8_does_not_hide_connections():
    if not dt.bpf_available():
        dt.skip("needs the kernel layer", bpf=True)
    d = dt.Deputyd().start()
    r, sid = in_session(d, """
import ctypes
ctypes.CDLL(None).prctl(15, b"\\xff\\xfeevil", 0, 0, 0)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect(("127.0.0.1", 9))
    print("connected", flush=True)
except OSError as e:
    print("refused", e.errno, flush=True)
print(json.dumps(c.decide(sid, host="nowhere.test")), flush=True)
""")
    eq(r.returncode, 0, r.stderr)
    recs = d.wait_closed(sid, kernel=True)
    conn = [x for x in recs if x["type"] == "connect" and x.get("dport") == 9]
    eq(len(conn), 1, "the blocked connect is logged: %r" % [x["type"] for x in recs])
    eq(conn[0]["comm"], "\\xff\\xfeevil")
    eq(conn[0]["verdict"], "block")
    kdeny = [x for x in recs if x["type"] == "deny" and x["layer"] == "kernel"]
    eq(len(kdeny), 1, "and its kernel deny")
    ddeny = [x for x in recs if x["type"] == "deny" and x["layer"] == "daemon"]
    eq([x["comm"] for x in ddeny], ["\\xff\\xfeevil"], "the decision names the process")


@case
def many_closed_sessions_list_the_open_and_the_newest():
    d = dt.Deputyd().start()
    p = subprocess.Popen([dt.DEPUTY, "run", "--grant", d.grant_file(d.idp.grant()), "--agent",
                          "mailbot", "--", "sh", "-c", 'echo "s=$DEPUTY_SESSION"; exec sleep 60'],
                         stdout=subprocess.PIPE, text=True, env=d.env())
    try:
        sid = p.stdout.readline().strip().split("=", 1)[1]
        # a host that has run many sessions: their logs stay in the state directory
        logs = os.path.join(d.state, "sessions")
        n = 3000
        for i in range(n):
            fake = "%06dfakesess%08d" % (i * 7 % n, i)
            ts = "2020-01-01T%02d:%02d:%02d.000000Z" % (i // 3600, i // 60 % 60, i % 60)
            rec = {"seq": 0, "ts": ts, "session": fake, "type": "session_open",
                   "prev": "0" * 64, "user": "u%d" % i, "agent": "agent:x", "uid": 0}
            with open(os.path.join(logs, fake + ".jsonl"), "w") as f:
                f.write(json.dumps(rec) + "\n")
        listed = d.sessions()
        ids = [x["session"] for x in listed]
        check(sid in ids, "the open session is listed among %d" % len(ids))
        check(len(ids) > 50, "a useful part of the list: %d" % len(ids))
        newest = "%06dfakesess%08d" % ((n - 1) * 7 % n, n - 1)
        check(newest in ids, "the newest closed session is listed")
        oldest = "%06dfakesess%08d" % (0, 0)
        check(oldest not in ids, "the oldest is what is left out")
    finally:
        p.kill()
        p.wait()


@case
def clients_that_never_read_cost_bounded_memory():
    d = dt.Deputyd().start()
    sid = big_log(d, megabytes=1)
    req = dt.frame("LOG_READ", [("SESSION", sid), ("OFFSET", 0)])
    nconn, nreq = 24, 200  # 200 replies of ~32 KiB each: 6 MiB per client if buffered
    conns = [dt.Conn(d.socket, timeout=30) for _ in range(nconn)]
    rss0 = vm_rss_kb(d.proc.pid)
    for c in conns:
        c.s.setblocking(False)
        sent = 0
        data = req * nreq
        deadline = time.time() + 20
        while sent < len(data) and time.time() < deadline:
            try:
                sent += c.s.send(data[sent:])
            except BlockingIOError:
                break  # deputyd stopped reading this client: fine, the rest waits
        c.pending = data[sent:]
        c.s.setblocking(True)
        c.s.settimeout(30)
    time.sleep(0.5)
    grown = vm_rss_kb(d.proc.pid) - rss0
    check(grown < 48 * 1024, "deputyd grew by %d KiB for %d silent clients" % (grown, nconn))
    check(d.proc.poll() is None, "deputyd alive")
    # every client still gets every reply, in order, once it reads
    for c in conns:
        got = 0
        while got < nreq:
            if c.pending:
                c.s.sendall(c.pending)
                c.pending = b""
            rep = c.recv_reply()
            check(rep is not None, "client cut off after %d replies" % got)
            eq(rep["type"], "LOG_DATA")
            got += 1
        c.close()


@case
def socket_cookies_an_agent_names_cost_no_memory():
    # deputyd counts requests per connection the kernel reported; cookies an agent makes up
    # in DECIDE must not create entries. Under SAN=1, ASan's quarantine of freed frames
    # would count as growth.
    saved = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (saved + ":" if saved else "") + "quarantine_size_mb=1"
    try:
        d = dt.Deputyd().start()
    finally:
        if saved is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = saved
    n, batch = 1 << 15, 256
    r, sid = in_session(d, """
def decides(first):
    out = []
    for i in range(first, first + %d):
        out.append(dt.frame("DECIDE", [("SESSION", sid), ("SCHEME", "https"),
                                       ("HOST", "api.test"), ("PORT", 443), ("METHOD", "GET"),
                                       ("TARGET", "/read"), ("COOKIE", i * 7919)], seq=i))
    return b"".join(out)
c.call("JWKS", [])
rss0 = int([l for l in open("/proc/%%d/status" %% %d) if l.startswith("VmRSS")][0].split()[1])
for first in range(1, %d + 1, %d):
    c.send_raw(decides(first))
    for _ in range(%d):
        c.recv_reply()
eq = c.call("JWKS", [])["type"]
rss1 = int([l for l in open("/proc/%%d/status" %% %d) if l.startswith("VmRSS")][0].split()[1])
print("grown=%%d %%s" %% (rss1 - rss0, eq), flush=True)
""" % (batch, d.proc.pid, n, batch, batch, d.proc.pid))
    eq(r.returncode, 0, r.stderr)
    line = [l for l in r.stdout.splitlines() if l.startswith("grown=")]
    check(line and line[0].endswith("DATA_REPLY"), r.stdout)
    grown = int(line[0].split("=")[1].split()[0])
    check(grown < 8 * 1024, "%d made-up cookies grew deputyd by %d KiB" % (n, grown))


@case
def a_connection_flood_from_one_user_does_not_lock_out_others():
    if not dt.is_root():
        dt.skip("needs root to switch to an unprivileged user")
    d = dt.Deputyd().start()
    uid, gid = dt.unprivileged_user()
    flood = subprocess.Popen([dt.PYTHON, "-c", """
import socket, struct, sys, time
conns = []
for i in range(2000):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sys.argv[1])
    except OSError:
        break
    conns.append(s)
served = 0
for s in conns:
    s.settimeout(5)
    try:
        s.sendall(struct.pack("<IBBHI", 0, 1, 0, 33, 1))
        if len(s.recv(12)) == 12:
            served += 1
    except OSError:
        pass
print(len(conns), served, flush=True)
sys.stdin.read()
""", d.socket], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=dt.demote((uid, gid)))
    try:
        line = flood.stdout.readline().split()
        check(len(line) == 2, "flood did not report")
        opened, served = int(line[0]), int(line[1])
        check(served < opened, "deputyd served all %d connections of one uid" % opened)
        fds = len(os.listdir("/proc/%d/fd" % d.proc.pid))
        check(fds < 3 * 1100, "deputyd holds %d fds for one user's flood" % fds)
        # others are still served while the flood holds its connections
        rep = dt.Conn(d.socket, timeout=5).call("JWKS", [])
        eq(rep["type"], "DATA_REPLY")
        r, sid = in_session(d, "print(json.dumps(c.call('JWKS', [])), flush=True)\n")
        eq(r.returncode, 0, r.stderr)
    finally:
        flood.stdin.close()
        flood.wait(timeout=30)


@case
def out_of_fds_deputyd_waits_instead_of_spinning():
    d = dt.Deputyd().start()
    pid = d.proc.pid
    base = len(os.listdir("/proc/%d/fd" % pid))
    limit = base + 24
    subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%d:%d" % (limit, limit)], check=True)
    conns = []
    try:
        for _ in range(40):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.socket)  # the backlog takes what accept cannot
            conns.append(s)

        def cpu():
            with open("/proc/%d/stat" % pid) as f:
                st = f.read().rsplit(")", 1)[1].split()
            return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")

        c0, t0 = cpu(), time.time()
        time.sleep(1.0)
        used, wall = cpu() - c0, time.time() - t0
        check(used < wall / 2, "deputyd burnt %.2fs of CPU in %.2fs with no fds left"
              % (used, wall))
        for s in conns:
            s.close()
        conns = []
        rep = dt.Conn(d.socket, timeout=10).call("JWKS", [])
        eq(rep["type"], "DATA_REPLY", "served again once fds are free")
    finally:
        for s in conns:
            s.close()


if __name__ == "__main__":
    dt.main()
