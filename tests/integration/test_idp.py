# SPDX-License-Identifier: MIT
"""Grants from a real OpenID Provider that no one here wrote: the npm package oidc-provider
(tests/idp/provider.mjs, installed by scripts/deps.sh), on loopback over HTTPS with a
throwaway CA. deputyd finds its keys by discovery through the issuer's ca_file; `deputy
login` runs the device flow while this test plays the user in the IdP's pages; the grant
opens a session whose requests reach the test backend with a token naming that user.

Also: key rotation picked up without restarting deputyd, the key cache serving a restart
while the IdP is down, the IdP's grants for another agent, expired or for another audience
refused, an RFC 8693 token exchange, and each failure of login (unreachable IdP, denied,
expired code, a subject token refused, metadata without an endpoint) one line on stderr and
no grant file.

Run with Debian's /usr/bin/python3. One PASS/FAIL/SKIP line per case."""
import base64
import http.cookiejar
import http.server
import json
import os
import re
import select
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

NPM = os.path.join(dt.SRC, "build", "npm", "node_modules", "oidc-provider", "lib", "index.js")
PROVIDER = os.path.join(dt.SRC, "tests", "idp", "provider.mjs")
AUD = "https://api.test"
SCOPE = "email:send"

_tmp = dt.TempDir(prefix="deputy-idp-test-")
CERTS = dt.make_certs(_tmp.path)


def private_jwk(kid):
    k = ec.generate_private_key(ec.SECP256R1())
    n = k.private_numbers()
    p = n.public_numbers

    def b64(i):
        return dt.b64url(i.to_bytes(32, "big"))
    return {"kty": "EC", "crv": "P-256", "x": b64(p.x), "y": b64(p.y),
            "d": b64(n.private_value), "kid": kid, "alg": "ES256", "use": "sig"}


class Provider:
    """The node process serving oidc-provider; set() changes its config through SIGHUP."""

    def __init__(self):
        self.conf_path = os.path.join(_tmp.path, "provider.json")
        self.conf = {"module": NPM, "cert": CERTS.cert, "key": CERTS.key,
                     "audience": dt.ISSUER, "jwks": {"keys": [private_jwk("key-1")]},
                     "clients": ["mailbot", "otherbot"], "scopes": ["email:send", "email:read"],
                     "ttl": 600, "device_ttl": 600}
        self.proc = None

    def _write(self):
        with open(self.conf_path, "w") as f:
            json.dump(self.conf, f)

    def _line(self, timeout=30):
        """The next line of provider.mjs's own (oidc-provider's notices are skipped)."""
        while True:
            line = self._any_line(timeout)
            if line.split()[:1] in (["listening"], ["reloaded"]):
                return line

    def _any_line(self, timeout):
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                dt.fail("the IdP said nothing within %d s: %s" % (timeout, self.stderr()))
            ch = os.read(self.proc.stdout.fileno(), 1)
            if not ch:
                dt.fail("the IdP exited: " + self.stderr())
            line += ch
        return line.decode().strip()

    def stderr(self):
        try:
            return open(self.conf_path + ".stderr", errors="replace").read()[-1500:]
        except OSError:
            return ""

    def start(self):
        self._write()
        err = open(self.conf_path + ".stderr", "ab")
        self.proc = dt.track(subprocess.Popen(["node", PROVIDER, self.conf_path],
                                              stdout=subprocess.PIPE, stderr=err,
                                              stdin=subprocess.DEVNULL))
        err.close()
        words = self._line().split()
        check(words[:1] == ["listening"], "the IdP said %r" % words)
        self.issuer = "https://127.0.0.1:%s" % words[1]
        return self

    def set(self, **conf):
        self.conf.update(conf)
        self._write()
        self.proc.send_signal(signal.SIGHUP)
        eq(self._line(), "reloaded", "the IdP's answer to SIGHUP")

    def stop(self):
        if self.proc:
            dt.stop_process(self.proc)
            self.proc = None


IDP = None


def idp():
    global IDP
    if IDP is None or IDP.proc is None:
        IDP = Provider().start()
    return IDP


