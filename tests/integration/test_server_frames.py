# SPDX-License-Identifier: MIT
"""deputyd's socket reads whatever the peer sent and answers every complete frame in it:
frames pipelined in one write, a frame dribbled a few bytes at a time, and a peer that sends
far more requests than it reads replies for (deputyd holds the rest back until the peer
reads, then answers them all, in order)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

# Runs inside the session; prints one JSON object with what it saw.
AGENT = r"""
import json, os, socket, sys, time
sys.path.insert(0, %r)
import deputytest as dt
sid = os.environ["DEPUTY_SESSION"]
fields = [("SESSION", sid), ("SCHEME", "https"), ("HOST", "api.test"), ("PORT", 443),
          ("METHOD", "POST"), ("TARGET", "/send")] + dt.route_conn_fields()
out = {}

def replies(c, n):
    got = []
    for _ in range(n):
        r = c.recv_reply()
        if r is None:
            break
        got.append((r["type"], r["seq"], r.get("VERDICT")))
    return got

c = dt.Conn(os.environ["DEPUTY_SOCKET"], timeout=30)
c.send_raw(b"".join(dt.frame("DECIDE", fields, seq=i) for i in range(1, 101)))
out["pipelined"] = replies(c, 100)

one = dt.frame("DECIDE", fields, seq=7)
for i in range(0, len(one), 5):
    c.send_raw(one[i:i + 5])
    time.sleep(0.001)
out["dribbled"] = replies(c, 1)

# 300 requests (about 30 KiB, one read for deputyd) before reading a reply: the replies
# (about 240 KiB) overflow the socket, so deputyd stops with frames still buffered, and
# must answer them once the peer reads, with nothing new arriving on the socket.
c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
burst = b"".join(dt.frame("DECIDE", fields, seq=i) for i in range(1000, 1300))
c.s.settimeout(60)
c.s.sendall(burst)
time.sleep(1)  # read nothing until deputyd has run out of room for replies
out["burst"] = replies(c, 300)
print(json.dumps(out), flush=True)
""" % dt.LIB


@case
def every_buffered_frame_is_answered_in_order():
    d = dt.Deputyd(kernel="off").start()
    script = os.path.join(d.dir, "agent.py")
    with open(script, "w") as f:
        f.write(AGENT)
    r = d.run(d.idp.grant(), [dt.PYTHON, script])
    eq(r.returncode, 0, "agent: " + r.stderr[-500:])
    out = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    eq([tuple(x) for x in out["pipelined"]], [("DECISION", i, 1) for i in range(1, 101)],
       "pipelined frames")
    eq([tuple(x) for x in out["dribbled"]], [("DECISION", 7, 1)], "dribbled frame")
    got = [tuple(x) for x in out["burst"]]
    eq(len(got), 300, "replies to the burst")
    eq(got, [("DECISION", i, 1) for i in range(1000, 1300)], "burst replies in order")
    check("incomplete" not in d.log_text(), "a held-back frame is not an incomplete one")


if __name__ == "__main__":
    dt.main()
