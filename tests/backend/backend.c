// SPDX-License-Identifier: MIT
/*
 * backend: the HTTP/1.1 and HTTPS server the integration tests send their traffic to.
 *
 * It stands in for "the API behind the agent": it records every request it receives, byte
 * for byte, as one JSON line (method, target, headers in order, body as base64 and its
 * SHA-256, the result of verifying the Bearer token with deputy_verify), and answers 200
 * with a JSON echo of what it saw. Tests compare what a client sent with what arrived, so
 * the server parses leniently where that helps recording and strictly where a smuggled or
 * split request would otherwise go unnoticed.
 *
 *   backend --listen 127.0.0.1:0 [--cert F --key F] [--log FILE]
 *           [--jwks FILE|URL --audience AUD [--scope S] [--issuer I]]
 *           [--token-header NAME] [--echo] [--h2]
 *
 * The token is read from "NAME: Bearer <token>" (default Authorization; a route may name
 * another header). "--listen HOST:0" prints "port N" as the first line of stdout once it accepts.
 * One thread per connection; SIGTERM or SIGINT closes every connection and exits 0. Loopback
 * addresses only: this server exists for tests and never faces a network.
 *
 * Query parameters shape the response, for tests of response handling:
 *   status=NNN (200..599), close=1 (Connection: close), chunked=1 (chunked response),
 *   pad=N (adds N bytes to the JSON body), delay_ms=N (waits before answering).
 *
 * --h2 advertises "h2" before "http/1.1" in ALPN. A client that takes h2 gets a minimal
 * HTTP/2 answer (no HPACK decoding: the request head is logged as its raw header block),
 * enough for curl --http2 to complete and report HTTP/2, which is what proves that the
 * shim's ALPN downgrade has something to downgrade.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <deputy/verify.h>

#include "util.h"

/*
 * deputy_verify lives in daemon/verify.c, in the common library. The backend is also built
 * on branches where that file does not exist yet; there it reports every token as
 * "unchecked" instead of failing to link. (-Idaemon makes the file visible here.)
 */
#if __has_include("verify.c")
#define BK_HAVE_VERIFY 1
#else
#define BK_HAVE_VERIFY 0
#endif

#define BK_MAX_HEAD (64 * 1024)
#define BK_MAX_HEADERS 256
#define BK_MAX_BODY (32u * 1024 * 1024)
#define BK_MAX_PAD (8u * 1024 * 1024)
#define BK_MAX_CONNS 512
#define BK_IDLE_TIMEOUT_S 60
#define BK_SHA256_HEX 65

struct bk_opts {
	const char *listen;
	const char *cert;
	const char *key;
	const char *log;
	const char *jwks;
	const char *audience;
	const char *scope;
	const char *issuer;
	const char *token_header;
	bool echo;
	bool h2;
};

static struct bk_opts opts;
static SSL_CTX *tls_ctx;
static FILE *log_file;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

#if BK_HAVE_VERIFY
/* deputy_verify is not documented as thread-safe (it may refetch a JWKS): one at a time. */
static pthread_mutex_t verify_lock = PTHREAD_MUTEX_INITIALIZER;
static deputy_verifier *verifier;
#endif

/* Live connections, so SIGTERM can wake every thread blocked in a read. */
struct bk_conn {
	int fd;
	SSL *ssl;
	uint64_t id;
	char peer[INET6_ADDRSTRLEN + 8];
	char sni[256];
	char alpn[32];
	/* Received bytes not yet consumed: [off, len) of data. */
	unsigned char *buf;
	size_t off, len, cap;
	uint64_t bytes_in, requests;
	pthread_t thread;
	struct bk_conn *prev, *next;
};

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t conns_empty = PTHREAD_COND_INITIALIZER;
static struct bk_conn *conns;
/* Finished connections whose threads main still has to join: joined, not detached, so
 * OpenSSL's per-thread state is gone before the process exits. */
static struct bk_conn *conns_done;
static unsigned conns_count;
static uint64_t conns_next_id = 1;
static bool stopping;

/* ---- small helpers -------------------------------------------------------------------- */

static void bk_sha256_hex(const void *data, size_t n, char out[BK_SHA256_HEX])
{
	unsigned char md[32];

	EVP_Digest(data, n, md, NULL, EVP_sha256(), NULL);
	dp_hex(md, sizeof(md), out);
}

/* A JSON string of standard base64 (NULL on allocation failure). */
static json_t *bk_b64_json(const void *data, size_t n)
{
	size_t outsz = 4 * ((n + 2) / 3) + 1;
	unsigned char *out = malloc(outsz);
	json_t *s;

	if (!out)
		return NULL;
	EVP_EncodeBlock(out, data, (int)n);
	s = json_string((char *)out);
	free(out);
	return s;
}

/* Header values and targets are bytes, not UTF-8: keep them readable and lossless enough. */
static json_t *bk_bytes_json(const char *p, size_t n)
{
	json_t *s = json_stringn(p, n);
	char *tmp;
	size_t i;

	if (s)
		return s;
	tmp = malloc(n + 1);
	if (!tmp)
		return NULL;
	for (i = 0; i < n; i++)
		tmp[i] = (unsigned char)p[i] < 0x80 ? p[i] : '?';
	s = json_stringn(tmp, n);
	free(tmp);
	return s;
}

