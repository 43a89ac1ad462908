# SPDX-License-Identifier: MIT
"""libdeputy.so end to end: real deputyd sessions (`deputy run`), the real test HTTPS backend
(which verifies every token it receives with deputy's verification library), and real
clients — curl, Python urllib over ssl, libcurl from threads, and the hand-written TLS
clients of tests/progs, each writing requests in its own awkward way.

For every mediated request the backend must receive exactly one Authorization header, a
valid token with the right scope, aud, htm and htu, and the body byte for byte. Refused
requests must never reach the backend; the agent reads deputy's 403 JSON instead.

Run with Debian's /usr/bin/python3. One PASS/FAIL/SKIP line per case."""
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

SA = dt.SERVICE_ACCOUNT
AUD = "https://api.test"
GRANT_SCOPE = "email:send email:read files:write"
URLLIB_CLIENT = os.path.join(dt.LIB, "urllib_client.py")

certs = dt.shared_certs


class Stack(dt.Stack):
    """A backend (TLS unless plain) and a deputyd whose routes point at it."""

    prefix = "deputy-shim-case-"

    def __init__(self, plain=False, echo=False, h2=False, extra_routes=(), addrs=True, **config):
        self.addrs = addrs
        # The backend is on loopback under made-up names: let the kernel layer allow it.
        super().__init__(GRANT_SCOPE, AUD, certs=None if plain else certs(), echo=echo, h2=h2,
                         extra_routes=extra_routes,
                         config={"allow_cidrs": ["127.0.0.0/8", "::1/128"], **config})

    def routes(self, p):
        return [
            {"host": "api.test", "port": p, "method": "POST", "path": "/send*",
             "action": "delegate", "audience": AUD, "scope": "email:send"},
            {"host": "api.test", "port": p, "method": "GET", "path": "/read*",
             "action": "delegate", "audience": AUD, "scope": "email:read"},
            {"host": "api.test", "port": p, "path": "/files*",
             "action": "delegate", "audience": AUD, "scope": "files:write"},
            {"host": "api.test", "port": p, "path": "/admin*",
             "action": "delegate", "audience": AUD, "scope": "admin:all"},
            {"host": "echo.test", "port": p, "action": "passthrough"},
            {"host": "mail.test", "port": p, "action": "deny"},
        ]

    def prepare(self):
        # api.test is a made-up name for the backend on loopback: say where it is, or no
        # token would go there. That makes the backend a delegate route's destination: the
        # kernel sends unclaimed connects there to the proxy and the shim refuses what is not
        # HTTP, so cases about traffic left alone leave it out (addrs=False).
        for rt in self.d.config["routes"]:
            if rt["action"] == "delegate" and self.addrs:
                rt.setdefault("addrs", ["127.0.0.1", "::1"])

    def run(self, cmd, timeout=120, **env):
        return self.d.run(self.grant, cmd, env=self.d.env(**env), timeout=timeout)


def ran(r, what="agent"):
    check(r.returncode == 0, "%s exited %d: %s" % (what, r.returncode,
                                                    (r.stderr or "")[-800:]))
    return dt.parse_client_output(r.stdout)


def check_delegated(rec, method, url, scope, body=None):
    """The backend's record of one request that must carry a fresh, valid token."""
    eq(rec["method"], method, "method")
    auth = dt.header(rec, "Authorization")
    eq(len(auth), 1, "Authorization headers")
    check(auth[0] != SA, "the service-account credential reached the backend")
    tok = rec["token"]
    check(tok["valid"] is True, "token not valid: %s" % tok.get("error"))
    cl = tok["claims"]
    eq(cl["scope"], scope, "scope")
    eq(cl["aud"], AUD, "aud")
    eq(cl["htm"], method, "htm")
    eq(cl["htu"], url.split("?")[0], "htu")
    eq(cl["sub"], "alice", "sub")
    eq(cl["act"], {"sub": "agent:mailbot"}, "act")
    if body is not None:
        eq(rec["body_sha256"], dt.sha256(body), "body sha256")
        eq(rec["body_len"], len(body), "body length")


def check_refused(status, body, reason_part=None):
    eq(status, 403, "status")
    check(isinstance(body, dict), "403 body is not JSON: %r" % (body,))
    eq(body.get("error"), "deputy_denied", "error")
    for k in ("reason", "scope", "user"):
        check(k in body, "403 body lacks %s" % k)
    if reason_part:
        check(reason_part in body["reason"], "reason %r lacks %r" % (body["reason"], reason_part))


def records_of(s, types):
    return [r for r in s.d.records(s.session()) if r["type"] in types]


