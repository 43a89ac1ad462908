# SPDX-License-Identifier: MIT
"""MCP-aware routes (design: Policy: routes, MCP routes) with a real MCP server and client no
one here wrote: the npm package @modelcontextprotocol/sdk (tests/mcp/*.mjs, installed into
build/npm-mcp by scripts/deps.sh). The server speaks Streamable HTTP over HTTPS with three
tools (send_email, read_inbox, delete_all) and logs every request it receives; the SDK's
client is the agent, run under `deputy run` as nobody with Node, whose own TLS stack sends it
through deputy's proxy; a Python agent (the libssl the shim hooks) sends the same calls
through the shim, one with its body in several writes.

The route maps read_inbox to email:read, send_email to email:send and the rest to deny; the
grant holds email:read only. The allowed tool runs and its server sees a token whose scope,
mcp and body_sha256 match the call; send_email gets the step-up 403 (WWW-Authenticate
insufficient_scope, a JSON-RPC error with the request's id) and never reaches the server; a
batch, an Mcp-Name header that disagrees with the body and a body over 1 MiB are refused;
tools/list (SSE and JSON) shows only read_inbox. Needs root and BPF (SKIP otherwise, FAIL
under DEPUTY_REQUIRE_BPF=1)."""
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

IN_NAMESPACE = dt.private_mount_namespace("DEPUTY_MCP_TEST_NS")

NOBODY = dt.unprivileged_user()
SDK = os.path.join(dt.SRC, "build", "npm-mcp", "node_modules")
MCP_SRC = os.path.join(dt.SRC, "tests", "mcp")
AUD = "https://api.test"


