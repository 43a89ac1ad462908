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
struct dp_trust *trust_new(const struct dp_config *cfg, struct dp_err *err);
void trust_free(struct dp_trust *trust);

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
 * -EACCES/-EINVAL with err naming the claim and what was expected. */
int grant_verify(struct dp_trust *trust, const char *token, const char *audience, const char *agent,
		 int64_t now, struct dp_grant **out, struct dp_err *err) DP_WUR;
void grant_free(struct dp_grant *g);
bool grant_has_scope(const struct dp_grant *g, const char *scope);
bool grant_has_resource(const struct dp_grant *g, const char *resource);

#endif
