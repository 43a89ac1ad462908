// SPDX-License-Identifier: MIT
/*
 * policy: what the kernel layer lets a session reach, and where each route host is.
 *
 * Allowed destinations are the same for every session: the addresses of every delegate and
 * passthrough route's host on its port (resolved by deputyd itself, again every
 * resolve_interval seconds and on SIGHUP), the route's "addrs", the configured allow_cidrs
 * on any port, and — unless "allow_resolvers" is false — the nameservers of
 * /etc/resolv.conf on port 53 so the agent can resolve names. Loopback gets no implicit
 * allow. Unix sockets: deputyd's own and allow_unix, for every session. What the kernel
 * reports back is kevent.c's.
 *
 * The same resolution says where a route host is for destination binding (bind.c): its
 * resolved addresses are kept per host, also under "kernel": "off".
 *
 * Resolving may wait seconds for a slow or silent DNS server, so once deputyd serves it is
 * done in a thread (policy_refresh) that works on a copy of the routes and hands both
 * tables back through d->wake_fd; policy_collect swaps them in together on the loop, so
 * neither the kernel nor binding ever sees a half-updated one. Until then sessions keep,
 * and new ones get, the tables before.
 */
#include "deputyd.h"

#include <arpa/inet.h>
#include <deputy/event.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kernel.h"
#include "route.h"

struct host_addr { /* one resolved address of a route host */
	char *host;
	int family;
	uint8_t addr[16];
};

#define POLICY_MAX_UNRESOLVED 16

struct policy_tables {
	struct dp_kallow *allow; /* what sessions get */
	size_t n_allow, cap_allow;
	struct host_addr *hosts; /* where route hosts are (binding) */
	size_t n_hosts, cap_hosts;
	/* Route hosts the resolution could not resolve, so a kernel deny can name the host
	 * the agent most likely meant (a bare address says little). */
	struct {
		char host[256];
		int port;
	} unresolved[POLICY_MAX_UNRESOLVED];
	size_t n_unresolved;
};

/* One resolution in a thread: its own copy of everything it reads. */
struct policy_job {
	struct policy_tables
	    t; /* routes' addrs and allow_cidrs already in; the thread adds the rest */
	struct {
		char *host;
		int port;
		uint32_t rule;
	} * routes;
	size_t n_routes;
	bool resolvers;
	int wake_fd;
	bool done; /* under policy_lock */
};

static struct policy_tables current;
static bool have_current;
static pthread_mutex_t policy_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t policy_idle = PTHREAD_COND_INITIALIZER;
static struct policy_job *running; /* at most one resolution at a time */
static bool again;		   /* asked for while one ran: start another after it */

static void tables_free(struct policy_tables *t)
{
	for (size_t i = 0; i < t->n_hosts; i++)
		free(t->hosts[i].host);
	free(t->hosts);
	free(t->allow);
	*t = (struct policy_tables){0};
}

static void host_addr_add(struct policy_tables *t, const char *host, int family, const void *addr)
{
	size_t alen = family == AF_INET ? 4 : 16;
	struct host_addr *h;

	for (size_t i = 0; i < t->n_hosts; i++)
		if (t->hosts[i].family == family && strcmp(t->hosts[i].host, host) == 0 &&
		    memcmp(t->hosts[i].addr, addr, alen) == 0)
			return;
	if (dp_grow(&t->hosts, &t->cap_hosts, t->n_hosts, sizeof(*t->hosts)))
		return;
	h = &t->hosts[t->n_hosts];
	memset(h, 0, sizeof(*h));
	if (!(h->host = strdup(host)))
		return;
	h->family = family;
	memcpy(h->addr, addr, alen);
	t->n_hosts++;
}

/* One destination named twice (two hosts on one address, a route and allow_cidrs) gets
 * the union of what each says: DP_RULE_ROUTE then wins over DP_RULE_OPAQUE, so a connection
 * that some route wants mediated is never left untouched. */
static void allow_add(struct policy_tables *t, int family, const void *addr, int prefix,
		      uint16_t port, uint32_t rule)
{
	struct dp_kallow *a;

	for (size_t i = 0; i < t->n_allow; i++)
		if (t->allow[i].family == family && t->allow[i].prefix == prefix &&
		    t->allow[i].port == port &&
		    memcmp(t->allow[i].addr, addr, family == AF_INET ? 4 : 16) == 0) {
			t->allow[i].rule |= rule;
			return;
		}
	if (dp_grow(&t->allow, &t->cap_allow, t->n_allow, sizeof(*t->allow)))
		return;
	a = &t->allow[t->n_allow++];
	memset(a, 0, sizeof(*a));
	a->family = family;
	memcpy(a->addr, addr, family == AF_INET ? 4 : 16);
	a->prefix = prefix;
	a->port = port;
	a->rule = rule;
}

