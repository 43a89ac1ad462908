/* SPDX-License-Identifier: MIT */
/*
 * url: the one place daemon code takes URLs and hosts apart. http(s) URLs are parsed with
 * libcurl's URL API (CURLU); what deputy adds is its own strictness (no user info, no
 * fragment, no control bytes), the loopback rule, route host and request path
 * normalisation, and the path of an HTTP request target.
 */
#ifndef DEPUTY_URL_H
#define DEPUTY_URL_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define URL_MAX 2048	  /* issuers, audiences, jwks_uri */
#define URL_HOST_MAX 253  /* a DNS name */
#define URL_PATH_MAX 4096 /* request paths that can match a route */

struct url_parts {
	bool https;
	char host[URL_HOST_MAX + 1]; /* lower-case, an IPv6 literal without its brackets */
};

/* An http:// or https:// URL as config and key fetching accept it: at most URL_MAX bytes,
 * no spaces or control bytes, no fragment, a host and no user info. 0, or -EINVAL with a
 * one-line reason in err. */
int url_parse_http(const char *s, struct url_parts *out, struct dp_err *err) DP_WUR;

/* Spaces, control bytes or DEL: what a URL, a path or a glob of one never carries raw. */
bool url_has_ctl_or_space(const char *s);

/* Keys fetched in clear text could be swapped on the way: https://, or http:// only to a
 * loopback host (a test IdP, a sidecar), which cannot be intercepted off the host. */
bool url_fetch_allowed(const struct url_parts *u);

/* "localhost", 127.0.0.0/8, ::1 (with or without brackets); any letter case. */
bool url_host_is_loopback(const char *host);
/* The same for a binary address of family AF_INET or AF_INET6. */
bool url_addr_is_loopback(int family, const void *addr);

/*
 * A route host: a DNS name (letters, digits, '-', '_', labels of 1..63), an IPv4 literal or
 * an IPv6 literal with or without brackets, written lower-case (IPv6 in canonical text) into
 * out, so that matching is a plain comparison. 0 or -EINVAL.
 */
int url_host_normalize(const char *in, char *out, size_t outsz) DP_WUR;

/*
 * A request path as the backend will understand it: percent-encoded unreserved characters
 * decoded (RFC 3986 §6.2.2.2), then dot segments removed (§5.2.4). Other escapes (%2F, %00,
 * …) stay encoded. in holds n <= URL_PATH_MAX bytes; out has room for n + 1 and the result
 * is never longer than the input.
 */
void url_path_normalize(const char *in, size_t n, char *out);

/* The path of an HTTP request target, origin-form ("/p?q") or absolute-form
 * ("https://h/p?q", RFC 9112 §3.2.2), without query or fragment; "/" when an absolute-form
 * target has none. 0, -EINVAL (authority- or asterisk-form, or a bad URL) or -ENOSPC. */
int url_target_path(const char *target, char *out, size_t outsz) DP_WUR;

#endif
