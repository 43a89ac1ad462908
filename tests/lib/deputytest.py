# SPDX-License-Identifier: MIT
"""deputy's Python test library: every Python test (tests/integration, tests/bench) uses it.
Run tests with Debian's /usr/bin/python3 (python3-jwt, python3-cryptography).

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
    import deputytest as dt
    from deputytest import case, check, eq

    @case
    def tokens_are_minted():             # one PASS/FAIL/SKIP line, named after the function
        d = dt.Deputyd().start()         # a real deputyd on a temporary config
        r, replies = dt.agent_requests(d, d.idp.grant(), [...])
        eq(r.returncode, 0, r.stderr)

    if __name__ == "__main__":
        dt.main()                        # runs the cases (or those named on the command line)

The API, by part:
- cases: `@case` and `main()`; or `run_case(name, fn, *args)` then `finish()` for cases that
  share fixtures. `check(cond, what)`, `eq(got, want, what)`, `check_eq(got, want, what)` and
  `fail(what)` raise `Failure`; `skip(why, bpf=False)` skips. Never use `assert` for a test
  check: `python3 -O` drops it (tests/run.sh refuses a test file that has one).
- paths: `SRC`, `BUILD`, `DEPUTYD`, `PYTHON`; `DEPUTY`, `SHIM`, `prog(name)` (the built test
  clients) and `LIB` (this folder, for scripts run inside sessions) point into `AGENT_DIR`,
  a copy every user can reach: the checkout itself may be in a 0700 home.
- processes and files: `run(cmd)`, `track(p)`, `stop_process(p)`, `TempDir`,
  `wait_until(cond, timeout)`, `demote((uid, gid))`, `is_root()`, `bpf_available()`,
  `unprivileged_user()`, `cgroup2_root()`. Whatever is started or made here is stopped and
  removed when the test ends, also by an exception or SIGTERM/SIGINT (run.sh's timeout).
- deputyd: `Issuer` (a test IdP signing grants), `Deputyd` (start, cli, run, records,
  wait_closed, ...), the wire protocol (`Conn`, `frame`, `MSG`, `TAG`, `VERDICT`),
  `agent_requests()`, `decode_jwt()`, `b64url()`, `b64url_decode()`.
- the HTTPS side: `make_certs(dir)` (a test CA and server certificate; `shared_certs()`
  makes them once per program), `Backend` (the test backend, tests/backend.c), `Stack`
  (deputyd, a backend its routes name and a grant: subclassed by the agent tests),
  `route_conn_fields()` (a DECIDE's connection, as the shim sends it), `TestIssuer` (tokens
  shaped like deputy's, without deputyd),
  `parse_client_output()`, `pattern()`, `sha256()`, `header()`, `body_bytes()`,
  `urllib_opener()`.
"""
import atexit
import base64
import hashlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SRC = os.environ.get("DEPUTY_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD") or os.path.join(SRC, "build")
DEPUTYD = os.path.join(BUILD, "deputyd")
BACKEND_BIN = os.path.join(BUILD, "tests", "backend")
CERTS_SH = os.path.join(SRC, "tests", "lib", "certs.sh")
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")
IDP = "https://idp.test"
ISSUER = "https://deputy.test"
SERVICE_ACCOUNT = "Bearer service-account-secret-0000"  # what the C clients send by default

# ---- cleanup ------------------------------------------------------------------------------

_procs = []  # live subprocess.Popen objects we must stop
_dirs = []  # temp dirs we must remove


def _cleanup():
    for p in list(_procs):
        stop_process(p)
    for d in list(_dirs):
        shutil.rmtree(d, ignore_errors=True)
        _dirs.remove(d)


def _on_signal(signum, frame):
    try:
        Deputyd.stop_all()
    except Exception:  # noqa: BLE001 - leaving anyway
        pass
    _cleanup()
    sys.stdout.flush()
    os._exit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def track(p):
    """Registers a Popen for cleanup; returns it."""
    _procs.append(p)
    return p


def stop_process(p, timeout=10):
    """SIGTERM, then SIGKILL after timeout; returns the exit status. Only ever signals the
    process we started (by its pid)."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass
    for f in (p.stdout, p.stderr, p.stdin):
        if f:
            f.close()
    if p in _procs:
        _procs.remove(p)
    return p.returncode


def reachable_dir(prefix):
    """A new directory (mode 0755) every user can reach, removed when the test ends: under
    /tmp rather than $TMPDIR, which may be private to root like the checkout may be."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None)
    os.chmod(d, 0o755)
    _dirs.append(d)
    return d


class TempDir:
    """A temp dir (reachable by every user) removed on exit, and at process exit whatever
    happens."""

    def __init__(self, prefix="deputy-test-"):
        self.path = reachable_dir(prefix)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        if self.path in _dirs:
            _dirs.remove(self.path)


