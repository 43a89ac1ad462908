// SPDX-License-Identifier: MIT
/*
 * Unit tests for daemon/deputyd/decide.c: one request of a session against a real config
 * (config_parse), a real signing key, a real session log, as the DECIDE handler calls it.
 * Each case checks the verdict, the reason, the token's claims and the record in the log.
 */
#include <arpa/inet.h>
#include <deputy/proto.h>
#include <errno.h>

#include "deputyd.h"
#include "jwt_helpers.h"
#include "unit.h"

#define HEAD                                                                                       \
	"{\"issuer\": \"https://deputy.test\", \"trusted_issuers\": [{\"issuer\": "                \
	"\"https://idp.test\", \"jwks_file\": \"/j.json\"}], "
#define ROUTES                                                                                     \
	"\"routes\": ["                                                                            \
	"{\"host\": \"mail.internal\", \"port\": 443, \"method\": \"POST\", \"path\": "            \
	"\"/api/send*\", \"action\": \"delegate\", \"audience\": \"https://mail.internal\", "      \
	"\"scope\": \"email:send\", \"header\": \"X-Token\", \"addrs\": [\"10.0.0.0/24\"]},"       \
	"{\"host\": \"mail.internal\", \"port\": 443, \"method\": \"DELETE\", \"action\": "        \
	"\"delegate\", \"audience\": \"https://mail.internal\", \"scope\": \"email:delete\"},"     \
	"{\"host\": \"mail.internal\", \"port\": 443, \"method\": \"BREW\", \"action\": "          \
	"\"passthrough\"},"                                                                        \
	"{\"host\": \"other.internal\", \"port\": 443, \"action\": \"delegate\", \"audience\": "   \
	"\"https://other.internal\", \"scope\": \"email:send\"},"                                  \
	"{\"host\": \"mail.internal\", \"port\": 443, \"path\": \"/admin*\", \"action\": "         \
	"\"deny\"},"                                                                               \
	"{\"host\": \"mail.internal\", \"port\": 443, \"path\": \"/*\", \"action\": "              \
	"\"passthrough\"},"                                                                        \
	"{\"host\": \"llm.test\", \"port\": 443, \"action\": \"passthrough\"}]"

static char *scopes[] = {"email:send", "email:read"};
static char *resources[] = {"https://mail.internal"};
static struct dp_grant grant = {
    .iss = "https://idp.test",
    .sub = "alice@example.com",
    .jti = "grant-1",
    .agent = "agent:mailbot",
    .scopes = scopes,
    .n_scopes = 2,
    .resources = resources,
    .n_resources = 1,
};
static struct deputyd d;
static struct session s;
/* Where the request's connection goes, as the shim reports it (deputyd without a kernel
 * layer), and the TLS SNI the client sent. */
static const char *peer = "10.0.0.1", *sni;

static int setup(const char *extra)
{
	static char text[4096];
	struct dp_err err = {{0}};

	config_free(d.cfg);
	d.cfg = NULL;
	snprintf(text, sizeof(text), HEAD ROUTES "%s}", extra);
	if (config_parse(text, strlen(text), &d.cfg, &err) != 0) {
		printf("config: %s\n", err.msg);
		return -1;
	}
	return 0;
}

/* One request; *rec is the last record of the log afterwards (caller frees). */
static void ask(const char *method, const char *host, const char *target, struct decide_res *res,
		json_t **rec)
{
	struct decide_req r = {.scheme = "https",
			       .host = host,
			       .method = method,
			       .target = target,
			       .sni = sni,
			       .port = 443,
			       .pid = 4242,
			       .comm = "agent"};
	json_error_t jerr;
	char *text = NULL, *last;
	size_t len;

	if (peer && inet_pton(AF_INET, peer, r.peer_addr) == 1)
		r.peer_family = AF_INET;
	else if (peer && inet_pton(AF_INET6, peer, r.peer_addr) == 1)
		r.peer_family = AF_INET6;
	decide(&d, &s, &r, res);
	*rec = NULL;
	audit_log_flush_all(); /* deputyd's loop does this before it replies */
	if (dp_read_file(audit_log_path(s.log), 1 << 20, &text, &len) != 0)
		return;
	while (len > 0 && text[len - 1] == '\n')
		text[--len] = '\0';
	last = strrchr(text, '\n');
	*rec = json_loads(last ? last + 1 : text, 0, &jerr);
	free(text);
}

