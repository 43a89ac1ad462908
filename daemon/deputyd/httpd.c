// SPDX-License-Identifier: MIT
/*
 * httpd: the small HTTP/1.1 server that publishes deputyd's JWKS and OAuth metadata.
 *
 * Anything on the host can connect to it, including the agents deputy watches, so it trusts
 * no client: requests are read with non-blocking sockets under one poll loop, each
 * connection has a deadline and a capped head, anything not plainly HTTP/1.x gets a 400 and
 * a close, and when every slot is taken the stalest connection makes room. A silent or slow
 * client can hold one slot for a few seconds, never the server.
 */
#include "httpd.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include "config.h"
#include "httphead.h"

#define HTTPD_MAX_CLIENTS 64
#define HTTPD_HEAD_MAX 8192
#define HTTPD_TARGET_MAX 2048
#define HTTPD_TIMEOUT_MS 5000 /* to send a whole head, and to take a whole response */
#define HTTPD_LINGER_MS 1000  /* reading what a client still sends after our response */
#define HTTPD_LINGER_BYTES 65536
#define HTTPD_ACCEPT_PAUSE_MS 100 /* after EMFILE and friends */

enum httpd_state { CL_FREE, CL_READ, CL_WRITE, CL_LINGER };

struct httpd_client {
	enum httpd_state state;
	int fd;
	int64_t deadline;    /* monotonic ms */
	struct hh_scan scan; /* where the head ends */
	size_t in_len;
	size_t discarded; /* while lingering */
	char *out;
	size_t out_len, out_off;
	char in[HTTPD_HEAD_MAX];
};

struct dp_httpd {
	int lfd;
	int wakefd;
	int port;
	pthread_t thread;
	pthread_mutex_t lock; /* guards jwks and meta */
	char *jwks;
	char *meta;
	int64_t accept_paused_until;
	struct httpd_client cl[HTTPD_MAX_CLIENTS];
};

static int64_t httpd_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void httpd_client_close(struct httpd_client *c)
{
	if (c->state == CL_FREE)
		return;
	close(c->fd);
	free(c->out);
	c->out = NULL;
	c->fd = -1;
	c->state = CL_FREE;
}

/* ---- responses --------------------------------------------------------------------- */

static const char *httpd_status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	default:
		return "Internal Server Error";
	}
}

/* Builds the whole response in c->out, to be written as the socket allows. */
static void httpd_client_respond(struct httpd_client *c, int status, const char *body,
				 bool head_only)
{
	char err_body[64];
	size_t blen, hlen;
	int n;

	if (!body) {
		snprintf(err_body, sizeof(err_body), "{\"error\":\"%s\"}\n",
			 httpd_status_text(status));
		body = err_body;
	}
	blen = strlen(body);
	c->out = malloc(256 + blen);
	if (!c->out) {
		httpd_client_close(c);
		return;
	}
	n = snprintf(c->out, 256,
		     "HTTP/1.1 %d %s\r\n"
		     "Content-Type: application/json\r\n"
		     "Content-Length: %zu\r\n"
		     "Cache-Control: no-cache\r\n"
		     "X-Content-Type-Options: nosniff\r\n"
		     "%s"
		     "Connection: close\r\n\r\n",
		     status, httpd_status_text(status), blen,
		     status == 405 ? "Allow: GET, HEAD\r\n" : "");
	hlen = n > 0 && n < 256 ? (size_t)n : 0;
	if (!head_only)
		memcpy(c->out + hlen, body, blen);
	c->out_len = hlen + (head_only ? 0 : blen);
	c->out_off = 0;
	c->state = CL_WRITE;
	c->deadline = httpd_now_ms() + HTTPD_TIMEOUT_MS;
}

/*
 * The head is parsed by httphead, the shim's strict (and fuzzed) parser; on top of it httpd
 * takes only what its two documents need: origin-form targets of printable ASCII up to
 * HTTPD_TARGET_MAX, methods of at most 16 characters. Anything else is a 400.
 */
