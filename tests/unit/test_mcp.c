// SPDX-License-Identifier: MIT
/* Unit tests for daemon/lib/mcp.c and mcp_filter.c: the JSON-RPC reader, the Mcp-* header
 * check, the MCP refusal and the tools/list filter. */
#include "../../daemon/lib/mcp.h"

#include <errno.h>
#include <openssl/evp.h>

#include "../../daemon/lib/sha256.h"
#include "../../daemon/lib/util.h"

#include "unit.h"

static int parse(const char *body, struct mcp_call *c, const char **why)
{
	*why = "";
	return mcp_call_parse(body, strlen(body), c, why);
}

static void test_tool_call(void)
{
	struct mcp_call c;
	const char *why;

	check(parse(" {\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":"
		    "{\"name\":\"send_email\",\"arguments\":{\"name\":\"x\",\"to\":[1,2.5e3]}}}\n",
		    &c, &why) == 0);
	check_str(c.method, "tools/call");
	check_str(c.name, "send_email");
	check_str(c.id, "7");
	check(c.kind == MCP_KIND_TOOL);
	/* the order of members is free; escapes decode */
	check(parse("{\"params\":{\"uri\":\"file:///a\\u00e9\"},\"id\":\"x\",\"method\":"
		    "\"resources/read\",\"jsonrpc\":\"2.0\"}",
		    &c, &why) == 0);
	check_str(c.name, "file:///a\xc3\xa9");
	check_str(c.id, "\"x\"");
	check(c.kind == MCP_KIND_RESOURCE);
	check(parse("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &c, &why) ==
	      0);
	check_str(c.id, "null");
	check_str(c.name, "");
	check(c.kind == MCP_KIND_OTHER);
	/* a key spelled with an escape is the same key */
	check(parse("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":"
		    "{\"n\\u0061me\":\"a\"}}",
		    &c, &why) == 0);
	check_str(c.name, "a");
	/* a JSON-RPC response the client posts */
	check(parse("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}", &c, &why) == 0);
	check_str(c.method, "");
}

static void test_refused(void)
{
	static const struct {
		const char *body, *why;
	} cases[] = {
	    {"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}]", "batches"},
	    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\","
	     "\"name\":\"b\"}}",
	     "duplicate"},
	    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"method\":\"tools/call\"}",
	     "duplicate"},
	    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}", "name"},
	    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":1}}",
	     "name"},
	    {"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"x\"}", "2.0"},
	    {"{\"id\":1,\"method\":\"x\"}", "2.0"},
	    {"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"x\"}", "id"},
	    {"{\"jsonrpc\":\"2.0\",\"method\":\"x\"} {}", "one JSON object"},
	    {"{\"jsonrpc\":\"2.0\",\"method\":\"x\",}", "one JSON object"},
	    {"{\"jsonrpc\":\"2.0\",\"method\":\"\\ud800\"}", "method"},
	    {"{\"jsonrpc\":\"2.0\",\"method\":\"a\xff\"}", "method"},
	    {"{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"params\":{\"name\":\"a\\u0000b\"}}",
	     "control"},
	    {"{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"params\":{\"name\":\"a\\nb\"}}",
	     "control"},
	    {"\"tools/call\"", "one JSON object"},
	    {"", "one JSON object"},
	    {"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":[01]}", "one JSON object"},
	};
	struct mcp_call c;
	const char *why;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (parse(cases[i].body, &c, &why) != -EBADMSG)
			fail("accepted %s", cases[i].body);
		if (!strstr(why, cases[i].why))
			fail("%s: reason \"%s\" lacks \"%s\"", cases[i].body, why, cases[i].why);
	}
	/* the id is known for the refusal even when the call is refused */
	check(parse("{\"jsonrpc\":\"2.0\",\"id\":\"q\",\"method\":\"tools/call\",\"params\":{}}",
		    &c, &why) == -EBADMSG);
	check_str(c.id, "\"q\"");
}

