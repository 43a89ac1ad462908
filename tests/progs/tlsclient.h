/* SPDX-License-Identifier: MIT */
/*
 * tlsclient: what the hand-written test clients in tests/progs share — URL and argument
 * parsing, a blocking TLS (or plain TCP) connection trusting a test CA, building a request
 * head, and reading HTTP/1.1 responses (Content-Length, chunked, or until end of stream;
 * 1xx interim answers skipped).
 *
 * Each client writes its request in its own peculiar way (one byte per SSL_write,
 * non-blocking, chunked, pipelined...): that is what each one tests. Header-only: each
 * program in tests/progs is its own binary.
 *
 * Common options (tc_parse_args):
 *   -c CAFILE   trust this CA (TLS); -r ADDR connect to ADDR instead of resolving the URL's
 *   host (SNI, certificate name and Host stay the URL's); -A VALUE Authorization header
 *   ("-" for none; default a fake service-account credential the shim must replace);
 *   -X METHOD; -d DATA body; -s SIZE generated body; -n COUNT requests; -H "Name: value".
 * Output: for each response "status N" then the body (newline-terminated), on stdout.
 */
#ifndef DEPUTY_TLSCLIENT_H
#define DEPUTY_TLSCLIENT_H

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define TC_SERVICE_ACCOUNT "Bearer service-account-secret-0000"
#define TC_MAX_EXTRA 16
#define TC_MAX_RESPONSE (64u * 1024 * 1024)

struct tc_url {
	bool tls;
	char host[256];
	char port[8];
	char path[2048];
};

struct tc_args {
	const char *cafile;
	const char *connect_addr;
	const char *auth;
	const char *method;
	const char *data;
	size_t size;
	bool size_set;
	long count;
	const char *extra[TC_MAX_EXTRA];
	int nextra;
	struct tc_url url;
	const char *url_text;
};

struct tc_conn {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	/* Received bytes not yet consumed, so pipelined responses are not lost. */
	unsigned char *buf;
	size_t off, len, cap;
};

struct tc_response {
	int status;
	char *body;
	size_t body_len;
	bool close;
};

static inline void tc_die(const char *what, const char *why)
{
	fprintf(stderr, "%s: %s\n", what, why);
	exit(2);
}

static inline void tc_die_ssl(const char *what)
{
	unsigned long e = ERR_get_error();
	char why[256] = "unknown error";

	if (e)
		ERR_error_string_n(e, why, sizeof(why));
	tc_die(what, why);
}

/* scheme://host[:port][/path]; https/tls mean TLS, http/tcp plain. 0 or -EINVAL. */
static inline int tc_parse_url(const char *s, struct tc_url *u)
{
	const char *p, *hs, *he, *ps;
	size_t n;

	memset(u, 0, sizeof(*u));
	if (!strncmp(s, "https://", 8) || !strncmp(s, "tls://", 6))
		u->tls = true;
	else if (strncmp(s, "http://", 7) && strncmp(s, "tcp://", 6))
		return -EINVAL;
	p = strstr(s, "://") + 3;
	hs = p;
	if (*hs == '[') {
		he = strchr(hs, ']');
		if (!he)
			return -EINVAL;
		hs++;
		p = he + 1;
	} else {
		he = hs + strcspn(hs, ":/");
		p = he;
	}
	n = (size_t)(he - hs);
	if (n == 0 || n >= sizeof(u->host))
		return -EINVAL;
	memcpy(u->host, hs, n);
	if (*p == ':') {
		ps = ++p;
		p += strcspn(p, "/");
		n = (size_t)(p - ps);
		if (n == 0 || n >= sizeof(u->port))
			return -EINVAL;
		memcpy(u->port, ps, n);
	} else {
		strcpy(u->port, u->tls ? "443" : "80");
	}
	if (strlen(*p ? p : "/") >= sizeof(u->path))
		return -EINVAL;
	strcpy(u->path, *p ? p : "/");
	return 0;
}

/* Parses the common options plus the program's own (extra_opts, handled by cb, which
 * returns 0 or exits). Leaves optind at the first positional argument. */
