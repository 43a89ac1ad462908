// SPDX-License-Identifier: MIT
/*
 * route: matches a request (host, port, method, path) to the first route of the config that
 * covers it. The request side is normalised exactly as config.c normalised the routes (one
 * host and path normaliser, in url.c), so that matching is plain comparison plus fnmatch:
 * "Mail.Internal." is the route host "mail.internal", "/x/../%61dmin" is "/admin".
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

const struct dp_route *route_match(const struct dp_config *cfg, const char *host, int port,
				   const char *method, const char *path)
{
	char want[INET6_ADDRSTRLEN + URL_HOST_MAX];
	char pbuf[URL_PATH_MAX + 1];

	if (!cfg || !host || route_request_host(host, want, sizeof(want)) != 0)
		return NULL;
	if (path) {
		size_t plen = strcspn(path, "?#");

		if (plen > URL_PATH_MAX)
			return NULL; /* longer than any sane request path: never matches */
		url_path_normalize(path, plen, pbuf);
	}

	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct dp_route *rt = &cfg->routes[i];

		if (rt->port != port || strcmp(rt->host, want) != 0)
			continue;
		if (rt->method && (!method || strcmp(rt->method, method) != 0))
			continue;
		if (rt->path && (!path || fnmatch(rt->path, pbuf, 0) != 0))
			continue;
		return rt;
	}
	return NULL;
}
