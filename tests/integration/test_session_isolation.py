# SPDX-License-Identifier: MIT
"""Sessions that cannot be left or borrowed (issue 11, items 1, 2 and 8), each attack played by
an unprivileged agent (`nobody`) under `deputy run` against the real deputyd:
- the agent goes for its leader: ptrace, copying `deputy run`'s connection to deputyd with
  pidfd_getfd and sending SESSION_CLOSE on it, or closing its session from a connection of its
  own. Every step must fail, `deputy run` must never be in the session's cgroup, and the agent
  stays in it;
- an agent of one session copies the connection of another session's agent (same uid, a
  process without the shim, so dumpable) and asks for a token on it: it must get nothing;
  agents that carry the shim cannot be copied from at all; a session sees only its own logs;
- one session holding 512 connections to deputyd must not lock out other sessions of its uid.
Needs root (cgroups, another uid)."""
import json
import os
import signal
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

CONNS_PER_SESSION = 512
# Under `make SAN=1` the CLI links ASan while the shim preloaded into it in a session carries
# only UBSan, whose runtime then comes first: ASan must not refuse that.
os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                    "verify_asan_link_order=0"]))

# The agents' tools, run inside sessions. argv[1] says which; each prints one JSON line per
# step (flushed: an attack that works may get the agent killed right after), then waits for
# its stdin to close.
AGENT = r'''
import ctypes, errno, json, os, socket, sys, time
sys.path.insert(0, %r)
import deputytest as dt

libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_open, SYS_pidfd_getfd, PTRACE_ATTACH, PTRACE_DETACH = 434, 438, 16, 17


def say(**kw):
    print(json.dumps(kw), flush=True)


def steal(pid, fd):
    """fd number fd of process pid, copied into this process (pidfd_getfd), or -errno."""
    pidfd = libc.syscall(SYS_pidfd_open, pid, 0)
    if pidfd < 0:
        return -ctypes.get_errno()
    got = libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0)
    e = ctypes.get_errno()
    os.close(pidfd)
    return got if got >= 0 else -e


def call_on(fd, msg, fields):
    """Sends one request on a copied connection; its reply, or "closed"."""
    s = socket.socket(fileno=fd)
    s.settimeout(10)
    try:
        s.sendall(dt.frame(msg, fields, seq=4242))
        c = dt.Conn.__new__(dt.Conn)
        c.s = s
        r = c.recv_reply()
        return r if r else "closed"
    except OSError as e:
        return "error %%d" %% e.errno
    finally:
        s.detach()


def wait_stdin():
    sys.stdin.read()


mode = sys.argv[1]
sid = os.environ["DEPUTY_SESSION"]
if mode == "leader":
    leader = os.getppid()
    say(step="start", pid=os.getpid(), leader=leader, session=sid)
    r = libc.ptrace(PTRACE_ATTACH, leader, None, None)
    e = ctypes.get_errno()
    if r == 0:
        time.sleep(0.2)
        libc.ptrace(PTRACE_DETACH, leader, None, None)
    say(step="ptrace", ok=r == 0, errno=e)
    for fd in range(3, 16):
        got = steal(leader, fd)
        if got < 0:
            say(step="getfd", fd=fd, errno=-got)
            continue
        try:
            peer = socket.socket(fileno=os.dup(got)).getpeername()
        except OSError:
            peer = ""
        if peer != os.environ["DEPUTY_SOCKET"]:
            os.close(got)
            continue
        say(step="getfd", fd=fd, errno=0)
        say(step="close_stolen", reply=call_on(got, "SESSION_CLOSE",
                                               [("SESSION", sid), ("STATUS", 0)]))
    c = dt.Conn(os.environ["DEPUTY_SOCKET"])
    say(step="close_own", reply=c.call("SESSION_CLOSE", [("SESSION", sid), ("STATUS", 0)]))
    say(step="end", cgroup=[l[3:] for l in open("/proc/self/cgroup").read().splitlines()
                            if l.startswith("0::")][0])
    wait_stdin()
elif mode == "victim":
    c = dt.Conn(os.environ["DEPUTY_SOCKET"])
    r = c.decide(sid, host="api.test", port=443, method="GET", target="/read")
    say(step="victim", pid=os.getpid(), fd=c.s.fileno(), session=sid, verdict=r.get("VERDICT"))
    wait_stdin()
elif mode == "thief":
    pid, fd = int(sys.argv[2]), int(sys.argv[3])
    try:
        env = open("/proc/%%d/environ" %% pid, "rb").read().split(b"\0")
        victim = [v[15:].decode() for v in env if v.startswith(b"DEPUTY_SESSION=")][0]
        say(step="environ", ok=True)
    except (OSError, IndexError) as e:
        victim = sys.argv[4]
        say(step="environ", ok=False, errno=getattr(e, "errno", 0))
    got = steal(pid, fd)
    say(step="getfd", errno=0 if got >= 0 else -got)
    if got >= 0:
        say(step="decide", reply=call_on(got, "DECIDE", [
            ("SESSION", victim), ("SCHEME", "https"), ("HOST", "api.test"), ("PORT", 443),
            ("METHOD", "POST"), ("TARGET", "/send")]))
elif mode == "holder":
    held, refused = [], 0
    for i in range(int(sys.argv[2])):
        c = dt.Conn(os.environ["DEPUTY_SOCKET"])
        try:
            r = c.decide(sid, host="llm.test", port=443, method="GET", target="/")
        except OSError:
            r = None
        if r and r["type"] == "DECISION":
            held.append(c)
        else:
            refused += 1
            c.close()
    say(step="holding", held=len(held), refused=refused)
    wait_stdin()
''' % dt.LIB


