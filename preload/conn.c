// SPDX-License-Identifier: MIT
/*
 * conn: the per-connection request/response state machine (see conn.h for the model).
 */
#include "conn.h"

#include "deputy/event.h"
#include "deputy/proto.h"
#include "shim.h"
#include "table.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define CONN_SSL_ERROR_SSL 1	 /* SSL_ERROR_SSL, without pulling OpenSSL headers in here */
#define CONN_SSL_ERROR_SYSCALL 5 /* SSL_ERROR_SYSCALL: errno says why */

void *conn_map(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

struct conn *conn_new(const struct conn_ops *ops, int fd, void *ssl)
{
	struct conn *c = conn_map(sizeof(*c));

	if (!c)
		return NULL;
	c->ops = ops;
	c->fd = fd;
	c->ssl = ssl;
	c->resume = -1;
	c->rq = RQ_FIRST;
	pthread_mutex_init(&c->wlock, NULL);
	pthread_mutex_init(&c->rlock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	hh_resp_init(&c->resp);
	return c;
}

void conn_free(struct conn *c)
{
	if (!c)
		return;
	if (c->local_uses)
		dpc_flush(); /* its last uses reach deputyd with the connection's end */
	if (c->head)
		munmap(c->head, HH_HEAD_MAX);
	if (c->out)
		munmap(c->out, CONN_OUT_MAP);
	if (c->mcp_body)
		munmap(c->mcp_body, MCP_BODY_MAX);
	conn_list_free(c);
	pthread_mutex_destroy(&c->wlock);
	pthread_mutex_destroy(&c->rlock);
	pthread_mutex_destroy(&c->lock);
	munmap(c, sizeof(*c));
}

void conn_atfork_child(struct conn *c)
{
	pthread_mutex_init(&c->wlock, NULL);
	pthread_mutex_init(&c->rlock, NULL);
	pthread_mutex_init(&c->lock, NULL);
}

uint64_t conn_fd_cookie(int fd)
{
	uint64_t cookie = 0;
	socklen_t cl = sizeof(cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &cl) < 0)
		return 0;
	return cookie;
}

bool conn_fd_is_ours(struct conn *c)
{
	int saved = errno;
	bool ok = c->cookie == 0 || conn_fd_cookie(c->fd) == c->cookie;

	errno = saved;
	return ok;
}

/* ---- refusals ------------------------------------------------------------------------- */

/* Puts a socketpair behind the fd (see conn.h). Called with c->lock held. */
void conn_serve_now(struct conn *c)
{
	int sv[2], fl, fdfl;

	c->deny_pending = false;
	c->denied = true;
	c->qlen = 0;
	if (c->fd < 0 || !conn_fd_is_ours(c))
		return;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		shim_debug("socketpair: %s: the refusal is served from memory", strerror(errno));
		return;
	}
	if (!c->ssl) {
		ssize_t w = real_write(sv[1], c->deny_buf, c->deny_len);

		if (w != (ssize_t)c->deny_len) {
			real_close(sv[0]);
			real_close(sv[1]);
			return;
		}
	}
	real_close(sv[1]);
	fl = fcntl(c->fd, F_GETFL);
	fdfl = fcntl(c->fd, F_GETFD);
	if (fl >= 0)
		fcntl(sv[0], F_SETFL, fl & O_NONBLOCK);
	/* Wakes a thread blocked reading the old socket (it would never see the new file),
	 * and tells the server the connection is over. */
	shutdown(c->fd, SHUT_RDWR);
	if (dup3(sv[0], c->fd, (fdfl >= 0 && (fdfl & FD_CLOEXEC)) ? O_CLOEXEC : 0) < 0) {
		shim_debug("dup3: %s: the refusal is served from memory", strerror(errno));
		real_close(sv[0]);
		return;
	}
	real_close(sv[0]);
	if (!c->ssl) {
		c->swapped = true;
		c->deny_off = c->deny_len;
	}
	/* The fd is now the socketpair: remember it as ours. */
	c->cookie = conn_fd_cookie(c->fd);
}

