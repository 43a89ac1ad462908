// SPDX-License-Identifier: MIT
/* Unit tests of daemon/lib/httphead.c: framing under every split, smuggling shapes, rewriting. */
#include "unit.h"

#include "../../daemon/lib/httphead.c"
#include "../../daemon/lib/httpbody.c"

#include <jansson.h>

/* A request stream framer built only from the httphead pieces, the way the shim's
 * connection state machine uses them: it records each head and the body bytes after it. */
struct framer {
	char head[HH_HEAD_MAX + 16];
	size_t hlen;
	struct hh_scan scan;
	struct hh_body body;
	bool in_body;
	int nreq;
	char methods[16][16];
	char targets[16][64];
	size_t body_len[16];
	char body_bytes[16][256];
	const char *why;
	struct dp_err perr;
	int err;
};

static void copy_span(char *dst, size_t cap, const char *buf, struct hh_span s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;

	memcpy(dst, buf + s.off, n);
	dst[n] = 0;
}

static void framer_feed(struct framer *f, const char *p, size_t n)
{
	while (n && !f->err) {
		if (f->in_body) {
			bool done = false;
			ssize_t k = hh_body_feed(&f->body, p, n, &done);

			if (k < 0) {
				f->err = -1;
				f->why = "body";
				return;
			}
			{
				size_t *bl = &f->body_len[f->nreq - 1];

				if (*bl + (size_t)k < sizeof(f->body_bytes[0]))
					memcpy(f->body_bytes[f->nreq - 1] + *bl, p, (size_t)k);
				*bl += (size_t)k;
			}
			p += k;
			n -= (size_t)k;
			if (done)
				f->in_body = false;
			continue;
		}
		{
			size_t used = 0;
			int rc = hh_scan_feed(&f->scan, p, n, &used);
			struct hh_req r;

			if (rc < 0) {
				f->err = -1;
				f->why = "bare CR or LF";
				return;
			}
			if (f->hlen + used > HH_HEAD_MAX) {
				f->err = -1;
				f->why = "request head too large";
				return;
			}
			memcpy(f->head + f->hlen, p, used);
			f->hlen += used;
			p += used;
			n -= used;
			if (rc == 0)
				return;
			if (hh_req_parse(f->head, f->hlen, &r, &f->perr) < 0) {
				f->why = f->perr.msg;
				f->err = -1;
				return;
			}
			if (f->nreq < 16) {
				copy_span(f->methods[f->nreq], 16, f->head, r.method);
				copy_span(f->targets[f->nreq], 64, f->head, r.target);
				f->body_len[f->nreq] = 0;
				f->nreq++;
			}
			f->hlen = 0;
			if (r.chunked)
				hh_body_init(&f->body, HH_BODY_CHUNKED, 0);
			else if (r.content_length > 0)
				hh_body_init(&f->body, HH_BODY_LENGTH, (uint64_t)r.content_length);
			else
				continue;
			f->in_body = true;
		}
	}
}

static const char pipelined[] =
    "GET /a HTTP/1.1\r\nHost: api.test\r\n\r\n"
    "POST /b?x=1 HTTP/1.1\r\nHost: api.test\r\nContent-Length: 11\r\n\r\nhello world"
    "PUT /c HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    "\r\nDELETE /d HTTP/1.1\r\nHost: api.test\r\nExpect: 100-continue\r\n"
    "Content-Length: 3\r\n\r\nabc";

static void check_pipelined(struct framer *f, const char *label)
{
	if (f->err)
		fail("%s: error %s", label, f->why);
	if (f->nreq != 4)
		fail("%s: %d requests", label, f->nreq);
	check_str(f->methods[0], "GET");
	check_str(f->targets[1], "/b?x=1");
	check(f->body_len[1] == 11 && memcmp(f->body_bytes[1], "hello world", 11) == 0);
	check_str(f->methods[2], "PUT");
	check(f->body_len[2] ==
	      strlen("5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"));
	check_str(f->methods[3], "DELETE");
	check(f->body_len[3] == 3);
	check(!f->in_body);
}

