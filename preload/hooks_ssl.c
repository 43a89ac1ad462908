// SPDX-License-Identifier: MIT
/*
 * hooks_ssl: the OpenSSL hooks. An SSL object is mediated when it sits on a TCP socket the
 * shim saw connect (SSL_get_fd); the host it claims to talk to comes from SNI (captured in
 * SSL_ctrl, or read back with SSL_get_servername). Everything else passes straight through.
 *
 * ALPN: "h2" is removed from every protocol list a client offers, so servers answer in
 * HTTP/1.1, the only HTTP the shim reads and rewrites. Clients fall back by design (curl
 * --http2 over TLS uses HTTP/1.1 when the server does not select h2).
 *
 * The real functions are looked up on first use in the libssl actually loaded (see
 * shim_ssl_sym); a hook whose real function cannot be found fails that call, never calls
 * NULL.
 */
#include "hooks.h"
#include "shim.h"

#include <errno.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <string.h>

/* ---- the real functions ---------------------------------------------------------------- */

#define SSL_REAL(name) static __typeof__(&name) real_##name
SSL_REAL(SSL_write);
SSL_REAL(SSL_write_ex);
SSL_REAL(SSL_read);
SSL_REAL(SSL_read_ex);
SSL_REAL(SSL_peek);
SSL_REAL(SSL_peek_ex);
SSL_REAL(SSL_pending);
SSL_REAL(SSL_shutdown);
SSL_REAL(SSL_free);
SSL_REAL(SSL_ctrl);
SSL_REAL(SSL_get_error);
SSL_REAL(SSL_get_fd);
SSL_REAL(SSL_get_servername);
SSL_REAL(SSL_CTX_set_alpn_protos);
SSL_REAL(SSL_connect);
SSL_REAL(SSL_do_handshake);
SSL_REAL(SSL_is_server);
SSL_REAL(SSL_set_alpn_protos);

static void *ssl_resolve(void **slot, const char *name, void *self)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

	if (!p) {
		shim_guard++;
		p = shim_ssl_sym(name, self);
		shim_guard--;
		if (p)
			__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}

/* Non-hooked functions (SSL_get_fd, SSL_get_servername) have no "self" to refuse. */
#define REAL(name) ((__typeof__(&name))ssl_resolve((void **)&real_##name, #name, (void *)name))
#define REAL_PLAIN(name) ((__typeof__(&name))ssl_resolve((void **)&real_##name, #name, NULL))

static void ssl_missing(const char *name)
{
	shim_debug("%s: OpenSSL's function not found: call failed", name);
}

/* ---- which SSL objects are mediated ---------------------------------------------------- */

#define SSL_SLOTS 4096 /* power of two */

enum { SLOT_UNSEEN, SLOT_TRACKED, SLOT_UNTRACKED };

struct ssl_slot {
	SSL *ssl;
	struct conn *c;
	uint8_t state;
	int hs_fd; /* +1: the socket its handshake wrote to (0: unknown) */
	char sni[HH_HOST_MAX];
};

__thread void *ssl_handshaking __attribute__((tls_model("initial-exec")));

static struct ssl_slot ssl_tab[SSL_SLOTS];
static pthread_mutex_t ssl_lock = PTHREAD_MUTEX_INITIALIZER;

void ssl_atfork_child(void)
{
	pthread_mutex_init(&ssl_lock, NULL);
	for (size_t i = 0; i < SSL_SLOTS; i++)
		if (ssl_tab[i].c)
			conn_atfork_child(ssl_tab[i].c);
}

static size_t ssl_hash(const SSL *s)
{
	uintptr_t v = (uintptr_t)s;

	v ^= v >> 17;
	v *= 0x9e3779b97f4a7c15ull;
	return (size_t)(v >> 20) & (SSL_SLOTS - 1);
}

