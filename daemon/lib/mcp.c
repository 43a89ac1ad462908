// SPDX-License-Identifier: MIT
/*
 * mcp: reads what one MCP request body calls, checks the Mcp-* headers against it and
 * writes the refusal an MCP client shows (see mcp.h). The JSON scanner (mcpj_*) is shared
 * with the tools/list filter in mcp_filter.c through mcp_json.h.
 */
#include "mcp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "jsonw.h"
#include "mcp_json.h"

static void mcpj_ws(struct mcpj *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

void mcpj_skip_ws(struct mcpj *j)
{
	mcpj_ws(j);
}

static int mcpj_hex4(const char *p, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = (unsigned char)p[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			return -1;
		*v = *v * 16 + d;
	}
	return 0;
}

static void mcpj_put(char *out, size_t cap, size_t *n, bool *over, const char *b, size_t k)
{
	if (!out)
		return;
	if (*n + k >= cap) {
		*over = true;
		return;
	}
	memcpy(out + *n, b, k);
	*n += k;
	out[*n] = '\0';
}

/* One UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates, at most U+10FFFF): its
 * length, or 0 when invalid. */
static size_t mcpj_utf8(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0], need, min, cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 1, min = 0x80, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		need = 2, min = 0x800, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 3, min = 0x10000, cp = c & 0x07;
	else
		return 0;
	if ((size_t)(end - p) <= need)
		return 0;
	for (unsigned i = 1; i <= need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need + 1;
}

static size_t mcpj_encode(unsigned cp, char b[4])
{
	if (cp < 0x80) {
		b[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	b[0] = (char)(0xf0 | (cp >> 18));
	b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	b[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A \u escape at j->p (after the backslash and 'u'), a surrogate pair taken whole. */
static int mcpj_uescape(struct mcpj *j, unsigned *cp)
{
	unsigned lo;

	if (j->end - j->p < 4 || mcpj_hex4(j->p, cp))
		return -EBADMSG;
	j->p += 4;
	if (*cp >= 0xdc00 && *cp <= 0xdfff)
		return -EBADMSG;
	if (*cp < 0xd800 || *cp > 0xdbff)
		return 0;
	if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || mcpj_hex4(j->p + 2, &lo) ||
	    lo < 0xdc00 || lo > 0xdfff)
		return -EBADMSG;
	j->p += 6;
	*cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
	return 0;
}

int mcpj_string(struct mcpj *j, char *out, size_t cap, size_t *outlen, bool *over)
{
	size_t n = 0;

	*over = false;
	if (out && cap)
		out[0] = '\0';
	if (j->p >= j->end || *j->p != '"')
		return -EBADMSG;
	j->p++;
	while (j->p < j->end) {
		unsigned char c = (unsigned char)*j->p;
		char b[4];
		unsigned cp;
		size_t k;

		if (c == '"') {
			j->p++;
			if (outlen)
				*outlen = n;
			return 0;
		}
		if (c < 0x20)
			return -EBADMSG;
		if (c != '\\') {
			k = mcpj_utf8((const unsigned char *)j->p, (const unsigned char *)j->end);
			if (!k)
				return -EBADMSG;
			mcpj_put(out, cap, &n, over, j->p, k);
			j->p += k;
			continue;
		}
		if (j->end - j->p < 2)
			return -EBADMSG;
		c = (unsigned char)j->p[1];
		j->p += 2;
		switch (c) {
		case '"':
		case '\\':
		case '/':
			b[0] = (char)c;
			break;
		case 'b':
			b[0] = '\b';
			break;
		case 'f':
			b[0] = '\f';
			break;
		case 'n':
			b[0] = '\n';
			break;
		case 'r':
			b[0] = '\r';
			break;
		case 't':
			b[0] = '\t';
			break;
		case 'u':
			if (mcpj_uescape(j, &cp))
				return -EBADMSG;
			mcpj_put(out, cap, &n, over, b, mcpj_encode(cp, b));
			continue;
		default:
			return -EBADMSG;
		}
		mcpj_put(out, cap, &n, over, b, 1);
	}
	return -EBADMSG;
}

static bool mcpj_digit(const struct mcpj *j)
{
	return j->p < j->end && *j->p >= '0' && *j->p <= '9';
}

static int mcpj_number(struct mcpj *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (!mcpj_digit(j))
		return -EBADMSG;
	if (*j->p == '0')
		j->p++;
	else
		while (mcpj_digit(j))
			j->p++;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (!mcpj_digit(j))
			return -EBADMSG;
		while (mcpj_digit(j))
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (!mcpj_digit(j))
			return -EBADMSG;
		while (mcpj_digit(j))
			j->p++;
	}
	return 0;
}

static int mcpj_lit(struct mcpj *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return -EBADMSG;
	j->p += n;
	return 0;
}

int mcpj_value(struct mcpj *j, int depth)
{
	bool over;

	mcpj_ws(j);
	if (j->p >= j->end || depth > MCP_DEPTH_MAX)
		return -EBADMSG;
	switch (*j->p) {
	case '"':
		return mcpj_string(j, NULL, 0, NULL, &over);
	case 't':
		return mcpj_lit(j, "true");
	case 'f':
		return mcpj_lit(j, "false");
	case 'n':
		return mcpj_lit(j, "null");
	case '{':
	case '[': {
		char close = *j->p == '{' ? '}' : ']';
		bool obj = close == '}';

		j->p++;
		mcpj_ws(j);
		if (j->p < j->end && *j->p == close) {
			j->p++;
			return 0;
		}
		for (;;) {
			if (obj && (mcpj_value_key(j) != 0))
				return -EBADMSG;
			if (mcpj_value(j, depth + 1))
				return -EBADMSG;
			mcpj_ws(j);
			if (j->p >= j->end)
				return -EBADMSG;
			if (*j->p == close) {
				j->p++;
				return 0;
			}
			if (*j->p++ != ',')
				return -EBADMSG;
			mcpj_ws(j);
		}
	}
	default:
		return mcpj_number(j);
	}
}

int mcpj_key(struct mcpj *j, char *key, size_t cap, size_t *klen)
{
	bool over;

	mcpj_ws(j);
	if (mcpj_string(j, key, cap, klen, &over))
		return -EBADMSG;
	if (over)
		*klen = 0; /* longer than any key we look for */
	mcpj_ws(j);
	if (j->p >= j->end || *j->p != ':')
		return -EBADMSG;
	j->p++;
	mcpj_ws(j);
	return 0;
}

int mcpj_value_key(struct mcpj *j)
{
	char k[8];
	size_t n;

	return mcpj_key(j, k, sizeof(k), &n);
}

bool mcpj_key_is(const char *key, size_t klen, const char *want)
{
	return klen == strlen(want) && memcmp(key, want, klen) == 0;
}

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

/* params: where a call names its target. Only its own members count: a "name" nested in
 * the arguments is the tool's business. */
static int mcp_params(struct mcpj *j, struct mcp_target *name, struct mcp_target *uri,
		      const char **why)
{
	j->p++;
	mcpj_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		char key[8];
		size_t klen;
		struct mcp_target *t = NULL;

		if (mcpj_key(j, key, sizeof(key), &klen))
			return -EBADMSG;
		if (mcpj_key_is(key, klen, "name"))
			t = name;
		else if (mcpj_key_is(key, klen, "uri"))
			t = uri;
		if (t && t->seen) {
			*why = "a duplicate key in the JSON-RPC params";
			return -EBADMSG;
		}
		if (t && j->p < j->end && *j->p == '"') {
			size_t n;

			t->seen = t->string = true;
			if (mcpj_string(j, t->buf, sizeof(t->buf), &n, &t->over) ||
			    strlen(t->buf) != n)
				return -EBADMSG; /* a NUL inside cannot be passed on */
		} else {
			if (t)
				t->seen = true;
			if (mcpj_value(j, 2))
				return -EBADMSG;
		}
		mcpj_ws(j);
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

/* The member value at j->p for one of the top-level keys. */
static int mcp_member(struct mcpj *j, const char *key, size_t klen, struct mcp_call *call,
		      struct mcp_target *name, struct mcp_target *uri, const char **why)
{
	const char *start = j->p;
	char ver[8];
	size_t n;
	bool over;

	if (mcpj_key_is(key, klen, "jsonrpc")) {
		if (mcpj_string(j, ver, sizeof(ver), &n, &over) || over || strcmp(ver, "2.0")) {
			*why = "not JSON-RPC 2.0";
			return -EBADMSG;
		}
		return 0;
	}
	if (mcpj_key_is(key, klen, "method")) {
		if (mcpj_string(j, call->method, sizeof(call->method), &n, &over) || over ||
		    n == 0 || strlen(call->method) != n || !mcp_text_ok(call->method)) {
			*why = "the JSON-RPC method is not a short string";
			return -EBADMSG;
		}
		return 0;
	}
	if (mcpj_key_is(key, klen, "id")) {
		if (j->p < j->end &&
		    (*j->p == '{' || *j->p == '[' || *j->p == 't' || *j->p == 'f')) {
			*why = "the JSON-RPC id is not a string, number or null";
			return -EBADMSG;
		}
		if (mcpj_value(j, 1))
			return -EBADMSG;
		if ((size_t)(j->p - start) > MCP_ID_MAX) {
			*why = "the JSON-RPC id is too long";
			return -EBADMSG;
		}
		memcpy(call->id, start, (size_t)(j->p - start));
		call->id[j->p - start] = '\0';
		return 0;
	}
	if (mcpj_key_is(key, klen, "params") && j->p < j->end && *j->p == '{')
		return mcp_params(j, name, uri, why);
	return mcpj_value(j, 1);
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
	struct mcp_target name = {0}, uri = {0};
	struct mcpj j = {body, body + len};
	unsigned seen = 0;

	memset(call, 0, sizeof(*call));
	strcpy(call->id, "null");
	*why = "the body is not one JSON object";
	mcpj_ws(&j);
	if (j.p < j.end && *j.p == '[') {
		*why = "JSON-RPC batches are refused (MCP 2025-06-18)";
		return -EBADMSG;
	}
	if (j.p >= j.end || *j.p != '{')
		return -EBADMSG;
	j.p++;
	mcpj_ws(&j);
	while (j.p < j.end && *j.p != '}') {
		static const char *const keys[] = {"jsonrpc", "method", "id", "params"};
		const char *w = NULL;
		char key[8];
		size_t klen;

		if (mcpj_key(&j, key, sizeof(key), &klen))
			return -EBADMSG;
		for (unsigned k = 0; k < 4; k++)
			if (mcpj_key_is(key, klen, keys[k])) {
				if (seen & (1u << k)) {
					*why = "a duplicate key in the JSON-RPC object";
					return -EBADMSG;
				}
				seen |= 1u << k;
			}
		if (mcp_member(&j, key, klen, call, &name, &uri, &w)) {
			if (w)
				*why = w;
			return -EBADMSG;
		}
		mcpj_ws(&j);
		if (j.p < j.end && *j.p == ',') {
			j.p++;
			mcpj_ws(&j);
			if (j.p < j.end && *j.p == '}')
				return -EBADMSG;
		} else if (j.p >= j.end || *j.p != '}') {
			return -EBADMSG;
		}
	}
	if (j.p >= j.end)
		return -EBADMSG;
	j.p++;
	mcpj_ws(&j);
	if (j.p != j.end)
		return -EBADMSG;
	if (!(seen & 1u)) {
		*why = "not JSON-RPC 2.0";
		return -EBADMSG;
	}
	return mcp_pick_target(call, &name, &uri, why);
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
	const char *val[] = {reason, scope, user};
	static const char *const key[] = {"reason", "scope", "user"};
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
	jw_obj_open(&w);
	jw_member_str(&w, "error", "deputy_denied");
	for (size_t i = 0; i < 3; i++) {
		const char *v = val[i] ? val[i] : "";

		jw_key(&w, key[i]);
		jw_strn(&w, v, strnlen(v, HH_DENY_FIELD_MAX));
	}
	jw_obj_close(&w);
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
