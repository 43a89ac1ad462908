// SPDX-License-Identifier: MIT
/*
 * cookie: the set of socket cookies the shim said it mediates, per session, so a kernel
 * connect event can say `mediated`. Open addressing (0 = empty) in two generations.
 */
#include "deputyd.h"

#include <errno.h>
#include <stdlib.h>

static size_t cookie_slot(uint64_t cookie, size_t cap)
{
	return (size_t)((cookie * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

/* A socket's cookie is looked up when its connect event arrives, shortly after the shim
 * claimed it, so only recent cookies matter; the agent may claim any number. Past this
 * many the set starts a new generation and drops the one before the last. */
#define COOKIE_GENERATION 65536

static bool cookie_slots_have(const uint64_t *slots, size_t cap, uint64_t cookie)
{
	if (!cap)
		return false;
	for (size_t j = cookie_slot(cookie, cap);; j = (j + 1) & (cap - 1)) {
		if (slots[j] == cookie)
			return true;
		if (!slots[j])
			return false;
	}
}

int cookie_set_add(struct cookie_set *cs, uint64_t cookie)
{
	if (cookie == 0)
		return 0;
	if (cs->used >= COOKIE_GENERATION) {
		free(cs->old);
		cs->old = cs->slots;
		cs->old_cap = cs->cap;
		cs->slots = NULL;
		cs->cap = cs->used = 0;
	}
	if ((cs->used + 1) * 2 > cs->cap) {
		size_t cap = cs->cap ? cs->cap * 2 : 64;
		uint64_t *slots = calloc(cap, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (size_t i = 0; i < cs->cap; i++) {
			size_t j;

			if (!cs->slots[i])
				continue;
			for (j = cookie_slot(cs->slots[i], cap); slots[j]; j = (j + 1) & (cap - 1))
				;
			slots[j] = cs->slots[i];
		}
		free(cs->slots);
		cs->slots = slots;
		cs->cap = cap;
	}
	for (size_t j = cookie_slot(cookie, cs->cap);; j = (j + 1) & (cs->cap - 1)) {
		if (cs->slots[j] == cookie)
			return 0;
		if (!cs->slots[j]) {
			cs->slots[j] = cookie;
			cs->used++;
			return 0;
		}
	}
}

bool cookie_set_has(const struct cookie_set *cs, uint64_t cookie)
{
	return cookie != 0 && (cookie_slots_have(cs->slots, cs->cap, cookie) ||
			       cookie_slots_have(cs->old, cs->old_cap, cookie));
}

void cookie_set_free(struct cookie_set *cs)
{
	free(cs->slots);
	free(cs->old);
	cs->slots = cs->old = NULL;
	cs->cap = cs->used = cs->old_cap = 0;
}
