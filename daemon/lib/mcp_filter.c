// SPDX-License-Identifier: MIT
/*
 * mcp_filter: the tools/list filter of MCP routes with "filter_list": true (see mcp.h). The
 * response text is copied with the refused tools' elements cut out of every result.tools
 * array; everything else stays byte for byte as the server wrote it. It only spares the
 * agent tools it could not call: each call is decided on its own whatever the list said.
 */
#include <errno.h>
#include <string.h>

#include "mcp.h"
#include "mcp_json.h"

bool mcp_rules_allow(const char *const *rules, size_t n, const char *tool)
{
	const char *rest = NULL;

	for (size_t i = 0; i < n; i++) {
		const char *r = rules[i];

		if (!r || (r[0] != '+' && r[0] != '-'))
			continue;
		if (strcmp(r + 1, tool) == 0)
			return r[0] == '+';
		if (strcmp(r + 1, "*") == 0)
			rest = r;
	}
	return rest && rest[0] == '+';
}

struct mcpf {
	char *out;
	size_t cap, len;
	const char *const *rules;
	size_t n;
};

static int mcpf_put(struct mcpf *f, const char *p, size_t k)
{
	if (f->len + k > f->cap)
		return -ENOSPC;
	memcpy(f->out + f->len, p, k);
	f->len += k;
	return 0;
}

/* A member of one tool: its last "name" (as JSON.parse keeps it). */
struct mcpf_tool {
	char name[MCP_NAME_MAX + 1];
	bool named;
};

static int mcpf_tool_item(struct mcpj *j, const char *key, size_t klen, void *arg)
{
	struct mcpf_tool *t = arg;
	bool over;

	if (!mcpj_key_is(key, klen, "name") || j->p >= j->end || *j->p != '"')
		return mcpj_value(j, 4);
	if (mcpj_string(j, t->name, sizeof(t->name), NULL, &over))
		return -EBADMSG;
	t->named = !over;
	return 0;
}

/* An element of a tools array: copied after the kept ones when its tool is allowed. */
struct mcpf_tools {
	struct mcpf *f;
	bool first;
};

static int mcpf_tools_item(struct mcpj *j, const char *key, size_t klen, void *arg)
{
	struct mcpf_tools *ts = arg;
	const char *start = j->p;
	struct mcpf_tool t;

	(void)key;
	(void)klen;
	t.named = false;
	if (j->p < j->end && *j->p == '{' ? mcpj_list(j, mcpf_tool_item, &t) : mcpj_value(j, 3))
		return -EBADMSG;
	if (!t.named || !mcp_rules_allow(ts->f->rules, ts->f->n, t.name))
		return 0;
	if ((!ts->first && mcpf_put(ts->f, ",", 1)) ||
	    mcpf_put(ts->f, start, (size_t)(j->p - start)))
		return -ENOSPC;
	ts->first = false;
	return 0;
}

/* Members of the message (depth 0: "result" descended into) and of its result (depth 1:
 * "tools" filtered). What the source held before a tools array is copied up to its '[';
 * *from then moves to its ']'. */
struct mcpf_obj {
	struct mcpf *f;
	const char **from;
	int depth;
};

static int mcpf_obj_item(struct mcpj *j, const char *key, size_t klen, void *arg)
{
	struct mcpf_obj *o = arg;
	bool at_obj = j->p < j->end && *j->p == '{', at_arr = j->p < j->end && *j->p == '[';

	if (o->depth == 0 && at_obj && mcpj_key_is(key, klen, "result")) {
		struct mcpf_obj inner = {o->f, o->from, 1};

		return mcpj_list(j, mcpf_obj_item, &inner);
	}
	if (o->depth == 1 && at_arr && mcpj_key_is(key, klen, "tools")) {
		struct mcpf_tools ts = {o->f, true};
		int r;

		if (mcpf_put(o->f, *o->from, (size_t)(j->p + 1 - *o->from)))
			return -ENOSPC;
		if ((r = mcpj_list(j, mcpf_tools_item, &ts)))
			return r;
		*o->from = j->p - 1; /* the array's ']' and what follows are the caller's */
		return 0;
	}
	return mcpj_value(j, o->depth + 1);
}

static int mcpf_message(struct mcpf *f, const char *in, size_t len)
{
	struct mcpj j = {in, in + len};
	const char *from = in;
	struct mcpf_obj top = {f, &from, 0};
	int r;

	mcpj_skip_ws(&j);
	if (j.p >= j.end || *j.p != '{')
		return -EBADMSG;
	if ((r = mcpj_list(&j, mcpf_obj_item, &top)))
		return r;
	mcpj_skip_ws(&j);
	if (j.p != j.end)
		return -EBADMSG;
	return mcpf_put(f, from, (size_t)(j.end - from));
}

/* text/event-stream (WHATWG HTML §9.2): each "data:" line's JSON filtered, every other
 * line (event, id, retry, comments, an empty priming data) copied as it is. */
static int mcpf_sse(struct mcpf *f, const char *in, size_t len)
{
	size_t off = 0;

	while (off < len) {
		const char *line = in + off, *nl = memchr(line, '\n', len - off);
		size_t ll = nl ? (size_t)(nl - line) : len - off, body = ll, eol;
		int r;

		if (body && line[body - 1] == '\r')
			body--;
		eol = (nl ? ll + 1 : ll) - body;
		if (body > 5 && memcmp(line, "data:", 5) == 0) {
			size_t skip = line[5] == ' ' ? 6 : 5;

			if (mcpf_put(f, line, skip))
				return -ENOSPC;
			if (body > skip && (r = mcpf_message(f, line + skip, body - skip)))
				return r;
			if (mcpf_put(f, line + body, eol))
				return -ENOSPC;
		} else if (mcpf_put(f, line, ll + (nl ? 1 : 0))) {
			return -ENOSPC;
		}
		off += ll + (nl ? 1 : 0);
	}
	return 0;
}

ssize_t mcp_filter_tools(const char *in, size_t len, bool sse, const char *const *rules, size_t n,
			 char *out, size_t cap)
{
	struct mcpf f = {out, cap, 0, rules, n};
	int r = sse ? mcpf_sse(&f, in, len) : mcpf_message(&f, in, len);

	return r ? r : (ssize_t)f.len;
}
