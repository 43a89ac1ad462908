// SPDX-License-Identifier: MIT
/*
 * policy: what the kernel layer lets a session reach, and what it reports back.
 *
 * Allowed destinations are the same for every session: the addresses of every delegate and
 * passthrough route's host on its port (resolved by deputyd itself, again every
 * resolve_interval seconds and on SIGHUP), the configured allow_cidrs on any port, and —
 * unless "allow_resolvers" is false — the nameservers of /etc/resolv.conf on port 53 so the
 * agent can resolve names. Loopback gets no implicit allow. Kernel events become `connect`
 * (and `deny`, `disconnect`) records of the session whose cgroup they came from.
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

static struct dp_kallow *allow;
static size_t n_allow, cap_allow;

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
	a->rule = rule;
}

static void allow_host(const char *host, int port, uint32_t rule)
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
				  (uint16_t)port, rule);
		else if (ai->ai_family == AF_INET6)
			allow_add(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 128,
				  (uint16_t)port, rule);
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

static void policy_compute(struct deputyd *d)
{
	const struct dp_config *cfg = d->cfg;

	n_allow = 0;
	for (size_t i = 0; i < cfg->n_routes; i++)
		allow_host(cfg->routes[i].host, cfg->routes[i].port,
			   policy_route_rule(&cfg->routes[i]));
	for (size_t i = 0; i < cfg->n_allow_cidrs; i++)
		allow_add(cfg->allow_cidrs[i].family, cfg->allow_cidrs[i].addr,
			  cfg->allow_cidrs[i].prefix, 0, DP_RULE_ALLOW);
	if (cfg->allow_resolvers)
		allow_resolvers();
	/* Here because every config change comes through here before sessions get rules. */
	if (kernel_proxy_configure(d->kernel, cfg) != 0)
		pr_warn("policy: cannot tell the kernel where the proxy listens");
}