def need_root():
    if not dt.is_root():
        dt.skip("needs root (cgroups, another uid)")


class Agent:
    """One `deputy run` of the AGENT tool as nobody; reads its JSON lines."""

    def __init__(self, d, args, grant=None, shim=True, session_env=None):
        script = os.path.join(d.dir, "iso_agent.py")
        if not os.path.exists(script):
            with open(script, "w") as f:
                f.write(AGENT)
            os.chmod(script, 0o644)
        cmd = [dt.PYTHON, script] + [str(a) for a in args]
        if not shim:
            cmd = ["env", "-u", "LD_PRELOAD"] + cmd
        self.p = dt.track(subprocess.Popen(
            [dt.DEPUTY, "run", "--grant", d.grant_file(grant or d.idp.grant()), "--agent",
             "mailbot", "--"] + cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=d.env(),
            preexec_fn=dt.demote(dt.unprivileged_user())))

    def line(self, timeout=60):
        """The next JSON line, or None at EOF. A plain blocking readline: select() on the
        pipe would miss lines already in the file object's buffer. An agent silent for
        timeout seconds is killed, which ends the wait."""
        timer = threading.Timer(timeout, self.p.kill)
        timer.start()
        try:
            while True:
                text = self.p.stdout.readline()
                if not text:
                    return None
                if text.startswith("{"):
                    return json.loads(text)
        finally:
            timer.cancel()

    def until(self, step):
        """Lines up to and including the one of step, by step name."""
        out = {}
        while True:
            rec = self.line()
            check(rec is not None, "agent ended before %r: %s" % (step, self.stderr()))
            out.setdefault(rec["step"], []).append(rec)
            if rec["step"] == step:
                return out

    def stderr(self):
        if self.p.poll() is None:
            return ""
        return dt._tail(self.p.stderr.read(), 2000)

    def finish(self):
        """Lets the agent end; deputy run's exit status."""
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            return self.p.wait(30)
        finally:
            dt.stop_process(self.p)


def cgroup_of(pid):
    with open("/proc/%d/cgroup" % pid) as f:
        return [l[3:] for l in f.read().splitlines() if l.startswith("0::")][0]