# ---- what agents run: a copy every user can reach -------------------------------------------
#
# Sessions run as an unprivileged user execute `deputy`, the shim, the test clients and the
# scripts of this folder. The checkout may live where only root can go (root's home is
# 0700), so, as `make demo` does, they run from a copy in a directory of their own. Scripts
# run inside a session import this library again: DEPUTY_TEST_AGENT_DIR (in the environment
# every child inherits) makes them use the copy already made.

def _make_agent_dir():
    d = os.environ.get("DEPUTY_TEST_AGENT_DIR")
    if d and os.path.isdir(d):
        return d
    d = reachable_dir("deputy-agent.")
    copies = [(os.path.join(BUILD, n), "bin") for n in ("deputy", "libdeputy.so")]
    progs = os.path.join(BUILD, "tests", "progs")
    if os.path.isdir(progs):
        copies += [(os.path.join(progs, n), "progs") for n in sorted(os.listdir(progs))
                   if not n.endswith((".d", ".o"))]
    here = os.path.dirname(os.path.abspath(__file__))
    copies += [(os.path.join(here, n), "lib") for n in sorted(os.listdir(here))
               if n.endswith((".py", ".sh"))]
    for src, sub in copies:
        if not os.path.isfile(src):
            continue  # not built: the tests that need it say so
        os.makedirs(os.path.join(d, sub), mode=0o755, exist_ok=True)
        dst = os.path.join(d, sub, os.path.basename(src))
        shutil.copy2(src, dst)
        os.chmod(dst, 0o755 if os.access(src, os.X_OK) else 0o644)
    os.environ["DEPUTY_TEST_AGENT_DIR"] = d
    return d


AGENT_DIR = _make_agent_dir()


def _in_agent_dir(sub, name, fallback):
    p = os.path.join(AGENT_DIR, sub, name)
    return p if os.path.exists(p) else fallback


DEPUTY = _in_agent_dir("bin", "deputy", os.path.join(BUILD, "deputy"))
SHIM = _in_agent_dir("bin", "libdeputy.so", os.path.join(BUILD, "libdeputy.so"))
LIB = os.path.join(AGENT_DIR, "lib")


def prog(name):
    """Path of a built test client, e.g. prog('tls_onebyte'), where any user can run it."""
    return _in_agent_dir("progs", name, os.path.join(BUILD, "tests", "progs", name))


# ---- test cases -----------------------------------------------------------------------------

_cases = []
_failed = 0


class Skip(Exception):
    pass


class Failure(Exception):
    """A test check that did not hold."""


def case(fn):
    """Registers fn as a case of main(); the case's name is the function's."""
    _cases.append(fn)
    return fn


def skip(why, bpf=False):
    """Skip this case; a BPF case under DEPUTY_REQUIRE_BPF=1 fails instead."""
    if bpf and os.environ.get("DEPUTY_REQUIRE_BPF") == "1":
        raise Failure("DEPUTY_REQUIRE_BPF=1 but: " + why)
    raise Skip(why)


def fail(what):
    raise Failure(what)


def check(cond, what="check failed"):
    if not cond:
        raise Failure(what)


def eq(a, b, what=""):
    if a != b:
        raise Failure("%s%r != %r" % (what + ": " if what else "", a, b))


def check_eq(got, want, what):
    if got != want:
        raise Failure("%s: got %r, want %r" % (what, got, want))


def _one_line(s, n=600):
    return s.strip().replace("\n", " | ")[:n]


def run_case(name, fn, *args):
    """Runs one case now and prints its PASS/FAIL/SKIP line; returns whether it passed.
    Every deputyd the case made is stopped and its files removed before the line is printed:
    a sanitizer report at deputyd's exit fails the case."""
    global _failed
    try:
        try:
            fn(*args)
        finally:
            Deputyd.stop_all()
    except Skip as e:
        print("SKIP: %s: %s" % (name, e), flush=True)
        return False
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the next case
        _failed += 1
        traceback.print_exc(file=sys.stdout)
        why = str(e) if isinstance(e, (Failure, AssertionError)) else \
            "%s: %s" % (type(e).__name__, e)
        print("FAIL: %s: %s" % (name, _one_line(why) or type(e).__name__), flush=True)
        return False
    print("PASS: %s" % name, flush=True)
    return True


def finish():
    """Cleans up and exits: 1 if any case failed, else 0."""
    _cleanup()
    sys.stdout.flush()
    sys.exit(1 if _failed else 0)


def main():
    """Runs the registered cases (only those named in argv, if any), then finish()."""
    only = sys.argv[1:]
    for fn in _cases:
        if not only or fn.__name__ in only:
            run_case(fn.__name__, fn)
    finish()


def lines_until(p, prefix):
    """Lines of a running process's stdout up to and including the first that starts with
    prefix (an agent saying it waits); fails the case if it ends before."""
    lines = []
    while not (lines and lines[-1].startswith(prefix)):
        line = p.stdout.readline()
        if not line:
            fail("agent ended early: %s" % p.stderr.read()[-800:])
        lines.append(line)
    return lines


