// SPDX-License-Identifier: MIT
/*
 * policy: what the kernel layer lets a session reach.
 *
 * Allowed destinations are the same for every session: the addresses of every delegate and
 * passthrough route's host on its port (resolved by deputyd itself, again every
 * resolve_interval seconds and on SIGHUP), the configured allow_cidrs on any port, and —
 * unless "allow_resolvers" is false — the nameservers of /etc/resolv.conf on port 53 so the
 * agent can resolve names. Loopback gets no implicit allow. Unix sockets: deputyd's own and
 * allow_unix, for every session. What the kernel reports back is kevent.c's.
 */
#include "deputyd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <deputy/event.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "kernel.h"

static struct dp_kallow *allow;
static size_t n_allow, cap_allow;

static void allow_add(int family, const void *addr, int prefix, uint16_t port)
{
	struct dp_kallow *a;

	for (size_t i = 0; i < n_allow; i++)
		if (allow[i].family == family && allow[i].prefix == prefix &&
		    allow[i].port == port &&
		    memcmp(allow[i].addr, addr, family == AF_INET ? 4 : 16) == 0)
			return;
	if (n_allow == cap_allow) {
		size_t cap = cap_allow ? cap_allow * 2 : 32;
		struct dp_kallow *n = realloc(allow, cap * sizeof(*n));

		if (!n)
			return;
		allow = n;
		cap_allow = cap;
	}
	a = &allow[n_allow++];
	memset(a, 0, sizeof(*a));
	a->family = family;
	memcpy(a->addr, addr, family == AF_INET ? 4 : 16);
	a->prefix = prefix;
	a->port = port;
}

static void allow_host(const char *host, int port)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int rc = getaddrinfo(host, NULL, &hints, &res);

	if (rc != 0) {
		pr_warn("policy: cannot resolve route host %s: %s", host, gai_strerror(rc));
		return;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET)
			allow_add(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, 32,
				  (uint16_t)port);
		else if (ai->ai_family == AF_INET6)
			allow_add(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 128,
				  (uint16_t)port);
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
			allow_add(AF_INET, bin, 32, 53);
		else if (inet_pton(AF_INET6, addr, bin) == 1)
			allow_add(AF_INET6, bin, 128, 53);
	}
	fclose(f);
}

static void policy_compute(struct deputyd *d)
{
	const struct dp_config *cfg = d->cfg;

	n_allow = 0;
	for (size_t i = 0; i < cfg->n_routes; i++)
		if (cfg->routes[i].action != DP_ACTION_DENY)
			allow_host(cfg->routes[i].host, cfg->routes[i].port);
	for (size_t i = 0; i < cfg->n_allow_cidrs; i++)
		allow_add(cfg->allow_cidrs[i].family, cfg->allow_cidrs[i].addr,
			  cfg->allow_cidrs[i].prefix, 0);
	if (cfg->allow_resolvers)
		allow_resolvers();
}

size_t policy_allowed(struct deputyd *d, const struct dp_kallow **out)
{
	policy_compute(d);
	*out = allow;
	return n_allow;
}

int policy_apply(struct deputyd *d, struct session *s)
{
	if (!d->kernel)
		return 0;
	if (!allow)
		policy_compute(d);
	return kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce, allow, n_allow);
}

int policy_unix_apply(struct deputyd *d)
{
	const char **addrs;
	size_t n = d->cfg->n_allow_unix;
	int r;

	if (!d->kernel)
		return 0;
	addrs = calloc(n + 1, sizeof(*addrs));
	if (!addrs)
		return -ENOMEM;
	/* The shim and deputy run talk to deputyd through its socket, always. */
	addrs[0] = d->cfg->socket;
	for (size_t i = 0; i < n; i++)
		addrs[i + 1] = d->cfg->allow_unix[i];
	r = kernel_unix_allow_set(d->kernel, addrs, n + 1);
	free(addrs);
	return r;
}

void policy_refresh(struct deputyd *d)
{
	if (!d->kernel)
		return;
	policy_compute(d);
	for (struct session *s = d->sessions; s; s = s->next)
		if (kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce, allow, n_allow) != 0)
			pr_warn("session %s: cannot update kernel policy", s->id);
}
