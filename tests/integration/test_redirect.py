# SPDX-License-Identifier: MIT
"""Mediation by the kernel layer and the shim (design: layer 4, the `mediated` mark), through
the real deputyd, `deputy run` and the test HTTPS backend, agents running as `nobody`.

- A connect to a route's destination that the shim did not claim (a client without the shim)
  lands on whatever listens at `proxy_listen` — here a stand-in for the proxy — for IPv4,
  IPv6 and v4-mapped IPv6; the agent's getpeername() still says the original destination;
  the log says `mediated: true, mediator: "proxy"` and the real destination never sees it.
- curl with the shim (the system's libssl) claims its socket: it goes to the API directly,
  carries a token, and the log says `mediator: "shim"`.
- `"proxy": "off"`: unclaimed connects to a route's destination fail with EPERM (`deny`,
  layer kernel, "not mediated"). `"tls": "opaque"`: left alone, logged unmediated, reason
  `tls opaque`.
- A process with the shim that writes TLS records around the SSL hooks (its own TLS stack)
  to a delegate route's destination gets a reset and a `deny` of layer shim; nothing
  reaches the API. Requests with a lower-case or unknown method get deputy's 403.
- `disconnect` records count the mediated requests; a connection that carried bytes but no
  mediated request counts as unmediated in `session_close` and `deputy sessions`.
Needs root and BPF (SKIP otherwise, FAIL under DEPUTY_REQUIRE_BPF=1)."""
import errno
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

AUD = "https://localhost"
SA = dt.SERVICE_ACCOUNT
_tmp = dt.TempDir(prefix="deputy-redirect-test-")
_certs = None


def certs():
    global _certs
    if _certs is None:
        _certs = dt.make_certs(_tmp.path)
        # the agents run as nobody and must read the CA
        for d, _, files in os.walk(_tmp.path):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
    return _certs


def need_bpf():
    if not dt.bpf_available():
        dt.skip("needs root and BPF (BTF, cgroup2) for the kernel layer", bpf=True)


class StandIn:
    """What listens at proxy_listen (127.0.0.1 and ::1, one port): records each connection's
    peer and first bytes, answers one HTTP response, closes."""

    def __init__(self):
        for _ in range(50):
            self.s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.s4.bind(("127.0.0.1", 0))
            self.port = self.s4.getsockname()[1]
            self.s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            self.s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                self.s6.bind(("::1", self.port))
                break
            except OSError:
                self.s4.close()
                self.s6.close()
        self.seen = []
        self.stopping = False
        self.threads = []
        for s in (self.s4, self.s6):
            s.listen(64)
            s.settimeout(0.1)
            t = threading.Thread(target=self._loop, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    def _loop(self, s):
        while not self.stopping:
            try:
                c, peer = s.accept()
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            c.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\n"
                          b"stand-in")
            except OSError:
                pass
            c.close()
            self.seen.append({"peer": peer[:2], "data": data})

    def listen(self):
        return "127.0.0.1:%d" % self.port

    def close(self):
        self.stopping = True
        for t in self.threads:
            t.join(5)
        self.s4.close()
        self.s6.close()


class Stack(dt.Stack):
    """The TLS backend, a stand-in proxy and a deputyd whose routes name the backend's port
    on localhost (which deputyd resolves to 127.0.0.1) and on ::1."""

    prefix = "deputy-redirect-case-"

    def __init__(self, tls="intercept", extra_routes=(), **config):
        self.tls = tls
        super().__init__("email:read files:write", AUD, certs=certs(),
                         extra_routes=extra_routes, config=config)

    def routes(self, p):
        tls = self.tls
        return [
            {"host": "localhost", "port": p, "method": "GET", "path": "/read*",
             "action": "delegate", "audience": AUD, "scope": "email:read", "tls": tls},
            {"host": "localhost", "port": p, "path": "/files*",
             "action": "delegate", "audience": AUD, "scope": "files:write", "tls": tls},
            {"host": "localhost", "port": p, "path": "/admin*", "action": "deny", "tls": tls},
            {"host": "::1", "port": p, "action": "passthrough", "tls": tls},
        ]

    def prepare(self):
        self.proxy = StandIn()
        self.on_close(self.proxy.close)
        self.d.config["proxy_listen"] = self.proxy.listen()

    def url(self, path):
        return super().url(path, host="localhost")

    def curl(self, *args):
        return ["curl", "-sS", "--cacert", certs().ca] + list(args)

    def run(self, cmd, shim=True, timeout=120):
        if not shim:
            cmd = ["env", "-u", "LD_PRELOAD"] + list(cmd)
        return self.d.run(self.grant, cmd, user=dt.unprivileged_user(), timeout=timeout)

    def records(self):
        sid = self.session()
        return sid, self.d.wait_closed(sid, kernel=True)


