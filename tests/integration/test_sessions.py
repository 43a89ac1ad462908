# SPDX-License-Identifier: MIT
"""Sessions: the real deputyd over its real socket — deputy run, grants, decisions, peer
checks, hostile clients, the audit log and its chain, restarts and reloads."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

import jwt  # noqa: E402


def deputyd_jwks(d):
    with open(os.path.join(d.state, "jwks.json")) as f:
        return jwt.PyJWKSet.from_dict(json.load(f))


def verify_token(d, token, audience="https://api.test"):
    """What a backend does, with an independent library (PyJWT)."""
    header = jwt.get_unverified_header(token)
    eq(header["typ"], "at+jwt", "typ")
    eq(header["alg"], "ES256", "alg")
    key = [k for k in deputyd_jwks(d).keys if k.key_id == header["kid"]]
    check(key, "kid %s not in deputyd's JWKS" % header["kid"])
    return jwt.decode(token, key[0].key, algorithms=["ES256"], audience=audience,
                      issuer=dt.ISSUER)


def session_of(proc_stdout):
    for line in proc_stdout.splitlines():
        if line.startswith("session="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("no session id printed: %r" % proc_stdout)


def decide_req(host="api.test", method="POST", target="/send", port=443, session="$SESSION"):
    return ["DECIDE", [["SESSION", session], ["SCHEME", "https"], ["HOST", host],
                       ["PORT", port], ["METHOD", method], ["TARGET", target]]]


@case
def run_opens_a_session_and_seals_its_log():
    d = dt.Deputyd().start()
    g = d.idp.grant(user="alice")
    r = d.run(g, ["sh", "-c", 'echo "session=$DEPUTY_SESSION"; echo "preload=$LD_PRELOAD"; '
                  'echo "socket=$DEPUTY_SOCKET"; exit 3'])
    eq(r.returncode, 3, "deputy run exits with CMD's status")
    sid = session_of(r.stdout)
    check(len(sid) == 22, "session id of 128 bits: %r" % sid)
    check("preload=" + dt.SHIM in r.stdout, "LD_PRELOAD set: %r" % r.stdout)
    check("socket=" + d.socket in r.stdout, "DEPUTY_SOCKET set")
    recs = d.wait_closed(sid)
    eq([x["type"] for x in recs], ["session_open", "session_close"])
    o = recs[0]
    eq((o["user"], o["agent"], o["grant_iss"], o["uid"]), ("alice", "agent:mailbot", dt.IDP, 0))
    eq(o["grant_jti"], jwt.decode(g, options={"verify_signature": False})["jti"])
    eq(o["argv"][0], "sh")
    for i, x in enumerate(recs):
        eq(x["seq"], i)
        eq(x["session"], sid)
        check(x["ts"].endswith("Z") and len(x["ts"]) == 27, "RFC 3339 with µs: " + x["ts"])
    eq(recs[-1]["counts"]["exit_status"], 3)
    v = d.cli("audit", "verify", sid)
    eq(v.returncode, 0, "audit verify: " + v.stderr.decode())
    v = d.cli("audit", "verify", d.log_path(sid))
    eq(v.returncode, 0, "audit verify FILE: " + v.stderr.decode())
    deadline = time.time() + 5
    cg = os.path.join(dt.cgroup2_root(), d.cgroup, sid)
    while os.path.exists(cg) and time.time() < deadline:
        time.sleep(0.05)
    check(not os.path.exists(cg), "session cgroup removed")


@case
def exit_status_of_a_killed_command():
    d = dt.Deputyd().start()
    r = d.run(d.idp.grant(), ["sh", "-c", "kill -9 $$"])
    eq(r.returncode, 128 + 9)


@case
def refused_grants_never_start_the_command():
    d = dt.Deputyd().start()
    other = dt.Issuer()
    marker = os.path.join(d.dir, "started")
    cases = {
        "expired": d.idp.grant(ttl=-120),
        "unknown issuer": dt.Issuer(iss="https://other.test").grant(),
        "unknown key": other.grant(),
        "wrong audience": d.idp.grant(aud="https://elsewhere.test"),
        "agent": d.idp.grant(may_act={"sub": "agent:someone-else"}),
        "garbage": "not.a.jwt",
    }
    for name, g in cases.items():
        r = d.run(g, ["touch", marker])
        check(r.returncode != 0, name + ": deputy run must fail")
        check(r.stderr.startswith("deputy: grant refused: "), name + ": " + r.stderr)
        eq(len(r.stderr.strip().splitlines()), 1, name + ": one line")
        check(not os.path.exists(marker), name + ": command started")


@case
def without_deputyd_run_fails_clearly():
    d = dt.Deputyd()  # never started
    marker = os.path.join(d.dir, "started")
    try:
        r = d.run(d.idp.grant(), ["touch", marker])
        check(r.returncode != 0, "must fail")
        check(r.stderr.startswith("deputy: run: cannot reach deputyd"), r.stderr)
        check(not os.path.exists(marker), "command started")
    finally:
        d.cleanup()


@case
def decisions_inside_a_session():
    d = dt.Deputyd().start()
    g = d.idp.grant(user="bob", scope="email:send")
    r, replies = dt.agent_requests(d, g, [
        decide_req(target="/send/now?x=1#f"),
        decide_req(method="GET", target="/read"),
        decide_req(host="nowhere.test", method="GET", target="/"),
        decide_req(host="llm.test", target="/v1/chat"),
        decide_req(host="evil.test", method="GET", target="/"),
    ])
    eq(r.returncode, 0, r.stderr)
    eq(len(replies), 5, "replies: %r" % replies)
    delegate, out_of_scope, unrouted, passthrough, denied = replies
    eq(dt.VERDICT[delegate["VERDICT"]], "delegate")
    eq(delegate["HEADER"], "Authorization")
    claims = verify_token(d, delegate["TOKEN"])
    eq(claims["sub"], "bob")
    eq(claims["act"], {"sub": "agent:mailbot"})
    eq(claims["client_id"], "agent:mailbot")
    eq(claims["scope"], "email:send")
    eq(claims["htm"], "POST")
    eq(claims["htu"], "https://api.test/send/now")
    eq(claims["jti"], delegate["JTI"])
    eq(claims["grant"]["iss"], dt.IDP)
    check(claims["exp"] - claims["iat"] <= 60, "short-lived")
    eq(dt.VERDICT[out_of_scope["VERDICT"]], "deny")
    check("email:read" in out_of_scope["REASON"], out_of_scope["REASON"])
    eq(out_of_scope["USER"], "bob")
    eq(out_of_scope["SCOPE"], "email:read")
    eq(dt.VERDICT[unrouted["VERDICT"]], "deny")
    check("no route" in unrouted["REASON"], unrouted["REASON"])
    eq(dt.VERDICT[passthrough["VERDICT"]], "passthrough")
    check("TOKEN" not in passthrough, "no token for passthrough")
    eq(dt.VERDICT[denied["VERDICT"]], "deny")
    sid = claims["sid"]
    recs = d.wait_closed(sid)
    types = [x["type"] for x in recs]
    eq(types, ["session_open", "token", "deny", "deny", "passthrough", "deny", "session_close"])
    tok = recs[1]
    eq((tok["jti"], tok["aud"], tok["scope"], tok["htm"], tok["htu"]),
       (claims["jti"], "https://api.test", "email:send", "POST", "https://api.test/send/now"))
    eq(recs[2]["layer"], "daemon")
    eq(recs[-1]["counts"]["tokens"], 1)
    eq(recs[-1]["counts"]["denies"], 3)


@case
def unprivileged_user_runs_a_session():
    if not dt.is_root():
        dt.skip("needs root to switch to an unprivileged user")
    d = dt.Deputyd().start()
    uid, gid = dt.unprivileged_user()
    r, replies = dt.agent_requests(d, d.idp.grant(), [decide_req()], user=(uid, gid))
    eq(r.returncode, 0, r.stderr)
    eq(dt.VERDICT[replies[0]["VERDICT"]], "delegate", "reply %r" % replies)
    sid = verify_token(d, replies[0]["TOKEN"])["sid"]
    recs = d.wait_closed(sid)
    eq(recs[0]["uid"], uid)
    r = d.cli("sessions", "--json", user=(uid, gid))
    eq(r.returncode, 0, r.stderr.decode())
    check(sid in r.stdout.decode(), "own session listed")
    r = d.cli("logs", sid, user=(uid, gid))
    eq(r.returncode, 0, "own log readable: " + r.stderr.decode())


@case
def peer_check_outside_and_other_sessions():
    d = dt.Deputyd().start()
    a, sid_a = d.start_session(d.idp.grant(user="alice"))
    try:
        # this test process is outside every session, even as root
        rep = dt.Conn(d.socket).decide(sid_a)
        eq(rep["type"], "ERROR", "outside process must get nothing: %r" % rep)
        check("cgroup" in rep["REASON"] or "uid" in rep["REASON"], rep["REASON"])
        # a process of session B asking for session A's tokens
        r, replies = dt.agent_requests(d, d.idp.grant(user="mallory"),
                                       [decide_req(session=sid_a)])
        eq(replies[0]["type"], "ERROR", "other session must get nothing: %r" % replies)
        rep = dt.Conn(d.socket).decide("A" * 22)
        eq(rep["type"], "ERROR")
        if dt.is_root():
            # another uid, even inside nothing, cannot read session A's log
            r = d.cli("logs", sid_a, user=dt.unprivileged_user())
            check(r.returncode != 0, "another user read session A's log")
        recs = d.records(sid_a)
        check(not any(x["type"] == "token" for x in recs), "no token minted for session A")
    finally:
        a.kill()
        a.wait()


def expect_closed(conn, what):
    try:
        data = conn.s.recv(100)
    except socket.timeout:
        raise AssertionError(what + ": connection left open")
    except ConnectionResetError:
        return
    eq(data, b"", what + ": connection must be closed")


@case
def hostile_clients_are_cut_off_others_keep_being_served():
    d = dt.Deputyd().start()

    def hdr(length, version=1, typ=20):
        return struct.pack("<IBBHI", length, version, 0, typ, 1)

    bad = {
        "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad version": hdr(0, version=9),
        "oversized": hdr(10 * 1024 * 1024),
        "unknown type": hdr(0, typ=999),
        "field past end": hdr(8) + struct.pack("<HH", 5, 200) + b"abcd",
        "unknown tag": hdr(5) + struct.pack("<HH", 77, 1) + b"x",
        "nul in string": hdr(7) + struct.pack("<HH", 5, 3) + b"a\0b",
        "duplicate tag": hdr(10) + struct.pack("<HH", 5, 1) + b"a" +
        struct.pack("<HH", 5, 1) + b"b",
        "short integer": hdr(6) + struct.pack("<HH", 10, 2) + b"\x01\x00",
    }
    for name, data in bad.items():
        c = dt.Conn(d.socket, timeout=5)
        c.send_raw(data)
        expect_closed(c, name)
    stalled = dt.Conn(d.socket)
    stalled.send_raw(hdr(100) + b"\x05\x00")
    silent = dt.Conn(d.socket)
    for _ in range(20):
        rep = dt.Conn(d.socket, timeout=5).call("SESSIONS", [])
        eq(rep["type"], "DATA_REPLY")
    check(d.proc.poll() is None, "deputyd still running")
    check("malformed message" in d.log_text(), "the reason is logged")
    stalled.s.settimeout(30)
    expect_closed(stalled, "stalled client")
    check("incomplete" in d.log_text(), "the stall is logged")
    silent.close()


@case
def tampering_with_a_log_breaks_audit_verify():
    d = dt.Deputyd().start()
    r, replies = dt.agent_requests(d, d.idp.grant(), [decide_req()] * 3)
    sid = verify_token(d, replies[0]["TOKEN"])["sid"]
    d.wait_closed(sid)
    path = d.log_path(sid)
    lines = open(path).read().splitlines(True)
    eq(d.cli("audit", "verify", path).returncode, 0)

    def verify_with(content):
        bad = os.path.join(d.state, "sessions", "tampered.jsonl")
        with open(bad, "w") as f:
            f.write(content)
        r = d.cli("audit", "verify", bad)
        os.unlink(bad)
        return r.returncode, r.stderr.decode()

    edited = lines[:]
    edited[2] = edited[2].replace('"scope":"email:send"', '"scope":"email:admin"')
    check(edited != lines, "the edit happened")
    rc, err = verify_with("".join(edited))
    check(rc != 0 and "line 4" in err, "an edited line: " + err)
    eq(len(err.strip().splitlines()), 1, "one line")
    rc, err = verify_with("".join(lines[:2] + lines[3:]))
    check(rc != 0 and "line 3" in err, "a deleted line: " + err)
    rc, err = verify_with("".join(lines[:-1]))
    check(rc != 0 and "not sealed" in err, "a removed seal: " + err)
    last = json.loads(lines[-1])
    last["counts"]["tokens"] = 0
    rc, err = verify_with("".join(lines[:-1]) + json.dumps(last, separators=(",", ":")) + "\n")
    check(rc != 0, "changed counts under the seal must fail")


@case
def killing_deputyd_loses_no_acknowledged_record_and_restart_resumes():
    d = dt.Deputyd().start()
    p, sid = d.start_session(d.idp.grant(), seconds=120)
    try:
        r, replies = dt.agent_requests(d, d.idp.grant(),
                                       [decide_req(target="/send/%d" % i) for i in range(50)])
        eq(len(replies), 50)
        sid2 = verify_token(d, replies[0]["TOKEN"])["sid"]
        acked = {verify_token(d, x["TOKEN"])["jti"] for x in replies}
        d.wait_closed(sid2)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        logged = {x["jti"] for x in d.records(sid2) if x["type"] == "token"}
        check(acked <= logged, "acknowledged tokens missing: %d" % len(acked - logged))
        d.start()
        check("session %s resumed" % sid in d.log_text(), "resumed: " + d.log_text()[-1500:])
        check("session_resume" in [x["type"] for x in d.records(sid)], "resume recorded")
        check(p.poll() is None, "the agent kept running")
        p.kill()
        p.wait()
        d.wait_closed(sid)
        v = d.cli("audit", "verify", sid)
        eq(v.returncode, 0, v.stderr.decode() + d.log_text()[-3000:])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@case
def deputy_run_closes_with_a_restarted_deputyd():
    d = dt.Deputyd().start()
    p, sid = d.start_session(d.idp.grant(), seconds=3)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.start()
    out, err = p.communicate(timeout=30)
    eq(p.returncode, 0, "deputy run exits with the command's status: " + err)
    check("closing session" not in err, "deputy run reached the new deputyd: " + err)
    recs = d.wait_closed(sid)
    eq(recs[-1]["counts"]["exit_status"], 0)
    v = d.cli("audit", "verify", sid)
    eq(v.returncode, 0, v.stderr.decode())


@case
def sighup_reloads_routes_without_dropping_sessions():
    d = dt.Deputyd().start()
    g = d.idp.grant(scope="email:send files:write",
                    resource=["https://api.test", "https://files.test"])
    p, sid = d.start_session(g)
    try:
        reqs = [decide_req(host="files.test", method="PUT", target="/f")]
        _, before = dt.agent_requests(d, g, reqs)
        eq(dt.VERDICT[before[0]["VERDICT"]], "deny")
        d.config["routes"].append({"host": "files.test", "port": 443, "action": "delegate",
                                   "audience": "https://files.test", "scope": "files:write",
                                   "addrs": [d.api_addr]})
        d.write_config()
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "reloaded" not in d.log_text() and time.time() < deadline:
            time.sleep(0.05)
        _, after = dt.agent_requests(d, g, reqs)
        eq(dt.VERDICT[after[0]["VERDICT"]], "delegate", "after reload: %r" % after)
        eq(verify_token(d, after[0]["TOKEN"], audience="https://files.test")["scope"],
           "files:write")
        check(p.poll() is None, "the open session survived the reload")
        eq([s["state"] for s in d.sessions() if s["session"] == sid], ["open"])
        with open(d.config_path, "w") as f:
            f.write('{"issuer": 42}')
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "keeping the running" not in d.log_text() and time.time() < deadline:
            time.sleep(0.05)
        check("keeping the running configuration" in d.log_text(), d.log_text()[-800:])
        check(d.proc.poll() is None, "deputyd survived a bad reload")
    finally:
        p.kill()
        p.wait()


@case
def session_token_binding_reuses_one_token():
    d = dt.Deputyd(token_binding="session").start()
    _, replies = dt.agent_requests(d, d.idp.grant(), [decide_req(target="/send/a"),
                                                      decide_req(target="/send/b")])
    eq(replies[0]["TOKEN"], replies[1]["TOKEN"])
    claims = verify_token(d, replies[0]["TOKEN"])
    check("htm" not in claims and "htu" not in claims, "no htm/htu under session binding")


@case
def unrouted_monitor_allows_and_logs():
    d = dt.Deputyd(unrouted="monitor").start()
    _, replies = dt.agent_requests(d, d.idp.grant(), [
        decide_req(host="other.test", method="GET", target="/x"), ["SESSIONS", []]])
    eq(dt.VERDICT[replies[0]["VERDICT"]], "passthrough")
    sid = json.loads(replies[1]["DATA"])[0]["session"]
    deny = [x for x in d.wait_closed(sid) if x["type"] == "deny"]
    eq(len(deny), 1)
    eq(deny[0]["enforced"], False)


@case
def sessions_and_logs_commands():
    d = dt.Deputyd().start()
    _, replies = dt.agent_requests(d, d.idp.grant(user="carol"), [decide_req()])
    sid = verify_token(d, replies[0]["TOKEN"])["sid"]
    d.wait_closed(sid)
    s = [x for x in d.sessions() if x["session"] == sid]
    eq(len(s), 1)
    eq((s[0]["user"], s[0]["agent"], s[0]["state"]), ("carol", "agent:mailbot", "closed"))
    eq(s[0]["counts"]["tokens"], 1)
    r = d.cli("sessions")
    check(sid in r.stdout.decode() and "carol" in r.stdout.decode(), r.stdout.decode())
    r = d.cli("logs", sid)
    out = r.stdout.decode()
    eq(r.returncode, 0, r.stderr.decode())
    check("carol→agent:mailbot→email:send" in out, out)
    check("POST https://api.test/send" in out, out)
    r = d.cli("logs", sid, "--json")
    eq([json.loads(x) for x in r.stdout.decode().splitlines()], d.records(sid, kernel=True))
    r = d.cli("logs", "B" * 22)
    check(r.returncode != 0 and r.stderr.decode().startswith("deputy: logs: "),
          r.stderr.decode())
    for sub in ("run", "sessions", "logs", "audit", "grant", "verify"):
        h = d.cli(sub, "--help")
        eq(h.returncode, 0, sub + " --help")
        check(b"usage" in h.stdout.lower(), sub + " --help prints usage")


@case
def logs_follow_streams_until_close():
    d = dt.Deputyd().start()
    p, sid = d.start_session(d.idp.grant(), seconds=2)
    f = subprocess.Popen([dt.DEPUTY, "logs", sid, "--json", "--follow"], stdout=subprocess.PIPE,
                         text=True, env=d.env())
    out, _ = f.communicate(timeout=30)
    p.wait()
    types = [json.loads(x)["type"] for x in out.splitlines()]
    eq(types[0], "session_open")
    eq(types[-1], "session_close")


@case
def sigterm_closes_sessions_cleanly():
    d = dt.Deputyd().start()
    p, sid = d.start_session(d.idp.grant())
    eq(d.stop(), 0, "deputyd exits 0 on SIGTERM")
    eq(d.records(sid)[-1]["type"], "session_close")
    p.wait(timeout=10)
    check(p.returncode != 0, "the agent was ended with its session")
    check(not os.path.exists(d.socket), "socket removed")


if __name__ == "__main__":
    dt.main()
