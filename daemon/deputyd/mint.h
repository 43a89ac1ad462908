/* SPDX-License-Identifier: MIT */
/* mint: delegation tokens (design: Identities and tokens; RFC 9068 + RFC 8693). */
#ifndef DEPUTY_MINT_H
#define DEPUTY_MINT_H

#include <stdint.h>

#include "grant.h"
#include "jws.h"

struct mint_request {
	const struct dp_grant *grant;
	const char *issuer;   /* deputyd's issuer */
	const char *agent;    /* "agent:NAME" */
	const char *session;  /* sid */
	const char *audience; /* the route's audience */
	const char *scope;    /* the route's scope: exactly one action */
	const char *htm;      /* NULL under token_binding "session" */
	const char *htu;      /* NULL under token_binding "session" */
	/* An MCP call (claims mcp {"method", "name"} and body_sha256); NULL otherwise. */
	const char *mcp_method, *mcp_name, *body_sha256;
	int ttl;
	int64_t now;
};

/* Mint and sign. Refused (-EACCES, never signed) unless scope is in the grant's scope and
 * audience in its resource. On success *token is malloc'd, jti (DP_ID_LEN) and *exp set. */
int mint_token(const struct dp_key *key, const struct mint_request *req, char **token,
	       char jti[DP_ID_LEN], int64_t *exp, struct dp_err *err) DP_WUR;

/* htu per RFC 9449 §4.2: scheme://host[:port]/path, lower-case scheme and host, no query or
 * fragment, port omitted when default for the scheme. 0 or -ENOSPC/-EINVAL. */
int mint_htu(const char *scheme, const char *host, int port, const char *target, char *out,
	     size_t outsz) DP_WUR;

#endif
