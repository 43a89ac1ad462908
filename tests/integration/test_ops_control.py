# SPDX-License-Identifier: MIT
"""Operating deputy (issue 12, items 1-3), against the real deputyd, with agents run as the
unprivileged user `nobody`: `deputy kill` blocks then kills a session's whole tree (one that
forks and ignores SIGTERM), and nothing is allowed after the kill began; a user cannot kill
another user's session; every session_close says why; `deputy revoke` ends a grant's or a
user's sessions, refuses them from then on (also after a restart) and is root's only; a
hostile revocation file is refused; "on_grant_expiry": "end" ends a session when its grant
expires; the host log records refused sessions, kills, revocations, reloads, starts, stops,
outages and dropped exports, is chained and sealed, and is root's to read."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

# Inside the session: ignores SIGTERM, keeps forking children that ignore it too, and
# connects in a loop to 127.0.0.1:argv[1] (allowed by allow_cidrs), printing each success.
RUNAWAY = r'''
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("session=" + os.environ["DEPUTY_SESSION"], flush=True)
for _ in range(2):
    if os.fork() == 0:
        while True:
            try:
                if os.fork() == 0:
                    time.sleep(1000)
                    os._exit(0)
            except OSError:
                pass
            time.sleep(0.1)
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
        print("connected", flush=True)
    except OSError:
        pass
    time.sleep(0.02)
'''

# Inside the session: asks for tokens (DECIDE on the delegate route) in a loop, printing a
# line per token, until deputyd stops answering.
MINTER = r'''
import os, sys, time
sys.path.insert(0, %r)
import deputytest as dt
print("session=" + os.environ["DEPUTY_SESSION"], flush=True)
c = dt.Conn(os.environ["DEPUTY_SOCKET"])
while True:
    r = c.decide(os.environ["DEPUTY_SESSION"])
    if r is None:
        break
    print("verdict=%%s" %% r.get("VERDICT"), flush=True)
    time.sleep(0.02)
''' % dt.LIB


def agent_user():
    if not dt.is_root():
        dt.skip("needs root (cgroups) and an unprivileged user")
    return dt.unprivileged_user()


def other_user():
    import pwd
    try:
        pw = pwd.getpwnam("daemon")
    except KeyError:
        dt.skip("needs a second unprivileged user (daemon)")
    return pw.pw_uid, pw.pw_gid


def need_bpf():
    if not dt.bpf_available():
        dt.skip("needs root and BPF (BTF, cgroup2) for the kernel layer", bpf=True)


script, start_agent, ts_of = dt.script, dt.start_agent, dt.ts_of


def host_records(d):
    with open(os.path.join(d.state, "host.jsonl")) as f:
        return [json.loads(line) for line in f]


def host_of(d, type):
    return [r for r in host_records(d) if r["type"] == type]


def wait_lines(p, word, n, timeout=30):
    """Read p's stdout until n lines start with word."""
    seen = 0
    deadline = time.time() + timeout
    while seen < n and time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        seen += line.startswith(word)
    check(seen >= n, "the agent printed %d %r lines, wanted %d" % (seen, word, n))


def sessions_of(d):
    return {x["session"]: x for x in d.sessions()}


# ---- kill ---------------------------------------------------------------------------------

