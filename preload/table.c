// SPDX-License-Identifier: MIT
/*
 * table: the session table in the shim (see table.h). One table per process, in static
 * memory (no allocation on the request path), guarded by tbl_lock; the lock order is
 * tbl_lock, then the client's. Matching is route.c's, compiled in from daemon/lib, on
 * routes rebuilt from the table's entries, so a request is matched as deputyd matches it.
 */
#include "table.h"

#include "deputy/proto.h"
#include "httphead.h"
#include "route.h"
#include "shim.h"
#include "url.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define TBL_PAGE 4096
#define TBL_MAX_ADDRS 512
/* As deputyd: a token with less life left is not used; deputyd mints a new one. */
#define TBL_TOKEN_MIN_LEFT 10

struct tbl_ext {  /* what an entry adds to its route */
	int kind; /* enum dp_entry */
	const char *header, *token, *jti, *scope;
	int64_t exp;
};

static pthread_mutex_t tbl_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	bool have;     /* a table was fetched... */
	unsigned conn; /* ...on this connection to deputyd */
	uint64_t gen;  /* ...at this generation */
	bool failed;   /* deputyd gave none on that connection: do not ask again */
	bool wanted;   /* deputyd said it has one (tbl_hint) */
	const volatile uint64_t *page;
	size_t n;
	struct dp_route routes[DP_TABLE_MAX_ENTRIES];
	struct tbl_ext ext[DP_TABLE_MAX_ENTRIES];
	struct dp_cidr addrs[TBL_MAX_ADDRS];
	size_t n_addrs;
	size_t arena_used;
	char arena[DP_PROTO_MAX_PAYLOAD + DP_PROTO_MAX_PAYLOAD / 4 + 1];
	uint8_t raw[DP_PROTO_MAX_PAYLOAD];
} tbl;

void tbl_atfork_child(void)
{
	pthread_mutex_init(&tbl_lock, NULL);
}

static const char *tbl_str(const uint8_t *v, uint16_t n)
{
	char *s;

	if (n == 0 || memchr(v, 0, n) || tbl.arena_used + n + 1 > sizeof(tbl.arena))
		return NULL;
	s = tbl.arena + tbl.arena_used;
	memcpy(s, v, n);
	s[n] = '\0';
	tbl.arena_used += (size_t)n + 1;
	return s;
}

static int tbl_addr(const uint8_t *v, uint16_t n)
{
	struct dp_cidr *c;
	int family = n ? v[0] : 0;
	size_t alen = family == AF_INET ? 4 : 16;

	if ((family != AF_INET && family != AF_INET6) || n != 2 + alen ||
	    v[1] > (family == AF_INET ? 32 : 128) || tbl.n_addrs == TBL_MAX_ADDRS)
		return -1;
	c = &tbl.addrs[tbl.n_addrs++];
	memset(c, 0, sizeof(*c));
	c->family = family;
	c->prefix = v[1];
	memcpy(c->addr, v + 2, alen);
	return 0;
}

