// SPDX-License-Identifier: MIT
/* chan: the proxy <-> deputyd socketpair (see chan.h). */
#include "chan.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

static int chan_fd = -1;
static pthread_mutex_t chan_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t chan_seq;

void chan_init(int fd)
{
	/* deputyd answers in microseconds; a minute of silence means it is stuck or gone. */
	struct timeval tv = {60, 0};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	chan_fd = fd;
}

static void chan_lost(const char *what)
{
	pr_warn("deputyd channel: %s: %s; exiting", what, strerror(errno));
	_exit(2);
}

static void chan_send_locked(struct dp_msg *m, int pass_fd)
{
	union dp_fd_cmsg cbuf;
	struct iovec iov = {m->buf, m->len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t w;

	memcpy(m->buf + 8, &chan_seq, sizeof(chan_seq));
	chan_seq++;
	if (pass_fd >= 0)
		dp_msghdr_fd(&mh, &cbuf, pass_fd);
	do
		w = sendmsg(chan_fd, &mh, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)m->len)
		chan_lost("send");
}

/* A descriptor deputyd sent along goes to *rfd, or is closed when the caller wants none. */
static ssize_t chan_recv(struct chan_reply *rep, int *rfd)
{
	union dp_fd_cmsg ctl;
	struct iovec iov = {rep, sizeof(*rep)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl)};
	ssize_t r;

	do
		r = recvmsg(chan_fd, &mh, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); r > 0 && c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int))) {
			int fd;

			memcpy(&fd, CMSG_DATA(c), sizeof(int));
			if (rfd && *rfd < 0)
				*rfd = fd;
			else
				close(fd);
		}
	return r;
}

int chan_call(struct dp_msg *m, int pass_fd, struct chan_reply *rep)
{
	return chan_call_fd(m, pass_fd, rep, NULL);
}

int chan_call_fd(struct dp_msg *m, int pass_fd, struct chan_reply *rep, int *rfd)
{
	uint32_t seq;
	ssize_t r;

	if (rfd)
		*rfd = -1;
	if (dp_msg_finish(m) != 0)
		return -EMSGSIZE;
	pthread_mutex_lock(&chan_mu);
	seq = chan_seq;
	chan_send_locked(m, pass_fd);
	r = chan_recv(rep, rfd);
	if (r < (ssize_t)DP_PROTO_HDR_LEN)
		chan_lost(r == 0 ? "closed" : "receive");
	if (dp_hdr_check(&rep->h) != 0 || rep->h.len != (size_t)r - DP_PROTO_HDR_LEN ||
	    rep->h.seq != seq) {
		errno = EPROTO;
		chan_lost("malformed reply");
	}
	pthread_mutex_unlock(&chan_mu);
	return 0;
}

void chan_tell(struct dp_msg *m)
{
	if (dp_msg_finish(m) != 0)
		return;
	pthread_mutex_lock(&chan_mu);
	chan_send_locked(m, -1);
	pthread_mutex_unlock(&chan_mu);
}

const uint8_t *chan_field(const struct chan_reply *rep, uint16_t tag, uint16_t *len)
{
	size_t off = 0;
	uint16_t t;
	const uint8_t *v;

	while (dp_field_next(rep->payload, rep->h.len, &off, &t, &v, len) == 1)
		if (t == tag)
			return v;
	return NULL;
}

int chan_str(const struct chan_reply *rep, uint16_t tag, char *out, size_t outsz)
{
	uint16_t n;
	const uint8_t *v = chan_field(rep, tag, &n);

	if (!v || outsz == 0)
		return -ENOENT;
	if (n >= outsz)
		n = (uint16_t)(outsz - 1);
	memcpy(out, v, n);
	out[n] = '\0';
	return 0;
}

uint64_t chan_u64(const struct chan_reply *rep, uint16_t tag)
{
	uint16_t n;
	const uint8_t *v = chan_field(rep, tag, &n);
	uint64_t x = 0;

	if (v && n == 8)
		memcpy(&x, v, 8);
	return x;
}
