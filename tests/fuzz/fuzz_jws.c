// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for everything that reads token bytes from outside: the JWS parser and
 * verifier, JWKS parsing, grant verification (claims included, with and without an issuer's
 * claim mapping), the public token verifier, htu normalisation and issuer discovery
 * documents. The first input byte picks the entry point, the rest is the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.c"
#include "jwk.c"
#include "key.c"
#include "keyset.c"
#include "jws.c"
#include "claims.c"
#include "url.c"
#include "urlpath.c"
#include "jwks_fetch.c"
#include "grant.c"
#include "jsonw.c"
#include "httphead.c"
#include "mint.c"
#include "verify.c"

#include "fuzz_key.h"

#define FUZZ_ISS "https://idp.fuzz"
#define FUZZ_AUD "https://deputy.fuzz"
#define FUZZ_AGENT "agent:fuzz"

static struct dp_key *fuzz_key;
static char *fuzz_jwks;
static struct dp_trust *fuzz_trust, *fuzz_trust_mapped;
static deputy_verifier *fuzz_verifier;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static struct dp_trusted_issuer ti, tm;
	static struct dp_config cfg, cfgm;
	struct dp_err err = {""};
	char why[256];

	dp_log_init("fuzz_jws", DP_LOG_WARN);
	fuzz_key = fuzz_key_new();
	fuzz_jwks = dp_key_jwks_json(fuzz_key);
	/* jwks_load takes inline JSON, so the trusted issuer needs no file */
	ti.issuer = FUZZ_ISS;
	ti.jwks_file = fuzz_jwks;
	cfg.issuer = FUZZ_AUD;
	cfg.issuers = &ti;
	cfg.n_issuers = 1;
	fuzz_trust = trust_new(&cfg, &err);
	/* an IdP's names for the claims: Entra-like */
	tm = ti;
	tm.claims[DP_CLAIM_AGENT] = "azp";
	tm.claims[DP_CLAIM_SUB] = "oid";
	tm.claims[DP_CLAIM_SCOPE] = "scp";
	cfgm = cfg;
	cfgm.issuers = &tm;
	fuzz_trust_mapped = trust_new(&cfgm, &err);
	fuzz_verifier = deputy_verifier_new(fuzz_jwks, why, sizeof(why));
	if (!fuzz_trust || !fuzz_trust_mapped || !fuzz_verifier)
		abort();
	return 0;
}

/* A refusal's reason is printed as one line. */
static void fuzz_reason(const char *why)
{
	if (!why[0] || strchr(why, '\n') || strchr(why, '\r'))
		abort();
}

/* Whatever claims parse, signed by deputy's writer, parse and verify again, unchanged. */
static void fuzz_resign(const json_t *claims)
{
	struct dp_err err = {""};
	char *tok = dp_jws_sign(fuzz_key, "at+jwt", claims, &err);
	struct dp_jws back;

	if (!tok)
		return; /* claims too large for a JWS */
	if (dp_jws_parse(tok, &back, &err) != 0 || dp_jws_verify(&back, fuzz_key, &err) != 0 ||
	    !json_equal(back.claims, claims))
		abort();
	dp_jws_clear(&back);
	free(tok);
}

static void fuzz_parse_verify(const char *s)
{
	struct dp_err err = {""};
	struct dp_jws jws;

	if (dp_jws_parse(s, &jws, &err) != 0) {
		fuzz_reason(err.msg);
		return;
	}
	if (dp_jws_verify(&jws, fuzz_key, &err) != 0)
		fuzz_reason(err.msg);
	fuzz_resign(jws.claims);
	dp_jws_clear(&jws);
}

static void fuzz_grant(const char *s)
{
	struct dp_err err = {""};
	struct dp_grant *g = NULL;

	/* a fixed "now" keeps runs reproducible, and no unknown kid triggers a reload */
	if (grant_verify(fuzz_trust, s, FUZZ_AUD, FUZZ_AGENT, 1700000000, &g, &err) == 0) {
		if (!g || !g->sub || !g->sub[0] || !g->agent || strcmp(g->agent, FUZZ_AGENT) != 0)
			abort();
		grant_free(g);
	} else {
		fuzz_reason(err.msg);
	}
}

