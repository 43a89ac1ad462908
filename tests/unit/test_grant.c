// SPDX-License-Identifier: MIT
/* Unit tests of daemon/grant.c: every refusal with its exact reason, and an accepted grant. */
#include <errno.h>
#include <sys/stat.h>

#include "grant.h"
#include "jwks_fetch.h"
#include "jwt_helpers.h"
#include "unit.h"

#define ISS "https://idp.test"
#define ISS_RSA "https://rsa-idp.test"
#define AUD "https://deputy.test"
#define AGENT "agent:mailbot"

static struct dp_key *idp_ec, *idp_rsa, *stranger;
static const char *idp_ec_path;
static char jwks_ec_path[256], jwks_rsa_path[256];
static struct dp_trust *trust;
static int64_t now;
static int64_t trust_made; /* dp_now() right after trust_new: the keys' load time, or later */

static void write_jwks(const char *path, const struct dp_key *key)
{
	char *j = dp_key_jwks_json(key);

	if (!j || dp_write_file_atomic(path, j, strlen(j), 0644)) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	free(j);
}

static void setup(void)
{
	static struct dp_trusted_issuer issuers[2];
	static struct dp_config cfg;
	struct dp_err err = {""};

	now = dp_now();
	idp_ec_path = strdup(th_write_key("EC", "idp-ec"));
	idp_ec = dp_key_load_private_pem(idp_ec_path, &err);
	idp_rsa = dp_key_load_private_pem(th_write_key("RSA", "idp-rsa"), &err);
	stranger = dp_key_load_private_pem(th_write_key("EC", "stranger"), &err);
	if (!idp_ec || !idp_rsa || !stranger) {
		fprintf(stderr, "keys: %s\n", err.msg);
		exit(1);
	}
	snprintf(jwks_ec_path, sizeof(jwks_ec_path), "%s/idp-ec.jwks", th_tmpdir());
	snprintf(jwks_rsa_path, sizeof(jwks_rsa_path), "%s/idp-rsa.jwks", th_tmpdir());
	write_jwks(jwks_ec_path, idp_ec);
	write_jwks(jwks_rsa_path, idp_rsa);
	issuers[0] = (struct dp_trusted_issuer){.issuer = ISS, .jwks_file = jwks_ec_path};
	issuers[1] = (struct dp_trusted_issuer){.issuer = ISS_RSA, .jwks_file = jwks_rsa_path};
	cfg.issuer = AUD;
	cfg.issuers = issuers;
	cfg.n_issuers = 2;
	trust = trust_new(&cfg, &err);
	trust_made = dp_now();
	if (!trust) {
		fprintf(stderr, "trust_new: %s\n", err.msg);
		exit(1);
	}
}

/* A good grant's claims; each test breaks one thing. */
static json_t *claims_ok(const char *iss)
{
	return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:[s,s], s:{s:s}}", "iss", iss, "sub",
			 "alice@example.com", "aud", AUD, "iat", (json_int_t)now, "exp",
			 (json_int_t)(now + 3600), "jti", "grant-1", "scope",
			 "email:send calendar:read", "resource", "https://mail.internal",
			 "https://cal.internal", "may_act", "sub", AGENT);
}

static char *sign_claims(const struct dp_key *key, json_t *claims)
{
	struct dp_err err = {""};
	char *tok = dp_jws_sign(key, "JWT", claims, &err);

	json_decref(claims);
	if (!tok) {
		fprintf(stderr, "sign: %s\n", err.msg);
		exit(1);
	}
	return tok;
}

/* Verifies tok (taking it) and returns the reason, "" when accepted. */
static const char *reason_at(char *tok, int64_t at)
{
	static struct dp_err err;
	struct dp_grant *g = NULL;
	int r;

	err.msg[0] = '\0';
	r = grant_verify(trust, tok, AUD, AGENT, at, &g, &err);
	free(tok);
	grant_free(g);
	if (r == 0)
		return "";
	if (!err.msg[0])
		return "(refused without a reason)";
	return err.msg;
}

static const char *reason(char *tok)
{
	return reason_at(tok, now);
}

static const char *reason_of_claims(json_t *claims)
{
	return reason(sign_claims(idp_ec, claims));
}

