// SPDX-License-Identifier: MIT
/* Unit tests of daemon/mint.c, checked through the public verifier of daemon/verify.c. */
#include <deputy/verify.h>
#include <errno.h>

#include "jwt_helpers.h"
#include "mint.h"
#include "unit.h"

#define ISSUER "https://deputy.test"
#define AGENT "agent:mailbot"

static struct dp_key *key;
static char *jwks;
static int64_t now;
static char *scopes[] = {"email:send", "calendar:read"};
static char *resources[] = {"https://mail.internal", "https://cal.internal"};
static struct dp_grant grant = {
    .iss = "https://idp.test",
    .sub = "alice@example.com",
    .jti = "grant-1",
    .agent = AGENT,
    .scopes = scopes,
    .n_scopes = 2,
    .resources = resources,
    .n_resources = 2,
};

static struct mint_request request(void)
{
	return (struct mint_request){
	    .grant = &grant,
	    .issuer = ISSUER,
	    .agent = AGENT,
	    .session = "sess-1",
	    .audience = "https://mail.internal",
	    .scope = "email:send",
	    .htm = "POST",
	    .htu = "https://mail.internal/api/send",
	    .ttl = 60,
	    .now = now,
	};
}

static void claims_exact(void)
{
	struct mint_request req = request();
	struct dp_err err = {""};
	struct dp_keyset *ks = th_keyset_of(key);
	char jti[DP_ID_LEN], *tok = NULL;
	struct dp_jws jws;
	const char *k;
	json_t *v;
	int64_t exp = 0;
	size_t n = 0;
	static const char *want_keys[] = {"iss", "sub", "act", "client_id", "aud", "scope", "iat",
					  "exp", "jti", "sid", "grant",	    "htm", "htu"};

	if (mint_token(key, &req, &tok, jti, &exp, &err))
		fail("mint: %s", err.msg);
	check(exp == now + 60);
	check(strlen(jti) == 22);
	check(dp_jws_parse(tok, &jws, &err) == 0);
	check(dp_jws_verify(&jws, dp_keyset_find(ks, jws.kid), &err) == 0);
	/* header: exactly alg, typ, kid */
	check(json_object_size(jws.header) == 3);
	check_str(jws.alg, "ES256");
	check_str(jws.typ, "at+jwt");
	check_str(jws.kid, dp_key_kid(key));
	json_object_foreach(jws.claims, k, v)
	{
		if (n >= DP_ARRAY_SIZE(want_keys) || strcmp(k, want_keys[n]) != 0)
			fail("claim %zu is \"%s\"", n, k);
		n++;
	}
	check(n == DP_ARRAY_SIZE(want_keys));
#define CLAIM(name) json_string_value(json_object_get(jws.claims, name))
	check_str(CLAIM("iss"), ISSUER);
	check_str(CLAIM("sub"), "alice@example.com");
	check_str(json_string_value(json_object_get(json_object_get(jws.claims, "act"), "sub")),
		  AGENT);
	check(json_object_size(json_object_get(jws.claims, "act")) == 1);
	check_str(CLAIM("client_id"), AGENT);
	check_str(CLAIM("aud"), "https://mail.internal");
	check_str(CLAIM("scope"), "email:send");
	check(json_integer_value(json_object_get(jws.claims, "iat")) == now);
	check(json_integer_value(json_object_get(jws.claims, "exp")) == now + 60);
	check_str(CLAIM("jti"), jti);
	check_str(CLAIM("sid"), "sess-1");
	check_str(json_string_value(json_object_get(json_object_get(jws.claims, "grant"), "iss")),
		  "https://idp.test");
	check_str(json_string_value(json_object_get(json_object_get(jws.claims, "grant"), "jti")),
		  "grant-1");
	check(json_object_size(json_object_get(jws.claims, "grant")) == 2);
	check_str(CLAIM("htm"), "POST");
	check_str(CLAIM("htu"), "https://mail.internal/api/send");
#undef CLAIM
	dp_jws_clear(&jws);
	dp_keyset_free(ks);
	free(tok);
}

static void session_binding_omits_htm_htu(void)
{
	struct mint_request req = request();
	struct dp_err err = {""};
	char jti[DP_ID_LEN], *tok = NULL;
	struct dp_jws jws;

	req.htm = req.htu = NULL;
	check(mint_token(key, &req, &tok, jti, NULL, &err) == 0);
	check(dp_jws_parse(tok, &jws, &err) == 0);
	check(json_object_size(jws.claims) == 11);
	check(!json_object_get(jws.claims, "htm") && !json_object_get(jws.claims, "htu"));
	dp_jws_clear(&jws);
	free(tok);
}

