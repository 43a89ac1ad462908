// SPDX-License-Identifier: MIT
/*
 * cookie: a session's TCP connections as the kernel reported them, by socket cookie, with
 * the number of HTTP requests a mediator (the shim, the proxy) asked deputyd about on each,
 * so a `disconnect` can say whether the connection was really mediated (design: a
 * connection that carried bytes but no mediated request counts as unmediated).
 *
 * Entries exist only for connects the kernel reported and go at their close, so an agent
 * cannot grow the table by naming cookies. Open addressing (cookie 0 = empty slot),
 * removal by backward shift.
 */
#include "deputyd.h"

#include <errno.h>
#include <stdlib.h>

/* Live connections counted per session; past it new ones are not (a session that holds
 * this many open at once, or whose close events were lost, gets them as unmediated). */
#define COOKIE_MAX 65536

static size_t cookie_slot(uint64_t cookie, size_t cap)
{
	return (size_t)((cookie * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static struct cookie_conn *cookie_find(const struct cookie_set *cs, uint64_t cookie)
{
	if (!cs->cap || !cookie)
		return NULL;
	for (size_t j = cookie_slot(cookie, cs->cap);; j = (j + 1) & (cs->cap - 1)) {
		if (cs->slots[j].cookie == cookie)
			return &cs->slots[j];
		if (!cs->slots[j].cookie)
			return NULL;
	}
}

static int cookie_grow(struct cookie_set *cs)
{
	size_t cap = cs->cap ? cs->cap * 2 : 64;
	struct cookie_conn *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < cs->cap; i++) {
		size_t j;

		if (!cs->slots[i].cookie)
			continue;
		for (j = cookie_slot(cs->slots[i].cookie, cap); slots[j].cookie;
		     j = (j + 1) & (cap - 1))
			;
		slots[j] = cs->slots[i];
	}
	free(cs->slots);
	cs->slots = slots;
	cs->cap = cap;
	return 0;
}

int cookie_conn_open(struct cookie_set *cs, uint64_t cookie)
{
	struct cookie_conn *e;
	size_t j;

	if (!cookie)
		return -EINVAL;
	e = cookie_find(cs, cookie);
	if (e) {
		e->requests = 0; /* a cookie is never reused: a second connect of one socket */
		return 0;
	}
	if (cs->used >= COOKIE_MAX)
		return -ENOSPC;
	if ((cs->used + 1) * 2 > cs->cap && cookie_grow(cs) != 0)
		return -ENOMEM;
	for (j = cookie_slot(cookie, cs->cap); cs->slots[j].cookie; j = (j + 1) & (cs->cap - 1))
		;
	cs->slots[j].cookie = cookie;
	cs->slots[j].requests = 0;
	cs->used++;
	return 0;
}

bool cookie_conn_request(struct cookie_set *cs, uint64_t cookie)
{
	struct cookie_conn *e = cookie_find(cs, cookie);

	if (!e)
		return false;
	if (e->requests < UINT32_MAX)
		e->requests++;
	return true;
}

bool cookie_conn_close(struct cookie_set *cs, uint64_t cookie, uint32_t *requests)
{
	struct cookie_conn *e = cookie_find(cs, cookie);
	size_t j;

	*requests = 0;
	if (!e)
		return false;
	*requests = e->requests;
	j = (size_t)(e - cs->slots);
	for (;;) {
		size_t k = (j + 1) & (cs->cap - 1), home;

		cs->slots[j].cookie = 0;
		for (;; k = (k + 1) & (cs->cap - 1)) {
			if (!cs->slots[k].cookie) {
				cs->used--;
				return true;
			}
			home = cookie_slot(cs->slots[k].cookie, cs->cap);
			/* can the entry at k move to the hole at j? */
			if (j <= k ? (home <= j || home > k) : (home <= j && home > k))
				break;
		}
		cs->slots[j] = cs->slots[k];
		j = k;
	}
}

void cookie_set_free(struct cookie_set *cs)
{
	free(cs->slots);
	cs->slots = NULL;
	cs->cap = cs->used = 0;
}