def wait_until(cond, timeout=10, interval=0.05):
    """Calls cond() until it returns something true or timeout seconds passed; returns its
    last result (so the caller checks it and says what was missing)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(interval)


def run(cmd, timeout=60, env=None, input=None, check=False, user=None, cwd=None):
    """Runs cmd to completion (as user=(uid, gid) if given); returns CompletedProcess with
    text stdout/stderr (bytes when input is bytes). A timeout fails the case; so does a
    non-zero exit under check=True."""
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, input=input,
                           text=not isinstance(input, bytes), cwd=cwd,
                           preexec_fn=demote(user) if user else None)
    except subprocess.TimeoutExpired:
        raise Failure("%s: no exit within %d s" % (os.path.basename(cmd[0]), timeout))
    if check and r.returncode != 0:
        raise Failure("%s exited %d: %s%s" % (os.path.basename(cmd[0]), r.returncode,
                                              _tail(r.stdout), _tail(r.stderr)))
    return r


def _tail(s, n=400):
    s = s if isinstance(s, str) else s.decode(errors="replace")
    return s.strip().replace("\n", " | ")[-n:]


# ---- environment ------------------------------------------------------------------------------

def is_root():
    return os.geteuid() == 0


def bpf_available():
    """Whether the kernel layer can be loaded here (root, BTF, cgroup2)."""
    return is_root() and os.path.exists("/sys/kernel/btf/vmlinux")


def private_mount_namespace(var):
    """A private /etc/hosts needs a mount namespace: as root, re-runs the calling test file
    inside a new one (once: the environment variable var marks the re-run). True when
    running inside it; the cases that need it skip otherwise."""
    if os.environ.get(var) == "1":
        return True
    if os.geteuid() == 0 and shutil.which("unshare"):
        env = dict(os.environ, **{var: "1"})
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", "--",
                               sys.executable] + sys.argv, env)
    return False


def unprivileged_user():
    """(uid, gid) of an unprivileged account to run agents as."""
    import pwd
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def demote(uid_gid):
    """A preexec_fn that makes the child run as (uid, gid), without supplementary groups."""
    uid, gid = uid_gid

    def f():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return f


def cgroup2_root():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2" and left.split()[3] == "/":
                return left.split()[4]
    return None


# ---- the IdP --------------------------------------------------------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Issuer:
    """A test identity provider: an EC P-256 key, its JWKS, and grants signed with PyJWT."""

    def __init__(self, iss=IDP, key=None):
        self.iss = iss
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        pub = self.key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64url(pub.x.to_bytes(32, "big")),
                    "y": b64url(pub.y.to_bytes(32, "big"))}
        canon = json.dumps({k: self.jwk[k] for k in ("crv", "kty", "x", "y")},
                           separators=(",", ":"), sort_keys=True).encode()
        self.kid = b64url(hashlib.sha256(canon).digest())
        self.jwk.update({"kid": self.kid, "alg": "ES256", "use": "sig"})

    def pem(self):
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def jwks(self):
        return {"keys": [self.jwk]}

    def grant(self, user="alice", agent="mailbot", scope="email:send", resource=None,
              ttl=3600, aud=ISSUER, headers=None, **claims):
        now = int(time.time())
        body = {"iss": self.iss, "sub": user, "aud": aud, "iat": now, "exp": now + ttl,
                "jti": uuid.uuid4().hex, "scope": scope,
                "resource": resource if resource is not None else ["https://api.test"],
                "may_act": {"sub": "agent:" + agent}}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        h = {"kid": self.kid}
        h.update(headers or {})
        return jwt.encode(body, self.key, algorithm="ES256", headers=h)


# ---- deputyd ----------------------------------------------------------------------------------

def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deputyd:
    _running = []
    _created = []  # every instance, cleaned up after each case whether started or not

    def __init__(self, routes=None, issuer=None, kernel=None, **config):
        self.dir = reachable_dir("deputy-test.")
        self.idp = issuer or Issuer()
        self.socket = os.path.join(self.dir, "run", "deputy.sock")
        self.state = os.path.join(self.dir, "state")
        self.jwks_file = os.path.join(self.dir, "idp-jwks.json")
        with open(self.jwks_file, "w") as f:
            json.dump(self.idp.jwks(), f)
        if kernel is None:
            kernel = "on" if bpf_available() else "off"
        self.cgroup = "deputy-test-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        # Where api.test is: deputyd delegates only to a route host's addresses, so the
        # default routes say where (a loopback address of their own), and as root a
        # listener there takes the agents' connections (route_conn_fields).
        self.api_addr = "127.%d.%d.%d" % tuple(b % 254 + 1 for b in uuid.uuid4().bytes[:3])
        self.listener = None
        self.config = {
            "issuer": ISSUER,
            "socket": self.socket,
            "state_dir": self.state,
            "http_listen": "off",
            "trusted_issuers": [{"issuer": self.idp.iss, "jwks_file": self.jwks_file}],
            "routes": routes if routes is not None else [
                {"host": "api.test", "port": 443, "method": "POST", "path": "/send*",
                 "action": "delegate", "audience": "https://api.test", "scope": "email:send",
                 "addrs": [self.api_addr]},
                {"host": "api.test", "port": 443, "method": "GET", "path": "/read*",
                 "action": "delegate", "audience": "https://api.test", "scope": "email:read",
                 "addrs": [self.api_addr]},
                {"host": "llm.test", "port": 443, "action": "passthrough"},
                {"host": "evil.test", "port": 443, "action": "deny"},
            ],
            "kernel": kernel,
            "cgroup": self.cgroup,
            # deputyd's proxy, on a port of its own: test deputyds run side by side.
            "proxy_listen": "127.0.0.1:%d" % free_port(),
        }
        self.config.update(config)
        self.config_path = os.path.join(self.dir, "deputy.json")
        self.write_config()
        self.proc = None
        self.stderr_path = os.path.join(self.dir, "deputyd.log")
        self.wrap = []  # a command deputyd runs under (it must exec deputyd's command line)
        Deputyd._created.append(self)

    def write_config(self):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=1)

    def start(self, wait=True):
        if self.config["kernel"] == "on" and self.listener is None:
            self.listener = _RouteListener(self.api_addr, 443)
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        self.errf = open(self.stderr_path, "ab")
        start_at = self.errf.tell()
        self.proc = subprocess.Popen(self.wrap + [DEPUTYD, "-c", self.config_path, "-f"],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.errf, stderr=self.errf, env=env)
        Deputyd._running.append(self)
        if wait:
            def ready():
                with open(self.stderr_path, "rb") as f:
                    f.seek(start_at)
                    return self.proc.poll() is not None or b"ready:" in f.read()
            wait_until(ready, timeout=20)
            if self.proc.poll() is not None:
                fail("deputyd exited %d: %s" % (self.proc.returncode, self.log_text()[-2000:]))
            check(ready(), "deputyd did not become ready: " + self.log_text()[-2000:])
        return self

    def log_text(self):
        try:
            return open(self.stderr_path, "rb").read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        if self in Deputyd._running:
            Deputyd._running.remove(self)
        text = self.log_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                fail("deputyd under a sanitizer: " + text[text.index(marker):][:1500])
        return rc

    def cleanup(self):
        try:
            self.stop()
        finally:
            if self.listener:
                self.listener.close()
                self.listener = None
            self._cleanup_files()

    def _cleanup_files(self):
        root = cgroup2_root()
        if root:
            parent = os.path.join(root, self.cgroup)
            if os.path.isdir(parent):
                for child in os.listdir(parent):
                    p = os.path.join(parent, child)
                    if os.path.isdir(p):
                        try:
                            with open(os.path.join(p, "cgroup.kill"), "w") as f:
                                f.write("1")
                        except OSError:
                            pass
                        for _ in range(50):
                            try:
                                os.rmdir(p)
                                break
                            except OSError:
                                time.sleep(0.05)
                try:
                    os.rmdir(parent)
                except OSError:
                    pass
        # pinned BPF state of a killed daemon
        pin = "/sys/fs/bpf/deputy/" + self.cgroup
        if os.path.isdir(pin):
            shutil.rmtree(pin, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    @classmethod
    def stop_all(cls):
        created, cls._created = cls._created, []
        errors = []
        for d in created:
            try:
                d.cleanup()
            except Failure as e:
                errors.append(str(e))
        if errors:
            fail(errors[0])

    # -- CLI ---------------------------------------------------------------------------------

    def env(self, **extra):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env["DEPUTY_SOCKET"] = self.socket
        env["DEPUTY_TEST_ROUTE_ADDR"] = self.api_addr
        if self.config["kernel"] == "on":
            env["DEPUTY_TEST_ROUTE_CONNECT"] = "1"
        else:
            env.pop("DEPUTY_TEST_ROUTE_CONNECT", None)
        env.update(extra)
        return env

    def cli(self, *args, input=None, user=None, timeout=60, env=None):
        return subprocess.run([DEPUTY] + list(args), input=input, capture_output=True,
                              timeout=timeout, env=env or self.env(),
                              preexec_fn=demote(user) if user else None)

    def grant_file(self, token, user=None):
        path = os.path.join(self.dir, "grant-%s.jwt" % uuid.uuid4().hex[:8])
        with open(path, "w") as f:
            f.write(token + "\n")
        os.chmod(path, 0o644)
        return path

    def run(self, token, cmd, agent="mailbot", user=None, timeout=120, env=None, **kw):
        """deputy run; returns CompletedProcess (text)."""
        return subprocess.run([DEPUTY, "run", "--grant", self.grant_file(token), "--agent", agent,
                               "--"] + list(cmd), capture_output=True, text=True,
                              timeout=timeout, env=env or self.env(),
                              preexec_fn=demote(user) if user else None, **kw)

    def start_session(self, token=None, seconds=60, user=None):
        """A session kept open by an agent that sleeps for seconds; returns (Popen, session
        id). The caller kills the agent when done (it is killed at exit otherwise)."""
        p = track(subprocess.Popen(
            [DEPUTY, "run", "--grant", self.grant_file(token or self.idp.grant()), "--agent",
             "mailbot", "--", "sh", "-c",
             'echo "session=$DEPUTY_SESSION"; exec sleep %d' % seconds],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env(),
            preexec_fn=demote(user) if user else None))
        line = p.stdout.readline()
        if not line.startswith("session="):
            p.kill()
            fail("session did not start: %r %r" % (line, p.stderr.read()))
        return p, line.split("=", 1)[1].strip()

    def sessions(self):
        r = self.cli("sessions", "--json")
        check(r.returncode == 0, "deputy sessions: " + r.stderr.decode())
        return [json.loads(l) for l in r.stdout.decode().splitlines() if l.strip()]

    def log_path(self, session):
        return os.path.join(self.state, "sessions", session + ".jsonl")

    def records(self, session, kernel=True):
        """The session's log records; kernel=False leaves out the kernel layer's
        connect/disconnect records (whose number depends on the kernel layer being on)."""
        with open(self.log_path(session)) as f:
            recs = [json.loads(l) for l in f]
        if not kernel:
            recs = [r for r in recs if r["type"] not in ("connect", "disconnect")]
        return recs

    def wait_closed(self, session, timeout=15, kernel=False):
        def closed():
            if os.path.exists(self.log_path(session)):
                recs = self.records(session, kernel=kernel)
                if recs and recs[-1]["type"] == "session_close":
                    return recs
            return None
        recs = wait_until(closed, timeout)
        check(recs, "session %s did not close" % session)
        return recs


# ---- a connection to the route's host, as the shim's requests travel on -------------------

class _RouteListener:
    """A listener at (addr, port) that accepts and drops connections, so agents' connects to
    a route's address complete (root only: port 443)."""

    def __init__(self, addr, port):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind((addr, port))
        self.s.listen(128)
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            c.close()

    def close(self):
        self.stopped = True
        try:
            self.s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.s.close()


