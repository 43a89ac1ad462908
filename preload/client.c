// SPDX-License-Identifier: MIT
/*
 * client: frames requests with the allocation-free helpers of proto.h into static buffers
 * (guarded by the client mutex) and talks to deputyd with the real libc functions.
 *
 * Reports (responses, uses of table tokens) wait in one buffer of NOREPLY frames and leave
 * with the next request to deputyd, in the same send (so one request costs one send and
 * one receive), or when DPC_BATCH of them are waiting, or DPC_IDLE_MS after the first one
 * (a flusher thread, started when reports wait and gone after a quiet second: an agent
 * that stops sending still gets its requests logged), at a mediated connection's close,
 * before fork and at exit. The pid is cached (fork children reset it in the atfork
 * handler): no getpid per request.
 */
#include "client.h"

#include "deputy/proto.h"
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DPC_TIMEOUT_S 10
#define DPC_BATCH 32	   /* reports that make a flush */
#define DPC_IDLE_MS 100	   /* the longest a report waits while the agent sends nothing */
#define DPC_LINGER_MS 1000 /* the flusher's quiet time before it ends */
#define DPC_PEND_CAP (2 * (DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD))

static pthread_mutex_t dpc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dpc_cond = PTHREAD_COND_INITIALIZER;
static int dpc_fd = -1;
static pid_t dpc_pid, dpc_self;
static unsigned dpc_serial; /* connections made: a table is only good on its own */
static uint32_t dpc_seq;
static uint8_t dpc_sbuf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
static uint8_t dpc_rframe[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
#define dpc_rbuf (dpc_rframe + DP_PROTO_HDR_LEN)
static int dpc_rfd = -1; /* a descriptor that came with the last reply */

/* Reports waiting to be sent: whole NOREPLY frames, the last maybe an open USES frame. */
static uint8_t dpc_pend[DPC_PEND_CAP];
static size_t dpc_pend_len;
/* The open USES frame, apart so that responses queued between uses do not split it. */
static uint8_t dpc_ubuf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
static size_t dpc_ulen;
static int dpc_uses_n, dpc_pend_n;
static struct timespec dpc_pend_since;
static bool dpc_flusher;

static pid_t dpc_getpid(void)
{
	pid_t p = __atomic_load_n(&dpc_self, __ATOMIC_RELAXED);

	if (p == 0) {
		p = getpid();
		__atomic_store_n(&dpc_self, p, __ATOMIC_RELAXED);
	}
	return p;
}

/* Before fork: what waits is the parent's to send (the child would send it twice), and no
 * other thread may be half-way through a frame the child would inherit. */
void dpc_atfork_prepare(void)
{
	pthread_mutex_lock(&dpc_lock);
	dpc_flush_locked();
}

void dpc_atfork_parent(void)
{
	pthread_mutex_unlock(&dpc_lock);
}

void dpc_atfork_child(void)
{
	/* The parent's connection belongs to the parent (a reply meant for it could arrive
	 * here); the child opens its own. Its flusher thread did not come along. */
	pthread_mutex_init(&dpc_lock, NULL);
	pthread_cond_init(&dpc_cond, NULL);
	if (dpc_fd >= 0)
		real_close(dpc_fd);
	dpc_fd = -1;
	dpc_self = getpid();
	dpc_pend_len = dpc_ulen = 0;
	dpc_pend_n = dpc_uses_n = 0;
	dpc_flusher = false;
}

unsigned dpc_connection(void)
{
	return __atomic_load_n(&dpc_serial, __ATOMIC_ACQUIRE);
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

	if (dpc_fd >= 0 && dpc_pid == dpc_getpid())
		return 0;
	if (dpc_fd >= 0) {
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
	dpc_pid = dpc_getpid();
	__atomic_add_fetch(&dpc_serial, 1, __ATOMIC_RELEASE);
	return 0;
}

/* The waiting reports (if any) and the frame p[0..n), in one sendmsg when the socket takes
 * them. The reports are gone from the buffer once sent. */
static int dpc_send_all(const void *p, size_t n)
{
	struct iovec iov[3] = {{dpc_ubuf, dpc_ulen}, {dpc_pend, dpc_pend_len}, {(void *)p, n}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 3};

	dpc_pend_len = dpc_ulen = 0;
	dpc_pend_n = dpc_uses_n = 0;
	while (mh.msg_iovlen) {
		ssize_t w = real_sendmsg(dpc_fd, &mh, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 || (w == 0 && iov[0].iov_len + iov[1].iov_len + iov[2].iov_len))
			return w < 0 ? -errno : -EPIPE;
		while (mh.msg_iovlen && (size_t)w >= mh.msg_iov->iov_len) {
			w -= (ssize_t)mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + w;
			mh.msg_iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* A descriptor deputyd sent along (SCM_RIGHTS) is kept in dpc_rfd for the caller. */
static ssize_t dpc_recv_some(void *b, size_t n)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {b, n};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
	ssize_t r = real_recvmsg(dpc_fd, &mh, MSG_CMSG_CLOEXEC);
	struct cmsghdr *cm;

	if (r <= 0)
		return r;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
		    cm->cmsg_len == CMSG_LEN(sizeof(int))) {
			if (dpc_rfd >= 0)
				real_close(dpc_rfd);
			memcpy(&dpc_rfd, CMSG_DATA(cm), sizeof(int));
		}
	return r;
}

/* One reply into dpc_rframe: usually one receive, since deputyd sends nothing but replies
 * and this connection has one request at a time (the lock), so reading ahead of the header
 * cannot take bytes of another frame. */
static int dpc_recv_reply(struct dp_hdr *rh)
{
	size_t got = 0, want = sizeof(dpc_rframe);

	while (got < want) {
		ssize_t r = dpc_recv_some(dpc_rframe + got, want - got);
		int err;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		if (r == 0)
			return -ECONNRESET;
		got += (size_t)r;
		if (got >= DP_PROTO_HDR_LEN && want == sizeof(dpc_rframe)) {
			memcpy(rh, dpc_rframe, sizeof(*rh));
			if ((err = dp_hdr_check(rh)))
				return err;
			want = DP_PROTO_HDR_LEN + rh->len;
			if (got > want)
				return -EPROTO; /* bytes of no request: resynchronise */
		}
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
			err = dpc_recv_reply(rh);
		if (err == 0 && rh->seq != sh.seq)
			err = -EPROTO;
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
	/* One case per text field, alike on purpose: a table of offsets would hide which
	 * field lands where. */
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
		case DP_T_GEN:
			d->table_hint = true;
			break;
		case DP_T_MCP_RULE:
			d->mcp_filter = true;
			if (vlen > 1 && d->mcp_rules_len + vlen < sizeof(d->mcp_rules) &&
			    dpc_copy(d->mcp_rules + d->mcp_rules_len, vlen + 1u, val, vlen) == 0)
				d->mcp_rules_len += vlen + 1u;
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

/* ---- reports --------------------------------------------------------------------------- */

/* Sends what waits, alone (called with dpc_lock held). */
void dpc_flush_locked(void)
{
	int err;

	if (dpc_pend_len + dpc_ulen == 0)
		return;
	err = dpc_connect();
	if (err == 0)
		err = dpc_send_all(NULL, 0);
	if (err < 0) {
		dpc_disconnect();
		shim_debug("could not send %d reports to deputyd", dpc_pend_n);
	}
	dpc_pend_len = dpc_ulen = 0;
	dpc_pend_n = dpc_uses_n = 0;
}

void dpc_flush(void)
{
	if (__atomic_load_n(&dpc_pend_n, __ATOMIC_RELAXED) == 0)
		return;
	pthread_mutex_lock(&dpc_lock);
	dpc_flush_locked();
	pthread_mutex_unlock(&dpc_lock);
}

static int64_t dpc_ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

static void dpc_wait_ms(int ms)
{
	struct timespec until;

	/* The condition variable measures against CLOCK_REALTIME (its default, and the static
	 * initializer cannot choose another): a CLOCK_MONOTONIC deadline is long past on that
	 * clock, the wait returned at once and the flusher ended and was started again for
	 * nearly every request. A clock step only moves one flush. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&dpc_cond, &dpc_lock, &until);
}

static void *dpc_flusher_main(void *arg)
{
	(void)arg;
	shim_guard++;
	pthread_mutex_lock(&dpc_lock);
	for (;;) {
		int64_t waited;

		if (dpc_pend_n == 0) {
			dpc_wait_ms(DPC_LINGER_MS);
			if (dpc_pend_n == 0)
				break;
			continue;
		}
		waited = dpc_ms_since(&dpc_pend_since);
		if (waited < DPC_IDLE_MS) {
			dpc_wait_ms((int)(DPC_IDLE_MS - waited));
			continue;
		}
		dpc_flush_locked();
	}
	dpc_flusher = false;
	pthread_mutex_unlock(&dpc_lock);
	return NULL;
}

/* Called with dpc_lock held, after a report was added. */
static void dpc_reported(void)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;

	if (++dpc_pend_n == 1)
		clock_gettime(CLOCK_MONOTONIC, &dpc_pend_since);
	if (dpc_pend_n >= DPC_BATCH) {
		dpc_flush_locked();
		return;
	}
	if (dpc_flusher)
		return;
	/* The agent's signals are not the flusher's business: it blocks them all. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 65536);
	dpc_flusher = pthread_create(&t, &attr, dpc_flusher_main, NULL) == 0;
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!dpc_flusher)
		dpc_flush_locked(); /* no thread: no batching either */
}

/* Room for n more bytes of reports, flushing first if need be. */
static bool dpc_pend_room(size_t n)
{
	if (dpc_pend_len + n > sizeof(dpc_pend))
		dpc_flush_locked();
	return dpc_pend_len + n <= sizeof(dpc_pend);
}

void dpc_response(const char *jti, int status)
{
	struct dp_msg m;

	pthread_mutex_lock(&dpc_lock);
	dp_msg_init(&m, dpc_sbuf, sizeof(dpc_sbuf), DP_MSG_RESPONSE, ++dpc_seq, DP_F_NOREPLY);
	dpc_put_session(&m);
	dp_msg_put_str(&m, DP_T_JTI, jti);
	dp_msg_put_u64(&m, DP_T_STATUS, (uint64_t)status);
	if (dp_msg_finish(&m) == 0 && dpc_pend_room(m.len)) {
		memcpy(dpc_pend + dpc_pend_len, dpc_sbuf, m.len);
		dpc_pend_len += m.len;
		dpc_reported();
	}
	pthread_mutex_unlock(&dpc_lock);
}

void dpc_use(const char *scheme, const char *jti, const char *method, const char *host, int port,
	     const char *target, uint64_t cookie, bool now)
{
	static uint8_t use[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD]; /* under dpc_lock */
	struct dp_msg u, m;
	uint16_t tag = DP_T_USE, ulen;
	uint32_t plen;

	pthread_mutex_lock(&dpc_lock);
	/* The USE's own field list, after a header that is not sent. */
	dp_msg_init(&u, use, sizeof(use), 0, 0, 0);
	dp_use_put(&u, scheme, jti, method, host, port, target);
	if (cookie)
		dp_msg_put_u64(&u, DP_T_COOKIE, cookie);
	if (u.err || u.len - DP_PROTO_HDR_LEN > 0xffff)
		goto out;
	ulen = (uint16_t)(u.len - DP_PROTO_HDR_LEN);
	if (dpc_ulen && (dpc_uses_n == DP_USES_MAX || dpc_ulen + 4 + ulen > sizeof(dpc_ubuf))) {
		/* Full: it waits with the other reports, the next use opens another. */
		if (!dpc_pend_room(dpc_ulen))
			goto out;
		memcpy(dpc_pend + dpc_pend_len, dpc_ubuf, dpc_ulen);
		dpc_pend_len += dpc_ulen;
		dpc_ulen = 0;
		dpc_uses_n = 0;
	}
	if (dpc_ulen == 0) {
		dp_msg_init(&m, dpc_ubuf, sizeof(dpc_ubuf), DP_MSG_USES, ++dpc_seq, DP_F_NOREPLY);
		dpc_put_session(&m);
		if (dp_msg_finish(&m) != 0 || m.len + 4 + ulen > sizeof(dpc_ubuf))
			goto out;
		dpc_ulen = m.len;
	}
	/* Appended in place (tag | length | value), the frame's length updated. */
	memcpy(dpc_ubuf + dpc_ulen, &tag, 2);
	memcpy(dpc_ubuf + dpc_ulen + 2, &ulen, 2);
	memcpy(dpc_ubuf + dpc_ulen + 4, use + DP_PROTO_HDR_LEN, ulen);
	dpc_ulen += 4 + (size_t)ulen;
	plen = (uint32_t)(dpc_ulen - DP_PROTO_HDR_LEN);
	memcpy(dpc_ubuf, &plen, sizeof(plen));
	dpc_uses_n++;
	dpc_reported();
	if (now)
		dpc_flush_locked();
out:
	pthread_mutex_unlock(&dpc_lock);
}

__attribute__((destructor)) static void dpc_fini(void)
{
	dpc_flush();
}

/* ---- the session table --------------------------------------------------------------- */

int dpc_table_get(uint8_t *out, size_t cap, size_t *len, int *page_fd, unsigned *conn)
{
	struct dp_msg m;
	struct dp_hdr rh;
	int err;

	*page_fd = -1;
	pthread_mutex_lock(&dpc_lock);
	dp_msg_init(&m, dpc_sbuf, sizeof(dpc_sbuf), DP_MSG_TABLE_GET, 0, 0);
	dpc_put_session(&m);
	err = dp_msg_finish(&m);
	if (err == 0)
		err = dpc_exchange(m.len, false, &rh);
	if (err == 0 && (rh.type != DP_MSG_TABLE || rh.len > cap))
		err = rh.type == DP_MSG_ERROR ? -EOPNOTSUPP : -EPROTO;
	if (err == 0) {
		memcpy(out, dpc_rbuf, rh.len);
		*len = rh.len;
		*page_fd = dpc_rfd;
		dpc_rfd = -1;
	}
	if (dpc_rfd >= 0)
		real_close(dpc_rfd);
	dpc_rfd = -1;
	*conn = dpc_serial;
	pthread_mutex_unlock(&dpc_lock);
	return err;
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
