// SPDX-License-Identifier: MIT
/*
 * sesstable: parsing and matching a session table (see sesstable.h), shared by the shim
 * and deputy-proxy so both decide exactly as deputyd would. No allocation: the caller
 * owns the struct stbl, and every string of it lives in its arena.
 */
#include "sesstable.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "httphead.h"
#include "url.h"

/* As deputyd: a token with less life left is not used; deputyd mints a new one. */
#define STBL_TOKEN_MIN_LEFT 10

/* A table's strings are never empty. */
static const char *stbl_str(struct stbl *t, const uint8_t *v, uint16_t n)
{
	return n ? dp_field_str(t->arena, sizeof(t->arena), &t->arena_used, v, n) : NULL;
}

static int stbl_addr(struct stbl *t, const uint8_t *v, uint16_t n)
{
	struct dp_cidr *c;
	int family = n ? v[0] : 0;
	size_t alen = family == AF_INET ? 4 : 16;

	if ((family != AF_INET && family != AF_INET6) || n != 2 + alen ||
	    v[1] > (family == AF_INET ? 32 : 128) || t->n_addrs == STBL_MAX_ADDRS)
		return -1;
	c = &t->addrs[t->n_addrs++];
	memset(c, 0, sizeof(*c));
	c->family = family;
	c->prefix = v[1];
	memcpy(c->addr, v + 2, alen);
	return 0;
}

/* One entry's string field into its route or extension; -1 for a tag entries never have. */
static int stbl_set(struct dp_route *rt, struct stbl_ext *x, uint16_t tag, const char *str)
{
	switch (tag) {
	case DP_T_HOST:
		rt->host = (char *)str;
		return 0;
	case DP_T_METHOD:
		rt->method = (char *)str;
		return 0;
	case DP_T_TARGET:
		rt->path = (char *)str;
		return 0;
	case DP_T_HEADER:
		x->header = str;
		return 0;
	case DP_T_TOKEN:
		x->token = str;
		return 0;
	case DP_T_JTI:
		x->jti = str;
		return 0;
	case DP_T_SCOPE:
		x->scope = str;
		return 0;
	default:
		return -1;
	}
}

/* One ENTRY into routes[i] and ext[i]. -1 on anything unexpected: then no table at all. */
static int stbl_entry(struct stbl *t, const uint8_t *p, uint16_t len, size_t i)
{
	struct dp_route *rt = &t->routes[i];
	struct stbl_ext *x = &t->ext[i];
	size_t off = 0;
	uint16_t tag, vlen;
	const uint8_t *v;
	uint64_t u = 0;
	int r;

	memset(rt, 0, sizeof(*rt));
	memset(x, 0, sizeof(*x));
	x->kind = -1;
	rt->addrs = &t->addrs[t->n_addrs];
	while ((r = dp_field_next(p, len, &off, &tag, &v, &vlen)) == 1) {
		const char *str;

		if (tag == DP_T_VERDICT || tag == DP_T_PORT || tag == DP_T_EXP) {
			if (vlen != 8)
				return -1;
			memcpy(&u, v, 8);
			if (tag == DP_T_VERDICT)
				x->kind = u <= DP_ENTRY_DENY ? (int)u : -1;
			else if (tag == DP_T_PORT)
				rt->port = u <= 65535 ? (int)u : -1;
			else
				x->exp = (int64_t)u;
		} else if (tag == DP_T_ADDR) {
			if (stbl_addr(t, v, vlen) < 0)
				return -1;
			rt->n_addrs++;
		} else if (!(str = stbl_str(t, v, vlen)) || stbl_set(rt, x, tag, str) < 0) {
			return -1;
		}
	}
	if (r < 0 || x->kind < 0 || !rt->host || rt->port < 1)
		return -1;
	if (x->kind == DP_ENTRY_LOCAL && (!x->header || !x->token || !x->jti || !x->scope))
		return -1;
	/* Only the deny flag changes how route.c matches; the rest are "not deny". */
	rt->action = x->kind == DP_ENTRY_DENY ? DP_ACTION_DENY : DP_ACTION_DELEGATE;
	return 0;
}

int stbl_parse(struct stbl *t, const uint8_t *raw, size_t len)
{
	size_t off = 0;
	uint16_t tag, vlen;
	const uint8_t *v;
	bool have_gen = false;
	int r;

	t->n = t->n_addrs = t->arena_used = 0;
	while ((r = dp_field_next(raw, len, &off, &tag, &v, &vlen)) == 1) {
		if (tag == DP_T_GEN && vlen == 8) {
			memcpy(&t->gen, v, 8);
			have_gen = true;
		} else if (tag == DP_T_ENTRY && t->n < DP_TABLE_MAX_ENTRIES) {
			if (stbl_entry(t, v, vlen, t->n) < 0)
				break;
			t->n++;
		} else {
			break;
		}
	}
	if (r != 0 || !have_gen) {
		t->n = 0;
		return -1;
	}
	return 0;
}

/* Does the connection go where the entry's token may go (bind.c's rule)? */
static bool stbl_dest_ok(const struct dp_route *rt, int family, const uint8_t *addr, int dport)
{
	uint8_t a[16];

	if (family != AF_INET && family != AF_INET6)
		return false;
	memcpy(a, addr, family == AF_INET ? 4 : 16);
	if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a)) {
		family = AF_INET;
		memmove(a, a + 12, 4);
	}
	if (dport != rt->port)
		return false;
	for (size_t i = 0; i < rt->n_addrs; i++)
		if (route_cidr_has(&rt->addrs[i], family, a))
			return true;
	return false;
}

const struct stbl_ext *stbl_find(const struct stbl *t, const char *host, int port,
				 const char *method, const char *target, int family,
				 const uint8_t *addr, int dport, int64_t now)
{
	size_t plen = strcspn(target, "?#");
	char path[URL_PATH_MAX + 1];
	const struct dp_route *rt;
	const struct stbl_ext *x;

	/* What deputyd would refuse or read differently is its to decide. */
	if (t->n == 0 || target[0] != '/' || plen > URL_PATH_MAX || !hh_method_known(method) ||
	    url_path_ambiguous(target, plen))
		return NULL;
	memcpy(path, target, plen);
	path[plen] = '\0';
	rt = route_match_in(t->routes, t->n, host, port, method, path);
	if (!rt)
		return NULL;
	x = &t->ext[rt - t->routes];
	if (x->kind != DP_ENTRY_LOCAL || x->exp - now < STBL_TOKEN_MIN_LEFT ||
	    !stbl_dest_ok(rt, family, addr, dport))
		return NULL;
	return x;
}
