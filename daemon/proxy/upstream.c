// SPDX-License-Identifier: MIT
/*
 * upstream: connections from the proxy to the servers agents meant to reach (see
 * upstream.h). The proxy runs outside every session, so its own connects are not redirected.
 */
#include "upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define UP_POOL_MAX 64
#define UP_IDLE_MAX 30 /* seconds an idle connection is kept */
#define UP_CONNECT_TIMEOUT_MS 10000
#define UP_IO_TIMEOUT 60

static SSL_CTX *up_ctx;
static struct upconn *pool;
static size_t pool_n;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;

static int load_pem_anchors(X509_STORE *st, const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x;
	int n = 0;

	if (!b)
		return -ENOMEM;
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		if (X509_STORE_add_cert(st, x) == 1)
			n++;
		X509_free(x);
	}
	ERR_clear_error();
	BIO_free(b);
	return n > 0 ? 0 : -EINVAL;
}

int up_init(const char *ca_pem, struct dp_err *err)
{
	static const unsigned char alpn[] = "\x08http/1.1";

	up_ctx = SSL_CTX_new(TLS_client_method());
	if (!up_ctx) {
		dp_err_set(err, "upstream TLS context: out of memory");
		return -ENOMEM;
	}
	SSL_CTX_set_min_proto_version(up_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(up_ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_alpn_protos(up_ctx, alpn, sizeof(alpn) - 1);
	/* A record per read() (see relay.c); idle_usable() also checks what it buffered. */
	SSL_CTX_set_read_ahead(up_ctx, 1);
	if (ca_pem) {
		if (load_pem_anchors(SSL_CTX_get_cert_store(up_ctx), ca_pem) != 0) {
			dp_err_set(err, "upstream_ca_file: no certificate in it");
			return -EINVAL;
		}
	} else if (SSL_CTX_set_default_verify_paths(up_ctx) != 1) {
		dp_err_set(err, "upstream TLS: cannot load the system trust store");
		return -EIO;
	}
	return 0;
}

static bool key_eq(const struct up_key *a, const struct up_key *b)
{
	return a->tag == b->tag && a->family == b->family && a->port == b->port &&
	       a->tls == b->tls && memcmp(a->addr, b->addr, 16) == 0 &&
	       strcmp(a->host, b->host) == 0;
}

/* An idle connection is usable only if the server has neither closed it nor sent anything,
 * on the socket or read ahead into OpenSSL's buffer (a late byte would be read as the next
 * response's start). */
static bool idle_usable(const struct upconn *u)
{
	char c;
	ssize_t r = recv(u->io.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
	       !(u->io.ssl && SSL_has_pending(u->io.ssl)) &&
	       dp_now() - u->idle_since <= UP_IDLE_MAX;
}

static struct upconn *pool_take(const struct up_key *k)
{
	struct upconn **pp, *u, *stale = NULL;

	pthread_mutex_lock(&pool_mu);
	for (pp = &pool; (u = *pp);) {
		if (!key_eq(&u->key, k)) {
			pp = &u->next;
			continue;
		}
		*pp = u->next;
		pool_n--;
		if (idle_usable(u))
			break;
		u->next = stale;
		stale = u;
	}
	pthread_mutex_unlock(&pool_mu);
	while (stale) {
		struct upconn *n = stale->next;

		up_drop(stale);
		stale = n;
	}
	return u;
}

static int tcp_connect(const struct up_key *k, struct dp_err *err)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	struct pollfd pfd;
	int fd, so = 0, one = 1;
	socklen_t solen = sizeof(so);

	if (k->family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(k->port);
		memcpy(&s4->sin_addr, k->addr, 4);
		sl = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(k->port);
		memcpy(&s6->sin6_addr, k->addr, 16);
		sl = sizeof(*s6);
	}
	fd = socket(k->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		dp_err_set(err, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
		dp_err_set(err, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	pfd = (struct pollfd){fd, POLLOUT, 0};
	if (poll(&pfd, 1, UP_CONNECT_TIMEOUT_MS) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &solen) < 0 || so != 0) {
		dp_err_set(err, "connect: %s", so ? strerror(so) : "timed out");
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	pxio_timeouts(fd, UP_IO_TIMEOUT);
	return fd;
}

static SSL *tls_connect(int fd, const char *host, struct dp_err *err)
{
	SSL *ssl = SSL_new(up_ctx);
	unsigned char ip[16];
	bool literal = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;

	if (!ssl) {
		dp_err_set(err, "TLS: out of memory");
		return NULL;
	}
	SSL_set_fd(ssl, fd);
	/* The upstream must prove it is the route host: by name, or by address for a literal
	 * (which RFC 6066 forbids as an SNI). */
	if (literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1
		    : (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1)) {
		dp_err_set(err, "TLS: cannot set the host name");
		SSL_free(ssl);
		return NULL;
	}
	if (SSL_connect(ssl) != 1) {
		long v = SSL_get_verify_result(ssl);

		dp_err_set(err, "TLS handshake with %s: %s", host,
			   v != X509_V_OK ? X509_verify_cert_error_string(v) : "failed");
		ERR_clear_error();
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

struct upconn *up_get(const struct up_key *k, bool *reused, struct dp_err *err)
{
	struct upconn *u = pool_take(k);

	*reused = u != NULL;
	if (u)
		return u;
	u = calloc(1, sizeof(*u));
	if (!u) {
		dp_err_set(err, "out of memory");
		return NULL;
	}
	u->key = *k;
	u->io.fd = tcp_connect(k, err);
	if (u->io.fd < 0) {
		free(u);
		return NULL;
	}
	if (k->tls) {
		u->io.ssl = tls_connect(u->io.fd, k->host, err);
		if (!u->io.ssl) {
			close(u->io.fd);
			free(u);
			return NULL;
		}
	}
	return u;
}

void up_put(struct upconn *u)
{
	pthread_mutex_lock(&pool_mu);
	if (pool_n < UP_POOL_MAX) {
		u->idle_since = dp_now();
		u->next = pool;
		pool = u;
		pool_n++;
		u = NULL;
	}
	pthread_mutex_unlock(&pool_mu);
	if (u)
		up_drop(u);
}

void up_drop(struct upconn *u)
{
	if (u->io.ssl) {
		SSL_shutdown(u->io.ssl);
		SSL_free(u->io.ssl);
	}
	close(u->io.fd);
	free(u);
}