void conn_refuse(struct conn *c, const char *reason)
{
	c->deny_off = 0;
	c->rq = RQ_DENIED;
	shim_debug("refused a request on fd %d: %s", c->fd, reason);
	pthread_mutex_lock(&c->lock);
	c->deny_pending = true;
	if (c->qlen == 0)
		conn_serve_now(c);
	pthread_mutex_unlock(&c->lock);
}

static void conn_deny(struct conn *c, const char *reason, const char *scope, const char *user)
{
	ssize_t n = hh_deny_response(c->deny_buf, sizeof(c->deny_buf), reason, scope, user);

	if (n < 0)
		n = hh_deny_response(c->deny_buf, sizeof(c->deny_buf), "refused", "", "");
	c->deny_len = n > 0 ? (size_t)n : 0;
	conn_refuse(c, reason);
}

/* A refusal of the shim's own (the head is not something it can hand to deputyd): deputyd
 * logs it as a deny of layer shim. */
static void conn_deny_local(struct conn *c, const char *reason, const char *host,
			    const char *method, const char *target)
{
	dpc_deny_report(reason, host, method, target);
	conn_deny(c, reason, "", "");
}

/* ---- the request side ----------------------------------------------------------------- */

static int conn_flush(struct conn *c, int flags)
{
	while (c->out_off < c->out_len) {
		ssize_t r = c->ops->send(c, c->out + c->out_off, c->out_len - c->out_off, flags);

		if (r < 0)
			return -1;
		c->out_off += (size_t)r;
	}
	c->out_len = c->out_off = 0;
	return 0;
}

static void conn_span(char *dst, size_t cap, const char *buf, struct hh_span s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;

	memcpy(dst, buf + s.off, n);
	dst[n] = '\0';
}

static void conn_peer_host(struct conn *c, char *out, size_t cap)
{
	out[0] = '\0';
	if (c->peer.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&c->peer)->sin_addr, out, cap);
	else if (c->peer.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c->peer)->sin6_addr, out, cap);
}

static void conn_unbracket(char *h)
{
	size_t n = strlen(h);

	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		memmove(h, h + 1, n - 2);
		h[n - 2] = '\0';
	}
}

/* The connection is refused for bytes the shim cannot read (see conn.h). connect() with
 * AF_UNSPEC aborts a TCP connection with a reset; whatever was held back never leaves. */
static void conn_reset(struct conn *c, const char *reason)
{
	struct sockaddr sa = {.sa_family = AF_UNSPEC};
	char host[HH_HOST_MAX];

	if (c->sni[0])
		snprintf(host, sizeof(host), "%s", c->sni);
	else
		conn_peer_host(c, host, sizeof(host));
	shim_debug("%s: %s: connection reset", host, reason);
	c->rq = RQ_RESET;
	c->hlen = 0;
	c->out_len = c->out_off = 0;
	if (c->fd >= 0 && conn_fd_is_ours(c))
		(void)real_connect(c->fd, &sa, sizeof(sa));
	dpc_deny_report(reason, host, NULL, NULL);
}

/* Could p[0..n) start a request line "TOKEN SP" with any method? (hh_method_prefix knows
 * only the upper-case known ones.) */
static enum hh_prefix conn_token_prefix(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && (p[i] == '\r' || p[i] == '\n'))
		i++;
	for (size_t start = i; i < n; i++) {
		if (p[i] == ' ' && i > start)
			return HH_PREFIX_YES;
		if (i - start >= 32 || !hh_is_tchar((unsigned char)p[i]))
			return HH_PREFIX_NO;
	}
	return HH_PREFIX_MAYBE;
}

/* What a connection's first bytes are: HTTP (YES), not yet known (MAYBE), or not (NO:
 * then *reset says whether the shim must refuse them, see conn.h). */
static enum hh_prefix conn_classify(struct conn *c, const char *p, size_t n, bool *reset)
{
	enum hh_prefix k = hh_method_prefix(p, n);

	*reset = false;
	if (k == HH_PREFIX_NO && (c->dest_rule & (DP_RULE_ROUTE | DP_RULE_STRICT)))
		k = conn_token_prefix(p, n);
	if (k == HH_PREFIX_NO && (c->dest_rule & DP_RULE_STRICT))
		*reset = c->ssl || !c->tls_hooked;
	return k;
}

