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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    BUILD, REQ_LOOP, MINT_RTT, CONNECT_RATE, REQUESTS, ROUNDS, SESSIONS, CONNECT_MS,
    MINT_N, PROXY_CONNS, wanted, rows, env_info, measured, log, row, shim_hooks_ssl,
    run_json, in_session, deputy_token_arrived, read_times, quantile,
    openssl_sign_rate, thread_cpu_ticks, proc_rss_kib, session_close_counts, new_deputyd,
    grant_for, section, connect_paused, dt)
from deputytest import Backend, TempDir, make_certs  # noqa: E402 (common found it)
from table import env_line, table_lines  # noqa: E402


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
                'cpu_per_req_us': statistics.median(r.get('cpu_us', 0) for r in rs) / rs[0]['n'],
                'p50_us': quantile(times, 0.5), 'p99_us': quantile(times, 0.99),
                'errors': sum(r['errors'] for r in rs), 'rss_kib': rs[-1]['rss_kib'],
                'token_injected': all(r['token_injected'] for r in rs),
                'rounds': len(rs), 'n': rs[0]['n']}

    how = ('req_loop: libcurl, one keep-alive HTTPS/1.1 connection, %d POSTs of 64 B to '
           'tests/backend on loopback after 200 warm-up; median wall of %d alternating '
           'rounds; added p50/p99 from all per-request times' % (REQUESTS, ROUNDS))

    def add_row(what, name, limit, extra_how=''):
        """limit: the most p50 may grow per request, in µs (the issue's targets)."""
        b, w = summary('base:' + name), summary(name)
        target = 'p50 ≤ +%d µs' % limit if limit else None
        if name.startswith('shim'):
            extra_how += ('; the backend received deputy tokens in place of the service '
                          'account\'s: %s' % ('yes' if w['token_injected'] else 'NO'))
        ratio = w['wall_us'] / b['wall_us']
        add50, add99 = w['p50_us'] - b['p50_us'], w['p99_us'] - b['p99_us']
        measured[name] = {'base': b, 'deputy': w, 'added_p50_us': add50}
        row('request', what, how + extra_how,
            without='%.1f µs/req' % b['per_req_us'], with_='%.1f µs/req' % w['per_req_us'],
            result='%.3f× wall; p50 %+.1f µs, p99 %+.1f µs' % (ratio, add50, add99),
            target=target, met=(add50 <= limit and w['token_injected'] and not w['errors'])
            if limit else None,
            ratio=ratio, added_p50_us=add50, added_p99_us=add99, base=b, deputy=w)
        return w

    # Phase A: per-request tokens (the default), kernel layer on when it can be. The kernel
    # row's deputyd routes another port: a connection to a route's destination without the
    # shim goes to deputy's proxy (the [proxy] rows), and this row is the hooks alone.
    d = new_deputyd(be.port)
    dk = new_deputyd(9)
    env_info['kernel_layer'] = d.config['kernel']
    grant, grant_k = grant_for(d), grant_for(dk)
    try:
        for _ in range(ROUNDS):
            one('base:kernel')
            one('kernel', dk, grant_k, shim=False)
            if have_shim:
                one('base:shim-request')
                one('shim-request', d, grant, shim=True)
    finally:
        d.cleanup()
        dk.cleanup()
    add_row('in a session, kernel layer only (no shim)', 'kernel', None,
            '; LD_PRELOAD removed, so this is the cgroup hooks and nothing else')
    if have_shim:
        w = add_row('shim, per-request tokens', 'shim-request', 25)
        shim_rss = w['rss_kib'] - summary('kernel')['rss_kib']
    else:
        row('request', 'shim, per-request tokens', how, result='n/a (shim not built)',
            target='p50 ≤ +25 µs')
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
        add_row('shim, "token_binding": "session"', 'shim-session', 5)
    else:
        row('request', 'shim, "token_binding": "session"', how, result='n/a (shim not built)',
            target='p50 ≤ +5 µs')
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
    # The throughput steps mint ~100,000 tokens a second in this one session: its log may
    # hold the most deputyd allows, or the session ends (log_limit) before the steps do.
    d = new_deputyd(be.port, session_log_max=256 << 20)
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
    measured['mint'] = {'p50_us': lat['p50_us'], 'echo_p50_us': echo['p50_us']}
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
    row('mint', 'mint round trip, right after 16 clients',
        '%d more sequential DECIDEs right after the 16-client step (before the presign '
        'worker, deputyd signed these in full when its pool ran dry)' % full['n'],
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


def sessions_step(d, grant, be, k, ms):
    """k sessions, each one mint_rtt thread back-to-back for ms, started together; deputyd's
    CPU per thread over the same window. Returns the step's numbers."""
    start = time.time() + 3 + 0.25 * k  # every session open before the window starts
    cmd = [MINT_RTT, '-P', str(be.port), '-x', '-w', '0', '-T', '1', '-d', str(ms),
           '-A', str(int(start * 1000))]
    inner = 'echo "session=$DEPUTY_SESSION"; exec env -u LD_PRELOAD "$@"'
    procs = [subprocess.Popen([dt.DEPUTY, 'run', '--grant', grant, '--agent', 'mailbot', '--',
                               'sh', '-c', inner, 'sh'] + cmd, env=d.env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(k)]
    time.sleep(max(0.0, start - time.time()))
    cpu0, t0 = thread_cpu_ticks(d.proc.pid), time.time()
    time.sleep(ms / 1000.0)
    cpu1, t1 = thread_cpu_ticks(d.proc.pid), time.time()
    tokens = errors = late = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        res = [json.loads(l) for l in out.splitlines() if l.startswith('{')]
        if not res or not res[-1]['throughput']:
            errors += 1
            log('sessions step %d: a mint_rtt gave no result: %s' % (k, err[-300:]))
            continue
        t = res[-1]['throughput'][0]
        tokens += t['tokens']
        errors += t['errors']
        late += t['secs'] > ms / 1000.0 + 0.2  # started after the window opened
    clk = os.sysconf('SC_CLK_TCK')
    diff = {n: (cpu1.get(n, 0) - cpu0.get(n, 0)) / clk for n in cpu1}
    worker = diff.get('presign', 0.0)
    total = sum(diff.values())
    return {'sessions': k, 'tokens': tokens, 'errors': errors, 'late': late,
            'secs': t1 - t0, 'tokens_per_s': tokens / (t1 - t0), 'cpu_s': total,
            'loop_cpu_s': total - worker, 'worker_cpu_s': worker}


def bench_sessions(be, sign_rate):
    """Tokens/s with 1, 2, 4, 16 concurrent sessions, and where deputyd's CPU went."""
    d = new_deputyd(be.port)
    grant = grant_for(d)
    steps = []
    try:
        time.sleep(0.5)
        for k in (1, 2, 4, 16):
            steps.append(sessions_step(d, grant, be, k, 1500))
    finally:
        d.cleanup()
    for st in steps:
        per_core = st['tokens'] / st['cpu_s'] if st['cpu_s'] > 0 else None
        frac = per_core / sign_rate if per_core and sign_rate else None
        loop_us = 1e6 * st['loop_cpu_s'] / st['tokens'] if st['tokens'] else None
        worker_us = 1e6 * st['worker_cpu_s'] / st['tokens'] if st['tokens'] else None
        row('mint', 'daemon throughput, %d session%s' % (st['sessions'], 's' if st['sessions'] > 1
                                                          else ''),
            '%d sessions (one `deputy run mint_rtt -x` each, one connection) back-to-back for '
            '%.1f s, started together; per core = tokens / deputyd\'s CPU seconds over the '
            'same window, all its threads (the loop and the presign worker, from '
            '/proc/PID/task/*/stat); %d started late' % (st['sessions'], st['secs'],
                                                         st['late']),
            result='%.0f tok/s; %.2f cores; %s/core = %s; loop %s + worker %s µs/tok' % (
                st['tokens_per_s'], st['cpu_s'] / st['secs'],
                '%.0f' % per_core if per_core else 'n/a',
                '%.0f%%' % (100 * frac) if frac else 'n/a',
                '%.1f' % loop_us if loop_us else '?', '%.1f' % worker_us if worker_us else '?'),
            target='≥ 80% openssl/core', met=(frac >= 0.8) if frac else None,
            tokens_per_s=st['tokens_per_s'], daemon_cores=st['cpu_s'] / st['secs'],
            per_core=per_core, of_openssl=frac, errors=st['errors'],
            loop_us_per_token=loop_us, worker_us_per_token=worker_us, step=st)
        if st['sessions'] == 1:
            measured['daemon_per_token'] = {'loop_us': loop_us, 'worker_us': worker_us}


def breakdown_text(trip, socket_p50, shim_cpu, rest, loop_us):
    return 'trip %.1f (socket %.1f) + shim CPU %s + rest %.1f; deputyd loop %s µs CPU/tok' % (
        trip, socket_p50, '%.1f' % shim_cpu if shim_cpu is not None else '?', rest,
        '%.1f' % loop_us if loop_us else '?')


def bench_breakdown():
    """Where a request's added microseconds go, from rows measured in this run."""
    rt = measured.get('mint')
    per = measured.get('daemon_per_token') or {}
    base_cpu = measured.get('kernel', {}).get('deputy', {}).get('cpu_per_req_us')
    for name, what in (('shim-request', 'per-request tokens'),
                       ('shim-session', '"token_binding": "session"')):
        m = measured.get(name)
        if not m or not rt:
            continue
        added = m['added_p50_us']
        shim_cpu = (m['deputy']['cpu_per_req_us'] - base_cpu) if base_cpu is not None else None
        trip = rt['p50_us']
        rest = added - trip - (shim_cpu or 0)
        row('breakdown', 'added p50, %s' % what,
            'added p50 of the request row = the DECIDE round trip (mint row p50; of it, the '
            'socket alone: the echo p50) + the client\'s added CPU per request (req_loop\'s '
            'own CPU clock with the shim minus in a session without it: the shim\'s work) + '
            'the rest (waiting: wake-ups, the RESPONSE report, scheduling); deputyd\'s loop '
            'CPU per token (mean, 1-session step, its own thread clock) for comparison',
            with_='%+.1f µs' % added,
            result=breakdown_text(trip, rt['echo_p50_us'], shim_cpu, rest, per.get('loop_us')),
            added_p50_us=added, round_trip_p50_us=trip, socket_p50_us=rt['echo_p50_us'],
            daemon_loop_us=per.get('loop_us'), daemon_worker_us=per.get('worker_us'),
            shim_cpu_us=shim_cpu, rest_us=rest)


# ---- 3. connect() ------------------------------------------------------------------------------

def bench_connect_causes(be, port, base_rate):
    """What the in-session connect costs, taken apart: the cgroup hooks with deputyd stopped
    (no contention from deputyd writing records), and a session of a deputyd without the
    kernel layer (no hooks at all)."""
    d = new_deputyd(be.port)
    grant = grant_for(d)
    try:
        paused = [connect_paused(d, grant, port) for _ in range(2)]
    finally:
        d.cleanup()
    d = new_deputyd(be.port, kernel='off')
    grant = grant_for(d)
    try:
        off = [in_session(d, grant, [CONNECT_RATE, '-d', str(CONNECT_MS), str(port)],
                          shim=False)[1] for _ in range(2)]
    finally:
        d.cleanup()
    for what, how, rs in (
            ('connects/s in a session, deputyd stopped',
             'as above, with deputyd stopped (SIGSTOP) during the run: the cgroup hooks and '
             'their ring-buffer events, without deputyd reading them or writing records', paused),
            ('connects/s in a session, "kernel": "off"',
             'as above, in a session of a deputyd without the kernel layer: no hooks', off)):
        rs = [r for r in rs if r]
        if not rs:
            row('connect', what, how, result='n/a')
            continue
        rate = statistics.median(r['per_s'] for r in rs)
        row('connect', what, how, without='%.0f/s' % base_rate, with_='%.0f/s' % rate,
            result='%.3f× time per connect' % (base_rate / rate), ratio=base_rate / rate,
            runs=rs)


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
    if kernel:
        listener = subprocess.Popen([CONNECT_RATE, '-l'], stdout=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL)
        try:
            port = int(listener.stdout.readline().split()[1])
            bench_connect_causes(be, port, b)
        finally:
            listener.terminate()
            listener.wait()


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
    print('\n'.join(table_lines(rows)))
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
        if os.environ.get('DEPUTY_BENCH_NS') == '1':
            # route hosts resolve (deputyd and the proxy resolve them), in this namespace only
            hosts = os.path.join(tmp, 'hosts')
            with open(hosts, 'w') as f:
                f.write('127.0.0.1 localhost\n127.0.0.1 api.test\n')
            os.chmod(hosts, 0o644)
            subprocess.run(['mount', '--bind', hosts, '/etc/hosts'], check=True)
        with Backend(tmp, certs=certs) as be:
            shim_rss = None
            if wanted('request'):
                log('request overhead (%d requests x %d rounds)' % (REQUESTS, ROUNDS))
                shim_rss = section('request', bench_requests, tmp, certs, be, have_shim)
            if wanted('mcp'):
                log('MCP tools/call')
                section('mcp', bench_mcp, tmp, certs, be, have_shim)
            if wanted('mint'):
                log('mint round trip')
                section('mint', bench_mint, be, sign_rate)
                log('throughput with 1, 2, 4, 16 sessions')
                section('mint', bench_sessions, be, sign_rate)
            bench_breakdown()
            if wanted('connect'):
                log('connect()')
                section('connect', bench_connect, be)
            if wanted('memory'):
                log('memory (%d sessions)' % SESSIONS)
                section('memory', bench_memory, be, shim_rss)
            if not wanted('proxy'):
                pass
            elif os.environ.get('DEPUTY_BENCH_NS') == '1':
                log('proxy')
                section('proxy', bench_proxy, tmp, certs, be)
            else:
                row('proxy', 'proxy', 'needs a mount namespace for a private /etc/hosts '
                    '(tests/bench/run.sh makes one)', result='n/a')
    env_info['load_after'] = os.getloadavg()[0]
    env_info['seconds'] = round(time.time() - started, 1)
    env_info['date'] = time.strftime('%Y-%m-%d')
    print()
    print(env_line(env_info))
    print_table()
    out = os.path.join(BUILD, 'bench.json')
    with open(out, 'w') as f:
        json.dump({'env': env_info, 'rows': rows}, f, indent=1, default=str)
    print('\nJSON: %s' % out)


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    main()
