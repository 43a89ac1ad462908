// SPDX-License-Identifier: MIT
/*
 * ptable: the proxy's session tables and use batches (see ptable.h). A few sessions' tables
 * are kept (PTBL_SLOTS, the least recently used one makes room), allocated once per slot;
 * one lock guards them all: a fetch holds it for its round trip, which happens only after
 * deputyd changed something. Lock order: ptbl_mu, then chan's.
 */
#include "ptable.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "sesstable.h"
#include "util.h"

#define PTBL_SLOTS 8
#define PTBL_PAGE 4096
/* After deputyd gave no table for a session, so long before asking again. */
#define PTBL_RETRY_SECONDS 2

struct ptbl_slot {
	uint64_t tag; /* the session's (0: free) */
	bool have, wanted;
	int64_t failed_at;
	uint64_t used; /* for LRU */
	const volatile uint64_t *page;
	struct stbl *t;
	struct chan_reply rep;
};

static pthread_mutex_t ptbl_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ptbl_slot *slots[PTBL_SLOTS];
static uint64_t ptbl_clock;

static void slot_clear(struct ptbl_slot *s)
{
	if (s->page)
		munmap((void *)s->page, PTBL_PAGE);
	s->page = NULL;
	s->have = s->wanted = false;
	s->failed_at = 0;
	if (s->t)
		s->t->n = 0;
}

/* The session's slot; with make, a new one (the least recently used reused). NULL when
 * none, or out of memory. */
static struct ptbl_slot *slot_get(uint64_t tag, bool make)
{
	struct ptbl_slot *lru = NULL;

	for (size_t i = 0; i < PTBL_SLOTS; i++) {
		struct ptbl_slot *s = slots[i];

		if (s && s->tag == tag) {
			s->used = ++ptbl_clock;
			return s;
		}
		if (!make)
			continue;
		if (!s) {
			s = calloc(1, sizeof(*s));
			if (!s || !(s->t = malloc(sizeof(*s->t)))) {
				free(s);
				return NULL;
			}
			s->t->n = 0;
			slots[i] = s;
		}
		if (!lru || s->tag == 0 || (lru->tag != 0 && s->used < lru->used))
			lru = s;
	}
	if (!lru)
		return NULL;
	slot_clear(lru);
	lru->tag = tag;
	lru->used = ++ptbl_clock;
	return lru;
}

void ptbl_hint(uint64_t tag)
{
	struct ptbl_slot *s;

	pthread_mutex_lock(&ptbl_mu);
	s = slot_get(tag, true);
	if (s)
		s->wanted = true;
	pthread_mutex_unlock(&ptbl_mu);
}

/* With ptbl_mu held: the slot's table, current by the session's page. */
static bool slot_refresh(struct ptbl_slot *s, uint64_t conn)
{
	uint8_t buf[64];
	struct dp_msg m;
	int64_t now = dp_now();
	int fd = -1;
	void *p;

	if (s->have && s->page && __atomic_load_n(s->page, __ATOMIC_ACQUIRE) == s->t->gen)
		return true;
	if (!s->wanted || (s->failed_at && now - s->failed_at < PTBL_RETRY_SECONDS))
		return false;
	slot_clear(s);
	s->wanted = true;
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_PROXY_TABLE_GET, 0, 0);
	dp_msg_put_u64(&m, DP_T_CONN, conn);
	if (chan_call_fd(&m, -1, &s->rep, &fd) != 0 || s->rep.h.type != DP_MSG_TABLE || fd < 0)
		goto fail;
	p = mmap(NULL, PTBL_PAGE, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	fd = -1;
	if (p == MAP_FAILED)
		goto fail;
	s->page = p;
	if (stbl_parse(s->t, s->rep.payload, s->rep.h.len) < 0)
		goto fail;
	s->have = true;
	return true;
fail:
	if (fd >= 0)
		close(fd);
	slot_clear(s);
	s->failed_at = now;
	pr_debug("no session table from deputyd: every request asks");
	return false;
}

bool ptbl_decide(const struct up_key *dest, uint64_t conn, const char *host, const char *method,
		 const char *target, const struct ptbl_out *out)
{
	const struct stbl_ext *x;
	struct ptbl_slot *s;
	bool ok = false;

	pthread_mutex_lock(&ptbl_mu);
	s = slot_get(dest->tag, false);
	if (!s || !slot_refresh(s, conn))
		goto out;
	x = stbl_find(s->t, host, dest->port, method, target, dest->family, dest->addr, dest->port,
		      dp_now());
	if (!x || strlen(x->token) >= out->token_sz || strlen(x->header) >= out->header_sz)
		goto out;
	strcpy(out->header, x->header);
	strcpy(out->token, x->token);
	snprintf(out->jti, out->jti_sz, "%s", x->jti);
	snprintf(out->scope, out->scope_sz, "%s", x->scope);
	ok = true;
out:
	pthread_mutex_unlock(&ptbl_mu);
	return ok;
}

/* ---- use batches ------------------------------------------------------------------------ */

void ptbl_flush(struct ptbl_uses *u)
{
	struct dp_msg m;

	if (u->n == 0)
		return;
	/* Already a finished frame: chan_tell finishes it again, unchanged. */
	m = (struct dp_msg){.buf = u->buf, .cap = sizeof(u->buf), .len = u->len};
	chan_tell(&m);
	u->n = u->len = 0;
}

void ptbl_use(struct ptbl_uses *u, uint64_t conn, const char *scheme, const char *jti,
	      const char *method, const char *host, int port, const char *target)
{
	uint8_t use[DP_PROTO_HDR_LEN + 8192 + 1024];
	struct dp_msg e, m;
	size_t elen;

	/* The USE's own field list, after a header that is not sent. */
	dp_msg_init(&e, use, sizeof(use), 0, 0, 0);
	dp_use_put(&e, scheme, jti, method, host, port, target);
	if (e.err)
		return; /* too long to be a use deputyd accepts: it is not reported */
	elen = e.len - DP_PROTO_HDR_LEN;
	if (u->n == DP_USES_MAX || (u->n && u->len + 4 + elen > sizeof(u->buf)))
		ptbl_flush(u);
	if (u->n == 0) {
		dp_msg_init(&m, u->buf, sizeof(u->buf), DP_MSG_PROXY_USES, 0, DP_F_NOREPLY);
		dp_msg_put_u64(&m, DP_T_CONN, conn);
	} else {
		m = (struct dp_msg){.buf = u->buf, .cap = sizeof(u->buf), .len = u->len};
	}
	dp_msg_put(&m, DP_T_USE, use + DP_PROTO_HDR_LEN, elen);
	if (m.err || dp_msg_finish(&m) != 0)
		return;
	u->len = m.len;
	u->n++;
}
