# SPDX-License-Identifier: MIT
"""Papercuts an operator met (issue 12, item 9), each with the real deputyd or CLI: the
socket found from the config, all config errors at once with "did you mean", route hosts
that do not resolve, unterminated globs, grant resources without a scheme, the root
warning, `deputy help run`, and `deputy route test`."""
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402


def no_socket_env(d, **extra):
    env = d.env(**extra)
    env.pop("DEPUTY_SOCKET", None)
    env.pop("DEPUTY_CONFIG", None)
    env.update(extra)
    return env


def check_config(d):
    return dt.run([dt.DEPUTYD, "-t", "-c", d.config_path])


@case
def the_cli_finds_deputyd_where_its_config_says():
    d = dt.Deputyd().start()
    r = d.cli("sessions", env=no_socket_env(d, DEPUTY_CONFIG=d.config_path))
    eq(r.returncode, 0, "DEPUTY_CONFIG: " + r.stderr.decode())
    r = d.cli("sessions", "--config", d.config_path, env=no_socket_env(d))
    eq(r.returncode, 0, "--config: " + r.stderr.decode())
    g = d.grant_file(d.idp.grant())
    r = d.cli("run", "--config", d.config_path, "--grant", g, "--agent", "mailbot", "--",
              "sh", "-c", "echo $DEPUTY_SOCKET", env=no_socket_env(d))
    eq(r.returncode, 0, "run --config: " + r.stderr.decode())
    eq(r.stdout.decode().strip(), d.socket, "the agent is told the same socket")
    sid = d.sessions()[0]["session"]
    d.wait_closed(sid)
    r = d.cli("logs", sid, env=no_socket_env(d, DEPUTY_CONFIG=d.config_path))
    eq(r.returncode, 0, "logs with DEPUTY_CONFIG: " + r.stderr.decode())
    # --socket and DEPUTY_SOCKET still come first
    r = d.cli("sessions", "--socket", "/nonexistent/sock", "--config", d.config_path)
    eq(r.returncode, 1)
    check(b"/nonexistent/sock" in r.stderr, r.stderr)
    # a named config that cannot be read is an error, not the default socket
    r = d.cli("sessions", env=no_socket_env(d, DEPUTY_CONFIG="/nonexistent/deputy.json"))
    eq(r.returncode, 1)
    check(b"/nonexistent/deputy.json" in r.stderr, r.stderr)


@case
def config_errors_come_all_at_once_with_did_you_mean():
    d = dt.Deputyd()
    d.config["enforcee"] = True
    d.config["token_ttl"] = 1
    d.config["retention_dayz"] = 3
    d.config["routes"][0]["port"] = 0
    d.config["routes"][1]["scpoe"] = "x"
    d.config["trusted_issuers"][0]["jwsk_uri"] = "https://x"
    d.write_config()
    r = check_config(d)
    eq(r.returncode, 1)
    lines = r.stderr.splitlines()
    want = ['unknown key "enforcee" (did you mean "enforce"?)',
            'unknown key "retention_dayz" (did you mean "retention_days"?)',
            "token_ttl: must be an integer from 5 to 86400",
            "routes[0].port: must be an integer from 1 to 65535",
            'routes[1]: unknown key "scpoe" (did you mean "scope"?)',
            'trusted_issuers[0]: unknown key "jwsk_uri" (did you mean "jwks_uri"?)']
    for w in want:
        check(any(l.endswith(w) for l in lines), "%r in %r" % (w, lines))
    eq(len(lines), len(want), "one line per error: %r" % lines)
    for l in lines:
        check(l.startswith("deputyd: config: %s: " % d.config_path), l)
    # no suggestion for a key that is like none
    d.config = {k: v for k, v in d.config.items() if k not in ("enforcee", "retention_dayz",
                                                                "token_ttl")}
    d.config["routes"][0]["port"] = 443
    del d.config["routes"][1]["scpoe"]
    del d.config["trusted_issuers"][0]["jwsk_uri"]
    d.config["frobnicate"] = 1
    d.write_config()
    r = check_config(d)
    eq(r.returncode, 1)
    eq(r.stderr.strip(), 'deputyd: config: %s: unknown key "frobnicate"' % d.config_path)
    # deputyd itself refuses to start with the same lines
    d.config["enforcee"] = False
    d.write_config()
    r = dt.run([dt.DEPUTYD, "-f", "-c", d.config_path])
    eq(r.returncode, 1)
    check("frobnicate" in r.stderr and "did you mean \"enforce\"" in r.stderr, r.stderr)


