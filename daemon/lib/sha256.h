/* SPDX-License-Identifier: MIT */
/*
 * sha256: SHA-256 (FIPS 180-4) for the shim, which must not load OpenSSL into an agent that
 * does not use it: the body hash an MCP call's token carries (mcp.h). deputyd and the proxy
 * use OpenSSL's; tests/unit/test_mcp.c holds this one to it.
 */
#ifndef DEPUTY_SHA256_H
#define DEPUTY_SHA256_H

#include <stddef.h>

/* The digest of p[0..n) as 64 lower-case hex digits and a NUL. */
void sha256_hex(const void *p, size_t n, char out[65]);

#endif