static void httpd_client_handle_head(struct dp_httpd *h, struct httpd_client *c, size_t head_len)
{
	struct hh_req req;
	const char *target, *q;
	struct dp_err err;
	size_t plen;
	bool is_get, is_head, ok;
	char *doc = NULL;
	int status;

	ok = hh_req_parse(c->in, head_len, &req, &err) == 0 && req.method.len <= 16 &&
	     req.target.len <= HTTPD_TARGET_MAX && c->in[req.target.off] == '/';
	for (uint32_t i = 0; ok && i < req.target.len; i++)
		ok = (unsigned char)c->in[req.target.off + i] < 0x7f;
	if (!ok) {
		httpd_client_respond(c, 400, NULL, false);
		return;
	}
	target = c->in + req.target.off;
	is_get = req.method.len == 3 && memcmp(c->in + req.method.off, "GET", 3) == 0;
	is_head = req.method.len == 4 && memcmp(c->in + req.method.off, "HEAD", 4) == 0;
	/* c->in is not NUL-terminated: stay within the target */
	q = memchr(target, '?', req.target.len);
	plen = q ? (size_t)(q - target) : req.target.len;

	pthread_mutex_lock(&h->lock);
	if (plen == strlen(HTTPD_JWKS_PATH) && memcmp(target, HTTPD_JWKS_PATH, plen) == 0)
		doc = h->jwks ? strdup(h->jwks) : NULL;
	else if (plen == strlen(HTTPD_METADATA_PATH) &&
		 memcmp(target, HTTPD_METADATA_PATH, plen) == 0)
		doc = h->meta ? strdup(h->meta) : NULL;
	pthread_mutex_unlock(&h->lock);

	if (!doc)
		status = 404;
	else if (!is_get && !is_head)
		status = 405;
	else
		status = 200;
	httpd_client_respond(c, status, status == 200 ? doc : NULL, is_head);
	free(doc);
}

/* New bytes arrived: refuse as early as the bytes allow, answer once the head is complete. */
static void httpd_client_check_input(struct dp_httpd *h, struct httpd_client *c, size_t old_len)
{
	size_t used = 0;
	int r;

	/* a first byte no method has: not HTTP (TLS, HTTP/2 without a request line, noise) */
	if (old_len == 0 && !hh_is_tchar((unsigned char)c->in[0])) {
		httpd_client_respond(c, 400, NULL, false);
		return;
	}
	/* NUL anywhere, a bare LF, a CR not before LF */
	r = hh_scan_feed(&c->scan, c->in + old_len, c->in_len - old_len, &used);
	if (r < 0) {
		httpd_client_respond(c, 400, NULL, false);
		return;
	}
	if (r == 1) {
		httpd_client_handle_head(h, c, old_len + used);
		return;
	}
	/* a request line longer than any target httpd serves */
	if (!memmem(c->in, c->in_len, "\r\n", 2) && c->in_len > HTTPD_TARGET_MAX + 32) {
		httpd_client_respond(c, 400, NULL, false);
		return;
	}
	if (c->in_len == sizeof(c->in))
		httpd_client_respond(c, 400, NULL, false);
}

static void httpd_client_read(struct dp_httpd *h, struct httpd_client *c)
{
	size_t old = c->in_len;
	ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			httpd_client_close(c);
		return;
	}
	if (n == 0) {
		/* half-closed mid-head: it may still read our answer */
		if (c->in_len > 0)
			httpd_client_respond(c, 400, NULL, false);
		else
			httpd_client_close(c);
		return;
	}
	c->in_len += (size_t)n;
	httpd_client_check_input(h, c, old);
}

static void httpd_client_write(struct httpd_client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			httpd_client_close(c);
			return;
		}
		c->out_off += (size_t)n;
	}
	/* Closing with unread input would reset the connection and could destroy the
	 * response before the client read it; so say we are done, then read until it is. */
	shutdown(c->fd, SHUT_WR);
	free(c->out);
	c->out = NULL;
	c->state = CL_LINGER;
	c->discarded = 0;
	c->deadline = httpd_now_ms() + HTTPD_LINGER_MS;
}

static void httpd_client_linger(struct httpd_client *c)
{
	char sink[4096];
	ssize_t n = recv(c->fd, sink, sizeof(sink), 0);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0 || (c->discarded += (size_t)n) > HTTPD_LINGER_BYTES)
		httpd_client_close(c);
}

