// SPDX-License-Identifier: MIT
/*
 * Fuzz target for daemon/lib/mcp.c and mcp_filter.c: the JSON-RPC reader of MCP request
 * bodies and the tools/list filter, both fed hostile bytes (the agent writes the first, the
 * server the second). Checks invariants, not just the absence of crashes: a call read is a
 * NUL-free, control-free method and name and an id that is JSON text; the filter never
 * grows its input, and filtering its own output again changes nothing; a whole answer
 * (mcp_filter_response) is at most its head, one Content-Length line and its body, and the
 * fail-closed replacement always fits.
 */
#include "../../daemon/lib/httphead.c"
#include "../../daemon/lib/httpbody.c"
#include "../../daemon/lib/jsonw.c"
#include "../../daemon/lib/mcp.c"
#include "../../daemon/lib/mcp_json.c"
#include "../../daemon/lib/mcp_filter.c"

#include <stdlib.h>

static char fz_out[1 << 17], fz_again[1 << 17], fz_resp[MCP_DENY_RESP_MAX];

static void fz_call(const char *d, size_t n)
{
	struct mcp_call c;
	const char *why = NULL;
	int r = mcp_call_parse(d, n, &c, &why);

	if (r != 0 && r != -EBADMSG)
		abort();
	if (r != 0 && !why)
		abort();
	if (r == 0) {
		for (const char *p = c.method; *p; p++)
			if ((unsigned char)*p < 0x20)
				abort();
		for (const char *p = c.name; *p; p++)
			if ((unsigned char)*p < 0x20)
				abort();
		if ((c.kind != MCP_KIND_OTHER) != (c.name[0] != '\0'))
			abort();
	}
	/* the refusal always fits and names the id as read */
	if (mcp_deny_response(fz_resp, sizeof(fz_resp), c.id, true, why ? why : "ok", c.name,
			      c.method) <= 0)
		abort();
}

static void fz_filter(const char *d, size_t n, bool sse)
{
	static const char *const rules[] = {"-send_email", "+read_inbox", "+a", "-*"};
	ssize_t k = mcp_filter_tools(d, n, sse, rules, 4, fz_out, sizeof(fz_out));
	ssize_t k2;

	if (k == -EBADMSG || k == -ENOSPC)
		return;
	if (k < 0 || (size_t)k > n)
		abort();
	k2 = mcp_filter_tools(fz_out, (size_t)k, sse, rules, 4, fz_again, sizeof(fz_again));
	if (k2 != k || memcmp(fz_out, fz_again, (size_t)k) != 0)
		abort();
}

/* The input's first line-ended part up to an empty line is the head, the rest the body. */
static void fz_response(const char *d, size_t n)
{
	static const char *const rules[] = {"-send_email", "+read_inbox", "-*"};
	const char *end = memmem(d, n, "\r\n\r\n", 4);
	size_t hl = end ? (size_t)(end - d) + 4 : 0;
	ssize_t k;

	if (!end)
		return;
	k = mcp_filter_response(d, hl, 200, d + hl, n - hl, rules, 3, fz_again, sizeof(fz_again));
	if (k != -EBADMSG && k != -ENOSPC && (k < 0 || (size_t)k > n + 48))
		abort();
	if (mcp_unfilterable_response(fz_resp, sizeof(fz_resp), "\"x\"", "cannot") <= 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *d = (const char *)data;

	if (size > sizeof(fz_out))
		return 0;
	fz_call(d, size);
	fz_filter(d, size, false);
	fz_filter(d, size, true);
	fz_response(d, size);
	return 0;
}
