// SPDX-License-Identifier: MIT
/*
 * mcp: reads what one MCP request body calls, checks the Mcp-* headers against it and
 * writes the refusal an MCP client shows (see mcp.h), with the JSON scanner of mcp_json.c.
 */
#include "mcp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "jsonw.h"
#include "mcp_json.h"

/* ---- the request ---------------------------------------------------------------------- */

enum mcp_kind mcp_method_kind(const char *method)
{
	if (strcmp(method, "tools/call") == 0)
		return MCP_KIND_TOOL;
	if (strcmp(method, "resources/read") == 0)
		return MCP_KIND_RESOURCE;
	if (strcmp(method, "prompts/get") == 0)
		return MCP_KIND_PROMPT;
	return MCP_KIND_OTHER;
}

static bool mcp_text_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

struct mcp_target {
	char buf[MCP_NAME_MAX + 1];
	bool seen, string, over;
};

struct mcp_parse {
	struct mcp_call *call;
	struct mcp_target name, uri;
	unsigned seen; /* top-level keys, for duplicates */
	const char *why;
};

/* A member of params: where a call names its target. Only params' own members count: a
 * "name" nested in the arguments is the tool's business. */
static int mcp_param_item(struct mcpj *j, const char *key, size_t klen, void *arg)
{
	struct mcp_parse *ps = arg;
	struct mcp_target *t = mcpj_key_is(key, klen, "name")  ? &ps->name
			       : mcpj_key_is(key, klen, "uri") ? &ps->uri
							       : NULL;
	size_t n;

	if (!t)
		return mcpj_value(j, 2);
	if (t->seen) {
		ps->why = "a duplicate key in the JSON-RPC params";
		return -EBADMSG;
	}
	t->seen = true;
	if (j->p >= j->end || *j->p != '"')
		return mcpj_value(j, 2);
	t->string = true;
	if (mcpj_string(j, t->buf, sizeof(t->buf), &n, &t->over))
		return -EBADMSG;
	if (!t->over && strlen(t->buf) != n) {
		ps->why = "the called name has control characters";
		return -EBADMSG; /* a NUL inside cannot be passed on */
	}
	return 0;
}

/* The value at j->p of one of the top-level keys. */
static int mcp_member(struct mcpj *j, const char *key, size_t klen, struct mcp_parse *ps)
{
	struct mcp_call *call = ps->call;
	const char *start = j->p;
	char ver[8];
	size_t n;
	bool over;

	if (mcpj_key_is(key, klen, "jsonrpc")) {
		if (mcpj_string(j, ver, sizeof(ver), &n, &over) || over || strcmp(ver, "2.0")) {
			ps->why = "not JSON-RPC 2.0";
			return -EBADMSG;
		}
		return 0;
	}
	if (mcpj_key_is(key, klen, "method")) {
		if (mcpj_string(j, call->method, sizeof(call->method), &n, &over) || over ||
		    n == 0 || strlen(call->method) != n || !mcp_text_ok(call->method)) {
			ps->why = "the JSON-RPC method is not a short string";
			return -EBADMSG;
		}
		return 0;
	}
	if (mcpj_key_is(key, klen, "id")) {
		if (j->p < j->end &&
		    (*j->p == '{' || *j->p == '[' || *j->p == 't' || *j->p == 'f')) {
			ps->why = "the JSON-RPC id is not a string, number or null";
			return -EBADMSG;
		}
		if (mcpj_value(j, 1))
			return -EBADMSG;
		if ((size_t)(j->p - start) > MCP_ID_MAX) {
			ps->why = "the JSON-RPC id is too long";
			return -EBADMSG;
		}
		memcpy(call->id, start, (size_t)(j->p - start));
		call->id[j->p - start] = '\0';
		return 0;
	}
	if (mcpj_key_is(key, klen, "params") && j->p < j->end && *j->p == '{')
		return mcpj_list(j, mcp_param_item, ps);
	return mcpj_value(j, 1);
}

/* A top-level member; a duplicate among those that decide is refused (JSON parsers
 * disagree on which one wins). */
static int mcp_top_item(struct mcpj *j, const char *key, size_t klen, void *arg)
{
	static const char *const keys[] = {"jsonrpc", "method", "id", "params"};
	struct mcp_parse *ps = arg;

	for (unsigned k = 0; k < 4; k++)
		if (mcpj_key_is(key, klen, keys[k])) {
			if (ps->seen & (1u << k)) {
				ps->why = "a duplicate key in the JSON-RPC object";
				return -EBADMSG;
			}
			ps->seen |= 1u << k;
		}
	return mcp_member(j, key, klen, ps);
}

/* The target named by the kind of call, or a refusal. */
static int mcp_pick_target(struct mcp_call *call, const struct mcp_target *name,
			   const struct mcp_target *uri, const char **why)
{
	const struct mcp_target *t;

	call->kind = mcp_method_kind(call->method);
	if (call->kind == MCP_KIND_OTHER)
		return 0;
	t = call->kind == MCP_KIND_RESOURCE ? uri : name;
	if (!t->string || t->buf[0] == '\0') {
		*why = call->kind == MCP_KIND_RESOURCE ? "resources/read without params.uri"
						       : "the call names no params.name";
		return -EBADMSG;
	}
	if (t->over || !mcp_text_ok(t->buf)) {
		*why = "the called name is too long or has control characters";
		return -EBADMSG;
	}
	memcpy(call->name, t->buf, sizeof(call->name));
	return 0;
}

