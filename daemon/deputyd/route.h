/* SPDX-License-Identifier: MIT */
/* route: which of the config's routes a request falls under (design: Policy: routes). */
#ifndef DEPUTY_ROUTE_H
#define DEPUTY_ROUTE_H

#include "config.h"

/* First match wins, in config order. host compared case-insensitively (brackets around an
 * IPv6 literal and one trailing dot ignored), port exactly, method exactly (upper-case),
 * path as a glob against the request path without query or fragment, after
 * url_path_normalize. A NULL method or path matches only routes that leave it unset. NULL
 * when none matches. */
const struct dp_route *route_match(const struct dp_config *cfg, const char *host, int port,
				   const char *method, const char *path);

#endif
