// SPDX-License-Identifier: MIT
/*
 * relay: what happens to one redirected connection (see relay.h). Anything the proxy cannot
 * mediate ends the connection with a reset before a byte goes upstream.
 */
#include "relay.h"

#include <deputy/proto.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "hello.h"
#include "io.h"
#include "leaf.h"
#include "pxhttp.h"
#include "ptable.h"
#include "pxmcp.h"
#include "upstream.h"

#define AGENT_TIMEOUT 60 /* seconds a silent agent keeps its connection */
#define IN_CAP (HH_HEAD_MAX + 16384)
#define OUT_CAP (HH_HEAD_MAX + 24576)
#define HELLO_TIMEOUT 10 /* seconds for a complete ClientHello or request line */

struct conn {
	int fd;
	uint64_t id; /* deputyd's */
	struct up_key up;
	struct pxio io;
	char sni[PXH_SNI_MAX];
	uint64_t requests;
	struct {
		int verdict;
		bool local; /* from the session's table: its use is reported in uses */
		char reason[512], header[256], jti[64], scope[256], user[1100];
		char token[20480];
		char method[33], target[8193], host[HH_HOST_MAX]; /* of a local decision */
	} d;
	struct ptbl_uses uses;
	char in[IN_CAP];
	size_t in_len;
	char out[OUT_CAP];
	struct hh_req req;
	struct pxmcp mcp; /* the request's MCP call, when its route has one */
	struct chan_reply rep;
	uint8_t msgbuf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
};

/* ---- deputyd ------------------------------------------------------------------------- */

static void msg_start(struct conn *c, struct dp_msg *m, uint16_t type, uint8_t flags)
{
	dp_msg_init(m, c->msgbuf, sizeof(c->msgbuf), type, 0, flags);
	dp_msg_put_u64(m, DP_T_CONN, c->id);
}

static void tell_deny(struct conn *c, const char *reason)
{
	struct dp_msg m;

	if (!c->id)
		return;
	msg_start(c, &m, DP_MSG_PROXY_DENY, DP_F_NOREPLY);
	dp_msg_put_str(&m, DP_T_REASON, reason);
	chan_tell(&m);
}

/* deputyd checks the socket itself (kernel data) and says where it was going. */
static int attribute(struct conn *c)
{
	struct dp_msg m;
	uint16_t alen;
	const uint8_t *addr;

	dp_msg_init(&m, c->msgbuf, sizeof(c->msgbuf), DP_MSG_PROXY_CONN, 0, 0);
	if (chan_call(&m, c->fd, &c->rep) != 0 || c->rep.h.type != DP_MSG_PROXY_CONN_OK) {
		char why[256] = "no reply";

		chan_str(&c->rep, DP_T_REASON, why, sizeof(why));
		pr_debug("connection refused by deputyd: %s", why);
		return -EPERM;
	}
	c->id = chan_u64(&c->rep, DP_T_CONN);
	c->up.tag = chan_u64(&c->rep, DP_T_COOKIE);
	c->up.family = (int)chan_u64(&c->rep, DP_T_FAMILY);
	c->up.port = (uint16_t)chan_u64(&c->rep, DP_T_PORT);
	addr = chan_field(&c->rep, DP_T_ADDR, &alen);
	if (!c->id || !addr || alen != (c->up.family == AF_INET ? 4 : 16))
		return -EPROTO;
	memcpy(c->up.addr, addr, alen);
	return 0;
}

static SSL_CTX *leaf_for(struct conn *c)
{
	struct dp_msg m;
	char *pem;
	uint16_t n;
	const uint8_t *v;
	SSL_CTX *ctx;

	msg_start(c, &m, DP_MSG_PROXY_LEAF, 0);
	dp_msg_put_str(&m, DP_T_HOST, c->sni);
	if (chan_call(&m, -1, &c->rep) != 0 || c->rep.h.type != DP_MSG_DATA_REPLY)
		return NULL;
	ctx = leaf_get(chan_u64(&c->rep, DP_T_OFFSET), NULL);
	if (ctx)
		return ctx;
	v = chan_field(&c->rep, DP_T_DATA, &n);
	pem = v ? strndup((const char *)v, n) : NULL;
	ctx = pem ? leaf_get(chan_u64(&c->rep, DP_T_OFFSET), pem) : NULL;
	free(pem);
	return ctx;
}

