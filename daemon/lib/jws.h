/* SPDX-License-Identifier: MIT */
/*
 * jws: the only place that builds or parses a JWS (RFC 7515 compact form). OpenSSL EVP
 * directly: libjwt 1.10 cannot emit typ "at+jwt" and accepts HS256 keyed with a public key
 * PEM (algorithm confusion), so the algorithm here is always pinned to the key.
 * Whoever handles tokens also needs keys, key sets and claims: their headers come along.
 */
#ifndef DEPUTY_JWS_H
#define DEPUTY_JWS_H

#include <jansson.h>
#include <stdbool.h>

#include "claims.h"
#include "key.h"
#include "keyset.h"
#include "util.h"

#define DP_JWS_MAX_LEN 16384 /* larger tokens are refused before parsing */

/* Sign claims with key: header {"alg": key's alg, "typ": typ, "kid": key's kid}.
 * Returns a malloc'd compact JWS, NULL with err on failure. */
char *dp_jws_sign(const struct dp_key *key, const char *typ, const json_t *claims,
		  struct dp_err *err);
/* The same over an already encoded JSON payload (the minting fast path). typ may be NULL. */
char *dp_jws_sign_raw(const struct dp_key *key, const char *typ, const char *payload, size_t len,
		      struct dp_err *err);

/* A parsed but not yet verified JWS. */
struct dp_jws {
	json_t *header;
	json_t *claims;
	const char *alg; /* from header, borrowed */
	const char *kid; /* from header, borrowed; NULL if absent */
	const char *typ; /* from header, borrowed; NULL if absent */
	/* internal: signing input and decoded signature */
	char *signing_input;
	size_t signing_input_len;
	unsigned char *sig;
	size_t sig_len;
};
/* Split and decode; refuses > DP_JWS_MAX_LEN, bad base64url, bad JSON, non-object parts. */
int dp_jws_parse(const char *token, struct dp_jws *out, struct dp_err *err) DP_WUR;
/* Verify the signature with key; the header alg must equal the key's alg exactly (no "none",
 * no HMAC, ever). */
int dp_jws_verify(const struct dp_jws *jws, const struct dp_key *key, struct dp_err *err) DP_WUR;
void dp_jws_clear(struct dp_jws *jws);
bool dp_jws_alg_is_none(const char *alg); /* any case of "none" */
bool dp_jws_alg_is_hmac(const char *alg); /* HS256, HS384, HS512, any case */

/* An untrusted string fit for a one-line reason or log: control bytes replaced by '?',
 * cut to outsz-1 bytes ending in "..." when longer. */
void dp_jws_printable(const char *in, char *out, size_t outsz);
/* dp_jws_printable into a char array, as an expression for a format argument. */
#define DP_SAFE(buf, s) (dp_jws_printable((s), (buf), sizeof(buf)), (const char *)(buf))

#endif
