/* SPDX-License-Identifier: MIT */
/*
 * ptable: session tables in deputy-proxy under "token_binding": "session" (issue 14; the
 * shim's preload/table.c does the same in the agent). A request the session's table covers
 * exactly (daemon/lib/sesstable.c decides, on the original destination deputyd gave for
 * the connection) gets its token without a round trip to deputyd; its use is reported
 * without waiting once the request went out. Tables are kept per session, fetched by a
 * connection deputyd attributed to it (deputyd picks the session, never the proxy), and
 * checked against the session's generation page before every request: a reload, a revocation or a
 * new token makes the very next request fetch again (or ask).
 */
#ifndef DEPUTY_PROXY_PTABLE_H
#define DEPUTY_PROXY_PTABLE_H

#include <deputy/proto.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream.h"

/* Where a local decision goes: the connection's decision fields. */
struct ptbl_out {
	char *header, *token, *jti, *scope;
	size_t header_sz, token_sz, jti_sz, scope_sz;
};

/* true: out holds a delegate decision from the session's table; false: ask deputyd. conn
 * is deputyd's id of the connection (to fetch the table by); dest the original
 * destination (its tag is the session's). */
bool ptbl_decide(const struct up_key *dest, uint64_t conn, const char *host, const char *method,
		 const char *target, const struct ptbl_out *out);
/* deputyd's decision for the session named a table generation: one is worth fetching. */
void ptbl_hint(uint64_t session_tag);

/* A connection's uses not yet reported. relay.c sends each as soon as its request went
 * upstream: one held back until after the answer could reach deputyd after the agent's
 * session was sealed, or after a reload, and be refused. The batch is still the unit a
 * message carries (DP_USES_MAX). */
struct ptbl_uses {
	size_t len, n;
	uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
};
/* Queues one use (sent at once when the batch is full). */
void ptbl_use(struct ptbl_uses *u, uint64_t conn, const char *scheme, const char *jti,
	      const char *method, const char *host, int port, const char *target);
/* Sends what is queued, if anything (and always before the connection's close). */
void ptbl_flush(struct ptbl_uses *u);

#endif