# ---- curl ----------------------------------------------------------------------------------

@case
def curl_get_delegated():
    with Stack() as s:
        url = s.url("/read/inbox?limit=5")
        r = s.run(s.be.curl("-H", "Authorization: " + SA, url))
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        reqs = s.be.requests()
        eq(len(reqs), 1, "requests at the backend")
        check_delegated(reqs[0], "GET", url, "email:read")
        eq(reqs[0]["target"], "/read/inbox?limit=5", "target")
        reply = json.loads(r.stdout)
        check(reply["token"]["valid"], "backend reply")
        recs = s.d.wait_closed(s.session())
        tok = [x for x in recs if x["type"] == "token"]
        resp = [x for x in recs if x["type"] == "response"]
        eq(len(tok), 1, "token records")
        eq(resp[0]["jti"], tok[0]["jti"], "response jti")
        eq(resp[0]["status"], 200, "response status")


@case
def curl_post_body_byte_identical():
    with Stack() as s:
        body = dt.pattern(200000) + bytes(range(256)) * 4
        path = os.path.join(s.dir.path, "body.bin")
        with open(path, "wb") as f:
            f.write(body)
        url = s.url("/send/mail")
        r = s.run(s.be.curl("-H", "Authorization: " + SA, "--data-binary", "@" + path, url))
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        reqs = s.be.requests()
        eq(len(reqs), 1, "requests")
        check_delegated(reqs[0], "POST", url, "email:send", body)


@case
def curl_keepalive_two_urls():
    with Stack() as s:
        u1, u2 = s.url("/read/a"), s.url("/send/b")
        r = s.run(s.be.curl("-H", "Authorization: " + SA, u1, "--next") +
                  s.be.curl("-H", "Authorization: " + SA, "-d", "hello", u2)[1:])
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        reqs = s.be.requests()
        eq(len(reqs), 2, "requests")
        eq(reqs[0]["conn"], reqs[1]["conn"], "both requests on one connection")
        check_delegated(reqs[0], "GET", u1, "email:read")
        check_delegated(reqs[1], "POST", u2, "email:send", b"hello")
        check(reqs[0]["token"]["claims"]["jti"] != reqs[1]["token"]["claims"]["jti"],
              "one token per request")


@case
def curl_http2_downgraded():
    with Stack(h2=True) as s:
        url = s.url("/read/h2")
        r = s.run(s.be.curl("--http2", "-w", "\\nhttp_version %{http_version}\\n", url))
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        check("http_version 1.1" in r.stdout, "curl did not fall back: " + r.stdout[-200:])
        reqs = s.be.requests()
        eq(len(reqs), 1, "HTTP/1.1 requests")
        eq(reqs[0]["alpn"], "http/1.1", "ALPN")
        check_delegated(reqs[0], "GET", url, "email:read")


@case
def curl_plain_http():
    with Stack(plain=True) as s:
        url = s.url("/send/plain")
        r = s.run(s.be.curl("-H", "Authorization: " + SA, "-d", "x=1", url))
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        reqs = s.be.requests()
        eq(len(reqs), 1, "requests")
        check(reqs[0]["tls"] is False, "not plain text")
        rec = reqs[0]
        tok = rec["token"]
        check(tok["valid"], "token: %s" % tok.get("error"))
        eq(tok["claims"]["htu"], url, "htu")
        eq(dt.body_bytes(rec), b"x=1", "body")


# ---- refusals -------------------------------------------------------------------------------

@case
def out_of_scope_refused():
    with Stack() as s:
        r = s.run(s.be.curl("-sS", "-w", "\\nstatus %{http_code}\\n", "-d", "{}",
                            s.url("/admin/users")))
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        body, _, status = r.stdout.rpartition("\nstatus ")
        j = json.loads(body)
        check_refused(int(status), j)
        eq(j["scope"], "admin:all", "scope in the 403")
        eq(j["user"], "alice", "user in the 403")
        eq(s.be.requests(), [], "requests at the backend")
        recs = s.d.wait_closed(s.session())
        check([x for x in recs if x["type"] == "deny"], "no deny record")


@case
def unrouted_refused_python():
    with Stack() as s:
        r = s.run([dt.PYTHON, URLLIB_CLIENT, "--ca", certs().ca, "-X", "GET",
                   s.url("/anything", host="other.test"), s.url("/x", host="mail.test")])
        out = ran(r, "urllib client")
        eq(len(out["responses"]), 2, "responses")
        for st, body in out["responses"]:
            check_refused(st, body)
        eq(s.be.requests(), [], "requests at the backend")