/* One ENTRY into routes[i] and ext[i]. -1 on anything unexpected: then no table at all. */
static int tbl_entry(const uint8_t *p, uint16_t len, size_t i)
{
	struct dp_route *rt = &tbl.routes[i];
	struct tbl_ext *x = &tbl.ext[i];
	size_t off = 0;
	uint16_t tag, vlen;
	const uint8_t *v;
	uint64_t u = 0;
	int r;

	memset(rt, 0, sizeof(*rt));
	memset(x, 0, sizeof(*x));
	x->kind = -1;
	rt->addrs = &tbl.addrs[tbl.n_addrs];
	while ((r = dp_field_next(p, len, &off, &tag, &v, &vlen)) == 1) {
		const char *str = NULL;

		if (tag == DP_T_VERDICT || tag == DP_T_PORT || tag == DP_T_EXP) {
			if (vlen != 8)
				return -1;
			memcpy(&u, v, 8);
		} else if (tag == DP_T_ADDR) {
			if (tbl_addr(v, vlen) < 0)
				return -1;
			rt->n_addrs++;
			continue;
		} else if (!(str = tbl_str(v, vlen))) {
			return -1;
		}
		switch (tag) {
		case DP_T_VERDICT:
			x->kind = u <= DP_ENTRY_DENY ? (int)u : -1;
			break;
		case DP_T_PORT:
			rt->port = u <= 65535 ? (int)u : -1;
			break;
		case DP_T_EXP:
			x->exp = (int64_t)u;
			break;
		case DP_T_HOST:
			rt->host = (char *)str;
			break;
		case DP_T_METHOD:
			rt->method = (char *)str;
			break;
		case DP_T_TARGET:
			rt->path = (char *)str;
			break;
		case DP_T_HEADER:
			x->header = str;
			break;
		case DP_T_TOKEN:
			x->token = str;
			break;
		case DP_T_JTI:
			x->jti = str;
			break;
		case DP_T_SCOPE:
			x->scope = str;
			break;
		default:
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

static int tbl_parse(size_t len)
{
	size_t off = 0;
	uint16_t tag, vlen;
	const uint8_t *v;
	bool have_gen = false;
	int r;

	tbl.n = tbl.n_addrs = tbl.arena_used = 0;
	while ((r = dp_field_next(tbl.raw, len, &off, &tag, &v, &vlen)) == 1) {
		if (tag == DP_T_GEN && vlen == 8) {
			memcpy(&tbl.gen, v, 8);
			have_gen = true;
		} else if (tag == DP_T_ENTRY && tbl.n < DP_TABLE_MAX_ENTRIES) {
			if (tbl_entry(v, vlen, tbl.n) < 0)
				return -1;
			tbl.n++;
		} else {
			return -1;
		}
	}
	return r < 0 || !have_gen ? -1 : 0;
}

/* Called with tbl_lock held: the table for the current connection and generation. */
static bool tbl_refresh(void)
{
	size_t len = 0;
	unsigned conn;
	int fd, err;

	if (tbl.have && tbl.conn == dpc_connection() && tbl.page &&
	    __atomic_load_n(tbl.page, __ATOMIC_ACQUIRE) == tbl.gen)
		return true;
	if (!__atomic_load_n(&tbl.wanted, __ATOMIC_RELAXED) ||
	    (tbl.failed && tbl.conn == dpc_connection()))
		return false;
	tbl.have = false;
	err = dpc_table_get(tbl.raw, sizeof(tbl.raw), &len, &fd, &conn);
	tbl.conn = conn;
	tbl.failed = true;
	if (err == 0 && fd >= 0) {
		void *p = mmap(NULL, TBL_PAGE, PROT_READ, MAP_SHARED, fd, 0);

		if (p != MAP_FAILED) {
			if (tbl.page)
				munmap((void *)tbl.page, TBL_PAGE);
			tbl.page = p;
		}
		real_close(fd);
		tbl.failed = p == MAP_FAILED;
	} else if (fd >= 0) {
		real_close(fd);
	}
	if (tbl.failed || tbl_parse(len) < 0) {
		tbl.failed = true;
		tbl.n = 0;
		shim_debug("no session table from deputyd: every request asks");
		return false;
	}
	tbl.have = true;
	return true;
}

/* Does the socket go where the entry's token may go (bind.c's rule, on the shim's peer)? */
static bool tbl_peer_ok(const struct dp_route *rt, const struct sockaddr_storage *peer)
{
	uint8_t addr[16];
	int family, port;

	if (peer->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)peer;

		family = AF_INET;
		memcpy(addr, &a->sin_addr, 4);
		port = ntohs(a->sin_port);
	} else if (peer->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;

		family = AF_INET6;
		memcpy(addr, &a->sin6_addr, 16);
		port = ntohs(a->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			family = AF_INET;
			memmove(addr, addr + 12, 4);
		}
	} else {
		return false;
	}
	if (port != rt->port)
		return false;
	for (size_t i = 0; i < rt->n_addrs; i++)
		if (route_cidr_has(&rt->addrs[i], family, addr))
			return true;
	return false;
}

void tbl_hint(void)
{
	__atomic_store_n(&tbl.wanted, true, __ATOMIC_RELAXED);
}

bool tbl_decide(const char *scheme, const char *host, int port, const char *method,
		const char *target, const struct sockaddr_storage *peer, uint64_t cookie,
		bool first_on_conn, struct dpc_decision *d)
{
	size_t plen = strcspn(target, "?#");
	char path[URL_PATH_MAX + 1], jti[sizeof(d->jti)];
	const struct dp_route *rt;
	const struct tbl_ext *x;
	struct timespec now;
	bool ok = false;

	/* What deputyd would refuse or read differently is its to decide. */
	if (!shim_env.have_session || target[0] != '/' || plen > URL_PATH_MAX ||
	    !hh_method_known(method) || url_path_ambiguous(target, plen))
		return false;
	memcpy(path, target, plen);
	path[plen] = '\0';
	clock_gettime(CLOCK_REALTIME, &now);

	pthread_mutex_lock(&tbl_lock);
	if (!tbl_refresh() || tbl.n == 0)
		goto out;
	rt = route_match_in(tbl.routes, tbl.n, host, port, method, path);
	if (!rt)
		goto out;
	x = &tbl.ext[rt - tbl.routes];
	if (x->kind != DP_ENTRY_LOCAL || x->exp - now.tv_sec < TBL_TOKEN_MIN_LEFT ||
	    !tbl_peer_ok(rt, peer) || strlen(x->token) >= sizeof(d->token) ||
	    strlen(x->header) >= sizeof(d->header))
		goto out;
	d->verdict = DP_VERDICT_DELEGATE;
	snprintf(d->reason, sizeof(d->reason), "delegated (session table)");
	strcpy(d->header, x->header);
	strcpy(d->token, x->token);
	snprintf(d->jti, sizeof(d->jti), "%s", x->jti);
	snprintf(d->scope, sizeof(d->scope), "%s", x->scope);
	d->user[0] = '\0';
	snprintf(jti, sizeof(jti), "%s", x->jti);
	ok = true;
out:
	pthread_mutex_unlock(&tbl_lock);
	if (ok)
		dpc_use(scheme, jti, method, host, port, target, cookie, first_on_conn);
	return ok;
}