SO_COOKIE = 57
_route_socks = []


def route_conn_fields(port=443):
    """DECIDE fields saying which connection a request travels on, as the shim sends them:
    under a deputyd with the kernel layer, a real connection to the test route's address
    (DEPUTY_TEST_ROUTE_ADDR) and its socket cookie; without it, the peer address alone
    (deputyd then has only the shim's word). [] outside a test deputyd's environment."""
    addr = os.environ.get("DEPUTY_TEST_ROUTE_ADDR")
    if not addr:
        return []
    fields = [("FAMILY", socket.AF_INET), ("ADDR", socket.inet_aton(addr))]
    if os.environ.get("DEPUTY_TEST_ROUTE_CONNECT") == "1":
        s = socket.create_connection((addr, port), timeout=10)
        _route_socks.append(s)
        fields.append(("COOKIE", struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET,
                                                                   SO_COOKIE, 8))[0]))
    return fields


def route_conns_close():
    while _route_socks:
        _route_socks.pop().close()


# ---- the wire protocol, spoken from Python (include/deputy/proto.h) --------------------------

MSG = {"OK": 1, "ERROR": 2, "SESSION_OPEN": 10, "SESSION_OPENED": 11, "SESSION_CLOSE": 12,
       "KILL": 13, "REVOKE": 14, "REVOKE_LIST": 15, "DECIDE": 20, "DECISION": 21,
       "RESPONSE": 22, "TABLE_GET": 23, "DENY_REPORT": 24, "TABLE": 25, "USES": 26,
       "SESSIONS": 30, "LOG_READ": 31, "LOG_DATA": 32, "JWKS": 33, "DATA_REPLY": 34,
       "ROUTE_TEST": 35, "PROXY_TABLE_GET": 47, "PROXY_USES": 48}