class User:
    """The user at the IdP's pages: confirms the code, then signs in or refuses."""

    def __init__(self, uri):
        self.uri = uri
        ctx = ssl.create_default_context(cafile=CERTS.ca)
        self.op = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def _form(self, resp):
        return dict(re.findall(r'name="(\w+)" value="([^"]*)"', resp.read().decode()))

    def act(self, action):
        origin = self.uri.split("/device")[0]
        form = self._form(self.op.open(self.uri))            # the code, pre-filled
        form = self._form(self.op.open(origin + "/device",    # "is this your device?"
                                       urllib.parse.urlencode(form).encode()))
        r = self.op.open(origin + "/device", urllib.parse.urlencode(form).encode())
        check("/interaction/" in r.url, "no interaction after the code: " + r.url)
        self.op.open(r.url + "/" + action).read()


class Home:
    """A user's home: where `deputy login` stores grants."""

    def __init__(self):
        self.path = os.path.join(_tmp.path, "home-%d" % len(os.listdir(_tmp.path)))
        os.makedirs(self.path)

    def env(self, d=None):
        e = d.env() if d else dict(os.environ)
        e.pop("XDG_CONFIG_HOME", None)
        e["HOME"] = self.path
        return e

    def grant_path(self, agent="mailbot"):
        return os.path.join(self.path, ".config", "deputy", "grants", agent + ".jwt")

    def grant_files(self):
        d = os.path.join(self.path, ".config", "deputy", "grants")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []


def login(home, agent="mailbot", action="login?user=alice", issuer=None, extra=(),
          resources=(AUD,)):
    """deputy login; the user does action (None: nothing) once the code is shown. Returns the
    CompletedProcess-like (returncode, stderr)."""
    p = dt.track(subprocess.Popen(
        [dt.DEPUTY, "login", "--issuer", issuer or idp().issuer, "--agent", agent,
         "--scope", SCOPE, "--resource"] + list(resources) + ["--ca-file", CERTS.ca] +
        list(extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home.env()))
    shown = []
    while True:
        line = p.stderr.readline()
        shown.append(line)
        if not line or line.startswith("(or open "):
            break
    if line and action:
        User(line[len("(or open "):-2]).act(action)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        dt.fail("deputy login did not finish")
    return p.returncode, "".join(shown) + err


def claims(token):
    return json.loads(dt.b64url_decode(token.split(".")[1]))


def one_line_failure(rc, err, want):
    """A failed login: non-zero, its last line the one reason, naming want."""
    check(rc != 0, "login succeeded: " + err)
    lines = [l for l in err.strip().splitlines()
             if not l.startswith(("To sign in, open ", "(or open "))]
    check(len(lines) == 1 and lines[0].startswith("deputy: login: ") and want in lines[0],
          "reason: %r" % err)


class Stack:
    """deputyd trusting the IdP by discovery (through ca_file), and the test backend."""

    def __init__(self, tmp):
        self.d = dt.Deputyd(routes=[])
        self.be = dt.Backend(tmp, certs=CERTS, jwks=os.path.join(self.d.state, "jwks.json"),
                             audience=AUD)
        self.be.start()
        self.d.config["trusted_issuers"] = [{"issuer": idp().issuer, "discovery": True,
                                             "ca_file": CERTS.ca}]
        self.d.config["routes"] = [
            {"host": "api.test", "port": self.be.port, "method": "POST", "path": "/send*",
             "action": "delegate", "audience": AUD, "scope": SCOPE,
             # api.test resolves only in curl (--resolve): say where it is, for binding
             "addrs": ["127.0.0.1", "::1"]}]
        self.d.config["allow_cidrs"] = ["127.0.0.0/8", "::1/128"]
        self.d.write_config()
        self.d.start()
        self.started = time.monotonic()

    def run(self, home, agent="mailbot", grant=None):
        """deputy run (with the stored grant unless grant names a file) posting to the API."""
        cmd = [dt.DEPUTY, "run", "--agent", agent] + (["--grant", grant] if grant else [])
        cmd += ["--"] + self.be.curl("-d", "hi", self.be.url("api.test", "/send"))
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env=home.env(self.d))

    def verify(self, home, path, agent="mailbot"):
        return subprocess.run([dt.DEPUTY, "verify", "--grant", path, "--agent", agent,
                               "--config", self.d.config_path], capture_output=True,
                              text=True, timeout=60, env=home.env())

    def api_user(self, n):
        """sub of the token the API's n-th request carried."""
        reqs = self.be.wait_records("request", n + 1)
        check(len(reqs) > n, "the API got %d requests" % len(reqs))
        auth = dt.header(reqs[n], "Authorization")
        eq(len(auth), 1, "Authorization headers")
        return dt.decode_jwt(auth[0].split(" ", 1)[1])["sub"]

    def close(self):
        self.be.stop()


