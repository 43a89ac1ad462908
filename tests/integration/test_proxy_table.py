# SPDX-License-Identifier: MIT
"""deputy-proxy under "token_binding": "session" (issue 14), in test_proxy.py's world (its
private /etc/hosts, test CA and APIs), with Node and Bun agents as an unprivileged user: the
proxy decides from the session's table (one DECIDE for many requests, each still in the
log), a reload removing the route refuses the next request, an agent (Bun) that exits right
after its last request loses no record, and a use the proxy reports for a token of another
session is refused."""
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)

# Re-runs this file in a mount namespace, as test_proxy.py itself does.
import test_proxy as px  # noqa: E402
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402
from test_proxy import (BUN_BUILT, NOBODY, World, agent, all_records, https_url,  # noqa: E402
                        proxy_pid, reachable, require, session_of, verify_token)

del dt._cases[:]  # test_proxy.py's own cases run there, not again here


# ---- session-bound tokens in the proxy (issue 14) ---------------------------------------------

# Node or Bun: argv n, url prefix, [a file to wait for before the last request]; fetch keeps
# its connection alive; prints one STATUS line per request, then exits at once.
NODE_LOOP = r'''
const fs = require("fs");
const [n, url, gate] = process.argv.slice(-3);
(async () => {
  for (let i = 0; i < +n; i++) {
    if (gate !== "-" && i === +n - 1) {
      console.log("waiting");
      while (!fs.existsSync(gate)) await new Promise(r => setTimeout(r, 50));
    }
    const r = await fetch(url + i, {headers: {authorization: "Bearer service-account-key"}});
    await r.text();
    console.log("STATUS " + r.status);
  }
  process.exit(0);
})().catch(e => { console.log("ERROR " + (e.cause || e)); process.exit(3); });
'''


def gate_path(w):
    """A file the agent (nobody) waits for: in the shared test directory, unique."""
    return os.path.join(w.dir, "go-%s" % os.urandom(6).hex())


def loop_agent(d, runtime, n, gate="-"):
    return [runtime, "-e", NODE_LOOP, str(n), https_url(World.get(), "/read/"), gate]


def statuses(out):
    return [int(x) for x in re.findall(r"^STATUS (\d+)", out, re.M)]


def uses_of(recs):
    return [u for r in recs if r["type"] == "token_use" for u in r["uses"]]


@case
def session_binding_in_the_proxy_asks_deputyd_once():
    w = World.get()
    require("node", "node")
    d = w.deputyd(token_binding="session")
    n = 8
    before = len(w.tls.requests())
    r = agent(d, loop_agent(d, "node", n))
    eq(statuses(r.stdout), [200] * n, "statuses (stderr %s)" % r.stderr[-300:])
    reqs = w.tls.wait_records("request", before + n)[before:]
    eq(len(reqs), n, "requests at the API")
    for x in reqs:
        verify_token(d, dt.header(x, "Authorization")[0][7:], "email:read")
    recs = all_records(d)
    tokens = [x for x in recs if x["type"] == "token"]
    uses = uses_of(recs)
    # The first request asks (deputyd mints); the rest come from the proxy's table.
    check(len(tokens) <= 2, "%d token records (DECIDEs) for %d requests" % (len(tokens), n))
    eq(len(tokens) + len(uses), n, "requests in the log (tokens %d, uses %d)"
       % (len(tokens), len(uses)))
    check(all(x.get("mediator") == "proxy" for x in recs if x["type"] == "token_use"),
          "token_use records without mediator proxy")
    check(all(u["htu"].startswith("https://api.test:%d/read/" % w.tls.port) for u in uses),
          "uses: %r" % uses[:2])
    eq(len([x for x in recs if x["type"] == "response" and x["status"] == 200]), n,
       "response records")


def gated(d, n, between):
    """n requests by one Node agent in a session, the last one only after between(statuses
    so far) returned. Returns the statuses of all, and the agent's stderr."""
    w = World.get()
    gate = gate_path(w)
    grant = d.grant_file(d.idp.grant(scope="email:read", resource=["https://api.test"]))
    p = subprocess.Popen([dt.DEPUTY, "run", "--grant", grant, "--agent", "mailbot", "--"] +
                         loop_agent(d, "node", n, gate), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=d.env(),
                         preexec_fn=dt.demote(NOBODY))
    try:
        lines = dt.lines_until(p, "waiting")
        between(statuses("".join(lines)))
        open(gate, "w").close()
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return statuses("".join(lines) + out), err


