// SPDX-License-Identifier: MIT
/*
 * conn_list: answers the shim hands the agent itself on a connection that goes on (see
 * conn.h): the 100 Continue an MCP call's Expect waits for (deputyd decides on the body, so
 * the server is not asked before the body is there), and a tools/list answer under
 * "filter_list", read whole from the server (at most MCP_BODY_MAX of content) and cut to
 * the tools the grant allows with the proxy's filter (mcp_filter.c). An answer that cannot
 * be cut (too large, encoded, malformed, the server gone mid-way) is never passed on as it
 * came: the agent reads a JSON-RPC error and the connection ends (fail closed).
 *
 * These bytes wait in memory, ahead of what the connection brings next, exactly as OpenSSL
 * keeps decrypted records it has not handed over yet: SSL_pending counts them. That is why
 * only SSL connections get the filter; a plain socket has no such convention (a caller
 * polls the fd first), so there a listed answer is refused instead (conn_list_expect).
 *
 * Memory: one mapping per connection on first use; its pages are only used when written.
 */
#include "conn.h"

#include "deputy/proto.h"
#include "shim.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* A head, a body of MCP_BODY_MAX and its chunk framing; what the agent gets is never more
 * (the head gains one Content-Length line, the body only loses tools). */
#define CONN_LIST_RAW_MAX (HH_HEAD_MAX + MCP_BODY_MAX + 65536)
#define CONN_LIST_OUT_MAX (CONN_LIST_RAW_MAX + 1024)
#define CONN_LIST_RULES_MAX 1024

struct conn_list {
	/* for the agent, ahead of the connection (guarded by c->lock) */
	size_t out_len, out_off;
	char out[CONN_LIST_OUT_MAX];

	/* the tools/list answer being read (the reading side only) */
	size_t raw_len, fed, head_start, head_len;
	bool in_body;
	struct hh_resp resp;
	struct hh_body body;
	char content[MCP_BODY_MAX];
	char raw[CONN_LIST_RAW_MAX];

	/* what to cut it to: the DECISION's rules, the request's id */
	char rules[DP_PROTO_MAX_PAYLOAD];
	size_t rules_len;
	const char *rule[CONN_LIST_RULES_MAX];
	char id[MCP_ID_MAX + 1];
};

static struct conn_list *conn_list_get(struct conn *c)
{
	if (!c->list && (c->list = conn_map(sizeof(*c->list))))
		hh_resp_init(&c->list->resp);
	return c->list;
}

void conn_list_free(struct conn *c)
{
	if (c->list)
		munmap(c->list, sizeof(*c->list));
	c->list = NULL;
}

/* Appends to what the agent reads next. Called with c->lock held. */
static void conn_list_put(struct conn_list *l, const char *p, size_t n)
{
	if (l->out_off == l->out_len)
		l->out_off = l->out_len = 0;
	if (l->out_len + n > sizeof(l->out)) {
		memmove(l->out, l->out + l->out_off, l->out_len - l->out_off);
		l->out_len -= l->out_off;
		l->out_off = 0;
	}
	n = n < sizeof(l->out) - l->out_len ? n : sizeof(l->out) - l->out_len;
	memcpy(l->out + l->out_len, p, n);
	l->out_len += n;
}

void conn_list_interim(struct conn *c, const char *resp, size_t n)
{
	struct conn_list *l = conn_list_get(c);

	if (!l)
		return; /* the agent waits for its own timeout, then sends the body anyway */
	pthread_mutex_lock(&c->lock);
	conn_list_put(l, resp, n);
	pthread_mutex_unlock(&c->lock);
}

void conn_list_expect(struct conn *c, const struct dpc_decision *d, const char *id)
{
	struct conn_list *l;

	if (!d->mcp_filter)
		return;
	l = conn_list_get(c);
	if (l) {
		memcpy(l->rules, d->mcp_rules, d->mcp_rules_len);
		l->rules_len = d->mcp_rules_len;
		snprintf(l->id, sizeof(l->id), "%s", id);
	}
	pthread_mutex_lock(&c->lock);
	if (c->qlen > 0)
		c->inflight[(c->qhead + c->qlen - 1) % CONN_MAX_INFLIGHT].filter = true;
	pthread_mutex_unlock(&c->lock);
}

/* The answer cannot be cut: the agent reads the JSON-RPC error instead, then the
 * connection's end (nothing after it could be matched to its request any more). */
static void conn_list_fail(struct conn *c, const char *why)
{
	struct conn_list *l = c->list;
	ssize_t n =
	    mcp_unfilterable_response(c->deny_buf, sizeof(c->deny_buf), l ? l->id : NULL, why);

	shim_guard++;
	dpc_deny_report(why, c->sni, NULL, NULL);
	shim_guard--;
	if (l)
		l->raw_len = l->fed = l->head_start = 0;
	pthread_mutex_lock(&c->lock);
	c->qlen = 0;
	pthread_mutex_unlock(&c->lock);
	c->deny_len = n > 0 ? (size_t)n : 0;
	conn_refuse(c, why);
}

static size_t conn_list_rules(struct conn_list *l)
{
	size_t n = 0;

	for (size_t off = 0; off < l->rules_len && n < CONN_LIST_RULES_MAX; n++) {
		l->rule[n] = l->rules + off;
		off += strlen(l->rules + off) + 1;
	}
	return n;
}

/* The answer was read whole: cut, handed over, reported. What came after it belongs to the
 * next answers: observed as any read, or taken again where another list begins. */
