// SPDX-License-Identifier: MIT
/*
 * conn: deputyd's connections. Every one is non-blocking with its own read and write
 * buffers, so one slow, silent or garbage-sending peer never stalls others; a malformed
 * frame closes that connection with a logged reason, and a frame left half-sent for
 * CONN_PARTIAL_TIMEOUT seconds does too. What a frame means is dispatch.c's business.
 *
 * Replies are held until the end of the loop's turn (conn_send_held): the session logs are
 * written first, one write per log for the whole turn, so no reply leaves before the
 * records it depends on are in the file (audit_log.h).
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

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76 /* Linux 6.5; Debian 12's headers predate it */
#define SCM_PIDFD 0x04
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define CONN_PARTIAL_TIMEOUT 10
#define CONN_MAX_WBUF (4u << 20)
/* Frames are taken from a peer while its held replies are under one maximal frame: what
 * deputyd buffers for a peer stays about one unread reply's worth. */
#define CONN_HOLD_MAX (DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD)
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

/* The peer has not read what was sent, enough is held for it, or its frame waits for an
 * issuer's keys: no more of its frames. */
static bool conn_blocked(const struct conn *c)
{
	return c->waiting || c->want_out || c->wlen >= CONN_HOLD_MAX;
}

/* Appends to what waits for the peer; false (and the connection dead) when it cannot. */
static bool conn_append(struct conn *c, const uint8_t *p, size_t n)
{
	if (c->wlen + n > CONN_MAX_WBUF) {
		pr_warn("client pid %d does not read its replies; closing", (int)c->pid);
		c->dead = true;
		return false;
	}
	if (c->wlen + n > c->wcap) {
		size_t cap = c->wcap ? c->wcap : 4096;
		uint8_t *nb;

		while (cap < c->wlen + n)
			cap *= 2;
		nb = realloc(c->wbuf, cap);
		if (!nb) {
			c->dead = true;
			return false;
		}
		c->wbuf = nb;
		c->wcap = cap;
	}
	memcpy(c->wbuf + c->wlen, p, n);
	c->wlen += n;
	return true;
}

