// SPDX-License-Identifier: MIT
/*
 * conn_resp: the response side of a connection's state machine (see conn.h): the API's
 * answers read back, matched to the requests conn.c sent and reported to deputyd, and the
 * refusals the shim serves from memory. Apart from conn.c so that each side reads whole.
 */
#include "conn.h"

#include "shim.h"

#include <string.h>

struct conn_report {
	char jti[128];
	int status;
};

static void conn_pop(struct conn *c)
{
	c->qhead = (c->qhead + 1) % CONN_MAX_INFLIGHT;
	c->qlen--;
}

size_t conn_after_read(struct conn *c, const char *buf, size_t n)
{
	struct conn_report rep[8];
	size_t total = n, taken = 0;
	int nrep = 0;

	pthread_mutex_lock(&c->lock);
	while (n > 0 && !c->resp_opaque && c->qlen > 0) {
		if (!c->resp_in_body && c->inflight[c->qhead].filter) {
			taken = n; /* the shim reads this answer whole (conn_list.c) */
			break;
		}
		if (!c->resp_in_body) {
			size_t used = 0;
			int rc = hh_resp_feed(&c->resp, buf, n, &used), st;
			enum hh_body_mode mode;
			bool req_head = c->inflight[c->qhead].head;
			bool req_connect = c->inflight[c->qhead].connect;

			if (rc < 0) {
				c->resp_opaque = true;
				break;
			}
			buf += used;
			n -= used;
			if (rc == 0)
				break;
			st = c->resp.status;
			if (st >= 100 && st < 200 && st != 101) {
				hh_resp_init(&c->resp); /* interim, e.g. 100 Continue */
				continue;
			}
			if (nrep < (int)(sizeof(rep) / sizeof(rep[0]))) {
				memcpy(rep[nrep].jti, c->inflight[c->qhead].jti,
				       sizeof(rep[0].jti));
				rep[nrep++].status = st;
			}
			if (st == 101 || (req_connect && st >= 200 && st < 300)) {
				__atomic_store_n(&c->upgraded, true, __ATOMIC_RELEASE);
				c->resp_opaque = true;
				conn_pop(c);
				break;
			}
			mode = hh_resp_body_mode(&c->resp, req_head, req_connect);
			if (mode == HH_BODY_NONE) {
				conn_pop(c);
				hh_resp_init(&c->resp);
				continue;
			}
			hh_body_init(&c->rbody, mode,
				     c->resp.content_length > 0 ? (uint64_t)c->resp.content_length
								: 0);
			c->resp_in_body = true;
		} else {
			bool done = false;
			ssize_t k = hh_body_feed(&c->rbody, buf, n, &done);

			if (k < 0) {
				c->resp_opaque = true;
				break;
			}
			buf += k;
			n -= (size_t)k;
			if (done) {
				c->resp_in_body = false;
				conn_pop(c);
				hh_resp_init(&c->resp);
			}
		}
	}
	if (c->deny_pending && (c->qlen == 0 || c->resp_opaque))
		conn_serve_now(c);
	pthread_mutex_unlock(&c->lock);

	shim_guard++;
	for (int i = 0; i < nrep; i++)
		dpc_response(rep[i].jti, rep[i].status);
	shim_guard--;
	return total - taken;
}

void conn_after_eof(struct conn *c)
{
	pthread_mutex_lock(&c->lock);
	c->qlen = 0;
	c->resp_in_body = false;
	if (c->deny_pending)
		conn_serve_now(c);
	pthread_mutex_unlock(&c->lock);
}

bool conn_serves_from_memory(struct conn *c)
{
	bool r;

	pthread_mutex_lock(&c->lock);
	r = c->denied && !c->swapped;
	pthread_mutex_unlock(&c->lock);
	return r;
}

size_t conn_deny_read(struct conn *c, char *buf, size_t n, bool peek)
{
	size_t k;

	pthread_mutex_lock(&c->lock);
	k = c->deny_len - c->deny_off;
	if (k > n)
		k = n;
	memcpy(buf, c->deny_buf + c->deny_off, k);
	if (!peek)
		c->deny_off += k;
	pthread_mutex_unlock(&c->lock);
	return k;
}

size_t conn_deny_pending_bytes(struct conn *c)
{
	size_t k;

	pthread_mutex_lock(&c->lock);
	k = c->denied ? c->deny_len - c->deny_off : 0;
	pthread_mutex_unlock(&c->lock);
	return k;
}

bool conn_is_http(struct conn *c)
{
	return __atomic_load_n(&c->qlen, __ATOMIC_RELAXED) > 0 || c->deny_pending || c->denied ||
	       (c->list && conn_list_pending(c) > 0);
}