@case
def kill_blocks_then_kills_a_forking_agent_that_ignores_sigterm():
    user = agent_user()
    need_bpf()
    port = dt.free_port()
    listener = dt._RouteListener("127.0.0.1", port)
    try:
        d = dt.Deputyd(allow_cidrs=["127.0.0.1/32"]).start()
        p, sid = start_agent(d, [dt.PYTHON, script(d, RUNAWAY, "runaway.py"), str(port)], user)
        wait_lines(p, "connected", 5)
        cg = os.path.join(dt.cgroup2_root(), d.cgroup, sid)
        procs = open(os.path.join(cg, "cgroup.procs")).read().split()
        check(len(procs) >= 3, "the agent's tree has forked: %r" % procs)
        r = d.cli("kill", sid, "--reason", "runaway agent")
        eq(r.returncode, 0, "deputy kill: %s %s" % (r.stdout, r.stderr))
        recs = d.wait_closed(sid, timeout=30, kernel=True)
        eq(p.wait(30), 128 + signal.SIGKILL, "deputy run's status (the command was killed)")
        close = recs[-1]
        eq((close.get("reason"), close.get("by"), close.get("text")),
           ("killed", 0, "runaway agent"), "session_close says who killed it and why")
        # removed right after the seal, once empty: no process survived
        check(dt.wait_until(lambda: not os.path.exists(cg), timeout=15),
              "the session's cgroup is gone")
        kill = [x for x in host_of(d, "kill") if x.get("sid") == sid]
        eq(len(kill), 1, "one kill record in the host log")
        eq((kill[0]["by"], kill[0]["text"], kill[0]["user"]), (0, "runaway agent", "alice"),
           "host log kill record")
        allowed = [x for x in recs if x["type"] == "connect" and x.get("dport") == port and
                   x["verdict"] == "allow"]
        check(allowed, "the agent's connects were logged as allowed before the kill")
        # The kill record is written after the policy went to block-all and before the
        # processes were killed: no connection allowed by the kernel is later than it.
        late = [x for x in allowed if ts_of(x) > ts_of(kill[0])]
        eq(late, [], "connections allowed after the kill began")
        v = d.cli("audit", "verify", sid)
        eq(v.returncode, 0, "audit verify: %s %s" % (v.stdout, v.stderr))
    finally:
        listener.close()


@case
def nobody_cannot_kill_another_users_session_but_can_kill_its_own():
    attacker = agent_user()
    victim = other_user()
    d = dt.Deputyd().start()
    vp, vsid = d.start_session(seconds=120, user=victim)
    ap, asid = d.start_session(seconds=120, user=attacker)
    r = d.cli("kill", vsid, "--reason", "mine now", user=attacker)
    check(r.returncode != 0, "nobody killed daemon's session: %s" % r.stdout)
    check(b"deputy: kill:" in r.stderr and b"no such open session" in r.stderr, r.stderr)
    # Nor from inside its own session, naming the other.
    inside = dt.agent_requests(d, d.idp.grant(), [["KILL", [("SESSION", vsid)]]],
                               user=attacker)[1]
    eq(inside[0]["type"], "ERROR", "KILL of another user's session from inside a session")
    time.sleep(1)
    eq(vp.poll(), None, "the victim's agent still runs")
    eq(sessions_of(d)[vsid]["state"], "open", "the victim's session is still open")
    r = d.cli("kill", asid, user=attacker)
    eq(r.returncode, 0, "nobody kills its own session: %s" % r.stderr)
    close = d.wait_closed(asid)[-1]
    eq((close["reason"], close["by"]), ("killed", attacker[0]), "session_close")
    eq(sessions_of(d)[asid].get("reason"), "killed", "deputy sessions --json says why")
    # The seal signs why and by whom: the last line has no later prev to cover it.
    copy = os.path.join(d.dir, "copy.jsonl")
    text = open(d.log_path(asid)).read()
    jwks = os.path.join(d.state, "jwks.json")
    for old, new in (('"reason":"killed"', '"reason":"exit"'),
                     ('"by":%d' % attacker[0], '"by":0')):
        check(old in text, "%s in the seal" % old)
        open(copy, "w").write(text.replace(old, new))
        v = d.cli("audit", "verify", copy, "--jwks", jwks)
        check(v.returncode == 1 and b"sig does not match" in v.stderr,
              "an edited seal (%s) verified: %r %r" % (new, v.stdout, v.stderr))
    open(copy, "w").write(text)
    eq(d.cli("audit", "verify", copy, "--jwks", jwks).returncode, 0, "the untouched copy")
    check("text" not in close, "no text without --reason")
    ap.wait(30)
    vp.kill()
    vp.wait(30)
    eq(d.wait_closed(vsid)[-1]["reason"], "exit", "the victim's session ended by its exit")


