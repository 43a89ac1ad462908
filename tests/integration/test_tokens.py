# SPDX-License-Identifier: MIT
"""Token interop: deputy's grants and delegation tokens against PyJWT + cryptography, and
grants signed by PyJWT against deputyd's grant verification; `deputy verify` refusals; a
jwks_uri fetched over HTTPS from a loopback server with a throwaway CA.

Run with Debian's /usr/bin/python3 (python3-jwt, python3-cryptography). Prints one
PASS/FAIL/SKIP line per case."""
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import b64url, b64url_decode, case, check, eq  # noqa: E402

import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

DEPUTY = dt.DEPUTY
MINT = dt.prog("mint_token")
CHECK = dt.prog("check_grant")

IDP = "https://idp.test"
DEPUTYD = "https://deputy.test"
AGENT = "agent:mailbot"
MAIL = "https://mail.internal"

def run(args, stdin=None, env=None, check=True):
    """Here a command is expected to succeed unless a case says otherwise."""
    return dt.run(args, input=stdin, env=env, check=check)


def thumbprint(jwk):
    """RFC 7638, written independently of deputy's implementation."""
    if jwk["kty"] == "EC":
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    else:
        members = {k: jwk[k] for k in ("e", "kty", "n")}
    canon = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canon.encode()).digest())


def write_pem(path, key):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, 0o600)


def claims_of(token):
    return json.loads(b64url_decode(token.split(".")[1]))


def header_of(token):
    return json.loads(b64url_decode(token.split(".")[0]))


class Env:
    pass


E = Env()


def setup():
    E.dir = dt.TempDir(prefix="deputy-tokens.").path
    E.idp_ec = ec.generate_private_key(ec.SECP256R1())
    E.idp_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    E.other = ec.generate_private_key(ec.SECP256R1())
    E.idp_ec_pem = os.path.join(E.dir, "idp-ec.pem")
    E.idp_rsa_pem = os.path.join(E.dir, "idp-rsa.pem")
    write_pem(E.idp_ec_pem, E.idp_ec)
    write_pem(E.idp_rsa_pem, E.idp_rsa)
    E.deputyd_pem = os.path.join(E.dir, "deputyd-key.pem")  # created by mint_token
    E.idp_jwks = os.path.join(E.dir, "idp-jwks.json")
    with open(E.idp_jwks, "w") as f:
        f.write(run([DEPUTY, "grant", "--key", E.idp_ec_pem, "--jwks"]).stdout)


def deputy_grant(key=None, extra=()):
    return run([DEPUTY, "grant", "--key", key or E.idp_ec_pem, "--iss", IDP, "--user",
                "alice@example.com", "--agent", "mailbot", "--scope", "email:send email:read",
                "--resource", MAIL, "https://cal.internal", "--aud", DEPUTYD, *extra]
               ).stdout.strip()


def mint(grant, idp_jwks=None, extra=()):
    p = run([MINT, "--key", E.deputyd_pem, "--idp-iss", IDP, "--idp-jwks",
             idp_jwks or E.idp_jwks, "--issuer", DEPUTYD, "--agent", AGENT, "--grant", grant,
             "--aud", MAIL, "--scope", "email:send", *extra])
    return p.stdout.strip()


def deputyd_jwks():
    path = os.path.join(E.dir, "deputyd-jwks.json")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(run([DEPUTY, "grant", "--key", E.deputyd_pem, "--jwks"]).stdout)
    return path


# ---- cases -----------------------------------------------------------------------------


@case
def issuer_jwks_is_standard():
    jwks = json.load(open(E.idp_jwks))
    eq(len(jwks["keys"]), 1, "keys")
    jwk = jwks["keys"][0]
    eq(jwk["kid"], thumbprint(jwk), "kid is not the RFC 7638 thumbprint")
    eq((jwk["alg"], jwk["use"]), ("ES256", "sig"), "alg and use")
    # the same public key as the PEM
    pub = jwt.PyJWK(jwk).key
    want = E.idp_ec.public_key().public_numbers()
    eq(pub.public_numbers(), want, "the JWK's public key")