static const char *rec_str(json_t *rec, const char *key)
{
	return json_string_value(json_object_get(rec, key));
}

static void delegate(void)
{
	struct decide_res res;
	struct dp_jws jws = {0};
	struct dp_err err = {{0}};
	json_t *rec;

	ask("POST", "Mail.Internal", "/api/send?to=bob", &res, &rec);
	check(res.verdict == DP_VERDICT_DELEGATE);
	check_str(res.reason, "delegated");
	check_str(res.header, "X-Token");
	check_str(res.scope, "email:send");
	check(res.token != NULL);
	check_str(rec_str(rec, "type"), "token");
	check_str(rec_str(rec, "jti"), res.jti);
	check_str(rec_str(rec, "scope"), "email:send");
	check_str(rec_str(rec, "aud"), "https://mail.internal");
	check_str(rec_str(rec, "htm"), "POST");
	check_str(rec_str(rec, "htu"), "https://mail.internal/api/send");
	check(json_integer_value(json_object_get(rec, "pid")) == 4242);
	json_decref(rec);
	/* the token itself: signed by deputyd's key, bound to this request */
	if (dp_jws_parse(res.token, &jws, &err) != 0)
		fail("token: %s", err.msg);
	check(dp_jws_verify(&jws, d.key, &err) == 0);
	check_str(json_string_value(json_object_get(jws.claims, "sub")), "alice@example.com");
	check_str(json_string_value(json_object_get(jws.claims, "scope")), "email:send");
	check_str(json_string_value(json_object_get(jws.claims, "htu")),
		  "https://mail.internal/api/send");
	check_str(json_string_value(json_object_get(jws.claims, "jti")), res.jti);
	dp_jws_clear(&jws);
	free(res.token);
	check(s.counts.tokens == 1);
}

static void passthrough(void)
{
	struct decide_res res;
	json_t *rec;

	ask("GET", "llm.test", "/v1/chat", &res, &rec);
	check(res.verdict == DP_VERDICT_PASSTHROUGH);
	check(res.token == NULL);
	check_str(res.reason, "passthrough");
	check_str(rec_str(rec, "type"), "passthrough");
	check_str(rec_str(rec, "url"), "https://llm.test/v1/chat");
	json_decref(rec);
}

/* Methods are matched exactly: on a routed host, one that is not an upper-case known method
 * is refused, even by a route that names no method, unless the route names it. */
static void odd_methods(void)
{
	static const char *const odd[] = {"get", "FOO", "Post"};
	struct decide_res res;
	json_t *rec;

	for (size_t i = 0; i < DP_ARRAY_SIZE(odd); i++) {
		ask(odd[i], "llm.test", "/v1/chat", &res, &rec);
		check(res.verdict == DP_VERDICT_DENY);
		check(strstr(res.reason, "not an upper-case known method"));
		check_str(rec_str(rec, "type"), "deny");
		json_decref(rec);
	}
	ask("PROPFIND", "llm.test", "/dav", &res, &rec); /* known: the route decides */
	check(res.verdict == DP_VERDICT_PASSTHROUGH);
	json_decref(rec);
	{
		struct dp_err err = {{0}};
		static const char text[] =
		    HEAD "\"routes\": [{\"host\": \"llm.test\", \"port\": 443, \"method\": "
			 "\"FOO\", \"action\": \"passthrough\"}]}";

		config_free(d.cfg);
		d.cfg = NULL;
		if (config_parse(text, strlen(text), &d.cfg, &err) != 0)
			fail("config: %s", err.msg);
	}
	ask("FOO", "llm.test", "/v1/chat", &res, &rec); /* a route that names it */
	check(res.verdict == DP_VERDICT_PASSTHROUGH);
	json_decref(rec);
	if (setup("") != 0)
		fail("setup");
}