/* ---- the first bytes: TLS or plain HTTP ---------------------------------------------- */

static int agent_start(struct conn *c)
{
	uint8_t *buf = (uint8_t *)c->out; /* free until the first request */
	int alpn_h1, wait_us = 500;
	enum pxh_kind k = PXH_MORE;
	int64_t deadline = dp_now() + HELLO_TIMEOUT;
	SSL_CTX *ctx;

	/* MSG_PEEK leaves the bytes for OpenSSL to read; it returns at once while any byte is
	 * queued, so an incomplete hello is polled, backing off, until the deadline. */
	for (;;) {
		ssize_t r = recv(c->fd, buf, PXH_HELLO_MAX, MSG_PEEK);

		if (r <= 0)
			return -EPROTO;
		k = pxh_classify(buf, (size_t)r, c->sni, &alpn_h1);
		if (k != PXH_MORE)
			break;
		if (dp_now() > deadline)
			return -ETIMEDOUT;
		usleep(wait_us);
		if (wait_us < 50000)
			wait_us *= 2;
	}
	if (k == PXH_BAD) {
		tell_deny(c, "neither a TLS ClientHello nor an HTTP request");
		return -EPROTO;
	}
	c->io.fd = c->fd;
	c->up.tls = k == PXH_TLS;
	if (k == PXH_PLAIN)
		return 0;
	if (!alpn_h1) {
		tell_deny(c, "the client offers no http/1.1 (ALPN)");
		return -EPROTO;
	}
	ctx = leaf_for(c);
	if (!ctx)
		return -EPERM; /* deputyd refused the SNI and logged why */
	c->io.ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	if (!c->io.ssl)
		return -ENOMEM;
	SSL_set_app_data(c->io.ssl, c->sni);
	SSL_set_fd(c->io.ssl, c->fd);
	if (SSL_accept(c->io.ssl) != 1) {
		/* Typically a client that does not trust the session's CA: nothing was sent. */
		pr_debug("TLS handshake with the agent failed (%s)", c->sni);
		ERR_clear_error();
		return -EPROTO;
	}
	snprintf(c->up.host, sizeof(c->up.host), "%s", c->sni);
	return 0;
}

/* ---- requests ------------------------------------------------------------------------ */

/* Reads until c->in starts with a complete request head of *head_len bytes. 1, 0 at a clean
 * end before a new request, -1 with err set. */
static int read_head(struct conn *c, size_t *head_len, struct dp_err *err)
{
	struct hh_scan sc = {0};
	size_t scanned = 0;

	for (;;) {
		ssize_t n;

		if (scanned < c->in_len) {
			size_t used = 0;
			int r = hh_scan_feed(&sc, c->in + scanned, c->in_len - scanned, &used);

			if (r < 0) {
				dp_err_set(err, "malformed request head");
				return -1;
			}
			scanned += used;
			if (r == 1) {
				*head_len = scanned;
				return 1;
			}
		}
		if (scanned >= HH_HEAD_MAX) {
			dp_err_set(err, "request head too large");
			return -1;
		}
		n = pxio_read(&c->io, c->in + c->in_len, sizeof(c->in) - c->in_len);
		if (n == 0 && c->in_len == 0)
			return 0;
		if (n <= 0) {
			dp_err_set(err, "the agent's connection failed");
			return -1;
		}
		c->in_len += (size_t)n;
	}
}

/* The session's table decides, if it covers the request exactly (ptable.h); the host of
 * a TLS request must be its handshake's, as deputyd requires. */
