/* SPDX-License-Identifier: MIT */
/*
 * jws: the only place that builds or parses a JWS (RFC 7515 compact form) and handles JWKs.
 * OpenSSL EVP directly: libjwt 1.10 cannot emit typ "at+jwt" and accepts HS256 keyed with a
 * public key PEM (algorithm confusion), so the algorithm here is always pinned to the key.
 */
#ifndef DEPUTY_JWS_H
#define DEPUTY_JWS_H

#include <jansson.h>
#include <stdbool.h>

#include "util.h"

#define DP_JWS_MAX_LEN 16384 /* larger tokens are refused before parsing */

struct dp_key; /* a public or private key with its alg ("ES256", "RS256", …) and kid */

/* deputyd's signing key: load the PEM at path, or create a P-256 key there (mode 0600,
 * atomic) when it does not exist. kid = RFC 7638 thumbprint. An existing key file that
 * group or others may access is refused (-EPERM, like ssh), not silently re-moded; a key
 * that is not EC P-256 is refused. The key is immutable: usable from several threads. */
struct dp_key *dp_key_load_or_create(const char *path, struct dp_err *err);
/* A private key PEM (EC P-256 -> ES256, RSA -> RS256) for `deputy grant`. */
struct dp_key *dp_key_load_private_pem(const char *path, struct dp_err *err);
void dp_key_free(struct dp_key *key);
const char *dp_key_kid(const struct dp_key *key);
const char *dp_key_alg(const struct dp_key *key);
/* {"keys":[<public JWK>]} as a malloc'd string. */
char *dp_key_jwks_json(const struct dp_key *key);
/* The public JWK (kty, crv/x/y or n/e, kid, alg, use), borrowed. */
const json_t *dp_key_jwk(const struct dp_key *key);
bool dp_key_is_private(const struct dp_key *key);
/* A public key from one JWK object (EC P-256 or RSA 2048..8192 bits); kid = its "kid", or
 * the thumbprint when it has none. A JWK with an "alg" other than the key's is refused. */
struct dp_key *dp_key_from_jwk(const json_t *jwk, struct dp_err *err);
/* RFC 7638 thumbprint of a public JWK object (EC or RSA) into out (base64url, 43 chars). */
int dp_jwk_thumbprint(const json_t *jwk, char out[48], struct dp_err *err) DP_WUR;

/* Presigning (deputyd's ES256 key): keep up to cap ECDSA nonce pairs (k⁻¹, r) precomputed,
 * so a signature on the request path costs a few microseconds instead of a full ECDSA
 * sign. Each pair signs exactly once and is wiped; an empty pool means a normal signature,
 * never a wait. fill computes up to max pairs (each ~ one signature's work) and returns how
 * many it added: call it when idle. -EINVAL for keys that are not private ES256. */
int dp_key_presign_enable(struct dp_key *key, size_t cap);
bool dp_key_presign_wanted(const struct dp_key *key);
size_t dp_key_presign_fill(const struct dp_key *key, size_t max);
void dp_key_presign_stats(const struct dp_key *key, size_t *available, uint64_t *hits,
			  uint64_t *misses);

/* A set of public keys parsed from JWKS JSON; keys without a usable kty/alg are skipped. */
struct dp_keyset;
struct dp_keyset *dp_keyset_parse(const char *json, size_t len, struct dp_err *err);
const struct dp_key *dp_keyset_find(const struct dp_keyset *ks, const char *kid);
size_t dp_keyset_count(const struct dp_keyset *ks);
void dp_keyset_free(struct dp_keyset *ks);

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

/* Claim helpers for grant and token checks. A NumericDate claim: 0, -ENOENT when absent,
 * -EINVAL when not a number. */
int dp_jwt_time_claim(const json_t *claims, const char *name, int64_t *out) DP_WUR;
/* aud is the string, or an array that holds it. */
bool dp_jwt_aud_has(const json_t *claims, const char *aud);
/* scope is one of the space-separated tokens of scopes. */
bool dp_scope_has(const char *scopes, const char *scope);
/* An untrusted string fit for a one-line reason or log: control bytes replaced by '?',
 * cut to outsz-1 bytes ending in "..." when longer. */
void dp_jws_printable(const char *in, char *out, size_t outsz);
/* dp_jws_printable into a char array, as an expression for a format argument. */
#define DP_SAFE(buf, s) (dp_jws_printable((s), (buf), sizeof(buf)), (const char *)(buf))

#endif
