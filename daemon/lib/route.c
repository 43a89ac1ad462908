// SPDX-License-Identifier: MIT
/*
 * route: matches a request (host, port, method, path) to the first route of the config that
 * covers it. The request side is normalised exactly as config.c normalised the routes (one
 * host and path normaliser, in url.c), so that matching is plain comparison plus fnmatch:
 * "Mail.Internal." is the route host "mail.internal", "/x//../%61dmin" is "/admin".
 *
 * A deny route is matched the way the most lenient backend would read the path: regardless
 * of letter case (IIS, case-insensitive file systems) and also with ';' parameters cut from
 * each segment (Tomcat, Spring: "/admin;x/users" is "/admin/users"). A delegate or
 * passthrough route is matched as written, so it never covers more than it says.
 *
 * The shim compiles this file too (its session table, under "token_binding": "session"), so
 * a request it decides alone is matched exactly as deputyd would match it.
 */
#include "route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <string.h>

#include "url.h"

/* The request's host as the shim saw it: maybe "[::1]", maybe "Mail.Internal.". */
static int route_request_host(const char *host, char *out, size_t outsz)
{
	size_t hlen = strlen(host);
	char tmp[URL_HOST_MAX + 2];

	if (hlen > 1 && host[hlen - 1] == '.' && host[0] != '[') {
		if (hlen > sizeof(tmp) - 1)
			return -EINVAL;
		memcpy(tmp, host, hlen - 1);
		tmp[hlen - 1] = '\0';
		host = tmp;
	}
	return url_host_normalize(host, out, outsz);
}

static bool route_path_matches(const struct dp_route *rt, const char *path, const char *bare)
{
	if (rt->action != DP_ACTION_DENY)
		return fnmatch(rt->path, path, 0) == 0;
	return fnmatch(rt->path, path, FNM_CASEFOLD) == 0 ||
	       fnmatch(rt->path, bare, FNM_CASEFOLD) == 0;
}

bool route_host_is(const struct dp_route *rt, const char *host)
{
	char h[INET6_ADDRSTRLEN + URL_HOST_MAX];

	return host && route_request_host(host, h, sizeof(h)) == 0 && strcmp(rt->host, h) == 0;
}

const struct dp_route *route_match_in(const struct dp_route *routes, size_t n_routes,
				      const char *host, int port, const char *method,
				      const char *path)
{
	char want[INET6_ADDRSTRLEN + URL_HOST_MAX];
	char pbuf[URL_PATH_MAX + 1], bare[URL_PATH_MAX + 1];

	if (!routes || !host || route_request_host(host, want, sizeof(want)) != 0)
		return NULL;
	if (path) {
		size_t plen = strcspn(path, "?#");

		if (plen > URL_PATH_MAX)
			return NULL; /* longer than any sane request path: never matches */
		url_path_normalize(path, plen, pbuf);
		url_path_strip_params(pbuf, bare);
	}

	for (size_t i = 0; i < n_routes; i++) {
		const struct dp_route *rt = &routes[i];

		if (rt->port != port || strcmp(rt->host, want) != 0)
			continue;
		if (rt->method && (!method || strcmp(rt->method, method) != 0))
			continue;
		if (rt->path && (!path || !route_path_matches(rt, pbuf, bare)))
			continue;
		return rt;
	}
	return NULL;
}

bool route_cidr_has(const struct dp_cidr *c, int family, const uint8_t *addr)
{
	int full = c->prefix / 8, rest = c->prefix % 8;

	if (c->family != family || memcmp(c->addr, addr, (size_t)full) != 0)
		return false;
	return rest == 0 || ((c->addr[full] ^ addr[full]) & (0xff00 >> rest)) == 0;
}
