// SPDX-License-Identifier: MIT
/*
 * verify: the public verification API of include/deputy/verify.h — what a C backend (and
 * `deputy verify`) does with a delegation token. It accepts exactly deputy's token profile:
 * ES256, typ at+jwt, a known kid, and the claims the header lists; nothing is negotiated.
 */
#include <deputy/verify.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jwks_fetch.h"
#include "jws.h"

#define VERIFY_REFETCH_S 30

struct deputy_verifier {
	pthread_mutex_t lock; /* guards keys and loaded_at */
	char *source;
	bool refetchable; /* a URL: an unknown kid may mean the keys rotated */
	struct dp_keyset *keys;
	int64_t loaded_at;
};

/* The public API speaks (char *err, size_t errlen); inside, errors are a struct dp_err. */
static void copy_reason(char *err, size_t errlen, const struct dp_err *e)
{
	if (err && errlen > 0)
		snprintf(err, errlen, "%s", e->msg);
}

deputy_verifier *deputy_verifier_new(const char *jwks, char *err, size_t errlen)
{
	struct dp_err e = {""};
	deputy_verifier *v;

	if (!jwks || !*jwks) {
		dp_err_set(&e, "no JWKS given");
		copy_reason(err, errlen, &e);
		return NULL;
	}
	v = calloc(1, sizeof(*v));
	if (!v || !(v->source = strdup(jwks))) {
		free(v);
		dp_err_set(&e, "out of memory");
		copy_reason(err, errlen, &e);
		return NULL;
	}
	pthread_mutex_init(&v->lock, NULL);
	v->refetchable = jwks_is_url(jwks);
	v->loaded_at = dp_now();
	v->keys = jwks_load(jwks, &e);
	if (!v->keys) {
		copy_reason(err, errlen, &e);
		deputy_verifier_free(v);
		return NULL;
	}
	return v;
}

void deputy_verifier_free(deputy_verifier *v)
{
	if (!v)
		return;
	dp_keyset_free(v->keys);
	free(v->source);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

static bool typ_is_at_jwt(const char *typ)
{
	/* RFC 9068 §2.1; RFC 7515 §4.1.9 lets the "application/" prefix be written or not. */
	return typ &&
	       (strcasecmp(typ, "at+jwt") == 0 || strcasecmp(typ, "application/at+jwt") == 0);
}

/* After the registered claims, what every deputy token carries, and the one scope asked. */
static int check_claims(const json_t *c, const char *audience, const char *scope,
			const char *issuer, int64_t now, struct dp_err *err)
{
	const struct dp_jwt_expect want = {.audience = audience, .issuer = issuer, .now = now};
	const char *s;
	char b[72];
	int r;

	r = dp_jwt_check_registered(c, DP_JWT_TOKEN, &want, err);
	if (r)
		return r;
	s = json_string_value(json_object_get(c, "sub"));
	if (!s || !*s) {
		dp_err_set(err, "token has no sub");
		return -EACCES;
	}
	s = json_string_value(json_object_get(c, "jti"));
	if (!s || !*s) {
		dp_err_set(err, "token has no jti");
		return -EACCES;
	}
	s = json_string_value(json_object_get(json_object_get(c, "act"), "sub"));
	if (!s || !*s) {
		dp_err_set(err, "token has no act.sub");
		return -EACCES;
	}
	if (scope) {
		s = json_string_value(json_object_get(c, "scope"));
		if (!s || !dp_scope_has(s, scope)) {
			dp_err_set(err, "scope \"%s\" not granted", DP_SAFE(b, scope));
			return -EACCES;
		}
	}
	return 0;
}

/* The key for kid; an unknown kid refetches a URL's keys (rotation), at most every
 * VERIFY_REFETCH_S seconds. Caller holds v->lock. */
static const struct dp_key *verifier_key(deputy_verifier *v, const char *kid, int64_t now)
{
	const struct dp_key *key = dp_keyset_find(v->keys, kid);
	struct dp_err e = {""};
	struct dp_keyset *ks;

	if (key || !v->refetchable || now - v->loaded_at < VERIFY_REFETCH_S)
		return key;
	v->loaded_at = now;
	ks = jwks_load(v->source, &e);
	if (!ks)
		return NULL;
	dp_keyset_free(v->keys);
	v->keys = ks;
	return dp_keyset_find(v->keys, kid);
}

/* The header and signature checks: exactly deputy's profile, nothing negotiated. */
static int verifier_check_jws(deputy_verifier *v, const struct dp_jws *jws, int64_t now,
			      struct dp_err *err)
{
	const struct dp_key *key;
	char b[72];
	int r;

	if (dp_jws_alg_is_none(jws->alg) || strcmp(jws->alg, "ES256") != 0) {
		dp_err_set(err, "alg \"%s\" refused (only ES256)", DP_SAFE(b, jws->alg));
		return -EACCES;
	}
	if (!jws->typ) {
		dp_err_set(err, "token has no typ (want at+jwt)");
		return -EACCES;
	}
	if (!typ_is_at_jwt(jws->typ)) {
		dp_err_set(err, "typ \"%s\" is not at+jwt", DP_SAFE(b, jws->typ));
		return -EACCES;
	}
	if (!jws->kid) {
		dp_err_set(err, "token has no kid");
		return -EACCES;
	}
	pthread_mutex_lock(&v->lock);
	key = verifier_key(v, jws->kid, now);
	if (!key) {
		dp_err_set(err, "unknown kid \"%s\"", DP_SAFE(b, jws->kid));
		r = -EACCES;
	} else {
		r = dp_jws_verify(jws, key, err);
	}
	pthread_mutex_unlock(&v->lock);
	return r;
}

int deputy_verify(deputy_verifier *v, const char *token, const char *audience, const char *scope,
		  const char *issuer, char **claims_json, char *err, size_t errlen)
{
	struct dp_err e = {""}, pe = {""};
	struct dp_jws jws;
	int64_t now = dp_now();
	int rc = -1;

	if (claims_json)
		*claims_json = NULL;
	if (!v || !token) {
		dp_err_set(&e, "no verifier or no token");
		copy_reason(err, errlen, &e);
		return -1;
	}
	if (dp_jws_parse(token, &jws, &pe)) {
		dp_err_set(&e, "malformed token: %s", pe.msg);
		copy_reason(err, errlen, &e);
		return -1;
	}
	if (verifier_check_jws(v, &jws, now, &e) ||
	    check_claims(jws.claims, audience, scope, issuer, now, &e))
		goto out;
	if (claims_json) {
		*claims_json = json_dumps(jws.claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (!*claims_json) {
			dp_err_set(&e, "out of memory");
			goto out;
		}
	}
	rc = 0;
out:
	if (rc)
		copy_reason(err, errlen, &e);
	dp_jws_clear(&jws);
	return rc;
}

int deputy_verify_token(const char *jwks, const char *token, const char *audience,
			const char *scope, char **claims_json, char *err, size_t errlen)
{
	deputy_verifier *v = deputy_verifier_new(jwks, err, errlen);
	int r;

	if (!v)
		return -1;
	r = deputy_verify(v, token, audience, scope, NULL, claims_json, err, errlen);
	deputy_verifier_free(v);
	return r;
}