def tcp_connects(recs, port):
    return [r for r in recs if r["type"] == "connect" and r.get("protocol") == "tcp" and
            r.get("dport") == port]


# An agent without its own TLS: connects to each ADDR of argv[2:] on port argv[1], prints
# getpeername(), sends one plain request, prints the reply's first line.
PLAIN_AGENT = r"""
import json, socket, sys
port = int(sys.argv[1])
for a in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM)
    out = {"addr": a}
    try:
        s.connect((a, port))
        out["peer"] = list(s.getpeername()[:2])
        s.sendall(b"GET /read/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: sa\r\n\r\n")
        out["reply"] = s.makefile("rb").readline().decode().strip()
    except OSError as e:
        out["errno"] = e.errno
    s.close()
    print(json.dumps(out), flush=True)
"""


def plain_agent(s, *addrs):
    r = s.run([dt.PYTHON, "-c", PLAIN_AGENT, str(s.be.port)] + list(addrs), shim=False)
    eq(r.returncode, 0, "agent: %s" % r.stderr[-800:])
    return {o["addr"]: o for o in map(json.loads, r.stdout.splitlines())}


@case
def unclaimed_connects_go_to_the_proxy():
    need_bpf()
    with Stack() as s:
        out = plain_agent(s, "127.0.0.1", "::1", "::ffff:127.0.0.1")
        for a in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            check("errno" not in out[a], "%s: %r" % (a, out[a]))
            eq(out[a]["peer"], [a, s.be.port], a + ": getpeername")
            eq(out[a]["reply"], "HTTP/1.1 200 OK", a + ": the stand-in's reply")
        deadline = time.time() + 10
        while len(s.proxy.seen) < 3 and time.time() < deadline:
            time.sleep(0.02)
        eq(len(s.proxy.seen), 3, "connections at the stand-in proxy")
        eq(sorted(x["peer"][0] for x in s.proxy.seen), ["127.0.0.1", "127.0.0.1", "::1"],
           "the stand-in's peers")
        check(all(x["data"].startswith(b"GET /read/x ") for x in s.proxy.seen),
              "requests at the stand-in: %r" % s.proxy.seen)
        eq(s.be.requests(), [], "requests at the API")
        _, recs = s.records()
        conns = tcp_connects(recs, s.be.port)
        eq(sorted(c["daddr"] for c in conns), ["127.0.0.1", "127.0.0.1", "::1"], "daddr")
        for c in conns:
            eq((c["verdict"], c["mediated"], c.get("mediator")), ("allow", True, "proxy"),
               "connect record %r" % c)


@case
def claimed_by_the_shim_goes_direct():
    need_bpf()
    with Stack() as s:
        r = s.run(s.curl("-H", "Authorization: " + SA, s.url("/read/inbox")))
        eq(r.returncode, 0, "curl: " + r.stderr[-500:])
        reqs = s.be.requests()
        eq(len(reqs), 1, "requests at the API")
        check(reqs[0]["token"]["valid"] is True, "token: %r" % reqs[0]["token"])
        eq(reqs[0]["token"]["claims"]["scope"], "email:read", "scope")
        eq(s.proxy.seen, [], "connections at the stand-in proxy")
        _, recs = s.records()
        conns = tcp_connects(recs, s.be.port)
        eq(len(conns), 1, "connect records %r" % conns)
        eq((conns[0]["mediated"], conns[0].get("mediator")), (True, "shim"), "mediator")


@case
def proxy_off_refuses_unclaimed():
    need_bpf()
    with Stack(proxy="off") as s:
        out = plain_agent(s, "127.0.0.1", "::1")
        for a in ("127.0.0.1", "::1"):
            eq(out[a].get("errno"), errno.EPERM, a + ": %r" % out[a])
        eq(s.proxy.seen, [], "connections at the stand-in proxy")
        _, recs = s.records()
        conns = tcp_connects(recs, s.be.port)
        eq(len(conns), 2, "connect records %r" % conns)
        for c in conns:
            eq((c["verdict"], c["enforced"], c["mediated"], c.get("reason")),
               ("block", True, False, "not mediated"), "connect record %r" % c)
        denies = [x for x in recs if x["type"] == "deny" and x["layer"] == "kernel"]
        eq([x["reason"] for x in denies], ["not mediated"] * 2, "deny records")


@case
def opaque_routes_left_alone():
    need_bpf()
    with Stack(tls="opaque") as s:
        out = plain_agent(s, "127.0.0.1")
        # the backend speaks TLS: the plain request gets no HTTP reply, but it got there
        eq(out["127.0.0.1"].get("peer"), ["127.0.0.1", s.be.port], "connected: %r" % out)
        eq(s.proxy.seen, [], "connections at the stand-in proxy")
        check(s.be.wait_records("tls_error", 1) or s.be.wait_records("conn", 1),
              "the API saw no connection: %s" % s.be.stderr()[-500:])
        _, recs = s.records()
        conns = tcp_connects(recs, s.be.port)
        eq(len(conns), 1, "connect records %r" % conns)
        eq((conns[0]["mediated"], conns[0].get("reason")), (False, "tls opaque"), "record")
        check("mediator" not in conns[0], "mediator of an opaque connection")