static bool ask_table(struct conn *c, const char *host)
{
	const struct hh_req *r = &c->req;
	struct ptbl_out o = {c->d.header,      c->d.token,	    c->d.jti,
			     c->d.scope,       sizeof(c->d.header), sizeof(c->d.token),
			     sizeof(c->d.jti), sizeof(c->d.scope)};

	if (r->method.len >= sizeof(c->d.method) || r->target.len >= sizeof(c->d.target) ||
	    (c->up.tls && strcasecmp(host, c->sni) != 0))
		return false;
	memcpy(c->d.method, c->in + r->method.off, r->method.len);
	c->d.method[r->method.len] = '\0';
	memcpy(c->d.target, c->in + r->target.off, r->target.len);
	c->d.target[r->target.len] = '\0';
	if (!ptbl_decide(&c->up, c->id, host, c->d.method, c->d.target, &o))
		return false;
	snprintf(c->d.host, sizeof(c->d.host), "%s", host);
	c->d.verdict = DP_VERDICT_DELEGATE;
	c->d.local = true;
	snprintf(c->d.reason, sizeof(c->d.reason), "delegated (session table)");
	return true;
}

static int ask(struct conn *c, const char *host)
{
	const struct hh_req *r = &c->req;
	struct dp_msg m;

	msg_start(c, &m, DP_MSG_PROXY_DECIDE, 0);
	dp_msg_put_str(&m, DP_T_SCHEME, c->up.tls ? "https" : "http");
	dp_msg_put_str(&m, DP_T_HOST, host);
	dp_msg_put(&m, DP_T_METHOD, c->in + r->method.off, r->method.len);
	dp_msg_put(&m, DP_T_TARGET, c->in + r->target.off, r->target.len);
	if (c->mcp.active)
		pxmcp_put_call(&m, &c->mcp);
	memset(&c->d, 0, offsetof(__typeof__(c->d), token) + 1);
	if (!c->mcp.active && ask_table(c, host))
		return 0;
	if (chan_call(&m, -1, &c->rep) != 0 || c->rep.h.type != DP_MSG_DECISION) {
		c->d.verdict = DP_VERDICT_DENY;
		if (chan_str(&c->rep, DP_T_REASON, c->d.reason, sizeof(c->d.reason)) != 0 || m.err)
			snprintf(c->d.reason, sizeof(c->d.reason), "request too large to decide");
		return 0;
	}
	c->d.verdict = (int)chan_u64(&c->rep, DP_T_VERDICT);
	if (chan_field(&c->rep, DP_T_GEN, &(uint16_t){0}))
		ptbl_hint(c->up.tag);
	chan_str(&c->rep, DP_T_REASON, c->d.reason, sizeof(c->d.reason));
	chan_str(&c->rep, DP_T_SCOPE, c->d.scope, sizeof(c->d.scope));
	chan_str(&c->rep, DP_T_USER, c->d.user, sizeof(c->d.user));
	chan_str(&c->rep, DP_T_JTI, c->d.jti, sizeof(c->d.jti));
	if (c->d.verdict == DP_VERDICT_DELEGATE &&
	    (chan_str(&c->rep, DP_T_HEADER, c->d.header, sizeof(c->d.header)) != 0 ||
	     chan_str(&c->rep, DP_T_TOKEN, c->d.token, sizeof(c->d.token)) != 0)) {
		c->d.verdict = DP_VERDICT_DENY;
		snprintf(c->d.reason, sizeof(c->d.reason), "malformed decision");
	}
	if (c->mcp.active)
		pxmcp_take_rules(&c->mcp, &c->rep);
	return 0;
}

static void refuse(struct conn *c, const char *reason, const char *scope, const char *user)
{
	ssize_t n = hh_deny_response(c->out, sizeof(c->out), reason, scope, user);

	if (n > 0)
		pxio_write(&c->io, c->out, (size_t)n);
}

/* An MCP client reads the refusal of a call as a JSON-RPC error for its id. */
static void refuse_mcp(struct conn *c, bool step_up, const char *reason, const char *scope,
		       const char *user)
{
	ssize_t n =
	    mcp_deny_response(c->out, sizeof(c->out), c->mcp.call.id, step_up, reason, scope, user);

	if (n > 0)
		pxio_write(&c->io, c->out, (size_t)n);
}

/* The upstream could not be reached or verified: not deputy's refusal (403), the gateway's
 * failure (RFC 9110 §15.6.3). */
