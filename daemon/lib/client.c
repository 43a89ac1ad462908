// SPDX-License-Identifier: MIT
/*
 * client: the deputy CLI's blocking, one-call-at-a-time side of the wire protocol. Its prefix
 * is dcli_: the shim's own client (preload/client.h) has dpc_.
 */
#include "client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

const char *dcli_socket_path(const char *opt)
{
	const char *env = getenv("DEPUTY_SOCKET");

	if (opt && *opt)
		return opt;
	return env && *env ? env : DP_DEFAULT_SOCKET;
}

int dcli_connect(struct dcli *c, const char *path, struct dp_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	c->seq = 0;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		dp_err_set(err, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		dp_err_set(err, "socket: %s", strerror(errno));
		return -errno;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		dp_err_set(err, "cannot reach deputyd at %s: %s", path, strerror(e));
		close(c->fd);
		c->fd = -1;
		return -e;
	}
	return 0;
}

void dcli_close(struct dcli *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

uint32_t dcli_next_seq(struct dcli *c)
{
	return ++c->seq;
}

static int read_full(int fd, void *buf, size_t n)
{
	ssize_t r = dp_read_upto(fd, buf, n);

	if (r < 0)
		return (int)r;
	return (size_t)r == n ? 0 : -ECONNRESET;
}

int dcli_call(struct dcli *c, struct dp_msg *m, struct dp_err *err)
{
	struct dp_hdr req;
	size_t off = 0;
	int rc = dp_msg_finish(m);

	if (rc) {
		dp_err_set(err, "request too large");
		return rc;
	}
	memcpy(&req, m->buf, sizeof(req));
	while (off < m->len) {
		ssize_t w = send(c->fd, m->buf + off, m->len - off, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			dp_err_set(err, "deputyd connection lost: %s", strerror(errno));
			return -errno;
		}
		off += (size_t)w;
	}
	rc = read_full(c->fd, &c->hdr, sizeof(c->hdr));
	if (rc == 0 && dp_hdr_check(&c->hdr) != 0)
		rc = -EPROTO;
	if (rc == 0)
		rc = read_full(c->fd, c->buf, c->hdr.len);
	if (rc == 0 && c->hdr.seq != req.seq)
		rc = -EPROTO;
	if (rc) {
		dp_err_set(err, "deputyd connection lost: %s",
			   rc == -ECONNRESET ? "deputyd closed it" : strerror(-rc));
		return rc;
	}
	if (c->hdr.type == DP_MSG_ERROR) {
		char *reason = dcli_field_str(c, DP_T_REASON);

		dp_err_set(err, "%s", reason ? reason : "refused");
		free(reason);
		return -EPERM;
	}
	return 0;
}

bool dcli_field(const struct dcli *c, uint16_t tag, const uint8_t **val, uint16_t *len)
{
	size_t off = 0;
	uint16_t t;

	while (dp_field_next(c->buf, c->hdr.len, &off, &t, val, len) == 1)
		if (t == tag)
			return true;
	return false;
}

char *dcli_field_str(const struct dcli *c, uint16_t tag)
{
	const uint8_t *v;
	uint16_t n;
	char *s;

	if (!dcli_field(c, tag, &v, &n))
		return NULL;
	s = malloc((size_t)n + 1);
	if (!s)
		return NULL;
	memcpy(s, v, n);
	s[n] = '\0';
	return s;
}

uint64_t dcli_field_u64(const struct dcli *c, uint16_t tag, uint64_t dflt)
{
	const uint8_t *v;
	uint16_t n;
	uint64_t x;

	if (!dcli_field(c, tag, &v, &n) || n != 8)
		return dflt;
	memcpy(&x, v, 8);
	return x;
}