static void allow_host(struct policy_tables *t, const char *host, int port, uint32_t rule)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int rc = getaddrinfo(host, NULL, &hints, &res);

	if (rc != 0) {
		pr_warn("policy: cannot resolve route host %s: %s", host, gai_strerror(rc));
		if (t->n_unresolved < POLICY_MAX_UNRESOLVED) {
			snprintf(t->unresolved[t->n_unresolved].host, sizeof(t->unresolved[0].host),
				 "%s", host);
			t->unresolved[t->n_unresolved++].port = port;
		}
		return;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		const void *addr =
		    ai->ai_family == AF_INET
			? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
			: (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;

		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		allow_add(t, ai->ai_family, addr, ai->ai_family == AF_INET ? 32 : 128,
			  (uint16_t)port, rule);
		host_addr_add(t, host, ai->ai_family, addr);
	}
	freeaddrinfo(res);
}

static void allow_resolvers(struct policy_tables *t)
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
			allow_add(t, AF_INET, bin, 32, 53, DP_RULE_ALLOW);
		else if (inet_pton(AF_INET6, addr, bin) == 1)
			allow_add(t, AF_INET6, bin, 128, 53, DP_RULE_ALLOW);
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
	for (size_t i = 0; i < current.n_unresolved; i++)
		if (current.unresolved[i].port == port)
			return current.unresolved[i].host;
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

static void policy_job_free(struct policy_job *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->n_routes; i++)
		free(j->routes[i].host);
	free(j->routes);
	tables_free(&j->t);
	free(j);
}

/* The job for d->cfg as it is now: everything but the resolving. */
static struct policy_job *policy_job_new(struct deputyd *d)
{
	const struct dp_config *cfg = d->cfg;
	struct policy_job *j = calloc(1, sizeof(*j));

	if (!j || !(j->routes = calloc(cfg->n_routes + 1, sizeof(*j->routes)))) {
		free(j);
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct dp_route *rt = &cfg->routes[i];
		uint32_t rule = policy_route_rule(rt);

		j->routes[j->n_routes].port = rt->port;
		j->routes[j->n_routes].rule = rule;
		if (!(j->routes[j->n_routes++].host = strdup(rt->host))) {
			policy_job_free(j);
			return NULL;
		}
		for (size_t k = 0; k < rt->n_addrs; k++)
			allow_add(&j->t, rt->addrs[k].family, rt->addrs[k].addr,
				  rt->addrs[k].prefix, (uint16_t)rt->port, rule);
	}
	for (size_t i = 0; i < cfg->n_allow_cidrs; i++)
		allow_add(&j->t, cfg->allow_cidrs[i].family, cfg->allow_cidrs[i].addr,
			  cfg->allow_cidrs[i].prefix, 0, DP_RULE_ALLOW);
	j->resolvers = cfg->allow_resolvers;
	j->wake_fd = d->wake_fd;
	return j;
}

static void policy_job_run(struct policy_job *j)
{
	for (size_t i = 0; i < j->n_routes; i++)
		allow_host(&j->t, j->routes[i].host, j->routes[i].port, j->routes[i].rule);
	if (j->resolvers)
		allow_resolvers(&j->t);
}

static void *policy_thread(void *arg)
{
	struct policy_job *j = arg;
	uint64_t one = 1;

	policy_job_run(j);
	pthread_mutex_lock(&policy_lock);
	j->done = true;
	if (write(j->wake_fd, &one, sizeof(one)) < 0) {
		/* only a full counter fails, and then the loop wakes anyway */
	}
	pthread_cond_broadcast(&policy_idle);
	pthread_mutex_unlock(&policy_lock);
	return NULL;
}

/* Swaps in a job's tables, both at once: they are what sessions and binding get now. */
static void policy_take(struct policy_job *j)
{
	tables_free(&current);
	current = j->t;
	j->t = (struct policy_tables){0};
	have_current = true;
}

static void policy_apply_all(struct deputyd *d)
{
	if (!d->kernel)
		return;
	/* A killed session's block-all is never widened again. */
	for (struct session *s = d->sessions; s; s = s->next)
		if (!s->blocked && kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce,
						      current.allow, current.n_allow) != 0)
			pr_warn("session %s: cannot update kernel policy", s->id);
}

/* Every config change comes through policy_refresh or policy_allowed before sessions get
 * rules; a map write, quick enough for the loop. */
static void policy_proxy_configure(struct deputyd *d)
{
	if (d->kernel && kernel_proxy_configure(d->kernel, d->cfg) != 0)
		pr_warn("policy: cannot tell the kernel where the proxy listens");
}

size_t policy_allowed(struct deputyd *d, const struct dp_kallow **out)
{
	struct policy_job *j = policy_job_new(d);

	policy_proxy_configure(d);
	if (j) {
		policy_job_run(j);
		policy_take(j);
		policy_job_free(j);
	}
	*out = current.allow;
	return current.n_allow;
}

