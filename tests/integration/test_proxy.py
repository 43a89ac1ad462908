# SPDX-License-Identifier: MIT
"""deputy's proxy with real agents that the shim cannot mediate: Node (fetch and
https.request: OpenSSL linked in), Bun (BoringSSL), Go (crypto/tls), wget (GnuTLS), Python
started with `env -u LD_PRELOAD`, and a static busybox wget to a plain-HTTP route. Each runs
under `deputy run` as an unprivileged user; the kernel sends its connections to the proxy.
For each: the API gets a valid deputy token for the routed request instead of the agent's
own key, an out-of-scope request gets deputy's 403 and never reaches the API, and the log
says `mediator: "proxy"`. Also: a client that does not trust the session CA fails and the
API sees nothing; getpeername() in the agent is the original address; the proxy runs
without root and capabilities; killed, it is restarted (in-flight requests fail, new ones
work); an SNI that is not the route host, or a destination that is not its address, is
refused; lower-case and unknown methods are refused. (Session-bound tokens in the proxy:
test_proxy_table.py, on this file's world.)

Runs in a private mount namespace whose /etc/hosts names the test hosts (deputyd resolves
route hosts itself, as for a real API). Needs root and BPF (SKIP otherwise, FAIL under
DEPUTY_REQUIRE_BPF=1); a missing runtime fails under DEPUTY_REQUIRE_BPF=1 too."""
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

IN_NAMESPACE = dt.private_mount_namespace("DEPUTY_PROXY_TEST_NS")

NOBODY = dt.unprivileged_user()
BUN_BUILT = os.path.join(dt.SRC, "build", "npm", "node_modules", "@oven", "bun-linux-x64", "bin",
                         "bun")
GO_BUILT = os.path.join(dt.BUILD, "tests", "progs", "go-httpget")
SERVICE_KEY = "Bearer service-account-key"

# Node: fetch, or https.request when argv[1] is "request"; prints STATUS and the body.
NODE_CLIENT = r'''
const [how, method, url] = process.argv.slice(-3);
const headers = {authorization: "Bearer service-account-key"};
function done(status, body) { console.log("STATUS " + status + "\n" + body); }
if (how === "fetch") {
  fetch(url, {method, headers}).then(r => r.text().then(t => done(r.status, t)))
    .catch(e => { console.log("ERROR " + (e.cause || e)); process.exit(3); });
} else {
  const req = require("https").request(url, {method, headers}, r => {
    let b = ""; r.on("data", d => b += d); r.on("end", () => done(r.statusCode, b));
  });
  req.on("error", e => { console.log("ERROR " + e); process.exit(3); });
  req.end();
}
'''

PY_CLIENT = r'''
import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url, method=method,
                             headers={"Authorization": "Bearer service-account-key"})
try:
    r = urllib.request.urlopen(req, timeout=30)
    print("STATUS %d\n%s" % (r.status, r.read().decode()))
except urllib.error.HTTPError as e:
    print("STATUS %d\n%s" % (e.code, e.read().decode()))
except Exception as e:
    print("ERROR %r" % e)
    sys.exit(3)
'''

