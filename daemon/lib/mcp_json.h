/* SPDX-License-Identifier: MIT */
/*
 * mcp_json: the strict, allocation-free JSON scanner of mcp.c, shared with mcp_filter.c only
 * (RFC 8259; strings must be valid UTF-8, surrogates paired; nesting at most MCP_DEPTH_MAX).
 */
#ifndef DEPUTY_MCP_JSON_H
#define DEPUTY_MCP_JSON_H

#include <stdbool.h>
#include <stddef.h>

struct mcpj {
	const char *p, *end;
};

void mcpj_skip_ws(struct mcpj *j);
/* A string at j->p, decoded into out (NUL-terminated; *over when cap was too small, the
 * scan still completes); out may be NULL. 0 or -EBADMSG. */
int mcpj_string(struct mcpj *j, char *out, size_t cap, size_t *outlen, bool *over);
/* Any value (leading whitespace skipped). 0 or -EBADMSG. */
int mcpj_value(struct mcpj *j, int depth);
/* An object member's key and its ':' (whitespace around skipped), decoded into key; *klen
 * is 0 when the key is longer than cap allows. */
int mcpj_key(struct mcpj *j, char *key, size_t cap, size_t *klen);
int mcpj_value_key(struct mcpj *j);
bool mcpj_key_is(const char *key, size_t klen, const char *want);

#endif
