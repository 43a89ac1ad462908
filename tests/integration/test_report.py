# SPDX-License-Identifier: MIT
"""deputy report SESSION --html: a real session's log (delegated, refused and passed-through
requests, an API status, a blocked and an unmediated connection, an argv meant to inject
HTML) rendered by a real headless Chromium. The page's text is read from the browser
(document.body.innerText over the DevTools protocol), the browser's network events show
it fetched nothing, and a screenshot of it must have the window's size and real content."""
import base64
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 1800
HOSTILE = "<script>document.title='owned'</script><img src=http://127.0.0.9/x>\u202egnp.exe"

# Inside the session: a delegated request and the API's answer to it, a request outside the
# grant, a passthrough, then (kernel layer on) an allowed connection that no shim mediates
# and one to a destination no route allows.
AGENT = r'''
import json, os, subprocess, sys
sys.path.insert(0, %r)
import deputytest as dt
c = dt.Conn(os.environ["DEPUTY_SOCKET"])
s = os.environ["DEPUTY_SESSION"]
def decide(method, host, target):
    return c.decide(s, host=host, method=method, target=target)
tok = decide("POST", "api.test", "/send/now")
c.call("RESPONSE", [("SESSION", s), ("JTI", tok["JTI"]), ("STATUS", 201)])
decide("GET", "api.test", "/read/inbox")
decide("POST", "llm.test", "/v1/chat")
net, port = sys.argv[1], sys.argv[2]
if net:
    subprocess.run([net, "127.0.0.1", port])
    subprocess.run([net, "127.0.0.2", "9"])
print(json.dumps({"session": s, "jti": tok["JTI"]}), flush=True)
''' % dt.LIB


class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe (fd 3 in, fd 4 out: NUL-
    separated JSON), so no port is opened and no WebSocket library is needed."""

    def __init__(self):
        if not os.access(CHROMIUM, os.X_OK):
            dt.skip("chromium is not installed (scripts/deps.sh installs it)")
        self.profile = dt.reachable_dir("deputy-chromium.")
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()

        def fds():
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)
        self.proc = dt.track(subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + self.profile, "--remote-debugging-pipe",
             "--window-size=%d,%d" % (WIDTH, HEIGHT), "--hide-scrollbars", "about:blank"],
            # fds 3 and 4 are made in the child; close_fds=False keeps them (every other fd
            # of this process is non-inheritable, PEP 446)
            preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        os.close(to_r)
        os.close(from_w)
        self.buf, self.id, self.events = b"", 0, []

    def call(self, method, params=None, session=None, timeout=60):
        self.id += 1
        msg = {"id": self.id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                m = json.loads(raw)
                if m.get("id") == self.id:
                    check("error" not in m, "%s: %r" % (method, m.get("error")))
                    return m["result"]
                self.events.append(m)
            check(time.monotonic() < deadline, "chromium: no answer to " + method)
            if select.select([self.from_r], [], [], 1)[0]:
                chunk = os.read(self.from_r, 1 << 20)
                check(chunk, "chromium exited")
                self.buf += chunk

    def render(self, path):
        """Loads file://path; returns (innerText, png bytes, the URLs it requested)."""
        tid = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.call("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        self.call("Network.enable", session=s)
        self.call("Page.enable", session=s)
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
            session=s)
        self.events = []
        self.call("Page.navigate", {"url": "file://" + path}, session=s)
        state = dt.wait_until(lambda: self.call(
            "Runtime.evaluate", {"expression": "document.readyState"},
            session=s)["result"]["value"] == "complete", timeout=30, interval=0.2)
        check(state, "the page did not finish loading")
        ev = self.call("Runtime.evaluate", {
            "expression": "JSON.stringify([document.body.innerText, document.title, "
                          "document.scripts.length, document.images.length])",
            "returnByValue": True}, session=s)["result"]["value"]
        text, title, scripts, images = json.loads(ev)
        png = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"},
                                         session=s)["data"])
        urls = [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]
        return {"text": text, "title": title, "scripts": scripts, "images": images,
                "png": png, "urls": urls}

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - it is stopped below anyway
            pass
        dt.stop_process(self.proc)
        os.close(self.to_w)
        os.close(self.from_r)


