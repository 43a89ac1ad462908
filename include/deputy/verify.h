/* SPDX-License-Identifier: MIT */
/*
 * Verifying deputy delegation tokens in a C backend.
 *
 *   char *claims = NULL; char err[256];
 *   if (deputy_verify_token("/var/lib/deputy/jwks.json", token, "https://mail.internal",
 *                           "email:send", &claims, err, sizeof(err)) != 0)
 *           reject(err);
 *
 * A token is valid when: it is a compact JWS with alg ES256 (no other alg is accepted),
 * typ at+jwt, a kid present in the JWKS, a correct signature, `aud` equal to (or, for an
 * array, containing) the audience, `scope` containing the required scope (when given),
 * `iss` equal to the issuer (when given), `exp` in the future and `iat`/`nbf` not more than
 * 60 s in the future, and `sub`, `jti`, `act.sub` present.
 * Link with libdeputy-verify.a and -ljansson -lcurl -lssl -lcrypto -lpthread; the library
 * exports only the four functions below.
 *
 * Reasons come back as (char *err, size_t errlen), not as deputy's internal struct dp_err:
 * a public C API should not make backends include or track deputy's internal structs, and
 * a caller-sized buffer is what C libraries hand reasons back in. This is the one place
 * outside that convention (README, Deviations).
 */
#ifndef DEPUTY_VERIFY_H
#define DEPUTY_VERIFY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct deputy_verifier deputy_verifier;

/* jwks: a path to a JWKS file, an https:// or http:// URL (fetched once, refetched on an
 * unknown kid at most every 30 s), or the JWKS JSON text itself (starting with '{').
 * NULL and a reason in err on failure. */
deputy_verifier *deputy_verifier_new(const char *jwks, char *err, size_t errlen);

/* 0 when valid; then *claims_json (if claims_json is not NULL) gets the claims as a
 * malloc'd JSON string. -1 and a one-line reason in err when not. scope and issuer may be
 * NULL (not checked). */
int deputy_verify(deputy_verifier *v, const char *token, const char *audience, const char *scope,
		  const char *issuer, char **claims_json, char *err, size_t errlen);

void deputy_verifier_free(deputy_verifier *v);

/* The one-line form: a verifier for this call only. */
int deputy_verify_token(const char *jwks, const char *token, const char *audience,
			const char *scope, char **claims_json, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
