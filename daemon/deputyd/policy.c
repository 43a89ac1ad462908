// SPDX-License-Identifier: MIT
/*
 * policy: what the kernel layer lets a session reach.
 *
 * Allowed destinations are the same for every session: the addresses of every delegate and
 * passthrough route's host on its port (resolved by deputyd itself, again every
 * resolve_interval seconds and on SIGHUP), the configured allow_cidrs on any port, and —
 * unless "allow_resolvers" is false — the nameservers of /etc/resolv.conf on port 53 so the
 * agent can resolve names. Loopback gets no implicit allow. What the kernel reports back is
 * kevent.c's.
 *
 * The same resolution says where a route host is for destination binding (bind.c): its
 * resolved addresses and its route's "addrs" are kept per host, also under "kernel": "off".
 */
#include "deputyd.h"

#include <arpa/inet.h>
#include <deputy/event.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "kernel.h"
#include "route.h"

static struct dp_kallow *allow;
static size_t n_allow, cap_allow;
static bool computed;

struct host_addr { /* one resolved address of a route host */
	char *host;
	int family;
	uint8_t addr[16];
};
static struct host_addr *host_addrs;
static size_t n_host_addrs, cap_host_addrs;

/* Route hosts the last resolution could not resolve, so a kernel deny can name the host
 * the agent most likely meant (a bare address says little). */
#define POLICY_MAX_UNRESOLVED 16
static struct {
	char host[256];
	int port;
} unresolved[POLICY_MAX_UNRESOLVED];
static size_t n_unresolved;

static void host_addrs_clear(void)
{
	for (size_t i = 0; i < n_host_addrs; i++)
		free(host_addrs[i].host);
	n_host_addrs = 0;
}

static void host_addr_add(const char *host, int family, const void *addr)
{
	size_t alen = family == AF_INET ? 4 : 16;
	struct host_addr *h;

	for (size_t i = 0; i < n_host_addrs; i++)
		if (host_addrs[i].family == family && strcmp(host_addrs[i].host, host) == 0 &&
		    memcmp(host_addrs[i].addr, addr, alen) == 0)
			return;
	if (dp_grow(&host_addrs, &cap_host_addrs, n_host_addrs, sizeof(*host_addrs)))
		return;
	h = &host_addrs[n_host_addrs];
	memset(h, 0, sizeof(*h));
	if (!(h->host = strdup(host)))
		return;
	h->family = family;
	memcpy(h->addr, addr, alen);
	n_host_addrs++;
}

/* One destination named twice (two hosts on one address, a route and allow_cidrs) gets
 * the union of what each says: DP_RULE_ROUTE then wins over DP_RULE_OPAQUE, so a connection
 * that some route wants mediated is never left untouched. */
static void allow_add(int family, const void *addr, int prefix, uint16_t port, uint32_t rule)
{
	struct dp_kallow *a;

	for (size_t i = 0; i < n_allow; i++)
		if (allow[i].family == family && allow[i].prefix == prefix &&
		    allow[i].port == port &&
		    memcmp(allow[i].addr, addr, family == AF_INET ? 4 : 16) == 0) {
			allow[i].rule |= rule;
			return;
		}
	if (dp_grow(&allow, &cap_allow, n_allow, sizeof(*allow)))
		return;
	a = &allow[n_allow++];
	memset(a, 0, sizeof(*a));
	a->family = family;
	memcpy(a->addr, addr, family == AF_INET ? 4 : 16);
	a->prefix = prefix;
	a->port = port;
	a->rule = rule;
}

static void allow_host(const char *host, int port, uint32_t rule)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int rc = getaddrinfo(host, NULL, &hints, &res);

	if (rc != 0) {
		pr_warn("policy: cannot resolve route host %s: %s", host, gai_strerror(rc));
		if (n_unresolved < POLICY_MAX_UNRESOLVED) {
			snprintf(unresolved[n_unresolved].host, sizeof(unresolved[0].host), "%s",
				 host);
			unresolved[n_unresolved++].port = port;
		}
		return;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET) {
			allow_add(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, 32,
				  (uint16_t)port, rule);
			host_addr_add(host, AF_INET,
				      &((struct sockaddr_in *)ai->ai_addr)->sin_addr);
		} else if (ai->ai_family == AF_INET6) {
			allow_add(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 128,
				  (uint16_t)port, rule);
			host_addr_add(host, AF_INET6,
				      &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr);
		}
	}
	freeaddrinfo(res);
}

static void allow_resolvers(void)
{
	FILE *f = fopen("/etc/resolv.conf", "re");
	char line[512], addr[INET6_ADDRSTRLEN + 1];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned char bin[16];

		if (sscanf(line, " nameserver %46s", addr) != 1)
			continue;
		if (inet_pton(AF_INET, addr, bin) == 1)
			allow_add(AF_INET, bin, 32, 53, DP_RULE_ALLOW);
		else if (inet_pton(AF_INET6, addr, bin) == 1)
			allow_add(AF_INET6, bin, 128, 53, DP_RULE_ALLOW);
	}
	fclose(f);
}

