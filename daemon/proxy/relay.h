/* SPDX-License-Identifier: MIT */
/*
 * relay: one redirected agent connection, from deputyd's attribution through the TLS
 * handshake (a leaf for the SNI, signed by the session's CA, from deputyd) to each request:
 * DECIDE through deputyd, the token injected or deputy's 403, the request sent upstream, the
 * response relayed and its status reported. Runs on its own thread; blocking I/O whose
 * socket timeouts bound every wait.
 */
#ifndef DEPUTY_PROXY_RELAY_H
#define DEPUTY_PROXY_RELAY_H

/* Handles the accepted socket fd to its end and closes it. */
void relay_conn(int fd);

#endif