static inline void tc_parse_args(int argc, char **argv, const char *extra_opts,
				 void (*cb)(int opt, const char *arg), struct tc_args *a)
{
	char optstring[64];
	int o;

	memset(a, 0, sizeof(*a));
	a->auth = TC_SERVICE_ACCOUNT;
	a->count = 1;
	snprintf(optstring, sizeof(optstring), "c:r:A:X:d:s:n:H:%s", extra_opts ? extra_opts : "");
	while ((o = getopt(argc, argv, optstring)) != -1) {
		switch (o) {
		case 'c':
			a->cafile = optarg;
			break;
		case 'r':
			a->connect_addr = optarg;
			break;
		case 'A':
			a->auth = strcmp(optarg, "-") ? optarg : NULL;
			break;
		case 'X':
			a->method = optarg;
			break;
		case 'd':
			a->data = optarg;
			break;
		case 's':
			a->size = strtoul(optarg, NULL, 10);
			a->size_set = true;
			break;
		case 'n':
			a->count = strtol(optarg, NULL, 10);
			break;
		case 'H':
			if (a->nextra == TC_MAX_EXTRA)
				tc_die("-H", "too many");
			a->extra[a->nextra++] = optarg;
			break;
		case '?':
			exit(2);
		default:
			if (!cb)
				exit(2);
			cb(o, optarg);
		}
	}
	if (a->count < 1 || a->count > 100000)
		tc_die("-n", "out of range");
}

/* The URL argument at optind (exits when missing or malformed). */
static inline void tc_take_url(int argc, char **argv, struct tc_args *a)
{
	if (optind >= argc)
		tc_die(argv[0], "missing URL");
	a->url_text = argv[optind++];
	if (tc_parse_url(a->url_text, &a->url))
		tc_die(a->url_text, "bad URL (https://host:port/path or http://…)");
}

/* Deterministic body bytes: tests recompute them or compare the SHA-256 the client prints. */
static inline char *tc_pattern(size_t n)
{
	static const char alphabet[] =
	    "abcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFGHIJKLMNOPQRSTUVWXYZ";
	char *p = malloc(n + 1);
	size_t i;

	if (!p)
		tc_die("malloc", strerror(ENOMEM));
	for (i = 0; i < n; i++)
		p[i] = i % 64 == 63 ? '\n' : alphabet[(i * 7 + i / 64) % 64];
	p[n] = '\0';
	return p;
}

/* The body the options ask for (malloc'd, may be empty), its length in *n. */
static inline char *tc_body(const struct tc_args *a, size_t *n)
{
	if (a->data) {
		*n = strlen(a->data);
		return strdup(a->data);
	}
	*n = a->size_set ? a->size : 0;
	return tc_pattern(*n);
}

static inline void tc_sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[32];
	size_t i;

	EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* A request head. body_len < 0: chunked; otherwise Content-Length (omitted for a bodiless
 * GET/HEAD). extra: more header lines (no CRLF). Returns a malloc'd string. */
static inline char *tc_build_head(const struct tc_args *a, const char *method, const char *path,
				  long long body_len, const char *const *extra, int nextra)
{
	size_t cap = 4096 + strlen(path), n = 0;
	char *h = malloc(cap);
	int i;

#define TC_ADD(...)                                                                                \
	do {                                                                                       \
		int w_ = snprintf(h + n, cap - n, __VA_ARGS__);                                    \
		if (w_ < 0 || (size_t)w_ >= cap - n)                                               \
			tc_die("request head", "too long");                                        \
		n += (size_t)w_;                                                                   \
	} while (0)

	if (!h)
		tc_die("malloc", strerror(ENOMEM));
	TC_ADD("%s %s HTTP/1.1\r\n", method, path);
	if ((a->url.tls && !strcmp(a->url.port, "443")) ||
	    (!a->url.tls && !strcmp(a->url.port, "80")))
		TC_ADD("Host: %s\r\n", a->url.host);
	else if (strchr(a->url.host, ':'))
		TC_ADD("Host: [%s]:%s\r\n", a->url.host, a->url.port);
	else
		TC_ADD("Host: %s:%s\r\n", a->url.host, a->url.port);
	TC_ADD("User-Agent: deputy-test-client\r\nAccept: */*\r\n");
	if (a->auth)
		TC_ADD("Authorization: %s\r\n", a->auth);
	for (i = 0; i < a->nextra; i++)
		TC_ADD("%s\r\n", a->extra[i]);
	for (i = 0; i < nextra; i++)
		TC_ADD("%s\r\n", extra[i]);
	if (body_len < 0)
		TC_ADD("Transfer-Encoding: chunked\r\n");
	else if (body_len > 0 || (strcmp(method, "GET") && strcmp(method, "HEAD")))
		TC_ADD("Content-Length: %lld\r\n", body_len);
	if (body_len != 0)
		TC_ADD("Content-Type: application/octet-stream\r\n");
	TC_ADD("\r\n");
#undef TC_ADD
	return h;
}

