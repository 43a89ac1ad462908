/* SPDX-License-Identifier: MIT */
/*
 * io: one byte stream of the proxy, plain or TLS, on a blocking socket whose timeouts
 * bound every wait (a silent peer costs a thread for at most that long).
 */
#ifndef DEPUTY_PROXY_IO_H
#define DEPUTY_PROXY_IO_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/types.h>

struct pxio {
	int fd;
	SSL *ssl; /* NULL: plain */
};

/* Bytes read (> 0), 0 at the end of the stream, -1 on an error or a timeout. */
ssize_t pxio_read(struct pxio *io, void *buf, size_t n);
/* 0 when all n bytes were written, -1 otherwise. */
int pxio_write(struct pxio *io, const void *buf, size_t n);
/* Read and write timeouts of a socket, in seconds. */
void pxio_timeouts(int fd, int seconds);
/* Close so that the peer sees a reset, not an orderly end: a refused connection must never
 * look like a complete (empty) answer. */
void pxio_reset(int fd);

#endif