@case
def the_leader_cannot_be_borrowed():
    need_root()
    d = dt.Deputyd().start()
    a = Agent(d, ["leader"])
    got = a.until("end")
    start = got["start"][0]
    sid, leader = start["session"], start["leader"]
    session_cg = "/%s/%s" % (d.cgroup, sid)
    eq(start["leader"], a.p.pid, "the agent's parent is deputy run")
    check(not cgroup_of(leader).startswith(session_cg),
          "deputy run is inside its session's cgroup (%s): taking it over leaves the session"
          % cgroup_of(leader))
    check(not got["ptrace"][0]["ok"], "the agent ptraced deputy run")
    stolen = [g for g in got.get("getfd", []) if g["errno"] == 0]
    check(not stolen, "the agent copied deputy run's connection to deputyd: %r; then %r"
          % (stolen, got.get("close_stolen")))
    check(all(g["errno"] == 1 for g in got.get("getfd", [])),
          "pidfd_getfd on deputy run must fail with EPERM: %r" % got.get("getfd"))
    own = got["close_own"][0]["reply"]
    eq(own["type"], "ERROR", "the agent closed its session from its own connection: %r" % own)
    eq(got["end"][0]["cgroup"], session_cg, "the agent left its session's cgroup")
    # Nothing of that ended the session: it ends when the agent does, with its status.
    recs = d.records(sid, kernel=False)
    check(not any(r["type"] == "session_close" for r in recs), "the session was closed")
    eq(a.finish(), 0, "deputy run's status")
    recs = d.wait_closed(sid)
    eq(recs[-1]["counts"]["exit_status"], 0, "exit status in the seal")
    r = d.cli("audit", "verify", sid)
    eq(r.returncode, 0, r.stderr)


@case
def the_session_ends_when_its_agent_tree_ends():
    need_root()
    d = dt.Deputyd().start()
    # The command leaves a daemon behind: it is killed when the command ends.
    r = d.run(d.idp.grant(), ["sh", "-c", 'setsid sleep 300 </dev/null >/dev/null 2>&1 & '
                              'echo "session=$DEPUTY_SESSION"; exit 3'],
              user=dt.unprivileged_user())
    eq(r.returncode, 3, r.stderr)
    sid = r.stdout.split("session=", 1)[1].split()[0]
    recs = d.wait_closed(sid)
    eq(recs[-1]["counts"]["exit_status"], 3, "exit status in the seal")
    cg = os.path.join(dt.cgroup2_root(), d.cgroup, sid)
    check(dt.wait_until(lambda: not os.path.exists(cg), 10),
          "the session's cgroup (and the daemon in it) outlived the session")
    # deputy run killed: the session ends with it, its agent killed.
    p, sid = d.start_session(user=dt.unprivileged_user(), seconds=300)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    recs = d.wait_closed(sid)
    eq(recs[-1]["counts"]["exit_status"], -1, "exit status of a session whose leader died")


@case
def a_killed_leader_ends_its_session_after_a_deputyd_restart():
    """deputyd crashes and comes back; then `deputy run` is killed. The restarted deputyd
    must notice as the first one would: the session ends and its agent is killed, rather
    than the agent going on under the user's grant with nobody to end it."""
    need_root()
    d = dt.Deputyd().start()
    p, sid = d.start_session(user=dt.unprivileged_user(), seconds=300)
    cg = os.path.join(dt.cgroup2_root(), d.cgroup, sid)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.start()
    check("session %s resumed" % sid in d.log_text(), "resumed: " + d.log_text()[-1500:])
    check(p.poll() is None, "deputy run survived the restart")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    recs = d.wait_closed(sid, timeout=30)
    eq(recs[-1]["counts"]["exit_status"], -1, "exit status of a session whose leader died")
    check(dt.wait_until(lambda: not os.path.exists(cg), 15),
          "the agent outlived its killed leader after a deputyd restart")
    r = d.cli("audit", "verify", sid)
    eq(r.returncode, 0, r.stderr)