# getpeername() of a connection the kernel redirected: the address the agent asked for.
PEER_CLIENT = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print("PEER %s %d" % s.getpeername()[:2])
'''

# One request over TLS with a chosen SNI and a raw request line, no shim.
RAW_TLS_CLIENT = r'''
import socket, ssl, sys
addr, port, sni, cafile, line = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
try:
    s = ctx.wrap_socket(socket.create_connection((addr, port), timeout=30), server_hostname=sni)
    s.sendall(line.encode() + b"\r\nHost: " + sni.encode() + b"\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    print("STATUS %s\n%s" % (data.split(b" ")[1].decode(), data.split(b"\r\n\r\n", 1)[1].decode()))
except Exception as e:
    print("ERROR %r" % e)
    sys.exit(3)
'''


def require(path_or_cmd, what):
    if not (os.access(path_or_cmd, os.X_OK) or shutil.which(path_or_cmd)):
        dt.skip("%s not installed (scripts/deps.sh installs it)" % what, bpf=True)


class World:
    """What every case shares: the private /etc/hosts, the test CA, a TLS and a plain API."""
    inst = None

    def __init__(self):
        self.dir = dt.reachable_dir("deputy-proxy-test.")
        hosts = os.path.join(self.dir, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n127.0.0.1 api.test\n127.0.0.2 other.test\n")
        os.chmod(hosts, 0o644)
        subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
        self.certs = dt.make_certs(self.dir)
        os.chmod(self.certs.dir, 0o755)
        self.tls = dt.Backend(self.dir, certs=self.certs, name="tls").start()
        self.plain = dt.Backend(self.dir, name="plain").start()

    @classmethod
    def get(cls):
        if not dt.bpf_available():
            dt.skip("needs root and BPF (BTF, cgroup2) for the kernel layer", bpf=True)
        if not IN_NAMESPACE:
            dt.skip("needs a mount namespace (unshare) for a private /etc/hosts", bpf=True)
        if not cls.inst:
            cls.inst = World()
        return cls.inst

    def routes(self):
        tp, pp = self.tls.port, self.plain.port
        return [
            {"host": "api.test", "port": tp, "method": "GET", "path": "/read*",
             "action": "delegate", "audience": "https://api.test", "scope": "email:read"},
            {"host": "api.test", "port": tp, "method": "POST", "path": "/send*",
             "action": "delegate", "audience": "https://api.test", "scope": "email:send"},
            {"host": "api.test", "port": pp, "method": "GET", "path": "/read*",
             "action": "delegate", "audience": "https://api.test", "scope": "email:read"},
            {"host": "other.test", "port": tp, "action": "passthrough"},
        ]

    def deputyd(self, **config):
        d = dt.Deputyd(routes=self.routes(), proxy_listen="127.0.0.1:%d" % dt.free_port(),
                       upstream_ca_file=self.certs.ca, **config)
        return d.start()


def proxy_pid(d, nth=1, timeout=20):
    """The pid of the nth proxy deputyd started (from its log)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = re.findall(r"proxy started \(pid (\d+)", d.log_text())
        if len(pids) >= nth:
            return int(pids[nth - 1])
        time.sleep(0.05)
    raise AssertionError("deputyd did not start the proxy: " + d.log_text()[-1500:])


def agent(d, cmd, grant=None, env_fn=None, timeout=120):
    """Runs cmd in a session as nobody. The agent's environment may be changed by env_fn
    (a shell snippet run before cmd, inside the session, e.g. to unset variables)."""
    grant = grant or d.idp.grant(scope="email:read", resource=["https://api.test"])
    if env_fn:
        cmd = ["sh", "-c", env_fn + ' exec "$@"', "sh"] + cmd
    r = d.run(grant, cmd, user=NOBODY, timeout=timeout)
    return r


def session_of(d):
    ss = d.sessions()
    check(ss, "no session listed")
    return sorted(ss, key=lambda s: s.get("opened", ""))[-1]["session"]


def all_records(d):
    """Every record of every session of d, each session closed first."""
    recs = []
    for s in d.sessions():
        recs += d.wait_closed(s["session"], kernel=True)
    return recs


def answer(out):
    """(status, body) from a client's "STATUS n\\nbody" output."""
    m = re.search(r"^STATUS (\d+)\n(.*)", out, re.S | re.M)
    check(m, "client printed no status: %r" % out[-500:])
    return int(m.group(1)), m.group(2)


def verify_token(d, token, scope):
    jwks = os.path.join(d.state, "jwks.json")
    r = subprocess.run([dt.DEPUTY, "verify", "--jwks", jwks, "--audience", "https://api.test",
                        "--scope", scope, "--issuer", dt.ISSUER, token], capture_output=True,
                       text=True, timeout=30)
    check(r.returncode == 0, "the API's token does not verify: " + r.stderr)
    return r


def check_mediated(d, w, api, run, path, scope="email:read"):
    """A routed request and an out-of-scope one through the proxy, checked at the API and in
    the session's log."""
    before = len(api.requests())
    r = run("GET", path)
    if "STATUS 200" not in r.stdout:
        print("deputyd's log:\n" + d.log_text()[-3000:])
    status, body = answer(r.stdout)
    eq(status, 200, "routed request (stderr %s)" % r.stderr[-300:])
    reqs = api.wait_records("request", before + 1)
    check(len(reqs) == before + 1, "the API got %d requests" % (len(reqs) - before))
    auth = dt.header(reqs[-1], "Authorization")
    eq(len(auth), 1, "Authorization headers at the API")
    check(auth[0] != SERVICE_KEY and auth[0].startswith("Bearer "),
          "the API got the agent's own key")
    verify_token(d, auth[0][7:], scope)
    r = run("POST", "/send/1")
    status, body = answer(r.stdout)
    eq(status, 403, "out-of-scope request")
    eq(json.loads(body)["error"], "deputy_denied")
    time.sleep(0.2)
    eq(len(api.requests()), before + 1, "the refused request reached the API")
    recs = all_records(d)
    tokens = [x for x in recs if x["type"] == "token"]
    check(tokens and all(x.get("mediator") == "proxy" for x in tokens),
          "token records without mediator proxy: %r" % tokens)
    denies = [x for x in recs if x["type"] == "deny"]
    check(any(x.get("mediator") == "proxy" and "email:send" in x["reason"] for x in denies),
          "no proxy deny record for the out-of-scope request: %r" % denies)
    resp = [x for x in recs if x["type"] == "response"]
    check(any(x.get("mediator") == "proxy" and x["status"] == 200 for x in resp),
          "no response record from the proxy: %r" % resp)
    conns = [x for x in recs if x["type"] == "connect" and x.get("dport") == api.port]
    check(conns and all(x.get("mediated") is True and x.get("mediator") == "proxy"
                        for x in conns), "connect records not mediated by the proxy: %r" % conns)
    return recs


def https_url(w, path, host="api.test"):
    return "https://%s:%d%s" % (host, w.tls.port, path)


# ---- the runtimes -------------------------------------------------------------------------------

def node_case(how):
    w = World.get()
    require("node", "node")
    d = w.deputyd()
    check_mediated(d, w, w.tls, lambda m, p: agent(
        d, ["node", "-e", NODE_CLIENT, how, m, https_url(w, p)]), "/read/1")


@case
def node_fetch_is_mediated_by_the_proxy():
    node_case("fetch")


@case
def node_https_request_is_mediated_by_the_proxy():
    node_case("request")


def reachable(path):
    """A copy of a built program where the agent's user can run it (the checkout may be
    private to root)."""
    dst = os.path.join(dt.AGENT_DIR, "progs", os.path.basename(path))
    if not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        shutil.copy2(path, dst)
        os.chmod(dst, 0o755)
    return dst


@case
def bun_fetch_is_mediated_by_the_proxy():
    w = World.get()
    require(BUN_BUILT, "bun (npm @oven/bun-linux-x64)")
    d = w.deputyd()
    bun = reachable(BUN_BUILT)
    check_mediated(d, w, w.tls, lambda m, p: agent(
        d, [bun, "-e", NODE_CLIENT, "fetch", m, https_url(w, p)]), "/read/1")


def go_client():
    require("go", "go (golang-go)")
    if not os.access(GO_BUILT, os.X_OK):
        src = os.path.join(dt.SRC, "tests", "progs", "go")
        tmp = tempfile.mkdtemp(prefix="deputy-go.")
        shutil.copy(os.path.join(src, "httpget.go"), tmp)
        with open(os.path.join(tmp, "go.mod"), "w") as f:
            f.write("module httpget\n\ngo 1.19\n")
        env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off", GO111MODULE="on",
                   GOCACHE=os.path.join(dt.BUILD, "go-cache"), CGO_ENABLED="0")
        os.makedirs(os.path.dirname(GO_BUILT), exist_ok=True)
        r = subprocess.run(["go", "build", "-o", GO_BUILT, "."], cwd=tmp, env=env,
                           capture_output=True, text=True, timeout=300)
        shutil.rmtree(tmp, ignore_errors=True)
        check(r.returncode == 0, "go build: " + r.stderr[-500:])
    return reachable(GO_BUILT)


@case
def go_net_http_is_mediated_by_the_proxy():
    w = World.get()
    go = go_client()
    d = w.deputyd()
    check_mediated(d, w, w.tls, lambda m, p: agent(d, [go, m, https_url(w, p)]), "/read/1")


@case
def gnutls_wget_is_mediated_by_the_proxy():
    w = World.get()
    require("wget", "wget (GnuTLS)")

    def run(m, p):
        # wget prints the body on stdout; the status from --server-response on stderr.
        r = agent(d, ["sh", "-c", 'wget -q -S --content-on-error -O- --method="$1" '
                      '--ca-certificate="$SSL_CERT_FILE" --header="Authorization: '
                      'Bearer service-account-key" "$2" 2>&1 >"$3"; cat "$3"', "sh", m,
                      https_url(w, p), "/tmp/deputy-wget.%d" % os.getpid()])
        st = re.findall(r"HTTP/1\.1 (\d+)", r.stdout)
        body = r.stdout.split("\n")[-1] if r.stdout else ""
        r.stdout = "STATUS %s\n%s" % (st[-1] if st else "0", body)
        return r
    d = w.deputyd()
    check_mediated(d, w, w.tls, run, "/read/1")


@case
def python_without_the_shim_is_mediated_by_the_proxy():
    w = World.get()
    d = w.deputyd()
    check_mediated(d, w, w.tls, lambda m, p: agent(
        d, ["env", "-u", "LD_PRELOAD", dt.PYTHON, "-c", PY_CLIENT, m, https_url(w, p)]),
        "/read/1")


@case
def static_busybox_wget_to_a_plain_http_route():
    w = World.get()
    require("/bin/busybox", "busybox-static")
    d = w.deputyd()
    url = "http://api.test:%d" % w.plain.port

    def run(m, p):
        if m != "GET":  # busybox wget only GETs: the out-of-scope request is a GET elsewhere
            p = "/admin"
        r = agent(d, ["/bin/busybox", "wget", "-q", "-O-", "--header",
                      "Authorization: " + SERVICE_KEY, url + p])
        if r.returncode == 0:
            r.stdout = "STATUS 200\n" + r.stdout
        else:
            m = re.search(r"HTTP/1\.1 (\d+)", r.stderr)
            r.stdout = "STATUS %s\n{\"error\":\"deputy_denied\"}" % (m.group(1) if m else "0")
        return r
    before = len(w.plain.requests())
    r = run("GET", "/read/1")
    eq(answer(r.stdout)[0], 200, "routed request: " + r.stderr[-300:])
    reqs = w.plain.wait_records("request", before + 1)
    eq(len(reqs), before + 1, "requests at the API")
    auth = dt.header(reqs[-1], "Authorization")
    eq(len(auth), 1)
    verify_token(d, auth[0][7:], "email:read")
    r = run("GET", "/admin")
    eq(answer(r.stdout)[0], 403, "unrouted request")
    time.sleep(0.2)
    eq(len(w.plain.requests()), before + 1, "the refused request reached the API")
    recs = all_records(d)
    check(any(x["type"] == "token" and x.get("mediator") == "proxy" for x in recs),
          "no token record with mediator proxy")


# ---- trust, addresses, the proxy process -------------------------------------------------------

@case
def a_client_that_does_not_trust_the_session_ca_fails():
    w = World.get()
    require("node", "node")
    d = w.deputyd()
    before = len(w.tls.records())
    r = agent(d, ["node", "-e", NODE_CLIENT, "fetch", "GET", https_url(w, "/read/1")],
              env_fn="unset NODE_EXTRA_CA_CERTS SSL_CERT_FILE;")
    check("STATUS" not in r.stdout and r.returncode != 0,
          "a client without the session CA got an answer: %r" % r.stdout)
    time.sleep(0.2)
    eq(len(w.tls.records()), before, "the API saw something")


@case
def getpeername_in_the_agent_is_the_original_address():
    w = World.get()
    d = w.deputyd()
    r = agent(d, [dt.PYTHON, "-c", PEER_CLIENT, "api.test", str(w.tls.port)])
    eq(r.stdout.strip(), "PEER 127.0.0.1 %d" % w.tls.port, "getpeername: " + r.stderr[-300:])
    recs = all_records(d)
    check(any(x["type"] == "connect" and x.get("mediator") == "proxy" for x in recs),
          "the connection did not go through the proxy")


@case
def the_proxy_runs_unprivileged():
    w = World.get()
    d = w.deputyd()
    pid = proxy_pid(d)
    # deputyd logs the pid right after fork: the child drops root just before exec.
    deadline = time.time() + 10
    while True:
        with open("/proc/%d/status" % pid) as f:
            status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        if status["Name"].strip() == "deputy-proxy" or time.time() > deadline:
            break
        time.sleep(0.05)
    uids = status["Uid"].split()
    check(all(u != "0" for u in uids), "proxy uids %r" % uids)
    for k in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        eq(int(status[k].strip(), 16), 0, k)
    eq(status["NoNewPrivs"].strip(), "1", "NoNewPrivs")
    import pwd
    eq(pwd.getpwuid(int(uids[0])).pw_name, "deputy-proxy", "proxy user")


@case
def a_killed_proxy_is_restarted_and_in_flight_requests_fail():
    w = World.get()
    d = w.deputyd()
    pid = proxy_pid(d)
    grant = d.idp.grant(scope="email:read", resource=["https://api.test"])
    slow = subprocess.Popen(
        [dt.DEPUTY, "run", "--grant", d.grant_file(grant), "--agent", "mailbot", "--", dt.PYTHON,
         "-c", PY_CLIENT, "GET", https_url(w, "/read/slow?delay_ms=4000")],
        env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=dt.demote(NOBODY))
    deadline = time.time() + 20
    while time.time() < deadline and not any(
            r["target"].startswith("/read/slow") for r in w.tls.requests()):
        time.sleep(0.05)
    os.kill(pid, 9)
    out, err = slow.communicate(timeout=60)
    check("STATUS 200" not in out, "the in-flight request completed: %r" % out)
    new = proxy_pid(d, 2)
    check(new != pid, "no new proxy")
    time.sleep(0.3)
    r = agent(d, ["env", "-u", "LD_PRELOAD", dt.PYTHON, "-c", PY_CLIENT, "GET",
                  https_url(w, "/read/2")])
    eq(answer(r.stdout)[0], 200, "a new request after the restart: " + r.stderr[-300:])


def raw_tls(d, addr, port, sni, line):
    """RAW_TLS_CLIENT in a session without the shim, trusting the session's bundle."""
    return agent(d, ["env", "-u", "LD_PRELOAD", "sh", "-c",
                     'exec "$0" -c "$1" "$2" "$3" "$4" "$SSL_CERT_FILE" "$5"', dt.PYTHON,
                     RAW_TLS_CLIENT, addr, str(port), sni, line])


@case
def sni_of_another_host_or_a_foreign_address_is_refused():
    w = World.get()
    d = w.deputyd()
    before = len(w.tls.requests())
    # other.test is a route host, but not at api.test's address, which the agent dialled;
    # api.test is not at other.test's; nope.test is no route host at all.
    for addr, sni in (("127.0.0.1", "other.test"), ("127.0.0.2", "api.test"),
                      ("127.0.0.1", "nope.test")):
        r = raw_tls(d, addr, w.tls.port, sni, "GET /read/1 HTTP/1.1")
        check("STATUS" not in r.stdout, "SNI %s at %s: %r" % (sni, addr, r.stdout))
    r = raw_tls(d, "127.0.0.1", w.tls.port, "api.test", "GET /read/1 HTTP/1.1")
    eq(answer(r.stdout)[0], 200, "the route host at its address: " + r.stdout[-300:])
    time.sleep(0.2)
    eq(len(w.tls.requests()), before + 1, "requests at the API")
    recs = all_records(d)
    eq(len([x for x in recs if x["type"] == "deny" and "TLS server name" in x["reason"]]), 3,
       "deny records for the server names")


@case
def lower_case_and_unknown_methods_are_refused():
    w = World.get()
    d = w.deputyd()
    before = len(w.tls.requests())
    for line in ("get /read/1 HTTP/1.1", "FOO /read/1 HTTP/1.1"):
        r = raw_tls(d, "127.0.0.1", w.tls.port, "api.test", line)
        eq(answer(r.stdout)[0], 403, line + ": " + r.stdout[-300:] + r.stderr[-300:])
    time.sleep(0.2)
    eq(len(w.tls.requests()), before, "a refused method reached the API")


@case
def a_server_name_is_checked_without_a_lookup_on_deputyds_loop():
    """mail.test is in no hosts file and deputyd's nameserver never answers; its route says
    where it is ("addrs"). The proxy's server-name check must use what deputyd knows, not
    ask DNS on its event loop per handshake (which held every session up, then refused)."""
    w = World.get()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read
    for _ in range(20):
        addr = "127.53.%d.%d" % (random.randint(0, 255), random.randint(1, 254))
        try:
            silent.bind((addr, 53))
            break
        except OSError:
            continue
    try:
        routes = w.routes() + [
            {"host": "mail.test", "port": w.tls.port, "method": "GET", "path": "/read*",
             "action": "delegate", "audience": "https://api.test", "scope": "email:read",
             "addrs": ["127.0.0.1/32"]}]
        d = dt.Deputyd(routes=routes, proxy_listen="127.0.0.1:%d" % dt.free_port(),
                       upstream_ca_file=w.certs.ca)
        resolv = os.path.join(d.dir, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:8 attempts:1\n" % addr)
        os.chmod(resolv, 0o644)
        d.wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                  'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', "sh", resolv]
        d.start()  # after its one lookup at start (8 s), which it waits for
        r = raw_tls(d, "127.0.0.1", w.tls.port, "mail.test", "GET /read/1 HTTP/1.1")
        eq(answer(r.stdout)[0], 200, "mail.test at its addrs: " + r.stdout[-300:] +
           d.log_text()[-1500:])
    finally:
        silent.close()


def _cleanup():
    if World.inst:
        World.inst.tls.stop()
        World.inst.plain.stop()
        subprocess.run(["umount", "/etc/hosts"])
        shutil.rmtree(World.inst.dir, ignore_errors=True)


if __name__ == "__main__":
    try:
        dt.main()
    finally:
        _cleanup()