static void accepted_fields(void)
{
	struct dp_err err = {""};
	struct dp_grant *g = NULL;
	char *tok = sign_claims(idp_ec, claims_ok(ISS));

	if (grant_verify(trust, tok, AUD, AGENT, now, &g, &err))
		fail("refused: %s", err.msg);
	check_str(g->token, tok);
	check_str(g->iss, ISS);
	check_str(g->sub, "alice@example.com");
	check_str(g->jti, "grant-1");
	check_str(g->agent, AGENT);
	check(g->n_scopes == 2);
	check_str(g->scopes[0], "email:send");
	check_str(g->scopes[1], "calendar:read");
	check(g->n_resources == 2);
	check_str(g->resources[1], "https://cal.internal");
	check(g->iat == now && g->exp == now + 3600);
	check(grant_has_scope(g, "calendar:read"));
	check(!grant_has_scope(g, "calendar"));
	check(grant_has_resource(g, "https://mail.internal"));
	check(!grant_has_resource(g, "https://mail.internal/"));
	grant_free(g);
	free(tok);
}

static void accepted_rs256_and_aud_array(void)
{
	json_t *c = claims_ok(ISS_RSA);

	json_object_set_new(c, "aud", json_pack("[s,s]", "https://other", AUD));
	check_str(reason(sign_claims(idp_rsa, c)), "");
}

static void accepted_within_skew(void)
{
	json_t *c = claims_ok(ISS);

	json_object_set_new(c, "iat", json_integer(now + 30));
	json_object_set_new(c, "nbf", json_integer(now + 30));
	check_str(reason_of_claims(c), "");
}

static void refuses_oversized(void)
{
	size_t n = DP_JWS_MAX_LEN + 1;
	char *big = malloc(n + 1);

	memset(big, 'A', n);
	big[5] = big[10] = '.';
	big[n] = '\0';
	check_str(reason(big), "grant too large (over 16384 bytes)");
}

static void refuses_malformed(void)
{
	check_str(reason(strdup("not-a-jwt")), "malformed grant: not a compact JWS (need 3 parts)");
	check_str(reason(strdup("e30.e3.")), "malformed grant: bad base64url in payload");
	check_str(reason(strdup("eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.")),
		  "malformed grant: payload is not JSON");
	check_str(reason(strdup("eyJhbGciOiJFUzI1NiJ9.WzFd.")),
		  "malformed grant: payload is not a JSON object");
}

static void refuses_unknown_issuer(void)
{
	check_str(reason_of_claims(claims_ok("https://evil.example")),
		  "unknown issuer \"https://evil.example\"");
	/* control bytes in a reason would forge log lines */
	check_str(reason_of_claims(claims_ok("evil\n\x1b[31mred")),
		  "unknown issuer \"evil??[31mred\"");
	check_str(reason_of_claims(json_pack("{s:s}", "sub", "x")), "grant has no iss");
}

static void refuses_kid_problems(void)
{
	char hdr[256];
	json_t *c = claims_ok(ISS);
	char *payload = json_dumps(c, JSON_COMPACT);

	json_decref(c);
	check_str(reason(th_craft("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", payload, "sig", 3)),
		  "grant has no kid");
	check_str(reason(th_craft("{\"alg\":\"ES256\",\"kid\":\"zzz\"}", payload, "sig", 3)),
		  "unknown kid \"zzz\" for issuer \"" ISS "\"");
	/* the RSA issuer's kid is not the EC issuer's: keys are per issuer */
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"RS256\",\"kid\":\"%s\"}", dp_key_kid(idp_rsa));
	{
		char want[256];

		snprintf(want, sizeof(want), "unknown kid \"%s\" for issuer \"%s\"",
			 dp_key_kid(idp_rsa), ISS);
		check_str(reason(th_craft(hdr, payload, "sig", 3)), want);
	}
	free(payload);
}

static void refuses_alg_none(void)
{
	json_t *c = claims_ok(ISS);
	char *payload = json_dumps(c, JSON_COMPACT);

	json_decref(c);
	check_str(reason(th_craft("{\"alg\":\"none\"}", payload, "", 0)),
		  "grant alg \"none\" refused (unsigned)");
	check_str(reason(th_craft("{\"alg\":\"NONE\",\"kid\":\"x\"}", payload, "", 0)),
		  "grant alg \"none\" refused (unsigned)");
	free(payload);
}

