/* SPDX-License-Identifier: MIT */
/*
 * hooks: what the socket hooks tell the SSL hooks — which fds are mediated TCP
 * connections (the SSL hooks only track SSL objects on those).
 */
#ifndef DEPUTY_SHIM_HOOKS_H
#define DEPUTY_SHIM_HOOKS_H

#include "conn.h"

/* The conn of a TCP socket the shim saw connect, or NULL. */
struct conn *sock_conn(int fd);
/* The same, after checking fd still is that socket (dropping the conn if not). */
struct conn *sock_conn_checked(int fd);

/* The SSL object whose handshake this thread is running inside SSL_connect or
 * SSL_do_handshake, or NULL. Programs with their own BIO (curl) leave SSL_get_fd useless;
 * the socket a handshake writes to is the one its SSL object talks over. */
extern __thread void *ssl_handshaking __attribute__((tls_model("initial-exec")));
/* The socket hooks saw the handshaking SSL object write to fd. */
void ssl_note_handshake_fd(int fd);

/* The ALPN list to hand on: protos itself, or its copy in buf (cap bytes) without "h2"
 * (alpn.c); *len is updated. */
const unsigned char *alpn_offer(const unsigned char *protos, unsigned int *len, unsigned char *buf,
				unsigned int cap);

#endif