int policy_apply(struct deputyd *d, struct session *s)
{
	if (!d->kernel)
		return 0;
	if (!allow)
		policy_compute(d);
	return kernel_session_set(d->kernel, s->cg_id, d->cfg->enforce, allow, n_allow);
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

static struct session *session_by_cgid(struct deputyd *d, uint64_t cgid)
{
	for (struct session *s = d->sessions; s; s = s->next)
		if (s->cg_id == cgid)
			return s;
	return NULL;
}

/* A `connect` record: who mediates the connection (design: Audit log, `mediator`), or
 * why nobody does. */
static json_t *policy_connect_fields(struct deputyd *d, const struct dp_event *ev, const char *comm,
				     const char *addr)
{
	bool block = ev->verdict == DP_EV_BLOCK;
	const char *mediator = ev->flags & DP_EVF_CLAIMED   ? "shim"
			       : ev->flags & DP_EVF_PROXIED ? "proxy"
							    : NULL;
	json_t *o =
	    json_pack("{s:I, s:I, s:o, s:s, s:s, s:s, s:I, s:s, s:b, s:b, s:I}", "pid",
		      (json_int_t)ev->tgid, "tid", (json_int_t)ev->pid, "comm", session_text(comm),
		      "family", kernel_family_name(ev->family), "protocol",
		      ev->protocol == DP_EV_PROTO_UDP ? "udp" : "tcp", "daddr", addr, "dport",
		      (json_int_t)ev->port, "verdict", block ? "block" : "allow", "enforced",
		      block ? ev->enforced != 0 : d->cfg->enforce, "mediated", mediator != NULL,
		      "cookie", (json_int_t)ev->cookie);

	if (o && mediator)
		json_object_set_new(o, "mediator", json_string(mediator));
	else if (o && (ev->flags & DP_EVF_OPAQUE))
		json_object_set_new(o, "reason", json_string("tls opaque"));
	else if (o && (ev->flags & DP_EVF_UNMEDIATED))
		json_object_set_new(o, "reason", json_string("not mediated"));
	return o;
}

void policy_on_kernel_event(void *ctx, const struct dp_event *ev)
{
	struct deputyd *d = ctx;
	struct session *s = session_by_cgid(d, ev->cgid);
	char comm[DP_EV_COMM_LEN + 1], addr[INET6_ADDRSTRLEN] = "";
	bool block = ev->verdict == DP_EV_BLOCK;
	bool mediated;

	if (!s)
		return; /* a session that already ended, or not ours */
	memcpy(comm, ev->comm, DP_EV_COMM_LEN);
	comm[DP_EV_COMM_LEN] = '\0';
	if (ev->family == AF_INET || ev->family == AF_INET6)
		inet_ntop(ev->family, ev->addr, addr, sizeof(addr));
	mediated = ev->flags & (DP_EVF_CLAIMED | DP_EVF_PROXIED);

	switch (ev->type) {
	case DP_EV_CONNECT:
	case DP_EV_SENDMSG:
		s->counts.connects++;
		if (block)
			s->counts.blocked++;
		if (!mediated)
			s->counts.unmediated++;
		session_log(s, "connect", policy_connect_fields(d, ev, comm, addr));
		if (block && ev->enforced) {
			s->counts.denies++;
			session_log(
			    s, "deny",
			    json_pack(
				"{s:s, s:s, s:I, s:o, s:s, s:I, s:b}", "layer", "kernel", "reason",
				ev->flags & DP_EVF_UNMEDIATED
				    ? "not mediated"
				    : "destination not allowed by the session's routes",
				"pid", (json_int_t)ev->tgid, "comm", session_text(comm), "daddr",
				addr, "dport", (json_int_t)ev->port, "enforced", true));
		}
		break;
	case DP_EV_UNIX_CONNECT: {
		char path[DP_EV_PATH_LEN + 2];
		size_t n = ev->path_len < DP_EV_PATH_LEN ? ev->path_len : DP_EV_PATH_LEN;
		size_t o = 0;

		if (ev->flags & DP_EVF_UNIX_ABSTRACT)
			path[o++] = '@';
		for (size_t i = (ev->flags & DP_EVF_UNIX_ABSTRACT) ? 1 : 0; i < n && ev->path[i];
		     i++)
			path[o++] = (ev->path[i] >= 0x20 && ev->path[i] < 0x7f) ? ev->path[i] : '?';
		path[o] = '\0';
		/* The shim's own channel to deputyd is deputy's plumbing, not the agent's. */
		if (strcmp(path, d->cfg->socket) == 0)
			break;
		session_log(s, "connect",
			    json_pack("{s:I, s:o, s:s, s:s, s:s, s:b, s:b}", "pid",
				      (json_int_t)ev->tgid, "comm", session_text(comm), "family",
				      "unix", "path", path, "verdict", "allow", "enforced",
				      d->cfg->enforce, "mediated", false));
		break;
	}
	case DP_EV_SOCK_REFUSED:
		s->counts.denies++;
		session_log(s, "deny",
			    json_pack("{s:s, s:s, s:I, s:o, s:s, s:I, s:b}", "layer", "kernel",
				      "reason",
				      "raw and packet sockets are not allowed in a session", "pid",
				      (json_int_t)ev->tgid, "comm", session_text(comm), "family",
				      kernel_family_name(ev->family), "type", (json_int_t)ev->port,
				      "enforced", ev->enforced != 0));
		break;
	case DP_EV_CLOSE:
		session_log(s, "disconnect",
			    json_pack("{s:I, s:s, s:s, s:I, s:I, s:b}", "pid", (json_int_t)ev->tgid,
				      "family", kernel_family_name(ev->family), "daddr", addr,
				      "dport", (json_int_t)ev->port, "duration_us",
				      (json_int_t)(ev->duration_ns / 1000), "established",
				      (ev->flags & DP_EVF_ESTABLISHED) != 0));
		break;
	default:
		break;
	}
}