static void refuses_hmac(void)
{
	json_t *c = claims_ok(ISS);
	char *payload = json_dumps(c, JSON_COMPACT), *pem = th_public_pem(idp_ec_path), hdr[256];

	json_decref(c);
	/* HS256 keyed with the issuer's public key PEM: accepted by libraries that let the token
	 * choose the algorithm; refused here before any key is touched. */
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
		 dp_key_kid(idp_ec));
	check_str(reason(th_hs256(hdr, payload, pem, strlen(pem))),
		  "grant HMAC alg \"HS256\" refused (issuers sign with keys)");
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS512\",\"kid\":\"%s\"}", dp_key_kid(idp_ec));
	check_str(reason(th_hs256(hdr, payload, "secret", 6)),
		  "grant HMAC alg \"HS512\" refused (issuers sign with keys)");
	free(payload);
	free(pem);
}

static void refuses_alg_mismatch(void)
{
	json_t *c = claims_ok(ISS);
	char *payload = json_dumps(c, JSON_COMPACT), hdr[256];

	json_decref(c);
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"RS256\",\"kid\":\"%s\"}", dp_key_kid(idp_ec));
	check_str(reason(th_craft(hdr, payload, "sig", 3)),
		  "grant alg \"RS256\" does not match the key's ES256");
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"PS256\",\"kid\":\"%s\"}", dp_key_kid(idp_ec));
	check_str(reason(th_craft(hdr, payload, "sig", 3)),
		  "grant alg \"PS256\" does not match the key's ES256");
	free(payload);
}

static void refuses_bad_signature(void)
{
	char *tok = sign_claims(idp_ec, claims_ok(ISS)), *bad;
	json_t *c = claims_ok(ISS);
	char *payload;

	/* the user's scope widened after signing */
	json_object_set_new(c, "scope", json_string("email:send email:delete"));
	payload = json_dumps(c, JSON_COMPACT);
	json_decref(c);
	bad = th_swap_payload(tok, payload);
	check_str(reason(bad), "bad grant signature");
	free(payload);
	free(tok);
}

static void refuses_other_key_same_kid(void)
{
	/* signed by a stranger's key but naming the issuer's kid */
	struct dp_err err = {""};
	json_t *c = claims_ok(ISS);
	char *payload = json_dumps(c, JSON_COMPACT), *tok, *hdr_b64, *forged;
	size_t n;

	json_decref(c);
	tok = dp_jws_sign_raw(stranger, "JWT", payload, strlen(payload), &err);
	check(tok);
	{
		char hdr[256];

		snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
			 dp_key_kid(idp_ec));
		hdr_b64 = th_b64(hdr, strlen(hdr));
	}
	n = strlen(hdr_b64) + strlen(tok) + 1;
	forged = malloc(n);
	snprintf(forged, n, "%s%s", hdr_b64, strchr(tok, '.'));
	check_str(reason(forged), "bad grant signature");
	free(hdr_b64);
	free(tok);
	free(payload);
}

static void refuses_times(void)
{
	json_t *c = claims_ok(ISS);

	json_object_set_new(c, "exp", json_integer(now - 1));
	check_str(reason_of_claims(c), "grant expired");
	c = claims_ok(ISS);
	json_object_set_new(c, "exp", json_integer(now));
	check_str(reason_of_claims(c), "grant expired");
	c = claims_ok(ISS);
	json_object_set_new(c, "nbf", json_integer(now + 61));
	check_str(reason_of_claims(c), "grant not yet valid (nbf in the future)");
	c = claims_ok(ISS);
	json_object_set_new(c, "iat", json_integer(now + 3000));
	check_str(reason_of_claims(c), "grant not yet valid (iat in the future)");
	c = claims_ok(ISS);
	json_object_del(c, "exp");
	check_str(reason_of_claims(c), "grant has no exp");
	c = claims_ok(ISS);
	json_object_set_new(c, "exp", json_string("tomorrow"));
	check_str(reason_of_claims(c), "grant exp is not a number");
	/* a grant valid now is refused once its time has passed */
	check_str(reason_at(sign_claims(idp_ec, claims_ok(ISS)), now + 3600), "grant expired");
}