/* Called with ssl_lock held. Index of s, or -1. */
static long ssl_find(const SSL *s)
{
	for (size_t n = 0, i = ssl_hash(s); n < SSL_SLOTS; n++, i = (i + 1) & (SSL_SLOTS - 1)) {
		if (ssl_tab[i].ssl == s)
			return (long)i;
		if (!ssl_tab[i].ssl)
			return -1;
	}
	return -1;
}

static long ssl_insert(SSL *s)
{
	long i = ssl_find(s);

	if (i >= 0)
		return i;
	for (size_t n = 0, j = ssl_hash(s); n < SSL_SLOTS - 1; n++, j = (j + 1) & (SSL_SLOTS - 1)) {
		if (!ssl_tab[j].ssl) {
			memset(&ssl_tab[j], 0, sizeof(ssl_tab[j]));
			ssl_tab[j].ssl = s;
			return (long)j;
		}
	}
	return -1; /* full (one slot always stays empty so lookups terminate) */
}

/* Linear-probing removal by backward shift: no tombstones to clean up later. */
static struct conn *ssl_remove(const SSL *s)
{
	long i = ssl_find(s);
	struct conn *c;
	size_t j;

	if (i < 0)
		return NULL;
	c = ssl_tab[i].c;
	j = (size_t)i;
	for (;;) {
		size_t k = (j + 1) & (SSL_SLOTS - 1), home;

		ssl_tab[j].ssl = NULL;
		for (;; k = (k + 1) & (SSL_SLOTS - 1)) {
			if (!ssl_tab[k].ssl)
				return c;
			home = ssl_hash(ssl_tab[k].ssl);
			/* can the entry at k move to the hole at j? */
			if (j <= k ? (home <= j || home > k) : (home <= j && home > k))
				break;
		}
		ssl_tab[j] = ssl_tab[k];
		j = k;
	}
}

static void ssl_norm_sni(const char *name, char *out)
{
	int port;

	if (hh_host_norm(name, strnlen(name, HH_HOST_MAX - 1), out, HH_HOST_MAX, &port) == 0 &&
	    port < 0)
		return;
	/* Not a DNS name: keep something that can never equal a valid Host. */
	strcpy(out, "(invalid SNI)");
}

static const struct conn_ops ssl_ops;

/* The conn of s, deciding on first sight whether s is mediated. NULL: pass through. */
static struct conn *ssl_conn(SSL *s, bool classify)
{
	struct conn *c = NULL, *fc;
	char sni[HH_HOST_MAX] = "";
	long i;
	int fd = -1, hs_fd = -1;
	__typeof__(&SSL_get_fd) get_fd;
	__typeof__(&SSL_is_server) is_server;

	pthread_mutex_lock(&ssl_lock);
	i = ssl_find(s);
	if (i >= 0 && ssl_tab[i].state != SLOT_UNSEEN) {
		c = ssl_tab[i].c;
		pthread_mutex_unlock(&ssl_lock);
		return c;
	}
	if (i >= 0) {
		memcpy(sni, ssl_tab[i].sni, sizeof(sni));
		hs_fd = ssl_tab[i].hs_fd - 1;
	}
	pthread_mutex_unlock(&ssl_lock);
	if (!classify)
		return NULL;

	get_fd = REAL_PLAIN(SSL_get_fd);
	is_server = REAL_PLAIN(SSL_is_server);
	shim_guard++;
	if (get_fd)
		fd = get_fd(s);
	if (!sock_conn_checked(fd))
		fd = hs_fd;
	fc = sock_conn_checked(fd);
	/* A client SSL object on a socket the shim did not see connect is none of its
	 * business. One with no socket at all (its own BIO, memory BIOs) is mediated
	 * without the socket-level extras (port from Host, no refusal socketpair). */
	if (fc || (fd < 0 && is_server && !is_server(s))) {
		c = conn_new(&ssl_ops, fc ? fd : -1, s);
		if (c) {
			__typeof__(&SSL_get_servername) get_sn = REAL_PLAIN(SSL_get_servername);

			c->https = true;
			if (fc) {
				c->cookie = fc->cookie;
				c->peer = fc->peer;
				c->port = fc->port;
				c->dest_rule = fc->dest_rule;
				fc->tls_hooked = true; /* its records are this object's */
			}
			if (!sni[0] && get_sn) {
				const char *n = get_sn(s, TLSEXT_NAMETYPE_host_name);

				if (n && *n)
					ssl_norm_sni(n, sni);
			}
			memcpy(c->sni, sni, sizeof(c->sni));
		}
	}
	shim_guard--;