/* A connected TCP socket to the URL's port at connect_addr (or the URL's host). */
static inline int tc_tcp_connect(const struct tc_args *a, bool nonblock)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	const char *host = a->connect_addr ? a->connect_addr : a->url.host;
	int fd = -1, rc, one = 1;

	rc = getaddrinfo(host, a->url.port, &hints, &res);
	if (rc)
		tc_die(host, gai_strerror(rc));
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
			    ai->ai_socktype | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
		    (nonblock && errno == EINPROGRESS))
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		tc_die("connect", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* A client TLS context that trusts only the test CA (when given). */
static inline SSL_CTX *tc_tls_ctx(const struct tc_args *a)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		tc_die_ssl("SSL_CTX_new");
	if (a->cafile && SSL_CTX_load_verify_locations(ctx, a->cafile, NULL) != 1)
		tc_die_ssl(a->cafile);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

/* An SSL object for the URL: SNI (not for IP literals), certificate name check. */
static inline SSL *tc_tls_new(SSL_CTX *ctx, const struct tc_args *a, int fd)
{
	struct in6_addr tmp;
	SSL *ssl = SSL_new(ctx);

	if (!ssl || SSL_set_fd(ssl, fd) != 1)
		tc_die_ssl("SSL_new");
	if (inet_pton(AF_INET, a->url.host, &tmp) != 1 &&
	    inet_pton(AF_INET6, a->url.host, &tmp) != 1)
		SSL_set_tlsext_host_name(ssl, a->url.host);
	if (SSL_set1_host(ssl, a->url.host) != 1)
		tc_die_ssl("SSL_set1_host");
	return ssl;
}

/* Blocking connection: TCP, then the TLS handshake when the URL says so. */
static inline void tc_connect(struct tc_conn *c, const struct tc_args *a)
{
	memset(c, 0, sizeof(*c));
	c->fd = tc_tcp_connect(a, false);
	if (!a->url.tls)
		return;
	c->ctx = tc_tls_ctx(a);
	c->ssl = tc_tls_new(c->ctx, a, c->fd);
	if (SSL_connect(c->ssl) != 1)
		tc_die_ssl("TLS handshake");
}

static inline void tc_close(struct tc_conn *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

/* One write call: SSL_write or write(). Returns bytes written or exits. */
static inline size_t tc_write_some(struct tc_conn *c, const void *p, size_t n)
{
	if (c->ssl) {
		int w = SSL_write(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));

		if (w <= 0)
			tc_die_ssl("SSL_write");
		return (size_t)w;
	}
	for (;;) {
		ssize_t w = write(c->fd, p, n);

		if (w > 0)
			return (size_t)w;
		if (w < 0 && errno == EINTR)
			continue;
		tc_die("write", w < 0 ? strerror(errno) : "wrote nothing");
	}
}

static inline void tc_write_all(struct tc_conn *c, const void *p, size_t n)
{
	const char *s = p;

	while (n > 0) {
		size_t w = tc_write_some(c, s, n);

		s += w;
		n -= w;
	}
}

/* >0 bytes, 0 end of stream; exits on errors. */
static inline size_t tc_read_some(struct tc_conn *c, void *p, size_t n)
{
	if (c->ssl) {
		size_t got = 0;
		int ok = SSL_read_ex(c->ssl, p, n, &got);

		if (ok == 1)
			return got;
		switch (SSL_get_error(c->ssl, ok)) {
		case SSL_ERROR_ZERO_RETURN:
			return 0;
		case SSL_ERROR_SYSCALL:
			if (ERR_peek_error() == 0 && errno == 0)
				return 0;
			tc_die("SSL_read", errno ? strerror(errno) : "syscall error");
			break;
		default:
			/* OpenSSL 3 reports a close without close_notify this way. */
			if (ERR_GET_REASON(ERR_peek_error()) ==
			    SSL_R_UNEXPECTED_EOF_WHILE_READING) {
				ERR_clear_error();
				return 0;
			}
			tc_die_ssl("SSL_read");
		}
	}
	for (;;) {
		ssize_t r = read(c->fd, p, n);

		if (r >= 0)
			return (size_t)r;
		if (errno != EINTR)
			tc_die("read", strerror(errno));
	}
}

/* Makes room for at least want more bytes in the receive buffer. */
static inline void tc_buf_reserve(struct tc_conn *c, size_t want)
{
	if (c->off > 0) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->cap - c->len < want) {
		size_t ncap = c->cap ? c->cap : 16384;

		while (ncap - c->len < want)
			ncap *= 2;
		if (ncap > TC_MAX_RESPONSE + 65536)
			tc_die("response", "too large");
		c->buf = realloc(c->buf, ncap);
		if (!c->buf)
			tc_die("malloc", strerror(ENOMEM));
		c->cap = ncap;
	}
}

