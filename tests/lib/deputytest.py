# SPDX-License-Identifier: MIT
"""Helpers for deputy's integration tests: a real deputyd on a temporary config, grants
signed with PyJWT, the wire protocol spoken from Python, and the PASS/FAIL/SKIP lines that
tests/run.sh counts. Run with Debian's /usr/bin/python3 (python3-jwt, python3-cryptography).
"""
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SRC = os.environ.get("DEPUTY_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD") or os.path.join(SRC, "build")
DEPUTYD = os.path.join(BUILD, "deputyd")
DEPUTY = os.path.join(BUILD, "deputy")
SHIM = os.path.join(BUILD, "libdeputy.so")
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")
IDP = "https://idp.test"
ISSUER = "https://deputy.test"

# ---- test cases -----------------------------------------------------------------------------

_cases = []


class Skip(Exception):
    pass


def case(fn):
    _cases.append(fn)
    return fn


def skip(why, bpf=False):
    """Skip this case; a BPF case under DEPUTY_REQUIRE_BPF=1 fails instead."""
    if bpf and os.environ.get("DEPUTY_REQUIRE_BPF") == "1":
        raise AssertionError("DEPUTY_REQUIRE_BPF=1 but: " + why)
    raise Skip(why)


def check(cond, what="check failed"):
    if not cond:
        raise AssertionError(what)


def eq(a, b, what=""):
    if a != b:
        raise AssertionError("%s%r != %r" % (what + ": " if what else "", a, b))


def main():
    only = sys.argv[1:]
    failed = 0
    for fn in _cases:
        if only and fn.__name__ not in only:
            continue
        try:
            fn()
            Deputyd.stop_all()  # a sanitizer report at shutdown fails the case
            print("PASS: %s" % fn.__name__, flush=True)
        except Skip as e:
            print("SKIP: %s: %s" % (fn.__name__, e), flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next case
            failed += 1
            traceback.print_exc()
            print("FAIL: %s: %s" % (fn.__name__, str(e).splitlines()[0] if str(e) else
                                    type(e).__name__), flush=True)
        finally:
            try:
                Deputyd.stop_all()
            except Exception:  # noqa: BLE001 - already reported with the case
                pass
    sys.exit(1 if failed else 0)


# ---- environment ------------------------------------------------------------------------------

def is_root():
    return os.geteuid() == 0


def bpf_available():
    """Whether the kernel layer can be loaded here (root, BTF, cgroup2)."""
    return is_root() and os.path.exists("/sys/kernel/btf/vmlinux")


def unprivileged_user():
    """(uid, gid) of an unprivileged account to run agents as."""
    import pwd
    for name in ("nobody",):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
    return 65534, 65534


def cgroup2_root():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2" and left.split()[3] == "/":
                return left.split()[4]
    return None


# ---- the IdP --------------------------------------------------------------------------------

class Issuer:
    """A test identity provider: an EC P-256 key, its JWKS, and grants signed with PyJWT."""

    def __init__(self, iss=IDP, key=None):
        self.iss = iss
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        pub = self.key.public_key().public_numbers()
        b64 = lambda n: base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64(pub.x), "y": b64(pub.y)}
        canon = json.dumps({k: self.jwk[k] for k in ("crv", "kty", "x", "y")},
                           separators=(",", ":"), sort_keys=True).encode()
        import hashlib
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(canon).digest()).rstrip(b"=").decode()
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