@case
def idp_grants_for_others_refused():
    with dt.TempDir() as tmp:
        s = Stack(tmp)
        try:
            home = Home()
            # for another agent: the IdP's client otherbot
            rc, err = login(home, agent="otherbot")
            eq(rc, 0, "login: " + err)
            r = s.run(home, agent="mailbot", grant=home.grant_path("otherbot"))
            check(r.returncode != 0 and 'agent "agent:mailbot" is not in the grant\'s may_act'
                  ' ("agent:otherbot")' in r.stderr, r.stderr)
            # for another audience
            idp().set(audience="https://other-deputy.test")
            rc, err = login(home)
            eq(rc, 0, "login: " + err)
            eq(claims(open(home.grant_path()).read())["aud"], "https://other-deputy.test",
               "aud")
            r = s.run(home)
            check(r.returncode != 0 and "aud" in r.stderr and dt.ISSUER in r.stderr, r.stderr)
            # expired
            idp().set(audience=dt.ISSUER, ttl=1)
            rc, err = login(home)
            eq(rc, 0, "login: " + err)
            time.sleep(2.5)
            r = s.run(home)
            check(r.returncode != 0 and "grant expired" in r.stderr, r.stderr)
            v = s.verify(home, home.grant_path())
            check(v.returncode == 1 and "grant refused: grant expired" in v.stderr, v.stderr)
            eq(s.be.requests(), [], "requests that reached the API")
        finally:
            idp().set(audience=dt.ISSUER, ttl=600)
            s.close()


@case
def login_failures_leave_no_grant():
    home = Home()
    rc, err = login(home, issuer="https://127.0.0.1:1")
    one_line_failure(rc, err, "no discovery document")
    rc, err = login(home, action="deny")
    one_line_failure(rc, err, "the sign-in was denied")
    idp().set(device_ttl=6)
    try:
        rc, err = login(home, action=None)
    finally:
        idp().set(device_ttl=600)
    one_line_failure(rc, err, "the device code expired before the sign-in was completed")
    # a subject token the IdP never issued: its refusal, in one line
    tok = os.path.join(home.path, "subject.jwt")
    with open(tok, "w") as f:
        f.write("x.y.z\n")
    rc, err = login(home, action=None, extra=["--subject-token", tok])
    one_line_failure(rc, err, "token exchange: invalid_grant")
    eq(home.grant_files(), [], "files left in the grant directory")


class MetadataHandler(http.server.BaseHTTPRequestHandler):
    doc = {}
    path_served = "/.well-known/openid-configuration"

    def do_GET(self):
        body = json.dumps(self.doc).encode()
        ok = self.path == self.path_served
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body) if ok else 0))
        self.end_headers()
        if ok:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@case
def metadata_without_endpoints():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MetadataHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERTS.cert, CERTS.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        iss = "https://127.0.0.1:%d" % srv.server_address[1]
        MetadataHandler.doc = {"issuer": iss, "token_endpoint": iss + "/token"}
        home = Home()
        rc, err = login(home, issuer=iss)
        one_line_failure(rc, err, "discovery document has no device_authorization_endpoint")
        MetadataHandler.doc = {"issuer": "https://someone-else.test"}
        rc, err = login(home, issuer=iss)
        one_line_failure(rc, err, 'discovery document names issuer "https://someone-else.test"')
        # RFC 8414 §3.1 metadata, for an issuer with a path, when there is no OIDC document
        MetadataHandler.path_served = "/.well-known/oauth-authorization-server/tenant"
        MetadataHandler.doc = {"issuer": iss + "/tenant", "token_endpoint": iss + "/token"}
        rc, err = login(home, issuer=iss + "/tenant")
        one_line_failure(rc, err, "discovery document has no device_authorization_endpoint")
        MetadataHandler.path_served = "/.well-known/openid-configuration"
        eq(home.grant_files(), [], "files left in the grant directory")
        # deputyd's side: no jwks_uri, so no keys, said once and clearly
        MetadataHandler.doc = {"issuer": iss}
        d = dt.Deputyd(issuer=dt.Issuer(iss=iss))
        d.config["trusted_issuers"] = [{"issuer": iss, "discovery": True, "ca_file": CERTS.ca}]
        d.write_config()
        path = d.grant_file(d.idp.grant())
        r = subprocess.run([dt.DEPUTY, "verify", "--grant", path, "--config", d.config_path],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 1 and "discovery document has no jwks_uri" in r.stderr, r.stderr)
        check(r.stderr.strip().splitlines()[-1].startswith("deputy: verify: grant refused: "
                                                           "unknown kid"), r.stderr)
    finally:
        srv.shutdown()
        srv.server_close()