static void conn_list_done(struct conn *c, struct conn_list *l)
{
	size_t n_rules = conn_list_rules(l), rest = l->raw_len - l->fed, kept;
	int status = l->resp.status;
	char jti[128];
	ssize_t n;

	pthread_mutex_lock(&c->lock);
	if (l->out_off == l->out_len)
		l->out_off = l->out_len = 0;
	n = mcp_filter_response(l->raw + l->head_start, l->head_len, status, l->content,
				l->body.sink_len, l->rule, n_rules, l->out + l->out_len,
				sizeof(l->out) - l->out_len);
	if (n >= 0) {
		l->out_len += (size_t)n;
		memcpy(jti, c->inflight[c->qhead].jti, sizeof(jti));
		c->qhead = (c->qhead + 1) % CONN_MAX_INFLIGHT;
		c->qlen--;
	}
	pthread_mutex_unlock(&c->lock);
	if (n < 0) {
		conn_list_fail(c, n == -EBADMSG ? "the tools/list answer cannot be filtered"
						: "the tools/list answer is too large");
		return;
	}
	memmove(l->raw, l->raw + l->fed, rest);
	l->raw_len = l->fed = l->head_start = 0;
	l->in_body = false;
	hh_resp_init(&l->resp);
	shim_guard++;
	dpc_response(jti, status);
	shim_guard--;
	kept = conn_after_read(c, l->raw, rest); /* also serves a refusal that waited */
	pthread_mutex_lock(&c->lock);
	conn_list_put(l, l->raw, kept);
	pthread_mutex_unlock(&c->lock);
	if (kept < rest)
		conn_list_take(c, l->raw + kept, rest - kept);
}

/* Reads on in what was taken; eof: the connection ended after it. */
static void conn_list_feed(struct conn *c, struct conn_list *l, bool eof)
{
	for (;;) {
		bool done = false;
		ssize_t k;

		if (!l->in_body) {
			size_t used = 0;
			int r = hh_resp_feed(&l->resp, l->raw + l->fed, l->raw_len - l->fed, &used);
			enum hh_body_mode mode;

			l->fed += used;
			if (r < 0 || (r == 0 && eof)) {
				conn_list_fail(c, "the tools/list answer is malformed");
				return;
			}
			if (r == 0)
				return;
			if (l->resp.status >= 100 && l->resp.status < 200) {
				if (l->resp.status == 101) {
					conn_list_fail(c, "the tools/list answer is malformed");
					return;
				}
				pthread_mutex_lock(&c->lock); /* interim: as it came, now */
				conn_list_put(l, l->raw + l->head_start, l->fed - l->head_start);
				pthread_mutex_unlock(&c->lock);
				l->head_start = l->fed;
				hh_resp_init(&l->resp);
				continue;
			}
			l->head_len = l->fed - l->head_start;
			mode = hh_resp_body_mode(&l->resp, false, false);
			hh_body_init(&l->body, mode,
				     l->resp.content_length > 0 ? (uint64_t)l->resp.content_length
								: 0);
			hh_body_sink(&l->body, l->content, sizeof(l->content));
			l->in_body = true;
			if (mode == HH_BODY_NONE) {
				conn_list_done(c, l);
				return;
			}
		}
		k = hh_body_feed(&l->body, l->raw + l->fed, l->raw_len - l->fed, &done);
		if (k < 0 || l->body.sink_over) {
			conn_list_fail(c, k < 0 ? "the tools/list answer is malformed"
						: "the tools/list answer is too large");
			return;
		}
		l->fed += (size_t)k;
		if (done || (eof && l->body.mode == HH_BODY_CLOSE)) {
			conn_list_done(c, l);
			return;
		}
		if (eof)
			conn_list_fail(c, "the server ended the tools/list answer early");
		else if (l->raw_len == sizeof(l->raw))
			conn_list_fail(c, "the tools/list answer is too large");
		return;
	}
}

void conn_list_take(struct conn *c, const char *p, size_t n)
{
	struct conn_list *l = c->list;

	if (!l || n > sizeof(l->raw) - l->raw_len) {
		conn_list_fail(c, l ? "the tools/list answer is too large" : "out of memory");
		return;
	}
	memmove(l->raw + l->raw_len, p, n);
	l->raw_len += n;
	conn_list_feed(c, l, false);
}

/* Is the next answer on the connection one the shim reads itself? */
static bool conn_list_reading(struct conn *c)
{
	bool r;

	pthread_mutex_lock(&c->lock);
	r = c->qlen > 0 && c->inflight[c->qhead].filter && !c->denied;
	pthread_mutex_unlock(&c->lock);
	return r;
}

ssize_t conn_list_read(struct conn *c, char *buf, size_t n, bool peek)
{
	for (;;) {
		struct conn_list *l = c->list;
		size_t k = 0;
		ssize_t r;

		pthread_mutex_lock(&c->lock);
		if (l && l->out_off < l->out_len) {
			k = l->out_len - l->out_off < n ? l->out_len - l->out_off : n;
			memcpy(buf, l->out + l->out_off, k);
			if (!peek)
				l->out_off += k;
		}
		pthread_mutex_unlock(&c->lock);
		if (k)
			return (ssize_t)k;
		if (!c->ops->recv || !conn_list_reading(c))
			return 0;
		if (!l) {
			conn_list_fail(c, "out of memory");
			continue;
		}
		r = c->ops->recv(c, l->raw + l->raw_len, sizeof(l->raw) - l->raw_len);
		if (r < 0)
			return -1;
		l->raw_len += (size_t)r;
		conn_list_feed(c, l, r == 0);
	}
}

size_t conn_list_pending(struct conn *c)
{
	size_t k = 0;

	pthread_mutex_lock(&c->lock);
	if (c->list)
		k = c->list->out_len - c->list->out_off;
	pthread_mutex_unlock(&c->lock);
	return k;
}