@case
def deputy_grant_verifies_with_pyjwt():
    for key, pem, alg in ((E.idp_ec, E.idp_ec_pem, "ES256"), (E.idp_rsa, E.idp_rsa_pem, "RS256")):
        tok = deputy_grant(pem, ["--ttl", "15m"])
        c = jwt.decode(tok, key.public_key(), algorithms=[alg], audience=DEPUTYD, issuer=IDP,
                       options={"require": ["exp", "iat", "jti", "sub"]})
        eq(c["sub"], "alice@example.com", "sub")
        eq(c["scope"], "email:send email:read", "scope")
        eq(c["resource"], [MAIL, "https://cal.internal"], "resource")
        eq(c["may_act"], {"sub": AGENT}, "may_act")
        eq(c["exp"] - c["iat"], 900, "lifetime")
        eq(header_of(tok)["alg"], alg, "alg")


@case
def minted_token_verifies_with_pyjwt():
    tok = mint(deputy_grant(), extra=["--htm", "POST", "--htu", MAIL + "/api/send"])
    jwks = json.load(open(deputyd_jwks()))
    hdr = jwt.get_unverified_header(tok)
    eq(hdr, {"alg": "ES256", "typ": "at+jwt", "kid": jwks["keys"][0]["kid"]}, "header")
    eq(hdr["kid"], thumbprint(jwks["keys"][0]), "kid")
    key = jwt.PyJWKSet.from_dict(jwks)[hdr["kid"]].key
    c = jwt.decode(tok, key, algorithms=["ES256"], audience=MAIL, issuer=DEPUTYD,
                   options={"require": ["exp", "iat", "jti", "sub"]})
    eq(list(c), ["iss", "sub", "act", "client_id", "aud", "scope", "iat", "exp", "jti",
                 "sid", "grant", "htm", "htu"], "claims")
    eq((c["sub"], c["act"]), ("alice@example.com", {"sub": AGENT}), "sub and act")
    eq((c["client_id"], c["scope"]), (AGENT, "email:send"), "client_id and scope")
    eq(c["exp"] - c["iat"], 60, "lifetime")
    eq((c["grant"]["iss"], c["htm"]), (IDP, "POST"), "grant.iss and htm")
    # and with the wrong audience PyJWT refuses it too
    try:
        jwt.decode(tok, key, algorithms=["ES256"], audience="https://other")
    except jwt.InvalidAudienceError:
        pass
    else:
        dt.fail("PyJWT accepted a wrong audience")


@case
def pyjwt_grants_accepted():
    now = int(time.time())
    claims = {"iss": IDP, "sub": "bob", "aud": [DEPUTYD], "iat": now, "exp": now + 600,
              "jti": "g-py", "scope": "email:send", "resource": [MAIL],
              "may_act": {"sub": AGENT}}
    rsa_jwks = os.path.join(E.dir, "idp-rsa-jwks.json")
    with open(rsa_jwks, "w") as f:
        f.write(run([DEPUTY, "grant", "--key", E.idp_rsa_pem, "--jwks"]).stdout)
    for key, alg, jwks in ((E.idp_ec, "ES256", E.idp_jwks), (E.idp_rsa, "RS256", rsa_jwks)):
        kid = json.load(open(jwks))["keys"][0]["kid"]
        tok = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        p = run([CHECK, IDP, jwks, DEPUTYD, AGENT, tok], check=False)
        check(p.returncode == 0 and p.stdout.strip() == "ok bob email:send", p.stdout)
        # and PyJWT's grant through deputyd's minting, back into PyJWT
        if alg == "ES256":
            t = mint(tok)
            eq(claims_of(t)["sub"], "bob", "sub")


