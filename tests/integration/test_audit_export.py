# SPDX-License-Identifier: MIT
""""audit_export": {"syslog": PATH} against a real rsyslogd (Debian's), started by the test
with its own config on its own socket, writing what it receives to a file: the records there
must equal `deputy logs --json`, one for one, and their RFC 5424 headers must say deputyd,
the record type and the record's time. Messages no socket takes are dropped and counted."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"

# imuxsock's own parser expects the local BSD format; the regular parser chain reads RFC 5424.
# No rate limit: a session writes hundreds of records in a second.
RSYSLOG_CONF = '''
global(workDirectory="{dir}" maxMessageSize="256k")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" UseSpecialParser="off" ParseHostname="on"
      IgnoreTimestamp="off" RateLimit.Interval="0")
template(name="msg" type="string" string="%msg%\\n")
template(name="head" type="string"
         string="%app-name% %msgid% %procid% %syslogfacility-text% %syslogseverity-text% %timereported:::date-rfc3339%\\n")
action(type="omfile" file="{dir}/records.jsonl" template="msg")
action(type="omfile" file="{dir}/heads.txt" template="head")
'''


class Rsyslog:
    def __init__(self, d):
        if not os.access(RSYSLOGD, os.X_OK):
            dt.skip("rsyslogd is not installed (scripts/deps.sh installs it)")
        self.dir = os.path.join(d.dir, "rsyslog")
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "log.sock")
        self.conf = os.path.join(self.dir, "rsyslog.conf")
        with open(self.conf, "w") as f:
            f.write(RSYSLOG_CONF.format(dir=self.dir, sock=self.sock))
        self.proc = None

    def start(self):
        self.proc = dt.track(subprocess.Popen(
            [RSYSLOGD, "-n", "-f", self.conf, "-i", os.path.join(self.dir, "rsyslogd.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "rsyslogd.log"), "wb")))
        check(dt.wait_until(lambda: os.path.exists(self.sock) or self.proc.poll() is not None,
                            timeout=20) and self.proc.poll() is None,
              "rsyslogd did not start: " + self.log())
        return self

    def log(self):
        try:
            return open(os.path.join(self.dir, "rsyslogd.log")).read()
        except OSError:
            return ""

    def lines(self, name):
        try:
            with open(os.path.join(self.dir, name)) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_records(self, n, timeout=20):
        """rsyslog writes asynchronously: waits until n records arrived."""
        got = dt.wait_until(lambda: len(self.lines("records.jsonl")) >= n, timeout=timeout)
        check(got, "rsyslog got %d of %d records" % (len(self.lines("records.jsonl")), n))
        return self.lines("records.jsonl")

    def stop(self):
        dt.stop_process(self.proc)


def logs_json(d, sid):
    r = d.cli("logs", sid, "--json")
    eq(r.returncode, 0, r.stderr)
    return r.stdout.decode().splitlines()


def a_session(d, kernel):
    """A session with a delegated, a refused and a passed-through request, a response and,
    with the kernel layer, connections; returns its id."""
    reqs = [["DECIDE", [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", h],
                        ["PORT", 443], ["METHOD", m], ["TARGET", t]]]
            for h, m, t in (("api.test", "POST", "/send"), ("api.test", "GET", "/read"),
                            ("llm.test", "POST", "/v1/chat"), ("nowhere.test", "GET", "/"))]
    reqs.append(["RESPONSE", [["SESSION", "$SESSION"], ["JTI", "x"], ["STATUS", 204]]])
    r, replies = dt.agent_requests(d, d.idp.grant(scope="email:send"), reqs,
                                   user=dt.unprivileged_user() if dt.is_root() else None)
    eq(r.returncode, 0, r.stderr)
    sid = dt.decode_jwt(replies[0]["TOKEN"])["sid"]
    d.wait_closed(sid, kernel=kernel)
    return sid


@case
def records_reach_rsyslog_unchanged():
    d = dt.Deputyd()
    rs = Rsyslog(d).start()
    d.config["audit_export"] = {"syslog": rs.sock}
    d.write_config()
    d.start()
    check("audit_export: every audit record also goes to " + rs.sock in d.log_text(),
          "deputyd does not say where records go")
    sids = [a_session(d, dt.bpf_available()) for _ in range(2)]
    want = []
    for sid in sids:
        want += logs_json(d, sid)
    got = rs.wait_records(len(want))
    # one for one, in order, byte for byte
    eq(len(got), len(want), "records in rsyslog vs deputy logs --json")
    for i, (g, w) in enumerate(zip(got, want)):
        eq(g, w, "record %d" % i)
    types = [json.loads(w)["type"] for w in want]
    check("token" in types and "deny" in types and "session_close" in types, types)
    heads = rs.lines("heads.txt")
    eq(len(heads), len(want), "headers")
    for h, w in zip(heads, want):
        rec = json.loads(w)
        app, msgid, procid, facility, severity, ts = h.split(" ")
        eq((app, msgid, procid, facility), ("deputyd", rec["type"], str(d.proc.pid),
                                            "authpriv"), "header of " + w)
        blocked = rec["type"] == "deny" or rec.get("verdict") == "block"
        eq(severity, "notice" if blocked else "info", "severity of " + w)
        # rsyslog writes the record's own time back (in its +00:00 form)
        eq(ts.replace("+00:00", "Z"), rec["ts"], "timestamp of " + w)
    # the copy a SIEM holds verifies like the session log itself
    first = [g for g in got if json.loads(g)["session"] == sids[0]]
    copy = os.path.join(d.dir, "from-rsyslog.jsonl")
    with open(copy, "w") as f:
        f.write("\n".join(first) + "\n")
    r = d.cli("audit", "verify", copy, "--jwks", os.path.join(d.state, "jwks.json"))
    eq(r.returncode, 0, r.stdout + r.stderr)
    rs.stop()


# Inside the session: 40 DECIDEs in one write, so deputyd writes their 40 token records in
# one loop turn and exports them in one burst.
BURST_AGENT = r"""
import os, sys
sys.path.insert(0, %r)
import deputytest as dt
c = dt.Conn(os.environ["DEPUTY_SOCKET"], timeout=60)
f = [("SESSION", os.environ["DEPUTY_SESSION"]), ("SCHEME", "https"), ("HOST", "api.test"),
     ("PORT", 443), ("METHOD", "POST"), ("TARGET", "/send")] + dt.route_conn_fields(443)