/* Accepted claims name deputyd as their audience, and give a user, an id and the agent. */
static void fuzz_claims_with(const json_t *c, struct dp_trust *t)
{
	struct dp_err err = {""};
	struct dp_grant *g = calloc(1, sizeof(*g));

	if (!g)
		return;
	if (grant_read_claims(c, &t->issuers[0], "token", FUZZ_AUD, FUZZ_AGENT, 1700000000, g,
			      &err) != 0) {
		fuzz_reason(err.msg);
	} else if (!dp_jwt_aud_has(c, FUZZ_AUD) || !g->sub || !g->sub[0] || !g->jti || !g->jti[0] ||
		   !g->agent || strcmp(g->agent, FUZZ_AGENT) != 0) {
		abort();
	}
	grant_free(g);
}

static void fuzz_claims(const char *s, size_t n)
{
	json_t *c = json_loadb(s, n, JSON_REJECT_DUPLICATES, NULL);

	if (json_is_object(c) && claim_str(c, "iss")) {
		fuzz_claims_with(c, fuzz_trust);
		fuzz_claims_with(c, fuzz_trust_mapped);
	}
	json_decref(c);
}

/* A discovery document accepted names exactly the issuer asked for, and a jwks_uri taken
 * from it is one deputy may fetch. */
static void fuzz_discovery(const char *s, size_t n)
{
	struct dp_err err = {""};
	const char *uri;
	json_t *meta;

	if (jwks_meta_parse(s, n, FUZZ_ISS, &meta, &err) != 0) {
		fuzz_reason(err.msg);
		return;
	}
	if (strcmp(json_string_value(json_object_get(meta, "issuer")) ?: "", FUZZ_ISS) != 0)
		abort();
	uri = jwks_meta_url(meta, "jwks_uri", &err);
	if (uri ? !jwks_url_allowed(uri) : (fuzz_reason(err.msg), false))
		abort();
	json_decref(meta);
}

static void fuzz_keyset(const char *s, size_t n)
{
	struct dp_err err = {""};
	struct dp_keyset *ks = dp_keyset_parse(s, n, &err);

	if (!ks) {
		fuzz_reason(err.msg);
		return;
	}
	/* every key accepted reads back from its own public JWK, with the same kid */
	for (size_t i = 0; i < ks->n; i++) {
		struct dp_key *k = dp_key_from_jwk(dp_key_jwk(ks->keys[i]), &err);

		if (!k || strcmp(dp_key_kid(k), dp_key_kid(ks->keys[i])) != 0 ||
		    dp_keyset_find(ks, dp_key_kid(k)) == NULL)
			abort();
		dp_key_free(k);
	}
	dp_keyset_free(ks);
}

static void fuzz_public_verify(const char *s)
{
	char why[256], *claims = NULL;

	if (deputy_verify(fuzz_verifier, s, FUZZ_AUD, "email:send", NULL, &claims, why,
			  sizeof(why)) == 0) {
		/* what a backend accepts is for it and carries the scope it asked for */
		json_t *c = json_loads(claims, 0, NULL);

		if (!c || !dp_jwt_aud_has(c, FUZZ_AUD) ||
		    !dp_scope_has(json_string_value(json_object_get(c, "scope")), "email:send"))
			abort();
		json_decref(c);
		free(claims);
	} else {
		fuzz_reason(why);
	}
}

static void fuzz_htu(const char *s)
{
	char out[256];

	if (mint_htu("https", "h.fuzz", 443, s, out, sizeof(out)) != 0)
		return;
	/* an htu is the origin and a path: no query, fragment, space or control byte */
	if (strncmp(out, "https://h.fuzz", 14) != 0 || strpbrk(out, "?# ") ||
	    (out[14] && out[14] != '/'))
		abort();
	for (const char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1)
		return 0;
	s = malloc(size);
	if (!s)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0] % 7) {
	case 0:
		fuzz_parse_verify(s);
		break;
	case 1:
		fuzz_grant(s);
		break;
	case 2:
		fuzz_claims(s, size - 1);
		break;
	case 3:
		fuzz_keyset(s, size - 1);
		break;
	case 4:
		fuzz_public_verify(s);
		break;
	case 5:
		fuzz_htu(s);
		break;
	case 6:
		fuzz_discovery(s, size - 1);
		break;
	}
	free(s);
	return 0;
}
