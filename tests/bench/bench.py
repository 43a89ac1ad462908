# SPDX-License-Identifier: MIT
"""What deputy costs an agent, measured against the same work without it, in one run.

Run by tests/bench/run.sh (`make bench`) with Debian's /usr/bin/python3. Prints one table and
writes the same numbers to $BUILD/bench.json. Every "with deputy" number has its "without"
twin measured in the same run, alternating rounds, because absolute times on a shared
machine mean little. Nothing here passes or fails on a timing: a benchmark reports.

Rows:
  request   keep-alive HTTPS loop (tests/bench/req_loop.c, libcurl) to tests/backend:
            outside deputy, in a session with the kernel layer only, and with the shim
            (per-request and session-bound tokens) once build/libdeputy.so hooks SSL_write
  mint      DECIDE round trips over deputyd's socket from inside a session
            (tests/bench/mint_rtt.c), throughput at 1/2/4/16 clients, openssl speed
  connect   connect()+close() to a loopback listener inside vs outside a session
            (tests/bench/connect_rate.c), and the kernel layer's lost events
  memory    deputyd VmRSS idle and with 100 open sessions; the shim's added client RSS
  proxy     the same keep-alive loop through deputy's proxy (no shim) vs direct, per request
            and per new connection, and the proxy's RSS per open connection
"""
import atexit
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))

import deputytest as dt  # noqa: E402
from deputytest import Backend, TempDir, make_certs  # noqa: E402

BUILD = dt.BUILD
BENCH = os.path.join(BUILD, 'tests', 'bench')
REQ_LOOP = os.path.join(BENCH, 'req_loop')
MINT_RTT = os.path.join(BENCH, 'mint_rtt')
CONNECT_RATE = os.path.join(BENCH, 'connect_rate')

REQUESTS = int(os.environ.get('BENCH_REQUESTS', '5000'))
ROUNDS = int(os.environ.get('BENCH_ROUNDS', '3'))
SESSIONS = int(os.environ.get('BENCH_SESSIONS', '100'))
CONNECT_MS = int(os.environ.get('BENCH_CONNECT_MS', '2000'))
MINT_N = int(os.environ.get('BENCH_MINT_N', '2000'))
PROXY_CONNS = int(os.environ.get('BENCH_PROXY_CONNS', '100'))
# BENCH_ONLY=proxy (comma-separated section names) runs only those sections.
ONLY = set(filter(None, os.environ.get('BENCH_ONLY', '').split(',')))


def wanted(section):
    return not ONLY or section in ONLY

rows = []      # the table, in order
env_info = {}  # machine and build facts


def log(msg):
    print('bench: ' + msg, file=sys.stderr, flush=True)


def row(section, what, how, without=None, with_=None, result=None, target=None, met=None,
        unit='', **extra):
    r = {'section': section, 'what': what, 'how': how, 'without': without, 'with': with_,
         'result': result, 'target': target, 'met': met, 'unit': unit}
    r.update(extra)
    rows.append(r)
    return r


# ---- helpers ------------------------------------------------------------------------------

def shim_hooks_ssl():
    """The shim's request rows run only once libdeputy.so exports SSL_write."""
    try:
        out = subprocess.run(['nm', '-D', '--defined-only', dt.SHIM], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(l.split()[-1] == 'SSL_write' for l in out.splitlines() if l.strip())


def run_json(cmd, env=None, timeout=300):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in reversed(r.stdout.splitlines()):
        if line.startswith('{'):
            return json.loads(line), r
    raise RuntimeError('%s printed no result (exit %d): %s' % (
        os.path.basename(cmd[0]), r.returncode, (r.stderr or r.stdout)[-600:]))


def in_session(d, grant, cmd, shim=True):
    """cmd run as a session of deputyd d (`deputy run`); without the shim unless shim.
    Returns (session id, result JSON)."""
    inner = 'echo "session=$DEPUTY_SESSION"; exec %s"$@"' % ('' if shim else 'env -u LD_PRELOAD ')
    full = [dt.DEPUTY, 'run', '--grant', grant, '--agent', 'mailbot', '--',
            'sh', '-c', inner, 'sh'] + cmd
    res, r = run_json(full, env=d.env())
    m = re.search(r'^session=(\S+)', r.stdout, re.M)
    return (m.group(1) if m else None), res


def last_request(be):
    """The backend's last logged request (read from the end: the log holds thousands)."""
    with open(be.log, 'rb') as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 262144))
        lines = [l for l in f.read().split(b'\n') if l.startswith(b'{')]
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get('type') == 'request':
            return rec
    return None


