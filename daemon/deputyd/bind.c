// SPDX-License-Identifier: MIT
/*
 * bind: destination binding (design: Policy: routes). A token for a route goes only where
 * the route's host is: the connection the request travels on must really go to one of the
 * host's addresses (as deputyd resolved them, or the route's "addrs") on the route's port,
 * and the TLS SNI and an absolute-form target must name the route host as Host does.
 * Otherwise an agent pointed elsewhere (curl --resolve, an IP with a Host header, a name
 * in allow_cidrs) would carry the user's token to a server the route never meant.
 *
 * Where the connection goes is the kernel's word: the conns map under the socket's cookie
 * (kernel_conn_lookup), which also proves the socket is one of this session's. Under
 * "kernel": "off" there is no kernel to ask, and the peer address the shim reports is used.
 */
#include "bind.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "kernel.h"
#include "route.h"
#include "url.h"

static int bind_names(const struct decide_req *r, const struct dp_route *rt, struct dp_err *err)
{
	struct url_parts u;
	struct dp_err ignored;

	if (r->sni && r->sni[0] && !route_host_is(rt, r->sni)) {
		dp_err_set(err, "TLS SNI \"%.200s\" does not name the route host %s", r->sni,
			   rt->host);
		return -EPERM;
	}
	if (strncasecmp(r->target, "http://", 7) && strncasecmp(r->target, "https://", 8))
		return 0;
	if (url_parse_http(r->target, &u, &ignored) != 0 || !route_host_is(rt, u.host)) {
		dp_err_set(err, "the request target names another host than the route host %s",
			   rt->host);
		return -EPERM;
	}
	return 0;
}

/* Where the request's connection really goes: family, address (network order), port. */
static int bind_dest(struct deputyd *d, struct session *s, const struct decide_req *r, int *family,
		     uint8_t addr[16], int *port, struct dp_err *err)
{
	struct dp_conn c;

	if (!d->kernel) {
		if (r->peer_family != AF_INET && r->peer_family != AF_INET6) {
			dp_err_set(err, "the request's connection has no known destination");
			return -EPERM;
		}
		*family = r->peer_family;
		memcpy(addr, r->peer_addr, 16);
		if (*family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr)) {
			*family = AF_INET; /* as the kernel layer reports it */
			memmove(addr, addr + 12, 4);
			memset(addr + 4, 0, 12);
		}
		*port = r->port;
		return 0;
	}
	if (kernel_conn_lookup(d->kernel, r->cookie, &c) != 0 || c.cgid != s->cg_id) {
		dp_err_set(err, "the kernel layer knows no connection of this session for the "
				"request");
		return -EPERM;
	}
	*family = c.family;
	memcpy(addr, c.addr, 16);
	*port = c.port;
	return 0;
}

int bind_check(struct deputyd *d, struct session *s, const struct decide_req *r,
	       const struct dp_route *rt, struct dp_err *err)
{
	char text[INET6_ADDRSTRLEN];
	uint8_t addr[16] = {0};
	int family, port, rc;

	if ((rc = bind_names(r, rt, err)) || (rc = bind_dest(d, s, r, &family, addr, &port, err)))
		return rc;
	if (port == rt->port && policy_route_has_addr(d, rt, family, addr))
		return 0;
	if (!inet_ntop(family, addr, text, sizeof(text)))
		snprintf(text, sizeof(text), "?");
	dp_err_set(err, "the connection goes to %s%s%s:%d, not to the route host %s:%d",
		   family == AF_INET6 ? "[" : "", text, family == AF_INET6 ? "]" : "", port,
		   rt->host, rt->port);
	return -EPERM;
}
