# SPDX-License-Identifier: MIT
"""Finding records (issue 12, item 4) with the real deputyd: deputy sessions and deputy logs
filters, session ids by prefix, logs --all --follow across a deputyd restart, the folded
Unix-socket lookups and the cut columns of the text view."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402


def run_ok(d, cmd=("true",), agent="mailbot", **kw):
    r = d.run(kw.pop("token", None) or d.idp.grant(agent=agent, **kw), list(cmd), agent=agent)
    eq(r.returncode, 0, "deputy run: " + r.stderr)
    return r


def sessions_json(d, *args):
    r = d.cli("sessions", "--json", *args)
    eq(r.returncode, 0, "deputy sessions %s: %s" % (args, r.stderr.decode()))
    return [json.loads(l) for l in r.stdout.decode().splitlines() if l.strip()]


def write_log(d, sid, records):
    """A closed session's log as deputyd would serve it (the test's own input)."""
    os.makedirs(os.path.join(d.state, "sessions"), exist_ok=True)
    with open(d.log_path(sid), "w") as f:
        for i, r in enumerate(records):
            base = {"seq": i, "ts": "2026-11-28T15:18:%02d.000000Z" % i, "session": sid,
                    "prev": "0" * 64}
            base.update(r)
            f.write(json.dumps(base, separators=(",", ":")) + "\n")


OPEN = {"type": "session_open", "user": "alice", "agent": "agent:mailbot", "grant_iss": dt.IDP,
        "grant_jti": "j", "argv": ["sh"], "uid": 0, "pid": 1, "cgroup": "/x"}


@case
def sessions_filters_by_user_agent_time_and_state():
    d = dt.Deputyd().start()
    run_ok(d, user="alice")
    run_ok(d, agent="other", user="bob")
    for s in sessions_json(d):  # sealed when deputyd saw the cgroup empty
        d.wait_closed(s["session"])
    mid = time.time()
    time.sleep(1.2)
    p, live = d.start_session(d.idp.grant(user="carol"))
    try:
        eq({s["user"] for s in sessions_json(d)}, {"alice", "bob", "carol"})
        eq([s["user"] for s in sessions_json(d, "--user", "alice")], ["alice"])
        eq([s["user"] for s in sessions_json(d, "--agent", "other")], ["bob"])
        eq([s["user"] for s in sessions_json(d, "--agent", "agent:other")], ["bob"])
        eq([s["session"] for s in sessions_json(d, "--open")], [live])
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(mid) + 1))
        eq([s["user"] for s in sessions_json(d, "--since", since)], ["carol"],
           "--since RFC 3339: sessions that ran since then")
        eq(len(sessions_json(d, "--since", "1h")), 3, "--since 1h")
        eq(sessions_json(d, "--until", "2001-01-01T00:00:00+02:00"), [], "--until long ago")
        eq([s["user"] for s in sessions_json(d, "--until", since)], ["alice", "bob"])
        r = d.cli("sessions", "--since", "yesterday")
        eq(r.returncode, 1, "a bad time is refused")
        check(b"not a time" in r.stderr, r.stderr)
        # another user sees none of root's sessions, filtered or not
        r = d.cli("sessions", "--json", "--user", "alice", user=dt.unprivileged_user())
        eq((r.returncode, r.stdout), (0, b""), "nobody sees no one else's session")
    finally:
        p.kill()


@case
def session_ids_are_taken_by_unique_prefix():
    d = dt.Deputyd().start()
    r = run_ok(d, ["sh", "-c", 'echo "session=$DEPUTY_SESSION"'])
    sid = r.stdout.split("session=")[1].strip()
    d.wait_closed(sid)
    for prefix in (sid[:4], sid[:9], sid):
        r = d.cli("logs", "--json", prefix)
        eq(r.returncode, 0, "logs %s: %s" % (prefix, r.stderr.decode()))
        eq([json.loads(l)["session"] for l in r.stdout.decode().splitlines()][0], sid)
    r = d.cli("audit", "verify", sid[:6])
    eq(r.returncode, 0, "audit verify by prefix: " + r.stderr.decode())
    r = d.cli("report", sid[:6], "--html")
    eq(r.returncode, 0, "report by prefix: " + r.stderr.decode())
    check(sid.encode() in r.stdout, "the page is the session's")
    # two sessions with one prefix: ambiguous, both named
    a, b = "Zq9x" + "A" * 18, "Zq9x" + "B" * 18
    write_log(d, a, [OPEN])
    write_log(d, b, [OPEN])
    r = d.cli("logs", "Zq9x")
    eq(r.returncode, 1)
    err = r.stderr.decode()
    check("ambiguous" in err and a in err and b in err, "candidates named: " + err)
    eq(r.stdout, b"", "nothing printed before the error")
    r = d.cli("logs", "Zq9xA")
    eq(r.returncode, 0, "a longer prefix is unique: " + r.stderr.decode())
    r = d.cli("logs", sid[:3])
    eq(r.returncode, 1)
    check(b"at least 4" in r.stderr, r.stderr)
    for bad in ("no-such-session", "../../etc/passwd", "x" * 40):
        r = d.cli("logs", bad)
        eq(r.returncode, 1, "logs %s" % bad)
        eq(r.stdout, b"", "logs BADID prints no header")
        check(r.stderr.startswith(b"deputy: logs: "), r.stderr)
    # another user cannot probe ids: "no such session", as for an absent one
    r = d.cli("logs", sid[:5], user=dt.unprivileged_user())
    eq(r.returncode, 1)
    check(b"no such session" in r.stderr, r.stderr)


@case
def logs_filters_by_type_verdict_and_time():
    d = dt.Deputyd().start()
    g = d.idp.grant(scope="email:send")
    r, replies = dt.agent_requests(d, g, [
        ["DECIDE", [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", "api.test"],
                    ["PORT", 443], ["METHOD", "POST"], ["TARGET", "/send"]]],
        ["DECIDE", [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", "api.test"],
                    ["PORT", 443], ["METHOD", "GET"], ["TARGET", "/read"]]],
        ["DECIDE", [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", "llm.test"],
                    ["PORT", 443], ["METHOD", "GET"], ["TARGET", "/x"]]]])
    eq([dt.VERDICT[x["VERDICT"]] for x in replies], ["delegate", "deny", "passthrough"])
    sid = d.sessions()[0]["session"]
    d.wait_closed(sid)

    def types(*args):
        r = d.cli("logs", sid, "--json", *args)
        eq(r.returncode, 0, r.stderr.decode())
        return [json.loads(l)["type"] for l in r.stdout.decode().splitlines()]
    eq(types("--type", "deny"), ["deny"])
    eq(types("--type", "token,passthrough"), ["token", "passthrough"])
    eq(types("--verdict", "delegate"), ["token"])
    eq(types("--verdict", "deny", "--type", "deny,token"), ["deny"])
    eq(types("--since", "1h", "--type", "session_open"), ["session_open"])
    eq(types("--since", "2099-01-01T00:00:00Z"), [])
    eq(types("--until", "2001-01-01T00:00:00Z"), [])
    r = d.cli("logs", sid, "--type", "deny")
    lines = r.stdout.decode().splitlines()
    eq(len(lines), 2, "header and one deny: %r" % lines)
    check("deny(daemon)" in lines[1], lines[1])
    # --all: every session, each line saying whose
    other = d.run(d.idp.grant(user="bob"), ["true"])
    eq(other.returncode, 0, other.stderr)
    for s in d.sessions():
        d.wait_closed(s["session"])
    r = d.cli("logs", "--all", "--json", "--type", "session_open")
    eq(r.returncode, 0, r.stderr.decode())
    eq(sorted(json.loads(l)["user"] for l in r.stdout.decode().splitlines()), ["alice", "bob"])
    r = d.cli("logs", "--all", "--type", "session_close")
    lines = r.stdout.decode().splitlines()
    check(lines[0].startswith("SESSION") and len(lines) == 3, "%r" % lines)
    check(any(l.startswith(sid[:8]) for l in lines[1:]), "%r" % lines)


@case
def text_view_cuts_long_values_and_folds_unix_lookups():
    d = dt.Deputyd().start()
    sid = "Lv7k" + "q" * 18
    long_url = "https://api.test/" + "a" * 300
    write_log(d, sid, [
        dict(OPEN, argv=["python3", "-c", "x" * 500]),
        {"type": "connect", "pid": 7, "comm": "agent", "family": "unix",
         "path": "/var/run/nscd/socket", "verdict": "allow", "enforced": True,
         "mediated": False},
        {"type": "connect", "pid": 7, "comm": "agent", "family": "unix",
         "path": "/var/run/nscd/socket", "verdict": "allow", "enforced": True,
         "mediated": False},
        {"type": "connect", "pid": 7, "comm": "agent", "family": "unix",
         "path": "/var/run/nscd/socket", "verdict": "allow", "enforced": True,
         "mediated": False},
        {"type": "deny", "layer": "daemon", "reason": "no route allows GET " + long_url,
         "method": "GET", "url": long_url, "enforced": True, "pid": 7, "comm": "agent"},
        {"type": "connect", "pid": 8, "comm": "other", "family": "unix",
         "path": "/run/x.sock", "verdict": "allow", "enforced": True, "mediated": False},
    ])
    r = d.cli("logs", sid)
    eq(r.returncode, 0, r.stderr.decode())
    lines = r.stdout.decode().splitlines()
    eq(len(lines), 1 + 1 + 1 + 1 + 1, "header, open, one folded run, deny, pid 8's: %r" % lines)
    check("+2 more Unix-socket connects" in lines[2], lines[2])
    check("/run/x.sock" in lines[4] and "more" not in lines[4], lines[4])
    verdict_col = lines[0].index("VERDICT")
    for line in lines[1:]:
        check("…" in line or len(line) < 200, "long values are cut: %r" % line)
    check(lines[3].index("deny(daemon)") == verdict_col, "columns line up: %r" % lines[3])
    check(lines[1].index("  open ") + 2 == verdict_col, "argv cut, columns line up: %r" % lines[1])
    r = d.cli("logs", sid, "--all-records")
    eq(len(r.stdout.decode().splitlines()), 7, "--all-records shows every connect")
    r = d.cli("logs", sid, "--json")
    recs = [json.loads(l) for l in r.stdout.decode().splitlines()]
    eq(len(recs), 6, "--json is neither folded nor cut")
    eq(recs[4]["url"], long_url)


def follower(d, *args):
    env = d.env()
    return dt.track(subprocess.Popen([dt.DEPUTY, "logs", "--all", "--follow", "--json"] +
                                     list(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env))


def read_lines_until(p, want, timeout=60):
    """Lines from p's stdout until want(lines) holds (or the time is up)."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    lines, buf, deadline = [], b"", time.time() + timeout
    while not want(lines) and time.time() < deadline:
        if sel.select(timeout=0.5):
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append(json.loads(line))
    return lines


