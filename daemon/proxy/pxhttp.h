/* SPDX-License-Identifier: MIT */
/*
 * pxhttp: the proxy's HTTP/1.x decisions on one request head, pure (no I/O) so a fuzz target
 * can call them. Framing itself is the shim's parser (preload/httphead.h): the proxy must cut
 * the byte stream exactly where the shim and the server do.
 */
#ifndef DEPUTY_PROXY_PXHTTP_H
#define DEPUTY_PROXY_PXHTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "httphead.h"

/* The host a request names: its Host header (exactly one, required), lower-cased, without
 * port; an absolute-form target must name the same host. Upgrades and CONNECT are refused:
 * the proxy mediates HTTP/1.1 requests, not tunnels. 0, or -EBADMSG with err set. */
int pxhttp_host(const char *buf, const struct hh_req *r, char host[HH_HOST_MAX],
		struct dp_err *err);

/* The head to send upstream: for a delegated request every `header` the agent sent is
 * replaced by "header: Bearer token"; otherwise (header NULL) the head unchanged. Returns
 * the length or -ENOSPC / -EINVAL. */
ssize_t pxhttp_upstream_head(const char *buf, size_t len, const struct hh_req *r,
			     const char *header, const char *token, char *out, size_t cap);

/* Does the agent end the connection after this request (HTTP/1.0, or "Connection: close")? */
bool pxhttp_last_request(const char *buf, const struct hh_req *r);

/* The framing of the request body that follows the head. */
void pxhttp_req_body(const struct hh_req *r, struct hh_body *b);

#endif
