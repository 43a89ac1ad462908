/* SPDX-License-Identifier: MIT */
/* route: which of the config's routes a request falls under (design: Policy: routes). */
#ifndef DEPUTY_ROUTE_H
#define DEPUTY_ROUTE_H

#include <stdint.h>

#include "config.h"

/* First match wins, in config order. host compared case-insensitively (brackets around an
 * IPv6 literal and one trailing dot ignored), port exactly, method exactly (upper-case),
 * path as a glob against the request path without query or fragment, after
 * url_path_normalize; a deny route's glob also case-insensitively and against the path
 * without ';' parameters. A NULL method or path matches only routes that leave it unset.
 * NULL when none matches. */
const struct dp_route *route_match_in(const struct dp_route *routes, size_t n_routes,
				      const char *host, int port, const char *method,
				      const char *path);

static inline const struct dp_route *route_match(const struct dp_config *cfg, const char *host,
						 int port, const char *method, const char *path)
{
	return cfg ? route_match_in(cfg->routes, cfg->n_routes, host, port, method, path) : NULL;
}

/* Does host (as a request, SNI or URL names it) name rt's host, as route_match compares? */
bool route_host_is(const struct dp_route *rt, const char *host);

/* Is addr (family AF_INET: 4 bytes, AF_INET6: 16, network order) inside c? */
bool route_cidr_has(const struct dp_cidr *c, int family, const uint8_t *addr);

#endif