static void bk_log_record(json_t *rec)
{
	char ts[DP_TS_LEN];
	char *line;

	if (!log_file) {
		json_decref(rec);
		return;
	}
	dp_timestamp(ts);
	json_object_set_new(rec, "ts", json_string(ts));
	line = json_dumps(rec, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(rec);
	if (!line)
		return;
	pthread_mutex_lock(&log_lock);
	/* One flush per record: tests read the log while the server runs. */
	fputs(line, log_file);
	fputc('\n', log_file);
	fflush(log_file);
	pthread_mutex_unlock(&log_lock);
	free(line);
}

static json_t *bk_conn_record(struct bk_conn *c, const char *type)
{
	json_t *rec = json_object();

	json_object_set_new(rec, "type", json_string(type));
	json_object_set_new(rec, "conn", json_integer((json_int_t)c->id));
	json_object_set_new(rec, "peer", json_string(c->peer));
	json_object_set_new(rec, "tls", json_boolean(c->ssl != NULL));
	json_object_set_new(rec, "sni", c->sni[0] ? json_string(c->sni) : json_null());
	json_object_set_new(rec, "alpn", c->alpn[0] ? json_string(c->alpn) : json_null());
	return rec;
}

/* ---- connection I/O ------------------------------------------------------------------- */

/* >0 bytes read, 0 end of stream, <0 -errno. */
static ssize_t bk_read(struct bk_conn *c, void *p, size_t n)
{
	ssize_t r;

	if (c->ssl) {
		size_t got = 0;
		int ok = SSL_read_ex(c->ssl, p, n, &got);

		if (ok == 1)
			return (ssize_t)got;
		switch (SSL_get_error(c->ssl, ok)) {
		case SSL_ERROR_ZERO_RETURN:
			return 0;
		case SSL_ERROR_SYSCALL:
			return errno ? -errno : 0;
		default:
			return -EPROTO;
		}
	}
	do
		r = recv(c->fd, p, n, 0);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

static int bk_write_all(struct bk_conn *c, const void *p, size_t n)
{
	const char *s = p;

	while (n > 0) {
		ssize_t w;

		if (c->ssl) {
			size_t done = 0;

			if (SSL_write_ex(c->ssl, s, n, &done) != 1)
				return -EIO;
			w = (ssize_t)done;
		} else {
			w = send(c->fd, s, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return -errno;
		}
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads more bytes into the buffer; 1 when some arrived, 0 at end of stream, <0 error. */
static int bk_fill(struct bk_conn *c, size_t max_buffered)
{
	ssize_t r;

	if (c->off > 0 && c->off == c->len) {
		c->off = c->len = 0;
	} else if (c->off > c->cap / 2) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len - c->off >= max_buffered)
		return -E2BIG;
	if (c->len == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 16384;
		unsigned char *nb;

		if (ncap > max_buffered + 16384)
			ncap = max_buffered + 16384;
		if (ncap <= c->cap)
			return -E2BIG;
		nb = realloc(c->buf, ncap);
		if (!nb)
			return -ENOMEM;
		c->buf = nb;
		c->cap = ncap;
	}
	r = bk_read(c, c->buf + c->len, c->cap - c->len);
	if (r <= 0)
		return (int)r;
	c->len += (size_t)r;
	c->bytes_in += (uint64_t)r;
	return 1;
}

/* Ensures n unread bytes are buffered; 0, or <0 (-EPIPE at a premature end). */
static int bk_need(struct bk_conn *c, size_t n, size_t max_buffered)
{
	while (c->len - c->off < n) {
		int r = bk_fill(c, max_buffered);

		if (r == 0)
			return -EPIPE;
		if (r < 0)
			return r;
	}
	return 0;
}

/* A growable byte string for bodies and responses. */
struct bk_str {
	char *p;
	size_t n, cap;
};

static int bk_str_add(struct bk_str *s, const void *p, size_t n)
{
	if (n > SIZE_MAX - s->n - 1)
		return -EOVERFLOW;
	if (s->n + n + 1 > s->cap) {
		size_t ncap = s->cap ? s->cap : 256;
		char *np;

		while (ncap < s->n + n + 1)
			ncap *= 2;
		np = realloc(s->p, ncap);
		if (!np)
			return -ENOMEM;
		s->p = np;
		s->cap = ncap;
	}
	memcpy(s->p + s->n, p, n);
	s->n += n;
	s->p[s->n] = '\0';
	return 0;
}

static int bk_str_printf(struct bk_str *s, const char *fmt, ...) DP_PRINTF(2, 3);
static int bk_str_printf(struct bk_str *s, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -EOVERFLOW;
	return bk_str_add(s, tmp, (size_t)n);
}

/* ---- tokens --------------------------------------------------------------------------- */

struct bk_token {
	json_t *log;   /* {"present", "valid", "error", "claims"} for the log */
	json_t *reply; /* the subset echoed to the client */
};

static void bk_token_result(struct bk_token *t, bool present, json_t *valid, const char *error,
			    json_t *claims)
{
	static const char *const echoed[] = {"sub", "aud", "scope", "htm", "htu", "jti", "act"};
	size_t i;

	t->log = json_object();
	t->reply = json_object();
	json_object_set_new(t->log, "present", json_boolean(present));
	json_object_set(t->log, "valid", valid);
	json_object_set(t->reply, "valid", valid);
	json_object_set_new(t->log, "error", error ? json_string(error) : json_null());
	json_object_set_new(t->reply, "error", error ? json_string(error) : json_null());
	json_decref(valid);
	if (claims) {
		for (i = 0; i < DP_ARRAY_SIZE(echoed); i++) {
			json_t *v = json_object_get(claims, echoed[i]);

			if (v)
				json_object_set(t->reply, echoed[i], v);
		}
		json_object_set_new(t->log, "claims", claims);
	} else {
		json_object_set_new(t->log, "claims", json_null());
	}
}

static void bk_check_token(const char *const *auth, size_t nauth, struct bk_token *t)
{
	const char *token;

	if (nauth == 0) {
		bk_token_result(t, false, json_false(), "no token header", NULL);
		return;
	}
	if (nauth > 1) {
		bk_token_result(t, true, json_false(), "more than one token header", NULL);
		return;
	}
	if (strncasecmp(auth[0], "Bearer ", 7) != 0) {
		bk_token_result(t, true, json_false(), "token header is not a Bearer token", NULL);
		return;
	}
	token = auth[0] + 7;
	while (*token == ' ')
		token++;
	if (!opts.jwks) {
		bk_token_result(t, true, json_null(), "not checked: no --jwks", NULL);
		return;
	}
#if BK_HAVE_VERIFY
	{
		char err[256] = "";
		char *claims_text = NULL;
		json_t *claims = NULL;
		int rc = -1;

		pthread_mutex_lock(&verify_lock);
		/* Created at first use: the JWKS URL may belong to a daemon that starts later. */
		if (!verifier)
			verifier = deputy_verifier_new(opts.jwks, err, sizeof(err));
		if (verifier)
			rc = deputy_verify(verifier, token, opts.audience, opts.scope, opts.issuer,
					   &claims_text, err, sizeof(err));
		pthread_mutex_unlock(&verify_lock);
		if (claims_text) {
			claims = json_loads(claims_text, 0, NULL);
			free(claims_text);
		}
		if (rc == 0)
			bk_token_result(t, true, json_true(), NULL, claims);
		else
			bk_token_result(t, true, json_false(), err[0] ? err : "invalid", claims);
	}
#else
	bk_token_result(t, true, json_null(), "not checked: deputy_verify not built", NULL);
#endif
}

/* ---- HTTP/1.1 ------------------------------------------------------------------------- */

struct bk_header {
	const char *name, *value;
	size_t name_len, value_len;
};

struct bk_request {
	const char *method, *target, *version;
	size_t method_len, target_len, version_len;
	struct bk_header headers[BK_MAX_HEADERS];
	size_t nheaders;
	const char *head;
	size_t head_len;
};

static bool bk_is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static const char *bk_find_crlf(const char *p, const char *end)
{
	for (; p + 1 < end; p++)
		if (p[0] == '\r' && p[1] == '\n')
			return p;
	return NULL;
}

/* Parses a complete head (ending in CRLFCRLF). NULL on success, else why it is malformed. */
static const char *bk_parse_head(const char *head, size_t len, struct bk_request *rq)
{
	const char *end = head + len, *p = head, *eol, *sp1, *sp2, *q;

	memset(rq, 0, sizeof(*rq));
	rq->head = head;
	rq->head_len = len;
	eol = bk_find_crlf(p, end);
	if (!eol)
		return "no request line";
	sp1 = memchr(p, ' ', (size_t)(eol - p));
	if (!sp1)
		return "malformed request line";
	sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	if (!sp2 || sp1 == p || sp2 == sp1 + 1)
		return "malformed request line";
	for (q = p; q < sp1; q++)
		if (!bk_is_tchar((unsigned char)*q))
			return "bad method";
	rq->method = p;
	rq->method_len = (size_t)(sp1 - p);
	rq->target = sp1 + 1;
	rq->target_len = (size_t)(sp2 - sp1 - 1);
	rq->version = sp2 + 1;
	rq->version_len = (size_t)(eol - sp2 - 1);
	if (rq->version_len != 8 || memcmp(rq->version, "HTTP/1.", 7) != 0 ||
	    (rq->version[7] != '0' && rq->version[7] != '1'))
		return "unsupported HTTP version";
	for (q = rq->target; q < sp2; q++)
		if ((unsigned char)*q <= ' ' || *q == 0x7f)
			return "bad request target";
	p = eol + 2;
	while (p < end) {
		const char *colon, *v, *ve;

		eol = bk_find_crlf(p, end);
		if (!eol)
			return "header line without CRLF";
		if (eol == p)
			return NULL; /* the empty line */
		if (*p == ' ' || *p == '\t')
			return "obsolete line folding";
		if (memchr(p, '\n', (size_t)(eol - p)) || memchr(p, '\r', (size_t)(eol - p)))
			return "bare CR or LF in a header";
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon || colon == p)
			return "header without a name";
		for (q = p; q < colon; q++)
			if (!bk_is_tchar((unsigned char)*q))
				return "bad header name";
		if (rq->nheaders == BK_MAX_HEADERS)
			return "too many headers";
		v = colon + 1;
		ve = eol;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		rq->headers[rq->nheaders++] =
		    (struct bk_header){p, v, (size_t)(colon - p), (size_t)(ve - v)};
		p = eol + 2;
	}
	return "head without an empty line";
}

static bool bk_hname_is(const struct bk_header *h, const char *name)
{
	return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

/* Whether a comma-separated header value holds token (case-insensitive). */
static bool bk_hvalue_has(const struct bk_header *h, const char *token)
{
	size_t tl = strlen(token), i = 0;

	while (i < h->value_len) {
		size_t s, e;

		while (i < h->value_len && (h->value[i] == ' ' || h->value[i] == ','))
			i++;
		s = i;
		while (i < h->value_len && h->value[i] != ',')
			i++;
		e = i;
		while (e > s && h->value[e - 1] == ' ')
			e--;
		if (e - s == tl && strncasecmp(h->value + s, token, tl) == 0)
			return true;
	}
	return false;
}

/* Response shaping from the query string of the target. */
struct bk_shape {
	int status;
	bool close, chunked;
	unsigned long pad, delay_ms;
};

static void bk_parse_shape(const char *target, size_t n, struct bk_shape *sh)
{
	const char *q = memchr(target, '?', n), *end = target + n;

	*sh = (struct bk_shape){.status = 200};
	while (q && q < end) {
		char key[16], val[24];
		const char *amp, *eq;
		size_t kl, vl;

		q++;
		amp = memchr(q, '&', (size_t)(end - q));
		if (!amp)
			amp = end;
		eq = memchr(q, '=', (size_t)(amp - q));
		if (eq) {
			kl = (size_t)(eq - q);
			vl = (size_t)(amp - eq - 1);
			if (kl < sizeof(key) && vl < sizeof(val)) {
				unsigned long v;
				char *ep;

				memcpy(key, q, kl);
				key[kl] = '\0';
				memcpy(val, eq + 1, vl);
				val[vl] = '\0';
				errno = 0;
				v = strtoul(val, &ep, 10);
				if (!errno && *ep == '\0' && ep != val) {
					if (!strcmp(key, "status") && v >= 200 && v <= 599)
						sh->status = (int)v;
					else if (!strcmp(key, "close"))
						sh->close = v != 0;
					else if (!strcmp(key, "chunked"))
						sh->chunked = v != 0;
					else if (!strcmp(key, "pad") && v <= BK_MAX_PAD)
						sh->pad = v;
					else if (!strcmp(key, "delay_ms") && v <= 10000)
						sh->delay_ms = v;
				}
			}
		}
		q = amp;
	}
}

static const char *bk_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 413:
		return "Content Too Large";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Status";
	}
}

/* Sends a complete response; body may be chunked on the wire on request. */
static int bk_respond(struct bk_conn *c, int status, bool close_after, bool chunked,
		      const char *body, size_t body_len)
{
	struct bk_str out = {0};
	int rc;

	rc = bk_str_printf(&out,
			   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
			   "Server: deputy-test-backend\r\n",
			   status, bk_reason(status));
	if (!rc && close_after)
		rc = bk_str_printf(&out, "Connection: close\r\n");
	if (!rc && chunked) {
		size_t off = 0, step = body_len / 3 + 1;

		/* Several chunks, so readers meet chunk boundaries mid-body. */
		rc = bk_str_printf(&out, "Transfer-Encoding: chunked\r\n\r\n");
		while (!rc && off < body_len) {
			size_t n = body_len - off < step ? body_len - off : step;

			rc = bk_str_printf(&out, "%zx\r\n", n);
			if (!rc)
				rc = bk_str_add(&out, body + off, n);
			if (!rc)
				rc = bk_str_add(&out, "\r\n", 2);
			off += n;
		}
		if (!rc)
			rc = bk_str_printf(&out, "0\r\n\r\n");
	} else {
		if (!rc)
			rc = bk_str_printf(&out, "Content-Length: %zu\r\n\r\n", body_len);
		if (!rc)
			rc = bk_str_add(&out, body, body_len);
	}
	if (!rc)
		rc = bk_write_all(c, out.p, out.n);
	free(out.p);
	return rc;
}

static void bk_respond_error(struct bk_conn *c, int status, const char *why)
{
	json_t *rec = bk_conn_record(c, "error");
	json_t *body = json_pack("{s:b,s:s}", "ok", 0, "error", why);
	char *text = json_dumps(body, JSON_COMPACT);

	json_object_set_new(rec, "status", json_integer(status));
	json_object_set_new(rec, "error", json_string(why));
	bk_log_record(rec);
	if (text) {
		size_t n = strlen(text);

		text[n] = '\n';
		(void)bk_respond(c, status, true, false, text, n + 1);
		text[n] = '\0';
	}
	free(text);
	json_decref(body);
}

/* Reads a chunked body (RFC 9112 §7.1) into body, trailer lines into trailers. */
static const char *bk_read_chunked(struct bk_conn *c, struct bk_str *body, json_t *trailers)
{
	for (;;) {
		const char *line, *eol;
		unsigned long long size = 0;
		size_t i, digits = 0;

		for (;;) {
			line = (const char *)c->buf + c->off;
			eol = bk_find_crlf(line, (const char *)c->buf + c->len);
			if (eol)
				break;
			if (c->len - c->off > 4096)
				return "chunk size line too long";
			if (bk_fill(c, BK_MAX_HEAD) <= 0)
				return "end of stream inside a chunked body";
		}
		for (i = 0; line + i < eol; i++) {
			char ch = line[i];
			int v;

			if (ch >= '0' && ch <= '9')
				v = ch - '0';
			else if (ch >= 'a' && ch <= 'f')
				v = ch - 'a' + 10;
			else if (ch >= 'A' && ch <= 'F')
				v = ch - 'A' + 10;
			else
				break;
			if (++digits > 8)
				return "chunk size too large";
			size = size * 16 + (unsigned)v;
		}
		if (digits == 0 ||
		    (line + i < eol && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
			return "malformed chunk size";
		c->off = (size_t)(eol + 2 - (const char *)c->buf);
		if (size == 0)
			break;
		if (body->n + size > BK_MAX_BODY)
			return "body too large";
		while (size > 0) {
			size_t avail;

			if (c->off == c->len && bk_fill(c, BK_MAX_HEAD) <= 0)
				return "end of stream inside a chunk";
			avail = c->len - c->off;
			if (avail > size)
				avail = (size_t)size;
			if (bk_str_add(body, c->buf + c->off, avail))
				return "out of memory";
			c->off += avail;
			size -= avail;
		}
		if (bk_need(c, 2, BK_MAX_HEAD))
			return "end of stream after a chunk";
		if (memcmp(c->buf + c->off, "\r\n", 2) != 0)
			return "chunk data not followed by CRLF";
		c->off += 2;
	}
	/* Trailer section: header lines up to an empty line. */
	for (;;) {
		const char *line, *eol;

		for (;;) {
			line = (const char *)c->buf + c->off;
			eol = bk_find_crlf(line, (const char *)c->buf + c->len);
			if (eol)
				break;
			if (c->len - c->off > BK_MAX_HEAD)
				return "trailer too long";
			if (bk_fill(c, BK_MAX_HEAD) <= 0)
				return "end of stream in the trailer";
		}
		c->off = (size_t)(eol + 2 - (const char *)c->buf);
		if (eol == line)
			return NULL;
		if (json_array_size(trailers) >= BK_MAX_HEADERS)
			return "too many trailer lines";
		json_array_append_new(trailers, bk_bytes_json(line, (size_t)(eol - line)));
	}
}

/* Reads one body of a known length. */
static const char *bk_read_length(struct bk_conn *c, unsigned long long n, struct bk_str *body)
{
	if (n > BK_MAX_BODY)
		return "body too large";
	while (n > 0) {
		size_t avail;

		if (c->off == c->len && bk_fill(c, BK_MAX_HEAD) <= 0)
			return "end of stream inside the body";
		avail = c->len - c->off;
		if (avail > n)
			avail = (size_t)n;
		if (bk_str_add(body, c->buf + c->off, avail))
			return "out of memory";
		c->off += avail;
		n -= avail;
	}
	return NULL;
}

/* Handles one request; 1 to keep the connection, 0 to close it. Over 100 lines on purpose:
 * what the backend checks and logs of a request is easiest to audit in one place. */
static int bk_serve_request(struct bk_conn *c)
{
	struct bk_request *rq;
	struct bk_str body = {0};
	struct bk_token tok = {0};
	struct bk_shape shape;
	const char *auth[BK_MAX_HEADERS], *why, *hend;
	char *head = NULL, *text = NULL;
	char sha[BK_SHA256_HEX], head_sha[BK_SHA256_HEX];
	size_t nauth = 0, head_len, i, buffered;
	unsigned long long content_length = 0;
	bool has_cl = false, chunked = false, expect = false, keep_alive, is_10;
	json_t *rec = NULL, *headers, *trailers, *reply;
	int ret = 0;

	/* Skip the empty lines RFC 9112 §2.2 allows before a request line. */
	for (;;) {
		while (c->len - c->off >= 2 && c->buf[c->off] == '\r' && c->buf[c->off + 1] == '\n')
			c->off += 2;
		if (c->len - c->off >= 2 || (c->len - c->off == 1 && c->buf[c->off] != '\r'))
			break;
		int r = bk_fill(c, BK_MAX_HEAD);

		if (r <= 0)
			return 0;
	}
	buffered = c->len - c->off;
	/* Wait for the whole head. */
	for (;;) {
		void *m = memmem(c->buf + c->off, c->len - c->off, "\r\n\r\n", 4);
		int r;

		if (m) {
			hend = (const char *)m + 4;
			break;
		}
		if (c->len - c->off >= BK_MAX_HEAD) {
			bk_respond_error(c, 431, "request head larger than 64 KiB");
			return 0;
		}
		r = bk_fill(c, BK_MAX_HEAD);
		if (r == 0) {
			bk_respond_error(c, 400, "end of stream inside a request head");
			return 0;
		}
		if (r < 0)
			return 0;
	}
	head_len = (size_t)(hend - (const char *)(c->buf + c->off));
	/* A copy: the buffer moves while the body is read. */
	head = malloc(head_len + 1);
	rq = malloc(sizeof(*rq));
	if (!head || !rq) {
		free(head);
		free(rq);
		return 0;
	}
	memcpy(head, c->buf + c->off, head_len);
	head[head_len] = '\0';
	c->off += head_len;
	bk_sha256_hex(head, head_len, head_sha);
	why = bk_parse_head(head, head_len, rq);
	if (why) {
		bk_respond_error(c, 400, why);
		goto out;
	}
	c->requests++;
	is_10 = rq->version[7] == '0';
	keep_alive = !is_10;
	for (i = 0; i < rq->nheaders; i++) {
		const struct bk_header *h = &rq->headers[i];

		if (bk_hname_is(h, "Content-Length")) {
			char tmp[24], *ep;
			unsigned long long v;

			if (h->value_len == 0 || h->value_len >= sizeof(tmp)) {
				bk_respond_error(c, 400, "bad Content-Length");
				goto out;
			}
			memcpy(tmp, h->value, h->value_len);
			tmp[h->value_len] = '\0';
			errno = 0;
			v = strtoull(tmp, &ep, 10);
			if (errno || *ep || tmp[0] < '0' || tmp[0] > '9' ||
			    (has_cl && v != content_length)) {
				bk_respond_error(c, 400, "bad or conflicting Content-Length");
				goto out;
			}
			has_cl = true;
			content_length = v;
		} else if (bk_hname_is(h, "Transfer-Encoding")) {
			if (!bk_hvalue_has(h, "chunked")) {
				bk_respond_error(c, 400, "unsupported Transfer-Encoding");
				goto out;
			}
			chunked = true;
		} else if (bk_hname_is(h, "Expect")) {
			expect = bk_hvalue_has(h, "100-continue");
		} else if (bk_hname_is(h, "Connection")) {
			if (bk_hvalue_has(h, "close"))
				keep_alive = false;
			else if (bk_hvalue_has(h, "keep-alive"))
				keep_alive = true;
		} else if (bk_hname_is(h, opts.token_header)) {
			/* Terminated in place (on the CR or trailing space after it); the
			 * head's hash is already taken and headers are logged by length. */
			((char *)h->value)[h->value_len] = '\0';
			auth[nauth++] = h->value;
		}
	}
	if (has_cl && chunked) {
		/* RFC 9112 §6.3: a request smuggling shape; a test backend must make it visible. */
		bk_respond_error(c, 400, "both Content-Length and Transfer-Encoding");
		goto out;
	}
	if (expect && (has_cl ? content_length > 0 : chunked)) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

		if (bk_write_all(c, cont, sizeof(cont) - 1))
			goto out;
	}
	trailers = json_array();
	why = chunked ? bk_read_chunked(c, &body, trailers)
		      : bk_read_length(c, content_length, &body);
	if (why) {
		json_decref(trailers);
		bk_respond_error(c, strcmp(why, "body too large") ? 400 : 413, why);
		goto out;
	}

	bk_check_token(auth, nauth, &tok);
	bk_parse_shape(rq->target, rq->target_len, &shape);
	if (shape.close)
		keep_alive = false;
	bk_sha256_hex(body.p ? body.p : "", body.n, sha);

	rec = bk_conn_record(c, "request");
	json_object_set_new(rec, "seq", json_integer((json_int_t)c->requests));
	json_object_set_new(rec, "buffered", json_integer((json_int_t)buffered));
	json_object_set_new(rec, "method", bk_bytes_json(rq->method, rq->method_len));
	json_object_set_new(rec, "target", bk_bytes_json(rq->target, rq->target_len));
	json_object_set_new(rec, "version", bk_bytes_json(rq->version, rq->version_len));
	headers = json_array();
	for (i = 0; i < rq->nheaders; i++)
		json_array_append_new(
		    headers,
		    json_pack("[o,o]", bk_bytes_json(rq->headers[i].name, rq->headers[i].name_len),
			      bk_bytes_json(rq->headers[i].value, rq->headers[i].value_len)));
	json_object_set_new(rec, "headers", headers);
	json_object_set_new(rec, "head_sha256", json_string(head_sha));
	json_object_set_new(rec, "chunked", json_boolean(chunked));
	json_object_set_new(rec, "trailers", trailers);
	json_object_set_new(rec, "expect_continue", json_boolean(expect));
	json_object_set_new(rec, "body_len", json_integer((json_int_t)body.n));
	json_object_set_new(rec, "body_sha256", json_string(sha));
	json_object_set_new(rec, "body_b64", bk_b64_json(body.p ? body.p : "", body.n));
	json_object_set_new(rec, "token", tok.log);
	json_object_set_new(rec, "status", json_integer(shape.status));
	tok.log = NULL;

	reply = json_object();
	json_object_set_new(reply, "ok", json_boolean(shape.status < 400));
	json_object_set_new(reply, "conn", json_integer((json_int_t)c->id));
	json_object_set_new(reply, "seq", json_integer((json_int_t)c->requests));
	json_object_set(reply, "method", json_object_get(rec, "method"));
	json_object_set(reply, "target", json_object_get(rec, "target"));
	json_object_set_new(reply, "body_len", json_integer((json_int_t)body.n));
	json_object_set_new(reply, "body_sha256", json_string(sha));
	json_object_set_new(reply, "token", tok.reply);
	tok.reply = NULL;
	if (shape.pad) {
		char *pad = malloc(shape.pad + 1);

		if (pad) {
			memset(pad, 'x', shape.pad);
			pad[shape.pad] = '\0';
			json_object_set_new(reply, "pad", json_string(pad));
			free(pad);
		}
	}
	text = json_dumps(reply, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(reply);
	/* Logged before answering, so a client that saw the answer finds its record. */
	bk_log_record(rec);
	rec = NULL;
	if (!text)
		goto out;
	if (shape.delay_ms) {
		struct timespec ts = {(time_t)(shape.delay_ms / 1000),
				      (long)(shape.delay_ms % 1000) * 1000000L};

		nanosleep(&ts, NULL);
	}
	{
		size_t n = strlen(text);
		char *t2 = realloc(text, n + 2);

		if (!t2)
			goto out;
		text = t2;
		text[n] = '\n';
		text[n + 1] = '\0';
		if (bk_respond(c, shape.status, !keep_alive, shape.chunked, text, n + 1))
			goto out;
	}
	ret = keep_alive ? 1 : 0;
out:
	json_decref(rec);
	json_decref(tok.log);
	json_decref(tok.reply);
	free(text);
	free(body.p);
	free(head);
	free(rq);
	return ret;
}

/* ---- HTTP/2, the least that lets curl --http2 finish ----------------------------------- */

#define H2_DATA 0x0
#define H2_HEADERS 0x1
#define H2_RST_STREAM 0x3
#define H2_SETTINGS 0x4
#define H2_PING 0x6
#define H2_GOAWAY 0x7
#define H2_WINDOW_UPDATE 0x8
#define H2_CONTINUATION 0x9
#define H2_END_STREAM 0x1
#define H2_ACK 0x1
#define H2_END_HEADERS 0x4
#define H2_PADDED 0x8
#define H2_PRIORITY 0x20
#define H2_MAX_STREAMS 32
#define H2_MAX_FRAME 16384

struct h2_stream {
	uint32_t id;
	struct bk_str block; /* the HPACK header block, logged raw */
	EVP_MD_CTX *body_sha;
	uint64_t body_len;
	bool headers_done;
};

static int h2_send(struct bk_conn *c, uint8_t type, uint8_t flags, uint32_t stream,
		   const void *payload, size_t n)
{
	unsigned char hdr[9] = {(uint8_t)(n >> 16),
				(uint8_t)(n >> 8),
				(uint8_t)n,
				type,
				flags,
				(uint8_t)(stream >> 24 & 0x7f),
				(uint8_t)(stream >> 16),
				(uint8_t)(stream >> 8),
				(uint8_t)stream};
	int rc = bk_write_all(c, hdr, sizeof(hdr));

	return rc || n == 0 ? rc : bk_write_all(c, payload, n);
}

static int h2_window_update(struct bk_conn *c, uint32_t stream, uint32_t inc)
{
	unsigned char p[4] = {(uint8_t)(inc >> 24 & 0x7f), (uint8_t)(inc >> 16),
			      (uint8_t)(inc >> 8), (uint8_t)inc};

	return h2_send(c, H2_WINDOW_UPDATE, 0, stream, p, sizeof(p));
}

static int h2_answer(struct bk_conn *c, struct h2_stream *s)
{
	/* HPACK: ":status: 200" is static index 8; content-type is a literal without
	 * indexing on static name index 31 (RFC 7541 §6.2.2), value not Huffman-coded. */
	static const char hblock[] = "\x88\x0f\x10\x10"
				     "application/json";
	unsigned char md[32];
	char sha[BK_SHA256_HEX], body[512];
	json_t *rec = bk_conn_record(c, "h2_request");
	int n, rc;

	EVP_DigestFinal_ex(s->body_sha, md, NULL);
	dp_hex(md, sizeof(md), sha);
	c->requests++;
	json_object_set_new(rec, "seq", json_integer((json_int_t)c->requests));
	json_object_set_new(rec, "stream", json_integer(s->id));
	json_object_set_new(rec, "header_block_b64",
			    bk_b64_json(s->block.p ? s->block.p : "", s->block.n));
	json_object_set_new(rec, "body_len", json_integer((json_int_t)s->body_len));
	json_object_set_new(rec, "body_sha256", json_string(sha));
	bk_log_record(rec);
	n = snprintf(body, sizeof(body),
		     "{\"ok\":true,\"protocol\":\"h2\",\"conn\":%llu,\"stream\":%u,"
		     "\"body_len\":%llu,\"body_sha256\":\"%s\"}\n",
		     (unsigned long long)c->id, s->id, (unsigned long long)s->body_len, sha);
	rc = h2_send(c, H2_HEADERS, H2_END_HEADERS, s->id, hblock, sizeof(hblock) - 1);
	if (!rc)
		rc = h2_send(c, H2_DATA, H2_END_STREAM, s->id, body, (size_t)n);
	return rc;
}

static void h2_stream_drop(struct h2_stream *s)
{
	free(s->block.p);
	EVP_MD_CTX_free(s->body_sha);
	memset(s, 0, sizeof(*s));
}

static struct h2_stream *h2_stream_get(struct h2_stream *ss, uint32_t id, bool create)
{
	struct h2_stream *free_slot = NULL;
	size_t i;

	/* Stream 0 is the connection; an id of 0 also marks a free slot. */
	if (id == 0)
		return NULL;
	for (i = 0; i < H2_MAX_STREAMS; i++) {
		if (ss[i].id == id)
			return &ss[i];
		if (!ss[i].id && !free_slot)
			free_slot = &ss[i];
	}
	if (!create || !free_slot)
		return NULL;
	free_slot->id = id;
	free_slot->body_sha = EVP_MD_CTX_new();
	if (!free_slot->body_sha || !EVP_DigestInit_ex(free_slot->body_sha, EVP_sha256(), NULL)) {
		h2_stream_drop(free_slot);
		return NULL;
	}
	return free_slot;
}

/* Over 100 lines: a minimal HTTP/2 server loop (preface, SETTINGS, frames by type) that only
 * a test needs; split, its frame handling would spread over helpers used once. */
static void bk_serve_h2(struct bk_conn *c)
{
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	struct h2_stream *ss = calloc(H2_MAX_STREAMS, sizeof(*ss));
	size_t i;

	if (!ss)
		return;
	if (bk_need(c, sizeof(preface) - 1, BK_MAX_HEAD) ||
	    memcmp(c->buf + c->off, preface, sizeof(preface) - 1) != 0)
		goto out;
	c->off += sizeof(preface) - 1;
	if (h2_send(c, H2_SETTINGS, 0, 0, NULL, 0))
		goto out;
	for (;;) {
		const unsigned char *f, *p;
		size_t len, plen;
		uint8_t type, flags;
		uint32_t sid;
		struct h2_stream *s;

		if (bk_need(c, 9, BK_MAX_HEAD))
			goto out;
		f = c->buf + c->off;
		len = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2];
		if (len > H2_MAX_FRAME)
			goto out;
		if (bk_need(c, 9 + len, BK_MAX_HEAD))
			goto out;
		f = c->buf + c->off;
		type = f[3];
		flags = f[4];
		sid = ((uint32_t)f[5] << 24 | (uint32_t)f[6] << 16 | (uint32_t)f[7] << 8 | f[8]) &
		      0x7fffffffu;
		p = f + 9;
		plen = len;
		c->off += 9 + len;
		if ((type == H2_DATA || type == H2_HEADERS) && (flags & H2_PADDED)) {
			if (plen < 1 || p[0] >= plen)
				goto out;
			plen -= 1 + p[0];
			p++;
		}
		switch (type) {
		case H2_SETTINGS:
			if (!(flags & H2_ACK) && h2_send(c, H2_SETTINGS, H2_ACK, 0, NULL, 0))
				goto out;
			break;
		case H2_PING:
			if (!(flags & H2_ACK) && len == 8 && h2_send(c, H2_PING, H2_ACK, 0, p, 8))
				goto out;
			break;
		case H2_GOAWAY:
			goto out;
		case H2_RST_STREAM:
			s = h2_stream_get(ss, sid, false);
			if (s)
				h2_stream_drop(s);
			break;
		case H2_HEADERS:
		case H2_CONTINUATION:
			if (sid == 0)
				goto out;
			s = h2_stream_get(ss, sid, type == H2_HEADERS);
			if (!s)
				goto out;
			if (type == H2_HEADERS && (flags & H2_PRIORITY)) {
				if (plen < 5)
					goto out;
				p += 5;
				plen -= 5;
			}
			if (s->block.n + plen > BK_MAX_HEAD || bk_str_add(&s->block, p, plen))
				goto out;
			if (flags & H2_END_HEADERS)
				s->headers_done = true;
			/* END_STREAM on HEADERS: a request without a body (CONTINUATION frames
			 * carry no END_STREAM of their own, so this covers only single frames). */
			if (type == H2_HEADERS && (flags & H2_END_STREAM) && s->headers_done) {
				if (h2_answer(c, s))
					goto out;
				h2_stream_drop(s);
			}
			break;
		case H2_DATA:
			s = h2_stream_get(ss, sid, false);
			if (!s)
				break;
			EVP_DigestUpdate(s->body_sha, p, plen);
			s->body_len += plen;
			/* Give the flow-control credit straight back so large uploads keep going.
			 */
			if (len > 0 && (h2_window_update(c, 0, (uint32_t)len) ||
					h2_window_update(c, sid, (uint32_t)len)))
				goto out;
			if (flags & H2_END_STREAM) {
				if (h2_answer(c, s))
					goto out;
				h2_stream_drop(s);
			}
			break;
		default:
			break; /* PRIORITY, WINDOW_UPDATE, unknown: nothing to do */
		}
	}
out:
	for (i = 0; i < H2_MAX_STREAMS; i++)
		h2_stream_drop(&ss[i]);
	free(ss);
}

/* ---- echo ----------------------------------------------------------------------------- */

static void bk_serve_echo(struct bk_conn *c)
{
	unsigned char buf[16384], md[32];
	char sha[BK_SHA256_HEX];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint64_t total = 0;
	json_t *rec;

	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(ctx);
		return;
	}
	for (;;) {
		ssize_t r = bk_read(c, buf, sizeof(buf));

		if (r <= 0)
			break;
		c->bytes_in += (uint64_t)r;
		total += (uint64_t)r;
		EVP_DigestUpdate(ctx, buf, (size_t)r);
		if (bk_write_all(c, buf, (size_t)r))
			break;
	}
	EVP_DigestFinal_ex(ctx, md, NULL);
	EVP_MD_CTX_free(ctx);
	dp_hex(md, sizeof(md), sha);
	rec = bk_conn_record(c, "echo");
	json_object_set_new(rec, "bytes", json_integer((json_int_t)total));
	json_object_set_new(rec, "sha256", json_string(sha));
	bk_log_record(rec);
}

/* ---- connections ---------------------------------------------------------------------- */

static int bk_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char with_h2[] = "\x02h2\x08http/1.1";
	static const unsigned char h1_only[] = "\x08http/1.1";
	const unsigned char *prefs = opts.h2 ? with_h2 : h1_only;
	unsigned int plen = opts.h2 ? sizeof(with_h2) - 1 : sizeof(h1_only) - 1;
	unsigned char *sel = NULL;

	/* Our preference order wins, so a client offering h2 gets it under --h2. */
	if (SSL_select_next_proto(&sel, outlen, prefs, plen, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* Releases a connection and moves it to the list main joins (joined: whether a thread
 * ran for it). */
static void bk_conn_finish(struct bk_conn *c, bool joinable)
{
	/* Everything of the connection goes first: once the count drops, main may free the
	 * TLS context and exit. */
	SSL_free(c->ssl);
	c->ssl = NULL;
	free(c->buf);
	c->buf = NULL;
	pthread_mutex_lock(&conns_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	c->fd = -1;
	if (joinable) {
		c->prev = NULL;
		c->next = conns_done;
		conns_done = c;
	}
	conns_count--;
	if (conns_count == 0)
		pthread_cond_broadcast(&conns_empty);
	pthread_mutex_unlock(&conns_lock);
	if (!joinable)
		free(c);
}

static void bk_reap(void)
{
	struct bk_conn *c, *next;

	pthread_mutex_lock(&conns_lock);
	c = conns_done;
	conns_done = NULL;
	pthread_mutex_unlock(&conns_lock);
	for (; c; c = next) {
		next = c->next;
		pthread_join(c->thread, NULL);
		free(c);
	}
}

static void *bk_conn_main(void *arg)
{
	struct bk_conn *c = arg;
	json_t *rec;

	if (tls_ctx) {
		c->ssl = SSL_new(tls_ctx);
		if (!c->ssl || !SSL_set_fd(c->ssl, c->fd))
			goto out;
		if (SSL_accept(c->ssl) != 1) {
			unsigned long e = ERR_get_error();
			char why[256];

			ERR_error_string_n(e, why, sizeof(why));
			rec = bk_conn_record(c, "tls_error");
			json_object_set_new(rec, "error",
					    json_string(e ? why : "handshake failed"));
			bk_log_record(rec);
			ERR_clear_error();
			goto out;
		}
		const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
		const unsigned char *alpn = NULL;
		unsigned int alpn_len = 0;

		if (sni)
			snprintf(c->sni, sizeof(c->sni), "%s", sni);
		SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
		if (alpn && alpn_len < sizeof(c->alpn)) {
			memcpy(c->alpn, alpn, alpn_len);
			c->alpn[alpn_len] = '\0';
		}
	}
	if (opts.echo)
		bk_serve_echo(c);
	else if (!strcmp(c->alpn, "h2"))
		bk_serve_h2(c);
	else
		while (bk_serve_request(c) == 1)
			;
	if (c->ssl)
		SSL_shutdown(c->ssl);
	rec = bk_conn_record(c, "conn");
	json_object_set_new(rec, "requests", json_integer((json_int_t)c->requests));
	json_object_set_new(rec, "bytes_in", json_integer((json_int_t)c->bytes_in));
	bk_log_record(rec);
out:
	ERR_clear_error();
	bk_conn_finish(c, true);
	return NULL;
}

static void bk_accept(int lfd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct timeval tv = {BK_IDLE_TIMEOUT_S, 0};
	struct bk_conn *c;
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0, one = 1;
	int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
	}
	/* A client that hangs must not hold a thread forever. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	snprintf(c->peer, sizeof(c->peer), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host,
		 port);
	pthread_mutex_lock(&conns_lock);
	if (conns_count >= BK_MAX_CONNS || stopping) {
		pthread_mutex_unlock(&conns_lock);
		close(fd);
		free(c);
		return;
	}
	c->id = conns_next_id++;
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	conns_count++;
	/* Created under the lock: the thread's own finish must see c->thread set. */
	if (pthread_create(&c->thread, NULL, bk_conn_main, c) != 0) {
		pthread_mutex_unlock(&conns_lock);
		bk_conn_finish(c, false);
		return;
	}
	pthread_mutex_unlock(&conns_lock);
}

/* ---- setup ---------------------------------------------------------------------------- */

static int bk_listen_socket(const char *spec, struct dp_err *err)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon, *h;
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	unsigned long port;
	char *ep;
	int fd, one = 1;
	size_t hl;

	colon = strrchr(spec, ':');
	if (!colon) {
		dp_err_set(err, "--listen %s: want HOST:PORT", spec);
		return -EINVAL;
	}
	h = spec;
	hl = (size_t)(colon - spec);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host)) {
		dp_err_set(err, "--listen %s: bad host", spec);
		return -EINVAL;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &ep, 10);
	if (errno || *ep || ep == colon + 1 || port > 65535) {
		dp_err_set(err, "--listen %s: bad port", spec);
		return -EINVAL;
	}
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		if ((ntohl(in->sin_addr.s_addr) >> 24) != 127) {
			dp_err_set(err, "--listen %s: loopback addresses only", spec);
			return -EINVAL;
		}
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		sl = sizeof(*in);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
			dp_err_set(err, "--listen %s: loopback addresses only", spec);
			return -EINVAL;
		}
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*in6);
	} else {
		dp_err_set(err, "--listen %s: not a numeric address", spec);
		return -EINVAL;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		dp_err_set(err, "socket: %s", strerror(errno));
		return -errno;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0) {
		int e = errno;

		dp_err_set(err, "--listen %s: %s", spec, strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

static int bk_tls_setup(struct dp_err *err)
{
	tls_ctx = SSL_CTX_new(TLS_server_method());
	if (!tls_ctx) {
		dp_err_set(err, "SSL_CTX_new failed");
		return -ENOMEM;
	}
	SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
	/* A client that closes without close_notify is an end of stream, not an error. */
	SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (SSL_CTX_use_certificate_chain_file(tls_ctx, opts.cert) != 1) {
		dp_err_set(err, "--cert %s: cannot load", opts.cert);
		return -EINVAL;
	}
	if (SSL_CTX_use_PrivateKey_file(tls_ctx, opts.key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(tls_ctx) != 1) {
		dp_err_set(err, "--key %s: cannot load or does not match the certificate",
			   opts.key);
		return -EINVAL;
	}
	if (!opts.echo)
		SSL_CTX_set_alpn_select_cb(tls_ctx, bk_alpn_select, NULL);
	return 0;
}

static void bk_usage(void)
{
	fprintf(stderr, "usage: backend --listen ADDR:PORT [--cert F --key F] [--log FILE]\n"
			"               [--jwks FILE|URL --audience AUD [--scope S] [--issuer I]]\n"
			"               [--token-header NAME] [--echo] [--h2]\n");
}

static int bk_parse_args(int argc, char **argv)
{
	static const struct option lopts[] = {{"listen", required_argument, NULL, 'l'},
					      {"cert", required_argument, NULL, 'c'},
					      {"key", required_argument, NULL, 'k'},
					      {"log", required_argument, NULL, 'L'},
					      {"jwks", required_argument, NULL, 'j'},
					      {"audience", required_argument, NULL, 'a'},
					      {"scope", required_argument, NULL, 's'},
					      {"issuer", required_argument, NULL, 'i'},
					      {"echo", no_argument, NULL, 'e'},
					      {"h2", no_argument, NULL, '2'},
					      {"token-header", required_argument, NULL, 't'},
					      {"help", no_argument, NULL, 'h'},
					      {NULL, 0, NULL, 0}};
	int o;

	opts.token_header = "Authorization";
	while ((o = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (o) {
		case 'l':
			opts.listen = optarg;
			break;
		case 'c':
			opts.cert = optarg;
			break;
		case 'k':
			opts.key = optarg;
			break;
		case 'L':
			opts.log = optarg;
			break;
		case 'j':
			opts.jwks = optarg;
			break;
		case 'a':
			opts.audience = optarg;
			break;
		case 's':
			opts.scope = optarg;
			break;
		case 'i':
			opts.issuer = optarg;
			break;
		case 'e':
			opts.echo = true;
			break;
		case '2':
			opts.h2 = true;
			break;
		case 't':
			opts.token_header = optarg;
			break;
		case 'h':
			bk_usage();
			exit(0);
		default:
			bk_usage();
			return -EINVAL;
		}
	}
	if (optind != argc || !opts.listen) {
		bk_usage();
		return -EINVAL;
	}
	if (!opts.cert != !opts.key) {
		pr_warn("--cert and --key go together");
		return -EINVAL;
	}
	if (opts.jwks && !opts.audience) {
		pr_warn("--jwks needs --audience");
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct dp_err err = {""};
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct bk_conn *c;
	sigset_t mask;
	int lfd, sfd, port = 0;

	dp_log_init("backend", DP_LOG_INFO);
	if (bk_parse_args(argc, argv))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	/* Blocked in every thread; the main loop takes them from a signalfd. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0) {
		pr_warn("signalfd: %s", strerror(errno));
		return 1;
	}
	if (opts.log) {
		log_file = fopen(opts.log, "ae");
		if (!log_file) {
			pr_warn("--log %s: %s", opts.log, strerror(errno));
			return 1;
		}
	}
	if (opts.cert && bk_tls_setup(&err)) {
		pr_warn("%s", err.msg);
		return 1;
	}
	lfd = bk_listen_socket(opts.listen, &err);
	if (lfd < 0) {
		pr_warn("%s", err.msg);
		return 1;
	}
	if (getsockname(lfd, (struct sockaddr *)&ss, &sl) == 0)
		port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						     : ((struct sockaddr_in6 *)&ss)->sin6_port);
	printf("port %d\n", port);
	fflush(stdout);
	if (!BK_HAVE_VERIFY && opts.jwks)
		pr_warn("built without deputy_verify: tokens are logged as unchecked");

	for (;;) {
		struct pollfd pfd[2] = {{lfd, POLLIN, 0}, {sfd, POLLIN, 0}};

		bk_reap();
		if (poll(pfd, 2, 1000) < 0) {
			if (errno == EINTR)
				continue;
			pr_warn("poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & POLLIN)
			bk_accept(lfd);
	}

	/* Stop: no new connections, wake every reader, wait for the threads to finish. */
	close(lfd);
	pthread_mutex_lock(&conns_lock);
	stopping = true;
	for (c = conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	while (conns_count > 0)
		pthread_cond_wait(&conns_empty, &conns_lock);
	pthread_mutex_unlock(&conns_lock);
	bk_reap();
	close(sfd);
#if BK_HAVE_VERIFY
	deputy_verifier_free(verifier);
#endif
	SSL_CTX_free(tls_ctx);
	if (log_file)
		fclose(log_file);
	return 0;
}