static void httpd_client_expire(struct httpd_client *c)
{
	if (c->state == CL_READ && c->in_len > 0) {
		static const char timeout[] = "HTTP/1.1 408 Request Timeout\r\nContent-Length: "
					      "0\r\nConnection: close\r\n\r\n";

		/* best effort: a client too slow to send a head gets one try to hear why */
		if (send(c->fd, timeout, sizeof(timeout) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* it is going away either way */
		}
	}
	httpd_client_close(c);
}

/* ---- the loop ---------------------------------------------------------------------- */

static struct httpd_client *httpd_slot_for_new_client(struct dp_httpd *h)
{
	struct httpd_client *victim = NULL;

	for (size_t i = 0; i < HTTPD_MAX_CLIENTS; i++) {
		struct httpd_client *c = &h->cl[i];

		if (c->state == CL_FREE)
			return c;
		/* lingering ones first (they have their answer), then the oldest */
		if (!victim || (c->state == CL_LINGER && victim->state != CL_LINGER) ||
		    ((c->state == CL_LINGER) == (victim->state == CL_LINGER) &&
		     c->deadline < victim->deadline))
			victim = c;
	}
	httpd_client_close(victim);
	return victim;
}

static void httpd_accept_clients(struct dp_httpd *h)
{
	for (int i = 0; i < HTTPD_MAX_CLIENTS; i++) {
		struct httpd_client *c;
		int fd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				pr_warn("httpd: accept: %s; pausing", strerror(errno));
				h->accept_paused_until = httpd_now_ms() + HTTPD_ACCEPT_PAUSE_MS;
			}
			return; /* EAGAIN, or the client already gave up (ECONNABORTED) */
		}
		c = httpd_slot_for_new_client(h);
		c->fd = fd;
		c->state = CL_READ;
		c->in_len = 0;
		c->scan = (struct hh_scan){0};
		c->deadline = httpd_now_ms() + HTTPD_TIMEOUT_MS;
	}
}

static void *httpd_thread_main(void *arg)
{
	struct dp_httpd *h = arg;
	struct pollfd pfd[2 + HTTPD_MAX_CLIENTS];
	int idx[2 + HTTPD_MAX_CLIENTS];

	for (;;) {
		int64_t now = httpd_now_ms(), next = -1;
		int nfds = 0, timeout, r;

		pfd[nfds++] = (struct pollfd){.fd = h->wakefd, .events = POLLIN};
		if (now >= h->accept_paused_until)
			pfd[nfds++] = (struct pollfd){.fd = h->lfd, .events = POLLIN};
		else
			next = h->accept_paused_until;
		for (int i = 0; i < HTTPD_MAX_CLIENTS; i++) {
			struct httpd_client *c = &h->cl[i];

			if (c->state == CL_FREE)
				continue;
			idx[nfds] = i;
			pfd[nfds++] = (struct pollfd){
			    .fd = c->fd, .events = c->state == CL_WRITE ? POLLOUT : POLLIN};
			if (next < 0 || c->deadline < next)
				next = c->deadline;
		}
		timeout = next < 0 ? -1 : next <= now ? 0 : (int)(next - now);

		r = poll(pfd, (nfds_t)nfds, timeout);
		if (r < 0 && errno != EINTR) {
			pr_warn("httpd: poll: %s", strerror(errno));
			break;
		}
		if (r > 0 && pfd[0].revents)
			break;
		for (int k = 1; r > 0 && k < nfds; k++) {
			struct httpd_client *c;

			if (!pfd[k].revents)
				continue;
			if (pfd[k].fd == h->lfd) {
				httpd_accept_clients(h);
				continue;
			}
			c = &h->cl[idx[k]];
			/* httpd_accept_clients may have evicted (and reused) this slot meanwhile */
			if (c->state == CL_FREE || c->fd != pfd[k].fd)
				continue;
			if (c->state == CL_READ)
				httpd_client_read(h, c);
			else if (c->state == CL_WRITE)
				httpd_client_write(c);
			else if (c->state == CL_LINGER)
				httpd_client_linger(c);
			/* a response ready now need not wait for the next poll round */
			if (c->state == CL_WRITE)
				httpd_client_write(c);
		}
		now = httpd_now_ms();
		for (int i = 0; i < HTTPD_MAX_CLIENTS; i++)
			if (h->cl[i].state != CL_FREE && h->cl[i].deadline <= now)
				httpd_client_expire(&h->cl[i]);
	}
	return NULL;
}

/* ---- lifecycle --------------------------------------------------------------------- */

