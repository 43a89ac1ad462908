// SPDX-License-Identifier: MIT
/*
 * decide_mcp: the part of a decision that MCP routes add (design: Policy: routes, MCP
 * routes): which scope a JSON-RPC call needs, the call's fields on its records, and the
 * tools/list filter rules.
 *
 * Trust: deputyd never sees the body (up to 1 MiB; a frame holds 32 KiB), so method, name
 * and body hash are the agent side's word. That is safe because the token carries all three
 * (mcp, body_sha256) and is worth nothing for another body: the MCP server checks that the
 * body it got hashes to body_sha256 and calls what mcp names. A shim that lies about the
 * call gets a token the server refuses; it never gets a scope the grant does not hold.
 */
#include "deputyd.h"

#include <deputy/proto.h>
#include <stdio.h>
#include <string.h>

#include "mcp.h"

static bool mcp_field_ok(const char *s, size_t max, bool empty_ok)
{
	size_t n = strlen(s);

	if ((n == 0 && !empty_ok) || n > max)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static bool mcp_hex64(const char *s)
{
	size_t n = strlen(s);

	if (n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static const char *mcp_kind_noun(enum mcp_kind k)
{
	return k == MCP_KIND_TOOL ? "tool" : k == MCP_KIND_RESOURCE ? "resource" : "prompt";
}

const char *decide_mcp_scope(const struct dp_route *rt, const struct decide_req *r, char *why,
			     size_t whysz)
{
	const char *name = r->mcp_name ? r->mcp_name : "";
	const struct dp_mcp_map *map;
	const struct dp_mcp_rule *rule;
	enum mcp_kind kind;

	if (!mcp_field_ok(r->mcp_method, MCP_METHOD_MAX, true) ||
	    !mcp_field_ok(name, MCP_NAME_MAX, true) || !r->body_sha256 ||
	    !mcp_hex64(r->body_sha256)) {
		snprintf(why, whysz, "malformed MCP call");
		return NULL;
	}
	kind = mcp_method_kind(r->mcp_method);
	if (kind == MCP_KIND_OTHER) {
		if (name[0]) {
			snprintf(why, whysz, "malformed MCP call: %s names no tool", r->mcp_method);
			return NULL;
		}
		return rt->scope;
	}
	if (!name[0]) {
		snprintf(why, whysz, "malformed MCP call: %s without a name", r->mcp_method);
		return NULL;
	}
	map = kind == MCP_KIND_TOOL	  ? &rt->mcp->tools
	      : kind == MCP_KIND_RESOURCE ? &rt->mcp->resources
					  : &rt->mcp->prompts;
	if (!map->present)
		return rt->scope;
	rule = config_mcp_rule(map, name);
	if (!rule || !rule->scope) {
		snprintf(why, whysz, "the route %s %s \"%.200s\"",
			 rule ? "denies" : "has no rule for", mcp_kind_noun(kind), name);
		return NULL;
	}
	return rule->scope;
}

json_t *decide_mcp_json(const struct decide_req *r)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	json_object_set_new(o, "method", session_text(r->mcp_method));
	if (r->mcp_name && r->mcp_name[0])
		json_object_set_new(o, "name", session_text(r->mcp_name));
	return o;
}

/* Refused rules first, "*" last: if the frame cannot hold them all, what is cut is an
 * allowed tool (hidden from the list, still callable), never a refusal. */
void decide_mcp_put_rules(struct dp_msg *m, const struct decide_res *res, const struct session *s)
{
	const struct dp_mcp_map *tools;
	char rule[MCP_NAME_MAX + 2];

	if (!res->mcp_list || res->verdict != DP_VERDICT_DELEGATE || !res->mcp_route->mcp ||
	    !res->mcp_route->mcp->filter_list)
		return;
	tools = &res->mcp_route->mcp->tools;
	if (!tools->present) {
		dp_msg_put_str(m, DP_T_MCP_RULE, "+*");
		return;
	}
	for (int pass = 0; pass < 3; pass++)
		for (size_t i = 0; i < tools->n; i++) {
			const struct dp_mcp_rule *t = &tools->rules[i];
			bool ok = t->scope && grant_has_scope(s->grant, t->scope);
			bool star = strcmp(t->name, "*") == 0;
			size_t n;

			if ((pass == 0 && (ok || star)) || (pass == 1 && (!ok || star)) ||
			    (pass == 2 && !star))
				continue;
			n = (size_t)snprintf(rule, sizeof(rule), "%c%s", ok ? '+' : '-', t->name);
			if (m->len + 4 + n > DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD ||
			    m->len + 4 + n > m->cap)
				return;
			dp_msg_put(m, DP_T_MCP_RULE, rule, n);
		}
}