@case
def an_unterminated_path_glob_is_refused():
    for bad, why in (("/api/[abc", "without its closing"), ("/api/x\\", "escaping")):
        d = dt.Deputyd()
        d.config["routes"][0]["path"] = bad
        d.write_config()
        r = check_config(d)
        eq(r.returncode, 1, "path %r" % bad)
        check("routes[0].path" in r.stderr and why in r.stderr, r.stderr)
    for good in ("/api/[abc]*", "/api/[!x]*", "/api/[]]x", "/api/\\*"):
        d = dt.Deputyd()
        d.config["routes"][0]["path"] = good
        d.write_config()
        r = check_config(d)
        eq(r.returncode, 0, "path %r: %s" % (good, r.stderr))


@case
def a_route_host_that_does_not_resolve_is_named():
    port = dt.free_port()
    routes = [{"host": "no-such-host.invalid", "port": port, "action": "passthrough"},
              {"host": "127.0.0.1", "port": 443, "action": "passthrough"}]
    d = dt.Deputyd(routes=routes)
    r = check_config(d)
    eq(r.returncode, 0, "a warning, not an error: " + r.stderr)
    check("routes[0].host: no-such-host.invalid does not resolve" in r.stderr, r.stderr)
    check("routes[1]" not in r.stderr, "an address resolves: " + r.stderr)
    if d.config["kernel"] != "on":
        dt.skip("the kernel layer is off here", bpf=True)
    d.start()
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", port))
    lsn.listen(8)
    try:
        r = d.run(d.idp.grant(), [dt.PYTHON, "-c",
                  "import socket,sys\ns=socket.socket()\n"
                  "try:\n s.connect(('127.0.0.1', %d)); print('connected')\n"
                  "except OSError as e: print(e.errno)" % port],
                  user=dt.unprivileged_user())
    finally:
        lsn.close()
    eq(r.stdout.strip(), "1", "EPERM: " + r.stdout + r.stderr)
    sid = [s for s in d.sessions()][0]["session"]
    recs = d.wait_closed(sid, kernel=True)
    denies = [x for x in recs if x["type"] == "deny" and x["layer"] == "kernel"]
    check(denies and "no-such-host.invalid" in denies[0]["reason"], "deny names the host: %r"
          % denies)


@case
def grant_refuses_a_resource_without_a_scheme_and_says_0600():
    key = os.path.join(dt.reachable_dir("deputy-test."), "k.pem")
    with open(key, "wb") as f:
        f.write(dt.Issuer().pem())
    base = [dt.DEPUTY, "grant", "--key", key, "--iss", dt.IDP, "--user", "alice", "--agent",
            "mailbot", "--scope", "email:send", "--aud", dt.ISSUER, "--resource"]
    r = dt.run(base + ["mail.internal"])
    eq(r.returncode, 1)
    check("has no scheme" in r.stderr and "https://mail.internal" in r.stderr, r.stderr)
    eq(r.stdout, "", "no grant printed")
    r = dt.run(base + ["https://mail.internal"])
    eq(r.returncode, 0, r.stderr)
    check("0600" in r.stderr, "advice on the file's mode: %r" % r.stderr)
    r = dt.run([dt.DEPUTY, "grant", "--help"])
    check("0600" in r.stdout, r.stdout)


def run_on_a_terminal(d, user=None):
    """deputy run with its stderr on a pseudo-terminal, as a person runs it; its stderr."""
    import pty
    master, slave = pty.openpty()
    try:
        r = subprocess.run([dt.DEPUTY, "run", "--grant", d.grant_file(d.idp.grant()), "--agent",
                            "mailbot", "--", "true"], stdout=subprocess.PIPE, stderr=slave,
                           env=d.env(), timeout=60,
                           preexec_fn=dt.demote(user) if user else None)
        os.close(slave)
        slave = None
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        eq(r.returncode, 0, out.decode(errors="replace"))
        return out.decode(errors="replace")
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)


@case
def run_as_root_warns_that_root_can_leave():
    d = dt.Deputyd().start()
    err = run_on_a_terminal(d)
    check("root privileges can leave any session" in err, err)
    eq(run_on_a_terminal(d, user=dt.unprivileged_user()), "", "none for an unprivileged user")
    r = d.run(d.idp.grant(), ["true"])
    eq((r.returncode, r.stderr), (0, ""), "scripts (stderr not a terminal) get a clean stderr")