/* The one skew of claims.c (shared with the token verifier): exactly DP_CLOCK_SKEW seconds
 * ahead is tolerated, one more is not; a time that is not a number is its own refusal. */
static void skew_boundary_and_non_numbers(void)
{
	static const char *const names[] = {"nbf", "iat"};

	for (size_t i = 0; i < DP_ARRAY_SIZE(names); i++) {
		char want[64];
		json_t *c = claims_ok(ISS);

		json_object_set_new(c, names[i], json_integer(now + DP_CLOCK_SKEW));
		check_str(reason_of_claims(c), "");
		c = claims_ok(ISS);
		json_object_set_new(c, names[i], json_integer(now + DP_CLOCK_SKEW + 1));
		snprintf(want, sizeof(want), "grant not yet valid (%s in the future)", names[i]);
		check_str(reason_of_claims(c), want);
		c = claims_ok(ISS);
		json_object_set_new(c, names[i], json_string("soon"));
		snprintf(want, sizeof(want), "grant %s is not a number", names[i]);
		check_str(reason_of_claims(c), want);
	}
}

static void refuses_audience(void)
{
	json_t *c = claims_ok(ISS);

	json_object_set_new(c, "aud", json_string("https://other-deputy.test"));
	check_str(reason_of_claims(c), "grant audience is not \"" AUD "\"");
	c = claims_ok(ISS);
	json_object_set_new(c, "aud", json_pack("[s]", "https://other-deputy.test"));
	check_str(reason_of_claims(c), "grant audience is not \"" AUD "\"");
	c = claims_ok(ISS);
	json_object_set_new(c, "aud", json_integer(1));
	check_str(reason_of_claims(c), "grant audience is not \"" AUD "\"");
	c = claims_ok(ISS);
	json_object_del(c, "aud");
	check_str(reason_of_claims(c), "grant has no aud");
}

static void refuses_missing_claims(void)
{
	json_t *c = claims_ok(ISS);

	json_object_del(c, "sub");
	check_str(reason_of_claims(c), "grant has no sub (user)");
	c = claims_ok(ISS);
	json_object_set_new(c, "sub", json_integer(5));
	check_str(reason_of_claims(c), "grant has no sub (user)");
	c = claims_ok(ISS);
	json_object_set_new(c, "jti", json_integer(7));
	check_str(reason_of_claims(c), "grant jti is not a non-empty string");
}

static void refuses_agent(void)
{
	struct dp_err err = {""};
	struct dp_grant *g = NULL;
	char *tok = sign_claims(idp_ec, claims_ok(ISS));
	json_t *c;

	check(grant_verify(trust, tok, AUD, "agent:other", now, &g, &err) == -EACCES);
	check(!g);
	check_str(err.msg, "agent \"agent:other\" is not in the grant's may_act (\"" AGENT "\")");
	/* the bare name is not the agent id */
	check(grant_verify(trust, tok, AUD, "mailbot", now, &g, &err) == -EACCES);
	free(tok);
	c = claims_ok(ISS);
	json_object_del(c, "may_act");
	check_str(reason_of_claims(c), "grant has no may_act.sub (no agent may act)");
	c = claims_ok(ISS);
	json_object_set_new(c, "may_act", json_string(AGENT));
	check_str(reason_of_claims(c), "grant has no may_act.sub (no agent may act)");
}