class Deputyd:
    _running = []
    _created = []  # every instance, cleaned up after each case whether started or not

    def __init__(self, routes=None, issuer=None, kernel=None, **config):
        self.dir = tempfile.mkdtemp(prefix="deputy-test.")
        os.chmod(self.dir, 0o755)
        self.idp = issuer or Issuer()
        self.socket = os.path.join(self.dir, "run", "deputy.sock")
        self.state = os.path.join(self.dir, "state")
        self.jwks_file = os.path.join(self.dir, "idp-jwks.json")
        with open(self.jwks_file, "w") as f:
            json.dump(self.idp.jwks(), f)
        if kernel is None:
            kernel = "on" if bpf_available() else "off"
        self.cgroup = "deputy-test-%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        self.config = {
            "issuer": ISSUER,
            "socket": self.socket,
            "state_dir": self.state,
            "http_listen": "off",
            "trusted_issuers": [{"issuer": self.idp.iss, "jwks_file": self.jwks_file}],
            "routes": routes if routes is not None else [
                {"host": "api.test", "port": 443, "method": "POST", "path": "/send*",
                 "action": "delegate", "audience": "https://api.test", "scope": "email:send"},
                {"host": "api.test", "port": 443, "method": "GET", "path": "/read*",
                 "action": "delegate", "audience": "https://api.test", "scope": "email:read"},
                {"host": "llm.test", "port": 443, "action": "passthrough"},
                {"host": "evil.test", "port": 443, "action": "deny"},
            ],
            "kernel": kernel,
            "cgroup": self.cgroup,
        }
        self.config.update(config)
        self.config_path = os.path.join(self.dir, "deputy.json")
        self.write_config()
        self.proc = None
        self.stderr_path = os.path.join(self.dir, "deputyd.log")
        Deputyd._created.append(self)

    def write_config(self):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=1)

    def start(self, wait=True):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        self.errf = open(self.stderr_path, "ab")
        start_at = self.errf.tell()
        self.proc = subprocess.Popen([DEPUTYD, "-c", self.config_path, "-f"], stdin=subprocess.DEVNULL,
                                     stdout=self.errf, stderr=self.errf, env=env)
        Deputyd._running.append(self)
        if wait:
            deadline = time.time() + 20
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError("deputyd exited %d: %s" % (self.proc.returncode,
                                                                     self.log_text()[-2000:]))
                if b"ready:" in open(self.stderr_path, "rb").read()[start_at:]:
                    return self
                time.sleep(0.05)
            raise AssertionError("deputyd did not become ready: " + self.log_text()[-2000:])
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
                raise AssertionError("deputyd under a sanitizer: " +
                                     text[text.index(marker):][:1500])
        return rc

    def cleanup(self):
        try:
            self.stop()
        finally:
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
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            raise AssertionError(errors[0])

    # -- CLI ---------------------------------------------------------------------------------

    def env(self, **extra):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env["DEPUTY_SOCKET"] = self.socket
        env.update(extra)
        return env

    def cli(self, *args, input=None, user=None, timeout=60, env=None):
        return subprocess.run([DEPUTY] + list(args), input=input, capture_output=True,
                              timeout=timeout, env=env or self.env(),
                              preexec_fn=_demote(user) if user else None)

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
                              preexec_fn=_demote(user) if user else None, **kw)

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
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(self.log_path(session)):
                recs = self.records(session, kernel=kernel)
                if recs and recs[-1]["type"] == "session_close":
                    return recs
            time.sleep(0.05)
        raise AssertionError("session %s did not close" % session)


def _demote(uid_gid):
    uid, gid = uid_gid

    def f():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return f


# ---- the wire protocol, spoken from Python (include/deputy/proto.h) --------------------------

MSG = {"OK": 1, "ERROR": 2, "SESSION_OPEN": 10, "SESSION_OPENED": 11, "SESSION_CLOSE": 12,
       "DECIDE": 20, "DECISION": 21, "RESPONSE": 22, "CONN": 23, "DENY_REPORT": 24,
       "SESSIONS": 30, "LOG_READ": 31, "LOG_DATA": 32, "JWKS": 33, "DATA_REPLY": 34}
TAG = {"REASON": 1, "GRANT": 2, "AGENT": 3, "ARGV": 4, "SESSION": 5, "USER": 6, "STATUS": 7,
       "SCHEME": 8, "HOST": 9, "PORT": 10, "METHOD": 11, "TARGET": 12, "COOKIE": 13,
       "VERDICT": 14, "HEADER": 15, "TOKEN": 16, "JTI": 17, "SCOPE": 18, "PID": 19,
       "FAMILY": 20, "ADDR": 21, "OFFSET": 22, "DATA": 23}
U64 = {"PORT", "COOKIE", "PID", "STATUS", "FAMILY", "OFFSET", "VERDICT"}
TAG_NAME = {v: k for k, v in TAG.items()}
MSG_NAME = {v: k for k, v in MSG.items()}
VERDICT = {0: "deny", 1: "delegate", 2: "passthrough"}
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
               scheme="https", cookie=None):
        f = [("SESSION", session), ("SCHEME", scheme), ("HOST", host), ("PORT", port),
             ("METHOD", method), ("TARGET", target)]
        if cookie is not None:
            f.append(("COOKIE", cookie))
        return self.call("DECIDE", f)

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
    r = c.call(msg, fields)
    print(json.dumps(r), flush=True)
''' % os.path.dirname(os.path.abspath(__file__))


def agent_requests(d, token, requests, user=None, agent="mailbot", env=None):
    """Run AGENT_SCRIPT as a session; returns (CompletedProcess, [replies])."""
    script = os.path.join(d.dir, "agent.py")
    with open(script, "w") as f:
        f.write(AGENT_SCRIPT)
    os.chmod(script, 0o644)
    os.chmod(os.path.dirname(os.path.abspath(__file__)), 0o755)
    r = d.run(token, [PYTHON, script, json.dumps(requests)], user=user, agent=agent, env=env)
    replies = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    return r, replies


def decode_jwt(token):
    return jwt.decode(token, options={"verify_signature": False})