@case
def logs_all_follow_survives_a_deputyd_restart():
    d = dt.Deputyd().start()
    old = run_ok(d, ["sh", "-c", 'echo "session=$DEPUTY_SESSION"'])
    old = old.stdout.split("session=")[1].strip()
    d.wait_closed(old)
    f = follower(d)
    try:
        time.sleep(1)
        a = run_ok(d, ["sh", "-c", 'echo "session=$DEPUTY_SESSION"']).stdout
        a = a.split("session=")[1].strip()
        p, live = d.start_session(seconds=120)
        got = read_lines_until(f, lambda ls: {(x["session"], x["type"]) for x in ls} >=
                               {(a, "session_close"), (live, "session_open")})
        check((a, "session_close") in {(x["session"], x["type"]) for x in got},
              "a new session's records are streamed: %r" % got)
        d.stop()  # ends the live session: deputyd_stopped
        time.sleep(1)
        d.start()
        b = run_ok(d, ["sh", "-c", 'echo "session=$DEPUTY_SESSION"']).stdout
        b = b.split("session=")[1].strip()
        got += read_lines_until(f, lambda ls: (b, "session_close") in
                                {(x["session"], x["type"]) for x in got + ls})
        p.kill()
    finally:
        f.send_signal(signal.SIGINT)
        try:
            err = f.communicate(timeout=10)[1].decode()
        except subprocess.TimeoutExpired:
            f.kill()
            err = ""
    seen = [(x["session"], x["seq"]) for x in got]
    eq(len(seen), len(set(seen)), "no record twice")
    check(old not in {s for s, _ in seen}, "records from before --follow are not replayed")
    for sid in (a, live, b):
        want = [(sid, x["seq"]) for x in d.records(sid)]
        eq([x for x in seen if x[0] == sid], want, "session %s: every record, in order" % sid)
    eq(d.records(live)[-1]["type"], "session_close")
    check("waiting for deputyd" in err and "back" in err, "the restart is told: %r" % err)


@case
def logs_follow_one_session_survives_a_restart():
    d = dt.Deputyd().start()
    p, sid = d.start_session(seconds=120)
    f = dt.track(subprocess.Popen([dt.DEPUTY, "logs", "--follow", "--json", sid[:8]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=d.env()))
    try:
        got = read_lines_until(f, lambda ls: len(ls) >= 1)
        d.stop()
        d.start()
        rest = f.communicate(timeout=60)[0].decode().splitlines()
        got += [json.loads(l) for l in rest]
        eq(f.returncode, 0, "--follow ends when the session is sealed")
    finally:
        p.kill()
        if f.poll() is None:
            f.kill()
    eq([x["seq"] for x in got], [x["seq"] for x in d.records(sid)], "no gap, no repeat")
    eq(got[-1]["type"], "session_close")


if __name__ == "__main__":
    dt.main()
