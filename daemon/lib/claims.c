// SPDX-License-Identifier: MIT
/*
 * claims: JWT claim helpers and the registered-claims check. Grants (grant.c) and delegation
 * tokens (verify.c) are refused by the same rules with one clock skew; only the wording of
 * a refusal differs, from the table below.
 */
#include "claims.h"

#include <errno.h>
#include <string.h>

#include "jws.h"

int dp_jwt_time_claim(const json_t *claims, const char *name, int64_t *out)
{
	const json_t *v = json_object_get(claims, name);
	double d;

	if (!v)
		return -ENOENT;
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_real(v))
		return -EINVAL;
	/* NumericDate may carry fractions (RFC 7519 §2); bound it before converting. */
	d = json_real_value(v);
	if (!(d > -1e15 && d < 1e15))
		return -EINVAL;
	*out = (int64_t)d;
	return 0;
}

bool dp_jwt_aud_has(const json_t *claims, const char *aud)
{
	const json_t *v = json_object_get(claims, "aud"), *e;
	size_t i;

	if (json_is_string(v))
		return strcmp(json_string_value(v), aud) == 0;
	if (!json_is_array(v))
		return false;
	json_array_foreach(v, i, e)
	{
		if (json_is_string(e) && strcmp(json_string_value(e), aud) == 0)
			return true;
	}
	return false;
}

bool dp_scope_has(const char *scopes, const char *scope)
{
	size_t n = strlen(scope);

	if (!scopes || n == 0)
		return false;
	for (const char *p = scopes; *p;) {
		size_t w;

		while (*p == ' ')
			p++;
		w = strcspn(p, " ");
		if (w == n && memcmp(p, scope, n) == 0)
			return true;
		p += w;
	}
	return false;
}

enum claims_fault {
	NO_EXP,
	BAD_EXP,
	EXPIRED,
	BAD_NBF,
	FUTURE_NBF,
	BAD_IAT,
	FUTURE_IAT,
	NO_AUD,
	N_FAULTS
};

/* Reasons as they were before grants and tokens shared this check: callers match them. */
static const char *const claims_reason[N_FAULTS][2] = {
    [NO_EXP] = {"grant has no exp", "token has no exp"},
    [BAD_EXP] = {"grant exp is not a number", "token exp is not a number"},
    [EXPIRED] = {"grant expired", "token expired"},
    [BAD_NBF] = {"grant nbf is not a number", "token not yet valid (nbf)"},
    [FUTURE_NBF] = {"grant not yet valid (nbf in the future)", "token not yet valid (nbf)"},
    [BAD_IAT] = {"grant iat is not a number", "token not yet valid (iat)"},
    [FUTURE_IAT] = {"grant not yet valid (iat in the future)", "token not yet valid (iat)"},
    [NO_AUD] = {"grant has no aud", NULL /* a token's missing aud is a wrong one */},
};

/* "<before>"<value>"<after>": a wrong aud or iss names the one wanted. */
static const char *const claims_wrong[2][2][2] = {
    /* aud */ {{"grant audience is not ", ""}, {"wrong audience (want ", ")"}},
    /* iss */ {{"grant issuer is not ", ""}, {"wrong issuer (want ", ")"}},
};

static int claims_refuse(struct dp_err *err, enum dp_jwt_kind kind, enum claims_fault f)
{
	dp_err_set(err, "%s", claims_reason[f][kind]);
	return -EACCES;
}

static int claims_refuse_value(struct dp_err *err, enum dp_jwt_kind kind, int which,
			       const char *want)
{
	char b[72];

	dp_err_set(err, "%s\"%s\"%s", claims_wrong[which][kind][0], DP_SAFE(b, want),
		   claims_wrong[which][kind][1]);
	return -EACCES;
}

/* nbf and iat: absent is fine, a number at most DP_CLOCK_SKEW ahead too. */
static int claims_not_future(const json_t *c, const char *name, int64_t now)
{
	int64_t t;
	int r = dp_jwt_time_claim(c, name, &t);

	if (r == -ENOENT)
		return 0;
	if (r)
		return r;
	return t > now + DP_CLOCK_SKEW ? -ERANGE : 0;
}

int dp_jwt_check_registered(const json_t *c, enum dp_jwt_kind kind,
			    const struct dp_jwt_expect *want, struct dp_err *err)
{
	const char *iss;
	int64_t exp;
	int r;

	r = dp_jwt_time_claim(c, "exp", &exp);
	if (r)
		return claims_refuse(err, kind, r == -ENOENT ? NO_EXP : BAD_EXP);
	if (want->now >= exp)
		return claims_refuse(err, kind, EXPIRED);
	r = claims_not_future(c, "nbf", want->now);
	if (r)
		return claims_refuse(err, kind, r == -EINVAL ? BAD_NBF : FUTURE_NBF);
	r = claims_not_future(c, "iat", want->now);
	if (r)
		return claims_refuse(err, kind, r == -EINVAL ? BAD_IAT : FUTURE_IAT);
	if (!json_object_get(c, "aud") && claims_reason[NO_AUD][kind])
		return claims_refuse(err, kind, NO_AUD);
	if (!want->audience || !dp_jwt_aud_has(c, want->audience))
		return claims_refuse_value(err, kind, 0, want->audience);
	iss = json_string_value(json_object_get(c, "iss"));
	if (want->issuer && (!iss || strcmp(iss, want->issuer) != 0))
		return claims_refuse_value(err, kind, 1, want->issuer);
	return 0;
}