c.send_raw(b"".join(dt.frame("DECIDE", f, seq=i + 1) for i in range(40)))
print(sum(1 for _ in range(40) if c.recv_reply().get("JTI")), flush=True)
""" % dt.LIB


@case
def a_burst_beyond_the_receivers_queue_is_not_dropped():
    # A Unix datagram receiver takes max_dgram_qlen (often 10) messages ahead. This one reads
    # nothing while the burst is exported, then everything: every token record arrives, in
    # order, once it reads (the rest waited in deputyd's bounded queue).
    import socket
    import time
    d = dt.Deputyd(kernel="off")
    sock = os.path.join(d.dir, "burst.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock)
    d.config["audit_export"] = {"syslog": sock}
    d.write_config()
    d.start()
    script = os.path.join(d.dir, "burst.py")
    with open(script, "w") as f:
        f.write(BURST_AGENT)
    r = d.run(d.idp.grant(), [dt.PYTHON, script])
    eq(r.stdout.strip(), "40", "tokens: " + r.stderr[-300:])
    got, deadline = [], time.time() + 20
    rx.settimeout(0.5)
    while time.time() < deadline:
        try:
            got.append(rx.recv(65536).decode())
        except socket.timeout:
            if sum(" token " in m for m in got) >= 40:
                break
    tokens = [json.loads(m.split(" - ", 1)[1]) for m in got if " token " in m]
    eq(len(tokens), 40, "token records received")
    seqs = [t["seq"] for t in tokens]
    eq(seqs, sorted(seqs), "in the log's order")
    rx.close()


@case
def records_no_socket_takes_are_counted():
    d = dt.Deputyd()
    rs = Rsyslog(d)  # its socket does not exist yet
    d.config["audit_export"] = {"syslog": rs.sock}
    d.write_config()
    d.start()
    lost = a_session(d, False)
    n_lost = len(d.records(lost))
    check("audit_export: %s does not take records" % rs.sock in d.log_text(),
          "no warning about the missing socket: " + d.log_text()[-1500:])
    eq(d.log_text().count("does not take records"), 1, "warned once, not per record")
    rs.start()
    sid = a_session(d, False)
    want = logs_json(d, sid)
    eq(rs.wait_records(len(want)), want, "records after rsyslog came up")
    check("takes records again (%d dropped so far)" % n_lost in d.log_text(),
          "recovery not logged: " + d.log_text()[-1500:])
    n_sent = len(want)
    d.stop()
    check("audit_export: %d records sent, %d dropped" % (n_sent, n_lost) in d.log_text(),
          "the counts at exit: " + d.log_text()[-1500:])


@case
def audit_export_config_is_checked():
    d = dt.Deputyd()
    for value, want in (
            ({"syslg": "/dev/log"}, 'audit_export: unknown key "syslg"'),
            ({"syslog": "dev/log"}, "audit_export.syslog: "),
            ({"syslog": "/" + "x" * 120}, "audit_export.syslog: "),
            ("/dev/log", "audit_export: must be an object"),
            ({}, None), ({"syslog": "/run/x.sock"}, None)):
        d.config["audit_export"] = value
        d.write_config()
        r = dt.run([dt.DEPUTYD, "-t", "-c", d.config_path])
        if want is None:
            eq(r.returncode, 0, "%r: %s" % (value, r.stderr))
        else:
            eq(r.returncode, 1, "%r must be refused" % (value,))
            check(want in r.stderr, "%r: %s" % (value, r.stderr))
            eq(len(r.stderr.strip().splitlines()), 1, "one line")


if __name__ == "__main__":
    dt.main()
