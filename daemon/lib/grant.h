/* SPDX-License-Identifier: MIT */
/*
 * grant: the trusted issuers' key sets and verification of user grants (design: Identities
 * and tokens). Every refusal has its own one-line reason.
 */
#ifndef DEPUTY_GRANT_H
#define DEPUTY_GRANT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "util.h"

/* Key sets of the configured trusted issuers: jwks_file read at creation, jwks_uri fetched
 * over HTTPS (libcurl) at creation and refetched on an unknown kid, at most once every
 * 30 s per issuer. Fetch failures are logged, not fatal. */
struct dp_trust;
struct dp_keyset;
struct dp_trust *trust_new(const struct dp_config *cfg, struct dp_err *err);
void trust_free(struct dp_trust *trust);

/* For a caller with an event loop, which must not wait up to JWKS_FETCH_TIMEOUT for an
 * issuer: once deferred, grant_verify never fetches a jwks_uri. Where it would (unknown kid,
 * refetch due) or while that issuer's fetch is under way, it returns -EINPROGRESS; the
 * caller takes the wanted fetches with trust_fetch_take, runs jwks_load elsewhere, hands
 * the result to trust_fetch_done and asks again. jwks_file issuers are read as before. */
void trust_defer_fetches(struct dp_trust *t);
/* trust_new, deferred from the start (a reload): jwks_uri keys and fetches under way are
 * taken over from old (same issuer and source), other jwks_uri issuers want a fetch. */
struct dp_trust *trust_new_deferred(const struct dp_config *cfg, struct dp_trust *old,
				    struct dp_err *err);
/* The next wanted fetch: 1 with malloc'd copies of the issuer and its jwks_uri (now under
 * way), 0 if none is wanted, or -ENOMEM. */
int trust_fetch_take(struct dp_trust *t, char **issuer, char **source);
/* A fetch's result: ks (taken; NULL when the fetch failed, keeping the keys known) becomes
 * the issuer's keys if it still has that source. */
void trust_fetch_done(struct dp_trust *t, const char *issuer, const char *source,
		      struct dp_keyset *ks);

struct dp_grant {
	char *token; /* the grant as received */
	char *iss, *sub, *jti;
	char *agent; /* may_act.sub, e.g. "agent:mailbot" */
	char **scopes;
	size_t n_scopes;
	char **resources;
	size_t n_resources;
	int64_t iat, exp;
};

/* Verify a grant JWT: issuer trusted, kid known, alg pinned to the key, signature, exp,
 * nbf/iat (skew), aud == audience (deputyd's issuer), sub/jti/exp present, may_act.sub ==
 * agent. 0 and *out, or -EACCES/-EINVAL with err saying why (-EINPROGRESS: see
 * trust_defer_fetches). */
int grant_verify(struct dp_trust *trust, const char *token, const char *audience, const char *agent,
		 int64_t now, struct dp_grant **out, struct dp_err *err) DP_WUR;
void grant_free(struct dp_grant *g);
bool grant_has_scope(const struct dp_grant *g, const char *scope);
bool grant_has_resource(const struct dp_grant *g, const char *resource);

#endif
