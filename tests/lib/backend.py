# SPDX-License-Identifier: MIT
"""Helpers for the integration tests: the test HTTPS backend, a test CA, the C test
clients, a throwaway token issuer, and a tiny PASS/FAIL/SKIP runner.

    sys.path.insert(0, os.path.join(os.environ.get('DEPUTY_SRC', '.'), 'tests/lib'))
    from backend import Runner, TempDir, Backend, make_certs, run, prog

    t = Runner()
    with TempDir() as d:
        certs = make_certs(d)
        with Backend(d, certs=certs) as be:
            out = run([prog('tls_onebyte'), '-c', certs.ca, '-r', '127.0.0.1',
                       be.url('api.test', '/x')])
            t.run('onebyte', lambda: ...)
    t.exit()

Everything started here is stopped, and every temp dir removed, when the test ends —
normally, by an exception, or by SIGTERM/SIGINT (the test runner's timeout).
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
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

SRC = os.environ.get('DEPUTY_SRC') or os.path.abspath(
    os.path.join(os.path.dirname(__file__), '..', '..'))
BUILD = os.environ.get('BUILD') or os.path.join(SRC, 'build')
BACKEND_BIN = os.path.join(BUILD, 'tests', 'backend')
CERTS_SH = os.path.join(SRC, 'tests', 'lib', 'certs.sh')
SERVICE_ACCOUNT = 'Bearer service-account-secret-0000'  # what the C clients send by default

# ---- cleanup ---------------------------------------------------------------------------

_procs = []   # live subprocess.Popen objects we must stop
_dirs = []    # temp dirs we must remove


def _cleanup():
    for p in list(_procs):
        stop_process(p)
    for d in list(_dirs):
        shutil.rmtree(d, ignore_errors=True)
        _dirs.remove(d)


def _on_signal(signum, frame):
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


class TempDir:
    """A temp dir removed on exit (and at process exit, whatever happens)."""

    def __init__(self, prefix='deputy-test-'):
        self.path = tempfile.mkdtemp(prefix=prefix)
        _dirs.append(self.path)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        if self.path in _dirs:
            _dirs.remove(self.path)


# ---- running things --------------------------------------------------------------------

def prog(name):
    """Path of a built test client, e.g. prog('tls_onebyte')."""
    return os.path.join(BUILD, 'tests', 'progs', name)


def run(cmd, timeout=60, env=None, input=None, check=False):
    """Runs cmd to completion; returns CompletedProcess with text stdout/stderr. A timeout
    kills the process and raises AssertionError (so a test case fails, not the file)."""
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env,
                           input=input, text=isinstance(input, str) or input is None)
    except subprocess.TimeoutExpired:
        raise AssertionError('%s: no exit within %d s' % (os.path.basename(cmd[0]), timeout))
    if check and r.returncode != 0:
        raise AssertionError('%s exited %d: %s' % (os.path.basename(cmd[0]), r.returncode,
                                                   _tail(r.stderr)))
    return r


def _tail(s, n=400):
    s = s if isinstance(s, str) else s.decode(errors='replace')
    s = s.strip().replace('\n', ' | ')
    return s[-n:]


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
                raise AssertionError('backend printed no port within %d s' % timeout)
            ch = os.read(self.proc.stdout.fileno(), 1)
            if not ch:
                self.stop()
                raise AssertionError('backend exited at start: ' + self.stderr())
            line += ch
        words = line.decode().split()
        if len(words) != 2 or words[0] != 'port':
            self.stop()
            raise AssertionError('backend said %r' % line)
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
        deadline = time.monotonic() + timeout
        while True:
            recs = self.records(type)
            if len(recs) >= count or time.monotonic() > deadline:
                return recs
            time.sleep(0.02)


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

def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b'=').decode()


class TestIssuer:
    """An ES256 key, its JWKS file, and tokens shaped like deputy delegation tokens."""

    def __init__(self, d, iss='https://deputy.test'):
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec
        self._jwt = jwt
        self.iss = iss
        self.key = ec.generate_private_key(ec.SECP256R1())
        # Built by hand: PyJWT's to_jwk drops leading zero bytes of x and y (1 key in 128),
        # which RFC 7518 §6.2.1.2 forbids and a strict verifier rightly refuses.
        nums = self.key.public_key().public_numbers()
        self.kid = 'test-kid-1'
        jwk = {'kty': 'EC', 'crv': 'P-256', 'x': _b64url(nums.x.to_bytes(32, 'big')),
               'y': _b64url(nums.y.to_bytes(32, 'big')), 'kid': self.kid, 'alg': 'ES256',
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
        return self._jwt.encode(claims, self.key, algorithm='ES256',
                                headers={'kid': self.kid, 'typ': 'at+jwt'})


# ---- the runner --------------------------------------------------------------------------

class Skip(Exception):
    pass


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_eq(got, want, what):
    if got != want:
        raise AssertionError('%s: got %r, want %r' % (what, got, want))


class Runner:
    """Prints one line per case (PASS/FAIL/SKIP, see tests/run.sh); exit() exits 1 on any
    FAIL."""

    def __init__(self):
        self.failed = 0

    def run(self, name, fn, *args):
        try:
            fn(*args)
        except Skip as e:
            print('SKIP: %s: %s' % (name, e), flush=True)
            return
        except AssertionError as e:
            self.failed += 1
            print('FAIL: %s: %s' % (name, str(e).replace('\n', ' ')[:600]), flush=True)
            return
        except Exception as e:  # a broken test is a failure too, with its trace for the log
            self.failed += 1
            traceback.print_exc(file=sys.stdout)
            print('FAIL: %s: %s: %s' % (name, type(e).__name__, str(e).replace('\n', ' ')[:400]),
                  flush=True)
            return
        print('PASS: %s' % name, flush=True)

    def exit(self):
        _cleanup()
        sys.stdout.flush()
        sys.exit(1 if self.failed else 0)
