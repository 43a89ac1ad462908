# SPDX-License-Identifier: MIT
"""Issue 11, items 5 and 6: requests that once got past a route, played by an unprivileged agent
(`nobody`) with curl under `deputy run`, against the real deputyd, shim and test backend.

- Paths past a deny route: with a deny route `/api/admin*`, spellings nginx, Tomcat/Spring or
  IIS read as /api/admin (`//`, `..;`, letter case, ...) must be refused, never delegated.
- Tokens to the wrong server: a token goes only to the route host's addresses. An agent that
  points the route's name at another address (curl --resolve), or talks to an address with a
  Host header naming the route host, gets deputy's 403 and the other server gets nothing.

Run with Debian's /usr/bin/python3. One PASS/FAIL/SKIP line per case."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

AUD = "https://api.test"
OTHER = "127.0.0.2"  # another server on the host, reachable through allow_cidrs

certs = dt.shared_certs


class Stack(dt.Stack):
    """The API (api.test and localhost on 127.0.0.1:P), another server on OTHER:P, and a
    deputyd whose routes deny /api/admin* and delegate the rest of /api/."""

    prefix = "deputy-route-case-"

    def __init__(self, kernel=None):
        if not dt.is_root():
            dt.skip("needs root to run the agent as nobody")
        super().__init__("email:send", AUD, certs=certs(), kernel=kernel, name="api")

    def routes(self, p):
        api = {"port": p, "action": "delegate", "audience": AUD, "scope": "email:send"}
        return [
            {"host": "api.test", "port": p, "path": "/api/admin*", "action": "deny"},
            dict(api, host="api.test", path="/api/*", addrs=["127.0.0.1"]),
            dict(api, host="localhost", path="/send*"),  # where it is: as resolved
        ]

    def prepare(self):
        self.api = self.be
        self.port = self.be.port
        self.other = dt.Backend(self.dir.path, certs=certs(), jwks=self.jwks, audience=AUD,
                                listen="%s:%d" % (OTHER, self.port), name="other").start()
        self.on_close(self.other.stop)
        # The premise of the attack: the agent may reach other loopback addresses.
        self.d.config["allow_cidrs"] = ["127.0.0.0/8"]

    def curl(self, url, *args, host="api.test", addr="127.0.0.1"):
        """curl as nobody in a session; (status, JSON body or text)."""
        cmd = ["curl", "-sS", "--path-as-is", "-w", "\nstatus %{http_code}\n",
               "--cacert", certs().ca]
        if host:
            cmd += ["--resolve", "%s:%d:%s" % (host, self.port, addr)]
        r = self.d.run(self.grant, cmd + list(args) + [url], user=dt.unprivileged_user())
        check(r.returncode == 0, "curl exited %d: %s" % (r.returncode, r.stderr[-400:]))
        body, _, status = r.stdout.rpartition("\nstatus ")
        try:
            body = json.loads(body)
        except ValueError:
            pass
        return int(status), body


def refused(status, body, *words):
    eq(status, 403, "status (body %r)" % (body,))
    check(isinstance(body, dict) and body.get("error") == "deputy_denied",
          "not deputy's 403: %r" % (body,))
    for w in words:
        check(w in body["reason"], "reason %r lacks %r" % (body["reason"], w))


def delegated(s, backend, status, body, path):
    eq(status, 200, "status (body %r)" % (body,))
    reqs = [x for x in backend.requests() if x["target"] == path]
    eq(len(reqs), 1, "requests for %s at the backend" % path)
    check(reqs[0]["token"]["valid"] is True, "token: %r" % reqs[0]["token"])
    eq(reqs[0]["token"]["claims"]["scope"], "email:send", "scope")


# ---- item 5: paths past a deny route ---------------------------------------------------------

PAST_DENY = [
    "/api//admin/users",  # nginx merges slashes
    "/api/x/..;/admin/users",  # Tomcat and Spring read "..;" as ".."
    "/api/Admin/users",  # IIS ignores case
    "/api/ADMIN;jsessionid=1/users",  # both: a ';' parameter, and case
    "/api/%61dmin/users",  # an escaped letter
    "/api/x/%2e%2e/admin/users",  # an escaped dot segment
    "/api%2Fadmin/users",  # an encoded '/': some servers decode it
    "/api/x\\..\\admin/users",  # a backslash: IIS reads it as '/'
]


@case
def paths_past_a_deny_route_are_refused():
    with Stack() as s:
        url = "https://api.test:%d" % s.port
        status, body = s.curl(url + "/api/inbox")
        delegated(s, s.api, status, body, "/api/inbox")
        for path in PAST_DENY:
            status, body = s.curl(url + path)
            refused(status, body)
        got = [x["target"] for x in s.api.requests()]
        eq(got, ["/api/inbox"], "what reached the API")
        sid = s.d.sessions()[-1]["session"]
        s.d.wait_closed(sid)
        denies = [x for sess in s.d.sessions() for x in s.d.records(sess["session"])
                  if x["type"] == "deny"]
        eq(len(denies), len(PAST_DENY), "one daemon deny per refused path: %r" % denies)
        check(all(x["layer"] == "daemon" for x in denies), "denied by deputyd")


@case
def an_unknown_or_lower_case_method_is_refused():
    """Methods are matched exactly: "get" is no GET to deputyd, and a method it does not know
    is refused on a routed destination unless a route names it (backends that read methods
    case-insensitively would otherwise run a DELETE a route never allowed)."""
    if not dt.is_root():
        dt.skip("needs root to run the agent as nobody")
    d = dt.Deputyd(routes=[
        {"host": "api.test", "port": 443, "method": "DELETE", "action": "deny"},
        {"host": "api.test", "port": 443, "method": "BREW", "action": "passthrough"},
        {"host": "api.test", "port": 443, "action": "delegate", "audience": AUD,
         "scope": "email:send"},
    ])
    for rt in d.config["routes"]:
        if rt["action"] != "deny":
            rt["addrs"] = [d.api_addr]
    d.write_config()
    d.start()

    def ask(method):
        return ["DECIDE", [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", "api.test"],
                           ["PORT", 443], ["METHOD", method], ["TARGET", "/x"]]]
    r, replies = dt.agent_requests(d, d.idp.grant(resource=[AUD]),
                                   [ask(m) for m in ("delete", "FOO", "BREW", "POST")],
                                   user=dt.unprivileged_user())
    eq(r.returncode, 0, r.stderr)
    eq([dt.VERDICT[x["VERDICT"]] for x in replies], ["deny", "deny", "passthrough", "delegate"],
       "replies %r" % replies)
    for x, m in zip(replies[:2], ("delete", "FOO")):
        check("method %s is not" % m in x["REASON"], x["REASON"])


# ---- item 6: tokens to the wrong server ------------------------------------------------------

def tokens_go_only_to_the_route_host(kernel):
    with Stack(kernel=kernel) as s:
        url = "https://api.test:%d/api/send" % s.port
        status, body = s.curl(url, "-d", "x")
        delegated(s, s.api, status, body, "/api/send")
        # the route's name pointed at another server
        status, body = s.curl(url, "-d", "x", addr=OTHER)
        refused(status, body, OTHER, "api.test")
        # an address with a Host header naming the route host (no SNI for an IP)
        status, body = s.curl("https://%s:%d/api/send" % (OTHER, s.port), "-k", "-d", "x",
                              "-H", "Host: api.test:%d" % s.port, host=None)
        refused(status, body, OTHER, "api.test")
        # a route host without "addrs": its resolved addresses
        status, body = s.curl("https://localhost:%d/send" % s.port, "-d", "x",
                              host="localhost")
        delegated(s, s.api, status, body, "/send")
        status, body = s.curl("https://localhost:%d/send" % s.port, "-d", "x",
                              host="localhost", addr=OTHER)
        refused(status, body, OTHER, "localhost")
        eq(s.other.requests(), [], "requests that reached the other server")


@case
def tokens_go_only_to_the_route_host_by_the_kernels_word():
    if not dt.bpf_available():
        dt.skip("needs the kernel layer", bpf=True)
    tokens_go_only_to_the_route_host("on")


@case
def tokens_go_only_to_the_route_host_without_kernel_layer():
    tokens_go_only_to_the_route_host("off")


@case
def a_socket_of_another_session_binds_nothing():
    """A session that names a connection of another session (its cookie) gets no token."""
    if not dt.bpf_available():
        dt.skip("needs the kernel layer", bpf=True)
    d = dt.Deputyd().start()
    holder, sid_a = None, None
    code = r"""