@case
def device_login_run_rotation_and_cache():
    with dt.TempDir() as tmp:
        s = Stack(tmp)
        try:
            home = Home()
            rc, err = login(home, resources=(AUD, "https://cal.test"))
            eq(rc, 0, "login: " + err)
            check("To sign in, open %s/device and enter the code " % idp().issuer in err, err)
            path = home.grant_path()
            eq(os.stat(path).st_mode & 0o777, 0o600, "grant file mode")
            c = claims(open(path).read())
            eq((c["sub"], c["aud"], c["may_act"], c["resource"], c["scope"]),
               ("alice", dt.ISSUER, {"sub": "agent:mailbot"}, [AUD, "https://cal.test"], SCOPE),
               "grant claims")
            v = s.verify(home, path)
            check(v.returncode == 0 and "valid: user alice, agent:mailbot" in v.stdout,
                  v.stdout + v.stderr)
            r = s.run(home)
            eq(r.returncode, 0, "deputy run: " + r.stderr[-800:])
            eq(s.api_user(0), "alice", "the user the API was told of")
            # RFC 8693: alice's token exchanged for a grant to another agent
            rc, err = login(home, agent="otherbot", action=None,
                            extra=["--subject-token", path])
            eq(rc, 0, "token exchange: " + err)
            c = claims(open(home.grant_path("otherbot")).read())
            eq((c["sub"], c["may_act"], c["resource"]),
               ("alice", {"sub": "agent:otherbot"}, [AUD]), "exchanged grant")
            v = s.verify(home, home.grant_path("otherbot"), agent="otherbot")
            check(v.returncode == 0 and "valid: user alice, agent:otherbot" in v.stdout,
                  v.stdout + v.stderr)
            # the IdP rotates to a key deputyd has never seen; deputyd keeps running
            pid = s.d.proc.pid
            idp().set(jwks={"keys": [private_jwk("key-2")]})
            rc, err = login(home)
            eq(rc, 0, "login: " + err)
            eq(json.loads(dt.b64url_decode(open(path).read().split(".")[0]))["kid"], "key-2",
               "kid after rotation")
            # deputyd refetches an unknown kid at most every 30 s since its last fetch
            time.sleep(max(0, s.started + 31 - time.monotonic()))
            r = s.run(home)
            eq(r.returncode, 0, "deputy run after rotation: " + r.stderr[-800:])
            eq(s.api_user(1), "alice", "the user after rotation")
            check(s.d.proc.poll() is None and s.d.proc.pid == pid, "deputyd restarted")
            # the IdP goes down, deputyd restarts: the cached keys still verify the grant
            IDP.stop()
            s.d.stop()
            s.d.start()
            r = s.run(home)
            eq(r.returncode, 0, "deputy run with the IdP down: " + r.stderr[-800:])
            eq(s.api_user(2), "alice", "the user with the IdP down")
            check("using the 1 cached keys" in s.d.log_text(), s.d.log_text()[-1500:])
        finally:
            s.close()


if __name__ == "__main__":
    if not os.path.isfile(NPM) or not shutil.which("node"):
        print("FAIL: setup: oidc-provider is not installed in build/npm (make deps)")
        sys.exit(1)
    try:
        dt.main()
    finally:
        if IDP:
            IDP.stop()
