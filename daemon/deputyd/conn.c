// SPDX-License-Identifier: MIT
/*
 * conn: deputyd's connections. Every one is non-blocking with its own read and write
 * buffers, so one slow, silent or garbage-sending peer never stalls others; a malformed
 * frame closes that connection with a logged reason, and a frame left half-sent for
 * CONN_PARTIAL_TIMEOUT seconds does too. What a frame means is dispatch.c's business.
 */
#include "conn.h"

#include "peer.h"
#include "proc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define CONN_PARTIAL_TIMEOUT 10
#define CONN_MAX_WBUF (4u << 20)
/* Connections one session may hold, and one non-root uid outside every session: the shim
 * keeps one per process of a session. Each costs deputyd two fds and a frame buffer, so
 * without a bound one agent could take them all; counted per session, one session's flood
 * does not lock out the other sessions of its uid. Root outside sessions is not bounded: it
 * can stop deputyd anyway. */
#define CONNS_PER_SESSION 512
#define CONNS_PER_UID 512

static struct conn *conns;
static bool accept_paused; /* out of fds: the listening socket waits for one to be freed */

/* ---- replies ------------------------------------------------------------------------ */

static void conn_flush(struct deputyd *d, struct conn *c)
{
	while (c->wlen > 0) {
		ssize_t w = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				/* No more requests until the peer reads: what it has not read is
				 * all deputyd ever buffers for it. */
				struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};

				if (!c->want_out)
					epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
				c->want_out = true;
				return;
			}
			c->dead = true;
			return;
		}
		memmove(c->wbuf, c->wbuf + w, c->wlen - (size_t)w);
		c->wlen -= (size_t)w;
	}
	/* The common case (the reply fit) costs no epoll_ctl: only undo an armed EPOLLOUT. */
	if (c->want_out) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

		epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = false;
	}
}

/* Queues what the socket did not take of a reply and sends what it can. */
static void conn_queue(struct deputyd *d, struct conn *c, const uint8_t *p, size_t n)
{
	if (c->wlen + n > CONN_MAX_WBUF) {
		pr_warn("client pid %d does not read its replies; closing", (int)c->pid);
		c->dead = true;
		return;
	}
	if (c->wlen + n > c->wcap) {
		size_t cap = c->wcap ? c->wcap : 4096;
		uint8_t *nb;

		while (cap < c->wlen + n)
			cap *= 2;
		nb = realloc(c->wbuf, cap);
		if (!nb) {
			c->dead = true;
			return;
		}
		c->wbuf = nb;
		c->wcap = cap;
	}
	memcpy(c->wbuf + c->wlen, p, n);
	c->wlen += n;
	conn_flush(d, c);
}

/* Nothing queued: try to send straight from the caller's buffer, no copy; with fd >= 0
 * the descriptor rides on the first byte (SCM_RIGHTS), or is not sent at all when the
 * socket takes nothing right now. */
static void conn_send_direct(struct deputyd *d, struct conn *c, struct dp_msg *m, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {m->buf, m->len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	size_t off = 0;
	ssize_t w;

	if (fd >= 0 && c->wlen == 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
		CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
		CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &fd, sizeof(int));
	}
	if (c->wlen == 0) {
		do
			w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (w < 0 && errno == EINTR);
		if (w == (ssize_t)m->len)
			return;
		if (w < 0 && errno != EAGAIN) {
			c->dead = true;
			return;
		}
		if (w > 0)
			off = (size_t)w;
	}
	conn_queue(d, c, m->buf + off, m->len - off);
}

void conn_send(struct deputyd *d, struct conn *c, struct dp_msg *m)
{
	conn_send_fd(d, c, m, -1);
}

void conn_send_fd(struct deputyd *d, struct conn *c, struct dp_msg *m, int fd)
{
	if (dp_msg_finish(m) != 0) {
		pr_warn("reply to pid %d too large; closing", (int)c->pid);
		c->dead = true;
		return;
	}
	conn_send_direct(d, c, m, fd);
}

void conn_reply_error(struct deputyd *d, struct conn *c, uint32_t seq, const char *reason)
{
	uint8_t buf[1024];
	struct dp_msg m;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_ERROR, seq, 0);
	dp_msg_put(&m, DP_T_REASON, reason, strnlen(reason, sizeof(buf) - 64));
	conn_send(d, c, &m);
}

