// SPDX-License-Identifier: MIT
/*
 * route_test: `deputy route test METHOD URL --grant FILE --agent NAME`. The grant is verified
 * as a session's would be (grant_verify with the live config and trust), then decide() runs
 * on a stand-in session marked dry: the very code real requests go through, with the same
 * route match, method and path checks and grant checks, but nothing logged, minted or sent.
 * What a dry run cannot know is where a real request's connection goes (bind.c): the reply
 * says so. deputyd answers rather than the CLI loading the config itself, because only
 * deputyd knows the config it runs (a reload may not have happened, or failed) and the keys
 * it verifies grants with.
 */
#include "deputyd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "peer.h"
#include "route.h"
#include "url.h"

/* An MCP route's POST is decided per call, on its body, which a route test has not got. */
static const char *route_test_verdict(int v)
{
	switch (v) {
	case DP_VERDICT_DELEGATE:
		return "delegate";
	case DP_VERDICT_PASSTHROUGH:
		return "passthrough";
	case DP_VERDICT_MCP_BODY:
		return "mcp";
	default:
		return "deny";
	}
}

/* The route as the config says it; NULL when none matched. */
static json_t *route_test_route(const struct dp_config *cfg, const struct decide_req *q)
{
	char path[URL_PATH_MAX + 1];
	const struct dp_route *rt;

	if (url_target_path(q->target, path, sizeof(path)) != 0)
		return NULL;
	rt = route_match(cfg, q->host, q->port, q->method, path);
	if (!rt)
		return NULL;
	return json_pack(
	    "{s:I, s:s, s:i, s:s?, s:s?, s:s, s:s?, s:s?, s:s?}", "index",
	    (json_int_t)(rt - cfg->routes), "host", rt->host, "port", rt->port, "method",
	    rt->method, "path", rt->path, "action", config_action_name(rt->action), "audience",
	    rt->audience, "scope", rt->scope, "header",
	    rt->action == DP_ACTION_DELEGATE ? (rt->header ? rt->header : "Authorization") : NULL);
}

int handle_route_test(struct deputyd *d, struct conn *c, const struct handler_req *r,
		      struct dp_err *err)
{
	static uint8_t reply[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	const struct wire_fields *f = r->f;
	struct session s = {.state = SESSION_OPEN, .dry = true, .exit_status = -1, .table_fd = -1};
	struct decide_req q = {.scheme = f->str[DP_T_SCHEME],
			       .host = f->str[DP_T_HOST],
			       .method = f->str[DP_T_METHOD],
			       .target = f->str[DP_T_TARGET],
			       .port = f->u64[DP_T_PORT] <= 65535 ? (int)f->u64[DP_T_PORT] : -1,
			       .pid = c->pid,
			       .comm = c->comm};
	char home[DP_ID_LEN];
	struct decide_res res;
	struct dp_err gerr;
	struct dp_msg m;
	json_t *out;
	char *text;
	int rc;

	/* the operator's question, not the agent's: an agent learns its policy by its 403s */
	if (peer_home(d, c->pid, c->pidfd, home) != 0 || home[0]) {
		dp_err_set(err, "route test: not from inside a session");
		return -EPERM;
	}
	if (session_agent_name(f->str[DP_T_AGENT], &s.agent) != 0) {
		dp_err_set(err, "agent: name must be 1-64 of [A-Za-z0-9._-]");
		return -EINVAL;
	}
	rc = grant_verify(d->trust, f->str[DP_T_GRANT], d->cfg->issuer, s.agent, dp_now(), &s.grant,
			  &gerr);
	if (rc) {
		free(s.agent);
		dp_err_set(err, "grant refused: %s", gerr.msg);
		return rc;
	}
	decide(d, &s, &q, &res);
	out = json_pack("{s:o?, s:s, s:s, s:s?, s:s, s:s}", "route", route_test_route(d->cfg, &q),
			"verdict", route_test_verdict(res.verdict), "reason", res.reason, "scope",
			res.scope, "user", s.grant->sub, "agent", s.agent);
	if (out && res.verdict == DP_VERDICT_DELEGATE)
		json_object_set_new(out, "note",
				    json_string("a real request also needs its connection to go "
						"to one of the route host's addresses"));
	free(res.token);
	grant_free(s.grant);
	free(s.agent);
	text = out ? json_dumps(out, JSON_COMPACT) : NULL;
	json_decref(out);
	if (!text) {
		dp_err_set(err, "route test: out of memory");
		return -ENOMEM;
	}
	dp_msg_init(&m, reply, sizeof(reply), DP_MSG_DATA_REPLY, r->h->seq, 0);
	dp_msg_put_str(&m, DP_T_DATA, text);
	free(text);
	conn_send(d, c, &m);
	return 0;
}
