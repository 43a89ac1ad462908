#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_backend: the test infrastructure, proven WITHOUT deputy.

The shim tests conclude "the shim delivered a token and the body arrived intact" from the
test backend's log, and "the shim downgraded HTTP/2" from a client that got HTTP/1.1. Those
conclusions hold only if the backend records exactly what clients send and each client
really sends what it claims (one byte per write, pipelined, chunked, non-blocking, with a
stripped environment). This file checks that, with every client talking to the backend
directly.
"""
import json
import os
import socket
import ssl
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import deputytest as dt  # noqa: E402
from deputytest import (SERVICE_ACCOUNT, Backend, Skip, TempDir, TestIssuer,  # noqa: E402
                        body_bytes, check, check_eq, header, make_certs, parse_client_output,
                        pattern, prog, run, run_case, sha256)

AUD = 'https://api.test'


def recs_for(be, prefix, count=None):
    """Request records whose target starts with prefix (cases use unique paths)."""
    recs = [r for r in be.requests() if r['target'].startswith(prefix)]
    if count is not None:
        check_eq(len(recs), count, 'requests logged for %s' % prefix)
    return recs


def client_ok(r, what):
    check(r.returncode == 0, '%s exited %d: %s %s' % (what, r.returncode, r.stdout[-300:],
                                                      r.stderr[-300:]))
    return parse_client_output(r.stdout)


def check_sent_matches(out, recs):
    """Each body the client says it sent arrived byte-identical, in order."""
    check_eq(len(out['sent']), len(recs), 'bodies sent vs requests logged')
    for (n, sha), rec in zip(out['sent'], recs):
        check_eq(rec['body_len'], n, 'body length')
        check_eq(rec['body_sha256'], sha, 'body sha256')
        check_eq(sha256(body_bytes(rec)), sha, 'sha256 of the logged body bytes')


# ---- curl ------------------------------------------------------------------------------

def curl_get(be):
    r = run(be.curl('-H', 'Authorization: ' + SERVICE_ACCOUNT, be.url(path='/curl-get?q=1')))
    check_eq(r.returncode, 0, 'curl exit status (%s)' % r.stderr.strip())
    resp = json.loads(r.stdout)
    check_eq(resp['method'], 'GET', 'echoed method')
    [rec] = recs_for(be, '/curl-get', 1)
    check_eq(rec['method'], 'GET', 'method')
    check_eq(rec['target'], '/curl-get?q=1', 'target')
    check_eq(rec['sni'], 'api.test', 'SNI')
    check_eq(rec['alpn'], 'http/1.1', 'ALPN')
    check_eq(header(rec, 'Host'), ['api.test:%d' % be.port], 'Host')
    check_eq(header(rec, 'Authorization'), [SERVICE_ACCOUNT], 'Authorization as sent')
    check_eq([n for n, _ in rec['headers']][:3], ['Host', 'User-Agent', 'Accept'],
             'header order')
    check(rec['token']['present'] and rec['token']['valid'] is not True,
          'a service-account secret is not a valid token: %r' % rec['token'])


def curl_post(be, d):
    data = os.urandom(100000) + b'\r\n\r\n\x00end'
    path = os.path.join(d, 'post.bin')
    with open(path, 'wb') as f:
        f.write(data)
    r = run(be.curl('--http1.1', '-H', 'Content-Type: application/octet-stream',
                    '--data-binary', '@' + path, be.url(path='/curl-post')))
    check_eq(r.returncode, 0, 'curl exit status (%s)' % r.stderr.strip())
    check_eq(json.loads(r.stdout)['body_sha256'], sha256(data), 'echoed body sha256')
    [rec] = recs_for(be, '/curl-post', 1)
    check_eq(rec['method'], 'POST', 'method')
    check_eq(header(rec, 'Content-Length'), [str(len(data))], 'Content-Length')
    check(body_bytes(rec) == data, 'body bytes differ')
    check_eq(rec['body_sha256'], sha256(data), 'body sha256')


def curl_keepalive(be):
    r = run(be.curl('-H', 'Authorization: ' + SERVICE_ACCOUNT, be.url(path='/ka-one'),
                    be.url(path='/ka-two'), '-d', 'second=1'))
    check_eq(r.returncode, 0, 'curl exit status (%s)' % r.stderr.strip())
    one = recs_for(be, '/ka-one', 1)[0]
    two = recs_for(be, '/ka-two', 1)[0]
    check_eq(two['conn'], one['conn'], 'both URLs on one connection')
    check_eq((one['seq'], two['seq']), (1, 2), 'request order on the connection')
    check_eq(body_bytes(two), b'second=1', 'second body')


def curl_http2(be_h2):
    """Without deputy, curl --http2 against a backend offering h2 really gets HTTP/2: the
    shim's downgrade test would prove nothing otherwise."""
    r = run(be_h2.curl('--http2', '-w', '\n%{http_version}\n', '-d', 'h2body',
                       be_h2.url(path='/h2')))
    check_eq(r.returncode, 0, 'curl exit status (%s)' % r.stderr.strip())
    lines = r.stdout.strip().splitlines()
    check_eq(lines[-1], '2', 'HTTP version curl used')
    resp = json.loads(lines[0])
    check_eq(resp['protocol'], 'h2', 'backend protocol')
    check_eq(resp['body_sha256'], sha256(b'h2body'), 'h2 body sha256')
    recs = be_h2.wait_records('h2_request', 1)
    check(any(x['alpn'] == 'h2' and x['body_sha256'] == sha256(b'h2body') for x in recs),
          'no h2 request logged')
    # The same backend still serves HTTP/1.1 to a client that does not offer h2.
    r = run(be_h2.curl('--http1.1', '-w', '\n%{http_version}\n', be_h2.url(path='/h1-on-h2')))
    check_eq(r.stdout.strip().splitlines()[-1], '1.1', 'HTTP version with --http1.1')
    [rec] = recs_for(be_h2, '/h1-on-h2', 1)
    check_eq(rec['alpn'], 'http/1.1', 'ALPN without h2 offered')