@case
def hostile_grants_refused():
    now = int(time.time())
    kid = json.load(open(E.idp_jwks))["keys"][0]["kid"]
    claims = {"iss": IDP, "sub": "mallory", "aud": DEPUTYD, "iat": now, "exp": now + 600,
              "jti": "g-evil", "scope": "email:send", "resource": [MAIL],
              "may_act": {"sub": AGENT}}
    pem = E.idp_ec.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(pem, ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest()
    cases = [
        ("%s.%s.%s" % (head, body, b64url(mac)),
         'grant HMAC alg "HS256" refused (issuers sign with keys)'),
        ("%s.%s." % (b64url(b'{"alg":"none"}'), body), 'grant alg "none" refused (unsigned)'),
        (jwt.encode(claims, E.other, algorithm="ES256", headers={"kid": kid}),
         "bad grant signature"),
        (jwt.encode(dict(claims, exp=now - 5), E.idp_ec, algorithm="ES256",
                    headers={"kid": kid}), "grant expired"),
        (jwt.encode(dict(claims, may_act={"sub": "agent:other"}), E.idp_ec, algorithm="ES256",
                    headers={"kid": kid}),
         'agent "agent:mailbot" is not in the grant\'s may_act ("agent:other")'),
    ]
    for tok, want in cases:
        p = run([CHECK, IDP, E.idp_jwks, DEPUTYD, AGENT, tok], check=False)
        check(p.returncode == 1 and p.stdout.strip() == want, "%r, want %r" % (p.stdout, want))


@case
def grant_mint_verify_round_trip():
    grant = deputy_grant()
    tok = mint(grant)
    p = run([DEPUTY, "verify", "--jwks", deputyd_jwks(), "--audience", MAIL, "--scope",
             "email:send", "--issuer", DEPUTYD, "-"], stdin=tok + "\n")
    c = json.loads(p.stdout)
    eq((c["sub"], c["grant"]["jti"]), ("alice@example.com", claims_of(grant)["jti"]),
       "sub and grant.jti")
    # a grant is not a delegation token: a backend must not take one
    p = run([DEPUTY, "verify", "--jwks", E.idp_jwks, "--audience", DEPUTYD, grant],
            check=False)
    check(p.returncode == 1 and "is not at+jwt" in p.stderr, p.stderr)


@case
def verify_refusals():
    tok = mint(deputy_grant())
    jwks = deputyd_jwks()
    kid = header_of(tok)["kid"]
    h, b, s = tok.split(".")
    widened = dict(claims_of(tok), scope="email:send email:delete")
    forged = jwt.encode(claims_of(tok), E.other, algorithm="ES256",
                        headers={"kid": kid, "typ": "at+jwt"})
    stranger = jwt.encode(claims_of(tok), E.other, algorithm="ES256",
                          headers={"kid": "stranger", "typ": "at+jwt"})
    expired = mint(deputy_grant(), extra=["--age", "120"])
    cases = [
        ("%s.%s.%s" % (h, b64url(json.dumps(widened).encode()), s), MAIL, "bad signature"),
        (tok, "https://cal.internal", 'wrong audience (want "https://cal.internal")'),
        (expired, MAIL, "token expired"),
        (forged, MAIL, "bad signature"),
        (stranger, MAIL, 'unknown kid "stranger"'),
        (jwt.encode(claims_of(tok), "secret", algorithm="HS256", headers={"kid": kid}), MAIL,
         'alg "HS256" refused (only ES256)'),
    ]
    for t, aud, want in cases:
        p = run([DEPUTY, "verify", "--jwks", jwks, "--audience", aud, t], check=False)
        eq(p.returncode, 1, "%s: exit status (%r)" % (want, p.stdout))
        eq(p.stderr.strip(), "deputy: verify: " + want, "stderr")
        eq(p.stdout, "", "%s: stdout" % want)
    p = run([DEPUTY, "verify", "--jwks", jwks, "--audience", MAIL, "--scope", "email:read",
             tok], check=False)
    eq(p.stderr.strip(), 'deputy: verify: scope "email:read" not granted', "stderr")


@case
def cli_contract():
    for sub in ("grant", "verify"):
        p = run([DEPUTY, sub, "--help"])
        check(p.stdout.startswith("usage: deputy " + sub), p.stdout)
    # the grant's audience defaults to the issuer of deputyd's config
    cfg = os.path.join(E.dir, "deputy.json")
    with open(cfg, "w") as f:
        json.dump({"issuer": "https://from-config.test", "trusted_issuers": [], "routes": []}, f)
    args = [DEPUTY, "grant", "--key", E.idp_ec_pem, "--iss", IDP, "--user", "u", "--agent",
            "agent:a", "--scope", "s1", "--scope", "s2", "--resource", MAIL, "--ttl", "90s"]
    c = claims_of(run(args + ["--config", cfg]).stdout.strip())
    eq((c["aud"], c["scope"]), ("https://from-config.test", "s1 s2"), "aud and scope")
    eq((c["may_act"], c["exp"] - c["iat"]), ({"sub": "agent:a"}, 90), "may_act and lifetime")
    c = claims_of(run(args, env=dict(os.environ, DEPUTY_CONFIG=cfg)).stdout.strip())
    eq(c["aud"], "https://from-config.test", "aud from DEPUTY_CONFIG")
    p = run(args + ["--config", os.path.join(E.dir, "missing.json")], check=False)
    check(p.returncode != 0 and p.stderr.startswith("deputy: grant: no audience"), p.stderr)
    eq(p.stderr.count("\n"), 1, "lines on stderr")
    p = run(args + ["--aud", DEPUTYD, "--ttl", "5y"], check=False)
    check(p.returncode != 0 and p.stderr.startswith("deputy: grant: --ttl"), p.stderr)
    p = run([DEPUTY, "verify", "--jwks", E.idp_jwks], check=False)
    check(p.returncode == 2 and p.stderr.startswith("deputy: verify: "), p.stderr)


class JwksHandler(http.server.BaseHTTPRequestHandler):
    files = {}

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@case
def jwks_uri_over_https():
    certs = dt.make_certs(E.dir)
    cert, key = certs.cert, certs.key
    JwksHandler.files = {"/jwks": open(E.idp_jwks, "rb").read(),
                         "/deputyd-jwks": open(deputyd_jwks(), "rb").read()}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = "https://127.0.0.1:%d" % srv.server_address[1]
        grant = deputy_grant()
        env = dict(os.environ, DEPUTY_CA_FILE=certs.ca)
        p = run([CHECK, IDP, url + "/jwks", DEPUTYD, AGENT, grant], env=env, check=False)
        check(p.returncode == 0 and p.stdout.startswith("ok alice@example.com"),
              "%r %r" % (p.stdout, p.stderr))
        # without trusting the throwaway CA the fetch fails (logged) and the kid is unknown
        env.pop("DEPUTY_CA_FILE")
        p = run([CHECK, IDP, url + "/jwks", DEPUTYD, AGENT, grant], env=env, check=False)
        check(p.returncode == 1 and "unknown kid" in p.stdout, p.stdout)
        check("keys not loaded" in p.stderr, p.stderr)
        # deputy verify with a JWKS URL
        tok = mint(grant)
        p = run([DEPUTY, "verify", "--jwks", url + "/deputyd-jwks", "--audience", MAIL, tok],
                env=dict(os.environ, DEPUTY_CA_FILE=certs.ca), check=False)
        eq(p.returncode, 0, p.stderr)
        p = run([DEPUTY, "verify", "--jwks", url + "/missing", "--audience", MAIL, tok],
                env=dict(os.environ, DEPUTY_CA_FILE=certs.ca), check=False)
        check(p.returncode == 1 and "HTTP status 404" in p.stderr, p.stderr)
    finally:
        srv.shutdown()
        srv.server_close()


if __name__ == "__main__":
    for exe in (DEPUTY, MINT, CHECK):
        if not os.access(exe, os.X_OK):
            print("FAIL: setup: %s is not built" % exe)
            sys.exit(1)
    setup()
    dt.main()