void conn_reply_ok(struct deputyd *d, struct conn *c, uint32_t seq)
{
	uint8_t buf[DP_PROTO_HDR_LEN];
	struct dp_msg m;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_OK, seq, 0);
	conn_send(d, c, &m);
}

/* ---- connections ------------------------------------------------------------------- */

void conn_accept_pause(struct deputyd *d, bool pause)
{
	struct epoll_event ev = {.events = pause ? 0 : EPOLLIN, .data.u64 = EP_LISTEN};

	if (accept_paused != pause && epoll_ctl(d->epfd, EPOLL_CTL_MOD, d->listen_fd, &ev) == 0)
		accept_paused = pause;
}

/* Whether a new connection of this uid, from a process of session home ("" for none), is
 * over its limit. */
static bool conn_over_limit(uid_t uid, const char *home)
{
	size_t n = 0;

	if (!home[0] && uid == 0)
		return false;
	for (struct conn *c = conns; c; c = c->next)
		n += home[0] ? strcmp(c->home, home) == 0 : !c->home[0] && c->uid == uid;
	return n >= (home[0] ? CONNS_PER_SESSION : CONNS_PER_UID);
}

/* Whether c may stay: its process is pinned and placed, and it is within its limit. */
static bool conn_admit(struct deputyd *d, struct conn *c)
{
	static int64_t last_warn;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

	int rc;

	/* Without a pidfd the peer checks could be fooled by a reused pid. */
	if (c->pidfd < 0)
		return false;
	/* Out of fds /proc cannot be read: counted as outside sessions then, which only
	 * matters for the limit (every request that needs to know reads /proc again). */
	rc = peer_home(d, c->pid, c->pidfd, c->home);
	if (rc && rc != -EMFILE && rc != -ENFILE)
		return false;
	if (conn_over_limit(c->uid, c->home)) {
		if (dp_now() != last_warn) {
			if (c->home[0])
				pr_warn("session %s holds %d connections; refusing more", c->home,
					CONNS_PER_SESSION);
			else
				pr_warn(
				    "uid %u holds %d connections outside sessions; refusing more",
				    (unsigned)c->uid, CONNS_PER_UID);
		}
		last_warn = dp_now();
		return false;
	}
	return epoll_ctl(d->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0;
}

void conn_accept(struct deputyd *d)
{
	static int64_t last_warn;

	for (;;) {
		int fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct conn *c;
		int one = 1;

		if (fd < 0) {
			/* Out of fds the socket stays readable: wait for a client to go (or the
			 * next tick) instead of spinning on accept. */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				if (dp_now() != last_warn)
					pr_warn("accept: %s; waiting", strerror(errno));
				last_warn = dp_now();
				conn_accept_pause(d, true);
			} else if (errno != EAGAIN && errno != EINTR) {
				pr_warn("accept: %s", strerror(errno));
			}
			return;
		}
		/* SO_PASSCRED: every recvmsg says which process sent the bytes (conn_readable). */
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
		    setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
			pr_warn("SO_PEERCRED: %s", strerror(errno));
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->pid = cred.pid;
		c->uid = cred.uid;
		len = sizeof(c->pidfd);
		/* SO_PEERPIDFD (Linux 6.5) pins the exact process that connected; older kernels
		 * get pidfd_open, which is racy only if that process already exited. */
		if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &c->pidfd, &len) < 0)
			c->pidfd = proc_pidfd(cred.pid);
		if (!conn_admit(d, c)) {
			if (c->pidfd >= 0)
				close(c->pidfd);
			close(fd);
			free(c);
			continue;
		}
		c->next = conns;
		conns = c;
	}
}

static void conn_close(struct deputyd *d, struct conn *c)
{
	struct conn **pp;

	for (pp = &conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	if (c->controls) {
		c->controls->control = NULL;
		/* deputy run went away without a close: the session ends with it. */
		if (c->controls->state == SESSION_OPEN)
			session_request_close(d, c->controls, -1);
	}
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->pidfd >= 0)
		close(c->pidfd);
	free(c->wbuf);
	free(c);
	if (!d->stopping)
		conn_accept_pause(d, false);
}

void conn_session_gone(struct deputyd *d, struct session *s)
{
	for (struct conn *c = conns; c; c = c->next) {
		if (c->bound == s)
			c->bound = NULL, c->dead = true;
		if (c->controls == s)
			c->controls = NULL;
	}
}