static void refuses_scope_resource_types(void)
{
	json_t *c = claims_ok(ISS);

	json_object_set_new(c, "scope", json_pack("[s,i]", "email:send", 1));
	check_str(reason_of_claims(c),
		  "grant scope is not a space-separated string or an array of strings");
	c = claims_ok(ISS);
	json_object_set_new(c, "scope", json_pack("[s]", "email:send calendar:read"));
	check_str(reason_of_claims(c),
		  "grant scope is not a space-separated string or an array of strings");
	c = claims_ok(ISS);
	json_object_del(c, "scope");
	check_str(reason_of_claims(c), "grant has no scope (expected the scopes the user allows)");
	c = claims_ok(ISS);
	json_object_set_new(c, "scp", json_pack("[s]", "email:send"));
	check_str(reason_of_claims(c), "grant has both scope and scp (expected one of them)");
	c = claims_ok(ISS);
	json_object_set_new(c, "resource", json_pack("[s,i]", "https://mail.internal", 1));
	check_str(reason_of_claims(c), "grant resource is not a string or an array of strings");
	c = claims_ok(ISS);
	json_object_set_new(c, "resource", json_string("https://a https://b"));
	check_str(reason_of_claims(c), "grant resource is not a string or an array of strings");
	c = claims_ok(ISS);
	json_object_set_new(c, "resource", json_object());
	check_str(reason_of_claims(c), "grant resource is not a string or an array of strings");
	c = claims_ok(ISS);
	json_object_del(c, "resource");
	check_str(reason_of_claims(c),
		  "grant has no resource (expected the API base URIs the user allows)");
}

/* Verifies claims signed by idp_ec with trust t; the grant (or NULL) and the reason. */
static struct dp_grant *verify_with(struct dp_trust *t, json_t *claims, const char *agent,
				    struct dp_err *err)
{
	char *tok = sign_claims(idp_ec, claims);
	struct dp_grant *g = NULL;

	err->msg[0] = '\0';
	if (grant_verify(t, tok, AUD, agent, now, &g, err) && !err->msg[0])
		snprintf(err->msg, sizeof(err->msg), "(refused without a reason)");
	free(tok);
	return g;
}

/* The shapes IdPs emit: Okta's scp array, Entra's scp string and missing jti, one resource
 * as a string, an array of one scope each. */
static void accepted_idp_shapes(void)
{
	struct dp_err err = {""};
	struct dp_grant *g, *g2;
	json_t *c = claims_ok(ISS);
	char *tok;

	json_object_del(c, "scope");
	json_object_set_new(c, "scp", json_pack("[s,s]", "email:send", "calendar:read"));
	json_object_set_new(c, "resource", json_string("https://mail.internal"));
	g = verify_with(trust, c, AGENT, &err);
	if (!g)
		fail("Okta shape refused: %s", err.msg);
	check(g->n_scopes == 2 && grant_has_scope(g, "calendar:read"));
	check(g->n_resources == 1 && grant_has_resource(g, "https://mail.internal"));
	grant_free(g);

	c = claims_ok(ISS);
	json_object_del(c, "scope");
	json_object_del(c, "jti");
	json_object_set_new(c, "scp", json_string("email:send  calendar:read"));
	tok = sign_claims(idp_ec, c);
	g = g2 = NULL;
	if (grant_verify(trust, tok, AUD, AGENT, now, &g, &err) ||
	    grant_verify(trust, tok, AUD, AGENT, now, &g2, &err))
		fail("Entra shape refused: %s", err.msg);
	check(g->n_scopes == 2 && grant_has_scope(g, "email:send"));
	/* no jti: an id from the token's hash, the same for the same token */
	check(strncmp(g->jti, "sha256:", 7) == 0 && strlen(g->jti) == 7 + 43);
	check_str(g->jti, g2->jti);
	grant_free(g);
	grant_free(g2);
	free(tok);
}

