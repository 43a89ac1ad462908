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

/* One element of a tools array: its last "name" member (as JSON.parse keeps it). */
static int mcpf_tool_name(struct mcpj *j, char *name, size_t cap, bool *named)
{
	*named = false;
	mcpj_skip_ws(j);
	if (j->p >= j->end || *j->p != '{')
		return mcpj_value(j, 3);
	j->p++;
	mcpj_skip_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		char key[8];
		size_t klen;
		bool over;

		if (mcpj_key(j, key, sizeof(key), &klen))
			return -EBADMSG;
		if (mcpj_key_is(key, klen, "name") && j->p < j->end && *j->p == '"') {
			if (mcpj_string(j, name, cap, NULL, &over))
				return -EBADMSG;
			*named = !over;
		} else if (mcpj_value(j, 4)) {
			return -EBADMSG;
		}
		mcpj_skip_ws(j);
		if (j->p >= j->end)
			return -EBADMSG;
		if (*j->p == '}') {
			j->p++;
			return 0;
		}
		if (*j->p++ != ',')
			return -EBADMSG;
	}
}

/* The tools array at j->p: copies what the source held up to *from, then the kept
 * elements; *from becomes the array's closing bracket. */
static int mcpf_tools(struct mcpf *f, struct mcpj *j, const char **from)
{
	bool first = true;

	j->p++;
	if (mcpf_put(f, *from, (size_t)(j->p - *from)))
		return -ENOSPC;
	mcpj_skip_ws(j);
	if (j->p < j->end && *j->p == ']') {
		*from = j->p;
		j->p++;
		return 0;
	}
	for (;;) {
		char name[MCP_NAME_MAX + 1];
		const char *start;
		bool named;

		mcpj_skip_ws(j);
		start = j->p;
		if (mcpf_tool_name(j, name, sizeof(name), &named))
			return -EBADMSG;
		if (named && mcp_rules_allow(f->rules, f->n, name)) {
			if ((!first && mcpf_put(f, ",", 1)) ||
			    mcpf_put(f, start, (size_t)(j->p - start)))
				return -ENOSPC;
			first = false;
		}
		mcpj_skip_ws(j);
		if (j->p >= j->end)
			return -EBADMSG;
		if (*j->p == ']') {
			*from = j->p;
			j->p++;
			return 0;
		}
		if (*j->p++ != ',')
			return -EBADMSG;
	}
}

/* Members of an object at j->p; at depth 0 "result" is descended into, at depth 1 "tools". */
static int mcpf_object(struct mcpf *f, struct mcpj *j, int depth, const char **from)
{
	if (j->p >= j->end || *j->p != '{')
		return -EBADMSG;
	j->p++;
	mcpj_skip_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		char key[8];
		size_t klen;
		int r;

		if (mcpj_key(j, key, sizeof(key), &klen))
			return -EBADMSG;
		if (depth == 0 && mcpj_key_is(key, klen, "result") && j->p < j->end && *j->p == '{')
			r = mcpf_object(f, j, 1, from);
		else if (depth == 1 && mcpj_key_is(key, klen, "tools") && j->p < j->end &&
			 *j->p == '[')
			r = mcpf_tools(f, j, from);
		else
			r = mcpj_value(j, depth + 1);
		if (r)
			return r;
		mcpj_skip_ws(j);
		if (j->p >= j->end)
			return -EBADMSG;
		if (*j->p == '}') {
			j->p++;
			return 0;
		}
		if (*j->p++ != ',')
			return -EBADMSG;
	}
}

static int mcpf_message(struct mcpf *f, const char *in, size_t len)
{
	struct mcpj j = {in, in + len};
	const char *from = in;
	int r;

	mcpj_skip_ws(&j);
	if ((r = mcpf_object(f, &j, 0, &from)))
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