@case
def every_session_close_says_why_and_the_host_log_tells_starts_stops_and_outages():
    user = agent_user()
    d = dt.Deputyd().start()
    r = d.run(d.idp.grant(), ["sh", "-c", 'echo "session=$DEPUTY_SESSION"'], user=user)
    eq(r.returncode, 0, r.stderr)
    sid = r.stdout.split("=", 1)[1].strip()
    eq(d.wait_closed(sid)[-1]["reason"], "exit", "a command that exits")
    p, sid2 = d.start_session(seconds=120, user=user)
    eq(d.stop(), 0, "deputyd stops on SIGTERM")
    eq(d.records(sid2)[-1].get("reason"), "deputyd_stopped", "a session deputyd's stop ended")
    p.wait(30)
    host = host_records(d)
    eq([x["type"] for x in host][:1], ["deputyd_start"], "the host log starts with the start")
    eq(host[-1]["type"], "deputyd_stop", "and ends with the signed stop")
    check(host[-1].get("sig") and "export_dropped" in host[-1]["counts"], host[-1])
    # A crash (SIGKILL) with a session open: the next start sees the outage and resumes it.
    d.start()
    p, sid3 = d.start_session(seconds=120, user=user)
    d.stop(sig=signal.SIGKILL)
    d.start()
    outage = host_of(d, "deputyd_outage")
    eq(len(outage), 1, "one outage noticed")
    eq(outage[0]["sessions_resumed"], 1, "the open session was resumed")
    starts = host_of(d, "deputyd_start")
    eq([x["previous_stop_clean"] for x in starts], [True, True, False], "clean stops")
    p.kill()
    p.wait(30)  # reaped: deputyd tells a zombie deputy run from a live one by its pidfd
    eq(d.wait_closed(sid3)[-1]["reason"], "exit", "a resumed session that exits")
    v = d.cli("audit", "verify", "--host")
    eq(v.returncode, 0, "audit verify --host: %s %s" % (v.stdout, v.stderr))
    check(b"intact so far" in v.stdout, v.stdout)
    d.stop()
    v = d.cli("audit", "verify", os.path.join(d.state, "host.jsonl"), "--jwks",
              os.path.join(d.state, "jwks.json"))
    eq(v.returncode, 0, "audit verify of the host log file: %s %s" % (v.stdout, v.stderr))
    check(b"sealed by deputyd" in v.stdout, v.stdout)
    # Any edit breaks it.
    path = os.path.join(d.state, "host.jsonl")
    lines = open(path).read().splitlines(True)
    lines[1] = lines[1].replace('"type":"', '"type":"x')
    open(path, "w").write("".join(lines))
    v = d.cli("audit", "verify", path, "--jwks", os.path.join(d.state, "jwks.json"))
    eq(v.returncode, 1, "a tampered host log: %s" % v.stdout)
    check(b"line 3: prev does not match" in v.stderr, v.stderr)


# ---- revoke -------------------------------------------------------------------------------

