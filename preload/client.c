// SPDX-License-Identifier: MIT
/*
 * client: frames requests with the allocation-free helpers of proto.h into static buffers
 * (guarded by the client mutex) and talks to deputyd with the real libc functions.
 */
#include "client.h"

#include "deputy/proto.h"
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define DPC_TIMEOUT_S 10

static pthread_mutex_t dpc_lock = PTHREAD_MUTEX_INITIALIZER;
static int dpc_fd = -1;
static pid_t dpc_pid;
static uint32_t dpc_seq;
static uint8_t dpc_sbuf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
static uint8_t dpc_rbuf[DP_PROTO_MAX_PAYLOAD];

void dpc_atfork_child(void)
{
	/* The parent's connection belongs to the parent (a reply meant for it could arrive
	 * here); the child opens its own. The lock may have been held by another thread. */
	pthread_mutex_init(&dpc_lock, NULL);
	if (dpc_fd >= 0)
		real_close(dpc_fd);
	dpc_fd = -1;
}

static void dpc_disconnect(void)
{
	if (dpc_fd >= 0)
		real_close(dpc_fd);
	dpc_fd = -1;
}

static int dpc_connect(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = DPC_TIMEOUT_S};
	int fd;

	if (dpc_fd >= 0 && dpc_pid == getpid())
		return 0;
	if (dpc_fd >= 0 && dpc_pid != getpid()) {
		/* fork without the atfork handler (raw clone): leave the parent's fd alone */
		dpc_fd = -1;
	}
	if (!shim_env.have_session)
		return -ENOTCONN;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", shim_env.socket);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (real_connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;

		real_close(fd);
		return -e;
	}
	dpc_fd = fd;
	dpc_pid = getpid();
	return 0;
}