@case
def help_run_is_run_help():
    a = dt.run([dt.DEPUTY, "help", "run"])
    b = dt.run([dt.DEPUTY, "run", "--help"])
    eq((a.returncode, b.returncode), (0, 0))
    eq(a.stdout, b.stdout)
    check("usage: deputy run" in a.stdout, a.stdout)
    for cmd in ("logs", "sessions", "audit", "route"):
        r = dt.run([dt.DEPUTY, "help", cmd])
        eq(r.returncode, 0, "help %s: %s" % (cmd, r.stderr))
        check("usage: deputy " + cmd in r.stdout, r.stdout)
    r = dt.run([dt.DEPUTY, "help", "frob"])
    eq(r.returncode, 2)


@case
def route_test_shows_the_route_and_decision_without_sending():
    d = dt.Deputyd()
    d.config["routes"].append({"host": "mcp.test", "port": 443, "path": "/mcp",
                               "action": "delegate", "audience": "https://api.test",
                               "scope": "email:send", "mcp": {"tools": {"*": "email:send"}}})
    d.write_config()
    d.start()
    g = d.grant_file(d.idp.grant(scope="email:send"))

    def rt(method, url, grant=g, agent="mailbot"):
        r = d.cli("route", "test", method, url, "--grant", grant, "--agent", agent, "--json")
        out = json.loads(r.stdout) if r.stdout.strip() else None
        return r.returncode, out, r.stderr.decode()

    rc, o, _ = rt("POST", "https://api.test/send/now")
    eq((rc, o["verdict"], o["route"]["index"], o["route"]["scope"]),
       (0, "delegate", 0, "email:send"))
    eq(o["user"], "alice")
    rc, o, _ = rt("GET", "https://api.test/read")
    eq((rc, o["verdict"], o["route"]["index"]), (1, "deny", 1))
    check("not in the user's grant" in o["reason"], o["reason"])
    rc, o, _ = rt("GET", "https://llm.test/v1/x?y=1")
    eq((rc, o["verdict"], o["route"]["action"]), (0, "passthrough", "passthrough"))
    rc, o, _ = rt("GET", "https://evil.test/")
    eq((rc, o["verdict"], o["route"]["action"]), (1, "deny", "deny"))
    rc, o, _ = rt("GET", "https://elsewhere.test:8443/")
    eq((rc, o["verdict"], o["route"]), (1, "deny", None))
    check("no route allows" in o["reason"], o["reason"])
    rc, o, _ = rt("POST", "https://mcp.test/mcp")
    eq((rc, o["verdict"], o["route"]["index"]), (0, "mcp", 4), "decided per call: %r" % o)
    rc, o, _ = rt("GET", "https://api.test/%2e%2e/x/..;/send")
    eq(o["verdict"], "deny", "the same path rules as real requests: %r" % o)
    # the grant is checked as a session's would be
    forged = d.grant_file(dt.Issuer().grant())
    rc, o, err = rt("POST", "https://api.test/send", grant=forged)
    eq((rc, o), (1, None))
    check("grant refused" in err, err)
    rc, o, err = rt("POST", "https://api.test/send", agent="other")
    eq(rc, 1)
    check("grant refused" in err and "may_act" in err, err)
    rc, o, err = rt("POST", "api.test/send")
    eq(rc, 1)
    check("URL" in err, err)
    # nothing was sent, logged or minted: no session, no log
    eq(d.sessions(), [])
    eq(os.listdir(os.path.join(d.state, "sessions")), [])
    # not from inside a session: the agent has no business asking
    r, replies = dt.agent_requests(d, d.idp.grant(), [["ROUTE_TEST", [
        ["GRANT", d.idp.grant()], ["AGENT", "mailbot"], ["SCHEME", "https"],
        ["HOST", "api.test"], ["PORT", 443], ["METHOD", "POST"], ["TARGET", "/send"]]]],
        user=dt.unprivileged_user())
    eq(replies[0]["type"], "ERROR", "%r" % replies)
    check("inside a session" in replies[0]["REASON"], replies[0])
    r = d.cli("route", "test", "POST", "https://api.test/send", "--grant", g, "--agent",
              "mailbot")
    eq(r.returncode, 0)
    out = r.stdout.decode()
    check("routes[0]" in out and "decision: delegate" in out, out)


if __name__ == "__main__":
    dt.main()