static void bad_gateway(struct conn *c)
{
	static const char resp[] =
	    "HTTP/1.1 502 Bad Gateway\r\n"
	    "Content-Type: application/json\r\n"
	    "Content-Length: 60\r\n"
	    "Connection: close\r\n\r\n"
	    "{\"error\":\"deputy_upstream\",\"reason\":\"upstream unreachable\"}\n";

	pxio_write(&c->io, resp, sizeof(resp) - 1);
}

/* Sends the rebuilt head (c->out, out_len) and the request body that follows it: what c->in
 * holds after the head, then what the agent sends. *end: where the body ended in c->in (a
 * pipelined request may follow). c->in still holds the head when *all_buffered. */
static int send_request(struct conn *c, struct upconn *u, size_t head_len, size_t out_len,
			bool *all_buffered, size_t *end)
{
	struct hh_body b;
	size_t off = head_len;
	bool done;
	ssize_t k;

	*all_buffered = true;
	if (c->mcp.active) { /* read whole already, to decide on */
		*end = head_len;
		return pxio_write(&u->io, c->out, out_len) == 0 &&
			       pxio_write(&u->io, c->mcp.raw, c->mcp.raw_len) == 0
			   ? 0
			   : -1;
	}
	pxhttp_req_body(&c->req, &b);
	done = b.mode == HH_BODY_NONE;
	k = done ? 0 : hh_body_feed(&b, c->in + off, c->in_len - off, &done);
	if (k < 0)
		return -1;
	/* The body bytes already here go with the head: one TLS record and one segment, so the
	 * server reads the request in one go instead of waiting for a second packet. */
	if ((size_t)k <= sizeof(c->out) - out_len) {
		memcpy(c->out + out_len, c->in + off, (size_t)k);
		out_len += (size_t)k;
		off += (size_t)k;
		k = 0;
	}
	if (pxio_write(&u->io, c->out, out_len) != 0 ||
	    (k > 0 && pxio_write(&u->io, c->in + off, (size_t)k) != 0))
		return -1;
	off += (size_t)k;
	while (!done) {
		ssize_t n;

		*all_buffered = false;
		off = c->in_len = 0;
		n = pxio_read(&c->io, c->in, sizeof(c->in));
		if (n <= 0)
			return -1;
		c->in_len = (size_t)n;
		k = hh_body_feed(&b, c->in, (size_t)n, &done);
		if (k < 0 || (k > 0 && pxio_write(&u->io, c->in, (size_t)k) != 0))
			return -1;
		off = (size_t)k;
	}
	*end = off;
	return 0;
}

/* Relays one response (and any interim 1xx before it). 0 when it ended where its framing
 * says (the upstream may be reused), 1 when it ended with the upstream's close, -1 on an
 * error after bytes reached the agent, -2 when the upstream gave nothing at all. */
static int relay_response(struct conn *c, struct upconn *u, int *status)
{
	struct hh_resp rs;
	struct hh_body b;
	bool in_body = false, any = false;

	hh_resp_init(&rs);
	for (;;) {
		ssize_t n = pxio_read(&u->io, c->out, sizeof(c->out));
		size_t off = 0;
		bool done = false;

		if (n <= 0)
			return !any ? -2 : in_body && b.mode == HH_BODY_CLOSE && n == 0 ? 1 : -1;
		any = true;
		while (off < (size_t)n && !done) {
			if (!in_body) {
				size_t used = 0;
				int r = hh_resp_feed(&rs, c->out + off, (size_t)n - off, &used);
				enum hh_body_mode mode;

				if (r < 0)
					return -1;
				off += used;
				if (r == 0)
					break;
				*status = rs.status;
				if (rs.status >= 100 && rs.status < 200 && rs.status != 101) {
					hh_resp_init(&rs);
					continue;
				}
				mode = rs.status == 101
					   ? HH_BODY_CLOSE
					   : hh_resp_body_mode(&rs, c->req.is_head, false);
				hh_body_init(&b, mode,
					     rs.content_length > 0 ? (uint64_t)rs.content_length
								   : 0);
				in_body = true;
				done = mode == HH_BODY_NONE;
			} else {
				ssize_t k = hh_body_feed(&b, c->out + off, (size_t)n - off, &done);

				if (k < 0)
					return -1;
				off += (size_t)k;
			}
		}
		if (pxio_write(&c->io, c->out, off) != 0)
			return -1;
		if (done)
			return off == (size_t)n ? 0
						: 1; /* bytes beyond the response: not reusable */
	}
}