def png_size(png):
    check(png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG")
    return struct.unpack(">II", png[16:24])


def listener():
    """A loopback TCP listener that accepts and closes; returns its port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)

    def serve():
        while True:
            try:
                c, _ = s.accept()
                c.close()
            except OSError:
                return
    threading.Thread(target=serve, daemon=True).start()
    return s, s.getsockname()[1]


def session_with_everything(d, kernel):
    """Runs the agent as an unprivileged user; returns (session id, the delegated jti)."""
    script = os.path.join(d.dir, "agent.py")
    with open(script, "w") as f:
        f.write(AGENT)
    os.chmod(script, 0o644)
    sock, port = listener()
    try:
        r = d.run(d.idp.grant(user="alice@example.com", scope="email:send"),
                  [dt.PYTHON, script, dt.prog("net_connect") if kernel else "", str(port),
                   HOSTILE], user=dt.unprivileged_user() if dt.is_root() else None)
    finally:
        sock.close()
    eq(r.returncode, 0, r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    d.wait_closed(out["session"])
    return out["session"], out["jti"]


@case
def report_renders_in_chromium():
    kernel = dt.bpf_available()
    if not kernel:
        dt.skip("the connections part needs the kernel layer (root, BTF)", bpf=True)
    d = dt.Deputyd(allow_cidrs=["127.0.0.1/32"]).start()
    sid, jti = session_with_everything(d, kernel)
    page = os.path.join(d.dir, "report.html")
    r = d.cli("report", sid, "--html", "--output", page)
    eq(r.returncode, 0, r.stderr)
    eq(r.stdout, b"", "--output writes nothing to stdout")
    html = open(page, encoding="utf-8").read()
    check("<script>" not in html and "<img" not in html, "the agent's argv became markup")
    c = Chromium()
    try:
        got = c.render(page)
    finally:
        c.close()
    text = got["text"]
    eq(got["title"], "deputy session " + sid, "title")
    eq((got["scripts"], got["images"]), (0, 0), "scripts and images on the page")
    eq(got["urls"], ["file://" + page], "requests the page made")
    recs = d.records(sid)
    grant_jti = recs[0]["grant_jti"]
    for want in ("alice@example.com", "agent:mailbot", dt.IDP, grant_jti,
                 "Audit log: intact, %d records, sealed by deputyd" % len(recs),
                 "POST https://api.test/send/now", "email:send", "API status 201",
                 "GET https://api.test/read/inbox", "refused (daemon)",
                 'scope "email:read" is not in the user\'s grant',
                 "POST https://llm.test/v1/chat", "passed through",
                 "tcp 127.0.0.2:9", "blocked", "UNMEDIATED",
                 "<script>document.title='owned'</script>", "\\u202e"):
        check(want in text, "the page does not show %r:\n%s" % (want, text))
    check("\u202e" not in text, "a bidi override reached the page unescaped")
    # totals: 1 delegated, 1 passthrough, 1 refused by deputyd + 1 by the kernel, 1 response
    for n, what in ((1, "requests delegated"), (1, "requests passed through"),
                    (2, "refused"), (1, "API responses seen"), (1, "connections blocked")):
        check("%d\n%s" % (n, what) in text, "totals: %d %s:\n%s" % (n, what, text))
    if os.environ.get("DEPUTY_TEST_KEEP"):
        with open(os.path.join(os.environ["DEPUTY_TEST_KEEP"], "report.png"), "wb") as f:
            f.write(got["png"])
    w, h = png_size(got["png"])
    eq((w, h), (WIDTH, HEIGHT), "screenshot size")
    # a blank page of this size compresses to a few KiB; tables of text do not
    check(len(got["png"]) > 40000, "the screenshot looks empty: %d bytes" % len(got["png"]))


@case
def report_of_a_tampered_log_says_so():
    d = dt.Deputyd().start()
    sid, _ = session_with_everything(d, False)
    copy = os.path.join(d.dir, "copy.jsonl")
    lines = open(d.log_path(sid)).read().splitlines(True)
    bad = next(i for i, l in enumerate(lines) if '"GET"' in l)
    lines[bad] = lines[bad].replace('"GET"', '"PUT"')
    with open(copy, "w") as f:
        f.writelines(lines)
    page = os.path.join(d.dir, "report.html")
    r = d.cli("report", copy, "--html", "--jwks", os.path.join(d.state, "jwks.json"),
              "--output", page)
    eq(r.returncode, 1, "a broken log must fail the command")
    err = r.stderr.decode()
    check(err.startswith("deputy: report: ") and "line %d" % (bad + 1) in err, err)
    c = Chromium()
    try:
        text = c.render(page)["text"]
    finally:
        c.close()
    check("Audit log: NOT INTACT: " in text and "line %d" % (bad + 1) in text, text)
    check("PUT https://api.test/read/inbox" in text, "the page shows what the log holds")
    # the intact original, offline, is sealed
    r = d.cli("report", d.log_path(sid), "--html")
    eq(r.returncode, 0, r.stderr)
    check(b"sealed by deputyd" in r.stdout, "offline report of the original")


@case
def report_is_refused_for_another_users_session():
    if not dt.is_root():
        dt.skip("needs root to act as an unprivileged user")
    d = dt.Deputyd().start()
    r = d.run(d.idp.grant(user="root-user"), ["true"])
    eq(r.returncode, 0, r.stderr)
    sid = [s["session"] for s in d.sessions()][0]
    r = d.cli("report", sid, "--html", user=dt.unprivileged_user())
    eq(r.returncode, 1, "nobody reading root's session")
    eq(r.stdout, b"", "no page for a refused session")
    check(r.stderr.decode().startswith("deputy: report: %s: " % sid), r.stderr.decode())


@case
def report_asks_for_a_format():
    d = dt.Deputyd()
    r = d.cli("report", "abc")
    eq(r.returncode, 2)
    eq(r.stderr.decode(), "deputy: report: say the format: --html (see --help)\n")
    r = d.cli("report", "--help")
    eq(r.returncode, 0)
    check(b"--html" in r.stdout, "help")


if __name__ == "__main__":
    dt.main()