TAG = {"REASON": 1, "GRANT": 2, "AGENT": 3, "ARGV": 4, "SESSION": 5, "USER": 6, "STATUS": 7,
       "SCHEME": 8, "HOST": 9, "PORT": 10, "METHOD": 11, "TARGET": 12, "COOKIE": 13,
       "VERDICT": 14, "HEADER": 15, "TOKEN": 16, "JTI": 17, "SCOPE": 18, "PID": 19,
       "FAMILY": 20, "ADDR": 21, "OFFSET": 22, "DATA": 23, "CONN": 24, "CA": 25,
       "SNI": 26, "HOST_LOG": 27, "ENTRY": 30, "USE": 31, "GEN": 32, "EXP": 33,
       "MCP_METHOD": 34, "MCP_NAME": 35, "BODY_SHA256": 36, "MCP_RULE": 37, "SINCE": 38,
       "UNTIL": 39}
U64 = {"PORT", "COOKIE", "PID", "STATUS", "FAMILY", "OFFSET", "VERDICT", "CONN", "GEN", "EXP",
       "HOST_LOG"}
TAG_NAME = {v: k for k, v in TAG.items()}
MSG_NAME = {v: k for k, v in MSG.items()}
VERDICT = {0: "deny", 1: "delegate", 2: "passthrough", 3: "mcp_body"}
NOREPLY = 1


