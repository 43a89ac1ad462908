// SPDX-License-Identifier: MIT
/*
 * httphead: HTTP/1.x request heads (strict), bodies, response heads (lenient) and the 403
 * the shim answers with (bodies are in httpbody.c). See httphead.h for why requests are
 * strict and responses are not.
 * It lives with the shared code because deputyd's JWKS endpoint parses its requests with it
 * too; the shim compiles it in (see the Makefile's SHIM_SHARED).
 */
#include "httphead.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "jsonw.h"
#include "util.h"

bool hh_is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool hh_is_token(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!hh_is_tchar((unsigned char)s[i]))
			return false;
	return true;
}

static char hh_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool hh_span_ieq(const char *buf, struct hh_span s, const char *lit)
{
	size_t n = strlen(lit);

	if (s.len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (hh_lower(buf[s.off + i]) != hh_lower(lit[i]))
			return false;
	return true;
}

/* ---- finding the end of a request head ---------------------------------------------- */

/* The states look alike (and like httpbody.c's) because each checks one byte of a CR LF
 * pair; folded together they would no longer say which byte was wrong where. */
enum { SC_TEXT, SC_CR, SC_CRLF, SC_CRLFCR };

int hh_scan_feed(struct hh_scan *s, const char *p, size_t n, size_t *used)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == 0)
			return -EBADMSG;
		switch (s->st) {
		case SC_TEXT:
			if (c == '\r')
				s->st = SC_CR;
			else if (c == '\n')
				return -EBADMSG;
			else
				s->started = true;
			break;
		case SC_CR:
			if (c != '\n')
				return -EBADMSG;
			/* RFC 9112 §2.2: empty lines before a request line are ignored. */
			s->st = s->started ? SC_CRLF : SC_TEXT;
			break;
		case SC_CRLF:
			if (c == '\r')
				s->st = SC_CRLFCR;
			else if (c == '\n')
				return -EBADMSG;
			else
				s->st = SC_TEXT;
			break;
		case SC_CRLFCR:
			if (c != '\n')
				return -EBADMSG;
			*used = i + 1;
			s->st = SC_TEXT;
			s->started = false;
			return 1;
		}
	}
	*used = n;
	return 0;
}

/* ---- request heads --------------------------------------------------------------------- */

static const char *const hh_methods[] = {
    "GET",   "HEAD",   "POST",	   "PUT",	"DELETE", "CONNECT", "OPTIONS",
    "TRACE", "PATCH",  "PROPFIND", "PROPPATCH", "MKCOL",  "COPY",    "MOVE",
    "LOCK",  "UNLOCK", "REPORT",   "SEARCH",	"PURGE",  "QUERY",   "PRI",
};

bool hh_method_known(const char *m)
{
	for (size_t i = 0; i < sizeof(hh_methods) / sizeof(hh_methods[0]); i++)
		if (strcmp(m, hh_methods[i]) == 0)
			return true;
	return false;
}

enum hh_prefix hh_method_prefix(const char *p, size_t n)
{
	bool maybe = false;

	/* Tolerate the empty lines a request may start with. */
	while (n && (*p == '\r' || *p == '\n')) {
		p++;
		n--;
	}
	if (n == 0)
		return HH_PREFIX_MAYBE;
	for (size_t i = 0; i < sizeof(hh_methods) / sizeof(hh_methods[0]); i++) {
		size_t ml = strlen(hh_methods[i]);

		if (n <= ml) {
			if (memcmp(p, hh_methods[i], n) == 0)
				maybe = true;
		} else if (memcmp(p, hh_methods[i], ml) == 0 && p[ml] == ' ') {
			return HH_PREFIX_YES;
		}
	}
	return maybe ? HH_PREFIX_MAYBE : HH_PREFIX_NO;
}

