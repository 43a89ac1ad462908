// SPDX-License-Identifier: MIT
/*
 * conn_mcp: an MCP route's request in the shim (design: Policy: routes, MCP routes). deputyd
 * decides such a POST on the JSON-RPC call in its body, so the head is held back until the
 * body is complete (the agent may write them in any number of pieces), the body is read
 * (at most MCP_BODY_MAX of content; more is refused before a byte is sent), and deputyd is
 * asked again with the call and the body's hash. Then head and body leave together, or
 * the agent reads the refusal as a JSON-RPC error for its request id.
 *
 * An Expect: 100-continue is answered by the shim, as the proxy does: the agent would
 * otherwise wait for its own timeout before sending the body deputyd decides on. The header
 * still goes to the server with the body (the server's own 100 then reaches the agent too,
 * which HTTP/1.1 clients must accept). A tools/list under "filter_list" has its answer cut
 * to the granted tools (conn_list.c).
 */
#include "conn.h"

#include "deputy/proto.h"
#include "sha256.h"
#include "shim.h"

#include <stdio.h>
#include <string.h>

static void conn_mcp_deny(struct conn *c, bool step_up, const char *reason, const char *scope,
			  const char *user)
{
	ssize_t n = mcp_deny_response(c->deny_buf, sizeof(c->deny_buf), c->mcp_call.id, step_up,
				      reason, scope, user);

	c->deny_len = n > 0 ? (size_t)n : 0;
	conn_refuse(c, reason);
}

/* A refusal of the shim's own: deputyd logs it (layer shim). */
static void conn_mcp_refuse_local(struct conn *c, const char *why)
{
	dpc_deny_report(why, c->mcp_host, c->mcp_method, c->mcp_target);
	conn_mcp_deny(c, false, why, "", "");
}

void conn_mcp_start(struct conn *c, const char *host, int port, const char *method,
		    const char *target)
{
	const struct hh_req *r = &c->req;

	snprintf(c->mcp_host, sizeof(c->mcp_host), "%s", host);
	snprintf(c->mcp_method, sizeof(c->mcp_method), "%s", method);
	snprintf(c->mcp_target, sizeof(c->mcp_target), "%s", target);
	c->mcp_port = port;
	memset(&c->mcp_call, 0, sizeof(c->mcp_call));
	c->mcp_raw_len = 0;
	if (r->content_length > (int64_t)MCP_BODY_MAX) {
		conn_mcp_refuse_local(c, "an MCP request body over 1 MiB is refused");
		return;
	}
	if (!r->chunked && r->content_length <= 0) {
		conn_mcp_refuse_local(c, "an MCP call without a body");
		return;
	}
	if (!c->mcp_body)
		c->mcp_body = conn_map(MCP_BODY_MAX);
	if (!c->mcp_body) {
		conn_mcp_refuse_local(c, "out of memory");
		return;
	}
	hh_body_init(&c->body, r->chunked ? HH_BODY_CHUNKED : HH_BODY_LENGTH,
		     r->chunked ? 0 : (uint64_t)r->content_length);
	hh_body_sink(&c->body, c->mcp_body, MCP_BODY_MAX);
	c->rq = RQ_MCP;
	if (r->expect_continue) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

		conn_list_interim(c, cont, sizeof(cont) - 1);
	}
}

/* The body is complete: the call decided, head and body queued for the network. */
static void conn_mcp_decide(struct conn *c)
{
	struct dpc_decision *d = &c->dec;
	char sha[65], value[sizeof(d->token) + 8];
	struct dpc_mcp call;
	const char *why;
	ssize_t n;

	if (mcp_call_parse(c->mcp_body, c->body.sink_len, &c->mcp_call, &why) != 0 ||
	    mcp_headers_check(c->head, &c->req, &c->mcp_call, &why) != 0) {
		conn_mcp_refuse_local(c, why);
		return;
	}
	sha256_hex(c->mcp_body, c->body.sink_len, sha);
	call = (struct dpc_mcp){c->mcp_call.method, c->mcp_call.name, sha};
	shim_guard++;
	dpc_decide(c->https ? "https" : "http", c->mcp_host, c->mcp_port, c->mcp_method,
		   c->mcp_target, c->cookie, c->sni, &c->peer, &call, d);
	shim_guard--;
	shim_debug("MCP %s %s: %s", c->mcp_call.method, c->mcp_call.name, d->reason);
	if (d->verdict != DP_VERDICT_DELEGATE && d->verdict != DP_VERDICT_PASSTHROUGH) {
		conn_mcp_deny(c, true, d->reason[0] ? d->reason : "denied", d->scope, d->user);
		return;
	}
	if (d->mcp_filter && !c->ops->recv) {
		conn_mcp_refuse_local(c, "tools/list under filter_list needs TLS in the shim");
		return;
	}
	if (d->verdict == DP_VERDICT_DELEGATE) {
		snprintf(value, sizeof(value), "Bearer %s", d->token);
		n = hh_req_rewrite(c->head, c->hlen, &c->req, d->header, value, c->out,
				   CONN_OUT_CAP);
		explicit_bzero(value, sizeof(value));
		explicit_bzero(d->token, sizeof(d->token));
	} else {
		memcpy(c->out, c->head, c->hlen);
		n = (ssize_t)c->hlen;
	}
	if (n < 0) {
		conn_mcp_refuse_local(c, "cannot add the token to the request");
		return;
	}
	memmove(c->out + n, c->out + CONN_OUT_CAP, c->mcp_raw_len);
	c->out_len = (size_t)n + c->mcp_raw_len;
	c->out_off = 0;
	conn_enqueue(c, d->jti);
	conn_list_expect(c, d, c->mcp_call.id);
	c->hlen = 0;
	c->rq = RQ_HEAD;
}

size_t conn_mcp_take(struct conn *c, const char *p, size_t n)
{
	bool done = false;
	ssize_t k = hh_body_feed(&c->body, p, n, &done);

	if (k < 0) {
		conn_mcp_refuse_local(c, "malformed chunked request body");
		return n;
	}
	if (c->body.sink_over || c->mcp_raw_len + (size_t)k > CONN_MCP_RAW_MAX) {
		conn_mcp_refuse_local(c, "an MCP request body over 1 MiB is refused");
		return n;
	}
	memcpy(c->out + CONN_OUT_CAP + c->mcp_raw_len, p, (size_t)k);
	c->mcp_raw_len += (size_t)k;
	if (done)
		conn_mcp_decide(c);
	return (size_t)k;
}