# Pid reuse, inside a session: process A connects and binds its connection, forks C (which
# inherits it) and exits; C then forks until a child B has A's pid (the test, as root, sets
# ns_last_pid before each "go"), and B sends a report on A's connection.
REUSE = r'''
import os, sys
sys.path.insert(0, %r)
import deputytest as dt
sid = os.environ["DEPUTY_SESSION"]
alive_r, alive_w = os.pipe()  # the command ends when C does: C holds alive_w
a = os.fork()
if a == 0:
    c = dt.Conn(os.environ["DEPUTY_SOCKET"])
    c.decide(sid, bind=False)  # bound to the session while A lives
    me = os.getpid()
    if os.fork() == 0:
        for line in sys.stdin:
            if line.strip() != "go":
                break
            b = os.fork()
            if b == 0:
                if os.getpid() != me:
                    os._exit(3)
                c.call("DENY_REPORT", [("SESSION", sid), ("REASON", "sent-by-a-reused-pid"),
                                       ("HOST", "h.test"), ("METHOD", "GET"),
                                       ("TARGET", "/x")], flags=dt.NOREPLY)
                os._exit(0)
            print("try=%%d" %% os.waitstatus_to_exitcode(os.waitpid(b, 0)[1]), flush=True)
        os._exit(0)
    os._exit(0)
os.close(alive_w)
os.waitpid(a, 0)
print("a_pid=%%d" %% a, flush=True)
os.read(alive_r, 1)
''' % dt.LIB


@case
def a_reused_pid_cannot_send_on_a_dead_processs_connection():
    """Once the process that opened a connection has exited, a new process given its pid
    (here arranged through ns_last_pid; an agent can cycle pids) must not be taken for it:
    the kernel's pidfd of each message's sender tells them apart (SO_PASSPIDFD)."""
    need_root()
    if not os.path.exists("/proc/sys/kernel/ns_last_pid"):
        dt.skip("no /proc/sys/kernel/ns_last_pid to arrange a pid reuse")
    d = dt.Deputyd().start()
    script = os.path.join(d.dir, "iso_reuse.py")
    with open(script, "w") as f:
        f.write(REUSE)
    os.chmod(script, 0o644)
    p = dt.track(subprocess.Popen(
        [dt.DEPUTY, "run", "--grant", d.grant_file(d.idp.grant()), "--agent", "mailbot", "--",
         "env", "-u", "LD_PRELOAD", dt.PYTHON, script], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=d.env(),
        preexec_fn=dt.demote(dt.unprivileged_user())))
    try:
        line = p.stdout.readline()
        check(line.startswith("a_pid="), "agent: %r %s" % (line, p.stderr.read()
                                                            if p.poll() is not None else ""))
        a_pid = int(line.split("=")[1])
        got = None
        for _ in range(200):  # another fork on the host may take the pid first
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(a_pid - 1))
            p.stdin.write("go\n")
            p.stdin.flush()
            got = p.stdout.readline().strip()
            if got == "try=0":
                break
        eq(got, "try=0", "a process with the dead process's pid")
        p.stdin.close()
        eq(p.wait(60), 0, "deputy run")
        recs = []
        for name in os.listdir(os.path.join(d.state, "sessions")):
            if name.endswith(".jsonl"):
                recs += d.wait_closed(name[:-6])
        check(recs, "no session log")
        check(not any("sent-by-a-reused-pid" in json.dumps(r) for r in recs),
              "a report sent by a new process with a dead one's pid was logged")
        check("a new process with its pid" in d.log_text(),
              "deputyd did not say why it closed the connection: " + d.log_text()[-1500:])
    finally:
        dt.stop_process(p)


def steal_from(d, shim):
    """A victim agent (alice, may send email) and a thief in another session of the same uid
    (mallory, may not) that reads the victim's environment, copies its connection to deputyd
    and asks for an email:send token on it. Returns (the victim's line, the thief's steps)."""
    v = Agent(d, ["victim"], grant=d.idp.grant(user="alice", scope="email:send email:read"),
              shim=shim)
    try:
        vic = v.until("victim")["victim"][0]
        t = Agent(d, ["thief", vic["pid"], vic["fd"], vic["session"]],
                  grant=d.idp.grant(user="mallory", scope="email:read"))
        try:
            out = {rec["step"]: rec for rec in iter(t.line, None)}
        finally:
            t.finish()
    finally:
        v.finish()
    return vic, out