static int dpc_send_all(const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = real_send(dpc_fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EPIPE;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int dpc_recv_all(void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = real_recv(dpc_fd, b, n, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		if (r == 0)
			return -ECONNRESET;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Sends the frame in dpc_sbuf (len bytes); with a reply expected, reads it into dpc_rbuf.
 * Called with dpc_lock held. One reconnect: deputyd may have restarted since last time. */
static int dpc_exchange(size_t len, bool noreply, struct dp_hdr *rh)
{
	int err = 0;

	for (int attempt = 0; attempt < 2; attempt++) {
		struct dp_hdr sh;

		err = dpc_connect();
		if (err < 0)
			return err;
		memcpy(&sh, dpc_sbuf, sizeof(sh));
		sh.seq = ++dpc_seq;
		memcpy(dpc_sbuf, &sh, sizeof(sh));
		err = dpc_send_all(dpc_sbuf, len);
		if (err == 0 && noreply)
			return 0;
		if (err == 0)
			err = dpc_recv_all(rh, sizeof(*rh));
		if (err == 0)
			err = dp_hdr_check(rh);
		if (err == 0 && rh->seq != sh.seq)
			err = -EPROTO;
		if (err == 0)
			err = dpc_recv_all(dpc_rbuf, rh->len);
		if (err == 0)
			return 0;
		dpc_disconnect();
		/* Only a connection that broke before anything was read is worth retrying. */
		if (err != -EPIPE && err != -ECONNRESET)
			break;
	}
	return err;
}

static void dpc_put_session(struct dp_msg *m)
{
	dp_msg_put_str(m, DP_T_SESSION, shim_env.session);
}

static int dpc_copy(char *dst, size_t cap, const uint8_t *v, uint16_t n)
{
	if ((size_t)n >= cap || memchr(v, 0, n))
		return -EBADMSG;
	memcpy(dst, v, n);
	dst[n] = '\0';
	return 0;
}

static const char *dpc_strerror(int err)
{
	switch (-err) {
	case ENOTCONN:
		return "no deputy session in this process";
	case ETIMEDOUT:
		return "deputyd did not answer";
	default:
		return "deputyd unreachable";
	}
}

static int dpc_parse_decision(const struct dp_hdr *rh, struct dpc_decision *d)
{
	size_t off = 0;
	uint16_t tag, vlen;
	const uint8_t *val;
	int rc;
	bool have_verdict = false;

	if (rh->type == DP_MSG_ERROR) {
		snprintf(d->reason, sizeof(d->reason), "deputyd refused the request");
		while ((rc = dp_field_next(dpc_rbuf, rh->len, &off, &tag, &val, &vlen)) == 1)
			if (tag == DP_T_REASON)
				(void)dpc_copy(d->reason, sizeof(d->reason), val, vlen);
		return 0;
	}
	if (rh->type != DP_MSG_DECISION)
		return -EPROTO;
	while ((rc = dp_field_next(dpc_rbuf, rh->len, &off, &tag, &val, &vlen)) == 1) {
		int e = 0;

		switch (tag) {
		case DP_T_VERDICT: {
			uint64_t v;

			if (vlen != 8)
				return -EBADMSG;
			memcpy(&v, val, 8);
			if (v > DP_VERDICT_MCP_BODY)
				return -EBADMSG;
			d->verdict = (int)v;
			have_verdict = true;
			break;
		}
		case DP_T_REASON:
			e = dpc_copy(d->reason, sizeof(d->reason), val, vlen);
			break;
		case DP_T_HEADER:
			e = dpc_copy(d->header, sizeof(d->header), val, vlen);
			break;
		case DP_T_TOKEN:
			e = dpc_copy(d->token, sizeof(d->token), val, vlen);
			break;
		case DP_T_JTI:
			e = dpc_copy(d->jti, sizeof(d->jti), val, vlen);
			break;
		case DP_T_SCOPE:
			e = dpc_copy(d->scope, sizeof(d->scope), val, vlen);
			break;
		case DP_T_USER:
			e = dpc_copy(d->user, sizeof(d->user), val, vlen);
			break;
		default:
			break; /* newer deputyd: fields this shim does not use */
		}
		if (e < 0)
			return e;
	}
	if (rc < 0 || !have_verdict)
		return -EBADMSG;
	if (d->verdict == DP_VERDICT_DELEGATE && (!d->token[0] || !d->header[0])) {
		if (!d->header[0])
			strcpy(d->header, "Authorization");
		if (!d->token[0])
			return -EBADMSG;
	}
	return 0;
}

int dpc_decide(const char *scheme, const char *host, int port, const char *method,
	       const char *target, uint64_t cookie, const char *sni,
	       const struct sockaddr_storage *peer, const struct dpc_mcp *mcp,
	       struct dpc_decision *d)
{
	struct dp_msg m;
	struct dp_hdr rh;
	int err;

	memset(d, 0, offsetof(struct dpc_decision, token));
	d->token[0] = d->jti[0] = d->scope[0] = d->user[0] = '\0';
	d->verdict = DP_VERDICT_DENY;
	pthread_mutex_lock(&dpc_lock);
	dp_msg_init(&m, dpc_sbuf, sizeof(dpc_sbuf), DP_MSG_DECIDE, 0, 0);
	dpc_put_session(&m);
	dp_msg_put_str(&m, DP_T_SCHEME, scheme);
	dp_msg_put_str(&m, DP_T_HOST, host);
	dp_msg_put_u64(&m, DP_T_PORT, (uint64_t)port);
	dp_msg_put_str(&m, DP_T_METHOD, method);
	dp_msg_put_str(&m, DP_T_TARGET, target);
	if (cookie)
		dp_msg_put_u64(&m, DP_T_COOKIE, cookie);
	if (sni && *sni)
		dp_msg_put_str(&m, DP_T_SNI, sni);
	if (peer && peer->ss_family == AF_INET) {
		dp_msg_put_u64(&m, DP_T_FAMILY, AF_INET);
		dp_msg_put(&m, DP_T_ADDR, &((const struct sockaddr_in *)peer)->sin_addr, 4);
	} else if (peer && peer->ss_family == AF_INET6) {
		dp_msg_put_u64(&m, DP_T_FAMILY, AF_INET6);
		dp_msg_put(&m, DP_T_ADDR, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
	}
	if (mcp) {
		dp_msg_put_str(&m, DP_T_MCP_METHOD, mcp->method);
		if (mcp->name && *mcp->name)
			dp_msg_put_str(&m, DP_T_MCP_NAME, mcp->name);
		dp_msg_put_str(&m, DP_T_BODY_SHA256, mcp->body_sha256);
	}
	err = dp_msg_finish(&m);
	if (err == 0)
		err = dpc_exchange(m.len, false, &rh);
	if (err == 0)
		err = dpc_parse_decision(&rh, d);
	/* Asked with the call, deputyd decides; asking for it again would be a loop. */
	if (err == 0 && mcp && d->verdict == DP_VERDICT_MCP_BODY)
		err = -EBADMSG;
	if (err < 0) {
		if (err != -ENOTCONN && err != -ECONNREFUSED && err != -ENOENT &&
		    err != -ETIMEDOUT && err != -ECONNRESET && err != -EPIPE)
			dpc_disconnect(); /* a reply we could not read: resynchronise */
		d->verdict = DP_VERDICT_DENY;
		snprintf(d->reason, sizeof(d->reason), "%s", dpc_strerror(err));
		d->token[0] = '\0';
	}
	pthread_mutex_unlock(&dpc_lock);
	return err;
}

void dpc_response(const char *jti, int status)
{
	struct dp_msg m;

	pthread_mutex_lock(&dpc_lock);
	dp_msg_init(&m, dpc_sbuf, sizeof(dpc_sbuf), DP_MSG_RESPONSE, 0, DP_F_NOREPLY);
	dpc_put_session(&m);
	dp_msg_put_str(&m, DP_T_JTI, jti);
	dp_msg_put_u64(&m, DP_T_STATUS, (uint64_t)status);
	if (dp_msg_finish(&m) == 0 && dpc_exchange(m.len, true, NULL) < 0)
		shim_debug("could not report response %d to deputyd", status);
	pthread_mutex_unlock(&dpc_lock);
}

/* Waits for deputyd's answer: a refusal is rare, and the agent must not see it before it is
 * logged (a process that exits right after reading its 403 would otherwise often take the
 * report with it, deputyd finding no such process to attribute it to). */
void dpc_deny_report(const char *reason, const char *host, const char *method, const char *target)
{
	struct dp_msg m;
	struct dp_hdr rh;

	pthread_mutex_lock(&dpc_lock);
	dp_msg_init(&m, dpc_sbuf, sizeof(dpc_sbuf), DP_MSG_DENY_REPORT, 0, 0);
	dpc_put_session(&m);
	dp_msg_put_str(&m, DP_T_REASON, reason);
	if (host && *host)
		dp_msg_put_str(&m, DP_T_HOST, host);
	if (method && *method)
		dp_msg_put_str(&m, DP_T_METHOD, method);
	if (target && *target)
		dp_msg_put_str(&m, DP_T_TARGET, target);
	if (dp_msg_finish(&m) != 0 || dpc_exchange(m.len, false, &rh) < 0 || rh.type != DP_MSG_OK)
		shim_debug("could not report a refusal to deputyd");
	pthread_mutex_unlock(&dpc_lock);
}