/* What a route makes of its destination (DP_RULE_*): a deny route's is only marked, so the
 * shim refuses there what it cannot read, and is allowed only if something else allows it. */
static uint32_t policy_route_rule(const struct dp_route *rt)
{
	uint32_t strict = rt->action == DP_ACTION_PASSTHROUGH ? 0 : DP_RULE_STRICT;

	if (rt->action == DP_ACTION_DENY)
		return strict;
	return DP_RULE_ALLOW | strict | (rt->tls_opaque ? DP_RULE_OPAQUE : DP_RULE_ROUTE);
}

const char *policy_unresolved(int port)
{
	for (size_t i = 0; i < n_unresolved; i++)
		if (unresolved[i].port == port)
			return unresolved[i].host;
	return NULL;
}

int policy_check_hosts(const struct dp_config *cfg)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	int warned = 0;

	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct dp_route *rt = &cfg->routes[i];
		int rc;

		/* a deny route allows nothing; "addrs" says where a host is without DNS */
		if (rt->action == DP_ACTION_DENY || rt->n_addrs)
			continue;
		rc = getaddrinfo(rt->host, NULL, &hints, &res);
		if (rc == 0) {
			freeaddrinfo(res);
			continue;
		}
		pr_warn("warning: routes[%zu].host: %s does not resolve (%s): the kernel layer "
			"will allow no connection to it (\"addrs\" can say where it is)",
			i, rt->host, gai_strerror(rc));
		warned++;
	}
	return warned;
}

static void policy_compute(struct deputyd *d)
{
	const struct dp_config *cfg = d->cfg;

	n_allow = 0;
	n_unresolved = 0;
	host_addrs_clear();
	computed = true;
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct dp_route *rt = &cfg->routes[i];
		uint32_t rule = policy_route_rule(rt);

		allow_host(rt->host, rt->port, rule);
		for (size_t k = 0; k < rt->n_addrs; k++)
			allow_add(rt->addrs[k].family, rt->addrs[k].addr, rt->addrs[k].prefix,
				  (uint16_t)rt->port, rule);
	}
	for (size_t i = 0; i < cfg->n_allow_cidrs; i++)
		allow_add(cfg->allow_cidrs[i].family, cfg->allow_cidrs[i].addr,
			  cfg->allow_cidrs[i].prefix, 0, DP_RULE_ALLOW);
	if (cfg->allow_resolvers)
		allow_resolvers();
	/* Here because every config change comes through here before sessions get rules. */
	if (d->kernel && kernel_proxy_configure(d->kernel, cfg) != 0)
		pr_warn("policy: cannot tell the kernel where the proxy listens");
}

size_t policy_allowed(struct deputyd *d, const struct dp_kallow **out)
{
	policy_compute(d);
	*out = allow;
	return n_allow;
}

int policy_apply(struct deputyd *d, struct session *s)
{
	if (!computed)
		policy_compute(d);
	if (!d->kernel)
		return 0;
	return kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce, allow, n_allow);
}

void policy_refresh(struct deputyd *d)
{
	policy_compute(d);
	if (!d->kernel)
		return;
	for (struct session *s = d->sessions; s; s = s->next)
		if (kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce, allow, n_allow) != 0)
			pr_warn("session %s: cannot update kernel policy", s->id);
}

bool policy_route_has_addr(struct deputyd *d, const struct dp_route *rt, int family,
			   const uint8_t *addr)
{
	if (!computed)
		policy_compute(d);
	for (size_t i = 0; i < rt->n_addrs; i++)
		if (route_cidr_has(&rt->addrs[i], family, addr))
			return true;
	for (size_t i = 0; i < n_host_addrs; i++)
		if (host_addrs[i].family == family && strcmp(host_addrs[i].host, rt->host) == 0 &&
		    memcmp(host_addrs[i].addr, addr, family == AF_INET ? 4 : 16) == 0)
			return true;
	return false;
}

size_t policy_route_addrs(struct deputyd *d, const struct dp_route *rt,
			  void (*fn)(void *ctx, int family, const uint8_t *addr, int prefix),
			  void *ctx)
{
	size_t n = 0;

	if (!computed)
		policy_compute(d);
	for (size_t i = 0; i < rt->n_addrs; i++, n++)
		fn(ctx, rt->addrs[i].family, rt->addrs[i].addr, rt->addrs[i].prefix);
	for (size_t i = 0; i < n_host_addrs; i++)
		if (strcmp(host_addrs[i].host, rt->host) == 0) {
			fn(ctx, host_addrs[i].family, host_addrs[i].addr,
			   host_addrs[i].family == AF_INET ? 32 : 128);
			n++;
		}
	return n;
}
