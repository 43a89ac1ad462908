# SPDX-License-Identifier: MIT
"""deputyd writes a turn's audit records with one write per session log and sends the turn's
replies after it (audit_log.c, conn.c): a reply never leaves before the record it depends on
is in the log file. Checked two ways: deputyd killed with SIGKILL right after an agent got its
replies still has every one's record in the file, and, syscall by syscall (strace), every
reply carrying a token is sent after the write that holds its jti."""
import json
import os
import re
import signal
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

# Inside the session: CONNS connections, each sending BURST DECIDEs in one write (so deputyd
# takes them in one turn), then reading the replies; prints every jti, one per line. With
# argv[2] = a pid, the agent (root here: it must signal deputyd) kills it with SIGKILL as
# soon as the last reply is in, before printing anything.
AGENT = r"""
import json, os, signal, sys, threading
sys.path.insert(0, %r)
import deputytest as dt
conns, burst = int(sys.argv[1]), 8
kill = int(sys.argv[2]) if len(sys.argv) > 2 else 0
sess = os.environ["DEPUTY_SESSION"]
fields = [("SESSION", sess), ("SCHEME", "https"), ("HOST", "api.test"), ("PORT", 443),
          ("METHOD", "POST"), ("TARGET", "/send")] + dt.route_conn_fields(443)
cs = [dt.Conn(os.environ["DEPUTY_SOCKET"], timeout=60) for _ in range(conns)]
for c in cs:
    c.send_raw(b"".join(dt.frame("DECIDE", fields, seq=i + 1) for i in range(burst)))
jtis = []
for c in cs:
    for _ in range(burst):
        r = c.recv_reply()
        jtis.append(r.get("JTI") if r else None)
if kill:
    os.kill(kill, signal.SIGKILL)
for j in jtis:
    print(json.dumps(j), flush=True)
""" % dt.LIB


def agent(d, *args):
    script = os.path.join(d.dir, "agent.py")
    with open(script, "w") as f:
        f.write(AGENT)
    os.chmod(script, 0o644)
    return subprocess.run([dt.DEPUTY, "run", "--grant", d.grant_file(d.idp.grant()), "--agent",
                           "mailbot", "--", dt.PYTHON, script] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=180, env=d.env())


def logged_jtis(d):
    out = set()
    sessions = os.path.join(d.state, "sessions")
    for name in os.listdir(sessions):
        if name.endswith(".jsonl"):
            with open(os.path.join(sessions, name)) as f:
                for line in f:
                    rec = json.loads(line)
                    if rec["type"] == "token":
                        out.add(rec["jti"])
    return out


@case
def replies_of_a_killed_deputyd_are_all_in_the_log():
    if not dt.is_root():
        dt.skip("the agent must be able to kill deputyd (root)")
    for attempt in range(3):
        d = dt.Deputyd(kernel="off").start()
        r = agent(d, 4, d.proc.pid)
        d.proc.wait(timeout=30)
        jtis = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        eq(len(jtis), 32, "replies before the kill: " + r.stderr[-300:])
        check(all(jtis), "every reply carries a token")
        missing = set(jtis) - logged_jtis(d)
        eq(sorted(missing), [], "replies whose token record is not in the log")
        d.cleanup()


@case
def no_reply_is_sent_before_its_record_is_written():
    if not dt.is_root():
        dt.skip("strace -p needs root")
    d = dt.Deputyd(kernel="off").start()
    trace = os.path.join(d.dir, "strace.out")
    st = dt.track(subprocess.Popen(["strace", "-qq", "-f", "-s", "65536", "-e",
                                    "trace=write,writev,sendto,sendmsg,accept4", "-o", trace,
                                    "-p", str(d.proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    # attached once a connection's accept shows up in the trace
    def attached():
        dt.Conn(d.socket).close()
        if not os.path.exists(trace):
            return False
        with open(trace, errors="replace") as f:
            return "accept4(" in f.read()
    check(dt.wait_until(attached, timeout=20), "strace did not attach")
    r = agent(d, 4)
    eq(r.returncode, 0, "agent: " + r.stderr[-300:])
    jtis = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    eq(len(jtis), 32, "replies")
    d.stop()
    dt.stop_process(st)
    with open(trace, errors="replace") as f:
        lines = f.read().splitlines()
    written, order_errors, sent = set(), [], 0
    for line in lines:
        m = re.search(r"\b(write|writev|sendto|sendmsg)\(", line)
        if not m:
            continue
        found = [j for j in jtis if j and j in line]
        if m.group(1) in ("write", "writev"):
            written.update(found)
        else:
            sent += len(found)
            order_errors += [j for j in found if j not in written]
    eq(sent, 32, "replies seen being sent in the trace")
    eq(order_errors, [], "replies sent before their record was written")


if __name__ == "__main__":
    dt.main()