/* Before deputyd serves nothing waits yet: the first tables are computed right here. */
static void policy_ensure(struct deputyd *d)
{
	const struct dp_kallow *a;

	if (!have_current)
		policy_allowed(d, &a);
}

int policy_apply(struct deputyd *d, struct session *s)
{
	policy_ensure(d);
	if (!d->kernel)
		return 0;
	return kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce, current.allow,
				  current.n_allow);
}

void policy_refresh(struct deputyd *d)
{
	struct policy_job *j;
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (running) {
		again = true; /* the config may have changed since it started */
		return;
	}
	if (d->wake_fd < 0) {
		const struct dp_kallow *a;

		policy_allowed(d, &a); /* no loop yet (start): resolve here */
		policy_apply_all(d);
		return;
	}
	policy_proxy_configure(d);
	j = policy_job_new(d);
	if (!j) {
		pr_warn("policy: out of memory; kernel allow lists not refreshed");
		return;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, policy_thread, j);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		pr_warn("policy: cannot start a resolver thread: %s", strerror(rc));
		policy_job_free(j);
		return;
	}
	running = j;
	again = false;
}

void policy_collect(struct deputyd *d)
{
	struct policy_job *j = NULL;

	pthread_mutex_lock(&policy_lock);
	if (running && running->done) {
		j = running;
		running = NULL;
	}
	pthread_mutex_unlock(&policy_lock);
	if (!j)
		return;
	policy_take(j);
	policy_job_free(j);
	policy_apply_all(d);
	/* Shims deciding alone hold route hosts' addresses (table.c): theirs are stale now. */
	table_invalidate_all(d);
	if (again)
		policy_refresh(d);
}

bool policy_stop(struct deputyd *d)
{
	struct timespec until;
	bool idle;

	(void)d;
	/* getaddrinfo cannot be interrupted: wait a while for it, then leave it be. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&policy_lock);
	while (running && !running->done &&
	       pthread_cond_timedwait(&policy_idle, &policy_lock, &until) == 0) {
	}
	if (running && running->done) {
		policy_job_free(running);
		running = NULL;
	}
	idle = !running;
	pthread_mutex_unlock(&policy_lock);
	return idle;
}

int policy_unix_apply(struct deputyd *d)
{
	char canon[PATH_MAX];
	const char **addrs;
	size_t n = d->cfg->n_allow_unix, k = 0;
	int r;

	if (!d->kernel)
		return 0;
	addrs = calloc(n + 2, sizeof(*addrs));
	if (!addrs)
		return -ENOMEM;
	/* The shim talks to deputyd through its socket, always: by the config's spelling, and
	 * by the canonical one `deputy run` hands agents (once the socket exists). */
	addrs[k++] = d->cfg->socket;
	if (realpath(d->cfg->socket, canon) && strcmp(canon, d->cfg->socket) != 0 &&
	    strlen(canon) <= DP_EV_PATH_LEN - 1)
		addrs[k++] = canon;
	for (size_t i = 0; i < n; i++)
		addrs[k++] = d->cfg->allow_unix[i];
	r = kernel_unix_allow_set(d->kernel, addrs, k);
	free(addrs);
	return r;
}

/* rt comes from the config in force, so its "addrs" are read there; the host table is the
 * last resolution's (a host added by a reload has no address until its resolution is in:
 * until then binding refuses, as the kernel does). */
bool policy_route_has_addr(struct deputyd *d, const struct dp_route *rt, int family,
			   const uint8_t *addr)
{
	policy_ensure(d);
	for (size_t i = 0; i < rt->n_addrs; i++)
		if (route_cidr_has(&rt->addrs[i], family, addr))
			return true;
	for (size_t i = 0; i < current.n_hosts; i++)
		if (current.hosts[i].family == family &&
		    strcmp(current.hosts[i].host, rt->host) == 0 &&
		    memcmp(current.hosts[i].addr, addr, family == AF_INET ? 4 : 16) == 0)
			return true;
	return false;
}

size_t policy_route_addrs(struct deputyd *d, const struct dp_route *rt,
			  void (*fn)(void *ctx, int family, const uint8_t *addr, int prefix),
			  void *ctx)
{
	size_t n = 0;

	policy_ensure(d);
	for (size_t i = 0; i < rt->n_addrs; i++, n++)
		fn(ctx, rt->addrs[i].family, rt->addrs[i].addr, rt->addrs[i].prefix);
	for (size_t i = 0; i < current.n_hosts; i++)
		if (strcmp(current.hosts[i].host, rt->host) == 0) {
			fn(ctx, current.hosts[i].family, current.hosts[i].addr,
			   current.hosts[i].family == AF_INET ? 32 : 128);
			n++;
		}
	return n;
}
