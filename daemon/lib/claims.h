/* SPDX-License-Identifier: MIT */
/*
 * claims: reading JWT claims (RFC 7519) and the one check of the registered claims (exp,
 * nbf, iat, aud, iss) that grants and delegation tokens share.
 */
#ifndef DEPUTY_CLAIMS_H
#define DEPUTY_CLAIMS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* Seconds an iat or nbf may lie in the future: the issuer's clock may run ahead of ours. */
#define DP_CLOCK_SKEW 60

/* A NumericDate claim: 0, -ENOENT when absent, -EINVAL when not a number. */
int dp_jwt_time_claim(const json_t *claims, const char *name, int64_t *out) DP_WUR;
/* aud is the string, or an array that holds it. */
bool dp_jwt_aud_has(const json_t *claims, const char *aud);
/* scope is one of the space-separated tokens of scopes. */
bool dp_scope_has(const char *scopes, const char *scope);

/* Whose claims are checked: the refusal reasons are worded for each (users and tests read
 * them), the rules are the same. */
enum dp_jwt_kind { DP_JWT_GRANT, DP_JWT_TOKEN };

struct dp_jwt_expect {
	const char *audience; /* required: aud must be it or an array holding it */
	const char *issuer;   /* NULL: iss is not checked */
	int64_t now;
};

/* exp present and in the future, nbf and iat (when present) numbers at most DP_CLOCK_SKEW
 * seconds ahead, aud and iss as expected. 0, or -EACCES with a one-line reason. */
int dp_jwt_check_registered(const json_t *claims, enum dp_jwt_kind kind,
			    const struct dp_jwt_expect *want, struct dp_err *err) DP_WUR;

#endif
