// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for everything that reads token bytes from outside: the JWS parser and
 * verifier, JWKS parsing, grant verification (claims included), the public token verifier
 * and htu normalisation. The first input byte picks the entry point, the rest is the input.
 *
 * The key below is a throwaway test key that signs nothing real: a fixed key lets seeds
 * carry validly signed grants, so the fuzzer reaches the claim checks behind the signature.
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
#include "jwks_fetch.c"
#include "grant.c"
#include "jsonw.c"
#include "httphead.c"
#include "mint.c"
#include "verify.c"

#define FUZZ_ISS "https://idp.fuzz"
#define FUZZ_AUD "https://deputy.fuzz"
#define FUZZ_AGENT "agent:fuzz"

static const char fuzz_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCEiEAJ0/SRlCGcp7\n"
	"80MvMMLNA+uHze2W73unyo6sSBmhRANCAAQVfIXsS02NlLBdi05tbblOeFQIgExx\n"
	"diFDa1fQ4hoBHBvOb0RAjS3UZKU4I/epFM9H6UpLgpP5gFnjp6/CVIB7\n"
	"-----END PRIVATE KEY-----\n";

static struct dp_key *fuzz_key;
static char *fuzz_jwks;
static struct dp_trust *fuzz_trust;
static deputy_verifier *fuzz_verifier;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static struct dp_trusted_issuer ti;
	static struct dp_config cfg;
	struct dp_err err = { "" };
	EVP_PKEY *pkey = pem_parse_private(fuzz_key_pem, sizeof(fuzz_key_pem) - 1);
	char why[256];

	dp_log_init("fuzz_jws", DP_LOG_WARN);
	fuzz_key = pkey ? key_wrap(pkey, true, NULL, &err) : NULL;
	if (!fuzz_key) {
		fprintf(stderr, "fuzz key: %s\n", err.msg);
		abort();
	}
	fuzz_jwks = dp_key_jwks_json(fuzz_key);
	/* jwks_load takes inline JSON, so the trusted issuer needs no file */
	ti.issuer = FUZZ_ISS;
	ti.jwks_file = fuzz_jwks;
	cfg.issuer = FUZZ_AUD;
	cfg.issuers = &ti;
	cfg.n_issuers = 1;
	fuzz_trust = trust_new(&cfg, &err);
	fuzz_verifier = deputy_verifier_new(fuzz_jwks, why, sizeof(why));
	if (!fuzz_trust || !fuzz_verifier)
		abort();
	return 0;
}

static void fuzz_parse_verify(const char *s)
{
	struct dp_err err = { "" };
	struct dp_jws jws;

	if (dp_jws_parse(s, &jws, &err) == 0) {
		(void)!dp_jws_verify(&jws, fuzz_key, &err);
		dp_jws_clear(&jws);
	}
}

static void fuzz_grant(const char *s)
{
	struct dp_err err = { "" };
	struct dp_grant *g = NULL;

	/* a fixed "now" keeps runs reproducible, and no unknown kid triggers a reload */
	if (grant_verify(fuzz_trust, s, FUZZ_AUD, FUZZ_AGENT, 1700000000, &g, &err) == 0) {
		if (!g || !g->sub || !g->agent)
			abort();
		grant_free(g);
	}
}

static void fuzz_claims(const char *s, size_t n)
{
	struct dp_err err = { "" };
	json_t *c = json_loadb(s, n, JSON_REJECT_DUPLICATES, NULL);
	struct dp_grant *g;

	if (!json_is_object(c)) {
		json_decref(c);
		return;
	}
	if (grant_check_claims(c, FUZZ_AUD, FUZZ_AGENT, 1700000000, &err) == 0 &&
	    claim_str(c, "iss")) {
		g = grant_from_claims(c, "token", &err);
		grant_free(g);
	}
	json_decref(c);
}

static void fuzz_keyset(const char *s, size_t n)
{
	struct dp_keyset *ks = dp_keyset_parse(s, n, NULL);

	dp_keyset_free(ks);
}

static void fuzz_public_verify(const char *s)
{
	char why[256], *claims = NULL;

	if (deputy_verify(fuzz_verifier, s, FUZZ_AUD, "email:send", NULL, &claims, why,
			  sizeof(why)) == 0)
		free(claims);
}

static void fuzz_htu(const char *s)
{
	char out[256];

	if (mint_htu("https", "h.fuzz", 443, s, out, sizeof(out)) == 0 &&
	    strlen(out) >= sizeof(out))
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
	switch (data[0] % 6) {
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
	}
	free(s);
	return 0;
}
