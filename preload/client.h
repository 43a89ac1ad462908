/* SPDX-License-Identifier: MIT */
/*
 * client: the shim's side of the deputyd protocol (include/deputy/proto.h). One Unix stream
 * connection per process, reopened after fork (pid check) or when deputyd went away,
 * serialised by one mutex: each request waits for its reply before the next is sent, so
 * replies never need matching across threads. All I/O bypasses the hooks.
 */
#ifndef DEPUTY_SHIM_CLIENT_H
#define DEPUTY_SHIM_CLIENT_H

#include "deputy/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct dpc_decision {
	int verdict;		/* enum dp_verdict */
	bool table_hint;	/* deputyd has a session table for this session (DP_T_GEN) */
	bool mcp_filter;	/* a tools/list under "filter_list": cut to mcp_rules */
	uint32_t mcp_rules_len; /* bytes of mcp_rules: "+NAME" / "-NAME", each NUL-ended */
	char reason[512];
	char header[128];
	char token[8192];
	char jti[128];
	char scope[256];
	char user[256];
	/* What does not fit is dropped from the end: deputyd sends refusals first, so what
	 * is lost is an allowed tool (hidden, still callable), never a refusal. */
	char mcp_rules[DP_PROTO_MAX_PAYLOAD];
};

/* Asks for a decision. sni (or "") and peer (the socket's peer, or NULL) let deputyd check
 * that a token would go to the route's host. Never fails open: on any error d->verdict is
 * DP_VERDICT_DENY with the reason set, and the return value is -errno (0 when deputyd
 * answered). */
/* An MCP route's call, for the second DECIDE after DP_VERDICT_MCP_BODY (see mcp.h). */
struct dpc_mcp {
	const char *method, *name, *body_sha256;
};
int dpc_decide(const char *scheme, const char *host, int port, const char *method,
	       const char *target, uint64_t cookie, const char *sni,
	       const struct sockaddr_storage *peer, const struct dpc_mcp *mcp,
	       struct dpc_decision *d);

/* Reports: a response, and a request sent with a table token (a use), fire-and-forget
 * (DP_F_NOREPLY), batched (see client.c; `now`: send at once, without waiting for a reply);
 * a refusal of the shim's own, once deputyd has logged it. */
void dpc_response(const char *jti, int status);
void dpc_use(const char *scheme, const char *jti, const char *method, const char *host, int port,
	     const char *target, uint64_t cookie, bool now);
/* Sends the waiting reports now (a mediated connection closes). */
void dpc_flush(void);
void dpc_flush_locked(void);
void dpc_deny_report(const char *reason, const char *host, const char *method, const char *target);

/* The session's table (proto.h, DP_MSG_TABLE): its payload into out, the generation page's
 * descriptor (or -1), and which connection to deputyd it came on (dpc_connection()). */
int dpc_table_get(uint8_t *out, size_t cap, size_t *len, int *page_fd, unsigned *conn);
unsigned dpc_connection(void);

#endif
