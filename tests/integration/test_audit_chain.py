# SPDX-License-Identifier: MIT
"""The chain across sessions and retention (issue 12, item 6), with the real deputyd: every
session_open and session_close names the seal before it, `deputy audit verify --all` walks
them and fails on a deleted or cut log, and retention removes old closed logs in a way the
walk accepts."""
import hashlib
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402


def one_session(d, user="alice"):
    r = d.run(d.idp.grant(user=user), ["sh", "-c", 'echo "session=$DEPUTY_SESSION"'])
    eq(r.returncode, 0, r.stderr)
    sid = r.stdout.split("session=")[1].strip()
    d.wait_closed(sid)
    return sid


def seal_hash(d, sid):
    with open(d.log_path(sid), "rb") as f:
        last = f.read().rstrip(b"\n").split(b"\n")[-1]
    return hashlib.sha256(last).hexdigest()


def verify_all(d):
    r = d.cli("audit", "verify", "--all", d.state)
    return r.returncode, r.stdout.decode() + r.stderr.decode()


@case
def sessions_chain_their_seals():
    d = dt.Deputyd().start()
    a, b, c = (one_session(d) for _ in range(3))
    ra, rb, rc = d.records(a), d.records(b), d.records(c)
    eq(rb[0]["prev_seal"], seal_hash(d, a), "session_open names the seal before it")
    eq(rb[0]["prev_seal_session"], a)
    eq(rc[-1]["prev_seal"], seal_hash(d, b), "session_close names the seal before it")
    eq(rc[-1]["prev_seal_session"], b)
    head = os.path.join(d.state, "seal-chain")
    # written right after the seal line: the test may look in between
    dt.wait_until(lambda: json.load(open(head))["session"] == c)
    eq(json.load(open(head)), {"session": c, "seal": seal_hash(d, c)})
    rc_, out = verify_all(d)
    eq(rc_, 0, out)
    check("intact: 3 session logs" in out, out)
    # and with deputyd's config instead of the directory
    r = d.cli("audit", "verify", "--all", env=d.env(DEPUTY_CONFIG=d.config_path))
    eq(r.returncode, 0, r.stderr.decode())
    # a restarted deputyd goes on with the chain
    d.stop()
    d.start()
    e = one_session(d)
    eq(d.records(e)[0]["prev_seal_session"], c)
    eq(verify_all(d)[0], 0)


@case
def a_deleted_or_cut_session_log_breaks_the_chain():
    d = dt.Deputyd().start()
    a, b, c = (one_session(d) for _ in range(3))
    keep = os.path.join(d.dir, "keep.jsonl")
    shutil.copy(d.log_path(b), keep)
    os.unlink(d.log_path(b))
    rc, out = verify_all(d)
    eq(rc, 1, "a deleted log: " + out)
    check("gap: session %s's log is missing" % b in out, out)
    # cut: the seal gone, or a record with it
    with open(keep, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with open(d.log_path(b), "wb") as f:
        f.writelines(lines[:-1])
    rc, out = verify_all(d)
    eq(rc, 1, "a cut log: " + out)
    check(b in out and ("not sealed" in out or "cut short" in out), out)
    shutil.copy(keep, d.log_path(b))
    eq(verify_all(d)[0], 0, "restored")
    # the newest one deleted: seal-chain names it
    os.unlink(d.log_path(c))
    rc, out = verify_all(d)
    eq(rc, 1, out)
    check(c in out, out)


@case
def retention_removes_old_closed_logs_and_the_chain_still_verifies():
    d = dt.Deputyd(retention_days=30).start()
    a, b, c = one_session(d), one_session(d), one_session(d)
    d.stop()
    os.utime(d.log_path(a), (time.time() - 40 * 86400,) * 2)
    os.utime(d.log_path(b), (time.time() - 29 * 86400,) * 2)
    d.start()  # retention looks at start
    check(dt.wait_until(lambda: not os.path.exists(d.log_path(a)), 30),
          "the 40-day-old closed log is removed")
    check(os.path.exists(d.log_path(b)), "a 29-day-old one stays")
    check(os.path.exists(d.log_path(c)), "a new one stays")
    check("retention: removed session %s" % a in d.log_text(), d.log_text()[-1500:])
    removed = [json.loads(l) for l in open(os.path.join(d.state, "retention.jsonl"))]
    eq([(r["session"], r["seal"]) for r in removed], [(a, d.records(b)[-1]["prev_seal"])],
       "the removal is recorded with the seal the chain names")
    rc, out = verify_all(d)
    eq(rc, 0, "retention's removals are not gaps: " + out)
    check("1 removed by retention" in out, out)
    # a log deleted by hand beside it still is a gap
    os.unlink(d.log_path(b))
    rc, out = verify_all(d)
    eq(rc, 1, out)
    check("gap: session %s" % b in out, out)


@case
def an_open_session_is_never_removed():
    d = dt.Deputyd(retention_days=1).start()
    p, live = d.start_session(seconds=120)
    try:
        old = time.time() - 10 * 86400
        os.utime(d.log_path(live), (old, old))
        d.write_config()
        d.stop(sig=9)  # crash: the session resumes at the next start
        d.start()
        time.sleep(1)
        check(os.path.exists(d.log_path(live)), "an open session's log stays")
    finally:
        p.kill()


@case
def retention_days_is_validated():
    for bad in (-1, "90", 1.5, 100000):
        d = dt.Deputyd(retention_days=bad)
        r = dt.run([dt.DEPUTYD, "-t", "-c", d.config_path])
        eq(r.returncode, 1, "retention_days %r" % (bad,))
        check("retention_days" in r.stderr, r.stderr)
    d = dt.Deputyd(retention_days=0)
    r = dt.run([dt.DEPUTYD, "-t", "-c", d.config_path])
    eq(r.returncode, 0, "0 keeps logs forever: " + r.stderr)


if __name__ == "__main__":
    dt.main()
