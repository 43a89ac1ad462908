/* SPDX-License-Identifier: MIT */
/* proxyreq: deputyd's answers to deputy-proxy's requests (proxyreq.c). */
#ifndef DEPUTY_PROXYREQ_H
#define DEPUTY_PROXYREQ_H

#include <stddef.h>
#include <stdint.h>

#include "deputyd.h"

/* One message from the proxy, with the socket it passed (or -1). NULL, or why the proxy
 * broke the protocol (the caller then stops it). */
const char *proxyreq_handle(struct deputyd *d, const uint8_t *buf, size_t n, int fd);
/* The proxy is gone: so are its connections. */
void proxyreq_forget_all(void);
/* How many connections of the session the proxy has not closed yet: the reports of each
 * (uses, responses) are in once its PROXY_CLOSE is, which comes after them. */
size_t proxyreq_open(const char *sid);

#endif