bool hh_is_vchar_obs(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

int hh_host_norm(const char *p, size_t n, char *out, size_t cap, int *port)
{
	size_t hl, i;
	const char *colon = NULL;

	*port = -1;
	if (n == 0 || n >= cap)
		return -EINVAL;
	if (p[0] == '[') {
		const char *rb = memchr(p, ']', n);

		if (!rb)
			return -EINVAL;
		hl = (size_t)(rb - p) + 1;
		for (i = 1; i < hl - 1; i++)
			if (!strchr("0123456789abcdefABCDEF:.", p[i]))
				return -EINVAL;
		if (hl < n) {
			if (p[hl] != ':')
				return -EINVAL;
			colon = p + hl;
		}
	} else {
		colon = memchr(p, ':', n);
		hl = colon ? (size_t)(colon - p) : n;
		if (hl == 0)
			return -EINVAL;
		for (i = 0; i < hl; i++) {
			unsigned char c = (unsigned char)p[i];

			/* RFC 3986 reg-name without percent-encoding: what DNS names use. */
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
				return -EINVAL;
		}
	}
	if (colon) {
		size_t pl = n - (size_t)(colon - p) - 1;
		long v = 0;

		if (pl == 0 || pl > 5)
			return -EINVAL;
		for (i = 0; i < pl; i++) {
			if (colon[1 + i] < '0' || colon[1 + i] > '9')
				return -EINVAL;
			v = v * 10 + (colon[1 + i] - '0');
		}
		if (v < 1 || v > 65535)
			return -EINVAL;
		*port = (int)v;
	}
	for (i = 0; i < hl; i++)
		out[i] = hh_lower(p[i]);
	/* "example.com." and "example.com" name the same host. */
	if (hl > 1 && out[hl - 1] == '.')
		hl--;
	out[hl] = '\0';
	return 0;
}

/* Content-Length: 1*DIGIT, nothing else (no sign, no list, no spaces inside). */
static int hh_parse_length(const char *p, size_t n, int64_t *out)
{
	int64_t v = 0;

	if (n == 0 || n > 18)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EINVAL;
		v = v * 10 + (p[i] - '0');
	}
	*out = v;
	return 0;
}

/* Transfer-Encoding must end in exactly one "chunked"; any coding after it or a second
 * chunked makes the framing something the server and the shim could read differently. */
static int hh_parse_te(const char *p, size_t n, bool *chunked)
{
	size_t i = 0;
	int nchunked = 0;
	bool last_chunked = false;

	while (i < n) {
		size_t s, e;

		while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
			i++;
		if (i == n)
			break;
		s = i;
		while (i < n && hh_is_tchar((unsigned char)p[i]))
			i++;
		e = i;
		if (e == s)
			return -EINVAL;
		while (i < n && (p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i < n && p[i] != ',')
			return -EINVAL; /* parameters on a transfer coding: refuse */
		last_chunked = (e - s == 7 && strncasecmp(p + s, "chunked", 7) == 0);
		if (last_chunked)
			nchunked++;
	}
	if (nchunked != 1 || !last_chunked)
		return -EINVAL;
	*chunked = true;
	return 0;
}

static bool hh_list_has(const char *p, size_t n, const char *tok)
{
	size_t tl = strlen(tok);

	for (size_t i = 0; i + tl <= n; i++) {
		if (strncasecmp(p + i, tok, tl) == 0 &&
		    (i == 0 || p[i - 1] == ' ' || p[i - 1] == ',' || p[i - 1] == '\t') &&
		    (i + tl == n || p[i + tl] == ' ' || p[i + tl] == ',' || p[i + tl] == '\t' ||
		     p[i + tl] == ';'))
			return true;
	}
	return false;
}

/* Not dp_err_set: the shim compiles this file in without util.c, and the reasons are fixed
 * text with nothing to escape. Only failures pay for the copy. */
#define BAD(why)                                                                                   \
	do {                                                                                       \
		snprintf(err->msg, sizeof(err->msg), "%s", (why));                                 \
		return -EBADMSG;                                                                   \
	} while (0)

static int hh_parse_target(const char *buf, struct hh_req *r, struct dp_err *err)
{
	const char *t = buf + r->target.off;
	size_t n = r->target.len;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];

		if (c <= 0x20 || c == 0x7f || c == '#')
			BAD("invalid request target");
	}
	if (r->is_connect) {
		if (hh_host_norm(t, n, r->abs_host, sizeof(r->abs_host), &r->abs_port) < 0 ||
		    r->abs_port < 0)
			BAD("invalid CONNECT target");
		r->absolute_form = true;
		return 0;
	}
	if (n == 1 && t[0] == '*') {
		if (!hh_span_ieq(buf, r->method, "OPTIONS"))
			BAD("invalid request target");
		return 0;
	}
	if (t[0] == '/')
		return 0;
	/* absolute-form: scheme "://" authority [path] */
	{
		size_t i = 0, as, ae;

		while (i < n && t[i] != ':')
			i++;
		if (!((i == 4 && strncasecmp(t, "http", 4) == 0) ||
		      (i == 5 && strncasecmp(t, "https", 5) == 0)))
			BAD("invalid request target");
		if (n - i < 3 || memcmp(t + i, "://", 3) != 0)
			BAD("invalid request target");
		as = i + 3;
		ae = as;
		while (ae < n && t[ae] != '/' && t[ae] != '?')
			ae++;
		if (memchr(t + as, '@', ae - as))
			BAD("userinfo in request target");
		if (hh_host_norm(t + as, ae - as, r->abs_host, sizeof(r->abs_host), &r->abs_port) <
		    0)
			BAD("invalid host in request target");
		r->absolute_form = true;
	}
	return 0;
}