	pthread_mutex_lock(&ssl_lock);
	i = ssl_insert(s);
	if (i < 0) {
		pthread_mutex_unlock(&ssl_lock);
		shim_debug("too many SSL objects: SSL %p not mediated", (void *)s);
		conn_free(c);
		return NULL;
	}
	if (ssl_tab[i].state != SLOT_UNSEEN) {
		/* another thread classified it meanwhile */
		conn_free(c);
		c = ssl_tab[i].c;
	} else {
		ssl_tab[i].c = c;
		ssl_tab[i].state = c ? SLOT_TRACKED : SLOT_UNTRACKED;
	}
	pthread_mutex_unlock(&ssl_lock);
	return c;
}

void ssl_note_handshake_fd(int fd)
{
	long i;

	pthread_mutex_lock(&ssl_lock);
	i = ssl_insert(ssl_handshaking);
	if (i >= 0 && !ssl_tab[i].hs_fd)
		ssl_tab[i].hs_fd = fd + 1;
	pthread_mutex_unlock(&ssl_lock);
}

/* Both handshake entry points: the socket a handshake writes to first is the SSL object's
 * when it has no fd of its own (ssl_note_handshake_fd). */
static int ssl_handshake(SSL *s, int (*real)(SSL *), const char *name)
{
	void *outer = ssl_handshaking;
	int r;

	if (!real) {
		ssl_missing(name);
		return -1;
	}
	if (shim_guard)
		return real(s);
	ssl_handshaking = s;
	r = real(s);
	ssl_handshaking = outer;
	return r;
}

SHIM_EXPORT int SSL_connect(SSL *s)
{
	return ssl_handshake(s, REAL(SSL_connect), "SSL_connect");
}

SHIM_EXPORT int SSL_do_handshake(SSL *s)
{
	return ssl_handshake(s, REAL(SSL_do_handshake), "SSL_do_handshake");
}

/* ---- how a mediated SSL object sends --------------------------------------------------- */

