// SPDX-License-Identifier: MIT
/*
 * mcp_filter: the tools/list filter of MCP routes with "filter_list": true (see mcp.h). The
 * response text is copied with the refused tools' elements cut out of every result.tools
 * array; everything else stays byte for byte as the server wrote it. It only spares the
 * agent tools it could not call: each call is decided on its own whatever the list said.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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

/* ---- the whole answer, as the shim and the proxy hand it to the agent ---------------- */

static bool mcpf_line_is(const char *line, size_t n, const char *name)
{
	size_t k = strlen(name);

	return n > k && line[k] == ':' && strncasecmp(line, name, k) == 0;
}

/* Does the head's field name (any of its lines) contain want (lower case), or exist at all
 * when want is NULL? */
static bool mcpf_head_has(const char *head, size_t len, const char *name, const char *want)
{
	for (const char *p = head, *end = head + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

		if (mcpf_line_is(p, n, name)) {
			char v[256];

			snprintf(v, sizeof(v), "%.*s", (int)n, p);
			for (char *q = v; *q; q++)
				*q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
			if (!want || strstr(v, want))
				return true;
		}
		p += n + 1;
	}
	return false;
}

/* The head without its framing headers, with Content-Length: n. Length or -ENOSPC. */
static ssize_t mcpf_head(const char *head, size_t len, size_t n, char *out, size_t cap)
{
	const char *end = head + len;
	size_t o = 0;

	for (const char *p = head; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t k = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);

		if (k <= 2 && (p[0] == '\r' || p[0] == '\n')) {
			int w = snprintf(out + o, cap - o, "Content-Length: %zu\r\n\r\n", n);

			return w < 0 || (size_t)w >= cap - o ? -ENOSPC : (ssize_t)(o + (size_t)w);
		}
		if (!mcpf_line_is(p, k, "content-length") &&
		    !mcpf_line_is(p, k, "transfer-encoding")) {
			if (o + k > cap)
				return -ENOSPC;
			memcpy(out + o, p, k);
			o += k;
		}
		p += k;
	}
	return -EBADMSG;
}

ssize_t mcp_filter_response(const char *head, size_t head_len, int status, const char *body,
			    size_t len, const char *const *rules, size_t n, char *out, size_t cap)
{
	/* The head only loses lines and gains one Content-Length line: the body is written
	 * behind room for it, then moved next to it. */
	size_t room = head_len + 48;
	bool sse = mcpf_head_has(head, head_len, "content-type", "text/event-stream");
	ssize_t bl, hl;

	if (mcpf_head_has(head, head_len, "content-encoding", NULL) &&
	    !mcpf_head_has(head, head_len, "content-encoding", "identity"))
		return -EBADMSG;
	if (cap < room)
		return -ENOSPC;
	if (status == 200) {
		bl = mcp_filter_tools(body, len, sse, rules, n, out + room, cap - room);
	} else { /* an error answer is not a list: as it came */
		if (len > cap - room)
			return -ENOSPC;
		memcpy(out + room, body, len);
		bl = (ssize_t)len;
	}
	if (bl < 0)
		return bl;
	if ((hl = mcpf_head(head, head_len, (size_t)bl, out, room)) < 0)
		return hl;
	memmove(out + hl, out + room, (size_t)bl);
	return hl + bl;
}

ssize_t mcp_unfilterable_response(char *out, size_t cap, const char *id, const char *why)
{
	char body[MCP_ID_MAX + 512];
	int bl = snprintf(body, sizeof(body),
			  "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":{\"code\":-32603,"
			  "\"message\":\"deputy: %s\",\"data\":{\"error\":\"deputy_upstream\","
			  "\"reason\":\"%s\"}}}",
			  id && *id ? id : "null", why, why);
	int n;

	if (bl < 0 || (size_t)bl >= sizeof(body))
		return -ENOSPC;
	n = snprintf(out, cap,
		     "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
		     "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
		     bl, body);
	return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}