/* The session table first (no round trip), else deputyd. An MCP route's token carries the
 * hash of the body, so deputyd's table never makes such a route local: it asks here. */
static void conn_decide(struct conn *c, const char *host, int port, const char *method,
			const char *target, struct dpc_decision *d)
{
	const char *scheme = c->https ? "https" : "http";

	if (tbl_decide(scheme, host, port, method, target, &c->peer, c->cookie, c->local_uses == 0,
		       d)) {
		c->local_uses++;
		return;
	}
	dpc_decide(scheme, host, port, method, target, c->cookie, c->sni, &c->peer, NULL, d);
	if (d->table_hint)
		tbl_hint();
}

void conn_enqueue(struct conn *c, const char *jti)
{
	pthread_mutex_lock(&c->lock);
	{
		int slot = (c->qhead + c->qlen) % CONN_MAX_INFLIGHT;

		snprintf(c->inflight[slot].jti, sizeof(c->inflight[slot].jti), "%s", jti);
		c->inflight[slot].head = c->req.is_head;
		c->inflight[slot].connect = c->req.is_connect;
		c->inflight[slot].upgrade = c->req.upgrade;
		c->inflight[slot].filter = false;
		c->qlen++;
	}
	pthread_mutex_unlock(&c->lock);
}

/* A complete head is in c->head: decide and put what goes to the network in c->out.
 * Over 100 lines on purpose: every check between parse and verdict (target, Host, SNI,
 * port, deputyd's answer) in the order it is made, each refusal one call here. */
static void conn_process_head(struct conn *c)
{
	struct hh_req *r = &c->req;
	struct dpc_decision *d = &c->dec;
	char host[HH_HOST_MAX], method[40], target[CONN_TARGET_MAX];
	struct dp_err err;
	int hport = -1, port;

	c->scan = (struct hh_scan){0};
	if (hh_req_parse(c->head, c->hlen, r, &err) < 0) {
		conn_deny_local(c, err.msg, c->sni, NULL, NULL);
		return;
	}
	conn_span(method, sizeof(method), c->head, r->method);
	if (r->target.len >= sizeof(target)) {
		conn_deny_local(c, "request target too long", c->sni, method, NULL);
		return;
	}
	conn_span(target, sizeof(target), c->head, r->target);
	if (r->host.len) {
		if (hh_host_norm(c->head + r->host.off, r->host.len, host, sizeof(host), &hport) <
		    0) {
			conn_deny_local(c, "invalid Host header", c->sni, method, target);
			return;
		}
		if (r->absolute_form && strcmp(host, r->abs_host) != 0) {
			conn_deny_local(c, "Host header does not match the request target", host,
					method, target);
			return;
		}
	} else if (r->absolute_form) {
		snprintf(host, sizeof(host), "%s", r->abs_host);
		hport = r->abs_port;
	} else if (c->sni[0]) {
		snprintf(host, sizeof(host), "%s", c->sni);
	} else {
		conn_peer_host(c, host, sizeof(host));
	}
	conn_unbracket(host);
	if (c->sni[0] && strcmp(host, c->sni) != 0) {
		conn_deny_local(c, "Host header does not match TLS SNI", host, method, target);
		return;
	}
	port = c->port > 0 ? c->port : hport > 0 ? hport : c->https ? 443 : 80;

	pthread_mutex_lock(&c->lock);
	if (c->qlen == CONN_MAX_INFLIGHT) {
		pthread_mutex_unlock(&c->lock);
		conn_deny_local(c, "too many requests in flight on one connection", host, method,
				target);
		return;
	}
	pthread_mutex_unlock(&c->lock);

	shim_guard++;
	conn_decide(c, host, port, method, target, d);
	shim_guard--;
	shim_debug("%s %s://%s:%d%s: %s%s%s", method, c->https ? "https" : "http", host, port,
		   target,
		   d->verdict == DP_VERDICT_DELEGATE	  ? "delegate"
		   : d->verdict == DP_VERDICT_PASSTHROUGH ? "passthrough"
							  : "deny",
		   d->reason[0] ? ": " : "", d->reason);

	if (d->verdict == DP_VERDICT_MCP_BODY) {
		conn_mcp_start(c, host, port, method, target);
		return;
	}
	if (d->verdict == DP_VERDICT_DELEGATE) {
		char value[sizeof(d->token) + 8];
		ssize_t n;

		snprintf(value, sizeof(value), "Bearer %s", d->token);
		n = hh_req_rewrite(c->head, c->hlen, r, d->header, value, c->out, CONN_OUT_CAP);
		explicit_bzero(value, sizeof(value));
		if (n < 0) {
			conn_deny_local(c, "cannot add the token to the request", host, method,
					target);
			return;
		}
		c->out_len = (size_t)n;
	} else if (d->verdict == DP_VERDICT_PASSTHROUGH) {
		memcpy(c->out, c->head, c->hlen);
		c->out_len = c->hlen;
	} else {
		conn_deny(c, d->reason[0] ? d->reason : "denied", d->scope, d->user);
		return;
	}
	explicit_bzero(d->token, sizeof(d->token));
	c->out_off = 0;

	conn_enqueue(c, d->jti);
	c->hlen = 0;
	if (r->chunked) {
		hh_body_init(&c->body, HH_BODY_CHUNKED, 0);
		c->rq = RQ_BODY;
	} else if (r->content_length > 0) {
		hh_body_init(&c->body, HH_BODY_LENGTH, (uint64_t)r->content_length);
		c->rq = RQ_BODY;
	} else {
		c->rq = RQ_HEAD;
	}
}