static void test_deep_nesting(void)
{
	static char body[4096];
	struct mcp_call c;
	const char *why;
	size_t n = 0;

	n += (size_t)sprintf(body, "{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":");
	for (int i = 0; i < 200; i++)
		body[n++] = '[';
	for (int i = 0; i < 200; i++)
		body[n++] = ']';
	body[n++] = '}';
	body[n] = '\0';
	check(parse(body, &c, &why) == -EBADMSG);
}

static void test_headers(void)
{
	static const char head[] =
	    "POST /mcp HTTP/1.1\r\nHost: m.test\r\nMcp-Method: tools/call\r\n"
	    "mcp-name: send_email\r\nContent-Length: 2\r\n\r\n";
	static const char dup[] = "POST /mcp HTTP/1.1\r\nHost: m.test\r\nMcp-Method: tools/call\r\n"
				  "Mcp-Method: tools/call\r\nContent-Length: 2\r\n\r\n";
	struct hh_req r;
	struct mcp_call c = {.method = "tools/call", .name = "send_email"};
	struct dp_err err;
	const char *why;

	check(hh_req_parse(head, strlen(head), &r, &err) == 0);
	check(mcp_headers_check(head, &r, &c, &why) == 0);
	strcpy(c.name, "read_inbox");
	check(mcp_headers_check(head, &r, &c, &why) == -EBADMSG);
	check(strstr(why, "disagrees") != NULL);
	strcpy(c.name, "send_email");
	strcpy(c.method, "tools/list");
	check(mcp_headers_check(head, &r, &c, &why) == -EBADMSG);
	check(hh_req_parse(dup, strlen(dup), &r, &err) == 0);
	strcpy(c.method, "tools/call");
	check(mcp_headers_check(dup, &r, &c, &why) == -EBADMSG);
}

static void test_deny_response(void)
{
	char out[MCP_DENY_RESP_MAX];
	ssize_t n = mcp_deny_response(out, sizeof(out), "\"r1\"", true,
				      "scope \"email:send\" is not in the user's grant",
				      "email:send", "alice");

	check(n > 0);
	out[n] = '\0';
	check(strncmp(out, "HTTP/1.1 403 Forbidden\r\n", 24) == 0);
	check(strstr(out, "\r\nWWW-Authenticate: Bearer error=\"insufficient_scope\", "
			  "scope=\"email:send\"\r\n") != NULL);
	check(strstr(out, "{\"jsonrpc\":\"2.0\",\"id\":\"r1\",\"error\":{\"code\":-32001,") !=
	      NULL);
	check(strstr(out, "\"data\":{\"error\":\"deputy_denied\"") != NULL);
	n = mcp_deny_response(out, sizeof(out), "null", false, "batch", "", "");
	check(n > 0);
	out[n] = '\0';
	check(strstr(out, "WWW-Authenticate") == NULL);
	check(strstr(out, "\"id\":null") != NULL);
	/* a scope that cannot be quoted is left out, the step-up signal stays */
	n = mcp_deny_response(out, sizeof(out), "1", true, "x", "a\"b", "");
	out[n > 0 ? n : 0] = '\0';
	check(strstr(out, "insufficient_scope\"\r\n") != NULL);
}

static void test_rules(void)
{
	const char *rules[] = {"-send_email", "+read_inbox", "-*"};
	const char *open_rules[] = {"-send_email", "+*"};

	check(!mcp_rules_allow(rules, 3, "send_email"));
	check(mcp_rules_allow(rules, 3, "read_inbox"));
	check(!mcp_rules_allow(rules, 3, "other"));
	check(!mcp_rules_allow(rules, 2, "other")); /* no rule: refused */
	check(mcp_rules_allow(open_rules, 2, "other"));
	check(!mcp_rules_allow(open_rules, 2, "send_email"));
}

static void test_filter(void)
{
	static const char list[] =
	    "{\"result\":{\"tools\":[{\"name\":\"send_email\",\"inputSchema\":{\"name\":\"x\"}},"
	    " {\"description\":\"d\",\"name\":\"read_inbox\"},{\"name\":\"delete_all\"}]},"
	    "\"jsonrpc\":\"2.0\",\"id\":2}";
	const char *rules[] = {"-send_email", "+read_inbox", "+delete_all"};
	char out[1024];
	ssize_t n = mcp_filter_tools(list, strlen(list), false, rules, 3, out, sizeof(out) - 1);

	check(n > 0);
	out[n] = '\0';
	check_str(out, "{\"result\":{\"tools\":[{\"description\":\"d\",\"name\":\"read_inbox\"},"
		       "{\"name\":\"delete_all\"}]},\"jsonrpc\":\"2.0\",\"id\":2}");
	/* SSE: only the data line changes */
	{
		static const char sse[] =
		    "event: message\r\nid: 1\r\ndata: "
		    "{\"result\":{\"tools\":[{\"name\":\"send_email\"}"
		    ",{\"name\":\"read_inbox\"}]},\"jsonrpc\":\"2.0\",\"id\":2}\r\n\r\n";

		n = mcp_filter_tools(sse, strlen(sse), true, rules, 3, out, sizeof(out) - 1);
		check(n > 0);
		out[n] = '\0';
		check_str(out, "event: message\r\nid: 1\r\ndata: {\"result\":{\"tools\":[{\"name\":"
			       "\"read_inbox\"}]},\"jsonrpc\":\"2.0\",\"id\":2}\r\n\r\n");
	}
	/* other messages pass unchanged; broken ones are refused */
	n = mcp_filter_tools("{\"id\":1,\"result\":{}}", 20, false, rules, 3, out, sizeof(out));
	check(n == 20);
	check(mcp_filter_tools("{\"id\":1,", 7, false, rules, 3, out, sizeof(out)) == -EBADMSG);
	check(mcp_filter_tools(list, strlen(list), false, rules, 3, out, 10) == -ENOSPC);
}

/* The shim's SHA-256 against OpenSSL's, across the padding boundaries. */
static void test_sha256(void)
{
	static unsigned char buf[300];
	char mine[65], theirs[65];
	unsigned char md[32];
	unsigned int mdlen;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 7 + 3);
	for (size_t n = 0; n < sizeof(buf); n++) {
		sha256_hex(buf, n, mine);
		check(EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL) == 1);
		dp_hex(md, 32, theirs);
		if (strcmp(mine, theirs) != 0)
			fail("length %zu: %s, OpenSSL says %s", n, mine, theirs);
	}
}

