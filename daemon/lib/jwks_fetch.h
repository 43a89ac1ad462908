/* SPDX-License-Identifier: MIT */
/*
 * jwks_fetch: where a JWKS comes from — a file, an https:// URL (libcurl), or inline JSON —
 * shared by the trusted issuers (grant.c) and the public verifier (verify.c).
 *
 * URLs must be https://, except http:// to a loopback host (127.0.0.0/8, [::1], localhost),
 * which cannot be intercepted off the host. No redirects are followed, the answer must be
 * 200 and at most JWKS_FETCH_MAX bytes, and the whole fetch is bounded to 5 s.
 * $DEPUTY_CA_FILE, when set, names a PEM CA bundle that replaces the system's trust store
 * (for issuers behind a private CA, and for tests).
 */
#ifndef DEPUTY_JWKS_FETCH_H
#define DEPUTY_JWKS_FETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "jws.h"
#include "util.h"

#define JWKS_FETCH_MAX (256 * 1024)
#define JWKS_FETCH_TIMEOUT 5 /* seconds, connect and total */

bool jwks_url_allowed(const char *url);
bool jwks_is_url(const char *src);
/* GET url; *out malloc'd and NUL-terminated. 0 or negative errno with err. */
int jwks_fetch_url(const char *url, char **out, size_t *len, struct dp_err *err) DP_WUR;
/* src: a URL, inline JSON (first non-blank byte '{') or a file path. */
struct dp_keyset *jwks_load(const char *src, struct dp_err *err);

#endif