int mcp_call_parse(const char *body, size_t len, struct mcp_call *call, const char **why)
{
	struct mcp_parse ps;
	struct mcpj j = {body, body + len};

	memset(&ps, 0, sizeof(ps));
	memset(call, 0, sizeof(*call));
	strcpy(call->id, "null");
	ps.call = call;
	*why = "the body is not one JSON object";
	mcpj_skip_ws(&j);
	if (j.p < j.end && *j.p == '[') {
		*why = "JSON-RPC batches are refused (MCP 2025-06-18)";
		return -EBADMSG;
	}
	if (j.p >= j.end || *j.p != '{')
		return -EBADMSG;
	if (mcpj_list(&j, mcp_top_item, &ps) != 0) {
		if (ps.why)
			*why = ps.why;
		return -EBADMSG;
	}
	mcpj_skip_ws(&j);
	if (j.p != j.end)
		return -EBADMSG;
	if (!(ps.seen & 1u)) {
		*why = "not JSON-RPC 2.0";
		return -EBADMSG;
	}
	return mcp_pick_target(call, &ps.name, &ps.uri, why);
}

/* ---- the Mcp-Method / Mcp-Name headers ------------------------------------------------ */

static int mcp_header_agrees(const char *buf, const struct hh_req *r, const char *hname,
			     const char *want, const char **why)
{
	size_t hl = strlen(hname);
	int found = 0;

	for (int h = 0; h < r->nhdr; h++) {
		struct hh_span n = r->hdr[h].name, v = r->hdr[h].value;

		if (n.len != hl || strncasecmp(buf + n.off, hname, hl) != 0)
			continue;
		if (++found > 1) {
			*why = "the Mcp-Method or Mcp-Name header is repeated";
			return -EBADMSG;
		}
		if (v.len != strlen(want) || memcmp(buf + v.off, want, v.len) != 0) {
			*why = "the Mcp-Method or Mcp-Name header disagrees with the body";
			return -EBADMSG;
		}
	}
	return 0;
}

int mcp_headers_check(const char *buf, const struct hh_req *r, const struct mcp_call *call,
		      const char **why)
{
	/* A coded body (gzip, …) is not the JSON the call was read from. */
	for (int h = 0; h < r->nhdr; h++) {
		struct hh_span n = r->hdr[h].name, v = r->hdr[h].value;

		if (n.len == 16 && strncasecmp(buf + n.off, "content-encoding", 16) == 0 &&
		    !(v.len == 8 && strncasecmp(buf + v.off, "identity", 8) == 0)) {
			*why = "an MCP call with a Content-Encoding is refused";
			return -EBADMSG;
		}
	}
	if (mcp_header_agrees(buf, r, "Mcp-Method", call->method, why))
		return -EBADMSG;
	return mcp_header_agrees(buf, r, "Mcp-Name", call->name, why);
}

/* ---- the refusal ---------------------------------------------------------------------- */

/* A scope as RFC 6750 §3 quotes it: NQSCHAR only, else it is left out. */
static bool mcp_scope_quotable(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e || *s == '"' || *s == '\\')
			return false;
	return true;
}

ssize_t mcp_deny_response(char *out, size_t cap, const char *id, bool step_up, const char *reason,
			  const char *scope, const char *user)
{
	char body[MCP_ID_MAX + 3 * 6 * HH_DENY_FIELD_MAX * 2 + 256], auth[HH_DENY_FIELD_MAX + 80];
	char msg[HH_DENY_FIELD_MAX + 16];
	struct jw w;
	ssize_t o;
	int n;

	if (!id || !*id || strlen(id) > MCP_ID_MAX)
		id = "null";
	snprintf(msg, sizeof(msg), "deputy: %.*s", HH_DENY_FIELD_MAX, reason ? reason : "refused");
	n = snprintf(body, sizeof(body), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":", id);
	/* -32001: JSON-RPC's server-defined range; MCP names no code for an authorization
	 * refusal, the HTTP status and WWW-Authenticate carry that. */
	jw_init(&w, body + n, sizeof(body) - (size_t)n, JW_UTF8_REPLACE);
	jw_obj_open(&w);
	jw_member_int(&w, "code", -32001);
	jw_member_str(&w, "message", msg);
	jw_key(&w, "data");
	hh_deny_json(&w, reason, scope, user);
	jw_obj_close(&w);
	o = jw_end(&w);
	if (o < 0 || (size_t)n + (size_t)o + 2 > sizeof(body))
		return -ENOSPC;
	o += n;
	body[o++] = '}';
	body[o] = '\0';
	auth[0] = '\0';
	if (step_up && mcp_scope_quotable(scope))
		snprintf(
		    auth, sizeof(auth),
		    "WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"%.*s\"\r\n",
		    HH_DENY_FIELD_MAX, scope);
	else if (step_up)
		snprintf(auth, sizeof(auth),
			 "WWW-Authenticate: Bearer error=\"insufficient_scope\"\r\n");
	n = snprintf(out, cap,
		     "HTTP/1.1 403 Forbidden\r\n"
		     "Content-Type: application/json\r\n"
		     "%s"
		     "Content-Length: %zu\r\n"
		     "Connection: close\r\n"
		     "\r\n",
		     auth, (size_t)o);
	if (n < 0 || (size_t)n + (size_t)o > cap)
		return -ENOSPC;
	memcpy(out + n, body, (size_t)o);
	return (ssize_t)(n + o);
}