/* Body bytes that came in the same caller buffer as the head join the head in c->out, so
 * both leave in one write (one TLS record), as the caller handed them over; the server
 * reads the request in one piece. Only when the transport takes no partial writes: then a
 * failed flush fails the whole call as would-block and the caller retries it anyway
 * (resume skips what c->out already owes), which is what it sees today when the head's own
 * flush fails. With partial writes the body keeps its own send, whose count the caller
 * gets back. */
static void conn_take_body(struct conn *c, const char *p, size_t n, size_t *used)
{
	size_t room = CONN_OUT_CAP - c->out_len;
	struct hh_body probe = c->body;
	bool done = false;
	ssize_t k;

	if (c->rq != RQ_BODY || c->out_off != 0 || room == 0 || n == 0)
		return;
	k = hh_body_feed(&probe, p, n < room ? n : room, &done);
	if (k <= 0)
		return; /* malformed or empty: the RQ_BODY step handles it as before */
	memcpy(c->out + c->out_len, p, (size_t)k);
	c->out_len += (size_t)k;
	c->body = probe;
	*used += (size_t)k;
	if (done)
		c->rq = RQ_HEAD;
}

static bool conn_buffers(struct conn *c)
{
	if (!c->head)
		c->head = conn_map(HH_HEAD_MAX);
	if (!c->out)
		c->out = conn_map(CONN_OUT_MAP);
	return c->head && c->out;
}

/* Over 100 lines on purpose: one switch over a request's states (first bytes, head, body,
 * refused, reset), each taking what it can of the application's bytes and handing the rest
 * to the next state in the same loop. */