static void test_pipelined_whole(void)
{
	static struct framer f;

	memset(&f, 0, sizeof(f));
	framer_feed(&f, pipelined, sizeof(pipelined) - 1);
	check_pipelined(&f, "whole");
}

static void test_pipelined_byte_at_a_time(void)
{
	static struct framer f;

	memset(&f, 0, sizeof(f));
	for (size_t i = 0; i < sizeof(pipelined) - 1; i++)
		framer_feed(&f, pipelined + i, 1);
	check_pipelined(&f, "bytewise");
}

static void test_pipelined_every_two_way_split(void)
{
	static struct framer f;
	size_t n = sizeof(pipelined) - 1;

	for (size_t cut = 0; cut <= n; cut++) {
		memset(&f, 0, sizeof(f));
		framer_feed(&f, pipelined, cut);
		framer_feed(&f, pipelined + cut, n - cut);
		if (f.err || f.nreq != 4)
			fail("split at %zu: err=%d nreq=%d", cut, f.err, f.nreq);
	}
}

static int parse(const char *s, struct hh_req *r, const char **why)
{
	static struct dp_err err;
	struct hh_scan sc = {0};
	size_t used = 0, n = strlen(s);
	int rc = hh_scan_feed(&sc, s, n, &used);

	if (rc < 0) {
		*why = "bare CR or LF";
		return rc;
	}
	if (rc == 0 || used != n) {
		*why = "incomplete";
		return -EAGAIN;
	}
	*why = err.msg;
	return hh_req_parse(s, n, r, &err);
}

static void expect_refused(const char *req, const char *want_why)
{
	static struct hh_req r;
	const char *why = NULL;
	int rc = parse(req, &r, &why);

	if (rc != -EBADMSG)
		fail("accepted: %s", req);
	if (want_why && strcmp(why, want_why) != 0)
		fail("reason \"%s\", want \"%s\"", why, want_why);
}

static void test_smuggling_two_content_length(void)
{
	expect_refused(
	    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
	    "more than one Content-Length");
	expect_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
		       "invalid Content-Length");
	expect_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
		       "invalid Content-Length");
	expect_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
		       "invalid Content-Length");
}

static void test_smuggling_cl_te(void)
{
	expect_refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
		       "Transfer-Encoding: chunked\r\n\r\n",
		       "Content-Length with Transfer-Encoding");
	expect_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
		       "unsupported Transfer-Encoding");
	expect_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
		       "Transfer-Encoding: chunked\r\n\r\n",
		       "more than one Transfer-Encoding");
	expect_refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
		       "unsupported Transfer-Encoding");
	expect_refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		       "Transfer-Encoding in HTTP/1.0");
}

static void test_smuggling_bare_cr_lf(void)
{
	expect_refused("GET / HTTP/1.1\nHost: a\r\n\r\n", "bare CR or LF");
	expect_refused("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", "bare CR or LF");
	expect_refused("GET / HTTP/1.1\r\nHost: a\r\n\n", "bare CR or LF");
	{
		struct hh_scan sc = {0};
		size_t used;

		check(hh_scan_feed(&sc, "GET / HTTP/1.1\r\nX: a\0b", 24, &used) == -EBADMSG);
	}
}