static ssize_t ssl_send(struct conn *c, const void *buf, size_t n, int flags)
{
	__typeof__(&SSL_write_ex) wex = REAL(SSL_write_ex);
	__typeof__(&SSL_write) w = wex ? NULL : REAL(SSL_write);
	ssize_t ret = -1;

	shim_guard++;
	if (wex) {
		size_t written = 0;

		c->ssl_ret = wex(c->ssl, buf, n, &written);
		if (c->ssl_ret == 1)
			ret = (ssize_t)written;
	} else if (w) {
		c->ssl_ret = w(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
		if (c->ssl_ret > 0)
			ret = c->ssl_ret;
	} else {
		ssl_missing("SSL_write");
		c->ssl_ret = -1;
		c->fake_err = SSL_ERROR_SSL;
	}
	shim_guard--;
	return ret;
}

static bool ssl_would_block(struct conn *c)
{
	__typeof__(&SSL_get_error) ge = REAL(SSL_get_error);
	int e;

	if (!ge || c->fake_err)
		return false;
	shim_guard++;
	e = ge(c->ssl, c->ssl_ret);
	shim_guard--;
	return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ;
}

/* The shim's own reads (conn_list.c): the end of the stream, however it ended, is the end of
 * the answer being read; a would-block is the caller's to wait for. */
static ssize_t ssl_recv(struct conn *c, void *buf, size_t n)
{
	__typeof__(&SSL_read_ex) rex = REAL(SSL_read_ex);
	__typeof__(&SSL_get_error) ge = REAL(SSL_get_error);
	size_t got = 0;
	int e;

	if (!rex || !ge)
		return 0;
	shim_guard++;
	c->ssl_ret = rex(c->ssl, buf, n, &got);
	e = c->ssl_ret == 1 ? SSL_ERROR_NONE : ge(c->ssl, c->ssl_ret);
	shim_guard--;
	if (c->ssl_ret == 1)
		return (ssize_t)got;
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? -1 : 0;
}

static const struct conn_ops ssl_ops = {
    .send = ssl_send, .would_block = ssl_would_block, .recv = ssl_recv};

static struct conn *ssl_hooked(SSL *s, bool classify)
{
	shim_init();
	if (shim_guard || !s)
		return NULL;
	return ssl_conn(s, classify);
}

static bool ssl_partial_ok(SSL *s)
{
	__typeof__(&SSL_ctrl) ctrl = REAL(SSL_ctrl);
	long mode = 0;

	if (ctrl) {
		shim_guard++;
		mode = ctrl(s, SSL_CTRL_MODE, 0, NULL);
		shim_guard--;
	}
	return (mode & SSL_MODE_ENABLE_PARTIAL_WRITE) != 0;
}

/* ---- writes ---------------------------------------------------------------------------- */

static ssize_t ssl_mediated_write(struct conn *c, SSL *s, const void *buf, size_t n)
{
	int saved = errno;
	ssize_t r = conn_write(c, buf, n, 0, ssl_partial_ok(s));

	if (r >= 0)
		errno = saved;
	return r;
}

SHIM_EXPORT int SSL_write(SSL *s, const void *buf, int num)
{
	__typeof__(&SSL_write) real = REAL(SSL_write);
	struct conn *c;
	ssize_t r;

	if (!real) {
		ssl_missing("SSL_write");
		return -1;
	}
	c = num > 0 ? ssl_hooked(s, true) : NULL;
	if (!c || c->rq == RQ_OPAQUE)
		return real(s, buf, num);
	r = ssl_mediated_write(c, s, buf, (size_t)num);
	return r >= 0 ? (int)r : -1;
}

SHIM_EXPORT int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
{
	__typeof__(&SSL_write_ex) real = REAL(SSL_write_ex);
	struct conn *c;
	ssize_t r;

	if (!real) {
		ssl_missing("SSL_write_ex");
		return 0;
	}
	c = num > 0 ? ssl_hooked(s, true) : NULL;
	if (!c || c->rq == RQ_OPAQUE)
		return real(s, buf, num, written);
	r = ssl_mediated_write(c, s, buf, num);
	if (r < 0)
		return 0;
	if (written)
		*written = (size_t)r;
	return 1;
}

/* ---- reads ----------------------------------------------------------------------------- */

/* One read for SSL_read/_ex/peek/_ex. Returns bytes (> 0), 0 at the 403's end, or the real
 * function's failure (<= 0) with *real_fail set. */
static int ssl_mediated_read(struct conn *c, SSL *s, void *buf, size_t num, bool peek,
			     size_t *readbytes, bool *real_fail)
{
	__typeof__(&SSL_read_ex) rex = peek ? REAL(SSL_peek_ex) : REAL(SSL_read_ex);
	__typeof__(&SSL_get_error) ge = REAL(SSL_get_error);
	int saved = errno;

	*real_fail = false;
	for (int again = 0; again < 3; again++) {
		ssize_t mine = conn_list_read(c, buf, num, peek);
		int ok;

		if (mine != 0) {
			c->fake_err = 0;
			*real_fail = mine < 0;
			*readbytes = mine > 0 ? (size_t)mine : 0;
			errno = saved;
			return mine > 0 ? (int)mine : -1;
		}
		if (conn_serves_from_memory(c)) {
			size_t k = conn_deny_read(c, buf, num, peek);

			c->fake_err = k ? 0 : SSL_ERROR_ZERO_RETURN;
			*readbytes = k;
			errno = saved;
			return (int)k;
		}
		c->fake_err = 0;
		if (!rex) {
			ssl_missing(peek ? "SSL_peek_ex" : "SSL_read_ex");
			c->fake_err = SSL_ERROR_SSL;
			*real_fail = true;
			return -1;
		}
		shim_guard++;
		ok = rex(s, buf, num, readbytes);
		shim_guard--;
		if (ok == 1) {
			size_t kept = peek ? *readbytes : conn_after_read(c, buf, *readbytes);

			if (kept == *readbytes)
				return (int)*readbytes;
			conn_list_take(c, (char *)buf + kept, *readbytes - kept);
			if (kept == 0)
				continue; /* all of it was the shim's: its answer, or a wait */
			*readbytes = kept;
			return (int)kept;
		}
		if (ge && c->deny_pending) {
			int e;

			shim_guard++;
			e = ge(s, 0);
			shim_guard--;
			if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ||
			    e == SSL_ERROR_SSL) {
				conn_after_eof(c);
				continue;
			}
		}
		*real_fail = true;
		return ok;
	}
	*real_fail = true;
	return 0;
}

