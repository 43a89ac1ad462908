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

/* Key sets of the configured trusted issuers: jwks_file read at creation, jwks_uri (or the
 * one discovery finds) fetched over HTTPS (libcurl, the issuer's ca_file) at creation and
 * refetched on an unknown kid, at most once every 30 s per issuer. Fetch failures are
 * logged, not fatal; fetched keys are cached under cfg->state_dir when it is set. */
struct dp_trust;
struct dp_keyset;
struct dp_trust *trust_new(const struct dp_config *cfg, struct dp_err *err);
void trust_free(struct dp_trust *trust);

/* For a caller with an event loop, which must not wait up to JWKS_FETCH_TIMEOUT for an
 * issuer: once deferred, grant_verify never fetches a jwks_uri. Where it would (unknown kid,
 * refetch due) or while that issuer's fetch is under way, it returns -EINPROGRESS; the
 * caller takes the wanted fetches with trust_fetch_take, runs trust_fetch_load elsewhere,
 * hands the result to trust_fetch_done and asks again. jwks_file issuers are read as
 * before. */
void trust_defer_fetches(struct dp_trust *t);
/* trust_new, deferred from the start (a reload): jwks_uri keys and fetches under way are
 * taken over from old (same issuer and source), other jwks_uri issuers want a fetch. */
struct dp_trust *trust_new_deferred(const struct dp_config *cfg, struct dp_trust *old,
				    struct dp_err *err);
/* A wanted fetch, with its own copies of what it needs: it may outlive the trust. */
struct trust_fetch {
	char *issuer;
	char *source;	 /* the jwks_uri, or the issuer when discovery finds the keys */
	char *ca_file;	 /* NULL: $DEPUTY_CA_FILE, else the system's store */
	char *cache_dir; /* NULL: no key cache */
	bool discovery;
};
/* The next wanted fetch: 1 with *f filled (now under way; trust_fetch_clear it), 0 if none
 * is wanted, or -ENOMEM. */
int trust_fetch_take(struct dp_trust *t, struct trust_fetch *f);
/* Runs f, in any thread: discovery when the issuer uses it, its ca_file, the key cache. */
struct dp_keyset *trust_fetch_load(const struct trust_fetch *f, struct dp_err *err);
void trust_fetch_clear(struct trust_fetch *f);
/* A fetch's result: ks (taken; NULL when the fetch failed, keeping the keys known) becomes
 * the issuer's keys if it still has that source. */
void trust_fetch_done(struct dp_trust *t, const char *issuer, const char *source,
		      struct dp_keyset *ks);

struct dp_grant {
	char *token; /* the grant as received */
	char *iss, *sub;
	char *jti;   /* the jti, or "sha256:" + base64url SHA-256 of the token when it has none */
	char *agent; /* may_act.sub (or the issuer's claims.agent), e.g. "agent:mailbot" */
	char **scopes;
	size_t n_scopes;
	char **resources;
	size_t n_resources;
	int64_t iat, exp;
};

/* Verify a grant JWT: issuer trusted, kid known, alg pinned to the key, signature, exp,
 * nbf/iat (skew), aud == audience (deputyd's issuer), sub/exp present, scope (or scp) and
 * resource as string or array, may_act.sub == agent (agent NULL: not compared); sub, jti,
 * scope, resource and the agent under the issuer's claim names. 0 and *out, or
 * -EACCES/-EINVAL with err naming the claim and what was expected (-EINPROGRESS: see
 * trust_defer_fetches). */
int grant_verify(struct dp_trust *trust, const char *token, const char *audience, const char *agent,
		 int64_t now, struct dp_grant **out, struct dp_err *err) DP_WUR;
void grant_free(struct dp_grant *g);
bool grant_has_scope(const struct dp_grant *g, const char *scope);
bool grant_has_resource(const struct dp_grant *g, const char *resource);

#endif