class World:
    """The private /etc/hosts, the certificates, the SDK where nobody can read it, and one
    MCP server per response mode (SSE, JSON)."""
    inst = None

    def __init__(self):
        self.dir = dt.reachable_dir("deputy-mcp-test.")
        hosts = os.path.join(self.dir, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n127.0.0.1 api.test\n")
        os.chmod(hosts, 0o644)
        subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
        self.certs = dt.make_certs(self.dir)
        os.chmod(self.certs.dir, 0o755)
        self.js = os.path.join(dt.AGENT_DIR, "mcp")
        if not os.path.isdir(self.js):
            shutil.copytree(SDK, os.path.join(self.js, "node_modules"), symlinks=True)
            for f in ("server.mjs", "agent.mjs", "raw.mjs"):
                shutil.copy(os.path.join(MCP_SRC, f), self.js)
            subprocess.run(["chmod", "-R", "a+rX", self.js], check=True)
        self.ca = os.path.join(self.js, "ca.pem")
        shutil.copy(self.certs.ca, self.ca)
        os.chmod(self.ca, 0o644)
        self.servers = {mode: self.server(mode) for mode in ("sse", "json")}

    def server(self, mode):
        log = os.path.join(self.dir, "server-%s.log" % mode)
        conf = os.path.join(self.dir, "server-%s.json" % mode)
        with open(conf, "w") as f:
            json.dump({"cert": self.certs.cert, "key": self.certs.key, "log": log,
                       "json": mode == "json"}, f)
        open(log, "w").close()
        p = dt.track(subprocess.Popen(["node", os.path.join(self.js, "server.mjs"), conf],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=self.js))
        line = p.stdout.readline()
        check(line.startswith("listening "), "the MCP server did not start: %r %r"
              % (line, p.stderr.read() if p.poll() is not None else ""))
        return {"port": int(line.split()[1]), "log": log, "proc": p}

    @classmethod
    def get(cls):
        if not dt.bpf_available():
            dt.skip("needs root and BPF (BTF, cgroup2) for the kernel layer", bpf=True)
        if not IN_NAMESPACE:
            dt.skip("needs a mount namespace (unshare) for a private /etc/hosts", bpf=True)
        if not cls.inst:
            cls.inst = World()
        return cls.inst

    def deputyd(self):
        routes = [{"host": "api.test", "port": s["port"], "path": "/mcp",
                   "action": "delegate", "audience": AUD, "scope": "mcp:use",
                   "mcp": {"tools": {"read_inbox": "email:read", "send_email": "email:send",
                                     "*": "deny"},
                           "filter_list": True}}
                  for s in self.servers.values()]
        return dt.Deputyd(routes=routes, proxy_listen="127.0.0.1:%d" % dt.free_port(),
                          upstream_ca_file=self.certs.ca).start()

    def url(self, mode="sse"):
        return "https://api.test:%d/mcp" % self.servers[mode]["port"]

    def seen(self, mode="sse"):
        with open(self.servers[mode]["log"]) as f:
            return [json.loads(line) for line in f if line.strip()]


def run_js(d, script, *args):
    w = World.get()
    grant = d.idp.grant(scope="mcp:use email:read", resource=[AUD])
    r = d.run(grant, ["node", os.path.join(w.js, script)] + list(args), user=NOBODY,
              timeout=180, cwd=w.js)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    check(line, "%s printed no result: %r %r" % (script, r.stdout[-800:], r.stderr[-800:]))
    return json.loads(line[-1][7:])


def records(d):
    recs = []
    for s in d.sessions():
        recs += d.wait_closed(s["session"])
    return recs


def verify(d, token, scope):
    jwks = os.path.join(d.state, "jwks.json")
    r = subprocess.run([dt.DEPUTY, "verify", "--jwks", jwks, "--audience", AUD, "--scope", scope,
                        "--issuer", dt.ISSUER, token], capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0, "the server's token does not verify: " + r.stderr)


@case
def sdk_client_through_the_proxy_one_scope_per_tool():
    w = World.get()
    d = w.deputyd()
    before = len(w.seen())
    out = run_js(d, "agent.mjs", w.url())
    eq(out.get("connect"), "ok", "connect: %r" % out)
    eq(out.get("tools"), ["read_inbox"], "tools/list through the filter: %r" % out)
    eq(out.get("read_inbox"), "inbox: 3 messages", "the allowed tool: %r" % out)
    err = out.get("send_email_error", "")
    check("send_email" not in out and "deputy_denied" in err and "email:send" in err,
          "the tool outside the grant: the client shows deputy's reason: %r" % out)
    seen = w.seen()[before:]
    calls = [x for x in seen if x["method"] == "tools/call"]
    eq([x["name"] for x in calls], ["read_inbox"], "tool calls the server saw")
    tok = calls[0]["auth"]
    check(tok and tok.startswith("Bearer "), "no token at the server: %r" % calls[0])
    claims = dt.decode_jwt(tok[7:])
    eq(claims["scope"], "email:read", "the token's scope is the tool's")
    eq(claims.get("mcp"), {"method": "tools/call", "name": "read_inbox"}, "the token's call")
    eq(claims.get("body_sha256"), calls[0]["sha256"], "the token binds the body the server got")
    verify(d, tok[7:], "email:read")
    for x in seen:
        if x["method"] in ("initialize", "tools/list"):
            eq(dt.decode_jwt(x["auth"][7:])["scope"], "mcp:use", x["method"] + "'s scope")
    recs = records(d)
    toks = [x for x in recs if x["type"] == "token" and x.get("mcp", {}).get("name")]
    eq([x["mcp"]["name"] for x in toks], ["read_inbox"], "token records naming the tool")
    eq(toks[0]["body_sha256"], calls[0]["sha256"], "the token record's body hash")
    denies = [x for x in recs if x["type"] == "deny"]
    check(any(x.get("mcp", {}).get("name") == "send_email" and "email:send" in x["reason"]
              for x in denies), "no deny record naming send_email: %r" % denies)


@case
def a_refused_call_gets_the_step_up_403_with_its_id():
    w = World.get()
    d = w.deputyd()
    before = len(w.seen())
    out = run_js(d, "raw.mjs", w.url(), "call")
    eq(out.get("status"), 403, "status: %r" % out)
    eq(out.get("www"), 'Bearer error="insufficient_scope", scope="email:send"', "WWW-Authenticate")
    body = json.loads(out["body"])
    eq(body.get("id"), "call-7", "the JSON-RPC error's id")
    eq(body["error"]["data"]["error"], "deputy_denied", "the error's data")
    check("email:send" in body["error"]["message"], "the message says why: %r" % body)
    time.sleep(0.3)
    eq(w.seen()[before:], [], "the refused call reached the server")


@case
def batch_mismatch_and_oversize_are_refused():
    w = World.get()
    d = w.deputyd()
    before = len(w.seen())
    for kind, why in (("batch", "batches are refused"), ("mismatch", "disagrees with the body"),
                      ("big", "over 1 MiB")):
        out = run_js(d, "raw.mjs", w.url(), kind)
        eq(out.get("status"), 403, "%s: %r" % (kind, out))
        check(why in out["body"], "%s: the reason: %r" % (kind, out["body"][:400]))
        check(json.loads(out["body"]).get("jsonrpc") == "2.0", "%s: a JSON-RPC error" % kind)
    time.sleep(0.3)
    eq(w.seen()[before:], [], "a refused request reached the server")
    recs = records(d)
    for why in ("batches are refused", "disagrees with the body", "over 1 MiB"):
        check(any(x["type"] == "deny" and why in x["reason"] for x in recs),
              "no deny record for %r" % why)


@case
def a_chunked_call_in_pieces_through_the_proxy():
    w = World.get()
    d = w.deputyd()
    before = len(w.seen())
    out = run_js(d, "raw.mjs", w.url(), "split")
    eq(out.get("status"), 200, "status: %r" % out)
    check("inbox: 3 messages" in out["body"], "the tool's answer: %r" % out["body"][:300])
    seen = w.seen()[before:]
    eq([(x["method"], x["name"]) for x in seen], [("tools/call", "read_inbox")], "at the server")
    eq(dt.decode_jwt(seen[0]["auth"][7:])["body_sha256"], seen[0]["sha256"],
       "the token binds the body's content, chunk framing aside")


@case
def tools_list_filtered_in_json_mode_too():
    w = World.get()
    d = w.deputyd()
    out = run_js(d, "raw.mjs", w.url("json"), "list")
    eq(out.get("status"), 200, "status: %r" % out)
    tools = [t["name"] for t in json.loads(out["body"])["result"]["tools"]]
    eq(tools, ["read_inbox"], "tools/list (JSON) through the filter")
    seen = w.seen("json")
    check(seen and seen[-1]["method"] == "tools/list", "the server did not answer the list")


# The shim's path: Python's ssl module is the libssl the shim hooks. Each request on its own
# connection; "split" sends a chunked body in three writes after the head.
SHIM_CLIENT = r'''
import http.client, json, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
def call(name, args, id):
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": args}}
cases = {
    "read": (call("read_inbox", {}, 1), {}),
    "split": (call("read_inbox", {}, "s1"), {}),
    "call": (call("send_email", {"to": "bob@example.com"}, "call-7"), {}),
    "batch": ([call("read_inbox", {}, 1)], {}),
    "mismatch": (call("send_email", {"to": "x"}, 2), {"Mcp-Name": "read_inbox"}),
    "big": (call("read_inbox", {"pad": "x" * (1100 * 1024)}, 3), {}),
}
out = {}
for kind, (body, extra) in cases.items():
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    headers.update(extra)
    c = http.client.HTTPSConnection("api.test", port, timeout=60,
                                    context=ssl.create_default_context(cafile=ca))
    try:
        if kind == "split":
            parts = [data[:7], data[7:20], data[20:]]
            c.request("POST", "/mcp", body=iter(parts), headers=headers, encode_chunked=True)
        else:
            c.request("POST", "/mcp", body=data, headers=headers)
        r = c.getresponse()
        out[kind] = {"status": r.status, "www": r.getheader("WWW-Authenticate"),
                     "body": r.read().decode()}
    except Exception as e:
        out[kind] = {"error": repr(e)}
    c.close()
print("RESULT " + json.dumps(out))
'''


@case
def python_through_the_shim_one_scope_per_tool():
    w = World.get()
    d = w.deputyd()
    before = len(w.seen())
    script = os.path.join(w.js, "shim_client.py")
    with open(script, "w") as f:
        f.write(SHIM_CLIENT)
    os.chmod(script, 0o644)
    grant = d.idp.grant(scope="mcp:use email:read", resource=[AUD])
    r = d.run(grant, [dt.PYTHON, script, str(w.servers["sse"]["port"]), w.ca], user=NOBODY,
              timeout=180)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    check(line, "the client printed no result: %r %r" % (r.stdout[-800:], r.stderr[-800:]))
    out = json.loads(line[-1][7:])
    for kind in ("read", "split"):
        eq(out[kind].get("status"), 200, "%s: %r" % (kind, out[kind]))
        check("inbox: 3 messages" in out[kind]["body"], "%s: the tool's answer" % kind)
    eq(out["call"].get("status"), 403, "send_email: %r" % out["call"])
    eq(out["call"]["www"], 'Bearer error="insufficient_scope", scope="email:send"',
       "WWW-Authenticate")
    eq(json.loads(out["call"]["body"]).get("id"), "call-7", "the JSON-RPC error's id")
    for kind, why in (("batch", "batches are refused"), ("mismatch", "disagrees with the body"),
                      ("big", "over 1 MiB")):
        eq(out[kind].get("status"), 403, "%s: %r" % (kind, out[kind]))
        check(why in out[kind]["body"], "%s: the reason: %r" % (kind, out[kind]["body"][:300]))
    seen = w.seen()[before:]
    eq([(x["method"], x["name"]) for x in seen], [("tools/call", "read_inbox")] * 2,
       "what reached the server")
    for x in seen:
        claims = dt.decode_jwt(x["auth"][7:])
        eq(claims["scope"], "email:read", "the token's scope")
        eq(claims.get("body_sha256"), x["sha256"], "the token binds the body the server got")
    recs = records(d)
    toks = [x for x in recs if x["type"] == "token" and x.get("mcp")]
    check(len(toks) == 2 and all("mediator" not in x for x in toks),
          "token records of the shim: %r" % toks)
    check(any(x["type"] == "deny" and x.get("layer") == "shim" and "batches" in x["reason"]
              for x in recs), "no shim deny record for the batch")


# tools/list through the shim in both response modes (SSE: chunked text/event-stream; JSON),
# each followed by a call on the same connection, which goes on after the cut answer.
SHIM_LIST = r'''
import http.client, json, ssl, sys
ca, out = sys.argv[1], {}
headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
for mode, port in zip(("sse", "json"), sys.argv[2:]):
    c = http.client.HTTPSConnection("api.test", int(port), timeout=60,
                                    context=ssl.create_default_context(cafile=ca))
    res = []
    for body in ({"jsonrpc": "2.0", "id": "list-1", "method": "tools/list"},
                 {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                  "params": {"name": "read_inbox", "arguments": {}}}):
        try:
            c.request("POST", "/mcp", body=json.dumps(body).encode(), headers=headers)
            r = c.getresponse()
            res.append({"status": r.status, "type": r.getheader("Content-Type"),
                        "body": r.read().decode()})
        except Exception as e:
            res.append({"error": repr(e)})
    out[mode] = res
    c.close()
print("RESULT " + json.dumps(out))
'''


def listed_tools(answer):
    """The tool names of a tools/list answer, JSON or SSE (its data lines)."""
    body = answer["body"]
    if "event-stream" in (answer.get("type") or ""):
        msgs = [json.loads(x[5:]) for x in body.splitlines() if x.startswith("data:") and x[5:].strip()]
    else:
        msgs = [json.loads(body)]
    return [t["name"] for m in msgs if "result" in m for t in m["result"]["tools"]]


@case
def python_through_the_shim_lists_only_granted_tools():
    w = World.get()
    d = w.deputyd()
    script = os.path.join(w.js, "shim_list.py")
    with open(script, "w") as f:
        f.write(SHIM_LIST)
    os.chmod(script, 0o644)
    grant = d.idp.grant(scope="mcp:use email:read", resource=[AUD])
    r = d.run(grant, [dt.PYTHON, script, w.ca, str(w.servers["sse"]["port"]),
                      str(w.servers["json"]["port"])], user=NOBODY, timeout=180)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    check(line, "the client printed no result: %r %r" % (r.stdout[-800:], r.stderr[-800:]))
    out = json.loads(line[-1][7:])
    for mode, kind in (("sse", "text/event-stream"), ("json", "application/json")):
        lst, call = out[mode]
        eq(lst.get("status"), 200, "%s tools/list: %r" % (mode, lst))
        check(kind in (lst.get("type") or ""), "%s: the answer's type: %r" % (mode, lst))
        eq(listed_tools(lst), ["read_inbox"], "%s tools/list through the shim" % mode)
        check('"list-1"' in lst["body"], "%s: the answer keeps its id" % mode)
        eq(call.get("status"), 200, "%s: a call after the list, same connection: %r"
           % (mode, call))
        check("inbox: 3 messages" in call["body"], "%s: the call's answer" % mode)
        seen = w.seen(mode)
        check([x["method"] for x in seen[-2:]] == ["tools/list", "tools/call"],
              "%s: the server answered both: %r" % (mode, seen[-2:]))
    recs = records(d)
    eq(len([x for x in recs if x["type"] == "response" and x.get("status") == 200]), 4,
       "response records of the four answers")


@case
def curl_expect_100_continue_is_answered_by_the_shim():
    """curl waits for 100 Continue before it sends the body the shim must read: the shim
    answers it at once, so curl never gives up waiting (it says "Done waiting" when it
    does, after --expect100-timeout)."""
    w = World.get()
    d = w.deputyd()
    before = len(w.seen())
    body = os.path.join(w.js, "call.json")
    with open(body, "w") as f:
        json.dump({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                   "params": {"name": "read_inbox", "arguments": {"pad": "x" * 4000}}}, f)
    os.chmod(body, 0o644)
    grant = d.idp.grant(scope="mcp:use email:read", resource=[AUD])
    r = d.run(grant, ["curl", "-sS", "-v", "--cacert", w.ca, "--expect100-timeout", "30",
                      "-H", "Content-Type: application/json",
                      "-H", "Accept: application/json, text/event-stream",
                      "-H", "Expect: 100-continue", "--data-binary", "@" + body, w.url()],
              user=NOBODY, timeout=180)
    eq(r.returncode, 0, "curl: %s" % r.stderr[-800:])
    check("< HTTP/1.1 100 Continue" in r.stderr, "no 100 Continue: %s" % r.stderr[-1500:])
    check("Done waiting for 100-continue" not in r.stderr,
          "curl timed out waiting for 100 Continue: %s" % r.stderr[-1500:])
    check("inbox: 3 messages" in r.stdout, "the tool's answer: %r" % r.stdout[-400:])
    seen = w.seen()[before:]
    eq([(x["method"], x["name"]) for x in seen], [("tools/call", "read_inbox")], "at the server")


@case
def a_lying_agent_gets_no_scope_outside_the_grant():
    """The agent speaks deputyd's protocol itself, as a tampered shim could: whatever call it
    claims, deputyd mints only the scope that call maps to and only inside the grant, and
    the token binds the claimed call and body hash, which the server checks."""
    if not dt.is_root():
        dt.skip("needs root to run the agent as nobody")
    d = dt.Deputyd(routes=[
        {"host": "api.test", "port": 443, "path": "/mcp", "action": "delegate", "audience": AUD,
         "scope": "mcp:use", "mcp": {"tools": {"read_inbox": "email:read",
                                               "send_email": "email:send", "*": "deny"}}},
        {"host": "api.test", "port": 443, "action": "delegate", "audience": AUD,
         "scope": "email:read"},
    ])
    for rt in d.config["routes"]:
        rt["addrs"] = [d.api_addr]
    d.write_config()
    d.start()
    h = "ab" * 32

    def ask(target, *mcp):
        f = [["SESSION", "$SESSION"], ["SCHEME", "https"], ["HOST", "api.test"],
             ["PORT", 443], ["METHOD", "POST"], ["TARGET", target]]
        return ["DECIDE", f + [list(x) for x in mcp]]
    call = [("MCP_METHOD", "tools/call"), ("BODY_SHA256", h)]
    r, replies = dt.agent_requests(d, d.idp.grant(scope="mcp:use email:read", resource=[AUD]), [
        ask("/mcp"),
        ask("/mcp", ("MCP_NAME", "send_email"), *call),
        ask("/mcp", ("MCP_NAME", "delete_all"), *call),
        ask("/mcp", ("MCP_NAME", "read_inbox"), *call),
        ask("/mcp", ("MCP_NAME", "read_inbox"), ("MCP_METHOD", "tools/call"),
            ("BODY_SHA256", "not-a-hash")),
        ask("/mcp", *call),
        ask("/other", ("MCP_NAME", "read_inbox"), *call),
    ], user=NOBODY)
    eq(r.returncode, 0, r.stderr)
    eq([dt.VERDICT[x["VERDICT"]] for x in replies],
       ["mcp_body", "deny", "deny", "delegate", "deny", "deny", "deny"], "replies %r" % replies)
    check("email:send" in replies[1]["REASON"], replies[1]["REASON"])
    check("denies tool" in replies[2]["REASON"], replies[2]["REASON"])
    claims = dt.decode_jwt(replies[3]["TOKEN"])
    eq((claims["scope"], claims["mcp"], claims["body_sha256"]),
       ("email:read", {"method": "tools/call", "name": "read_inbox"}, h), "the token's call")
    for x in replies[4:6]:
        check("malformed MCP call" in x["REASON"], x["REASON"])
    check("without \"mcp\"" in replies[6]["REASON"], replies[6]["REASON"])


def _cleanup():
    if World.inst:
        for s in World.inst.servers.values():
            dt.stop_process(s["proc"])
        subprocess.run(["umount", "/etc/hosts"])
        shutil.rmtree(World.inst.dir, ignore_errors=True)


if __name__ == "__main__":
    if not os.path.isdir(os.path.join(SDK, "@modelcontextprotocol", "sdk")) or \
            not shutil.which("node"):
        print("FAIL: setup: @modelcontextprotocol/sdk is not installed in build/npm-mcp "
              "(make deps)")
        sys.exit(1)
    try:
        dt.main()
    finally:
        _cleanup()