/* SSL_read and SSL_peek (int sizes, -1 on failure) differ only in peek, and so do
 * SSL_read_ex and SSL_peek_ex (size_t sizes, 0 on failure): one body per signature. The
 * exported hooks stay separate symbols, since each replaces its own libssl function. */
static int ssl_read_int(SSL *s, void *buf, int num, bool peek)
{
	__typeof__(&SSL_read) real = peek ? REAL(SSL_peek) : REAL(SSL_read);
	struct conn *c;
	size_t got = 0;
	bool fail;
	int r;

	if (!real) {
		ssl_missing(peek ? "SSL_peek" : "SSL_read");
		return -1;
	}
	c = num > 0 ? ssl_hooked(s, false) : NULL;
	if (!c || !conn_is_http(c))
		return real(s, buf, num);
	r = ssl_mediated_read(c, s, buf, (size_t)num, peek, &got, &fail);
	if (fail)
		return r <= 0 ? -1 : r;
	return r;
}

static int ssl_read_size(SSL *s, void *buf, size_t num, size_t *readbytes, bool peek)
{
	__typeof__(&SSL_read_ex) real = peek ? REAL(SSL_peek_ex) : REAL(SSL_read_ex);
	struct conn *c;
	size_t got = 0;
	bool fail;
	int r;

	if (!real) {
		ssl_missing(peek ? "SSL_peek_ex" : "SSL_read_ex");
		return 0;
	}
	c = num > 0 ? ssl_hooked(s, false) : NULL;
	if (!c || !conn_is_http(c))
		return real(s, buf, num, readbytes);
	r = ssl_mediated_read(c, s, buf, num, peek, &got, &fail);
	if (fail || r <= 0)
		return 0;
	if (readbytes)
		*readbytes = got;
	return 1;
}

SHIM_EXPORT int SSL_read(SSL *s, void *buf, int num)
{
	return ssl_read_int(s, buf, num, false);
}

SHIM_EXPORT int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
{
	return ssl_read_size(s, buf, num, readbytes, false);
}

SHIM_EXPORT int SSL_peek(SSL *s, void *buf, int num)
{
	return ssl_read_int(s, buf, num, true);
}

SHIM_EXPORT int SSL_peek_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
{
	return ssl_read_size(s, buf, num, readbytes, true);
}