static void verifies_with_public_api(void)
{
	struct mint_request req = request();
	struct dp_err err = {""};
	char jti[DP_ID_LEN], *tok = NULL, *claims = NULL, why[256];
	deputy_verifier *v = deputy_verifier_new(jwks, why, sizeof(why));

	if (!v)
		fail("verifier: %s", why);
	check(mint_token(key, &req, &tok, jti, NULL, &err) == 0);
	if (deputy_verify(v, tok, "https://mail.internal", "email:send", ISSUER, &claims, why,
			  sizeof(why)))
		fail("verify: %s", why);
	check(claims && strstr(claims, jti));
	free(claims);
	check(deputy_verify(v, tok, "https://cal.internal", NULL, NULL, NULL, why, sizeof(why)) ==
	      -1);
	check_str(why, "wrong audience (want \"https://cal.internal\")");
	check(deputy_verify(v, tok, "https://mail.internal", "email:read", NULL, NULL, why,
			    sizeof(why)) == -1);
	check_str(why, "scope \"email:read\" not granted");
	check(deputy_verify(v, tok, "https://mail.internal", NULL, "https://other", NULL, why,
			    sizeof(why)) == -1);
	check_str(why, "wrong issuer (want \"https://other\")");
	free(tok);
	/* an expired one */
	req.now = now - 120;
	check(mint_token(key, &req, &tok, jti, NULL, &err) == 0);
	check(deputy_verify(v, tok, "https://mail.internal", NULL, NULL, NULL, why, sizeof(why)) ==
	      -1);
	check_str(why, "token expired");
	free(tok);
	deputy_verifier_free(v);
}

static void strings_are_escaped(void)
{
	struct dp_grant g = grant;
	struct mint_request req = request();
	struct dp_err err = {""};
	char jti[DP_ID_LEN], *tok = NULL;
	struct dp_jws jws;

	g.sub = "al\"ice\\\n\x01é";
	req.grant = &g;
	check(mint_token(key, &req, &tok, jti, NULL, &err) == 0);
	check(dp_jws_parse(tok, &jws, &err) == 0);
	check_str(json_string_value(json_object_get(jws.claims, "sub")), "al\"ice\\\n\x01é");
	dp_jws_clear(&jws);
	free(tok);
}

static void exp_capped_at_grant_exp(void)
{
	struct dp_grant g = grant;
	struct mint_request req = request();
	struct dp_err err = {""};
	char jti[DP_ID_LEN], *tok = NULL;
	int64_t exp = 0;

	g.exp = now + 10;
	req.grant = &g;
	check(mint_token(key, &req, &tok, jti, &exp, &err) == 0);
	check(exp == now + 10);
	free(tok);
	g.exp = now;
	tok = NULL;
	check(mint_token(key, &req, &tok, jti, &exp, &err) == -EACCES);
	check(!tok);
	check_str(err.msg, "grant expired");
}