/* A whole answer as the shim and the proxy hand it on: framing replaced, tools cut; what
 * cannot be cut is refused, and its replacement is a JSON-RPC error for the request. */
static void test_filter_response(void)
{
	static const char *const rules[] = {"+read_inbox", "-*"};
	const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
			   "Transfer-Encoding: chunked\r\nX-Keep: 1\r\n\r\n";
	const char *body =
	    "event: message\ndata: {\"result\":{\"tools\":[{\"name\":\"send_email\"},"
	    "{\"name\":\"read_inbox\"}]},\"jsonrpc\":\"2.0\",\"id\":1}\n\n";
	const char *want = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Keep: 1\r\n"
			   "Content-Length: 90\r\n\r\nevent: message\ndata: {\"result\":{\"tools\":"
			   "[{\"name\":\"read_inbox\"}]},\"jsonrpc\":\"2.0\",\"id\":1}\n\n";
	const char *gz = "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n";
	char out[1024];
	ssize_t n = mcp_filter_response(head, strlen(head), 200, body, strlen(body), rules, 2, out,
					sizeof(out));

	check(n == (ssize_t)strlen(want) && memcmp(out, want, (size_t)n) == 0);
	check(mcp_filter_response(gz, strlen(gz), 200, body, strlen(body), rules, 2, out,
				  sizeof(out)) == -EBADMSG);
	check(mcp_filter_response(head, strlen(head), 200, body, strlen(body), rules, 2, out, 64) ==
	      -ENOSPC);
	n = mcp_unfilterable_response(out, sizeof(out), "\"l1\"", "too large");
	check(n > 0 && strncmp(out, "HTTP/1.1 502 Bad Gateway\r\n", 26) == 0);
	check(strstr(out, "{\"jsonrpc\":\"2.0\",\"id\":\"l1\",\"error\":") != NULL);
	check(strstr(out, "\"data\":{\"error\":\"deputy_upstream\"") != NULL);
}

int main(void)
{
	RUN(test_sha256);
	RUN(test_tool_call);
	RUN(test_refused);
	RUN(test_deep_nesting);
	RUN(test_headers);
	RUN(test_deny_response);
	RUN(test_rules);
	RUN(test_filter);
	RUN(test_filter_response);
	return unit_failed ? 1 : 0;
}