static void report(struct conn *c, int status)
{
	struct dp_msg m;

	msg_start(c, &m, DP_MSG_PROXY_RESPONSE, DP_F_NOREPLY);
	dp_msg_put_str(&m, DP_T_JTI, c->d.jti);
	dp_msg_put_u64(&m, DP_T_STATUS, (uint64_t)status);
	chan_tell(&m);
}

/* Sends the (rewritten) head and body upstream and relays the response. 0 to go on with the
 * next request, 1 to end the connection after a complete answer, -1 to reset it. */
static int forward(struct conn *c, size_t head_len, size_t out_len)
{
	struct dp_err err;
	int attempt, rc = -1, status = 0;
	size_t end = head_len;

	for (attempt = 0; attempt < 2; attempt++) {
		bool reused, all_buffered = true;
		struct upconn *u = up_get(&c->up, &reused, &err);

		if (!u) {
			pr_info("upstream %s: %s", c->up.host[0] ? c->up.host : "(plain)", err.msg);
			bad_gateway(c);
			report(c, 502);
			return 1;
		}
		/* The head is rebuilt into c->out by the caller and kept in c->in: rewrite
		 * again for a retry (c->out is the response buffer). */
		if (send_request(c, u, head_len, out_len, &all_buffered, &end) != 0) {
			up_drop(u);
			if (reused && attempt == 0 && all_buffered)
				goto retry;
			return -1;
		}
		/* The token went out: its use is reported before the agent sees an answer, so
		 * it reaches deputyd before anything the agent does next (a session's end, a
		 * reload a test or an operator makes after the response) and is judged by the
		 * config it was decided under. */
		if (c->d.local) {
			ptbl_use(&c->uses, c->id, c->up.tls ? "https" : "http", c->d.jti,
				 c->d.method, c->d.host, c->up.port, c->d.target);
			c->d.local = false;
		}
		ptbl_flush(&c->uses);
		rc = c->mcp.filter ? pxmcp_relay_filtered(&u->io, &c->io, c->out, sizeof(c->out),
							  &c->mcp, c->req.is_head, &status)
				   : relay_response(c, u, &status);
		if (rc == 0)
			up_put(u);
		else
			up_drop(u);
		if (rc == -2 && reused && attempt == 0 && all_buffered)
			goto retry;
		break;
	retry:
		/* A pooled connection the server had closed: once more, on a new one. */
		out_len = (size_t)pxhttp_upstream_head(
		    c->in, head_len, &c->req,
		    c->d.verdict == DP_VERDICT_DELEGATE ? c->d.header : NULL, c->d.token, c->out,
		    sizeof(c->out));
	}
	report(c, status);
	memmove(c->in, c->in + end, c->in_len - end);
	c->in_len -= end;
	return rc == 0 ? 0 : rc == 1 ? 1 : -1;
}

/* An MCP route's POST: its body read whole, its call decided by deputyd (pxmcp.h). 0 to go
 * on with c->d, 1 after a refusal. */
