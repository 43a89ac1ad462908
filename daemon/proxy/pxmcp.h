/* SPDX-License-Identifier: MIT */
/*
 * pxmcp: the proxy's part in MCP routes (design: Policy: routes, MCP routes): a request
 * deputyd answered DP_VERDICT_MCP_BODY is read whole (at most MCP_BODY_MAX of content,
 * Content-Length or chunked) before a byte goes upstream, its JSON-RPC call read and
 * hashed, and a tools/list answer under "filter_list" cut to the tools the grant allows.
 * Memory: one body per request in flight, freed when the request is done.
 */
#ifndef DEPUTY_PROXY_PXMCP_H
#define DEPUTY_PROXY_PXMCP_H

#include <deputy/proto.h>
#include <stdbool.h>
#include <stddef.h>

#include "chan.h"
#include "io.h"
#include "mcp.h"

#define PXMCP_RULES_MAX 512

struct pxmcp {
	bool active; /* this request is an MCP call */
	char *raw;   /* the body as the agent framed it (sent upstream as it is) */
	size_t raw_len;
	char *body; /* its content */
	size_t body_len;
	struct mcp_call call;
	char sha256[65];
	/* tools/list filter rules from the DECISION */
	bool filter;
	char *rulebuf;
	const char *rules[PXMCP_RULES_MAX];
	size_t n_rules;
};

/* Reads the body of the request whose head is in[0..head_len) (r). in[head_len..*in_len)
 * holds what came after the head; on return in holds the head and only what followed the
 * body. 0, -E2BIG (over MCP_BODY_MAX) or -1 (malformed, the agent went away), with *why. */
int pxmcp_read_body(struct pxio *io, char *in, size_t cap, size_t *in_len, size_t head_len,
		    const struct hh_req *r, struct pxmcp *m, const char **why);
/* Reads the call from the body and checks the head's Mcp-* headers and encoding against it;
 * 0 or -1 with *why. */
int pxmcp_call(struct pxmcp *m, const char *head, const struct hh_req *r, const char **why);
/* The call's fields of a DECIDE. */
void pxmcp_put_call(struct dp_msg *msg, const struct pxmcp *m);
/* Keeps the DECISION's tools/list filter rules (a copy: rep is reused). */
void pxmcp_take_rules(struct pxmcp *m, const struct chan_reply *rep);
/* Relays one response from up to agent, a tools/list result filtered: read whole (at most
 * MCP_BODY_MAX), rewritten with a Content-Length. 0 when it ended as framed, 1 when the
 * upstream is not reusable, -1 on an error after bytes reached the agent, -2 when the
 * upstream gave nothing. buf is scratch of cap bytes. */
int pxmcp_relay_filtered(struct pxio *up, struct pxio *agent, char *buf, size_t cap,
			 const struct pxmcp *m, bool req_head, int *status);
void pxmcp_reset(struct pxmcp *m);

#endif
