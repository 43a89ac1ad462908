# SPDX-License-Identifier: MIT
"""What every section of the bench (bench.py) shares: paths and knobs, the table being built
(rows, env_info, measured), and the helpers that run things in sessions and read numbers."""
import json
import os
import re
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))

import deputytest as dt  # noqa: E402

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
measured = {}  # numbers later rows are built from (the breakdown)


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


def thread_cpu_ticks(pid):
    """CPU ticks (user + system) of each of pid's threads, summed by thread name: deputyd's
    loop is "deputyd", its nonce worker "presign" (presign.c names it)."""
    out = {}
    task = '/proc/%d/task' % pid
    for tid in os.listdir(task):
        try:
            with open(os.path.join(task, tid, 'stat')) as f:
                st = f.read()
        except OSError:
            continue  # a thread that ended meanwhile
        comm = st[st.index('(') + 1:st.rindex(')')]
        f = st[st.rindex(')') + 2:].split()
        out[comm] = out.get(comm, 0) + int(f[11]) + int(f[12])
    return out


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


def section(name, fn, *args):
    """One section's rows; one that breaks (a busy machine, a tool missing) leaves a row
    saying so and the others still run and are written."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported in the table, the run goes on
        log('%s: %s: %s' % (name, fn.__name__, e))
        row(name, fn.__name__, 'the section failed: %s' % e, result='n/a (failed)')
        return None


def connect_paused(d, grant, port):
    """connect_rate in a session while deputyd is stopped (SIGSTOP): the cgroup hooks still
    run, their events wait in the ring buffer, and nothing of deputyd competes for the CPUs."""
    inner = 'echo "session=$DEPUTY_SESSION"; sleep 1; exec env -u LD_PRELOAD "$@"'
    p = subprocess.Popen([dt.DEPUTY, 'run', '--grant', grant, '--agent', 'mailbot', '--', 'sh',
                          '-c', inner, 'sh', CONNECT_RATE, '-d', str(CONNECT_MS), str(port)],
                         env=d.env(), text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    res = None
    try:
        first = p.stdout.readline()
        if first.startswith('session='):
            os.kill(d.proc.pid, signal.SIGSTOP)
            for line in p.stdout:
                if line.startswith('{'):
                    res = json.loads(line)
                    break
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
        p.communicate(timeout=120)
    return res