@case
def no_session_fails_closed():
    # The shim loaded outside `deputy run` (or in a child that lost DEPUTY_SESSION past
    # the exec hooks) has no one to ask: it refuses rather than sending untouched.
    with Stack() as s:
        env = s.d.env()
        env["LD_PRELOAD"] = dt.SHIM
        env.pop("DEPUTY_SESSION", None)
        r = dt.run(s.be.curl("-sS", s.url("/read/x")), env=env)
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        check_refused(403, json.loads(r.stdout), "session")
        eq(s.be.requests(), [], "requests at the backend")


@case
def host_sni_mismatch_refused():
    with Stack() as s:
        r = s.run(s.be.curl("-sS", "-H", "Host: llm.test", s.url("/read/x")))
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        check_refused(403, json.loads(r.stdout), "SNI")
        eq(s.be.requests(), [], "requests at the backend")
        recs = s.d.wait_closed(s.session())
        denies = [x for x in recs if x["type"] == "deny"]
        check(denies and denies[0].get("layer") == "shim", "no shim-layer deny: %r" % denies)


@case
def smuggling_head_refused():
    with Stack() as s:
        # Content-Length and Transfer-Encoding together: refused before anything is sent.
        r = s.run([dt.prog("tls_onebyte"), "-c", certs().ca, "-r", "127.0.0.1", "-X", "POST",
                   "-H", "Transfer-Encoding: chunked", "-d", "hello", s.url("/send/x")])
        out = dt.parse_client_output(r.stdout)
        check(out["responses"], "no response: " + r.stderr[-400:])
        check_refused(*out["responses"][0])
        eq(s.be.requests(), [], "requests at the backend")


@case
def deputyd_gone_fails_closed():
    with Stack() as s:
        go = os.path.join(s.dir.path, "go")
        script = os.path.join(s.dir.path, "agent.py")
        with open(script, "w") as f:
            f.write(AGENT_TWO_CALLS)
        e = s.d.env()
        p = dt.track(subprocess.Popen(
            [dt.DEPUTY, "run", "--grant", s.d.grant_file(s.grant), "--agent", "mailbot", "--",
             dt.PYTHON, script, certs().ca, s.url("/read/1"), s.url("/read/2"), go],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e))
        s.be.wait_records("request", 1, timeout=20)
        eq(len(s.be.requests()), 1, "first request")
        s.d.proc.send_signal(signal.SIGKILL)
        s.d.proc.wait()
        open(go, "w").close()
        out, err = p.communicate(timeout=60)
        dt.stop_process(p)
        res = dt.parse_client_output(out)
        eq(len(res["responses"]), 2, "responses: " + out[-300:] + err[-300:])
        eq(res["responses"][0][0], 200, "first status")
        check_refused(*res["responses"][1], "deputyd")
        eq(len(s.be.requests()), 1, "requests at the backend")


AGENT_TWO_CALLS = r'''
import os, sys, time
sys.path.insert(0, %r)
from deputytest import urllib_opener
import urllib.error, urllib.request
ca, u1, u2, go = sys.argv[1:5]
op = urllib_opener(ca)
for i, u in enumerate((u1, u2)):
    if i == 1:
        for _ in range(600):
            if os.path.exists(go):
                break
            time.sleep(0.05)
    try:
        with op.open(u, timeout=30) as r:
            st, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        st, data = e.code, e.read()
    print("status %%d" %% st)
    print(data.decode(errors="replace"), flush=True)
''' % dt.LIB


# ---- the awkward clients ------------------------------------------------------------------

def tls_prog(s, name, *args, url=None, env=None):
    return s.run([dt.prog(name), "-c", certs().ca, "-r", "127.0.0.1"] + list(args) +
                 ([url] if url else []), **(env or {}))


def check_all_delegated(s, out, method, url, scope, n):
    reqs = s.be.requests()
    eq(len(reqs), n, "requests at the backend")
    eq(len(out["responses"]), n, "responses")
    for i, rec in enumerate(reqs):
        check_delegated(rec, method, url, scope)
        if i < len(out["sent"]):
            eq(rec["body_sha256"], out["sent"][i][1], "body %d" % i)
    for st, _ in out["responses"]:
        eq(st, 200, "status")


@case
def python_urllib_post():
    with Stack() as s:
        url = s.url("/send/py")
        r = s.run([dt.PYTHON, URLLIB_CLIENT, "--ca", certs().ca, "-X", "POST", "-s", "70000",
                   url, url])
        out = ran(r, "urllib client")
        check_all_delegated(s, out, "POST", url, "email:send", 2)