static int httpd_listen_on(const char *listen_addr, int *port, struct dp_err *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, r;

	r = config_parse_listen(listen_addr, true, &ss, &sl);
	if (r) {
		dp_err_set(err, "http_listen \"%s\": %s", listen_addr ? listen_addr : "(none)",
			   r == -EADDRNOTAVAIL ? "not a loopback address" : "not ADDRESS:PORT");
		return r;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto fail;
	if (ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0)
		goto fail;
	sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		goto fail;
	*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					       : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
fail:
	r = -errno;
	dp_err_set(err, "http_listen %s: %s", listen_addr, strerror(errno));
	if (fd >= 0)
		close(fd);
	return r;
}

struct dp_httpd *httpd_start(const char *listen_addr, const char *jwks_json,
			     const char *metadata_json, struct dp_err *err)
{
	struct dp_httpd *h = calloc(1, sizeof(*h));
	sigset_t all, old;
	int r;

	if (!h) {
		dp_err_set(err, "httpd: out of memory");
		return NULL;
	}
	h->lfd = h->wakefd = -1;
	for (size_t i = 0; i < HTTPD_MAX_CLIENTS; i++)
		h->cl[i].fd = -1;
	pthread_mutex_init(&h->lock, NULL);
	h->jwks = jwks_json ? strdup(jwks_json) : NULL;
	h->meta = metadata_json ? strdup(metadata_json) : NULL;
	if ((jwks_json && !h->jwks) || (metadata_json && !h->meta)) {
		dp_err_set(err, "httpd: out of memory");
		goto fail;
	}
	h->lfd = httpd_listen_on(listen_addr, &h->port, err);
	if (h->lfd < 0)
		goto fail;
	h->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->wakefd < 0) {
		dp_err_set(err, "httpd: eventfd: %s", strerror(errno));
		goto fail;
	}
	/* The thread inherits this mask: signals are deputyd's main loop's business. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&h->thread, NULL, httpd_thread_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		dp_err_set(err, "httpd: pthread_create: %s", strerror(r));
		goto fail;
	}
	return h;
fail:
	if (h->lfd >= 0)
		close(h->lfd);
	if (h->wakefd >= 0)
		close(h->wakefd);
	pthread_mutex_destroy(&h->lock);
	free(h->jwks);
	free(h->meta);
	free(h);
	return NULL;
}

int httpd_port(const struct dp_httpd *h)
{
	return h ? h->port : -1;
}

int httpd_set_documents(struct dp_httpd *h, const char *jwks_json, const char *metadata_json)
{
	char *j = NULL, *m = NULL;

	if ((jwks_json && !(j = strdup(jwks_json))) ||
	    (metadata_json && !(m = strdup(metadata_json)))) {
		free(j);
		return -ENOMEM;
	}
	pthread_mutex_lock(&h->lock);
	if (j) {
		free(h->jwks);
		h->jwks = j;
	}
	if (m) {
		free(h->meta);
		h->meta = m;
	}
	pthread_mutex_unlock(&h->lock);
	return 0;
}

void httpd_stop(struct dp_httpd *h)
{
	uint64_t one = 1;

	if (!h)
		return;
	if (write(h->wakefd, &one, sizeof(one)) < 0)
		pr_warn("httpd: cannot wake the server thread: %s", strerror(errno));
	pthread_join(h->thread, NULL);
	for (size_t i = 0; i < HTTPD_MAX_CLIENTS; i++)
		httpd_client_close(&h->cl[i]);
	close(h->lfd);
	close(h->wakefd);
	pthread_mutex_destroy(&h->lock);
	free(h->jwks);
	free(h->meta);
	free(h);
}

char *httpd_metadata_json(const char *issuer, const char *http_listen)
{
	json_t *doc = json_object();
	char *uri = NULL, *out = NULL;

	if (!doc || !issuer || !http_listen)
		goto out;
	if (asprintf(&uri, "http://%s%s", http_listen, HTTPD_JWKS_PATH) < 0) {
		uri = NULL;
		goto out;
	}
	if (json_object_set_new(doc, "issuer", json_string(issuer)) ||
	    json_object_set_new(doc, "jwks_uri", json_string(uri)) ||
	    json_object_set_new(doc, "response_types_supported", json_array()) ||
	    json_object_set_new(doc, "grant_types_supported", json_array()))
		goto out;
	out = json_dumps(doc, JSON_INDENT(2));
out:
	free(uri);
	json_decref(doc);
	return out;
}
