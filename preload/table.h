/* SPDX-License-Identifier: MIT */
/*
 * table: the session's table under "token_binding": "session" (deputyd's table.c says what
 * it holds and why): requests it covers exactly get their token without a round trip to
 * deputyd, and are reported as uses in batches. Everything else — another route first, a
 * deny route, no route, an unknown method, an ambiguous or absolute-form path, a socket
 * not going to the route host's addresses, a token near its expiry, a table made stale by
 * deputyd (its generation page) or fetched on an earlier connection — asks deputyd.
 */
#ifndef DEPUTY_SHIM_TABLE_H
#define DEPUTY_SHIM_TABLE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "client.h"

/* true: d is a delegate decision made from the table, and its use is reported (at once
 * when first_on_conn, so deputyd counts the connection as mediated before it closes).
 * false: ask deputyd. */
bool tbl_decide(const char *scheme, const char *host, int port, const char *method,
		const char *target, const struct sockaddr_storage *peer, uint64_t cookie,
		bool first_on_conn, struct dpc_decision *d);

/* deputyd answered a DECIDE with a table generation: there is a table worth fetching. */
void tbl_hint(void);
void tbl_atfork_child(void);

#endif