static void route_denies(void)
{
	struct decide_res res;
	json_t *rec;

	ask("GET", "mail.internal", "/admin/users", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	check_str(res.reason, "a route denies GET https://mail.internal/admin/users");
	check_str(rec_str(rec, "type"), "deny");
	check_str(rec_str(rec, "layer"), "daemon");
	check(json_is_true(json_object_get(rec, "enforced")));
	json_decref(rec);
}

static void scope_not_in_grant(void)
{
	struct decide_res res;
	json_t *rec;

	ask("DELETE", "mail.internal", "/api/msg/1", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY && res.token == NULL);
	check_str(res.reason, "scope \"email:delete\" is not in the user's grant");
	check_str(res.scope, "email:delete");
	check_str(rec_str(rec, "type"), "deny");
	check_str(rec_str(rec, "scope"), "email:delete");
	json_decref(rec);
}

static void audience_not_in_resource(void)
{
	struct decide_res res;
	json_t *rec;

	ask("POST", "other.internal", "/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY && res.token == NULL);
	check_str(res.reason, "audience \"https://other.internal\" is not in the user's grant");
	check_str(rec_str(rec, "type"), "deny");
	json_decref(rec);
}

static void unrouted_deny(void)
{
	struct decide_res res;
	json_t *rec;

	ask("GET", "elsewhere.test", "/x?secret=1", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	check_str(res.reason, "no route allows GET https://elsewhere.test/x");
	check(json_is_true(json_object_get(rec, "enforced")));
	json_decref(rec);
}

static void unrouted_monitor(void)
{
	struct decide_res res;
	uint64_t before = s.counts.passthrough;
	json_t *rec;

	if (setup(", \"unrouted\": \"monitor\"") != 0)
		fail("config refused");
	ask("GET", "elsewhere.test", "/x", &res, &rec);
	check(res.verdict == DP_VERDICT_PASSTHROUGH);
	check_str(rec_str(rec, "type"), "deny");
	check(json_is_false(json_object_get(rec, "enforced")));
	check(s.counts.passthrough == before + 1);
	json_decref(rec);
	/* routed requests are decided as before */
	ask("GET", "mail.internal", "/admin", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	json_decref(rec);
	if (setup("") != 0)
		fail("config refused");
}

static void malformed(void)
{
	static const char *const targets[] = {"*", "mail.internal:443", "/a b", ""};
	struct decide_res res;
	json_t *rec;

	for (size_t i = 0; i < DP_ARRAY_SIZE(targets); i++) {
		ask("POST", "mail.internal", targets[i], &res, &rec);
		json_decref(rec);
		if (res.verdict != DP_VERDICT_DENY || strcmp(res.reason, "malformed request") != 0)
			fail("target \"%s\": %d %s", targets[i], res.verdict, res.reason);
	}
	ask("PO ST", "mail.internal", "/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	check_str(res.reason, "malformed request");
	check_str(rec_str(rec, "method"), "?");
	json_decref(rec);
	/* absolute-form: the path decides the route, the authority is the connection's */
	ask("POST", "mail.internal", "https://mail.internal/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DELEGATE);
	free(res.token);
	json_decref(rec);
}

static void session_closing(void)
{
	struct decide_res res;
	json_t *rec;

	s.state = SESSION_CLOSING;
	ask("POST", "mail.internal", "/api/send", &res, &rec);
	s.state = SESSION_OPEN;
	check(res.verdict == DP_VERDICT_DENY && res.token == NULL);
	check_str(res.reason, "the session is closing");
	json_decref(rec);
}

static void grant_expired(void)
{
	struct decide_res res;
	int64_t exp = grant.exp;
	json_t *rec;

	grant.exp = dp_now() - 1;
	ask("POST", "mail.internal", "/api/send", &res, &rec);
	grant.exp = exp;
	check(res.verdict == DP_VERDICT_DENY && res.token == NULL);
	check_str(res.reason, "the user's grant has expired");
	json_decref(rec);
}

/* Issue 11 item 6: a token goes only where the route's host is. */
static void bound_to_route_host(void)
{
	struct decide_res res;
	json_t *rec;

	peer = "10.0.0.9";
	sni = "MAIL.internal.";
	ask("POST", "mail.internal", "/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DELEGATE);
	free(res.token);
	json_decref(rec);
	peer = "::ffff:10.0.0.1";
	sni = NULL;
	ask("POST", "mail.internal", "/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DELEGATE);
	free(res.token);
	json_decref(rec);

	peer = "10.1.0.1"; /* curl --resolve mail.internal:443:10.1.0.1 */
	ask("POST", "mail.internal", "/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY && res.token == NULL);
	check_str(res.reason,
		  "the connection goes to 10.1.0.1:443, not to the route host mail.internal:443");
	check_str(rec_str(rec, "type"), "deny");
	check_str(rec_str(rec, "reason"), res.reason);
	json_decref(rec);
	peer = "2001:db8::1";
	ask("POST", "mail.internal", "/api/send", &res, &rec);
	check_str(res.reason, "the connection goes to [2001:db8::1]:443, not to the route host "
			      "mail.internal:443");
	json_decref(rec);
	peer = NULL;
	ask("POST", "mail.internal", "/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	check_str(res.reason, "the request's connection has no known destination");
	json_decref(rec);

	peer = "10.0.0.1";
	sni = "evil.test";
	ask("POST", "mail.internal", "/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	check_str(res.reason, "TLS SNI \"evil.test\" does not name the route host mail.internal");
	json_decref(rec);
	sni = NULL;
	ask("POST", "mail.internal", "https://evil.test/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	check_str(res.reason,
		  "the request target names another host than the route host mail.internal");
	json_decref(rec);
	/* passthrough routes carry no token: nothing to bind */
	peer = "10.1.0.1";
	ask("GET", "llm.test", "/v1", &res, &rec);
	check(res.verdict == DP_VERDICT_PASSTHROUGH);
	json_decref(rec);
	peer = "10.0.0.1";
}

static void methods_exact(void)
{
	struct decide_res res;
	json_t *rec;

	/* not upper-case, or unknown, on a routed destination: refused ... */
	ask("post", "mail.internal", "/api/send", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	check_str(res.reason,
		  "method post is not an upper-case known method and no route names it");
	json_decref(rec);
	ask("FOO", "llm.test", "/v1", &res, &rec);
	check(res.verdict == DP_VERDICT_DENY);
	json_decref(rec);
	/* ... unless a route names it */
	ask("BREW", "mail.internal", "/pot", &res, &rec);
	check(res.verdict == DP_VERDICT_PASSTHROUGH);
	json_decref(rec);
	ask("PATCH", "llm.test", "/v1", &res, &rec);
	check(res.verdict == DP_VERDICT_PASSTHROUGH);
	json_decref(rec);
}

/* Issue 11 item 5: spellings of /admin that backends read as /admin. */
static void paths_past_deny(void)
{
	static const char *const past[] = {
	    "//admin/users",	"/x/..;/admin/users", "/ADMIN/users",
	    "/Admin;v=1/users", "/%61dmin",	      "/x/%2e%2e/admin",
	    "/admin%2Fusers",	"/x\\..\\admin",      "/x/.%3b/admin"};
	struct decide_res res;
	json_t *rec;

	for (size_t i = 0; i < DP_ARRAY_SIZE(past); i++) {
		ask("GET", "mail.internal", past[i], &res, &rec);
		json_decref(rec);
		if (res.verdict != DP_VERDICT_DENY)
			fail("%s: %d %s", past[i], res.verdict, res.reason);
	}
	ask("GET", "mail.internal", "/x/..;/admin/users", &res, &rec);
	check_str(res.reason, "ambiguous request path: a ';' parameter on a '.' or '..' segment");
	json_decref(rec);
	ask("GET", "mail.internal", "/inbox%2F1", &res, &rec);
	check_str(res.reason, "ambiguous request path: an encoded '/' or '\\' in the path");
	json_decref(rec);
	/* what is not ambiguous passes the catch-all passthrough route */
	ask("GET", "mail.internal", "/inbox;v=1/../x", &res, &rec);
	check(res.verdict == DP_VERDICT_PASSTHROUGH);
	json_decref(rec);
}

int main(void)
{
	struct dp_err err = {{0}};
	char keypath[256];

	snprintf(keypath, sizeof(keypath), "%s/signing-key.pem", th_tmpdir());
	d.key = dp_key_load_or_create(keypath, &err);
	grant.exp = dp_now() + 3600;
	snprintf(s.id, sizeof(s.id), "decide-test");
	s.grant = &grant;
	s.agent = "agent:mailbot";
	s.state = SESSION_OPEN;
	if (!d.key || setup("") != 0 || audit_log_create(th_tmpdir(), s.id, &s.log, &err) != 0) {
		printf("FAIL: setup: %s\n", err.msg);
		th_cleanup();
		return 1;
	}
	RUN(delegate);
	RUN(passthrough);
	RUN(odd_methods);
	RUN(route_denies);
	RUN(scope_not_in_grant);
	RUN(audience_not_in_resource);
	RUN(unrouted_deny);
	RUN(unrouted_monitor);
	RUN(malformed);
	RUN(session_closing);
	RUN(grant_expired);
	RUN(bound_to_route_host);
	RUN(methods_exact);
	RUN(paths_past_deny);
	audit_log_free(s.log);
	config_free(d.cfg);
	dp_key_free(d.key);
	th_cleanup();
	UNIT_EXIT();
}