@case
def revoked_grant_ends_its_sessions_mints_nothing_more_and_stays_revoked():
    user = agent_user()
    d = dt.Deputyd().start()
    grant = d.idp.grant()
    jti = dt.decode_jwt(grant)["jti"]
    p, sid = start_agent(d, [dt.PYTHON, script(d, MINTER, "minter.py")], user, token=grant)
    wait_lines(p, "verdict=1", 3)
    other, osid = d.start_session(seconds=120, user=user)  # another grant: goes on
    r = d.cli("revoke", "--grant", jti, "--reason", "laptop stolen", user=user)
    check(r.returncode != 0 and b"only root" in r.stderr, "nobody revoked: %r" % r.stderr)
    r = d.cli("revoke", "--grant", jti, "--reason", "laptop stolen")
    eq(r.returncode, 0, "deputy revoke: %s" % r.stderr)
    check(sid.encode() in r.stdout, "the ended session is named: %r" % r.stdout)
    recs = d.wait_closed(sid, timeout=30)
    eq((recs[-1]["reason"], recs[-1]["by"], recs[-1]["text"]),
       ("revoked", 0, "laptop stolen"), "session_close")
    p.wait(30)
    rev = host_of(d, "revoke")
    eq((rev[0]["grant"], rev[0]["sessions"], rev[0]["saved"]), (jti, [sid], True), "host log")
    tokens = [x for x in recs if x["type"] == "token"]
    check(tokens, "tokens were minted before the revocation")
    late = [x for x in tokens if ts_of(x) > ts_of(rev[0])]
    eq(late, [], "tokens minted after the revocation")
    eq(sessions_of(d)[osid]["state"], "open", "a session of another grant goes on")
    # Refused from now on, and after a restart.
    path = os.path.join(d.state, "revoked.json")
    eq(os.stat(path).st_mode & 0o777, 0o600, "revoked.json's mode")
    for when in ("now", "after a restart"):
        r = d.run(grant, ["true"], user=user)
        check(r.returncode != 0 and "grant revoked" in r.stderr,
              "%s: a revoked grant opened a session: %r" % (when, r.stderr))
        if when == "now":
            other.kill()
            d.wait_closed(osid)
            d.stop()
            d.start()
    refused = host_of(d, "session_refused")
    check(refused and refused[-1]["grant_jti"] == jti and "grant revoked" in
          refused[-1]["reason"] and refused[-1]["uid"] == user[0], refused)
    r = d.cli("revoke", "--list", "--json")
    eq(r.returncode, 0, r.stderr)
    listed = [json.loads(x) for x in r.stdout.decode().splitlines()]
    eq([(x.get("grant"), x["by"], x["reason"]) for x in listed], [(jti, 0, "laptop stolen")],
       "revoke --list")
    check(d.cli("revoke", "--list", user=user).returncode != 0, "nobody read the list")


@case
def revoked_user_loses_every_session_and_another_user_keeps_theirs():
    user = agent_user()
    d = dt.Deputyd().start()
    a1, s1 = d.start_session(token=d.idp.grant(user="alice"), seconds=120, user=user)
    a2, s2 = d.start_session(token=d.idp.grant(user="alice"), seconds=120, user=user)
    b, sb = d.start_session(token=d.idp.grant(user="bob"), seconds=120, user=user)
    r = d.cli("revoke", "--user", "alice")
    eq(r.returncode, 0, r.stderr)
    for s in (s1, s2):
        eq(d.wait_closed(s)[-1]["reason"], "revoked", "alice's session %s" % s)
    eq(sessions_of(d)[sb]["state"], "open", "bob's session goes on")
    r = d.run(d.idp.grant(user="alice"), ["true"], user=user)
    check(r.returncode != 0 and "grant revoked" in r.stderr, r.stderr)
    for p in (a1, a2, b):
        p.kill()


