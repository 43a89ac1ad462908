# SPDX-License-Identifier: MIT
"""deputyd detached (`deputyd -c FILE` without -f, as the README documents): it must serve
exactly what a foreground deputyd serves — its JWKS over HTTP and its Unix socket — and say
whether it started by its exit status (issue 11, item 10: the HTTP thread died in the fork)."""
import os
import signal
import socket
import struct
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def socket_owner(path):
    """The pid behind deputyd's socket (SO_PEERCRED): the detached daemon, whatever it
    forked."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        pid, _, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      struct.calcsize("3i")))
        return pid
    finally:
        s.close()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def detached(d, **extra_env):
    """Starts d without -f; returns the daemon's pid once its socket answers."""
    env = d.env(**extra_env)
    r = dt.run([dt.DEPUTYD, "-c", d.config_path], timeout=60, env=env)
    eq(r.returncode, 0, "deputyd -c FILE exit status (stderr %r)" % r.stderr)
    check(os.path.exists(d.socket), "no socket after deputyd returned: it must return when "
          "ready")
    return socket_owner(d.socket)


def stop_detached(pid):
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)  # the daemon we started, by its pid
        if not dt.wait_until(lambda: not pid_alive(pid), timeout=30):
            os.kill(pid, signal.SIGKILL)


@case
def detached_deputyd_serves_jwks():
    port = free_port()
    d = dt.Deputyd(http_listen="127.0.0.1:%d" % port)
    pid = None
    # A service manager's notify socket: the detached daemon still says READY=1 itself.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(d.dir, "notify.sock"))
    notify.settimeout(10)
    try:
        pid = detached(d, NOTIFY_SOCKET=os.path.join(d.dir, "notify.sock"))
        try:
            msg, _ = notify.recvfrom(4096)
        except OSError as e:
            dt.fail("no notification from the detached deputyd: %s" % e)
        check(b"READY=1" in msg.split(b"\n"), "first notification: %r" % msg)
        with open(os.path.join(d.state, "jwks.json"), "rb") as f:
            want = f.read()
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/.well-known/jwks.json" % port,
                                        timeout=10) as resp:
                got = resp.read()
        except OSError as e:
            dt.fail("detached deputyd does not serve its JWKS: %s" % e)
        eq(got.strip(), want.strip(), "JWKS over HTTP vs state_dir/jwks.json")
        # The Unix socket is served too: a session opens and closes.
        r = d.run(d.idp.grant(), ["true"])
        eq(r.returncode, 0, "deputy run under a detached deputyd: " + r.stderr)
        check(d.sessions(), "no session listed")
    finally:
        stop_detached(pid)
        notify.close()
    check(not pid_alive(pid), "detached deputyd did not stop on SIGTERM")
    check(not os.path.exists(d.socket), "socket left behind")


@case
def detached_deputyd_reports_a_failed_start():
    """What fails after the fork (here: the HTTP address is taken) reaches the caller as a
    non-zero exit, not as a daemon that silently is not there."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    d = dt.Deputyd(http_listen="127.0.0.1:%d" % busy.getsockname()[1])
    try:
        start = time.monotonic()
        r = dt.run([dt.DEPUTYD, "-c", d.config_path], timeout=60, env=d.env())
        check(r.returncode != 0, "deputyd returned 0 although it could not start")
        check("http_listen" in r.stderr, "the reason is not on stderr: %r" % r.stderr)
        check(time.monotonic() - start < 50, "took too long")
        check(not os.path.exists(d.socket), "a socket was left behind")
    finally:
        busy.close()


if __name__ == "__main__":
    dt.main()