@case
def one_byte_per_ssl_write():
    with Stack() as s:
        url = s.url("/send/onebyte")
        out = ran(tls_prog(s, "tls_onebyte", "-X", "POST", "-s", "3000", "-n", "3", url=url))
        check_all_delegated(s, out, "POST", url, "email:send", 3)


@case
def ssl_peek_then_read():
    """SSL_peek/_ex show what the next SSL_read/_ex returns: on a delegated response and on
    the 403 the shim serves from memory."""
    with Stack() as s:
        for mode in ("int", "ex"):
            url = s.url("/send/peek-" + mode)
            out = ran(tls_prog(s, "tls_peek", "-m", mode, "-X", "POST", "-s", "500", url=url))
            eq([st for st, _ in out["responses"]], [200], "status (%s)" % mode)
            refused = ran(tls_prog(s, "tls_peek", "-m", mode, url=s.url("/x", host="mail.test")))
            eq(len(refused["responses"]), 1, "responses (%s)" % mode)
            check_refused(*refused["responses"][0])
        reqs = s.be.requests()
        eq(len(reqs), 2, "requests at the backend")
        for rec, mode in zip(reqs, ("int", "ex")):
            check_delegated(rec, "POST", s.url("/send/peek-" + mode), "email:send")


@case
def one_byte_per_write_plain():
    with Stack(plain=True) as s:
        url = s.url("/read/onebyte")
        out = ran(s.run([dt.prog("tls_onebyte"), "-r", "127.0.0.1", "-n", "2", url]))
        reqs = s.be.requests()
        eq(len(reqs), 2, "requests")
        for rec in reqs:
            check(rec["token"]["valid"], "token: %s" % rec["token"].get("error"))
            eq(len(dt.header(rec, "Authorization")), 1, "Authorization headers")
        eq([st for st, _ in out["responses"]], [200, 200], "statuses")


@case
def nonblocking_want_write():
    with Stack() as s:
        url = s.url("/send/nb")
        out = ran(tls_prog(s, "tls_nonblock", "-X", "POST", "-s", str(1 << 20), "-n", "2",
                           url=url))
        check_all_delegated(s, out, "POST", url, "email:send", 2)


@case
def nonblocking_partial_writes():
    with Stack() as s:
        url = s.url("/send/nbp")
        out = ran(tls_prog(s, "tls_nonblock", "-p", "-X", "POST", "-s", str(1 << 20),
                           "-n", "2", url=url))
        check_all_delegated(s, out, "POST", url, "email:send", 2)


@case
def nonblocking_refusal_readable():
    with Stack() as s:
        out = ran(tls_prog(s, "tls_nonblock", "-X", "POST", "-s", "1000",
                           url=s.url("/admin/x")))
        eq(len(out["responses"]), 1, "responses")
        check_refused(*out["responses"][0])
        eq(s.be.requests(), [], "requests at the backend")


@case
def chunked_upload():
    with Stack() as s:
        url = s.url("/files/up")
        out = ran(tls_prog(s, "tls_chunked", "-X", "PUT", "-s", "100000", "-t", url=url))
        check_all_delegated(s, out, "PUT", url, "files:write", 1)
        check(s.be.requests()[0]["chunked"], "not chunked at the backend")


@case
def chunked_expect_continue():
    with Stack() as s:
        url = s.url("/files/up")
        out = ran(tls_prog(s, "tls_chunked", "-X", "POST", "-s", "5000", "-e", "-n", "2",
                           url=url))
        check_all_delegated(s, out, "POST", url, "files:write", 2)


@case
def pipelined_requests():
    with Stack() as s:
        url = s.url("/files/p")
        out = ran(tls_prog(s, "tls_pipeline", "-s", "777", "-n", "6", url=url))
        reqs = s.be.requests()
        eq(len(reqs), 6, "requests")
        eq(len(out["responses"]), 6, "responses")
        for i, rec in enumerate(reqs):
            check(rec["token"]["valid"], "token %d: %s" % (i, rec["token"].get("error")))
            eq(len(dt.header(rec, "Authorization")), 1, "Authorization headers")
            eq(rec["token"]["claims"]["htm"], rec["method"], "htm")
        jtis = {r["token"]["claims"]["jti"] for r in reqs}
        eq(len(jtis), 6, "distinct tokens")
        recs = s.d.wait_closed(s.session())
        eq(len([x for x in recs if x["type"] == "response"]), 6, "response records")


