# SPDX-License-Identifier: MIT
"""deputyd signs tokens from precomputed ECDSA nonces (jws.c presign pool): every token still
verifies with PyJWT against deputyd's JWKS, no two tokens share the signature's r, and the
pool, not a full signature, produced them."""
import base64
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

import jwt  # noqa: E402

TOKENS = 400


# Inside the session: TOKENS decisions on one connection, one JSON reply per line.
AGENT = r"""
import json, os, sys
sys.path.insert(0, %r)
import deputytest as dt
c = dt.Conn(os.environ["DEPUTY_SOCKET"])
for _ in range(int(sys.argv[1])):
    print(json.dumps(c.decide(os.environ["DEPUTY_SESSION"])), flush=True)
""" % dt.LIB


@case
def pooled_tokens_verify_and_never_share_r():
    d = dt.Deputyd(kernel="off").start()
    time.sleep(0.5)  # idle: deputyd fills its pool
    script = os.path.join(d.dir, "agent.py")
    with open(script, "w") as f:
        f.write(AGENT)
    r = d.run(d.idp.grant(), [dt.PYTHON, script, str(TOKENS)])
    eq(r.returncode, 0, "agent: " + r.stderr[-300:])
    replies = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    eq(len(replies), TOKENS, "replies")
    with open(os.path.join(d.state, "jwks.json")) as f:
        jwks = jwt.PyJWKSet.from_dict(json.load(f))
    rs, sids = set(), set()
    for rep in replies:
        eq(rep["VERDICT"], 1, "verdict")
        tok = rep["TOKEN"]
        kid = jwt.get_unverified_header(tok)["kid"]
        key = [k for k in jwks.keys if k.key_id == kid]
        check(key, "kid %s not in deputyd's JWKS" % kid)
        claims = jwt.decode(tok, key[0].key, algorithms=["ES256"], audience="https://api.test",
                            issuer=dt.ISSUER)
        eq(claims["htu"], "https://api.test/send", "htu")
        sids.add(claims["sid"])
        sig = base64.urlsafe_b64decode(tok.rsplit(".", 1)[1] + "==")
        eq(len(sig), 64, "ES256 signature length")
        rs.add(sig[:32])
    eq(len(rs), TOKENS, "distinct r values")
    eq(len(sids), 1, "one session")
    d.wait_closed(sids.pop())  # its seal is signed too
    d.stop()
    m = re.findall(r"presign pool: (\d+) hits, (\d+) misses", d.log_text())
    check(m, "deputyd reports its presign pool at exit")
    hits, misses = int(m[-1][0]), int(m[-1][1])
    check(hits > 0, "no token came from the pool (%d misses)" % misses)
    # the tokens, and the signed session_close record that sealed the log
    eq(hits + misses, TOKENS + 1, "every signature counted once")


if __name__ == "__main__":
    dt.main()
