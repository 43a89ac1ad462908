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
/* Any value (leading whitespace skipped), nested at most MCP_DEPTH_MAX - depth more levels.
 * 0 or -EBADMSG. */
int mcpj_value(struct mcpj *j, int depth);
/* The object or array at j->p (whitespace before skipped): item() is called for each member
 * (key decoded, klen 0 when longer than 7 bytes: longer than any key looked for) or element
 * (key NULL) with j->p at its value, which it must read. 0, -EBADMSG or item's error. */
typedef int (*mcpj_item_fn)(struct mcpj *j, const char *key, size_t klen, void *arg);
int mcpj_list(struct mcpj *j, mcpj_item_fn item, void *arg);
/* An object member's key and its ':' (whitespace around skipped), decoded into key; *klen
 * is 0 when the key is longer than cap allows. */
int mcpj_key(struct mcpj *j, char *key, size_t cap, size_t *klen);
bool mcpj_key_is(const char *key, size_t klen, const char *want);

#endif
