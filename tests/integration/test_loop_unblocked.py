# SPDX-License-Identifier: MIT
"""deputyd's event loop never waits for the network (issue 11, item 9). Any local user can
make deputyd refetch an issuer's jwks_uri (a grant with an unknown kid) and route hosts are
resolved again on SIGHUP and every resolve_interval: with a slow issuer or a silent DNS
server, every session's requests used to wait seconds. Now only a session open for that
issuer waits for its fetch."""
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

SLOW_ISS = "https://slow-idp.test"
DELAY = 4.0  # under the fetch timeout (5 s): the slow fetch succeeds, late
REFETCH_S = 30  # grant.c's TRUST_REFETCH_S


class SlowJwks:
    """An issuer's JWKS endpoint: the first answer (deputyd's start) is prompt and has the
    old key only; later ones take DELAY seconds and add the rotated key."""

    def __init__(self, old, new):
        self.requests = 0
        self.answered_late = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                keys = [old.jwk]
                if outer.requests > 1:
                    time.sleep(DELAY)
                    keys.append(new.jwk)
                body = json.dumps({"keys": keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if outer.requests > 1:
                    outer.answered_late.set()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/jwks.json" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@case
def slow_jwks_fetch_holds_up_only_its_own_session():
    old, new = dt.Issuer(SLOW_ISS), dt.Issuer(SLOW_ISS)
    jwks = SlowJwks(old, new)
    try:
        d = dt.Deputyd(kernel="off")
        d.config["trusted_issuers"].append({"issuer": SLOW_ISS, "jwks_uri": jwks.url})
        d.write_config()
        d.start()
        started = time.monotonic()
        eq(jwks.requests, 1, "deputyd fetched the JWKS at start")
        # An issuer is fetched again at most every 30 s: wait that out.
        time.sleep(max(0, started + REFETCH_S + 1 - time.monotonic()))
        # A grant under the rotated key: deputyd must fetch again, which takes DELAY s.
        slow = dt.track(subprocess.Popen(
            [dt.DEPUTY, "run", "--grant", d.grant_file(new.grant()), "--agent", "mailbot",
             "--", "true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=d.env()))
        check(dt.wait_until(lambda: jwks.requests >= 2, timeout=20),
              "deputyd did not refetch the JWKS for an unknown kid")
        # Meanwhile other requests and another issuer's session are answered at once.
        r = d.cli("sessions", "--json", timeout=30)
        eq(r.returncode, 0, "deputy sessions: %r" % r.stderr)
        check(not jwks.answered_late.is_set(), "deputy sessions waited for another "
              "issuer's JWKS fetch")
        r = d.run(d.idp.grant(), ["true"], timeout=30)
        eq(r.returncode, 0, "a session of another issuer: " + r.stderr)
        check(not jwks.answered_late.is_set(), "a session of another issuer waited for "
              "the slow issuer's JWKS fetch")
        # The waiting session opens once the keys are there.
        try:
            out, err = slow.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            dt.fail("the session waiting for its issuer's keys never opened")
        eq(slow.returncode, 0, "session under the rotated key: " + err)
        check(jwks.answered_late.is_set(), "fetch not finished")
        eq(jwks.requests, 2, "fetches (one per unknown kid, at most every 30 s)")
    finally:
        jwks.close()


class SilentDns:
    """A nameserver on a loopback address that reads queries and never answers."""

    def __init__(self):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):
            self.addr = "127.53.%d.%d" % (random.randint(0, 255), random.randint(1, 254))
            try:
                self.s.bind((self.addr, 53))
                break
            except OSError:
                continue
        self.queries = 0
        self.first_query = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                self.s.recv(4096)
            except OSError:
                return
            self.queries += 1
            self.first_query = self.first_query or time.monotonic()

    def close(self):
        self.s.close()


@case
def silent_dns_holds_up_no_request():
    if not dt.bpf_available():
        dt.skip("route hosts are resolved for the kernel layer: needs root", bpf=True)
    dns = SilentDns()
    try:
        d = dt.Deputyd(routes=[])
        resolv = os.path.join(d.dir, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:%d attempts:1\n" % (dns.addr, DELAY))
        # deputyd alone sees this resolv.conf: a mount namespace of its own.
        d.wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                  'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', "sh", resolv]
        d.start()
        d.config["routes"] = [{"host": "unresolvable.test", "port": 443,
                               "action": "passthrough"}]
        d.write_config()
        d.proc.send_signal(signal.SIGHUP)
        check(dt.wait_until(lambda: dns.queries > 0, timeout=20),
              "deputyd did not resolve the new route host")
        start = time.monotonic()
        r = d.cli("sessions", "--json", timeout=30)
        took = time.monotonic() - start
        eq(r.returncode, 0, "deputy sessions: %r" % r.stderr)
        check("cannot resolve route host unresolvable.test" not in d.log_text(),
              "deputy sessions was answered only after the DNS timeout (%.1f s)" % took)
        # The resolution still ends, and is logged.
        check(dt.wait_until(lambda: "cannot resolve route host unresolvable.test" in
                            d.log_text(), timeout=30), "the resolution never ended")
        r = d.run(d.idp.grant(), ["true"], timeout=30)
        eq(r.returncode, 0, "a session after the reload: " + r.stderr)
    finally:
        dns.close()


if __name__ == "__main__":
    dt.main()