/* "claims" renames what deputy reads; it never loosens a check. */
static void claims_mapping(void)
{
	struct dp_trusted_issuer ti = {.issuer = ISS, .jwks_file = jwks_ec_path};
	struct dp_config cfg = {.issuer = AUD, .issuers = &ti, .n_issuers = 1};
	struct dp_err err = {""};
	struct dp_trust *t;
	struct dp_grant *g;
	json_t *c;

	ti.claims[DP_CLAIM_AGENT] = "azp";
	ti.claims[DP_CLAIM_SUB] = "upn";
	ti.claims[DP_CLAIM_SCOPE] = "roles";
	t = trust_new(&cfg, &err);
	if (!t)
		fail("trust_new: %s", err.msg);
	c = claims_ok(ISS);
	json_object_del(c, "may_act");
	json_object_set_new(c, "azp", json_string("mailbot"));
	json_object_set_new(c, "upn", json_string("alice@corp"));
	json_object_set_new(c, "roles", json_pack("[s]", "email:send"));
	g = verify_with(t, c, AGENT, &err);
	if (!g)
		fail("mapped grant refused: %s", err.msg);
	check_str(g->agent, AGENT);
	check_str(g->sub, "alice@corp");
	check(g->n_scopes == 1 && grant_has_scope(g, "email:send"));
	check(!grant_has_scope(g, "calendar:read")); /* "scope" is not read any more */
	grant_free(g);

	/* the agent check stays exact: another client, or only may_act, is refused */
	c = claims_ok(ISS);
	json_object_set_new(c, "azp", json_string("otherbot"));
	json_object_set_new(c, "upn", json_string("alice@corp"));
	json_object_set_new(c, "roles", json_string("email:send"));
	check(!verify_with(t, c, AGENT, &err));
	check_str(err.msg, "agent \"" AGENT "\" is not in the grant's azp (\"agent:otherbot\")");
	c = claims_ok(ISS);
	json_object_set_new(c, "upn", json_string("alice@corp"));
	json_object_set_new(c, "roles", json_string("email:send"));
	check(!verify_with(t, c, AGENT, &err));
	check_str(err.msg, "grant has no azp (expected the agent, per claims.agent)");
	c = claims_ok(ISS);
	json_object_set_new(c, "azp", json_pack("{s:s}", "sub", AGENT));
	json_object_set_new(c, "roles", json_string("email:send"));
	check(!verify_with(t, c, AGENT, &err));
	check_str(err.msg, "grant has no upn (user)");
	/* and the registered claims are checked whatever is mapped */
	c = claims_ok(ISS);
	json_object_set_new(c, "azp", json_string("mailbot"));
	json_object_set_new(c, "upn", json_string("alice@corp"));
	json_object_set_new(c, "roles", json_string("email:send"));
	json_object_set_new(c, "aud", json_string("https://other"));
	check(!verify_with(t, c, AGENT, &err));
	check(strstr(err.msg, "aud"));
	trust_free(t);
}

static void key_rotation_refetch_is_rate_limited(void)
{
	struct dp_err err = {""};
	struct dp_key *next = dp_key_load_private_pem(th_write_key("EC", "idp-next"), &err);
	char *tok;

	check(next);
	write_jwks(jwks_ec_path, next); /* the IdP rotated */
	tok = sign_claims(next, claims_ok(ISS));
	/* within 30 s of the last load (at or before trust_made): the new kid is unknown */
	check(strstr(reason_at(strdup(tok), trust_made), "unknown kid"));
	/* later, the unknown kid makes the keys be read again */
	check_str(reason_at(strdup(tok), trust_made + 31), "");
	free(tok);
	/* the old key is gone from the new set, and the next reload is 30 s away */
	check(
	    strstr(reason_at(sign_claims(idp_ec, claims_ok(ISS)), trust_made + 32), "unknown kid"));
	write_jwks(jwks_ec_path, idp_ec);
	check_str(reason_at(sign_claims(idp_ec, claims_ok(ISS)), trust_made + 62), "");
	dp_key_free(next);
}

/* An unreadable jwks_file is a configuration error; an unreachable jwks_uri is not. */
static void trust_missing_jwks_file_fails_uri_survives(void)
{
	struct dp_trusted_issuer ti = {.issuer = ISS, .jwks_file = "/nonexistent/jwks.json"};
	struct dp_config cfg = {.issuer = AUD, .issuers = &ti, .n_issuers = 1};
	struct dp_err err = {""};
	struct dp_trust *t = trust_new(&cfg, &err);
	struct dp_grant *g = NULL;
	char *tok;

	check(!t);
	check(strstr(err.msg, "trusted_issuers[0].jwks_file") && strstr(err.msg, "nonexistent"));
	ti.jwks_file = NULL;
	ti.jwks_uri = "http://127.0.0.1:1/jwks"; /* loopback, nothing listens on port 1 */
	t = trust_new(&cfg, &err);
	check(t);
	tok = sign_claims(idp_ec, claims_ok(ISS));
	check(grant_verify(t, tok, AUD, AGENT, now, &g, &err) == -EACCES);
	check(strstr(err.msg, "unknown kid"));
	free(tok);
	trust_free(t);
}