def deputy_token_arrived(be):
    """Whether the last request reached the backend with a deputy token in place of the
    service account's credential: the shim rows measure nothing unless it did."""
    rec = last_request(be)
    auth = [v for n, v in (rec or {}).get('headers', []) if n.lower() == 'authorization']
    if len(auth) != 1 or not auth[0].startswith('Bearer ') or auth[0].count('.') != 2:
        return False
    try:
        return dt.decode_jwt(auth[0][7:]).get('iss') == dt.ISSUER
    except Exception:  # noqa: BLE001 - not a JWT at all
        return False


def read_times(path):
    with open(path) as f:
        return [float(x) for x in f if x.strip()]


def quantile(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0


def openssl_sign_rate(seconds=2):
    """ECDSA P-256 signatures per CPU second (openssl speed counts user time)."""
    r = subprocess.run(['openssl', 'speed', '-seconds', str(seconds), 'ecdsap256'],
                       capture_output=True, text=True, timeout=120)
    for line in r.stdout.splitlines():
        if 'nistp256' in line:
            return float(line.split()[-2])
    return None


def proc_rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return None


def session_close_counts(d, sid):
    recs = d.wait_closed(sid, timeout=60, kernel=True)
    return recs, recs[-1].get('counts', {})


def new_deputyd(backend_port, **config):
    routes = [{'host': 'api.test', 'port': backend_port, 'method': 'POST', 'path': '/send*',
               'action': 'delegate', 'audience': 'https://api.test', 'scope': 'email:send',
               'addrs': ['127.0.0.1']}]
    d = dt.Deputyd(routes=routes, allow_cidrs=['127.0.0.0/8'], **config).start()
    return d


def grant_for(d):
    return d.grant_file(d.idp.grant(user='alice', agent='mailbot', scope='email:send',
                                    resource=['https://api.test'], ttl=3600))


# ---- 1. request overhead --------------------------------------------------------------------

def bench_requests(tmp, certs, be, have_shim):
    url = 'https://api.test:%d/send' % be.port
    base_cmd = [REQ_LOOP, '-c', certs.ca, '-R', be.resolve('api.test'), '-n', str(REQUESTS),
                '-w', '200', '-s', '64']
    runs = {}

    def one(name, d=None, grant=None, shim=False):
        out = os.path.join(tmp, '%s-%d.times' % (name, len(runs.get(name, []))))
        cmd = base_cmd + ['-o', out, url]
        if d is None:
            res, _ = run_json(cmd)
        else:
            _, res = in_session(d, grant, cmd, shim=shim)
        res['times'] = read_times(out)
        res['token_injected'] = deputy_token_arrived(be)
        if shim and not res['token_injected']:
            log('%s: the backend did not receive a deputy token' % name)
        runs.setdefault(name, []).append(res)
        if res['errors']:
            log('%s: %d of %d requests failed (last status %d)' % (
                name, res['errors'], res['n'], res['last_status']))

    def summary(name):
        rs = runs[name]
        times = [t for r in rs for t in r['times']]
        return {'wall_us': statistics.median(r['wall_us'] for r in rs),
                'per_req_us': statistics.median(r['wall_us'] for r in rs) / rs[0]['n'],
                'p50_us': quantile(times, 0.5), 'p99_us': quantile(times, 0.99),
                'errors': sum(r['errors'] for r in rs), 'rss_kib': rs[-1]['rss_kib'],
                'token_injected': all(r['token_injected'] for r in rs),
                'rounds': len(rs), 'n': rs[0]['n']}

    how = ('req_loop: libcurl, one keep-alive HTTPS/1.1 connection, %d POSTs of 64 B to '
           'tests/backend on loopback after 200 warm-up; median wall of %d alternating '
           'rounds; added p50/p99 from all per-request times' % (REQUESTS, ROUNDS))

    def add_row(what, name, limit, extra_how=''):
        b, w = summary('base:' + name), summary(name)
        target = '≤ %.2f×' % limit if limit else None
        if name.startswith('shim'):
            extra_how += ('; the backend received deputy tokens in place of the service '
                          'account\'s: %s' % ('yes' if w['token_injected'] else 'NO'))
        ratio = w['wall_us'] / b['wall_us']
        add50, add99 = w['p50_us'] - b['p50_us'], w['p99_us'] - b['p99_us']
        row('request', what, how + extra_how,
            without='%.1f µs/req' % b['per_req_us'], with_='%.1f µs/req' % w['per_req_us'],
            result='%.3f× wall; p50 %+.1f µs, p99 %+.1f µs' % (ratio, add50, add99),
            target=target, met=(ratio <= limit and w['token_injected'] and not w['errors'])
            if limit else None,
            ratio=ratio, added_p50_us=add50, added_p99_us=add99, base=b, deputy=w)
        return w

    # Phase A: per-request tokens (the default), kernel layer on when it can be.
    d = new_deputyd(be.port)
    env_info['kernel_layer'] = d.config['kernel']
    grant = grant_for(d)
    try:
        for _ in range(ROUNDS):
            one('base:kernel')
            one('kernel', d, grant, shim=False)
            if have_shim:
                one('base:shim-request')
                one('shim-request', d, grant, shim=True)
    finally:
        d.cleanup()
    add_row('in a session, kernel layer only (no shim)', 'kernel', None,
            '; LD_PRELOAD removed, so this is the cgroup hooks and nothing else')
    if have_shim:
        w = add_row('shim, per-request tokens', 'shim-request', 1.20)
        shim_rss = w['rss_kib'] - summary('kernel')['rss_kib']
    else:
        row('request', 'shim, per-request tokens', how, result='n/a (shim not built)',
            target='≤ 1.20×')
        shim_rss = None

    # Phase B: session-bound tokens.
    if have_shim:
        d = new_deputyd(be.port, token_binding='session')
        grant = grant_for(d)
        try:
            for _ in range(ROUNDS):
                one('base:shim-session')
                one('shim-session', d, grant, shim=True)
        finally:
            d.cleanup()
        add_row('shim, "token_binding": "session"', 'shim-session', 1.05)
    else:
        row('request', 'shim, "token_binding": "session"', how, result='n/a (shim not built)',
            target='≤ 1.05×')
    return shim_rss


# ---- MCP: what an MCP route adds to a call ----------------------------------------------------

def bench_mcp(tmp, certs, be, have_shim):
    """A tools/call to an MCP route against a plain POST of the same bytes to a plain route,
    both through the shim, alternating rounds: the body read whole, the JSON-RPC reader, the
    SHA-256 and deputyd's second DECIDE."""
    what = 'shim: MCP tools/call vs a plain POST of the same size'
    if not have_shim:
        row('mcp', what, '', result='n/a (shim not built)')
        return
    routes = [{'host': 'api.test', 'port': be.port, 'method': 'POST', 'path': path,
               'action': 'delegate', 'audience': 'https://api.test', 'scope': 'email:send',
               'addrs': ['127.0.0.1']} for path in ('/send*', '/mcp')]
    routes[1]['mcp'] = {'tools': {'read_inbox': 'email:send', '*': 'deny'}}
    d = dt.Deputyd(routes=routes, allow_cidrs=['127.0.0.0/8']).start()
    grant = grant_for(d)
    n = max(REQUESTS // 5, 200)
    try:
        for size in (1024, 4096):
            runs = {'plain': [], 'mcp': []}
            for _ in range(ROUNDS):
                for kind, path in (('plain', '/send'), ('mcp', '/mcp')):
                    out = os.path.join(tmp, 'mcp-%s-%d.times' % (kind, size))
                    cmd = [REQ_LOOP, '-c', certs.ca, '-R', be.resolve('api.test'), '-n',
                           str(n), '-w', '100', '-s', str(size), '-m', '-o', out,
                           'https://api.test:%d%s' % (be.port, path)]
                    _, res = in_session(d, grant, cmd, shim=True)
                    res['times'] = read_times(out)
                    if res['errors'] or not deputy_token_arrived(be):
                        log('mcp %s %d B: %d errors, token %s' % (
                            kind, size, res['errors'], deputy_token_arrived(be)))
                    runs[kind].append(res)
            per = {k: statistics.median(r['wall_us'] for r in v) / n for k, v in runs.items()}
            p50 = {k: quantile([t for r in v for t in r['times']], 0.5)
                   for k, v in runs.items()}
            row('mcp', '%s (%d B)' % (what, size),
                'req_loop -m: libcurl, one keep-alive connection, %d POSTs of a %d B '
                'JSON-RPC tools/call to an MCP route and, alternating, to a plain delegate '
                'route; median of %d rounds' % (n, size, ROUNDS),
                without='%.1f µs/req' % per['plain'], with_='%.1f µs/req' % per['mcp'],
                result='%+.1f µs per call (p50 %+.1f µs), %.3f×' % (
                    per['mcp'] - per['plain'], p50['mcp'] - p50['plain'],
                    per['mcp'] / per['plain']),
                added_us=per['mcp'] - per['plain'])
    finally:
        d.cleanup()


# ---- 2. mint round trip -----------------------------------------------------------------------

def bench_mint(be, sign_rate):
    d = new_deputyd(be.port)
    grant = grant_for(d)
    try:
        time.sleep(0.5)  # deputyd idle after start, as it is between an agent's bursts
        _, res = in_session(d, grant, [MINT_RTT, '-P', str(be.port), '-n', str(MINT_N),
                                       '-w', '100', '-T', '1,2,4,16', '-d', '1500',
                                       '-p', str(d.proc.pid)], shim=False)
    finally:
        d.stop()
        stats = re.findall(r'presign pool: (\d+) hits, (\d+) misses', d.log_text())
        d.cleanup()
    lat, full, echo = res['latency'], res['latency_full_sign'], res['echo']
    how = ('mint_rtt in a session speaks proto.h: %d sequential DECIDEs for a delegate route '
           '(decision + ES256 mint + audit record) over the Unix socket, after 0.5 s idle' %
           lat['n'])
    if stats:
        how += '; deputyd\'s presign pool over the whole run: %s hits, %s misses' % stats[-1]
    how += ('; "without" = the same round trips to an echo process over a socketpair, '
            'answered with 700 bytes')
    row('mint', 'mint round trip', how,
        without='%.0f/%.0f µs' % (echo['p50_us'], echo['p99_us']),
        with_='%.0f/%.0f µs' % (lat['p50_us'], lat['p99_us']),
        result='p50 %.1f µs, p99 %.1f µs' % (lat['p50_us'], lat['p99_us']),
        target='p50 ≤ 30, p99 ≤ 150 µs',
        met=lat['p50_us'] <= 30 and lat['p99_us'] <= 150, unit='µs', latency=lat,
        met_p50=lat['p50_us'] <= 30, met_p99=lat['p99_us'] <= 150,
        errors=lat['errors'], presign=stats[-1] if stats else None, echo=echo)
    row('mint', 'mint round trip, nonce pool empty',
        '%d more sequential DECIDEs right after the 16-client step: no idle time, so every '
        'token is signed in full' % full['n'],
        with_='%.0f/%.0f µs' % (full['p50_us'], full['p99_us']),
        result='p50 %.1f µs, p99 %.1f µs' % (full['p50_us'], full['p99_us']), unit='µs',
        latency=full, errors=full['errors'])
    row('mint', 'openssl speed ecdsap256', 'openssl speed -seconds 2 ecdsap256 (per CPU second)',
        result='%.0f sign/s' % sign_rate if sign_rate else 'n/a', sign_per_s=sign_rate)
    for t in res['throughput']:
        per_core = (t['tokens'] / t['daemon_cpu_s']) if t['daemon_cpu_s'] > 0 else None
        frac = per_core / sign_rate if per_core and sign_rate else None
        row('mint', 'daemon throughput, %d client%s' % (t['clients'], 's' if t['clients'] > 1
                                                         else ''),
            '%d threads, one connection each, back-to-back DECIDEs for %.1f s; per core = '
            'tokens / deputyd CPU seconds (/proc/PID/stat)' % (t['clients'], t['secs']),
            result='%.0f tok/s; %.2f cores; %s/core = %s' % (
                t['tokens_per_s'], t['daemon_cpu_s'] / t['secs'],
                '%.0f' % per_core if per_core else 'n/a',
                '%.0f%%' % (100 * frac) if frac else 'n/a'),
            target='≥ 80% openssl/core', met=(frac >= 0.8) if frac else None,
            tokens_per_s=t['tokens_per_s'], daemon_cores=t['daemon_cpu_s'] / t['secs'],
            per_core=per_core, of_openssl=frac, errors=t['errors'])


# ---- 3. connect() ------------------------------------------------------------------------------

def bench_connect(be):
    listener = subprocess.Popen([CONNECT_RATE, '-l'], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
    try:
        port = int(listener.stdout.readline().split()[1])
        d = new_deputyd(be.port)
        grant = grant_for(d)
        kernel = d.config['kernel'] == 'on'
        base, inside, lost = [], [], []
        try:
            for _ in range(2):
                base.append(run_json([CONNECT_RATE, '-d', str(CONNECT_MS), str(port)])[0])
                sid, res = in_session(d, grant, [CONNECT_RATE, '-d', str(CONNECT_MS),
                                                 str(port)], shim=False)
                recs, counts = session_close_counts(d, sid)
                res['logged'] = sum(1 for r in recs if r['type'] == 'connect' and
                                    r.get('dport') == port)
                res['lost_total'] = counts.get('lost_events', 0)
                inside.append(res)
            sid, paced = in_session(d, grant, [CONNECT_RATE, '-d', str(CONNECT_MS), '-r',
                                               '20000', str(port)], shim=False)
            recs, counts = session_close_counts(d, sid)
            paced['logged'] = sum(1 for r in recs if r['type'] == 'connect' and
                                  r.get('dport') == port)
            paced['lost_total'] = counts.get('lost_events', 0)
        finally:
            d.cleanup()
    finally:
        listener.terminate()
        listener.wait()
    b = statistics.median(r['per_s'] for r in base)
    i = statistics.median(r['per_s'] for r in inside)
    how = ('connect_rate: socket+connect+close(SO_LINGER 0) to a loopback listener outside '
           'any session, %d ms, median of 2 alternating rounds; kernel layer %s' % (
               CONNECT_MS, 'on' if kernel else 'OFF (no BPF here)'))
    row('connect', 'connects/s, inside vs outside a session', how,
        without='%.0f/s' % b, with_='%.0f/s' % i, result='%.3f× time per connect' % (b / i),
        target='≤ 1.05×', met=(b / i) <= 1.05, ratio=b / i, base=base, inside=inside)
    # lost_events is deputyd's kernel-wide counter: the last session's value covers all runs.
    worst = max(inside, key=lambda r: r['per_s'])
    row('connect', 'lost events at the highest rate',
        'the fastest in-session run (%.0f connects/s); lost = kernel ring buffer drops '
        '(session_close counts.lost_events), logged = its connect records' % worst['per_s'],
        result='%d lost; %d/%d logged' % (worst['lost_total'], worst['logged'],
                                          worst['connects']),
        target='0 lost', met=worst['lost_total'] == 0 and worst['logged'] == worst['connects'],
        lost=worst['lost_total'], logged=worst['logged'], connects=worst['connects'])
    row('connect', 'lost events at 20,000 connects/s',
        'connect_rate -r 20000 in a session for %d ms' % CONNECT_MS,
        result='%.0f/s; %d lost; %d/%d logged' % (
            paced['per_s'], paced['lost_total'], paced['logged'], paced['connects']),
        target='0 lost at 20,000/s',
        # zero loss below the target rate proves nothing about the target rate
        met=(paced['lost_total'] == 0 and paced['logged'] == paced['connects'])
        if paced['per_s'] >= 19000 or paced['lost_total'] else None,
        lost=paced['lost_total'], logged=paced['logged'], connects=paced['connects'],
        per_s=paced['per_s'])


# ---- 4. memory ----------------------------------------------------------------------------------

def bench_memory(be, shim_rss):
    d = new_deputyd(be.port)
    grant = grant_for(d)
    procs = []
    try:
        time.sleep(0.5)
        idle = proc_rss_kib(d.proc.pid)
        for _ in range(SESSIONS):
            procs.append(subprocess.Popen(
                [dt.DEPUTY, 'run', '--grant', grant, '--agent', 'mailbot', '--', 'sleep', '600'],
                env=d.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        open_n = 0
        while time.time() < deadline:
            open_n = sum(1 for s in d.sessions() if s.get('state') == 'open')
            if open_n >= SESSIONS:
                break
            time.sleep(0.2)
        time.sleep(0.3)
        busy = proc_rss_kib(d.proc.pid)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        d.cleanup()
    row('memory', 'deputyd RSS with %d open sessions' % open_n,
        'VmRSS of deputyd (/proc/PID/status) idle after start, then with %d `deputy run -- '
        'sleep` sessions open' % open_n,
        without='%.1f MiB idle' % (idle / 1024), with_='%.1f MiB' % (busy / 1024),
        result='+%.1f KiB per session' % ((busy - idle) / max(open_n, 1)),
        idle_kib=idle, busy_kib=busy, sessions=open_n)
    row('memory', "shim's added RSS in a client",
        'VmRSS of req_loop at its end, with the shim vs in a session without it',
        result=('%+d KiB' % shim_rss) if shim_rss is not None else 'n/a (shim not built)',
        added_kib=shim_rss)


# ---- 5. the proxy ------------------------------------------------------------------------------

# Holds N keep-alive TLS connections through the proxy, each after one request, until stdin
# closes: what an open connection costs the proxy.
HOLD_PY = r'''
import http.client, ssl, sys
host, port, n, cafile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
conns = []
for i in range(n):
    c = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
    c.request("POST", "/send", body=b"x" * 64, headers={"Authorization": "Bearer sa"})
    c.getresponse().read()
    conns.append(c)
print("ready", flush=True)
sys.stdin.read()
'''


def proxy_pid(d):
    pids = re.findall(r'proxy started \(pid (\d+)', d.log_text())
    return int(pids[-1]) if pids else None


def bench_proxy(tmp, certs, be):
    """Requests through deputy's proxy (a client without the shim) against the same client
    straight to the backend: per request on one keep-alive connection, and per new
    connection; then the proxy's memory per open connection."""
    url = 'https://api.test:%d/send' % be.port
    base_cmd = [REQ_LOOP, '-R', be.resolve('api.test'), '-w', '50', '-s', '64']
    # In the session the client trusts the session's CA, the last certificate of deputy
    # run's bundle ($SSL_CERT_FILE), alone, as the client outside trusts the test CA alone:
    # libcurl 7.88 re-reads its CA file for each new connection, and OpenSSL 3.0 takes
    # ~150-200 ms here to parse the bundle's ~140 system roots, which would swamp what the
    # proxy adds (the bundle's cost is a client's, with or without the proxy; see README).
    in_bundle = ['sh', '-c', 'f=$(mktemp) || exit 1; awk \'/BEGIN CERTIFICATE/ {b = ""} '
                 '{b = b $0 "\\n"} END {printf "%s", b}\' "$SSL_CERT_FILE" >"$f"; '
                 '"$0" -c "$f" "$@"; r=$?; rm -f "$f"; exit $r']
    d = new_deputyd(be.port, proxy_listen='127.0.0.1:%d' % dt.free_port(),
                    upstream_ca_file=certs.ca)
    grant = grant_for(d)
    runs = {}
    n_conn = max(50, REQUESTS // 20)

    def one(name, args, n, inside):
        out = os.path.join(tmp, '%s-%d.times' % (name, len(runs.get(name, []))))
        cmd = base_cmd + ['-n', str(n), '-o', out] + args + [url]
        if inside:
            _, res = in_session(d, grant, in_bundle + cmd[:1] + cmd[1:], shim=False)
        else:
            res, _ = run_json(cmd[:1] + ['-c', certs.ca] + cmd[1:])
        res['times'] = read_times(out)
        res['token_injected'] = deputy_token_arrived(be)
        if inside and not res['token_injected']:
            log('%s: the backend did not receive a deputy token' % name)
        if res['errors']:
            log('%s: %d of %d requests failed (last status %d)' % (
                name, res['errors'], res['n'], res['last_status']))
        runs.setdefault(name, []).append(res)

    try:
        for _ in range(ROUNDS):
            one('base:keepalive', [], REQUESTS, False)
            one('keepalive', [], REQUESTS, True)
            one('base:fresh', ['-f'], n_conn, False)
            one('fresh', ['-f'], n_conn, True)
        pid = proxy_pid(d)
        idle = proc_rss_kib(pid) if pid else None
        hold = subprocess.Popen(
            [dt.DEPUTY, 'run', '--grant', grant, '--agent', 'mailbot', '--', 'sh', '-c',
             'exec env -u LD_PRELOAD "$0" -c "$1" api.test "$2" "$3" "$SSL_CERT_FILE"',
             dt.PYTHON, HOLD_PY, str(be.port), str(PROXY_CONNS)],
            env=d.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = hold.stdout.readline().strip() == 'ready'
        busy = proc_rss_kib(pid) if pid and ready else None
        hold.stdin.close()
        hold.wait(60)
    finally:
        d.cleanup()

    def summary(name):
        rs = runs[name]
        times = [t for r in rs for t in r['times']]
        return {'per_req_us': statistics.median(r['wall_us'] / r['n'] for r in rs),
                'p50_us': quantile(times, 0.5), 'p99_us': quantile(times, 0.99),
                'errors': sum(r['errors'] for r in rs),
                'token_injected': all(r['token_injected'] for r in rs)}

    how = ('req_loop (libcurl) in a session without the shim, so the kernel sends it to the '
           'proxy, trusting the session CA alone, against the same client straight to '
           'tests/backend; %d alternating rounds; ' % ROUNDS)
    for name, what, n, limit, unit in (
            ('keepalive', 'proxy, per request (keep-alive)', REQUESTS, 150, 'µs'),
            ('fresh', 'proxy, per new connection', n_conn, 3000, 'µs')):
        b, w = summary('base:' + name), summary(name)
        add50 = w['p50_us'] - b['p50_us']
        row('proxy', what, how + ('%d POSTs of 64 B on one connection' % n if name ==
                                  'keepalive' else '%d POSTs, each on a new connection '
                                  '(TCP + TLS to the proxy; the proxy reuses its upstream '
                                  'connection)' % n) +
            '; the backend received deputy tokens: %s' % ('yes' if w['token_injected']
                                                          else 'NO'),
            without='%.1f µs/req' % b['per_req_us'], with_='%.1f µs/req' % w['per_req_us'],
            result='p50 %+.1f µs, p99 %+.1f µs' % (add50, w['p99_us'] - b['p99_us']),
            target='p50 ≤ +%d µs' % limit if limit < 1000 else '≤ +%d ms' % (limit // 1000),
            met=add50 <= limit and w['token_injected'] and not w['errors'],
            added_p50_us=add50, base=b, deputy=w)
    row('proxy', 'proxy RSS per open connection',
        'VmRSS of deputy-proxy idle, then with %d keep-alive TLS connections open through it '
        '(Python http.client without the shim, one request each)' % PROXY_CONNS,
        without='%.1f MiB' % (idle / 1024) if idle else None,
        with_='%.1f MiB' % (busy / 1024) if busy else None,
        result=('+%.1f KiB per connection' % ((busy - idle) / PROXY_CONNS))
        if idle and busy else 'n/a', idle_kib=idle, busy_kib=busy, conns=PROXY_CONNS)


# ---- output --------------------------------------------------------------------------------------

def print_table():
    cols = [('what', 40), ('without', 14), ('with', 14), ('result', 46), ('target', 22)]
    line = '  '.join('%-*s' % (w, n) for n, w in cols) + '  met'
    print(line)
    print('-' * len(line))
    section = None
    for r in rows:
        if r['section'] != section:
            section = r['section']
            print('[%s]' % section)
        cells = []
        for n, w in cols:
            v = r.get(n if n != 'with' else 'with') or ''
            cells.append('%-*s' % (w, v))
        met = {True: 'yes', False: 'NO', None: ''}[r['met']]
        if r['met'] is None and r.get('target'):
            met = '-'  # not measurable in this run (not built, or rate not reached)
        if 'met_p50' in r and r['met_p50'] != r['met_p99']:
            met = 'p50 %s, p99 %s' % ('yes' if r['met_p50'] else 'NO',
                                      'yes' if r['met_p99'] else 'NO')
        print('  '.join(cells) + '  ' + met)
    print()
    print('How each row was measured:')
    for r in rows:
        print('  %s: %s' % (r['what'], r['how']))


def main():
    started = time.time()
    for p in (REQ_LOOP, MINT_RTT, CONNECT_RATE, dt.DEPUTYD, dt.DEPUTY):
        if not os.access(p, os.X_OK):
            sys.exit('bench: %s is not built (make bench builds it)' % p)
    if not dt.is_root():
        sys.exit('bench: run as root: deputyd creates cgroups and loads the kernel layer')
    atexit.register(dt.Deputyd.stop_all)
    have_shim = shim_hooks_ssl()
    env_info.update({'host': platform.node(), 'kernel': platform.release(),
                     'cpus': os.cpu_count(), 'shim': have_shim,
                     'load_before': os.getloadavg()[0]})
    sign_rate = None
    if wanted('mint'):
        log('openssl speed ecdsap256 (2 s)')
        sign_rate = openssl_sign_rate()
    with TempDir(prefix='deputy-bench-') as tmp:
        os.chmod(tmp, 0o755)
        certs = make_certs(tmp)
        with Backend(tmp, certs=certs) as be:
            shim_rss = None
            if wanted('request'):
                log('request overhead (%d requests x %d rounds)' % (REQUESTS, ROUNDS))
                shim_rss = bench_requests(tmp, certs, be, have_shim)
            if wanted('mcp'):
                log('MCP tools/call')
                bench_mcp(tmp, certs, be, have_shim)
            if wanted('mint'):
                log('mint round trip')
                bench_mint(be, sign_rate)
            if wanted('connect'):
                log('connect()')
                bench_connect(be)
            if wanted('memory'):
                log('memory (%d sessions)' % SESSIONS)
                bench_memory(be, shim_rss)
            if not wanted('proxy'):
                pass
            elif os.environ.get('DEPUTY_BENCH_NS') == '1':
                log('proxy')
                hosts = os.path.join(tmp, 'hosts')
                with open(hosts, 'w') as f:
                    f.write('127.0.0.1 localhost\n127.0.0.1 api.test\n')
                os.chmod(hosts, 0o644)
                subprocess.run(['mount', '--bind', hosts, '/etc/hosts'], check=True)
                bench_proxy(tmp, certs, be)
            else:
                row('proxy', 'proxy', 'needs a mount namespace for a private /etc/hosts '
                    '(tests/bench/run.sh makes one)', result='n/a')
    env_info['load_after'] = os.getloadavg()[0]
    env_info['seconds'] = round(time.time() - started, 1)
    print()
    print('deputy cost, %s, %d CPUs, kernel %s, kernel layer %s, shim %s, %.0f s' % (
        time.strftime('%Y-%m-%d'), env_info['cpus'], env_info['kernel'],
        env_info.get('kernel_layer', '?'), 'built' if have_shim else 'not built',
        env_info['seconds']))
    print_table()
    out = os.path.join(BUILD, 'bench.json')
    with open(out, 'w') as f:
        json.dump({'env': env_info, 'rows': rows}, f, indent=1, default=str)
    print('\nJSON: %s' % out)


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    main()