static void test_smuggling_obs_fold_and_names(void)
{
	expect_refused("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
		       "obsolete line folding");
	expect_refused("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n",
		       "whitespace before colon");
	expect_refused("GET / HTTP/1.1\r\nHost: a\r\nBad Name: 3\r\n\r\n", NULL);
	expect_refused("GET / HTTP/1.1\r\nHost: a\r\nBad\"Name: 3\r\n\r\n", "invalid header name");
	expect_refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host");
	expect_refused("GET / HTTP/1.1\r\n\r\n", "missing Host");
	expect_refused("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line");
	expect_refused("GET / HTTP/2.0\r\nHost: a\r\n\r\n", "unsupported HTTP version");
	expect_refused("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", "unsupported HTTP version");
	expect_refused("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "invalid request target");
	expect_refused("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", "userinfo in request target");
}

static void test_head_too_large(void)
{
	static char big[HH_HEAD_MAX + 200];
	static struct framer f;
	size_t o;

	o = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
	memset(big + o, 'x', HH_HEAD_MAX);
	o += HH_HEAD_MAX;
	memcpy(big + o, "\r\n\r\n", 4);
	o += 4;
	memset(&f, 0, sizeof(f));
	framer_feed(&f, big, o);
	check(f.err);
	check_str(f.why, "request head too large");
	big[o] = 0;
	{
		static struct hh_req r;
		struct dp_err err;

		check(hh_req_parse(big, o, &r, &err) == -EBADMSG);
		check_str(err.msg, "request head too large");
	}
}

static void test_chunked_malformed(void)
{
	static const char *bad[] = {
	    "x\r\n",			 /* not hex */
	    "0x5\r\nhello\r\n0\r\n\r\n", /* 0x prefix */
	    "5\nhello\r\n0\r\n\r\n",	 /* bare LF after size */
	    "5\r\nhelloX\r\n",		 /* data longer than size */
	    "5;a=\"\n\"\r\n",		 /* LF inside an extension */
	    "fffffffffffffffff\r\n",	 /* overflow */
	    "0\r\n bad-trailer\r\n\r\n", /* folded trailer */
	    "-1\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct hh_body b;
		bool done = false;
		ssize_t k;

		hh_body_init(&b, HH_BODY_CHUNKED, 0);
		k = hh_body_feed(&b, bad[i], strlen(bad[i]), &done);
		if (k != -EBADMSG)
			fail("accepted chunked body #%zu (%zd)", i, k);
	}
}

static void test_chunked_done_position(void)
{
	const char *s = "3\r\nabc\r\n0\r\n\r\nGET";
	struct hh_body b;
	bool done = false;
	ssize_t k;

	hh_body_init(&b, HH_BODY_CHUNKED, 0);
	k = hh_body_feed(&b, s, strlen(s), &done);
	check(done);
	check(k == (ssize_t)strlen(s) - 3);
}

static void test_expect_and_flags(void)
{
	static struct hh_req r;
	const char *why;

	check(parse("POST /u HTTP/1.1\r\nHost: API.Test:8443\r\nExpect: 100-continue\r\n"
		    "Content-Length: 10\r\n\r\n",
		    &r, &why) == 0);
	check(r.expect_continue);
	check(r.content_length == 10);
	check(!r.chunked);
	check(parse("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", &r, &why) == 0);
	check(r.is_head);
	check(parse("CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n", &r, &why) == 0);
	check(r.is_connect);
	check_str(r.abs_host, "api.test");
	check(r.abs_port == 443);
	check(parse("GET HTTPS://API.test:8443/x?y HTTP/1.1\r\nHost: api.test:8443\r\n\r\n", &r,
		    &why) == 0);
	check(r.absolute_form);
	check_str(r.abs_host, "api.test");
	check(r.abs_port == 8443);
	check(parse("GET / HTTP/1.0\r\n\r\n", &r, &why) == 0);
	check(r.minor == 0 && r.host.len == 0);
}

static void test_host_norm(void)
{
	char h[HH_HOST_MAX];
	int port;

	check(hh_host_norm("API.Test:8443", 13, h, sizeof(h), &port) == 0);
	check_str(h, "api.test");
	check(port == 8443);
	check(hh_host_norm("example.com.", 12, h, sizeof(h), &port) == 0);
	check_str(h, "example.com");
	check(port == -1);
	check(hh_host_norm("[::1]:443", 9, h, sizeof(h), &port) == 0);
	check_str(h, "[::1]");
	check(port == 443);
	check(hh_host_norm("a b", 3, h, sizeof(h), &port) < 0);
	check(hh_host_norm("a:", 2, h, sizeof(h), &port) < 0);
	check(hh_host_norm("a:99999", 7, h, sizeof(h), &port) < 0);
	check(hh_host_norm("a@b", 3, h, sizeof(h), &port) < 0);
	check(hh_host_norm("", 0, h, sizeof(h), &port) < 0);
}

static void test_rewrite_replaces_every_header(void)
{
	const char *req = "POST /api/send HTTP/1.1\r\nHost: mail.internal\r\n"
			  "authorization: Basic c2E6c2VjcmV0\r\nX-Keep: 1\r\n"
			  "AUTHORIZATION: Bearer service-account\r\nContent-Length: 2\r\n\r\n";
	const char *want = "POST /api/send HTTP/1.1\r\nHost: mail.internal\r\nX-Keep: 1\r\n"
			   "Content-Length: 2\r\nAuthorization: Bearer tok.en.sig\r\n\r\n";
	static struct hh_req r;
	static char out[1024];
	const char *why;
	ssize_t n;

	check(parse(req, &r, &why) == 0);
	n = hh_req_rewrite(req, strlen(req), &r, "Authorization", "Bearer tok.en.sig", out,
			   sizeof(out));
	check(n == (ssize_t)strlen(want));
	out[n] = 0;
	check_str(out, want);
	/* The rewritten head must itself parse to the same request. */
	check(parse(out, &r, &why) == 0);
	check(r.content_length == 2);
}

static void test_rewrite_no_headers_other_name_and_limits(void)
{
	const char *req = "\r\nGET / HTTP/1.0\r\n\r\n";
	static struct hh_req r;
	static char out[256];
	const char *why;
	ssize_t n;

	check(parse(req, &r, &why) == 0);
	n = hh_req_rewrite(req, strlen(req), &r, "X-Deputy-Token", "Bearer t", out, sizeof(out));
	check(n > 0);
	out[n] = 0;
	check_str(out, "GET / HTTP/1.0\r\nX-Deputy-Token: Bearer t\r\n\r\n");
	check(hh_req_rewrite(req, strlen(req), &r, "Bad Name", "v", out, sizeof(out)) == -EINVAL);
	check(hh_req_rewrite(req, strlen(req), &r, "X", "a\r\nInjected: 1", out, sizeof(out)) ==
	      -EINVAL);
	check(hh_req_rewrite(req, strlen(req), &r, "X", "v", out, 10) == -ENOSPC);
}

/* Found by fuzz_httphead: a head at the header limit without Authorization parsed, and its
 * rewrite (one header more) would have been refused by the same parser. */
static void test_rewrite_stays_within_the_parser_limits(void)
{
	static char req[HH_MAX_HEADERS * 16 + 64], out[sizeof(req) + 64];
	static struct hh_req r;
	struct dp_err err;
	size_t n = 0;
	ssize_t m;

	n += sprintf(req + n, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (int i = 1; i < HH_MAX_HEADERS; i++)
		n += sprintf(req + n, "X-%d: v\r\n", i);
	n += sprintf(req + n, "\r\n");
	check(hh_req_parse(req, n, &r, &err) == 0);
	check(hh_req_rewrite(req, n, &r, "Authorization", "Bearer t", out, sizeof(out)) == -E2BIG);
	/* replacing a header keeps the count: allowed, and the result parses */
	m = hh_req_rewrite(req, n, &r, "X-1", "Bearer t", out, sizeof(out));
	check(m > 0);
	check(hh_req_parse(out, (size_t)m, &r, &err) == 0);
}

static void test_method_prefix(void)
{
	check(hh_method_prefix("G", 1) == HH_PREFIX_MAYBE);
	check(hh_method_prefix("GET", 3) == HH_PREFIX_MAYBE);
	check(hh_method_prefix("GET ", 4) == HH_PREFIX_YES);
	check(hh_method_prefix("POST /", 6) == HH_PREFIX_YES);
	check(hh_method_prefix("\x16\x03\x01", 3) == HH_PREFIX_NO);
	check(hh_method_prefix("hello", 5) == HH_PREFIX_NO);
	check(hh_method_prefix("PING", 4) == HH_PREFIX_NO);
	check(hh_method_prefix("GETX", 4) == HH_PREFIX_NO);
	/* HTTP/2 prior knowledge is refused as a head, not waved through as "not HTTP" */
	check(hh_method_prefix("PRI * HTTP/2.0\r\n", 16) == HH_PREFIX_YES);
}

static void test_response_framing(void)
{
	const char *s = "HTTP/1.1 100 Continue\r\n\r\n"
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
			"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
			"3\r\nabc\r\n0\r\n\r\n"
			"HTTP/1.1 204 No Content\r\n\r\n";
	int statuses[8], ns = 0;
	size_t n = strlen(s);

	/* byte at a time, as the shim may see it */
	struct hh_resp r;
	struct hh_body b;
	bool in_body = false;

	hh_resp_init(&r);
	for (size_t i = 0; i < n; i++) {
		const char *p = s + i;

		if (in_body) {
			bool done;
			ssize_t k = hh_body_feed(&b, p, 1, &done);

			check(k == 1);
			if (done) {
				in_body = false;
				hh_resp_init(&r);
			}
			continue;
		}
		{
			size_t used;
			int rc = hh_resp_feed(&r, p, 1, &used);

			check(rc >= 0);
			if (rc == 1) {
				enum hh_body_mode m = hh_resp_body_mode(&r, false, false);

				check(ns < 8);
				statuses[ns++] = r.status;
				if (m == HH_BODY_NONE) {
					hh_resp_init(&r);
				} else {
					hh_body_init(
					    &b, m,
					    r.content_length > 0 ? (uint64_t)r.content_length : 0);
					in_body = true;
				}
			}
		}
	}
	check(ns == 4);
	check(statuses[0] == 100 && statuses[1] == 200 && statuses[2] == 404 && statuses[3] == 204);
	check(!in_body);
	hh_resp_init(&r);
	{
		size_t used;

		check(hh_resp_feed(&r, "\x17\x03\x03", 3, &used) == -EBADMSG);
	}
}

static void test_deny_response_is_valid_json(void)
{
	static char out[4096];
	const char *reason = "scope \"email:send\" not granted\n\\ \x01 caf\xc3\xa9 bad\xff";
	ssize_t n = hh_deny_response(out, sizeof(out), reason, "email:send", "alice@example.com");
	char *body, *hdr_end;
	json_t *j;
	json_error_t e;
	size_t cl;

	check(n > 0);
	out[n] = 0;
	check(strncmp(out, "HTTP/1.1 403 Forbidden\r\n", 24) == 0);
	check(strstr(out, "\r\nContent-Type: application/json\r\n") != NULL);
	check(strstr(out, "\r\nConnection: close\r\n") != NULL);
	hdr_end = strstr(out, "\r\n\r\n");
	check(hdr_end != NULL);
	body = hdr_end + 4;
	check(sscanf(strstr(out, "Content-Length: ") + 16, "%zu", &cl) == 1);
	check(cl == strlen(body));
	j = json_loads(body, 0, &e);
	if (!j)
		fail("body does not parse: %s: %s", e.text, body);
	check_str(json_string_value(json_object_get(j, "error")), "deputy_denied");
	check_str(json_string_value(json_object_get(j, "scope")), "email:send");
	check_str(json_string_value(json_object_get(j, "user")), "alice@example.com");
	check(strstr(json_string_value(json_object_get(j, "reason")), "caf\xc3\xa9") != NULL);
	json_decref(j);
	check(hh_deny_response(out, 64, reason, "", "") == -ENOSPC);
}

int main(void)
{
	RUN(test_pipelined_whole);
	RUN(test_pipelined_byte_at_a_time);
	RUN(test_pipelined_every_two_way_split);
	RUN(test_smuggling_two_content_length);
	RUN(test_smuggling_cl_te);
	RUN(test_smuggling_bare_cr_lf);
	RUN(test_smuggling_obs_fold_and_names);
	RUN(test_head_too_large);
	RUN(test_chunked_malformed);
	RUN(test_chunked_done_position);
	RUN(test_expect_and_flags);
	RUN(test_host_norm);
	RUN(test_rewrite_replaces_every_header);
	RUN(test_rewrite_no_headers_other_name_and_limits);
	RUN(test_rewrite_stays_within_the_parser_limits);
	RUN(test_method_prefix);
	RUN(test_response_framing);
	RUN(test_deny_response_is_valid_json);
	UNIT_EXIT();
}