# ---- Python --------------------------------------------------------------------------

def python_urllib(be, certs):
    client = os.path.join(dt.LIB, 'urllib_client.py')
    r = run([sys.executable, client, '--ca', certs.ca, '-s', '5000',
             be.url(path='/py-post'), be.url('mail.test', '/py-mail')])
    out = client_ok(r, 'urllib_client')
    check_eq([s for s, _ in out['responses']], [200, 200], 'statuses')
    recs = recs_for(be, '/py-', 2)
    check_sent_matches(out, recs)
    check_eq(body_bytes(recs[0]), pattern(5000), 'body bytes')
    check_eq([x['sni'] for x in recs], ['api.test', 'mail.test'], 'SNI')
    check_eq(header(recs[1], 'Host'), ['mail.test:%d' % be.port], 'Host')
    check_eq(header(recs[0], 'Authorization'), [SERVICE_ACCOUNT], 'Authorization')


# ---- the C clients ---------------------------------------------------------------------

def curl_threads(be, certs):
    threads, per = 4, 6
    r = run([prog('curl_threads'), '-c', certs.ca, '-R', be.resolve('api.test'),
             '-R', be.resolve('mail.test'), '-t', str(threads), '-n', str(per), '-s', '3000',
             be.url(path='/thr-a'), be.url('mail.test', '/thr-b')])
    check_eq(r.returncode, 0, 'curl_threads exit status (%s)' % r.stdout[-300:])
    lines = r.stdout.strip().splitlines()
    check_eq(len(lines), threads * per, 'result lines')
    for line in lines:
        tid, i, method, url, status, sent_sha, body = line.split(' ', 6)
        check_eq(status, '200', 'status of ' + line[:80])
        check_eq(json.loads(body)['body_sha256'], sent_sha, 'echoed sha256 of ' + line[:80])
    recs = recs_for(be, '/thr-', threads * per)
    # Each thread's handle keeps one connection per host name and reuses it.
    conns = {x['conn'] for x in recs}
    check_eq(len(conns), threads * 2, 'one keep-alive connection per thread and host')
    for c in conns:
        on_c = [x for x in recs if x['conn'] == c]
        check_eq(len({x['sni'] for x in on_c}), 1, 'one host per connection')
        check_eq(sorted(x['seq'] for x in on_c), list(range(1, per // 2 + 1)),
                 'requests on connection %d' % c)
    check(all(header(x, 'Authorization') == [SERVICE_ACCOUNT] for x in recs), 'Authorization')


def tls_onebyte(be, certs):
    r = run([prog('tls_onebyte'), '-c', certs.ca, '-r', '127.0.0.1', '-s', '300', '-n', '2',
             be.url(path='/onebyte')])
    out = client_ok(r, 'tls_onebyte')
    check_eq([s for s, _ in out['responses']], [200, 200], 'statuses')
    recs = recs_for(be, '/onebyte', 2)
    check_sent_matches(out, recs)
    check_eq(recs[0]['conn'], recs[1]['conn'], 'keep-alive')
    # Over TLS every SSL_write is its own record, and the backend reads one record at a
    # time: it saw the request arrive one byte at a time.
    check_eq([x['buffered'] for x in recs], [1, 1], 'bytes in the first read of each request')
    check_eq(header(recs[0], 'Authorization'), [SERVICE_ACCOUNT], 'Authorization')


def tls_nonblock(be, certs):
    for extra in ([], ['-p']):
        path = '/nonblock%s' % ''.join(extra)
        r = run([prog('tls_nonblock'), '-c', certs.ca, '-r', '127.0.0.1', '-n', '2'] + extra +
                [be.url(path=path + '?delay_ms=20&pad=200000')])
        out = client_ok(r, 'tls_nonblock ' + ' '.join(extra))
        check_eq([s for s, _ in out['responses']], [200, 200], 'statuses')
        check_eq(len(out['responses'][0][1]['pad']), 200000, 'response padding read in full')
        recs = recs_for(be, path + '?', 2)
        check_sent_matches(out, recs)
        check_eq(recs[0]['body_sha256'], sha256(pattern(256 * 1024)), 'body is the pattern')
        check(r.stdout.strip().splitlines()[-1].startswith('nonblock want_read'),
              'summary line')


def tls_chunked(be, certs):
    r = run([prog('tls_chunked'), '-c', certs.ca, '-r', '127.0.0.1', '-e', '-t', '-s',
             '100000', be.url(path='/chunked-up')])
    out = client_ok(r, 'tls_chunked')
    [rec] = recs_for(be, '/chunked-up', 1)
    check_sent_matches(out, [rec])
    check(rec['chunked'], 'not logged as chunked')
    check(rec['expect_continue'], 'Expect: 100-continue not seen')
    check_eq(rec['trailers'], ['X-Test-Trailer: yes'], 'trailer')
    check_eq(header(rec, 'Transfer-Encoding'), ['chunked'], 'Transfer-Encoding')
    check_eq(header(rec, 'Content-Length'), [], 'no Content-Length')
    # A chunked response, read back by the client.
    r = run([prog('tls_chunked'), '-c', certs.ca, '-r', '127.0.0.1', '-s', '5',
             be.url(path='/chunked-resp?chunked=1')])
    out = client_ok(r, 'tls_chunked (chunked response)')
    check_eq(out['responses'][0][1]['body_sha256'], sha256(pattern(5)), 'echoed sha256')


def tls_pipeline(be, certs):
    n = 5
    r = run([prog('tls_pipeline'), '-c', certs.ca, '-r', '127.0.0.1', '-n', str(n), '-s', '777',
             be.url(path='/pipe')])
    out = client_ok(r, 'tls_pipeline')
    recs = recs_for(be, '/pipe', n)
    check_sent_matches(out, recs)
    check_eq([x['target'] for x in recs], ['/pipe?i=%d' % i for i in range(n)], 'order')
    check_eq(len({x['conn'] for x in recs}), 1, 'one connection')
    check_eq([b['seq'] for _, b in out['responses']], list(range(1, n + 1)), 'response order')
    # Pipelined: the first read already held more than the first request's head.
    check(recs[0]['buffered'] > len('GET /pipe?i=0 HTTP/1.1\r\n'), 'not pipelined: %d bytes'
          % recs[0]['buffered'])


def tls_fork_exec(be, certs):
    env = dict(os.environ, LD_PRELOAD='', DEPUTY_SESSION='test-session', DEPUTY_MARK='1')
    for mode in ('execve', 'execvpe', 'posix_spawn'):
        r = run([prog('tls_fork_exec'), '-m', mode, '--', '/usr/bin/env'], env=env)
        check_eq(r.returncode, 0, '%s: exit status' % mode)
        names = [line.split('=', 1)[0] for line in r.stdout.splitlines()]
        check('PATH' in names, '%s: child environment %r' % (mode, names))
        check(not [x for x in names if x == 'LD_PRELOAD' or x.startswith('DEPUTY_')],
              '%s: child environment still has %r' % (mode, names))
    r = run([prog('tls_fork_exec'), '-m', 'execvpe', '--'] +
            be.curl('-d', 'from-child', be.url(path='/forked')), env=env)
    check_eq(r.returncode, 0, 'child curl exit status (%s)' % r.stderr.strip())
    [rec] = recs_for(be, '/forked', 1)
    check_eq(body_bytes(rec), b'from-child', 'child body')
    r = run([prog('tls_fork_exec'), '--', '/bin/sh', '-c', 'exit 7'], env=env)
    check_eq(r.returncode, 7, 'child exit status passed on')


def tls_ctor(be, certs):
    r = run([prog('tls_ctor'), '-c', certs.ca, '-r', '127.0.0.1', '-d', 'early',
             be.url(path='/ctor')])
    out = client_ok(r, 'tls_ctor')
    check_eq(r.stdout.strip().splitlines()[-1], 'main ran', 'main after the constructor')
    check(r.stdout.startswith('ctor sent 5 '), 'constructor request first')
    check_eq(out['responses'][0][0], 200, 'status')
    [rec] = recs_for(be, '/ctor', 1)
    check_eq(body_bytes(rec), b'early', 'body')


def tls_echo(be_echo, certs):
    r = run([prog('tls_echo_client'), '-c', certs.ca, '-r', '127.0.0.1', '-s', '70000', '-n',
             '3', 'tls://echo.test:%d' % be_echo.port])
    check_eq(r.returncode, 0, 'tls_echo_client (%s %s)' % (r.stdout.strip(), r.stderr.strip()))
    words = r.stdout.split()
    check_eq(words[:3], ['echo', 'ok', '210000'], 'client result')
    recs = be_echo.wait_records('echo', 1)
    check(any(x['bytes'] == 210000 and x['sha256'] == words[3] and x['sni'] == 'echo.test'
              for x in recs), 'echo not logged as sent: %r' % recs)


# ---- tokens ---------------------------------------------------------------------------

def token_absent(be, certs):
    r = run([prog('tls_onebyte'), '-c', certs.ca, '-r', '127.0.0.1', '-A', '-',
             be.url(path='/no-token')])
    out = client_ok(r, 'tls_onebyte -A -')
    [rec] = recs_for(be, '/no-token', 1)
    check_eq(header(rec, 'Authorization'), [], 'no Authorization sent')
    check_eq((rec['token']['present'], rec['token']['valid']), (False, False), 'token result')
    check_eq(out['responses'][0][1]['token']['valid'], False, 'echoed token result')


def token_two_headers(be, certs):
    r = run([prog('tls_onebyte'), '-c', certs.ca, '-r', '127.0.0.1', '-H',
             'Authorization: Bearer second', be.url(path='/two-auth')])
    client_ok(r, 'tls_onebyte')
    [rec] = recs_for(be, '/two-auth', 1)
    check_eq(len(header(rec, 'Authorization')), 2, 'both headers logged')
    check_eq(rec['token']['valid'], False, 'two Authorization headers are invalid')


def token_custom_header(d, certs):
    with Backend(d, certs=certs, token_header='X-Deputy-Token', name='hdr') as beh:
        r = run([prog('tls_onebyte'), '-c', certs.ca, '-r', '127.0.0.1', '-H',
                 'X-Deputy-Token: Bearer abc', beh.url(path='/custom-header')])
        client_ok(r, 'tls_onebyte')
        [rec] = recs_for(beh, '/custom-header', 1)
        check(rec['token']['present'], 'token in X-Deputy-Token not found: %r' % rec['token'])
        check_eq(header(rec, 'Authorization'), [SERVICE_ACCOUNT], 'Authorization untouched')


def token_cases(be, certs, issuer):
    good = issuer.token(AUD, 'api:read', sub='alice', htm='GET',
                        htu='https://api.test/tok-good')
    r = run([prog('tls_onebyte'), '-c', certs.ca, '-r', '127.0.0.1', '-A', 'Bearer ' + good,
             be.url(path='/tok-good')])
    out = client_ok(r, 'tls_onebyte (valid token)')
    [rec] = recs_for(be, '/tok-good', 1)
    if (rec['token']['error'] or '').startswith('not checked'):
        raise Skip('backend built without deputy_verify (daemon/lib/verify.c): %s'
                   % rec['token']['error'])
    check_eq(rec['token']['valid'], True, 'valid token (%s)' % rec['token']['error'])
    check_eq(rec['token']['claims']['sub'], 'alice', 'claims.sub')
    echoed = out['responses'][0][1]['token']
    check_eq((echoed['scope'], echoed['aud'], echoed['sub']), ('api:read', AUD, 'alice'),
             'echoed claims')
    bad = {
        'tok-aud': issuer.token('https://other.test', 'api:read'),
        'tok-expired': issuer.token(AUD, 'api:read', ttl=-300),
        'tok-tampered': good[:-4] + ('AAAA' if not good.endswith('AAAA') else 'BBBB'),
        'tok-garbage': 'not.a.jwt',
        'tok-svc': SERVICE_ACCOUNT[len('Bearer '):],
    }
    for name, tok in bad.items():
        r = run([prog('tls_onebyte'), '-c', certs.ca, '-r', '127.0.0.1', '-A', 'Bearer ' + tok,
                 be.url(path='/' + name)])
        client_ok(r, 'tls_onebyte (%s)' % name)
        [rec] = recs_for(be, '/' + name, 1)
        check_eq(rec['token']['valid'], False, '%s is invalid' % name)
        check(rec['token']['error'], '%s: a reason is logged' % name)


# ---- the backend itself ------------------------------------------------------------------

def tls_raw(be, certs, data, host='api.test'):
    """Sends raw bytes over TLS, returns everything the backend answers until it closes."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    with socket.create_connection(('127.0.0.1', be.port), timeout=20) as s:
        with ctx.wrap_socket(s, server_hostname=host) as ts:
            ts.sendall(data)
            got = b''
            while True:
                chunk = ts.recv(65536)
                if not chunk:
                    return got
                got += chunk


def refuses_malformed(be, certs):
    got = tls_raw(be, certs, b'POST /smuggle HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\n'
                             b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
    check(got.startswith(b'HTTP/1.1 400 '), 'CL+TE answered %r' % got[:40])
    got = tls_raw(be, certs, b'GET /big HTTP/1.1\r\nHost: api.test\r\nX-Big: ' + b'a' * 70000 +
                  b'\r\n\r\n')
    check(got.startswith(b'HTTP/1.1 431 '), 'oversized head answered %r' % got[:40])
    got = tls_raw(be, certs, b'GET /fold HTTP/1.1\r\nHost: api.test\r\nX-A: 1\r\n b\r\n\r\n')
    check(got.startswith(b'HTTP/1.1 400 '), 'obs-fold answered %r' % got[:40])
    errors = [x['error'] for x in be.records('error')]
    check(len(errors) >= 3, 'errors logged: %r' % errors)
    check_eq(recs_for(be, '/smuggle') + recs_for(be, '/big') + recs_for(be, '/fold'), [],
             'malformed requests logged as requests')


def h2_hostile_frames(be_h2, certs):
    """Frames on stream 0, truncated frames, unknown types: the backend survives them."""
    import struct

    def frame(t, f, sid, payload):
        return struct.pack('>I', len(payload))[1:] + bytes([t, f]) + struct.pack('>I', sid) + \
            payload

    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.set_alpn_protocols(['h2'])
    bad = [frame(0, 1, 0, b'data on stream 0'), frame(1, 5, 0, b'\x82'),
           frame(9, 4, 7, b'\x82'), frame(0x42, 0, 1, b'x' * 10), frame(1, 0x28, 3, b'\x05'),
           frame(0, 9, 1, b'\xff')]
    for f in bad:
        with socket.create_connection(('127.0.0.1', be_h2.port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname='api.test') as ts:
                check_eq(ts.selected_alpn_protocol(), 'h2', 'ALPN')
                ts.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + frame(4, 0, 0, b'') + f)
                ts.shutdown(socket.SHUT_WR)
                try:
                    while ts.recv(65536):
                        pass
                except OSError:
                    pass
    r = run(be_h2.curl('--http2', '-w', '\n%{http_version}\n', be_h2.url(path='/after')))
    check_eq(r.stdout.strip().splitlines()[-1:], ['2'], 'still serving h2 (%s)' % r.stderr.strip())


def status_shaping(be, certs):
    r = run(be.curl('-o', '/dev/null', '-w', '%{http_code}', be.url(path='/shape?status=404')))
    check_eq(r.stdout, '404', 'status=404')
    r = run([prog('tls_pipeline'), '-c', certs.ca, '-r', '127.0.0.1', '-n', '3',
             be.url(path='/shape-close?close=1')])
    # The backend closes after the first answer, so the client sees EOF on the second.
    check(r.returncode != 0, 'pipelined requests after Connection: close were answered')
    check_eq(len(recs_for(be, '/shape-close')), 1, 'requests served before close')


def plain_http(be_plain, d):
    data = os.urandom(5000)
    path = os.path.join(d, 'plain.bin')
    with open(path, 'wb') as f:
        f.write(data)
    r = run(be_plain.curl('--data-binary', '@' + path, be_plain.url(path='/plain')))
    check_eq(r.returncode, 0, 'curl exit status (%s)' % r.stderr.strip())
    [rec] = recs_for(be_plain, '/plain', 1)
    check(not rec['tls'], 'logged as TLS')
    check(body_bytes(rec) == data, 'body bytes differ')
    for client, extra in (('tls_onebyte', ['-n', '2']), ('tls_nonblock', []),
                          ('tls_chunked', ['-e']), ('tls_pipeline', ['-n', '3'])):
        p = '/plain-' + client
        r = run([prog(client), '-r', '127.0.0.1', '-s', '1000'] + extra +
                [be_plain.url(path=p)])
        out = client_ok(r, client + ' over http')
        check_sent_matches(out, recs_for(be_plain, p))


def ipv6(d, certs):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(('::1', 0))
    except OSError as e:
        raise Skip('no IPv6 loopback: %s' % e)
    with Backend(d, certs=certs, listen='[::1]:0', name='v6') as be6:
        r = run(['curl', '-sS', '-g', '--cacert', certs.ca, 'https://[::1]:%d/v6' % be6.port])
        check_eq(r.returncode, 0, 'curl exit status (%s)' % r.stderr.strip())
        [rec] = recs_for(be6, '/v6', 1)
        check(rec['peer'].startswith('[::1]:'), 'peer %s' % rec['peer'])
        check_eq(rec['sni'], None, 'no SNI for an IP literal')


def clean_exit(d, certs):
    be = Backend(d, certs=certs, name='exit').start()
    ctx = ssl.create_default_context(cafile=certs.ca)
    idle = socket.create_connection(('127.0.0.1', be.port))
    busy = ctx.wrap_socket(socket.create_connection(('127.0.0.1', be.port)),
                           server_hostname='api.test')
    try:
        busy.sendall(b'POST /half HTTP/1.1\r\nHost: api.test\r\nContent-Length: 10\r\n\r\nab')
        check_eq(be.stop(), 0, 'exit status after SIGTERM with open connections')
    finally:
        idle.close()
        busy.close()
    check(be.proc.poll() is not None, 'still running')


def refuses_non_loopback(d):
    r = run([dt.BACKEND_BIN, '--listen', '0.0.0.0:0'])
    check(r.returncode != 0 and 'loopback' in r.stderr, 'listened on 0.0.0.0: %r' % r.stderr)


# name, function, and the fixtures main() passes it, in order
CASES = [
    ('curl_get', curl_get, 'be'),
    ('curl_post_binary_body', curl_post, 'be', 'dir'),
    ('curl_keepalive_two_urls', curl_keepalive, 'be'),
    ('curl_http2_gets_h2_without_deputy', curl_http2, 'be_h2'),
    ('python_urllib', python_urllib, 'be', 'certs'),
    ('libcurl_threads_keepalive', curl_threads, 'be', 'certs'),
    ('onebyte_writes', tls_onebyte, 'be', 'certs'),
    ('nonblocking_client', tls_nonblock, 'be', 'certs'),
    ('chunked_upload_expect_trailer', tls_chunked, 'be', 'certs'),
    ('pipelined_requests', tls_pipeline, 'be', 'certs'),
    ('fork_exec_strips_environment', tls_fork_exec, 'be', 'certs'),
    ('constructor_request', tls_ctor, 'be', 'certs'),
    ('tls_echo', tls_echo, 'be_echo', 'certs'),
    ('token_absent', token_absent, 'be', 'certs'),
    ('token_two_authorization_headers', token_two_headers, 'be', 'certs'),
    ('token_valid_and_invalid', token_cases, 'be', 'certs', 'issuer'),
    ('token_custom_header', token_custom_header, 'dir', 'certs'),
    ('backend_refuses_malformed', refuses_malformed, 'be', 'certs'),
    ('backend_response_shaping', status_shaping, 'be', 'certs'),
    ('backend_h2_hostile_frames', h2_hostile_frames, 'be_h2', 'certs'),
    ('plain_http', plain_http, 'be_plain', 'dir'),
    ('ipv6_loopback', ipv6, 'dir', 'certs'),
    ('backend_refuses_non_loopback', refuses_non_loopback, 'dir'),
    ('clean_exit_on_sigterm', clean_exit, 'dir', 'certs'),
]


def main():
    with TempDir() as d:
        certs = make_certs(d)
        issuer = TestIssuer(d)
        with Backend(d, certs=certs, jwks=issuer.jwks, audience=AUD, name='main') as be, \
                Backend(d, certs=certs, h2=True, name='h2') as be_h2, \
                Backend(d, certs=certs, echo=True, name='echo') as be_echo, \
                Backend(d, name='plain') as be_plain:
            fixtures = {'be': be, 'be_h2': be_h2, 'be_echo': be_echo, 'be_plain': be_plain,
                        'dir': d, 'certs': certs, 'issuer': issuer}
            for name, fn, *args in CASES:
                run_case(name, fn, *[fixtures[a] for a in args])
            for b in (be, be_h2, be_echo, be_plain):
                status = b.stop()
                if status != 0:
                    run_case('backend_%s_exit' % b.name, check, False,
                             'exited %s: %s' % (status, b.stderr()))
    dt.finish()


if __name__ == '__main__':
    main()