@case
def hostile_revocation_file_is_refused_and_the_last_good_list_kept():
    user = agent_user()
    d = dt.Deputyd()
    os.makedirs(d.state, mode=0o700, exist_ok=True)
    path = os.path.join(d.state, "revoked.json")
    for bad, why in (('{"revoked": [{"grant": "a", "user": "b"}]}', "exactly one of"),
                     ('{"revoked": [{"grant": 7}]}', "exactly one of"),
                     ('{"revoked": [{"grant": "a", "evil": 1}]}', "revoked[0].evil"),
                     ('[1, 2', "invalid JSON"), ('{"revoked": {}}', "must be an object")):
        open(path, "w").write(bad)
        p = subprocess.run([dt.DEPUTYD, "-c", d.config_path, "-f"], capture_output=True,
                           timeout=60)
        check(p.returncode != 0, "deputyd started with %r" % bad)
        err = p.stderr.decode().strip().splitlines()
        check(len(err) >= 1 and "revoked.json" in err[-1] and why in err[-1],
              "%r: %r" % (bad, err))
    grant = d.idp.grant()
    jti = dt.decode_jwt(grant)["jti"]
    open(path, "w").write(json.dumps({"revoked": [{"grant": jti}]}))
    d.start()
    r = d.run(grant, ["true"], user=user)
    check(r.returncode != 0 and "grant revoked" in r.stderr, r.stderr)
    open(path, "w").write("{not json")
    d.proc.send_signal(signal.SIGHUP)
    dt.wait_until(lambda: host_of(d, "reload"), timeout=20)
    rec = host_of(d, "reload")[-1]
    check("revoked.json" in rec.get("revocations_error", ""), rec)
    r = d.run(grant, ["true"], user=user)
    check(r.returncode != 0 and "grant revoked" in r.stderr, "after a broken reload: %r" %
          r.stderr)
    # Lifting a revocation by hand: edit the file, reload.
    open(path, "w").write('{"revoked": []}')
    d.proc.send_signal(signal.SIGHUP)
    dt.wait_until(lambda: len(host_of(d, "reload")) == 2, timeout=20)
    r = d.run(grant, ["true"], user=user)
    eq(r.returncode, 0, "lifted: %r" % r.stderr)


# ---- on_grant_expiry --------------------------------------------------------------------------

@case
def on_grant_expiry_end_ends_the_session_and_deny_only_refuses():
    user = agent_user()
    for mode in ("end", "deny"):
        d = dt.Deputyd(on_grant_expiry=mode).start()
        p, sid = d.start_session(token=d.idp.grant(ttl=4), seconds=120, user=user)
        if mode == "end":
            recs = d.wait_closed(sid, timeout=30)
            eq(recs[-1]["reason"], "grant_expired", "session_close reason")
            check(host_of(d, "grant_expired"), "host log grant_expired")
            p.wait(30)
        else:
            time.sleep(6)
            eq(sessions_of(d)[sid]["state"], "open", "under deny the session goes on")
            p.kill()
            p.wait(30)
            eq(d.wait_closed(sid)[-1]["reason"], "exit", "and ends by its exit")
        d.stop()
    bad = dt.Deputyd(on_grant_expiry="kill")
    r = subprocess.run([dt.DEPUTYD, "-t", "-c", bad.config_path], capture_output=True)
    check(r.returncode != 0 and b"on_grant_expiry" in r.stderr, r.stderr)


# ---- the host log -------------------------------------------------------------------------

