// SPDX-License-Identifier: MIT
/*
 * repeat: coalescing a session's repeated events. A loop of blocked connects or of
 * identical deny reports would write the same record thousands of times a second and
 * drown the session's log (and the disk under every session's log); the first event is
 * written in full, the repeats are counted and summed up in a `repeated` record (`of`: the
 * seq of the record repeated, `count`, `until`: the last repeat's time, `counts`: what the
 * repeats added to the session's counts) at most every tick, when its slot is taken by
 * another run, and before the seal. A few runs are tracked at once, so floods from several
 * processes interleaved still coalesce. The session's counts stay exact.
 */
#include "deputyd.h"

#include <stdlib.h>
#include <string.h>

/* A repeat this long after the last one starts a new run: its time is worth a record. */
#define REPEAT_WINDOW_NS (60LL * 1000000000)

static int64_t repeat_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

static void counts_add(struct session_counts *a, const struct session_counts *b)
{
	a->tokens += b->tokens;
	a->denies += b->denies;
	a->passthrough += b->passthrough;
	a->responses += b->responses;
	a->connects += b->connects;
	a->blocked += b->blocked;
	a->unmediated += b->unmediated;
}

static void repeat_flush_one(struct session *s, struct session_repeat *r)
{
	const struct session_counts *c = &r->counted;
	char until[DP_TS_LEN];

	if (r->n == 0)
		return;
	dp_timestamp_at(&r->last, until);
	session_log(s, "repeated",
		    json_pack("{s:I, s:I, s:s, s:{s:I, s:I, s:I, s:I}}", "of", (json_int_t)r->of,
			      "count", (json_int_t)r->n, "until", until, "counts", "connects",
			      (json_int_t)c->connects, "blocked", (json_int_t)c->blocked,
			      "unmediated", (json_int_t)c->unmediated, "denies",
			      (json_int_t)c->denies));
	r->n = 0;
	memset(&r->counted, 0, sizeof(r->counted));
}

void repeat_flush(struct session *s)
{
	for (size_t i = 0; i < SESSION_REPEAT_SLOTS; i++)
		repeat_flush_one(s, &s->repeat[i]);
}

bool repeat_event(struct session *s, const char *key, const struct session_counts *delta,
		  const struct timespec *when)
{
	struct session_repeat *r, *oldest = &s->repeat[0];
	struct timespec now;

	if (!when) {
		clock_gettime(CLOCK_REALTIME, &now);
		when = &now;
	}
	for (size_t i = 0; i < SESSION_REPEAT_SLOTS; i++) {
		r = &s->repeat[i];
		if (r->key && strcmp(r->key, key) == 0 &&
		    repeat_ns(when) - repeat_ns(&r->last) < REPEAT_WINDOW_NS) {
			r->n++;
			counts_add(&r->counted, delta);
			r->last = *when;
			return true;
		}
		if (!r->key || (oldest->key && repeat_ns(&r->last) < repeat_ns(&oldest->last)))
			oldest = r;
	}
	/* A new run takes the slot of the stalest (summing its repeats up first). */
	r = oldest;
	repeat_flush_one(s, r);
	free(r->key);
	r->key = strdup(key); /* out of memory: this run is not coalesced, all is written */
	r->of = audit_log_next_seq(s->log);
	r->last = *when;
	return false;
}

void repeat_free(struct session *s)
{
	for (size_t i = 0; i < SESSION_REPEAT_SLOTS; i++) {
		free(s->repeat[i].key);
		s->repeat[i].key = NULL;
	}
}