# With the shim and the system's libssl loaded, but TLS records written around the SSL
# hooks (as a program with its own TLS stack does): a ClientHello-shaped record.
RAW_TLS_AGENT = r"""
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
try:
    s.sendall(b"\x16\x03\x01\x00\x30" + b"\x01\x00\x00\x2c" + bytes(44))
    s.settimeout(5)
    print("read %r" % s.recv(100))
except OSError as e:
    print("errno %d" % e.errno)
"""


@case
def raw_tls_around_the_hooks_reset():
    need_bpf()
    with Stack() as s:
        r = s.run([dt.PYTHON, "-c", RAW_TLS_AGENT, str(s.be.port)])
        eq(r.returncode, 0, "agent: " + r.stderr[-500:])
        eq(r.stdout.strip(), "errno %d" % errno.ECONNRESET, "the agent's result")
        eq(s.proxy.seen, [], "connections at the stand-in proxy")
        eq(s.be.requests(), [], "requests at the API")
        _, recs = s.records()
        denies = [x for x in recs if x["type"] == "deny"]
        eq(len(denies), 1, "deny records %r" % denies)
        eq(denies[0]["layer"], "shim", "layer")
        check("not HTTP" in denies[0]["reason"], "reason %r" % denies[0]["reason"])
        conns = tcp_connects(recs, s.be.port)
        eq((conns[0]["mediated"], conns[0].get("mediator")), (True, "shim"), "connect record")


@case
def odd_methods_refused_by_the_shim():
    need_bpf()
    with Stack() as s:
        for m in ("get", "FOO"):
            r = s.run(s.curl("-X", m, "-H", "Authorization: " + SA, s.url("/files/a"),
                             "-w", "\n%{http_code}"))
            eq(r.returncode, 0, "curl: " + r.stderr[-500:])
            body, status = r.stdout.rsplit("\n", 1)
            eq(status, "403", m + ": status")
            eq(json.loads(body).get("error"), "deputy_denied", m + ": body")
        eq(s.be.requests(), [], "requests at the API")


# With the shim and libssl: bytes that are no HTTP request, on a claimed socket to a
# passthrough route's destination (where the shim lets them pass).
RAW_BYTES_AGENT = r"""
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"\x00not http\r\n")
s.shutdown(socket.SHUT_WR)
s.settimeout(5)
s.recv(10)
s.close()
"""


@case
def disconnects_count_mediated_requests():
    need_bpf()
    other = StandIn()  # here just a passthrough destination that reads what it gets
    try:
        with Stack(extra_routes=[{"host": "127.0.0.1", "port": other.port,
                                  "action": "passthrough"}]) as s:
            script = ("set -e; curl -sS --cacert %s -H 'Authorization: %s' %s %s >/dev/null; "
                      "%s -c '%s' %d" % (certs().ca, SA, s.url("/read/1"), s.url("/read/2"),
                                         dt.PYTHON, RAW_BYTES_AGENT, other.port))
            r = s.run(["sh", "-c", script])
            eq(r.returncode, 0, "agent: " + r.stderr[-500:])
            eq(len(s.be.requests()), 2, "requests at the API")
            sid, recs = s.records()
            gone = [x for x in recs if x["type"] == "disconnect"]
            api = [x for x in gone if x["dport"] == s.be.port]
            eq(len(api), 1, "one keep-alive connection to the API: %r" % gone)
            eq((api[0]["requests"], api[0]["mediated"], api[0]["mediator"]), (2, True, "shim"),
               "its disconnect")
            raw = [x for x in gone if x["dport"] == other.port]
            eq(len(raw), 1, "disconnect of the raw connection: %r" % gone)
            eq((raw[0]["requests"], raw[0]["mediated"], raw[0]["mediator"]),
               (0, False, "shim"), "its disconnect")
            check(raw[0]["bytes_sent"] > 0, "bytes_sent %r" % raw[0])
            conns = [x for x in recs if x["type"] == "connect" and x.get("family") != "unix"]
            check(all(x["mediated"] for x in conns), "connect records %r" % conns)
            eq(recs[-1]["counts"]["unmediated"], 1, "session_close counts.unmediated")
            listed = [x for x in s.d.sessions() if (x.get("session") or x.get("id")) == sid]
            eq(len(listed), 1, "deputy sessions")
            eq(listed[0]["counts"]["unmediated"], 1, "deputy sessions: unmediated")
    finally:
        other.close()


if __name__ == "__main__":
    dt.main()