@case
def host_log_records_refusals_and_reloads_and_is_roots_to_read():
    user = agent_user()
    d = dt.Deputyd().start()
    forged = dt.Issuer().grant(user="mallory")  # a key deputyd does not trust
    r = d.run(forged, ["true"], user=user)
    check(r.returncode != 0 and "grant refused" in r.stderr, r.stderr)
    r = d.run(d.idp.grant(), ["true"], agent="otherbot", user=user)
    check(r.returncode != 0, r.stderr)
    refused = host_of(d, "session_refused")
    eq([(x["uid"], x["user"], x["agent"]) for x in refused],
       [(user[0], "mallory", "mailbot"), (user[0], "alice", "otherbot")], "who was refused")
    check(all(x["reason"] for x in refused), refused)
    # A reload: which keys changed, which need a restart.
    d.config["token_ttl"] = 120
    d.config["socket"] = d.socket + ".new"
    d.write_config()
    d.proc.send_signal(signal.SIGHUP)
    dt.wait_until(lambda: host_of(d, "reload"), timeout=20)
    rec = host_of(d, "reload")[0]
    eq((rec["ok"], sorted(rec["changed"]), rec["restart_needed"]),
       (True, ["socket", "token_ttl"], ["socket"]), "reload record")
    d.config["routes"] = "broken"
    d.write_config()
    d.proc.send_signal(signal.SIGHUP)
    dt.wait_until(lambda: len(host_of(d, "reload")) == 2, timeout=20)
    rec = host_of(d, "reload")[1]
    check(rec["ok"] is False and "routes" in rec["error"], rec)
    # Root reads it; nobody does not.
    r = d.cli("logs", "--host", "--json")
    eq(r.returncode, 0, r.stderr)
    eq(r.stdout.decode(), open(os.path.join(d.state, "host.jsonl")).read(), "--json is the file")
    r = d.cli("logs", "--host")
    check(r.returncode == 0 and b"session_refused" in r.stdout and b"mallory" in r.stdout,
          r.stdout)
    r = d.cli("logs", "--host", user=user)
    check(r.returncode != 0 and b"root" in r.stderr, "nobody read the host log: %r" % r.stderr)
    eq(os.stat(os.path.join(d.state, "host.jsonl")).st_mode & 0o777, 0o600, "host.jsonl mode")
    r = d.cli("audit", "verify", "--host", user=user)
    check(r.returncode != 0, "nobody verified the host log")


@case
def host_log_counts_the_records_the_export_dropped():
    user = agent_user()
    # Nothing listens on that socket: every exported record is dropped and counted.
    d = dt.Deputyd(audit_export={"syslog": "/tmp/deputy-test-no-syslog-%d" % os.getpid()})
    d.start()
    r = d.run(d.idp.grant(), ["true"], user=user)
    eq(r.returncode, 0, r.stderr)
    dt.wait_until(lambda: host_of(d, "export_dropped"), timeout=30)
    rec = host_of(d, "export_dropped")
    # the first drop is reported at the next tick; later ones at most every 10 s
    check(rec and rec[0]["dropped"] >= 1 and rec[0]["sent"] == 0, rec)
    d.stop()
    stop = host_records(d)[-1]
    check(stop["type"] == "deputyd_stop" and stop["counts"]["export_dropped"] >= 2, stop)


@case
def a_start_that_fails_is_in_the_host_log_and_sealed():
    if not dt.is_root():
        dt.skip("needs root")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        d = dt.Deputyd(http_listen="127.0.0.1:%d" % busy.getsockname()[1])
        r = subprocess.run([dt.DEPUTYD, "-c", d.config_path, "-f"], capture_output=True,
                           timeout=60)
        check(r.returncode != 0, "deputyd started on a port in use")
    finally:
        busy.close()
    host = host_records(d)
    eq([x["type"] for x in host], ["deputyd_start", "start_failed", "deputyd_stop"],
       "host log of a failed start")
    eq(host[1]["what"], "http_listen", host[1])
    v = d.cli("audit", "verify", os.path.join(d.state, "host.jsonl"), "--jwks",
              os.path.join(d.state, "jwks.json"))
    eq(v.returncode, 0, "verify: %s %s" % (v.stdout, v.stderr))


@case
def follow_the_host_log_across_a_restart():
    d = dt.Deputyd().start()
    if not dt.is_root():
        dt.skip("needs root")
    f = dt.track(subprocess.Popen([dt.DEPUTY, "logs", "--host", "--json", "--follow"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=d.env()))
    d.stop()
    d.start()
    types = []

    def read():  # in a thread: a follower that hangs must fail the case, not stall it
        for line in f.stdout:
            types.append(json.loads(line)["type"])
    threading.Thread(target=read, daemon=True).start()
    dt.wait_until(lambda: types.count("deputyd_start") >= 2, timeout=30)
    f.kill()
    eq(types[:1] + types[-2:], ["deputyd_start", "deputyd_stop", "deputyd_start"],
       "followed across the restart: %r" % types)


if __name__ == "__main__":
    dt.main()