static int mcp_call(struct conn *c, size_t head_len, const char *host)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	const char *why;
	int r;

	/* The body is needed before the server is asked anything: the client waits for this. */
	if (c->req.expect_continue)
		pxio_write(&c->io, cont, sizeof(cont) - 1);
	r = pxmcp_read_body(&c->io, c->in, sizeof(c->in), &c->in_len, head_len, &c->req, &c->mcp,
			    &why);
	if (r != 0 || pxmcp_call(&c->mcp, c->in, &c->req, &why) != 0) {
		tell_deny(c, why);
		refuse_mcp(c, false, why, "", "");
		/* A client still sending would see a reset (unread bytes at close) instead of
		 * the 403: the rest of an over-size body is read and dropped, within a bound. */
		for (size_t left = 4 * MCP_BODY_MAX; r == -E2BIG && left > 0;) {
			ssize_t n = pxio_read(&c->io, c->in, sizeof(c->in));

			if (n <= 0)
				break;
			left = (size_t)n < left ? left - (size_t)n : 0;
		}
		return 1;
	}
	ask(c, host);
	if (c->d.verdict != DP_VERDICT_DELEGATE && c->d.verdict != DP_VERDICT_PASSTHROUGH) {
		refuse_mcp(c, true, c->d.reason, c->d.scope, c->d.user);
		return 1;
	}
	return 0;
}

/* One request: parse, decide, refuse or forward. As forward(). */
static int one_request(struct conn *c, size_t head_len)
{
	char host[HH_HOST_MAX];
	struct dp_err err;
	ssize_t out_len;
	bool last;
	int rc;

	if (hh_req_parse(c->in, head_len, &c->req, &err) != 0 ||
	    pxhttp_host(c->in, &c->req, host, &err) != 0) {
		tell_deny(c, err.msg);
		refuse(c, err.msg, "", "");
		return 1;
	}
	c->requests++;
	pxmcp_reset(&c->mcp);
	ask(c, host);
	if (c->d.verdict == DP_VERDICT_MCP_BODY && mcp_call(c, head_len, host) != 0)
		return 1;
	if (c->d.verdict != DP_VERDICT_DELEGATE && c->d.verdict != DP_VERDICT_PASSTHROUGH) {
		refuse(c, c->d.reason, c->d.scope, c->d.user);
		return 1;
	}
	out_len = pxhttp_upstream_head(c->in, head_len, &c->req,
				       c->d.verdict == DP_VERDICT_DELEGATE ? c->d.header : NULL,
				       c->d.token, c->out, sizeof(c->out));
	if (out_len < 0) {
		refuse(c, "the request head cannot carry the token", c->d.scope, c->d.user);
		return 1;
	}
	last = pxhttp_last_request(c->in, &c->req);
	rc = forward(c, head_len, (size_t)out_len);
	return rc == 0 && last ? 1 : rc;
}

static void conn_end(struct conn *c, bool orderly)
{
	struct dp_msg m;

	if (c->id) {
		ptbl_flush(&c->uses); /* before the close: deputyd has every use of it */
		msg_start(c, &m, DP_MSG_PROXY_CLOSE, DP_F_NOREPLY);
		dp_msg_put_u64(&m, DP_T_STATUS, c->requests);
		chan_tell(&m);
	}
	if (c->io.ssl) {
		if (orderly)
			SSL_shutdown(c->io.ssl);
		SSL_free(c->io.ssl);
	}
	if (orderly)
		close(c->fd);
	else
		pxio_reset(c->fd);
}

void relay_conn(int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	bool orderly = false;
	int one = 1;

	if (!c) {
		pxio_reset(fd);
		return;
	}
	c->fd = fd;
	c->io.fd = -1;
	pxio_timeouts(fd, AGENT_TIMEOUT);
	/* Handshakes and responses go out in several small writes: without this, Nagle waits
	 * for the agent's delayed ACKs (tens to hundreds of ms per exchange). */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (attribute(c) == 0 && agent_start(c) == 0) {
		for (;;) {
			size_t head_len;
			struct dp_err err;
			int r = read_head(c, &head_len, &err);

			if (r == 0) {
				orderly = true;
				break;
			}
			if (r < 0) {
				if (c->in_len > 0)
					tell_deny(c, err.msg);
				break;
			}
			r = one_request(c, head_len);
			if (r != 0) {
				/* After a 403 or a complete answer the agent reads to the end;
				 * anything else must not look complete. */
				orderly = r == 1;
				break;
			}
		}
	}
	conn_end(c, orderly);
	pxmcp_reset(&c->mcp);
	OPENSSL_cleanse(c->d.token, sizeof(c->d.token));
	free(c);
}