@case
def reload_removing_the_route_refuses_the_next_proxied_request():
    w = World.get()
    require("node", "node")
    d = w.deputyd(token_binding="session")

    def reload(before):
        eq(before, [200] * 3, "before the reload")
        d.config["routes"] = [x for x in d.config["routes"] if x.get("scope") != "email:read"]
        d.write_config()
        d.proc.send_signal(signal.SIGHUP)
        check(dt.wait_until(lambda: "reloaded" in d.log_text(), 30), "no reload")

    got, err = gated(d, 4, reload)
    eq(got, [200, 200, 200, 403], "the request after the reload: %s" % err[-300:])
    recs = all_records(d)
    check(uses_of(recs), "no request was decided from the proxy's table: %r"
          % [(x["type"], x.get("reason")) for x in recs])


@case
def an_agent_exiting_after_its_last_request_loses_no_record():
    w = World.get()
    require(BUN_BUILT, "bun (npm @oven/bun-linux-x64)")
    d = w.deputyd(token_binding="session")
    n = 6
    r = agent(d, loop_agent(d, reachable(BUN_BUILT), n))
    eq(statuses(r.stdout), [200] * n, "statuses (stderr %s)" % r.stderr[-300:])
    recs = all_records(d)
    eq(len([x for x in recs if x["type"] == "token"]) + len(uses_of(recs)), n,
       "requests in the sealed log")
    eq(len([x for x in recs if x["type"] == "response"]), n, "response records")
    eq(recs[-1]["counts"].get("proxy_unflushed"), 0, "connections open at the seal")


PIDFD_GETFD = 438


def proxy_channel(d):
    """The proxy's own end of its channel to deputyd: what a compromised proxy speaks on."""
    pid = proxy_pid(d)
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = f.read().split(b"\0")
    fd = int(argv[argv.index(b"--chan") + 1])
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(PIDFD_GETFD, pidfd, fd, 0)
    finally:
        os.close(pidfd)
    check(got >= 0, "pidfd_getfd: %s" % os.strerror(ctypes.get_errno()))
    return socket.socket(fileno=got)


@case
def a_proxy_reporting_uses_outside_its_connection_is_refused():
    w = World.get()
    require("node", "node")
    d = w.deputyd(token_binding="session")
    # Session A gets a token through the proxy; session B's connection then claims it.
    r = agent(d, loop_agent(d, "node", 1))
    eq(statuses(r.stdout), [200], "session A")
    a = session_of(d)
    jti = [x for x in d.wait_closed(a, kernel=True) if x["type"] == "token"][0]["jti"]
    use = dt.frame("OK", [("SCHEME", "https"), ("JTI", jti), ("METHOD", "GET"),
                          ("HOST", "api.test"), ("PORT", w.tls.port),
                          ("TARGET", "/read/stolen")])[12:]

    def steal(before):
        chan = proxy_channel(d)
        # deputyd numbers connections from 1: B's keep-alive connection is among the first.
        for conn in range(1, 6):
            chan.send(dt.frame("PROXY_USES", [("CONN", conn), ("USE", use)],
                               flags=dt.NOREPLY))
        chan.close()

    got, err = gated(d, 2, steal)
    eq(got, [200, 200], "session B goes on: %s" % err[-300:])
    b = session_of(d)
    recs = d.wait_closed(b, kernel=True)
    deny = [x for x in recs if x["type"] == "deny" and "was not given" in x["reason"]]
    check(deny and deny[0].get("mediator") == "proxy", "no refusal in B's log: %r" %
          [x for x in recs if x["type"] == "deny"])
    check(all(u["jti"] != jti for u in uses_of(recs)), "A's token credited to B")
    check(all("/read/stolen" not in u["htu"] for u in uses_of(all_records(d))),
          "the stolen use was logged")


if __name__ == "__main__":
    try:
        dt.main()
    finally:
        px._cleanup()
