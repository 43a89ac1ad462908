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
 *
 * Resolving may wait seconds for a slow or silent DNS server, so once deputyd serves it is
 * done in a thread (policy_refresh) that works on a copy of the hosts and hands its list
 * back through d->wake_fd; until then sessions keep, and new ones get, the list before.
 */
#include "deputyd.h"

#include <arpa/inet.h>
#include <deputy/event.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kernel.h"

struct policy_list {
	struct dp_kallow *v;
	size_t n, cap;
};

/* One resolution in a thread: its own copy of everything it reads. */
struct policy_job {
	struct policy_list list; /* allow_cidrs already in; the thread adds the rest */
	struct {
		char *host;
		int port;
	} * hosts;
	size_t n_hosts;
	bool resolvers;
	int wake_fd;
	bool done; /* under policy_lock */
};

static struct policy_list current; /* what sessions get */
static bool have_current;
static pthread_mutex_t policy_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t policy_idle = PTHREAD_COND_INITIALIZER;
static struct policy_job *running; /* at most one resolution at a time */
static bool again;		   /* asked for while one ran: start another after it */

static void allow_add(struct policy_list *l, int family, const void *addr, int prefix,
		      uint16_t port)
{
	struct dp_kallow *a;

	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].family == family && l->v[i].prefix == prefix && l->v[i].port == port &&
		    memcmp(l->v[i].addr, addr, family == AF_INET ? 4 : 16) == 0)
			return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		struct dp_kallow *n = realloc(l->v, cap * sizeof(*n));

		if (!n)
			return;
		l->v = n;
		l->cap = cap;
	}
	a = &l->v[l->n++];
	memset(a, 0, sizeof(*a));
	a->family = family;
	memcpy(a->addr, addr, family == AF_INET ? 4 : 16);
	a->prefix = prefix;
	a->port = port;
}

static void allow_host(struct policy_list *l, const char *host, int port)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int rc = getaddrinfo(host, NULL, &hints, &res);

	if (rc != 0) {
		pr_warn("policy: cannot resolve route host %s: %s", host, gai_strerror(rc));
		return;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET)
			allow_add(l, AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, 32,
				  (uint16_t)port);
		else if (ai->ai_family == AF_INET6)
			allow_add(l, AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
				  128, (uint16_t)port);
	}
	freeaddrinfo(res);
}

static void allow_resolvers(struct policy_list *l)
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
			allow_add(l, AF_INET, bin, 32, 53);
		else if (inet_pton(AF_INET6, addr, bin) == 1)
			allow_add(l, AF_INET6, bin, 128, 53);
	}
	fclose(f);
}

static void policy_job_free(struct policy_job *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->n_hosts; i++)
		free(j->hosts[i].host);
	free(j->hosts);
	free(j->list.v);
	free(j);
}

/* The job for d->cfg as it is now: everything but the resolving. */
static struct policy_job *policy_job_new(struct deputyd *d)
{
	const struct dp_config *cfg = d->cfg;
	struct policy_job *j = calloc(1, sizeof(*j));

	if (!j || !(j->hosts = calloc(cfg->n_routes + 1, sizeof(*j->hosts)))) {
		free(j);
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		if (cfg->routes[i].action == DP_ACTION_DENY)
			continue;
		j->hosts[j->n_hosts].port = cfg->routes[i].port;
		if (!(j->hosts[j->n_hosts++].host = strdup(cfg->routes[i].host))) {
			policy_job_free(j);
			return NULL;
		}
	}
	for (size_t i = 0; i < cfg->n_allow_cidrs; i++)
		allow_add(&j->list, cfg->allow_cidrs[i].family, cfg->allow_cidrs[i].addr,
			  cfg->allow_cidrs[i].prefix, 0);
	j->resolvers = cfg->allow_resolvers;
	j->wake_fd = d->wake_fd;
	return j;
}

static void policy_job_run(struct policy_job *j)
{
	for (size_t i = 0; i < j->n_hosts; i++)
		allow_host(&j->list, j->hosts[i].host, j->hosts[i].port);
	if (j->resolvers)
		allow_resolvers(&j->list);
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

/* Swaps in a job's list: it is what sessions get from now on. */
static void policy_take(struct policy_job *j)
{
	free(current.v);
	current = j->list;
	j->list = (struct policy_list){0};
	have_current = true;
}

static void policy_apply_all(struct deputyd *d)
{
	for (struct session *s = d->sessions; s; s = s->next)
		if (kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce, current.v,
				       current.n) != 0)
			pr_warn("session %s: cannot update kernel policy", s->id);
}

size_t policy_allowed(struct deputyd *d, const struct dp_kallow **out)
{
	struct policy_job *j = policy_job_new(d);

	if (j) {
		policy_job_run(j);
		policy_take(j);
		policy_job_free(j);
	}
	*out = current.v;
	return current.n;
}

int policy_apply(struct deputyd *d, struct session *s)
{
	const struct dp_kallow *a;

	if (!d->kernel)
		return 0;
	if (!have_current)
		policy_allowed(d, &a); /* before deputyd serves: nothing waits yet */
	return kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce, current.v, current.n);
}

void policy_refresh(struct deputyd *d)
{
	struct policy_job *j;
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (!d->kernel)
		return;
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
	if (again)
		policy_refresh(d);
}

bool policy_stop(struct deputyd *d)
{
	struct timespec until;
	bool idle;

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