@case
def a_copied_connection_gets_nothing():
    need_root()
    d = dt.Deputyd().start()
    # The victim runs without the shim (like a static binary): dumpable, its environment
    # readable by its uid.
    vic, out = steal_from(d, shim=False)
    check(out.get("environ", {}).get("ok"), "the victim (no shim) should be readable: %r" % out)
    eq(out["getfd"]["errno"], 0, "pidfd_getfd on a dumpable process of the same uid")
    rep = out["decide"]["reply"]
    check(rep == "closed" or (isinstance(rep, dict) and rep.get("type") == "ERROR"),
          "a copied connection got an answer: %r" % rep)
    recs = d.records(vic["session"], kernel=False)
    check(not any(r["type"] == "token" and r["scope"] == "email:send" for r in recs),
          "a token was minted on the copied connection")
    check("sent on pid %d's connection" % vic["pid"] in d.log_text(),
          "deputyd did not log the foreign sender")


@case
def agents_with_the_shim_cannot_be_copied_from():
    need_root()
    d = dt.Deputyd().start()
    _, out = steal_from(d, shim=True)
    check(not out["environ"]["ok"], "another session read a shim agent's environment")
    eq(out["getfd"]["errno"], 1, "pidfd_getfd on a shim agent must fail with EPERM")
    check("decide" not in out, "the thief got a connection to use: %r" % out)


@case
def a_session_sees_only_its_own_logs():
    need_root()
    d = dt.Deputyd().start()
    user = dt.unprivileged_user()
    p, other = d.start_session(user=user)
    try:
        script = ('d=$DEPUTY_SESSION; %s logs "$d" >/dev/null && echo own=ok; '
                  '%s logs %s >/dev/null 2>&1 && echo other=read; '
                  '%s sessions --json' % (dt.DEPUTY, dt.DEPUTY, other, dt.DEPUTY))
        r = d.run(d.idp.grant(user="mallory"), ["sh", "-c", script], user=user)
        eq(r.returncode, 0, r.stderr)
        check("own=ok" in r.stdout, "a session could not read its own log: " + r.stdout)
        check("other=read" not in r.stdout, "a session read another session's log")
        listed = [json.loads(l)["session"] for l in r.stdout.splitlines() if l.startswith("{")]
        eq(len(listed), 1, "a session lists only itself: %r" % listed)
        check(other not in listed, "a session listed another session")
        # Outside every session the same uid still sees both.
        r = d.cli("sessions", "--json", user=user)
        ids = [json.loads(l)["session"] for l in r.stdout.decode().splitlines() if l.strip()]
        check(other in ids and len(ids) == 2, "the user outside sessions sees all: %r" % ids)
    finally:
        p.kill()
        p.wait()


@case
def connection_limits_are_per_session():
    need_root()
    d = dt.Deputyd().start()
    h = Agent(d, ["holder", CONNS_PER_SESSION + 8])
    try:
        held = h.until("holding")["holding"][0]
        eq(held["held"], CONNS_PER_SESSION, "connections one session may hold")
        eq(held["refused"], 8, "connections over the session's limit")
        # Another session of the same uid is served meanwhile, and so is its user.
        r, replies = dt.agent_requests(d, d.idp.grant(), [
            [ "DECIDE", [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", "api.test"],
                         ["PORT", 443], ["METHOD", "POST"], ["TARGET", "/send"]]]],
            user=dt.unprivileged_user())
        eq(r.returncode, 0, r.stderr)
        check(replies and replies[0].get("VERDICT") == 1,
              "another session of the uid was locked out: %r %s" % (replies, r.stderr))
        r = d.cli("sessions", "--json", user=dt.unprivileged_user())
        eq(r.returncode, 0, r.stderr)
    finally:
        h.finish()


if __name__ == "__main__":
    dt.main()
