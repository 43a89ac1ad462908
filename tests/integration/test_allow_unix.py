# SPDX-License-Identifier: MIT
"""Unix sockets from inside a session (issue 11, item 7): an agent may reach only the Unix
sockets in "allow_unix" (default: nscd's) and deputyd's own. Local daemons listening on
other paths, abstract names and datagram sockets are refused with EPERM and logged. Each
attack runs as `nobody` under `deputy run` against the real deputyd and kernel layer."""
import json
import os
import socket
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

# Run inside the session: tries each address (argv[2] times), prints {name: "ok" | errno
# name}.
AGENT = r'''
import errno, json, socket, sys
out = {}
for name, kind, addr in json.loads(sys.argv[1]) * int(sys.argv[2]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM if kind == "dgram" else socket.SOCK_STREAM)
    a = addr.encode()
    if a.startswith(b"@"):
        a = b"\0" + a[1:]
    try:
        if kind == "dgram":
            s.sendto(b"hello", a)
        else:
            s.connect(a)
            s.sendall(b"hello")
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
    s.close()
print(json.dumps(out))
'''


class Listeners:
    """Local daemons a hostile agent would like to reach: a stream socket on a path, an
    abstract one and a datagram socket, all open to every user."""

    def __init__(self, d):
        self.dir = os.path.join(d.dir, "local")
        os.makedirs(self.dir, mode=0o755)
        tag = uuid.uuid4().hex[:12]
        self.socks = []
        self.paths = {
            "daemon": os.path.join(self.dir, "daemon.sock"),
            "allowed": os.path.join(self.dir, "allowed.sock"),
            "abstract": "@deputy-test-" + tag,
            "dgram": os.path.join(self.dir, "dgram.sock"),
        }
        for name, addr in self.paths.items():
            kind = socket.SOCK_DGRAM if name == "dgram" else socket.SOCK_STREAM
            s = socket.socket(socket.AF_UNIX, kind)
            s.bind(b"\0" + addr[1:].encode() if addr.startswith("@") else addr)
            if not addr.startswith("@"):
                os.chmod(addr, 0o777)
            if kind == socket.SOCK_STREAM:
                s.listen(8)
            self.socks.append(s)

    def close(self):
        for s in self.socks:
            s.close()


def play(d, targets, times=1):
    user = dt.unprivileged_user()
    r = d.run(d.idp.grant(), [dt.PYTHON, "-c", AGENT, json.dumps(targets), str(times)],
              user=user)
    eq(r.returncode, 0, "agent: " + r.stderr)
    sid = [s["session"] for s in d.sessions()][-1]
    return json.loads(r.stdout.strip().splitlines()[-1]), d.wait_closed(sid, kernel=True)


def unix_records(recs, type_):
    return [r for r in recs if r["type"] == type_ and (r.get("family") == "unix" or
                                                       "path" in r)]


@case
def unix_sockets_outside_allow_unix_are_refused():
    if not dt.bpf_available():
        dt.skip("needs root and the kernel layer", bpf=True)
    d = dt.Deputyd()
    ls = Listeners(d)
    d.config["allow_unix"] = [ls.paths["allowed"]]
    d.write_config()
    d.start()
    try:
        targets = [[n, "dgram" if n == "dgram" else "stream", a] for n, a in ls.paths.items()]
        got, recs = play(d, targets)
    finally:
        ls.close()
    eq(got["allowed"], "ok", "connect to a path in allow_unix")
    for name in ("daemon", "abstract", "dgram"):
        eq(got[name], "EPERM", "%s (%s) from inside the session" % (name, ls.paths[name]))
    conns = {r["path"]: r for r in unix_records(recs, "connect")}
    denies = {r["path"]: r for r in unix_records(recs, "deny")}
    for name in ("daemon", "abstract", "dgram"):
        p = ls.paths[name]
        check(p in conns, "no connect record for %s: %r" % (p, list(conns)))
        eq((conns[p]["verdict"], conns[p]["enforced"]), ("block", True), "record of " + p)
        check(p in denies and denies[p]["layer"] == "kernel", "no kernel deny for " + p)
    eq(conns[ls.paths["allowed"]]["verdict"], "allow", "record of the allowed path")
    counts = recs[-1]["counts"]
    check(counts["blocked"] >= 3 and counts["denies"] >= 3, "counts: %r" % counts)
    # The auditor's page lists the refused ones as events, folds only the allowed ones.
    sid = recs[0]["session"]
    r = d.cli("report", sid, "--html")
    eq(r.returncode, 0, r.stderr.decode())
    page = r.stdout.decode()
    check("unix " + ls.paths["daemon"] in page, "refused Unix connect not in the timeline")
    check("allowed Unix-socket connects" in page, "the allowed ones are not folded")