static inline void tc_response_free(struct tc_response *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

static inline const char *tc_find_crlf(const char *p, const char *end)
{
	for (; p + 1 < end; p++)
		if (p[0] == '\r' && p[1] == '\n')
			return p;
	return NULL;
}

/*
 * Parses one response from buf[0, len). eof: no more bytes will come. Returns the bytes it
 * used (>0) with *r filled, 0 when it needs more, -1 when malformed. 1xx answers are
 * consumed and reported as used bytes with r->status set (callers loop). Over 100 lines:
 * the status line, headers and body framing checked in one pass, as the tests read them.
 */
static inline long tc_parse_response(const char *buf, size_t len, bool eof, bool head_only,
				     struct tc_response *r)
{
	const char *end = buf + len, *hend, *p, *eol;
	long long clen = -1;
	bool chunked = false;
	size_t used;

	memset(r, 0, sizeof(*r));
	if (len == 0)
		return eof ? -1 : 0;
	hend = memmem(buf, len, "\r\n\r\n", 4);
	if (!hend)
		return eof && len ? -1 : 0;
	hend += 4;
	if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
		return -1;
	r->status = atoi(buf + 9);
	if (r->status < 100 || r->status > 999)
		return -1;
	p = tc_find_crlf(buf, hend) + 2;
	while (p < hend - 2) {
		eol = tc_find_crlf(p, hend);
		if (!strncasecmp(p, "Content-Length:", 15))
			clen = strtoll(p + 15, NULL, 10);
		else if (!strncasecmp(p, "Transfer-Encoding:", 18) &&
			 memmem(p, (size_t)(eol - p), "chunked", 7))
			chunked = true;
		else if (!strncasecmp(p, "Connection:", 11) &&
			 memmem(p, (size_t)(eol - p), "close", 5))
			r->close = true;
		p = eol + 2;
	}
	used = (size_t)(hend - buf);
	if (r->status < 200 || head_only || r->status == 204 || r->status == 304)
		return (long)used;
	if (chunked) {
		char *body = NULL;
		size_t blen = 0;

		p = hend;
		for (;;) {
			unsigned long sz;
			char *ep;

			eol = tc_find_crlf(p, end);
			if (!eol)
				goto more;
			sz = strtoul(p, &ep, 16);
			if (ep == p)
				goto bad;
			p = eol + 2;
			if (sz == 0)
				break;
			if ((size_t)(end - p) < sz + 2)
				goto more;
			body = realloc(body, blen + sz + 1);
			if (!body)
				tc_die("malloc", strerror(ENOMEM));
			memcpy(body + blen, p, sz);
			blen += sz;
			p += sz + 2;
		}
		for (;;) { /* trailer */
			eol = tc_find_crlf(p, end);
			if (!eol)
				goto more;
			if (eol == p) {
				p += 2;
				break;
			}
			p = eol + 2;
		}
		r->body = body ? body : strdup("");
		if (body)
			body[blen] = '\0';
		r->body_len = blen;
		return (long)(p - buf);
	more:
		free(body);
		return eof ? -1 : 0;
	bad:
		free(body);
		return -1;
	}
	if (clen < 0) {
		/* Until end of stream (RFC 9112 §6.3). */
		if (!eof)
			return 0;
		clen = (long long)(len - used);
	}
	if ((size_t)clen > TC_MAX_RESPONSE)
		return -1;
	if (len - used < (size_t)clen)
		return eof ? -1 : 0;
	r->body = malloc((size_t)clen + 1);
	if (!r->body)
		tc_die("malloc", strerror(ENOMEM));
	memcpy(r->body, hend, (size_t)clen);
	r->body[clen] = '\0';
	r->body_len = (size_t)clen;
	return (long)(used + (size_t)clen);
}

/* Reads the next final response on a blocking connection; exits on failure. */
static inline void tc_read_response(struct tc_conn *c, struct tc_response *r)
{
	bool eof = false;

	for (;;) {
		long used =
		    tc_parse_response((char *)c->buf + c->off, c->len - c->off, eof, false, r);

		if (used < 0)
			tc_die("response",
			       eof ? "connection closed before a complete response" : "malformed");
		if (used > 0) {
			c->off += (size_t)used;
			if (r->status >= 200)
				return;
			tc_response_free(r);
			continue;
		}
		if (eof)
			tc_die("response", "connection closed before any response");
		tc_buf_reserve(c, 16384);
		size_t n = tc_read_some(c, c->buf + c->len, c->cap - c->len);

		if (n == 0)
			eof = true;
		c->len += n;
	}
}

static inline void tc_print_response(const struct tc_response *r)
{
	printf("status %d\n", r->status);
	fwrite(r->body, 1, r->body_len, stdout);
	if (r->body_len == 0 || r->body[r->body_len - 1] != '\n')
		putchar('\n');
	fflush(stdout);
}

#endif
