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

#endif
