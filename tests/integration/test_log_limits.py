# SPDX-License-Identifier: MIT
"""A session cannot drown its log, the disk under it, or the other sessions' kernel events
(issue 11, items 3 and 4), each played by an unprivileged agent (`nobody`) under `deputy run`
against the real deputyd: a flood of deny reports ends its session at `session_log_max`
with reason `log_limit` while another session goes on; identical deny reports and a loop of
blocked connects are coalesced into `repeated` records with exact counts; a new session is
refused below the free-space floor; a flood of kernel events in one session is that
session's loss only; kernel events keep the kernel's time, also those read by a restarted
deputyd, and the restart is logged as an outage."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

NET_CONNECT = dt.prog("net_connect")
os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                    "verify_asan_link_order=0"]))

# Runs inside the session: sends DENY_REPORT frames (NOREPLY) as fast as it can, forever or
# argv[2] times; argv[1] "vary" gives each a different 30 KiB target, "same" repeats one.
FLOOD = r'''
import os, sys
sys.path.insert(0, %r)
import deputytest as dt
c = dt.Conn(os.environ["DEPUTY_SOCKET"])
n = int(sys.argv[2]) if len(sys.argv) > 2 else -1
i = 0
print("session=" + os.environ["DEPUTY_SESSION"], flush=True)
while i != n:
    t = "/x%%d/" %% i + "a" * 30000 if sys.argv[1] == "vary" else "/same"
    c.call("DENY_REPORT", [("SESSION", os.environ["DEPUTY_SESSION"]), ("REASON", "r"),
                           ("HOST", "h.test"), ("METHOD", "GET"), ("TARGET", t)],
           flags=dt.NOREPLY)
    i += 1
c.call("SESSIONS", [])  # a round trip: every report before it was handled
print("sent=%%d" %% i, flush=True)
''' % dt.LIB


def agent_user():
    u = dt.unprivileged_user()
    if not u:
        dt.skip("needs root and an unprivileged user")
    return u


def need_bpf():
    if not dt.bpf_available():
        dt.skip("needs root and BPF (BTF, cgroup2) for the kernel layer", bpf=True)
    if not os.access(NET_CONNECT, os.X_OK):
        dt.skip("%s not built (make tests-build)" % NET_CONNECT, bpf=True)


script, start_agent, ts_of = dt.script, dt.start_agent, dt.ts_of


def verify(d, sid):
    r = d.cli("audit", "verify", sid)
    eq(r.returncode, 0, "audit verify: %s %s" % (r.stdout, r.stderr))
    check(b"sealed" in r.stdout, r.stdout)


@case
def deny_report_flood_ends_its_session_at_the_log_limit():
    user = agent_user()
    d = dt.Deputyd(session_log_max=1 << 20).start()
    flood = script(d, FLOOD, "flood.py")
    other, other_sid = d.start_session(seconds=120, user=user)
    p, sid = start_agent(d, [dt.PYTHON, flood, "vary"], user)
    recs = d.wait_closed(sid, timeout=90)
    p.wait(30)
    close = recs[-1]
    eq(close.get("reason"), "log_limit", "session_close reason")
    check(os.path.getsize(d.log_path(sid)) <= 1 << 20, "the log is within session_log_max")
    denies = [r for r in recs if r["type"] == "deny"]
    check(denies and all(len(r["target"]) <= 512 and r.get("truncated") for r in denies),
          "deny reports are cut to a bounded size and marked")
    check(close["counts"]["log_dropped"] >= 0 and
          close["counts"]["denies"] >= len(denies), close["counts"])
    verify(d, sid)
    # The other session of the same user is still open and served.
    eq(other.poll(), None, "the other session's agent still runs")
    c = dt.Conn(d.socket)
    listed = {x["session"]: x for x in d.sessions()}
    eq(listed[other_sid]["state"], "open", "the other session is open")
    c.close()
    other.kill()
    d.wait_closed(other_sid)


@case
def identical_deny_reports_are_coalesced():
    user = agent_user()
    d = dt.Deputyd().start()
    flood = script(d, FLOOD, "flood.py")
    p, sid = start_agent(d, [dt.PYTHON, flood, "same", "3000"], user)
    out, err = p.communicate(timeout=120)
    check("sent=3000" in out, out + err)
    recs = d.wait_closed(sid)
    denies = [r for r in recs if r["type"] == "deny"]
    eq(len(denies), 1, "deny records")
    reps = [r for r in recs if r["type"] == "repeated"]
    check(reps, "a repeated record")
    eq({r["of"] for r in reps}, {denies[0]["seq"]}, "repeated names the record it repeats")
    eq(sum(r["count"] for r in reps), 2999, "repeats counted")
    eq(recs[-1]["counts"]["denies"], 3000, "the seal counts every report")
    verify(d, sid)
    r = d.cli("logs", sid)
    check(r.returncode == 0 and b"more like record %d" % denies[0]["seq"] in r.stdout,
          "deputy logs shows the repeats: %r" % r.stdout[-600:])


@case
def new_sessions_are_refused_below_the_free_space_floor():
    if not dt.is_root():
        dt.skip("needs root (a small tmpfs for the state directory)")
    d = dt.Deputyd(session_log_max=2 << 20)
    os.makedirs(d.state, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", d.state],
                       capture_output=True, text=True)
    if r.returncode != 0:
        dt.skip("cannot mount a tmpfs: " + r.stderr.strip())
    try:
        d.start()
        r = d.run(d.idp.grant(), ["true"])
        eq(r.returncode, 0, "a session opens with room: " + r.stderr)
        with open(os.path.join(d.state, "filler"), "wb") as f:
            f.write(b"\0" * (7 << 20))
        r = d.run(d.idp.grant(), ["true"])
        check(r.returncode != 0 and "session_log_max" in r.stderr,
              "refused below the floor: %r" % r.stderr)
        os.unlink(os.path.join(d.state, "filler"))
        r = d.run(d.idp.grant(), ["true"])
        eq(r.returncode, 0, "opens again once there is room: " + r.stderr)
    finally:
        d.stop()
        subprocess.run(["umount", "-l", d.state], capture_output=True)


@case
def blocked_connect_flood_is_coalesced_and_its_loss_is_its_own():
    need_bpf()
    user = agent_user()
    d = dt.Deputyd(routes=[]).start()
    n = 200000
    flood = ["sh", "-c", 'echo "session=$DEPUTY_SESSION"; for i in 1 2; do "$0" --count %d '
             '127.0.0.1 9 & done; wait' % n, NET_CONNECT]
    quiet = ["sh", "-c", 'echo "session=$DEPUTY_SESSION"; sleep 1; for i in $(seq 20); do '
             '"$0" 127.0.0.1 $((20000 + i)); done; echo done', NET_CONNECT]
    pa, sa = start_agent(d, flood, user)
    pb, sb = start_agent(d, quiet, user)
    outa, _ = pa.communicate(timeout=300)
    outb, _ = pb.communicate(timeout=300)
    check("done" in outb, outb)
    attempts = sum(int(w.split("=")[1]) for w in outa.split() if w.startswith("attempts="))
    eq(attempts, 2 * n, outa)
    ra, rb = d.wait_closed(sa, kernel=True, timeout=120), d.wait_closed(sb, kernel=True)
    ca, cb = ra[-1]["counts"], rb[-1]["counts"]
    conns_b = [r for r in rb if r["type"] == "connect" and r.get("family") == "inet"]
    eq(sorted(r["dport"] for r in conns_b), list(range(20001, 20021)),
       "the quiet session's 20 connects are all logged")
    eq(cb["lost_events"], 0, "the quiet session lost nothing")
    eq(ca["connects"] + ca["lost_events"], 2 * n,
       "the flooding session's connects plus its own lost events are its attempts")
    conns_a = [r for r in ra if r["type"] == "connect"]
    check(len(conns_a) < 2000, "blocked connects coalesced: %d connect records" % len(conns_a))
    check(any(r["type"] == "repeated" for r in ra), "repeated records")
    eq(sum(r["counts"]["connects"] for r in ra if r["type"] == "repeated") + len(conns_a),
       ca["connects"], "records and repeats add up to the seal")
    verify(d, sa)


@case
def kernel_events_keep_their_time_across_a_deputyd_restart():
    need_bpf()
    user = agent_user()
    d = dt.Deputyd(routes=[]).start()
    flag = os.path.join(d.dir, "go")
    agent = ["sh", "-c", 'echo "session=$DEPUTY_SESSION"; while [ ! -e "$1" ]; do sleep 0.05; '
             'done; "$0" 127.0.0.1 9; while [ ! -e "$1.end" ]; do sleep 0.05; done',
             NET_CONNECT, flag]
    p, sid = start_agent(d, agent, user)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    t_event = time.time()
    open(flag, "w").close()
    time.sleep(3)  # the connect happens while deputyd is down
    t_restart = time.time()
    d.start()

    def blocked():
        return [r for r in d.records(sid) if r["type"] == "connect" and r.get("dport") == 9]
    recs = dt.wait_until(blocked, timeout=30)
    check(recs, "the blocked connect made during the outage is logged")
    ts = ts_of(recs[0])
    check(t_event - 0.5 <= ts <= t_event + 2.0,
          "stamped with the kernel's time %.3f, not when read (%.3f)" % (ts - t_event,
                                                                        t_restart - t_event))
    resume = [r for r in d.records(sid) if r["type"] == "session_resume"]
    eq(len(resume), 1, "session_resume")
    check(resume[0].get("down_since") and ts_of({"ts": resume[0]["down_since"]}) <= t_event,
          "the outage is logged from the last record before it: %r" % resume[0])
    open(flag + ".end", "w").close()
    eq(p.wait(30), 0, "the agent's exit reaches the restarted deputyd")
    d.wait_closed(sid)


if __name__ == "__main__":
    dt.main()