static void refuses_outside_grant(void)
{
	struct mint_request req = request();
	struct dp_err err = {""};
	char jti[DP_ID_LEN], *tok = NULL;

	req.scope = "email:delete";
	check(mint_token(key, &req, &tok, jti, NULL, &err) == -EACCES);
	check(!tok);
	check_str(err.msg, "scope \"email:delete\" is not in the grant");
	/* two granted scopes are not one action */
	req.scope = "email:send calendar:read";
	check(mint_token(key, &req, &tok, jti, NULL, &err) == -EACCES);
	req.scope = "email";
	check(mint_token(key, &req, &tok, jti, NULL, &err) == -EACCES);
	req = request();
	req.audience = "https://evil.example";
	check(mint_token(key, &req, &tok, jti, NULL, &err) == -EACCES);
	check_str(err.msg, "audience \"https://evil.example\" is not in the grant's resource");
	req.audience = "https://mail.internal/";
	check(mint_token(key, &req, &tok, jti, NULL, &err) == -EACCES);
	check(!tok);
	req = request();
	req.agent = "agent:other";
	check(mint_token(key, &req, &tok, jti, NULL, &err) == -EACCES);
	check_str(err.msg, "agent \"agent:other\" is not the grant's may_act");
	req = request();
	req.htm = "PO ST";
	check(mint_token(key, &req, &tok, jti, NULL, &err) == -EINVAL);
	req = request();
	req.htu = "https://x/\n";
	check(mint_token(key, &req, &tok, jti, NULL, &err) == -EINVAL);
	check(!tok);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void jti_unique(void)
{
	enum { N = 5000 };
	struct mint_request req = request();
	struct dp_err err = {""};
	char **jtis = calloc(N, sizeof(*jtis)), *tok;

	for (int i = 0; i < N; i++) {
		jtis[i] = malloc(DP_ID_LEN);
		if (mint_token(key, &req, &tok, jtis[i], NULL, &err))
			fail("mint %d: %s", i, err.msg);
		free(tok);
	}
	qsort(jtis, N, sizeof(*jtis), cmp_str);
	for (int i = 1; i < N; i++)
		if (strcmp(jtis[i - 1], jtis[i]) == 0)
			fail("jti %s repeated", jtis[i]);
	for (int i = 0; i < N; i++)
		free(jtis[i]);
	free(jtis);
}

static void htu_cases(void)
{
	static const struct {
		const char *scheme, *host;
		int port;
		const char *target, *want;
	} cases[] = {
	    {"https", "Mail.Internal", 443, "/api/send?x=1", "https://mail.internal/api/send"},
	    {"HTTP", "example.com", 80, "/", "http://example.com/"},
	    {"http", "example.com", 8080, "/a#frag", "http://example.com:8080/a"},
	    {"https", "example.com", 80, "/", "https://example.com:80/"},
	    {"https", "example.com", 0, "/x", "https://example.com/x"},
	    {"https", "::1", 8443, "/p", "https://[::1]:8443/p"},
	    {"https", "[::1]", 443, "/p", "https://[::1]/p"},
	    {"https", "2001:DB8::1", 443, "/", "https://[2001:db8::1]/"},
	    {"https", "h", 443, "https://h/x/y?q", "https://h/x/y"},
	    {"https", "h", 443, "HTTP://h:443?q", "https://h/"},
	    {"https", "h", 443, "", "https://h/"},
	    {"https", "h", 443, NULL, "https://h/"},
	    {"https", "h", 443, "/a b/\xc3\xbc", "https://h/a%20b/%C3%BC"},
	    {"https", "h", 443, "/%41/Case", "https://h/%41/Case"},
	};
	static const struct {
		const char *scheme, *host;
		int port;
		const char *target;
	} bad[] = {
	    {"ftp", "h", 21, "/"},	{"https", "h", 443, "*"}, {"https", "h", 443, "h:443"},
	    {"https", "a/b", 443, "/"}, {"https", "", 443, "/"},  {"https", "a b", 443, "/"},
	    {"https", "h", 70000, "/"},
	};
	char out[128];

	for (size_t i = 0; i < DP_ARRAY_SIZE(cases); i++) {
		int r = mint_htu(cases[i].scheme, cases[i].host, cases[i].port, cases[i].target,
				 out, sizeof(out));

		if (r)
			fail("case %zu: %d", i, r);
		if (strcmp(out, cases[i].want) != 0)
			fail("case %zu: \"%s\", want \"%s\"", i, out, cases[i].want);
	}
	for (size_t i = 0; i < DP_ARRAY_SIZE(bad); i++)
		if (mint_htu(bad[i].scheme, bad[i].host, bad[i].port, bad[i].target, out,
			     sizeof(out)) != -EINVAL)
			fail("bad case %zu accepted", i);
	check(mint_htu("https", "example.com", 443, "/long/path", out, 20) == -ENOSPC);
}

int main(void)
{
	struct dp_err err = {""};

	dp_log_init("test_mint", DP_LOG_WARN);
	now = dp_now();
	key = dp_key_load_private_pem(th_write_key("EC", "deputyd"), &err);
	if (!key) {
		printf("FAIL: setup: %s\n", err.msg);
		return 1;
	}
	grant.exp = now + 3600;
	jwks = dp_key_jwks_json(key);
	RUN(claims_exact);
	RUN(session_binding_omits_htm_htu);
	RUN(verifies_with_public_api);
	RUN(strings_are_escaped);
	RUN(exp_capped_at_grant_exp);
	RUN(refuses_outside_grant);
	RUN(jti_unique);
	RUN(htu_cases);
	free(jwks);
	dp_key_free(key);
	th_cleanup();
	UNIT_EXIT();
}
