// SPDX-License-Identifier: MIT
/*
 * verify: the public verification API of include/deputy/verify.h — what a C backend (and
 * `deputy verify`) does with a delegation token. It accepts exactly deputy's token profile:
 * ES256, typ at+jwt, a known kid, and the claims the header lists; nothing is negotiated.
 */
#include <deputy/verify.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jwks_fetch.h"
#include "jws.h"

#define VERIFY_REFETCH_S 30
#define VERIFY_SKEW 60

struct deputy_verifier {
	pthread_mutex_t lock; /* guards keys and loaded_at */
	char *source;
	bool refetchable; /* a URL: an unknown kid may mean the keys rotated */
	struct dp_keyset *keys;
	int64_t loaded_at;
};

static void set_reason(char *err, size_t errlen, const char *fmt, ...) DP_PRINTF(3, 4);
static void set_reason(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

deputy_verifier *deputy_verifier_new(const char *jwks, char *err, size_t errlen)
{
	struct dp_err e = {""};
	deputy_verifier *v;

	if (!jwks || !*jwks) {
		set_reason(err, errlen, "no JWKS given");
		return NULL;
	}
	v = calloc(1, sizeof(*v));
	if (!v || !(v->source = strdup(jwks))) {
		free(v);
		set_reason(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&v->lock, NULL);
	v->refetchable = jwks_is_url(jwks);
	v->loaded_at = dp_now();
	v->keys = jwks_load(jwks, &e);
	if (!v->keys) {
		set_reason(err, errlen, "%s", e.msg);
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

static int check_claims(const json_t *c, const char *audience, const char *scope,
			const char *issuer, int64_t now, char *err, size_t errlen)
{
	const char *s;
	int64_t exp, t;
	char b[72];
	int r;

	r = dp_jwt_time_claim(c, "exp", &exp);
	if (r) {
		set_reason(err, errlen,
			   r == -ENOENT ? "token has no exp" : "token exp is not a number");
		return -1;
	}
	if (now >= exp) {
		set_reason(err, errlen, "token expired");
		return -1;
	}
	if ((r = dp_jwt_time_claim(c, "iat", &t)) == -EINVAL || (r == 0 && t > now + VERIFY_SKEW)) {
		set_reason(err, errlen, "token not yet valid (iat)");
		return -1;
	}
	if ((r = dp_jwt_time_claim(c, "nbf", &t)) == -EINVAL || (r == 0 && t > now + VERIFY_SKEW)) {
		set_reason(err, errlen, "token not yet valid (nbf)");
		return -1;
	}
	if (!audience || !dp_jwt_aud_has(c, audience)) {
		set_reason(err, errlen, "wrong audience (want \"%s\")", DP_SAFE(b, audience));
		return -1;
	}
	s = json_string_value(json_object_get(c, "iss"));
	if (issuer && (!s || strcmp(s, issuer) != 0)) {
		set_reason(err, errlen, "wrong issuer (want \"%s\")", DP_SAFE(b, issuer));
		return -1;
	}
	s = json_string_value(json_object_get(c, "sub"));
	if (!s || !*s) {
		set_reason(err, errlen, "token has no sub");
		return -1;
	}
	s = json_string_value(json_object_get(c, "jti"));
	if (!s || !*s) {
		set_reason(err, errlen, "token has no jti");
		return -1;
	}
	s = json_string_value(json_object_get(json_object_get(c, "act"), "sub"));
	if (!s || !*s) {
		set_reason(err, errlen, "token has no act.sub");
		return -1;
	}
	if (scope) {
		s = json_string_value(json_object_get(c, "scope"));
		if (!s || !dp_scope_has(s, scope)) {
			set_reason(err, errlen, "scope \"%s\" not granted", DP_SAFE(b, scope));
			return -1;
		}
	}
	return 0;
}

int deputy_verify(deputy_verifier *v, const char *token, const char *audience, const char *scope,
		  const char *issuer, char **claims_json, char *err, size_t errlen)
{
	struct dp_err e = {""};
	const struct dp_key *key;
	struct dp_jws jws;
	int64_t now = dp_now();
	char b[72];
	int rc = -1;

	if (claims_json)
		*claims_json = NULL;
	if (!v || !token) {
		set_reason(err, errlen, "no verifier or no token");
		return -1;
	}
	if (dp_jws_parse(token, &jws, &e)) {
		set_reason(err, errlen, "malformed token: %s", e.msg);
		return -1;
	}
	if (dp_jws_alg_is_none(jws.alg) || strcmp(jws.alg, "ES256") != 0) {
		set_reason(err, errlen, "alg \"%s\" refused (only ES256)", DP_SAFE(b, jws.alg));
		goto out;
	}
	if (!jws.typ) {
		set_reason(err, errlen, "token has no typ (want at+jwt)");
		goto out;
	}
	if (!typ_is_at_jwt(jws.typ)) {
		set_reason(err, errlen, "typ \"%s\" is not at+jwt", DP_SAFE(b, jws.typ));
		goto out;
	}
	if (!jws.kid) {
		set_reason(err, errlen, "token has no kid");
		goto out;
	}
	pthread_mutex_lock(&v->lock);
	key = dp_keyset_find(v->keys, jws.kid);
	if (!key && v->refetchable && now - v->loaded_at >= VERIFY_REFETCH_S) {
		struct dp_keyset *ks = jwks_load(v->source, &e);

		v->loaded_at = now;
		if (ks) {
			dp_keyset_free(v->keys);
			v->keys = ks;
			key = dp_keyset_find(v->keys, jws.kid);
		}
	}
	if (!key) {
		pthread_mutex_unlock(&v->lock);
		set_reason(err, errlen, "unknown kid \"%s\"", DP_SAFE(b, jws.kid));
		goto out;
	}
	if (dp_jws_verify(&jws, key, &e)) {
		pthread_mutex_unlock(&v->lock);
		set_reason(err, errlen, "%s", e.msg);
		goto out;
	}
	pthread_mutex_unlock(&v->lock);
	if (check_claims(jws.claims, audience, scope, issuer, now, err, errlen))
		goto out;
	if (claims_json) {
		*claims_json = json_dumps(jws.claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (!*claims_json) {
			set_reason(err, errlen, "out of memory");
			goto out;
		}
	}
	rc = 0;
out:
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