/* Over 100 lines on purpose: one pass over the head, and every smuggling rule (RFC 9112
 * §6.3) next to the others, so a reader can check them together. */
int hh_req_parse(const char *buf, size_t len, struct hh_req *r, struct dp_err *err)
{
	size_t i = 0, ls, le;
	int ncl = 0, nte = 0, nhost = 0;
	bool chunked = false;

	memset(r, 0, offsetof(struct hh_req, hdr));
	r->content_length = -1;
	r->abs_port = -1;
	if (len > HH_HEAD_MAX)
		BAD("request head too large");
	while (i + 1 < len && buf[i] == '\r' && buf[i + 1] == '\n')
		i += 2;
	r->start.off = (uint32_t)i;
	r->start.len = (uint32_t)(len - i);

	/* request-line = method SP request-target SP HTTP-version CRLF */
	ls = i;
	while (i < len && buf[i] != '\r')
		i++;
	if (i + 1 >= len || buf[i + 1] != '\n')
		BAD("malformed request line");
	le = i;
	{
		size_t p = ls, m_end, t_end;

		while (p < le && hh_is_tchar((unsigned char)buf[p]))
			p++;
		if (p == ls || p >= le || buf[p] != ' ' || p - ls > 32)
			BAD("malformed request line");
		m_end = p;
		p++;
		while (p < le && buf[p] != ' ')
			p++;
		if (p == m_end + 1 || p >= le)
			BAD("malformed request line");
		t_end = p;
		p++;
		if (le - p != 8 || memcmp(buf + p, "HTTP/1.", 7) != 0 ||
		    (buf[p + 7] != '0' && buf[p + 7] != '1'))
			BAD("unsupported HTTP version");
		r->minor = buf[p + 7] - '0';
		r->method.off = (uint32_t)ls;
		r->method.len = (uint32_t)(m_end - ls);
		r->target.off = (uint32_t)(m_end + 1);
		r->target.len = (uint32_t)(t_end - m_end - 1);
	}
	r->is_head = hh_span_ieq(buf, r->method, "HEAD");
	r->is_connect = hh_span_ieq(buf, r->method, "CONNECT");
	if (hh_parse_target(buf, r, err) < 0)
		return -EBADMSG;
	i = le + 2;

	/* header-field = field-name ":" OWS field-value OWS, one per line, no folding */
	r->nhdr = 0;
	while (i < len) {
		size_t hs = i, ne, vs, ve;

		if (buf[i] == '\r') {
			if (i + 2 != len || buf[i + 1] != '\n')
				BAD("malformed request head");
			break;
		}
		if (buf[i] == ' ' || buf[i] == '\t')
			BAD("obsolete line folding");
		while (i < len && hh_is_tchar((unsigned char)buf[i]))
			i++;
		if (i == hs)
			BAD("invalid header name");
		if (i >= len || buf[i] != ':')
			BAD(buf[i] == ' ' || buf[i] == '\t' ? "whitespace before colon"
							    : "invalid header name");
		ne = i;
		i++;
		while (i < len && (buf[i] == ' ' || buf[i] == '\t'))
			i++;
		vs = i;
		while (i < len && buf[i] != '\r') {
			if (!hh_is_vchar_obs((unsigned char)buf[i]))
				BAD("invalid header value");
			i++;
		}
		if (i + 1 >= len || buf[i + 1] != '\n')
			BAD("malformed header line");
		ve = i;
		while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
			ve--;
		i += 2;
		if (r->nhdr == HH_MAX_HEADERS)
			BAD("too many headers");
		r->hdr[r->nhdr].name = (struct hh_span){(uint32_t)hs, (uint32_t)(ne - hs)};
		r->hdr[r->nhdr].value = (struct hh_span){(uint32_t)vs, (uint32_t)(ve - vs)};
		r->hdr[r->nhdr].line = (struct hh_span){(uint32_t)hs, (uint32_t)(i - hs)};

		if (hh_span_ieq(buf, r->hdr[r->nhdr].name, "content-length")) {
			int64_t v;

			if (++ncl > 1)
				BAD("more than one Content-Length");
			if (hh_parse_length(buf + vs, ve - vs, &v) < 0)
				BAD("invalid Content-Length");
			r->content_length = v;
		} else if (hh_span_ieq(buf, r->hdr[r->nhdr].name, "transfer-encoding")) {
			if (++nte > 1)
				BAD("more than one Transfer-Encoding");
			if (hh_parse_te(buf + vs, ve - vs, &chunked) < 0)
				BAD("unsupported Transfer-Encoding");
		} else if (hh_span_ieq(buf, r->hdr[r->nhdr].name, "host")) {
			if (++nhost > 1)
				BAD("more than one Host");
			r->host = r->hdr[r->nhdr].value;
		} else if (hh_span_ieq(buf, r->hdr[r->nhdr].name, "expect")) {
			r->expect_continue = hh_list_has(buf + vs, ve - vs, "100-continue");
		} else if (hh_span_ieq(buf, r->hdr[r->nhdr].name, "upgrade")) {
			r->upgrade = true;
		}
		r->nhdr++;
	}
	if (ncl && nte)
		BAD("Content-Length with Transfer-Encoding");
	if (nte && r->minor == 0)
		BAD("Transfer-Encoding in HTTP/1.0");
	r->chunked = chunked;
	if (r->minor == 1 && nhost == 0)
		BAD("missing Host");
	if (nhost && r->host.len == 0 && !r->absolute_form)
		BAD("empty Host");
	return 0;
}