SHIM_EXPORT int SSL_pending(const SSL *s)
{
	__typeof__(&SSL_pending) real = REAL(SSL_pending);
	struct conn *c = ssl_hooked((SSL *)s, false);
	size_t mine = c ? conn_list_pending(c) : 0;

	if (mine)
		return mine > INT_MAX ? INT_MAX : (int)mine;
	if (c && conn_serves_from_memory(c)) {
		size_t k = conn_deny_pending_bytes(c);

		return k > INT_MAX ? INT_MAX : (int)k;
	}
	if (!real) {
		ssl_missing("SSL_pending");
		return 0;
	}
	return real(s);
}

SHIM_EXPORT int SSL_get_error(const SSL *s, int ret)
{
	__typeof__(&SSL_get_error) real = REAL(SSL_get_error);
	struct conn *c = ret <= 0 ? ssl_hooked((SSL *)s, false) : NULL;

	if (c && c->fake_err)
		return c->fake_err;
	if (!real) {
		ssl_missing("SSL_get_error");
		return SSL_ERROR_SSL;
	}
	return real(s, ret);
}

/* ---- lifetime -------------------------------------------------------------------------- */

SHIM_EXPORT int SSL_shutdown(SSL *s)
{
	__typeof__(&SSL_shutdown) real = REAL(SSL_shutdown);
	struct conn *c = ssl_hooked(s, false);

	/* The real connection is gone (a socketpair is behind the fd): nothing to close. */
	if (c && c->denied)
		return 1;
	if (!real) {
		ssl_missing("SSL_shutdown");
		return -1;
	}
	return real(s);
}

SHIM_EXPORT void SSL_free(SSL *s)
{
	__typeof__(&SSL_free) real = REAL(SSL_free);
	struct conn *c = NULL;

	shim_init();
	if (s) {
		pthread_mutex_lock(&ssl_lock);
		c = ssl_remove(s);
		pthread_mutex_unlock(&ssl_lock);
		conn_free(c);
	}
	if (!real) {
		ssl_missing("SSL_free");
		return;
	}
	real(s);
}

SHIM_EXPORT long SSL_ctrl(SSL *s, int cmd, long larg, void *parg)
{
	__typeof__(&SSL_ctrl) real = REAL(SSL_ctrl);

	shim_init();
	if (!real) {
		ssl_missing("SSL_ctrl");
		return 0;
	}
	if (!shim_guard && s && cmd == SSL_CTRL_SET_TLSEXT_HOSTNAME &&
	    larg == TLSEXT_NAMETYPE_host_name && parg) {
		long i;

		pthread_mutex_lock(&ssl_lock);
		i = ssl_insert(s);
		if (i >= 0) {
			ssl_norm_sni(parg, ssl_tab[i].sni);
			if (ssl_tab[i].c)
				memcpy(ssl_tab[i].c->sni, ssl_tab[i].sni, HH_HOST_MAX);
		}
		pthread_mutex_unlock(&ssl_lock);
	}
	return real(s, cmd, larg, parg);
}

/* ---- ALPN ------------------------------------------------------------------------------ */

/* The two setters take different objects (SSL_CTX, SSL): one hook each. */
SHIM_EXPORT int SSL_CTX_set_alpn_protos(SSL_CTX *ctx, const unsigned char *protos, unsigned int len)
{
	__typeof__(&SSL_CTX_set_alpn_protos) real = REAL(SSL_CTX_set_alpn_protos);
	unsigned char buf[1024];

	shim_init();
	if (!real) {
		ssl_missing("SSL_CTX_set_alpn_protos");
		return 1; /* this API returns 0 on success */
	}
	protos = alpn_offer(protos, &len, buf, sizeof(buf));
	return real(ctx, protos, len);
}

SHIM_EXPORT int SSL_set_alpn_protos(SSL *s, const unsigned char *protos, unsigned int len)
{
	__typeof__(&SSL_set_alpn_protos) real = REAL(SSL_set_alpn_protos);
	unsigned char buf[1024];

	shim_init();
	if (!real) {
		ssl_missing("SSL_set_alpn_protos");
		return 1;
	}
	protos = alpn_offer(protos, &len, buf, sizeof(buf));
	return real(s, protos, len);
}
