/* SPDX-License-Identifier: MIT */
/*
 * mcp: the JSON-RPC side of MCP routes (design: Policy: routes, MCP routes) for the shim and
 * the proxy: what one Streamable HTTP request body calls (method, params.name or params.uri,
 * id), whether the Mcp-Method / Mcp-Name headers agree with it, the refusal an MCP client can
 * show, and the tools/list filter (mcp_filter.c).
 *
 * Pure (no I/O, no allocation, no jansson): the shim runs inside the agent's process, where a
 * second JSON library could meet the agent's own copy of it, and a reader that allocates
 * could be made to exhaust the agent's memory. The reader is strict on purpose: what the
 * server's JSON parser reads must be what deputy decided on, so duplicate keys among those
 * that decide, invalid UTF-8, lone surrogates and anything after the object are refused
 * rather than resolved one way or another.
 */
#ifndef DEPUTY_MCP_H
#define DEPUTY_MCP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "httphead.h"

#define MCP_BODY_MAX (1u << 20) /* a larger request body on an MCP route is refused */
#define MCP_METHOD_MAX 128
#define MCP_NAME_MAX 1024 /* a tool or prompt name, or a resource URI */
#define MCP_ID_MAX 256	  /* the JSON text of a request id */
#define MCP_DEPTH_MAX 64

enum mcp_kind { MCP_KIND_OTHER, MCP_KIND_TOOL, MCP_KIND_RESOURCE, MCP_KIND_PROMPT };

struct mcp_call {
	char method[MCP_METHOD_MAX + 1]; /* "" for a JSON-RPC response (no method) */
	char name[MCP_NAME_MAX + 1];	 /* decoded params.name / params.uri; "" when none */
	char id[MCP_ID_MAX + 1];	 /* JSON text of "id"; "null" when absent */
	enum mcp_kind kind;
};

/* Reads one JSON-RPC message. 0, or -EBADMSG with *why a short static reason ("JSON-RPC
 * batches are refused", …). call->id is set as soon as it was read, so a refusal can
 * still name it. */
int mcp_call_parse(const char *body, size_t len, struct mcp_call *call, const char **why);

/* tools/call, resources/read, prompts/get: the methods whose target decides the scope. */
enum mcp_kind mcp_method_kind(const char *method);

/* The Mcp-Method and Mcp-Name headers of the head buf (as parsed into r), where sent, must
 * each appear once and equal the body's method and name; a Content-Encoding other than
 * identity is refused. 0 or -EBADMSG with *why. */
int mcp_headers_check(const char *buf, const struct hh_req *r, const struct mcp_call *call,
		      const char **why);

/* The refusal an MCP client shows: HTTP 403, for a scope refusal (step_up) with
 * WWW-Authenticate: Bearer error="insufficient_scope"[, scope="…"], and a JSON-RPC error
 * body carrying id (JSON text; "null" if unknown) whose data is deputy's usual
 * {"error":"deputy_denied",…}. Length or -ENOSPC (cap MCP_DENY_RESP_MAX always does). */
#define MCP_DENY_RESP_MAX (HH_DENY_RESP_MAX + MCP_ID_MAX + 3 * 6 * HH_DENY_FIELD_MAX + 512)
ssize_t mcp_deny_response(char *out, size_t cap, const char *id, bool step_up, const char *reason,
			  const char *scope, const char *user);

/* The tools/list filter deputyd sends with a decision: rules "+NAME" (allowed) or "-NAME"
 * (refused), NAME "*" for the rest; a tool no rule names is refused. */
bool mcp_rules_allow(const char *const *rules, size_t n, const char *tool);

/* Rewrites a tools/list response body (one JSON object, or text/event-stream events whose
 * data is one) without the tools the rules refuse. Other messages are copied unchanged.
 * Length of out, or -EBADMSG (not parseable: the caller refuses it) / -ENOSPC. */
ssize_t mcp_filter_tools(const char *in, size_t len, bool sse, const char *const *rules, size_t n,
			 char *out, size_t cap);

/* A whole tools/list answer as the agent gets it: the head (as read, status status) without
 * its framing headers and with a Content-Length, the body content filtered (an answer other
 * than 200 keeps its body as it came). Length, or -EBADMSG (encoded, not parseable: the
 * caller answers mcp_unfilterable_response) / -ENOSPC. */
ssize_t mcp_filter_response(const char *head, size_t head_len, int status, const char *body,
			    size_t len, const char *const *rules, size_t n, char *out, size_t cap);
/* What the agent gets instead of a tools/list answer that cannot be filtered (fail closed:
 * never the list unfiltered): 502 and a JSON-RPC error for id (JSON text; NULL: null) whose
 * data is {"error":"deputy_upstream","reason":why}; the connection ends. why is a static
 * reason without quotes. Length or -ENOSPC (MCP_UNFILTERABLE_MAX always does). */
#define MCP_UNFILTERABLE_MAX (MCP_ID_MAX + 1024)
ssize_t mcp_unfilterable_response(char *out, size_t cap, const char *id, const char *why);

#endif