ssize_t hh_req_rewrite(const char *buf, size_t len, const struct hh_req *r, const char *name,
		       const char *value, char *out, size_t cap)
{
	size_t o = 0, nl = strlen(name), vl = strlen(value), pos;
	int kept = 0;

	if (nl == 0)
		return -EINVAL;
	for (size_t i = 0; i < nl; i++)
		if (!hh_is_tchar((unsigned char)name[i]))
			return -EINVAL;
	for (size_t i = 0; i < vl; i++)
		if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
			return -EINVAL;
	if (len < 2)
		return -EINVAL;

	pos = r->start.off;
	/* the request line */
	{
		size_t rl_end = r->nhdr ? r->hdr[0].line.off : len - 2;

		if (rl_end - pos > cap)
			return -ENOSPC;
		memcpy(out, buf + pos, rl_end - pos);
		o = rl_end - pos;
	}
	for (int h = 0; h < r->nhdr; h++) {
		struct hh_span ln = r->hdr[h].line;

		if (r->hdr[h].name.len == nl &&
		    strncasecmp(buf + r->hdr[h].name.off, name, nl) == 0)
			continue;
		if (o + ln.len > cap)
			return -ENOSPC;
		memcpy(out + o, buf + ln.off, ln.len);
		o += ln.len;
		kept++;
	}
	/* The head sent must be one this parser would accept: at most HH_MAX_HEADERS lines and
	 * HH_HEAD_MAX bytes once the header is added. */
	if (kept == HH_MAX_HEADERS || o + nl + 2 + vl + 4 > HH_HEAD_MAX)
		return -E2BIG;
	if (o + nl + 2 + vl + 4 > cap)
		return -ENOSPC;
	memcpy(out + o, name, nl);
	o += nl;
	memcpy(out + o, ": ", 2);
	o += 2;
	memcpy(out + o, value, vl);
	o += vl;
	memcpy(out + o, "\r\n\r\n", 4);
	o += 4;
	return (ssize_t)o;
}

/* ---- responses ------------------------------------------------------------------------- */

enum { RS_LINE, RS_CR, RS_DONE };

void hh_resp_init(struct hh_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->content_length = -1;
}