@case
def libcurl_threads():
    with Stack() as s:
        urls = [s.url("/files/t1"), s.url("/files/t2")]
        r = s.run([dt.prog("curl_threads"), "-c", certs().ca, "-R", s.be.resolve(),
                   "-t", "4", "-n", "6", "-s", "5000"] + urls)
        check(r.returncode == 0, "curl_threads: " + r.stderr[-500:])
        reqs = s.be.requests()
        eq(len(reqs), 24, "requests")
        for rec in reqs:
            check(rec["token"]["valid"], "token: %s" % rec["token"].get("error"))
            eq(len(dt.header(rec, "Authorization")), 1, "Authorization headers")
        lines = [l.split() for l in r.stdout.splitlines() if l.strip()]
        eq(len(lines), 24, "transfers")
        eq({l[4] for l in lines}, {"200"}, "statuses")


@case
def fork_exec_child_sanitised_env():
    with Stack() as s:
        url = s.url("/send/child")
        for mode in ("execve", "execvpe", "posix_spawn", "posix_spawnp"):
            n0 = len(s.be.requests())
            r = s.run([dt.prog("tls_fork_exec"), "-m", mode, "--", dt.prog("tls_onebyte"),
                       "-c", certs().ca, "-r", "127.0.0.1", "-X", "POST", "-d", "from child",
                       url])
            out = ran(r, "tls_fork_exec -m " + mode)
            reqs = s.be.requests()[n0:]
            eq(len(reqs), 1, mode + ": requests")
            check_delegated(reqs[0], "POST", url, "email:send", b"from child")
            eq(out["responses"][0][0], 200, mode + ": status")


@case
def tls_echo_passthrough_untouched():
    with Stack(echo=True, addrs=False) as s:
        r = s.run([dt.prog("tls_echo_client"), "-c", certs().ca, "-r", "127.0.0.1", "-s",
                   "300000", "-n", "3", "tls://echo.test:%d" % s.be.port])
        check(r.returncode == 0, "echo client: " + (r.stdout + r.stderr)[-500:])
        check("echo ok" in r.stdout, r.stdout)


@case
def constructor_tls_before_main():
    with Stack() as s:
        url = s.url("/send/ctor")
        r = s.run([dt.prog("tls_ctor"), "-c", certs().ca, "-r", "127.0.0.1", "-d", "early",
                   url])
        check(r.returncode == 0, "tls_ctor: " + r.stderr[-500:])
        check("main ran" in r.stdout, r.stdout)
        reqs = s.be.requests()
        eq(len(reqs), 1, "requests")
        check_delegated(reqs[0], "POST", url, "email:send", b"early")


@case
def quiet_without_debug():
    with Stack() as s:
        r = s.run(s.be.curl(s.url("/read/q")))
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        check("deputy:" not in r.stderr, "shim printed without DEPUTY_DEBUG: " + r.stderr)
        r = s.run(s.be.curl(s.url("/read/q")), DEPUTY_DEBUG="1")
        check("deputy: " in r.stderr, "nothing under DEPUTY_DEBUG=1")


@case
def reused_fd_left_alone():
    # A socket replaced behind the shim's back (dup2 is not hooked) must not drag the new
    # file into HTTP mediation: half a request head written to it lands in the file.
    with Stack(plain=True, addrs=False) as s:
        path = os.path.join(s.dir.path, "out.txt")
        script = ("import os, socket, sys\n"
                  "c = socket.create_connection(('127.0.0.1', %d))\n"
                  "f = os.open(%r, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
                  "os.dup2(f, c.fileno())\n"
                  "n = os.write(c.fileno(), b'GET /read/x HTTP/1.1\\r\\nHost: api.test')\n"
                  "print('wrote', n)\n") % (s.be.port, path)
        r = s.run([dt.PYTHON, "-c", script])
        check(r.returncode == 0, "script: " + r.stderr[-500:])
        with open(path, "rb") as f:
            eq(f.read(), b"GET /read/x HTTP/1.1\r\nHost: api.test", "file content")
        eq(s.be.requests(), [], "requests at the backend")


@case
def connect_marked_mediated():
    if not dt.bpf_available():
        dt.skip("kernel layer unavailable", bpf=True)
    with Stack() as s:
        r = s.run(s.be.curl(s.url("/read/m")))
        check(r.returncode == 0, "curl: " + r.stderr[-500:])
        recs = s.d.wait_closed(s.session(), kernel=True)
        conns = [x for x in recs if x["type"] == "connect" and x.get("family") == "inet"
                 and x.get("dport") == s.be.port]
        check(conns, "no kernel connect record")
        check(all(x.get("mediated") is True for x in conns), "not mediated: %r" % conns)


if __name__ == "__main__":
    dt.main()