ssize_t conn_write(struct conn *c, const char *buf, size_t len, int flags, bool partial_ok)
{
	size_t used = 0;
	ssize_t ret;

	pthread_mutex_lock(&c->wlock);
	c->fake_err = 0;
	if (c->resume >= 0) {
		used = (size_t)c->resume < len ? (size_t)c->resume : len;
		c->resume = -1;
	}
	if (c->out_off < c->out_len && conn_flush(c, flags) < 0)
		goto blocked;

	while (used < len) {
		const char *p = buf + used;
		size_t n = len - used;

		if ((c->rq == RQ_HEAD || c->rq == RQ_FIRST) && c->hlen == 0 &&
		    __atomic_load_n(&c->upgraded, __ATOMIC_ACQUIRE))
			c->rq = RQ_OPAQUE;
		switch (c->rq) {
		case RQ_OPAQUE: {
			ssize_t r = c->ops->send(c, p, n, flags);

			if (r < 0)
				goto send_failed;
			used += (size_t)r;
			if ((size_t)r < n && partial_ok)
				goto done;
			break;
		}
		case RQ_DENIED:
			used = len; /* swallowed: the agent reads the 403 next */
			break;
		case RQ_BROKEN:
			errno = EPROTO;
			c->fake_err = CONN_SSL_ERROR_SSL;
			if (used && partial_ok)
				goto done;
			ret = -1;
			goto out;
		case RQ_RESET:
			errno = ECONNRESET;
			c->fake_err = CONN_SSL_ERROR_SYSCALL;
			ret = -1;
			goto out;
		case RQ_FIRST: {
			char probe[80];
			size_t pl = c->hlen < 40 ? c->hlen : 40, extra = n < 40 ? n : 40;
			bool reset;

			if (c->hlen)
				memcpy(probe, c->head, pl);
			memcpy(probe + pl, p, extra);
			switch (conn_classify(c, probe, pl + extra, &reset)) {
			case HH_PREFIX_NO:
				if (reset) {
					conn_reset(c, c->ssl
							  ? "not HTTP/1.x inside TLS"
							  : "not HTTP, nor TLS the shim mediates");
					continue;
				}
				/* Not HTTP: what was held back goes out first, then everything
				 * passes untouched. */
				c->rq = RQ_OPAQUE;
				if (c->hlen) {
					memcpy(c->out, c->head, c->hlen);
					c->out_len = c->hlen;
					c->out_off = 0;
					c->hlen = 0;
					if (conn_flush(c, flags) < 0)
						goto blocked;
				}
				continue;
			case HH_PREFIX_YES:
				c->rq = RQ_HEAD;
				break;
			case HH_PREFIX_MAYBE:
				break;
			}
		}
			/* fall through */
		case RQ_HEAD: {
			size_t k = 0;
			int rc;

			if (!conn_buffers(c)) {
				conn_deny_local(c, "out of memory", c->sni, NULL, NULL);
				continue;
			}
			rc = hh_scan_feed(&c->scan, p, n, &k);
			if (rc < 0) {
				conn_deny_local(c, "bare CR or LF in request head", c->sni, NULL,
						NULL);
				continue;
			}
			if (c->hlen + k > HH_HEAD_MAX) {
				conn_deny_local(c, "request head too large", c->sni, NULL, NULL);
				continue;
			}
			memcpy(c->head + c->hlen, p, k);
			c->hlen += k;
			used += k;
			if (rc == 0)
				break;
			if (c->rq == RQ_FIRST)
				c->rq = RQ_HEAD;
			conn_process_head(c);
			if (!partial_ok)
				conn_take_body(c, buf + used, len - used, &used);
			if (c->out_off < c->out_len && conn_flush(c, flags) < 0)
				goto blocked;
			break;
		}
		case RQ_MCP:
			used += conn_mcp_take(c, p, n);
			if (c->out_off < c->out_len && conn_flush(c, flags) < 0)
				goto blocked;
			break;
		case RQ_BODY: {
			struct hh_body probe = c->body;
			bool done = false;
			ssize_t k = hh_body_feed(&probe, p, n, &done), r;

			if (k < 0) {
				/* The head went out already: the server now waits for a body
				 * the shim cannot frame. Nothing more goes to it. */
				c->rq = RQ_BROKEN;
				dpc_deny_report("malformed chunked request body", c->sni, NULL,
						NULL);
				continue;
			}
			if (k == 0) {
				c->rq = RQ_HEAD;
				continue;
			}
			r = c->ops->send(c, p, (size_t)k, flags);
			if (r < 0)
				goto send_failed;
			(void)hh_body_feed(&c->body, p, (size_t)r, &done);
			used += (size_t)r;
			if (done)
				c->rq = RQ_HEAD;
			if (r < k && partial_ok)
				goto done;
			break;
		}
		}
	}
done:
	ret = (ssize_t)used;
	goto out;

send_failed:
	if (used == 0) {
		ret = -1;
		goto out;
	}
	if (partial_ok) {
		ret = (ssize_t)used;
		goto out;
	}
	if (c->ops->would_block(c))
		c->resume = (ssize_t)used;
	ret = -1;
	goto out;

blocked:
	/* Bytes the caller already handed over are still owed: the caller must come back,
	 * so the call fails as would-block even if some of its bytes were taken. */
	if (c->ops->would_block(c))
		c->resume = (ssize_t)used;
	ret = -1;
out:
	pthread_mutex_unlock(&c->wlock);
	return ret;
}
