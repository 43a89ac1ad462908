/* SPDX-License-Identifier: MIT */
/*
 * upstream: the proxy's connections to the original destinations, verified TLS (system store
 * or upstream_ca_file, name = the route host) or plain, kept alive in a bounded pool. A
 * pooled connection is only reused for the same session, destination, host and scheme.
 */
#ifndef DEPUTY_PROXY_UPSTREAM_H
#define DEPUTY_PROXY_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "httphead.h"
#include "io.h"
#include "util.h"

struct up_key {
	uint64_t tag; /* the session's, from deputyd */
	int family;   /* AF_INET / AF_INET6 */
	uint8_t addr[16];
	uint16_t port;
	bool tls;
	char host[HH_HOST_MAX];
};

struct upconn {
	struct upconn *next;
	struct up_key key;
	struct pxio io;
	int64_t idle_since;
};

/* The TLS context for upstreams: trust anchors from the PEM text in ca_pem (NULL: the
 * system store). 0 or -errno with err set. */
int up_init(const char *ca_pem, struct dp_err *err);
/* A pooled connection for k, or a new one (connected, TLS verified). *reused says which.
 * NULL with err set on failure. */
struct upconn *up_get(const struct up_key *k, bool *reused, struct dp_err *err);
/* Back to the pool after a complete response, or closed when the pool is full. */
void up_put(struct upconn *u);
void up_drop(struct upconn *u);

#endif
