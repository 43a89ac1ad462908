/* SPDX-License-Identifier: MIT */
/*
 * jwks_fetch: where a JWKS comes from — a file, an https:// URL (libcurl), or inline JSON —
 * shared by the trusted issuers (grant.c) and the public verifier (verify.c); and the other
 * HTTPS exchanges with an issuer: its discovery metadata (OIDC Discovery 1.0 §4, RFC 8414
 * §3) and the form POSTs of `deputy login` (RFC 8628, RFC 8693).
 *
 * URLs must be https://, except http:// to a loopback host (127.0.0.0/8, [::1], localhost),
 * which cannot be intercepted off the host. No redirects are followed, the answer must be
 * 200 and at most JWKS_FETCH_MAX bytes, and the whole fetch is bounded to 5 s.
 * A CA file (an issuer's "ca_file") or else $DEPUTY_CA_FILE, when set, names a PEM CA bundle
 * that replaces the system's trust store (for issuers behind a private CA, and for tests).
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

struct jwks_http {
	const char *url;
	const char *ca_file; /* NULL: $DEPUTY_CA_FILE, else the system's store */
	const char *form;    /* application/x-www-form-urlencoded body: a POST; NULL: GET */
	bool any_status;     /* the body whatever the status: OAuth errors come as 400 + JSON */
};
/* One exchange; *out malloc'd and NUL-terminated, *status the HTTP status. 0 or negative
 * errno with err. */
int jwks_http_do(const struct jwks_http *req, char **out, size_t *len, long *status,
		 struct dp_err *err) DP_WUR;
/* GET url, answer 200 only. */
int jwks_fetch_url(const char *url, const char *ca_file, char **out, size_t *len,
		   struct dp_err *err) DP_WUR;
/* src: a URL, inline JSON (first non-blank byte '{') or a file path. */
struct dp_keyset *jwks_load(const char *src, struct dp_err *err);
struct dp_keyset *jwks_load_ca(const char *src, const char *ca_file, struct dp_err *err);

/* Issuer metadata (a discovery document) as untrusted text: a JSON object whose "issuer" is
 * exactly issuer (OIDC Discovery §4.3, RFC 8414 §3.3: else another issuer's keys could be
 * slipped in). 0 and *meta, or -EINVAL with err. Pure: the fuzz target's subject. */
int jwks_meta_parse(const char *text, size_t len, const char *issuer, json_t **meta,
		    struct dp_err *err) DP_WUR;
/* The endpoint member name of meta (e.g. "jwks_uri"): present, a URL that may be fetched
 * (jwks_url_allowed). A borrowed string, or NULL with err naming the member. */
const char *jwks_meta_url(const json_t *meta, const char *name, struct dp_err *err);
/* Fetch and parse the issuer's metadata: the OIDC document (issuer +
 * "/.well-known/openid-configuration"), and when that fails RFC 8414's
 * ("/.well-known/oauth-authorization-server" inserted before the issuer's path). */
int jwks_discover(const char *issuer, const char *ca_file, json_t **meta,
		  struct dp_err *err) DP_WUR;

/* A trusted issuer's keys over the network: its jwks_uri, or the one its metadata names
 * (discovery), fetched with its ca_file. When cache_dir is set the last key set fetched is
 * kept there, and served when the issuer cannot be reached (a restart while the IdP is
 * down still verifies grants signed with keys already known). */
struct jwks_issuer {
	const char *issuer;
	const char *jwks_uri; /* NULL: discovery */
	const char *ca_file;
	const char *cache_dir; /* NULL: no cache */
};
struct dp_keyset *jwks_issuer_load(const struct jwks_issuer *src, struct dp_err *err);

#endif