def frame(msg, fields, seq=1, flags=0, version=1):
    payload = b""
    for name, value in fields:
        if name in U64:
            value = struct.pack("<Q", value)
        elif isinstance(value, str):
            value = value.encode()
        payload += struct.pack("<HH", TAG[name], len(value)) + value
    return struct.pack("<IBBHI", len(payload), version, flags, MSG[msg], seq) + payload


def parse_reply(data):
    length, version, flags, typ, seq = struct.unpack("<IBBHI", data[:12])
    out = {"type": MSG_NAME.get(typ, typ), "seq": seq}
    p, off = data[12:12 + length], 0
    while off < len(p):
        tag, n = struct.unpack("<HH", p[off:off + 4])
        v = p[off + 4:off + 4 + n]
        name = TAG_NAME.get(tag, tag)
        out[name] = struct.unpack("<Q", v)[0] if name in U64 else v.decode(errors="replace")
        off += 4 + n
    return out


class Conn:
    def __init__(self, path, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.seq = 0

    def send_raw(self, data):
        self.s.sendall(data)

    def recv_reply(self):
        head = self._read(12)
        if head is None:
            return None
        length = struct.unpack("<I", head[:4])[0]
        body = self._read(length) if length else b""
        return parse_reply(head + (body or b""))

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def call(self, msg, fields, flags=0):
        self.seq += 1
        self.s.sendall(frame(msg, fields, seq=self.seq, flags=flags))
        if flags & NOREPLY:
            return None
        return self.recv_reply()

    def decide(self, session, host="api.test", port=443, method="POST", target="/send",
               scheme="https", cookie=None, bind=True):
        """One DECIDE; with bind (and no cookie) on a connection to the test route's
        address (route_conn_fields)."""
        f = [("SESSION", session), ("SCHEME", scheme), ("HOST", host), ("PORT", port),
             ("METHOD", method), ("TARGET", target)]
        if cookie is not None:
            f.append(("COOKIE", cookie))
        elif bind:
            f += route_conn_fields(port)
        try:
            return self.call("DECIDE", f)
        finally:
            route_conns_close()

    def close(self):
        self.s.close()


# A script run inside a session (under `deputy run`) that speaks the protocol and prints one
# JSON reply per line: argv[1] is a JSON list of [msg, fields] requests.
AGENT_SCRIPT = r'''
import json, os, sys
sys.path.insert(0, %r)
import deputytest as dt
c = dt.Conn(os.environ["DEPUTY_SOCKET"])
for msg, fields in json.loads(sys.argv[1]):
    fields = [(k, os.environ["DEPUTY_SESSION"] if v == "$SESSION" else v) for k, v in fields]
    if msg == "DECIDE" and "COOKIE" not in dict(fields):
        fields += dt.route_conn_fields(dict(fields).get("PORT", 443))
    r = c.call(msg, fields)
    dt.route_conns_close()
    print(json.dumps(r), flush=True)
''' % LIB


def agent_requests(d, token, requests, user=None, agent="mailbot", env=None):
    """Run AGENT_SCRIPT as a session; returns (CompletedProcess, [replies])."""
    script = os.path.join(d.dir, "agent.py")
    with open(script, "w") as f:
        f.write(AGENT_SCRIPT)
    os.chmod(script, 0o644)
    r = d.run(token, [PYTHON, script, json.dumps(requests)], user=user, agent=agent, env=env)
    replies = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    return r, replies


def script(d, text, name):
    """A file of d's directory with text, readable by the agents' user."""
    path = os.path.join(d.dir, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def ts_of(rec):
    """A record's ts as seconds since the epoch."""
    from datetime import datetime, timezone
    return datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


def start_agent(d, argv, user, token=None):
    """`deputy run` of argv as user, whose first line says "session=ID"; returns (Popen, ID)
    with the rest of its output still to read."""
    p = track(subprocess.Popen(
        [DEPUTY, "run", "--grant", d.grant_file(token or d.idp.grant()), "--agent", "mailbot",
         "--"] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=d.env(),
        preexec_fn=demote(user)))
    line = p.stdout.readline()
    if not line.startswith("session="):
        p.kill()
        fail("session did not start: %r %r" % (line, p.stderr.read()))
    return p, line.strip().split("=", 1)[1].split()[0]


def decode_jwt(token):
    return jwt.decode(token, options={"verify_signature": False})


# ---- what the C test clients send and print ---------------------------------------------

def parse_client_output(text):
    """Output of the tls_* clients -> {'sent': [(len, sha256)], 'responses': [(status, body)]}
    where body is the parsed JSON when it is JSON, else the text."""
    sent, responses = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        words = lines[i].split()
        if words[:1] == ['sent'] and len(words) >= 3:
            sent.append((int(words[-2]), words[-1]))
        elif words[:1] == ['status'] and len(words) == 2:
            body = lines[i + 1] if i + 1 < len(lines) else ''
            try:
                body = json.loads(body)
            except ValueError:
                pass
            responses.append((int(words[1]), body))
            i += 1
        i += 1
    return {'sent': sent, 'responses': responses}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def pattern(n):
    """The body bytes the C clients generate for -s N (tlsclient.h tc_pattern)."""
    alphabet = b'abcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFGHIJKLMNOPQRSTUVWXYZ'
    return bytes(10 if i % 64 == 63 else alphabet[(i * 7 + i // 64) % 64] for i in range(n))


# ---- certificates ------------------------------------------------------------------------

class Certs:
    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, 'ca.pem')
        self.cert = os.path.join(d, 'server.pem')
        self.key = os.path.join(d, 'server.key')


def make_certs(d):
    """A test CA and a server certificate for localhost, 127.0.0.1, ::1, api.test,
    mail.test, echo.test, other.test, deputy.test, in d/certs."""
    cd = os.path.join(d, 'certs')
    run(['bash', CERTS_SH, cd], check=True)
    return Certs(cd)


_shared_certs = None


def shared_certs():
    """make_certs once per test program, in a directory removed when it ends."""
    global _shared_certs
    if _shared_certs is None:
        _shared_certs = make_certs(reachable_dir("deputy-certs."))
    return _shared_certs


# ---- the backend -------------------------------------------------------------------------

class Backend:
    """One running tests/backend. Use as a context manager, or call start()/stop()."""

    def __init__(self, workdir, certs=None, h2=False, echo=False, jwks=None, audience=None,
                 scope=None, issuer=None, listen='127.0.0.1:0', name=None, extra=(),
                 token_header=None):
        self.workdir = workdir
        self.certs = certs
        self.h2, self.echo = h2, echo
        self.jwks, self.audience, self.scope, self.issuer = jwks, audience, scope, issuer
        self.listen = listen
        self.name = name or ('backend-%d' % len(os.listdir(workdir)))
        self.log = os.path.join(workdir, self.name + '.jsonl')
        self.stderr_path = os.path.join(workdir, self.name + '.stderr')
        self.extra = list(extra)
        self.token_header = token_header
        self.proc = None
        self.port = None
        self.exit_status = None

    @property
    def tls(self):
        return self.certs is not None

    def command(self):
        cmd = [BACKEND_BIN, '--listen', self.listen, '--log', self.log]
        if self.certs:
            cmd += ['--cert', self.certs.cert, '--key', self.certs.key]
        if self.jwks:
            cmd += ['--jwks', self.jwks, '--audience', self.audience]
        if self.scope:
            cmd += ['--scope', self.scope]
        if self.issuer:
            cmd += ['--issuer', self.issuer]
        if self.token_header:
            cmd += ['--token-header', self.token_header]
        if self.h2:
            cmd.append('--h2')
        if self.echo:
            cmd.append('--echo')
        return cmd + self.extra

    def start(self, timeout=10):
        open(self.log, 'a').close()
        err = open(self.stderr_path, 'wb')
        self.proc = track(subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=err,
                                           stdin=subprocess.DEVNULL))
        err.close()
        deadline = time.monotonic() + timeout
        line = b''
        while not line.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.stop()
                fail('backend printed no port within %d s' % timeout)
            ch = os.read(self.proc.stdout.fileno(), 1)
            if not ch:
                self.stop()
                fail('backend exited at start: ' + self.stderr())
            line += ch
        words = line.decode().split()
        if len(words) != 2 or words[0] != 'port':
            self.stop()
            fail('backend said %r' % line)
        self.port = int(words[1])
        return self

    def stop(self):
        """Stops the backend (SIGTERM); returns its exit status (0 for a clean exit)."""
        if self.proc is not None and self.exit_status is None:
            self.exit_status = stop_process(self.proc)
        return self.exit_status

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stderr(self):
        try:
            with open(self.stderr_path, errors='replace') as f:
                return _tail(f.read())
        except OSError:
            return ''

    # -- addresses --
    def url(self, host='api.test', path='/'):
        scheme = 'https' if self.tls else 'http'
        if ':' in host:
            host = '[%s]' % host
        return '%s://%s:%d%s' % (scheme, host, self.port, path)

    def resolve(self, host='api.test', addr='127.0.0.1'):
        """The curl --resolve / CURLOPT_RESOLVE entry pointing host at the backend."""
        return '%s:%d:%s' % (host, self.port, addr)

    def curl(self, *args, host='api.test', addr='127.0.0.1'):
        """curl argv that trusts the test CA and resolves host to the backend."""
        cmd = ['curl', '-sS', '--resolve', self.resolve(host, addr)]
        if self.certs:
            cmd += ['--cacert', self.certs.ca]
        return cmd + list(args)

    # -- the log --
    def records(self, type=None):
        """Every complete record of the log, optionally only of one type ('request',
        'h2_request', 'echo', 'conn', 'error', 'tls_error')."""
        out = []
        with open(self.log, 'rb') as f:
            for line in f:
                if not line.endswith(b'\n'):
                    break  # being written
                rec = json.loads(line)
                if type is None or rec.get('type') == type:
                    out.append(rec)
        return out

    def requests(self):
        return self.records('request')

    def wait_records(self, type, count, timeout=10):
        """Waits (bounded) until the log holds at least count records of type. Records of a
        request are written before its response; 'conn' ones only after the close."""
        recs = []

        def enough():
            recs[:] = self.records(type)
            return len(recs) >= count
        wait_until(enough, timeout, interval=0.02)
        return recs


class Stack:
    """deputyd, the test backend its routes name and a grant for them: the scene of the tests
    that play an agent through the shim, the kernel layer or the proxy. A test subclasses it:
    routes(port) returns the routes to the backend's port (extra_routes are added after
    them); prepare() sets the rest of the scene before deputyd starts (more servers: have
    them stopped with on_close); config is applied last. Use as a context manager: close()
    stops what was started, newest first, also when the constructor fails half way."""

    prefix = "deputy-case-"

    def __init__(self, scope, audience, certs=None, kernel=None, user="alice", extra_routes=(),
                 config=None, **backend):
        self.dir = TempDir(prefix=self.prefix)
        self._closers = [self.dir.__exit__]
        try:
            self.d = Deputyd(routes=[], kernel=kernel)
            self.on_close(self.d.cleanup)
            self.be = Backend(self.dir.path, certs=certs, jwks=self.jwks, audience=audience,
                              **backend).start()
            self.on_close(self.be.stop)
            self.d.config["routes"] = self.routes(self.be.port) + list(extra_routes)
            self.prepare()
            self.d.config.update(config or {})
            self.d.write_config()
            self.d.start()
            self.grant = self.d.idp.grant(user=user, scope=scope, resource=[audience])
        except BaseException:
            self.close()
            raise

    @property
    def jwks(self):
        """deputyd's public keys, which the backends verify tokens with."""
        return os.path.join(self.d.state, "jwks.json")

    def routes(self, port):
        return []

    def prepare(self):
        pass

    def on_close(self, fn):
        self._closers.append(fn)

    def url(self, path, host="api.test"):
        return self.be.url(host, path)

    def session(self):
        """The id of the newest session."""
        ss = self.d.sessions()
        check(ss, "no session")
        return ss[-1].get("session") or ss[-1].get("id")

    def close(self):
        while self._closers:
            self._closers.pop()()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def header(rec, name):
    """All values of header name (case-insensitive) in a request record, in order."""
    return [v for n, v in rec['headers'] if n.lower() == name.lower()]


def body_bytes(rec):
    return base64.b64decode(rec['body_b64'])


# ---- Python HTTP clients that point a host name at loopback ------------------------------

def resolved_connection_class(addr):
    """An HTTPSConnection class that connects to addr but keeps the URL's host for SNI,
    certificate checks and Host — the Python equivalent of curl --resolve."""

    class Conn(http.client.HTTPSConnection):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._create_connection = (
                lambda address, *x, **y: socket.create_connection((addr, address[1]), *x, **y))

    return Conn


def urllib_opener(cafile, addr='127.0.0.1'):
    """A urllib opener trusting cafile whose HTTPS connections go to addr."""
    ctx = ssl.create_default_context(cafile=cafile)
    conn_class = resolved_connection_class(addr)

    class Handler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(conn_class, req, context=ctx)

    return urllib.request.build_opener(Handler())


# ---- a throwaway token issuer (for backend tests without deputyd) ------------------------

class TestIssuer:
    """An ES256 key, its JWKS file, and tokens shaped like deputy delegation tokens."""

    def __init__(self, d, iss='https://deputy.test'):
        self.iss = iss
        self.key = ec.generate_private_key(ec.SECP256R1())
        # Built by hand: PyJWT's to_jwk drops leading zero bytes of x and y (1 key in 128),
        # which RFC 7518 §6.2.1.2 forbids and a strict verifier rightly refuses.
        nums = self.key.public_key().public_numbers()
        self.kid = 'test-kid-1'
        jwk = {'kty': 'EC', 'crv': 'P-256', 'x': b64url(nums.x.to_bytes(32, 'big')),
               'y': b64url(nums.y.to_bytes(32, 'big')), 'kid': self.kid, 'alg': 'ES256',
               'use': 'sig'}
        self.jwks = os.path.join(d, 'jwks.json')
        with open(self.jwks, 'w') as f:
            json.dump({'keys': [jwk]}, f)

    def token(self, aud, scope, sub='alice', htm=None, htu=None, ttl=60, **extra):
        now = int(time.time())
        claims = {'iss': self.iss, 'sub': sub, 'aud': aud, 'scope': scope,
                  'act': {'sub': 'agent:test'}, 'client_id': 'agent:test', 'iat': now,
                  'exp': now + ttl, 'jti': 'jti-%d-%d' % (now, os.getpid())}
        if htm:
            claims['htm'] = htm
        if htu:
            claims['htu'] = htu
        claims.update(extra)
        return jwt.encode(claims, self.key, algorithm='ES256',
                                headers={'kid': self.kid, 'typ': 'at+jwt'})