/* Dispatches the complete frames buffered for c, in order. A reply the peer has not read
 * stops it (main's back-pressure rule: deputyd buffers no more than one unread reply's
 * worth); the rest waits until conn_flush has sent everything. */
static void conn_process(struct deputyd *d, struct conn *c, conn_frame_fn on_frame)
{
	size_t off = 0;

	while (!c->dead && c->wlen == 0 && c->rlen - off >= DP_PROTO_HDR_LEN) {
		struct dp_hdr h;
		int err;

		memcpy(&h, c->rbuf + off, sizeof(h));
		err = dp_hdr_check(&h);
		if (err) {
			pr_warn("client pid %d: %s; closing", (int)c->pid,
				err == -EPROTO ? "unsupported protocol version"
					       : "message over the size limit");
			c->dead = true;
			return;
		}
		if (c->rlen - off - DP_PROTO_HDR_LEN < h.len)
			break;
		on_frame(d, c, &h, c->rbuf + off + DP_PROTO_HDR_LEN);
		off += DP_PROTO_HDR_LEN + h.len;
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
		c->partial_since = dp_now();
	}
}

/* One recvmsg, and whether the bytes came from the process that connected. With SO_PASSCRED
 * the kernel never returns bytes of two writers in one read, and names the writer: a
 * connection copied into another process (pidfd_getfd, SCM_RIGHTS, an inherited fd) must
 * not carry that process's requests under the first one's checks, so it is closed. */
static ssize_t conn_recv(struct conn *c, size_t room)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} ctl;
	struct iovec iov = {c->rbuf + c->rlen, room};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
	struct cmsghdr *cm;
	struct ucred who = {0};
	ssize_t r = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);

	if (r <= 0)
		return r;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
		    cm->cmsg_len == CMSG_LEN(sizeof(who)))
			memcpy(&who, CMSG_DATA(cm), sizeof(who));
	if (who.pid != c->pid || who.uid != c->uid) {
		pr_warn("pid %d (uid %u) sent on pid %d's connection; closing", (int)who.pid,
			(unsigned)who.uid, (int)c->pid);
		c->dead = true;
		errno = EPERM;
		return -1;
	}
	/* Same pid while the pinned process lives: the same process (see peer.c). Once it has
	 * exited, bytes with its pid are mostly its last reports, sent just before exit, but
	 * could come from a later process given the same pid: only reports, which answer
	 * nothing and mint nothing, are taken from then on (dispatch.c). */
	if (!proc_alive(c->pidfd))
		c->orphaned = true;
	return r;
}

/* Reads what the socket holds (up to one maximal frame) and dispatches every complete frame
 * in it: one recv per request in the common case, not one per header and payload. */
void conn_readable(struct deputyd *d, struct conn *c, conn_frame_fn on_frame)
{
	for (int rounds = 0; rounds < 64 && !c->dead && c->wlen == 0; rounds++) {
		size_t room = sizeof(c->rbuf) - c->rlen;
		ssize_t r;

		if (room == 0)
			return; /* a full buffer is a whole frame, waiting for its reply's room */
		r = conn_recv(c, room);
		if (r == 0) {
			if (c->rlen)
				pr_warn("client pid %d: closed mid-message", (int)c->pid);
			c->dead = true;
			return;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				c->dead = true;
			return;
		}
		if (c->rlen == 0)
			c->partial_since = dp_now();
		c->rlen += (size_t)r;
		conn_process(d, c, on_frame);
		/* Level-triggered epoll reports what is left; no recv just to see EAGAIN. */
		if ((size_t)r < room)
			return;
	}
}

void conn_reap(struct deputyd *d)
{
	int64_t now = dp_now();
	struct conn *c = conns, *next;

	for (; c; c = next) {
		next = c->next;
		/* Frames held back while the peer does not read its replies are not incomplete. */
		if (!c->dead && c->rlen > 0 && c->wlen == 0 &&
		    now - c->partial_since > CONN_PARTIAL_TIMEOUT) {
			pr_warn("client pid %d: message incomplete for %ds; closing", (int)c->pid,
				CONN_PARTIAL_TIMEOUT);
			c->dead = true;
		}
		if (c->dead)
			conn_close(d, c);
	}
}

void conn_writable(struct deputyd *d, struct conn *c, conn_frame_fn on_frame)
{
	conn_flush(d, c);
	conn_process(d, c, on_frame);
}

void conn_close_all(struct deputyd *d)
{
	while (conns)
		conn_close(d, conns);
}