@case
def unix_sockets_logged_not_blocked_without_enforce():
    if not dt.bpf_available():
        dt.skip("needs root and the kernel layer", bpf=True)
    d = dt.Deputyd(enforce=False)
    ls = Listeners(d)
    d.start()
    try:
        got, recs = play(d, [["daemon", "stream", ls.paths["daemon"]]])
    finally:
        ls.close()
    eq(got["daemon"], "ok", "\"enforce\": false only logs")
    conns = [r for r in unix_records(recs, "connect") if r["path"] == ls.paths["daemon"]]
    check(conns and conns[0]["verdict"] == "block" and conns[0]["enforced"] is False,
          "would-be block not logged: %r" % conns)


@case
def a_loop_of_refused_unix_connects_is_coalesced():
    """Blocked Unix connects in a loop would drown the session's log like blocked IP
    connects: repeats are counted in `repeated` records, and the counts still add up."""
    if not dt.bpf_available():
        dt.skip("needs root and the kernel layer", bpf=True)
    d = dt.Deputyd()
    ls = Listeners(d)
    d.start()
    n = 3000
    try:
        got, recs = play(d, [["daemon", "stream", ls.paths["daemon"]]], n)
    finally:
        ls.close()
    eq(got["daemon"], "EPERM", "the loop's connects")
    p = ls.paths["daemon"]
    conns = [r for r in unix_records(recs, "connect") if r["path"] == p]
    check(0 < len(conns) < 50, "refused Unix connects not coalesced: %d records" % len(conns))
    repeated = [r for r in recs if r["type"] == "repeated"]
    check(repeated, "no repeated records")
    counts = recs[-1]["counts"]
    lost = counts["lost_events"]
    eq(len(conns) + sum(r["counts"]["connects"] for r in repeated) + lost, n,
       "records, repeats and lost events add up to the attempts")
    eq(counts["blocked"] + lost, n, "counts.blocked of the seal")


SESSIONS_AGENT = r'''
import os, sys
sys.path.insert(0, %r)
import deputytest as dt
print(os.environ["DEPUTY_SOCKET"])
print(dt.Conn(os.environ["DEPUTY_SOCKET"]).call("SESSIONS", [])["type"])
''' % dt.LIB


@case
def deputyds_socket_by_another_spelling_still_reaches_it():
    """deputy run given deputyd's socket through a symlinked directory: the agent inside
    the session must still reach deputyd (the kernel compares paths as spelled)."""
    if not dt.bpf_available():
        dt.skip("needs root and the kernel layer", bpf=True)
    for configured_via_link in (False, True):
        d = dt.Deputyd()
        link = os.path.join(d.dir, "sock-link")
        os.makedirs(os.path.dirname(d.socket), exist_ok=True)
        os.symlink(os.path.dirname(d.socket), link)
        other = os.path.join(link, os.path.basename(d.socket))
        if configured_via_link:  # deputyd's own config spells it through the link
            d.config["socket"], other = other, d.socket
            d.write_config()
        d.start()
        r = d.run(d.idp.grant(), [dt.PYTHON, "-c", SESSIONS_AGENT],
                  user=dt.unprivileged_user(), env=d.env(DEPUTY_SOCKET=other))
        what = "config %s, deputy run %s" % (d.config["socket"], other)
        eq(r.returncode, 0, "%s: agent: %s" % (what, r.stderr))
        eq(r.stdout.split()[-1], "DATA_REPLY", "%s: the agent's request: %r" % (what, r.stdout))
        d.stop()


@case
def allow_unix_values_are_checked():
    for bad, why in ((["relative.sock"], "allow_unix[0]"), ("/x", "allow_unix"),
                     (["/" + "a" * 200], "allow_unix[0]"), (["@"], "allow_unix[0]")):
        d = dt.Deputyd(allow_unix=bad)
        r = dt.run([dt.DEPUTYD, "-t", "-c", d.config_path])
        check(r.returncode != 0, "deputyd -t accepted allow_unix %r" % (bad,))
        check(why in r.stderr, "%r: error does not name %s: %r" % (bad, why, r.stderr))


if __name__ == "__main__":
    dt.main()