/* Deferred: grant_verify never fetches a jwks_uri but says so; the caller's fetch result
 * (trust_fetch_take, trust_fetch_done) is what the next verification uses. */
static void deferred_fetch_is_the_callers(void)
{
	struct dp_trusted_issuer ti = {.issuer = ISS, .jwks_uri = "http://127.0.0.1:1/jwks"};
	struct dp_config cfg = {.issuer = AUD, .issuers = &ti, .n_issuers = 1};
	struct dp_err err = {""};
	struct dp_trust *t = trust_new(&cfg, &err), *t2;
	struct dp_grant *g = NULL;
	char *tok = sign_claims(idp_ec, claims_ok(ISS));
	struct trust_fetch f, f2;
	int64_t at = dp_now() + 31;

	check(t);
	trust_defer_fetches(t);
	check(trust_fetch_take(t, &f2) == 0); /* nothing asked for yet */
	check(grant_verify(t, tok, AUD, AGENT, at, &g, &err) == -EINPROGRESS);
	check(strstr(err.msg, "being fetched"));
	check(trust_fetch_take(t, &f) == 1);
	check_str(f.issuer, ISS);
	check_str(f.source, ti.jwks_uri);
	check(!f.discovery);
	check(trust_fetch_take(t, &f2) == 0); /* taken once */
	/* while the fetch runs, the grant still waits, even within the 30 s */
	check(grant_verify(t, tok, AUD, AGENT, at + 1, &g, &err) == -EINPROGRESS);
	trust_fetch_done(t, f.issuer, f.source, jwks_load(jwks_ec_path, &err));
	check(grant_verify(t, tok, AUD, AGENT, at + 1, &g, &err) == 0);
	grant_free(g);
	g = NULL;
	/* a reload keeps the keys fetched for the same issuer and source, fetches nothing */
	t2 = trust_new_deferred(&cfg, t, &err);
	check(t2);
	trust_fetch_clear(&f);
	check(trust_fetch_take(t2, &f2) == 0);
	check(grant_verify(t2, tok, AUD, AGENT, at + 1, &g, &err) == 0);
	grant_free(g);
	trust_free(t2);
	trust_free(t);
	free(tok);
}

static void trust_refuses_plain_http(void)
{
	struct dp_trusted_issuer ti = {.issuer = ISS, .jwks_uri = "http://idp.example/jwks"};
	struct dp_config cfg = {.issuer = AUD, .issuers = &ti, .n_issuers = 1};
	struct dp_err err = {""};

	check(!trust_new(&cfg, &err));
	check(strstr(err.msg, "must be https://"));
	ti.jwks_uri = "http://127.0.0.1@idp.example/jwks";
	check(!trust_new(&cfg, &err));
}

int main(void)
{
	dp_log_init("test_grant", DP_LOG_WARN);
	setup();
	RUN(accepted_fields);
	RUN(accepted_rs256_and_aud_array);
	RUN(accepted_within_skew);
	RUN(refuses_oversized);
	RUN(refuses_malformed);
	RUN(refuses_unknown_issuer);
	RUN(refuses_kid_problems);
	RUN(refuses_alg_none);
	RUN(refuses_hmac);
	RUN(refuses_alg_mismatch);
	RUN(refuses_bad_signature);
	RUN(refuses_other_key_same_kid);
	RUN(refuses_times);
	RUN(skew_boundary_and_non_numbers);
	RUN(refuses_audience);
	RUN(refuses_missing_claims);
	RUN(refuses_agent);
	RUN(refuses_scope_resource_types);
	RUN(accepted_idp_shapes);
	RUN(claims_mapping);
	RUN(key_rotation_refetch_is_rate_limited);
	RUN(trust_missing_jwks_file_fails_uri_survives);
	RUN(trust_refuses_plain_http);
	RUN(deferred_fetch_is_the_callers);
	trust_free(trust);
	dp_key_free(idp_ec);
	dp_key_free(idp_rsa);
	dp_key_free(stranger);
	free((char *)idp_ec_path);
	th_cleanup();
	UNIT_EXIT();
}