/* Queues what the socket did not take of a reply and sends what it can. */
static void conn_queue(struct deputyd *d, struct conn *c, const uint8_t *p, size_t n)
{
	if (conn_append(c, p, n))
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

/* A held reply may depend on a record of the session the peer is bound to (decisions,
 * reports) or controls (session_open): when that log lost records this turn, the peer
 * gets nothing and its connection closes, so the shim fails closed. */
static bool conn_lost_records(const struct conn *c)
{
	return (c->bound && audit_log_failed(c->bound->log)) ||
	       (c->controls && audit_log_failed(c->controls->log));
}

void conn_send(struct deputyd *d, struct conn *c, struct dp_msg *m)
{
	(void)d;
	if (dp_msg_finish(m) != 0) {
		pr_warn("reply to pid %d too large; closing", (int)c->pid);
		c->dead = true;
		return;
	}
	if (conn_append(c, m->buf, m->len))
		c->held = true;
}

void conn_send_fd(struct deputyd *d, struct conn *c, struct dp_msg *m, int fd)
{
	if (dp_msg_finish(m) != 0) {
		pr_warn("reply to pid %d too large; closing", (int)c->pid);
		c->dead = true;
		return;
	}
	/* The descriptor rides on its reply's first byte, so this reply is not held: what it
	 * depends on is written now, and what this peer was held so far goes before it. */
	audit_log_flush_all();
	if (conn_lost_records(c)) {
		pr_warn("client pid %d: its replies depend on records that were not written; "
			"closing",
			(int)c->pid);
		c->dead = true;
		return;
	}
	if (c->held && !c->want_out)
		conn_flush(d, c);
	conn_send_direct(d, c, m, fd);
}

static void conn_process(struct deputyd *d, struct conn *c, conn_frame_fn on_frame);

bool conn_send_held(struct deputyd *d, conn_frame_fn on_frame)
{
	bool more = false;

	for (struct conn *c = conns; c; c = c->next) {
		if (!c->held)
			continue;
		c->held = false;
		if (c->dead)
			continue;
		if (conn_lost_records(c)) {
			pr_warn(
			    "client pid %d: its replies depend on records that were not written; "
			    "closing",
			    (int)c->pid);
			c->dead = true;
			continue;
		}
		if (c->want_out)
			continue;
		conn_flush(d, c);
		/* Frames left in the buffer when the held replies reached CONN_HOLD_MAX: no new
		 * byte will wake epoll for them, so they are taken now. */
		if (!c->dead && !c->want_out && c->rlen >= DP_PROTO_HDR_LEN) {
			conn_process(d, c, on_frame);
			more |= c->held;
		}
	}
	return more;
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
		/* SO_PASSPIDFD (Linux 6.5): every recvmsg also pins its sender (conn_recv);
		 * without it the pid is all there is. */
		(void)setsockopt(fd, SOL_SOCKET, SO_PASSPIDFD, &one, sizeof(one));
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

/* Dispatches the complete frames buffered for c, in order. A reply the peer has not read,
 * or a maximal frame's worth of replies held for the end of the turn, stops it (the
 * back-pressure rule: deputyd buffers about one unread reply's worth per peer); the rest
 * waits until conn_flush or conn_send_held has sent what is held. */
static void conn_process(struct deputyd *d, struct conn *c, conn_frame_fn on_frame)
{
	size_t off = 0;

	while (!c->dead && !conn_blocked(c) && c->rlen - off >= DP_PROTO_HDR_LEN) {
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
		if (c->waiting)
			break; /* the frame stays, to be dispatched again */
		off += DP_PROTO_HDR_LEN + h.len;
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
		c->partial_since = dp_now();
	}
}

/* The sender of one recvmsg, against the process that connected, once that one has exited:
 * 1 the same, 0 another process (given its pid), -1 unknown (no pidfd came with the bytes,
 * or the kernel's pidfds cannot be compared). */
static int conn_sender_same(const struct conn *c, int sender_pidfd)
{
	int r = sender_pidfd >= 0 && c->pidfd >= 0 ? proc_same(sender_pidfd, c->pidfd) : -1;

	return r < 0 ? -1 : r;
}

/* One recvmsg, and whether the bytes came from the process that connected. With SO_PASSCRED
 * the kernel never returns bytes of two writers in one read, and names the writer: a
 * connection copied into another process (pidfd_getfd, SCM_RIGHTS, an inherited fd) must
 * not carry that process's requests under the first one's checks, so it is closed. */
static ssize_t conn_recv(struct conn *c, size_t room)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = {c->rbuf + c->rlen, room};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
	struct cmsghdr *cm;
	struct ucred who = {0};
	int sender = -1, same = -1;
	ssize_t r = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);

	if (r <= 0)
		return r;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET)
			continue;
		if (cm->cmsg_type == SCM_CREDENTIALS && cm->cmsg_len == CMSG_LEN(sizeof(who)))
			memcpy(&who, CMSG_DATA(cm), sizeof(who));
		else if (cm->cmsg_type == SCM_PIDFD && cm->cmsg_len == CMSG_LEN(sizeof(int)) &&
			 sender < 0)
			memcpy(&sender, CMSG_DATA(cm), sizeof(sender));
	}
	/* Same pid while the pinned process lives: the same process (see peer.c). Once it has
	 * exited, bytes with its pid are mostly its last reports, sent just before exit, but
	 * could come from a later process given the same pid. The sender's own pidfd tells
	 * (SO_PASSPIDFD): another process is refused like any other copier. Where the kernel
	 * cannot tell, only reports, which answer nothing and mint nothing, are taken from
	 * then on (dispatch.c). */
	if (who.pid == c->pid && who.uid == c->uid && !proc_alive(c->pidfd)) {
		c->orphaned = true;
		same = conn_sender_same(c, sender);
	}
	if (sender >= 0)
		close(sender);
	if (who.pid != c->pid || who.uid != c->uid || same == 0) {
		pr_warn("pid %d (uid %u) sent on pid %d's connection%s; closing", (int)who.pid,
			(unsigned)who.uid, (int)c->pid,
			same == 0 ? " (a new process with its pid)" : "");
		c->dead = true;
		errno = EPERM;
		return -1;
	}
	return r;
}

/* Reads what the socket holds (up to one maximal frame) and dispatches every complete frame
 * in it: one recv per request in the common case, not one per header and payload. */
void conn_readable(struct deputyd *d, struct conn *c, conn_frame_fn on_frame)
{
	/* Only a hang-up or an error is reported while a frame waits: the peer is gone. */
	if (c->waiting) {
		c->dead = true;
		return;
	}
	for (int rounds = 0; rounds < 64 && !c->dead && !conn_blocked(c); rounds++) {
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
		if (!c->dead && !c->waiting && c->rlen > 0 && !c->want_out &&
		    now - c->partial_since > CONN_PARTIAL_TIMEOUT) {
			pr_warn("client pid %d: message incomplete for %ds; closing", (int)c->pid,
				CONN_PARTIAL_TIMEOUT);
			c->dead = true;
		}
		if (c->dead)
			conn_close(d, c);
	}
}

void conn_wait(struct deputyd *d, struct conn *c)
{
	/* No EPOLLIN meanwhile: a waiting peer that sends more must not spin the loop. A
	 * hang-up is still reported, and reaped once the frame was answered. */
	struct epoll_event ev = {.events = 0, .data.ptr = c};

	c->waiting = true;
	epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

void conn_resume_waiting(struct deputyd *d, conn_frame_fn on_frame)
{
	for (struct conn *c = conns; c; c = c->next) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

		if (!c->waiting)
			continue;
		c->waiting = false;
		if (!c->want_out)
			epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		conn_process(d, c, on_frame);
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