import json, os, socket, struct, sys
sys.path.insert(0, %r)
import deputytest as dt
f = dt.route_conn_fields()
print("cookie=%%d" %% dict(f)["COOKIE"], flush=True)
sys.stdin.readline()
""" % dt.LIB
    script = os.path.join(d.dir, "holder.py")
    with open(script, "w") as f:
        f.write(code)
    import subprocess
    holder = dt.track(subprocess.Popen(
        [dt.DEPUTY, "run", "--grant", d.grant_file(d.idp.grant()), "--agent", "mailbot", "--",
         dt.PYTHON, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=d.env(), preexec_fn=dt.demote(dt.unprivileged_user())))
    line = holder.stdout.readline()
    check(line.startswith("cookie="), "holder: %r" % line)
    cookie = int(line.split("=")[1])
    try:
        r, replies = dt.agent_requests(d, d.idp.grant(), [
            ["DECIDE", [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", "api.test"],
                        ["PORT", 443], ["METHOD", "POST"], ["TARGET", "/send"],
                        ["COOKIE", cookie]]]], user=dt.unprivileged_user())
        eq(r.returncode, 0, r.stderr)
        eq(dt.VERDICT[replies[0]["VERDICT"]], "deny", "reply %r" % replies)
        check("no connection of this session" in replies[0]["REASON"], replies[0]["REASON"])
    finally:
        holder.stdin.close()
        dt.stop_process(holder)


@case
def sni_and_target_must_name_the_route_host():
    """deputyd's own check, whatever the shim does: SNI and an absolute-form target."""
    if not dt.is_root():
        dt.skip("needs root to run the agent as nobody")
    d = dt.Deputyd().start()
    base = [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", "api.test"], ["PORT", 443],
            ["METHOD", "POST"]]
    r, replies = dt.agent_requests(d, d.idp.grant(), [
        ["DECIDE", base + [["TARGET", "/send"], ["SNI", "evil.test"]]],
        ["DECIDE", base + [["TARGET", "https://evil.test/send"]]],
        ["DECIDE", base + [["TARGET", "https://API.test./send"], ["SNI", "api.test"]]],
    ], user=dt.unprivileged_user())
    eq(r.returncode, 0, r.stderr)
    eq([dt.VERDICT[x["VERDICT"]] for x in replies], ["deny", "deny", "delegate"],
       "replies %r" % replies)
    check("evil.test" in replies[0]["REASON"] and "api.test" in replies[0]["REASON"],
          replies[0]["REASON"])
    check("api.test" in replies[1]["REASON"], replies[1]["REASON"])


if __name__ == "__main__":
    dt.main()
