/* SPDX-License-Identifier: MIT */
/*
 * conn: deputyd's connections on its Unix socket: accepting, framing, replies, closing.
 * The handlers see a connection as who is at the other end (pid, uid, pidfd) and which
 * session it proved it belongs to.
 */
#ifndef DEPUTY_CONN_H
#define DEPUTY_CONN_H

#include <deputy/proto.h>
#include <stdbool.h>
#include <sys/types.h>

#include "deputyd.h"

struct conn {
	struct conn *next;
	int fd;
	int pidfd;
	pid_t pid;
	uid_t uid;
	char home[DP_ID_LEN];  /* the session the peer was in when it connected, or "" */
	struct session *bound; /* the session this peer proved it belongs to */
	char comm[17];	       /* the peer's name, read once when it is bound */
	struct session *controls;
	uint8_t rbuf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	size_t rlen;
	int64_t partial_since;
	uint8_t *wbuf;
	size_t wlen, wcap;
	bool want_out; /* EPOLLOUT is armed: a reply is waiting for room */
	bool orphaned; /* the peer exited: only its NOREPLY reports are still taken */
	bool dead;
};

/* epoll data of the loop's own fds; anything else is a struct conn pointer. The listening
 * socket's is here because conn pauses and resumes it. */
enum { EP_LISTEN = 1, EP_SIGNAL, EP_TIMER, EP_KERNEL, EP_PROXY };

/* What to do with one complete frame: the dispatcher (dispatch.h). */
typedef void (*conn_frame_fn)(struct deputyd *d, struct conn *c, const struct dp_hdr *h,
			      const uint8_t *payload);

void conn_accept(struct deputyd *d);
/* Out of fds: stop (or resume) accepting until a connection goes. */
void conn_accept_pause(struct deputyd *d, bool pause);
void conn_readable(struct deputyd *d, struct conn *c, conn_frame_fn on_frame);
/* The peer read: send what waits, then the frames held back meanwhile. */
void conn_writable(struct deputyd *d, struct conn *c, conn_frame_fn on_frame);
/* Closes the connections marked dead and those stuck mid-frame. */
void conn_reap(struct deputyd *d);
void conn_close_all(struct deputyd *d);
/* A session was freed (registered with session_on_gone): forget it everywhere. */
void conn_session_gone(struct deputyd *d, struct session *s);

/* Replies. A reply that cannot be sent or queued marks the connection dead. */
void conn_send(struct deputyd *d, struct conn *c, struct dp_msg *m);
/* The same, passing fd along (SCM_RIGHTS) when the reply leaves at once; when it must be
 * queued, without it (the receiver then goes on without what the fd was for). */
void conn_send_fd(struct deputyd *d, struct conn *c, struct dp_msg *m, int fd);
void conn_reply_error(struct deputyd *d, struct conn *c, uint32_t seq, const char *reason);
void conn_reply_ok(struct deputyd *d, struct conn *c, uint32_t seq);

#endif
