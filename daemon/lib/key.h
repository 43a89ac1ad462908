/* SPDX-License-Identifier: MIT */
/*
 * key: a signing or verification key with the one algorithm it is used with (ES256 for EC
 * P-256, RS256 for RSA) and its kid — loaded from a PEM file, created, or taken from a JWK.
 * A key is immutable once built, so it may be used from several threads.
 */
#ifndef DEPUTY_KEY_H
#define DEPUTY_KEY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <openssl/types.h>

#include "jwk.h"
#include "util.h"

#define DP_KEY_SIG_MAX 1024 /* bytes of the longest signature (RSA 8192) */

struct dp_key; /* a public or private key with its alg ("ES256", "RS256", …) and kid */

/* deputyd's signing key: load the PEM at path, or create a P-256 key there (mode 0600,
 * atomic) when it does not exist. kid = RFC 7638 thumbprint. An existing key file that
 * group or others may access is refused (-EPERM, like ssh), not silently re-moded; a key
 * that is not EC P-256 is refused. */
struct dp_key *dp_key_load_or_create(const char *path, struct dp_err *err);
/* A private key PEM (EC P-256 -> ES256, RSA -> RS256) for `deputy grant`. */
struct dp_key *dp_key_load_private_pem(const char *path, struct dp_err *err);
/* A public key from one JWK object (EC P-256 or RSA 2048..8192 bits); kid = its "kid", or
 * the thumbprint when it has none. A JWK with an "alg" other than the key's is refused. */
struct dp_key *dp_key_from_jwk(const json_t *jwk, struct dp_err *err);
void dp_key_free(struct dp_key *key);

const char *dp_key_kid(const struct dp_key *key);
const char *dp_key_alg(const struct dp_key *key);
bool dp_key_is_private(const struct dp_key *key);
/* The OpenSSL key, borrowed (for deputyd's presign pool). */
EVP_PKEY *dp_key_pkey(const struct dp_key *key);
/* The public JWK (kty, crv/x/y or n/e, kid, alg, use), borrowed. */
const json_t *dp_key_jwk(const struct dp_key *key);
/* {"keys":[<public JWK>]} as a malloc'd string. */
char *dp_key_jwks_json(const struct dp_key *key);

/* The signature over in in JWS form (RFC 7518 §3: r||s for ES256) into out, which holds
 * DP_KEY_SIG_MAX bytes. Private keys only. */
int dp_key_sign(const struct dp_key *key, const void *in, size_t inlen, unsigned char *out,
		size_t *outlen) DP_WUR;
/* 0 when sig (JWS form) is key's signature over in, -EACCES when not. */
int dp_key_verify(const struct dp_key *key, const void *in, size_t inlen, const unsigned char *sig,
		  size_t siglen) DP_WUR;

/* A faster ES256 signer for one key (deputyd's presign pool): returns 0 with the r||s in
 * out, or non-zero to have dp_key_sign sign normally. free_ctx runs when the key is freed.
 * At most one per key: -EBUSY when another is set. */
typedef int (*dp_key_fast_sign_fn)(void *ctx, const void *in, size_t inlen, unsigned char out[64]);
int dp_key_set_fast_signer(struct dp_key *key, dp_key_fast_sign_fn fn, void *ctx,
			   void (*free_ctx)(void *ctx)) DP_WUR;
/* The ctx given with fn, or NULL when fn is not key's fast signer. */
void *dp_key_fast_signer_ctx(const struct dp_key *key, dp_key_fast_sign_fn fn);

#endif