static int hh_resp_line(struct hh_resp *r)
{
	char *l = r->line;
	size_t n = r->linelen;

	if (!r->got_status) {
		/* HTTP/1.x SP 3DIGIT [SP reason] */
		if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || l[8] != ' ' || l[9] < '1' ||
		    l[9] > '9' || l[10] < '0' || l[10] > '9' || l[11] < '0' || l[11] > '9' ||
		    (n > 12 && l[12] != ' '))
			return -EBADMSG;
		r->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
		r->got_status = true;
		return 0;
	}
	{
		char *colon = memchr(l, ':', n);
		size_t nl, vs;

		if (!colon)
			return 0; /* observation only: ignore what we cannot read */
		nl = (size_t)(colon - l);
		vs = nl + 1;
		while (vs < n && (l[vs] == ' ' || l[vs] == '\t'))
			vs++;
		while (n > vs && (l[n - 1] == ' ' || l[n - 1] == '\t'))
			n--;
		if (nl == 14 && strncasecmp(l, "content-length", 14) == 0) {
			int64_t v;

			if (hh_parse_length(l + vs, n - vs, &v) < 0 ||
			    (r->content_length >= 0 && r->content_length != v))
				r->cl_bad = true;
			else
				r->content_length = v;
		} else if (nl == 17 && strncasecmp(l, "transfer-encoding", 17) == 0) {
			bool ch = false;

			if (hh_parse_te(l + vs, n - vs, &ch) == 0)
				r->chunked = true;
			else
				r->te_other = true;
		}
	}
	return 0;
}

int hh_resp_feed(struct hh_resp *r, const char *p, size_t n, size_t *used)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (++r->head_bytes > HH_HEAD_MAX)
			return -EBADMSG;
		if (c == '\n') {
			/* Lenient: a bare LF ends a line too (we only observe). */
			if (r->linelen == 0 && r->got_status) {
				*used = i + 1;
				return 1;
			}
			if (r->linelen == 0 && r->head_bytes <= 2)
				continue;
			if (hh_resp_line(r) < 0)
				return -EBADMSG;
			r->linelen = 0;
			continue;
		}
		if (c == '\r')
			continue;
		if (!r->got_status && r->linelen == 0 && c != 'H')
			return -EBADMSG;
		if (r->linelen < sizeof(r->line))
			r->line[r->linelen++] = c;
	}
	*used = n;
	return 0;
}

enum hh_body_mode hh_resp_body_mode(const struct hh_resp *r, bool req_head, bool req_connect)
{
	/* RFC 9112 §6.3, in order. */
	if (req_head || (r->status >= 100 && r->status < 200) || r->status == 204 ||
	    r->status == 304)
		return HH_BODY_NONE;
	if (req_connect && r->status >= 200 && r->status < 300)
		return HH_BODY_CLOSE; /* a tunnel */
	if (r->te_other)
		return HH_BODY_CLOSE;
	if (r->chunked)
		return HH_BODY_CHUNKED;
	if (r->cl_bad)
		return HH_BODY_CLOSE;
	if (r->content_length >= 0)
		return HH_BODY_LENGTH;
	return HH_BODY_CLOSE;
}

/* ---- the refusal ----------------------------------------------------------------------- */

void hh_deny_json(struct jw *w, const char *reason, const char *scope, const char *user)
{
	const char *val[] = {reason, scope, user};
	static const char *const key[] = {"reason", "scope", "user"};

	jw_obj_open(w);
	jw_member_str(w, "error", "deputy_denied");
	for (size_t i = 0; i < 3; i++) {
		const char *v = val[i] ? val[i] : "";

		jw_key(w, key[i]);
		jw_strn(w, v, strnlen(v, HH_DENY_FIELD_MAX));
	}
	jw_obj_close(w);
}

ssize_t hh_deny_response(char *out, size_t cap, const char *reason, const char *scope,
			 const char *user)
{
	char body[3 * 6 * HH_DENY_FIELD_MAX + 128];
	struct jw w;
	ssize_t o;
	int n;

	/* Invalid UTF-8 becomes '?' so the body always parses; each field is cut at
	 * HH_DENY_FIELD_MAX bytes so the response always fits (6 bytes out per byte in). */
	jw_init(&w, body, sizeof(body), JW_UTF8_REPLACE);
	hh_deny_json(&w, reason, scope, user);
	o = jw_end(&w);
	if (o < 0)
		return -ENOSPC;
	n = snprintf(out, cap,
		     "HTTP/1.1 403 Forbidden\r\n"
		     "Content-Type: application/json\r\n"
		     "Content-Length: %zu\r\n"
		     "Connection: close\r\n"
		     "\r\n",
		     (size_t)o);
	if (n < 0 || (size_t)n + (size_t)o > cap)
		return -ENOSPC;
	memcpy(out + n, body, (size_t)o);
	return (ssize_t)(n + o);
}
