// SPDX-License-Identifier: MIT
/*
 * tls_nonblock: an event-loop style client. Non-blocking socket, poll(), and the OpenSSL
 * retry protocol: on SSL_ERROR_WANT_READ/WANT_WRITE the same SSL_write is repeated with
 * the same arguments once the socket is ready. A small send buffer makes WANT_WRITE happen
 * in the middle of the body, which is where a shim that rewrites requests can lose or
 * duplicate bytes.
 *
 *   tls_nonblock [-c CA] [-r ADDR] [-A AUTH] [-X METHOD] [-d DATA | -s SIZE] [-n COUNT]
 *                [-p] [-b SNDBUF] URL
 *
 * SIZE defaults to 256 KiB. -p enables SSL_MODE_ENABLE_PARTIAL_WRITE (SSL_write may then
 * report partial progress). -b sets SO_SNDBUF (default 8192; 0 leaves the system's).
 * Prints "sent BODY_LEN BODY_SHA256", "status N" and the body per request, and at the end
 * "nonblock want_read R want_write W" (how often each retry happened; informational).
 */
#include <poll.h>

#include "tlsclient.h"

static bool opt_partial;
static int opt_sndbuf = 8192;
static unsigned long want_read, want_write;

static void nb_opt(int o, const char *arg)
{
	if (o == 'p')
		opt_partial = true;
	else if (o == 'b')
		opt_sndbuf = atoi(arg);
}

static void nb_wait(int fd, short events)
{
	struct pollfd p = {fd, events, 0};

	for (;;) {
		int r = poll(&p, 1, 30000);

		if (r > 0)
			return;
		if (r == 0)
			tc_die("poll", "no progress for 30 s");
		if (errno != EINTR)
			tc_die("poll", strerror(errno));
	}
}

/* After a failed non-blocking call: wait for what it needs, or die. */
static void nb_retry_wait(struct tc_conn *c, int ret, const char *what)
{
	if (!c->ssl) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			tc_die(what, strerror(errno));
		want_write += !strcmp(what, "write");
		want_read += strcmp(what, "write") != 0;
		nb_wait(c->fd, strcmp(what, "write") ? POLLIN : POLLOUT);
		return;
	}
	switch (SSL_get_error(c->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		want_read++;
		nb_wait(c->fd, POLLIN);
		break;
	case SSL_ERROR_WANT_WRITE:
		want_write++;
		nb_wait(c->fd, POLLOUT);
		break;
	default:
		tc_die_ssl(what);
	}
}

static void nb_write_all(struct tc_conn *c, const char *p, size_t n)
{
	size_t off = 0;

	while (off < n) {
		if (c->ssl) {
			size_t done = 0;
			/* Same pointer and length on every retry, as OpenSSL requires. */
			int ok = SSL_write_ex(c->ssl, p + off, n - off, &done);

			if (ok == 1) {
				off += done;
				continue;
			}
			nb_retry_wait(c, ok, "write");
		} else {
			ssize_t w = write(c->fd, p + off, n - off);

			if (w > 0) {
				off += (size_t)w;
				continue;
			}
			nb_retry_wait(c, -1, "write");
		}
	}
}

static void nb_read_response(struct tc_conn *c, struct tc_response *r)
{
	bool eof = false;

	for (;;) {
		long used =
		    tc_parse_response((char *)c->buf + c->off, c->len - c->off, eof, false, r);

		if (used < 0)
			tc_die("response", "malformed or truncated");
		if (used > 0) {
			c->off += (size_t)used;
			if (r->status >= 200)
				return;
			tc_response_free(r);
			continue;
		}
		if (eof)
			tc_die("response", "connection closed before a complete response");
		tc_buf_reserve(c, 16384);
		if (c->ssl) {
			size_t got = 0;
			int ok = SSL_read_ex(c->ssl, c->buf + c->len, c->cap - c->len, &got);

			if (ok == 1) {
				c->len += got;
				continue;
			}
			int e = SSL_get_error(c->ssl, ok);

			if (e == SSL_ERROR_ZERO_RETURN ||
			    (e == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) ==
						       SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
				ERR_clear_error();
				eof = true;
				continue;
			}
			nb_retry_wait(c, ok, "read");
		} else {
			ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);

			if (n > 0)
				c->len += (size_t)n;
			else if (n == 0)
				eof = true;
			else
				nb_retry_wait(c, -1, "read");
		}
	}
}

int main(int argc, char **argv)
{
	struct tc_args a;
	struct tc_conn c = {.fd = -1};
	int err = 0;
	socklen_t el = sizeof(err);
	long i;

	tc_parse_args(argc, argv, "pb:", nb_opt, &a);
	tc_take_url(argc, argv, &a);
	if (!a.size_set && !a.data)
		a.size = 256 * 1024, a.size_set = true;
	c.fd = tc_tcp_connect(&a, true);
	if (opt_sndbuf > 0)
		setsockopt(c.fd, SOL_SOCKET, SO_SNDBUF, &opt_sndbuf, sizeof(opt_sndbuf));
	nb_wait(c.fd, POLLOUT);
	if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err)
		tc_die("connect", strerror(err ? err : errno));
	if (a.url.tls) {
		c.ctx = tc_tls_ctx(&a);
		if (opt_partial)
			SSL_CTX_set_mode(c.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
		c.ssl = tc_tls_new(c.ctx, &a, c.fd);
		for (;;) {
			int ok = SSL_connect(c.ssl);

			if (ok == 1)
				break;
			nb_retry_wait(&c, ok, "TLS handshake");
		}
	}
	for (i = 0; i < a.count; i++) {
		struct tc_response r;
		size_t body_len, head_len;
		char *body = tc_body(&a, &body_len), sha[65];
		const char *method = a.method ? a.method : body_len ? "POST" : "GET";
		char *head = tc_build_head(&a, method, a.url.path, (long long)body_len, NULL, 0);
		char *req;

		/* Head and body in one buffer: one SSL_write spans the head/body boundary. */
		head_len = strlen(head);
		req = malloc(head_len + body_len);
		if (!req)
			tc_die("malloc", strerror(ENOMEM));
		memcpy(req, head, head_len);
		memcpy(req + head_len, body, body_len);
		nb_write_all(&c, req, head_len + body_len);
		tc_sha256_hex(body, body_len, sha);
		printf("sent %zu %s\n", body_len, sha);
		nb_read_response(&c, &r);
		tc_print_response(&r);
		tc_response_free(&r);
		free(req);
		free(head);
		free(body);
	}
	printf("nonblock want_read %lu want_write %lu\n", want_read, want_write);
	/* Non-blocking close_notify may not go out at once; the server copes either way. */
	tc_close(&c);
	return 0;
}
