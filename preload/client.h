/* SPDX-License-Identifier: MIT */
/*
 * client: the shim's side of the deputyd protocol (include/deputy/proto.h). One Unix stream
 * connection per process, reopened after fork (pid check) or when deputyd went away,
 * serialised by one mutex: each request waits for its reply before the next is sent, so
 * replies never need matching across threads. All I/O bypasses the hooks.
 */
#ifndef DEPUTY_SHIM_CLIENT_H
#define DEPUTY_SHIM_CLIENT_H

#include <stdint.h>
#include <sys/socket.h>

struct dpc_decision {
	int verdict; /* enum dp_verdict */
	char reason[512];
	char header[128];
	char token[8192];
	char jti[128];
	char scope[256];
	char user[256];
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

/* Reports: a response, fire-and-forget (DP_F_NOREPLY); a refusal of the shim's own, once
 * deputyd has logged it. */
void dpc_response(const char *jti, int status);
void dpc_deny_report(const char *reason, const char *host, const char *method, const char *target);

#endif
