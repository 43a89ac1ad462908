// SPDX-License-Identifier: MIT
/* io: plain and TLS reads and writes for the proxy (see io.h). */
#include "io.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

ssize_t pxio_read(struct pxio *io, void *buf, size_t n)
{
	ssize_t r;

	if (io->ssl) {
		size_t got = 0;

		if (SSL_read_ex(io->ssl, buf, n, &got) == 1)
			return (ssize_t)got;
		return SSL_get_error(io->ssl, 0) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	}
	do
		r = recv(io->fd, buf, n, 0);
	while (r < 0 && errno == EINTR);
	return r;
}

int pxio_write(struct pxio *io, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w;

		if (io->ssl) {
			size_t done = 0;

			if (SSL_write_ex(io->ssl, p, n, &done) != 1)
				return -1;
			w = (ssize_t)done;
		} else {
			w = send(io->fd, p, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

void pxio_timeouts(int fd, int seconds)
{
	struct timeval tv = {seconds, 0};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void pxio_reset(int fd)
{
	struct linger l = {1, 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}
