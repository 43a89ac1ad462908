// SPDX-License-Identifier: MIT
/*
 * table: the session table in the shim (see table.h). One table per process, in static
 * memory (no allocation on the request path), guarded by tbl_lock; the lock order is
 * tbl_lock, then the client's. Parsing and matching are
 * daemon/lib/sesstable.c's, shared with deputy-proxy, so a request is matched as deputyd
 * matches it.
 */
#include "table.h"

#include "deputy/proto.h"
#include "httphead.h"
#include "sesstable.h"
#include "shim.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define TBL_PAGE 4096

static pthread_mutex_t tbl_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	bool have;     /* a table was fetched... */
	unsigned conn; /* ...on this connection to deputyd */
	bool failed;   /* deputyd gave none on that connection: do not ask again */
	bool wanted;   /* deputyd said it has one (tbl_hint) */
	const volatile uint64_t *page;
	struct stbl t;
	uint8_t raw[DP_PROTO_MAX_PAYLOAD];
} tbl;

void tbl_atfork_child(void)
{
	pthread_mutex_init(&tbl_lock, NULL);
}

/* Called with tbl_lock held: the table for the current connection and generation. */
static bool tbl_refresh(void)
{
	size_t len = 0;
	unsigned conn;
	int fd, err;

	if (tbl.have && tbl.conn == dpc_connection() && tbl.page &&
	    __atomic_load_n(tbl.page, __ATOMIC_ACQUIRE) == tbl.t.gen)
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
	if (tbl.failed || stbl_parse(&tbl.t, tbl.raw, len) < 0) {
		tbl.failed = true;
		tbl.t.n = 0;
		shim_debug("no session table from deputyd: every request asks");
		return false;
	}
	tbl.have = true;
	return true;
}

/* The socket's peer as stbl_find wants it; false if it is not IP. */
static bool tbl_peer(const struct sockaddr_storage *peer, int *family, uint8_t addr[16], int *port)
{
	if (peer->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)peer;

		memcpy(addr, &a->sin_addr, 4);
		*port = ntohs(a->sin_port);
	} else if (peer->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;

		memcpy(addr, &a->sin6_addr, 16);
		*port = ntohs(a->sin6_port);
	} else {
		return false;
	}
	*family = peer->ss_family;
	return true;
}

void tbl_hint(void)
{
	__atomic_store_n(&tbl.wanted, true, __ATOMIC_RELAXED);
}

bool tbl_decide(const char *scheme, const char *host, int port, const char *method,
		const char *target, const struct sockaddr_storage *peer, uint64_t cookie,
		bool first_on_conn, struct dpc_decision *d)
{
	char jti[sizeof(d->jti)];
	const struct stbl_ext *x;
	struct timespec now;
	uint8_t addr[16];
	int family, dport;
	bool ok = false;

	if (!shim_env.have_session || !tbl_peer(peer, &family, addr, &dport))
		return false;
	clock_gettime(CLOCK_REALTIME, &now);

	pthread_mutex_lock(&tbl_lock);
	if (!tbl_refresh())
		goto out;
	x = stbl_find(&tbl.t, host, port, method, target, family, addr, dport, now.tv_sec);
	if (!x || strlen(x->token) >= sizeof(d->token) || strlen(x->header) >= sizeof(d->header))
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
