/* SPDX-License-Identifier: MIT */
/*
 * wire: the fields of one request frame an agent sent (include/deputy/proto.h), checked
 * and copied out. Pure: no deputyd state, no allocation, no I/O, so it can be fuzzed alone.
 */
#ifndef DEPUTY_WIRE_H
#define DEPUTY_WIRE_H

#include <deputy/proto.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define WIRE_MAX_ARGV 256

/* Strings are NUL-terminated copies without inner NULs, kept in the arena (no allocation
 * per request). Every field has a 4-byte head, so the copies with their NULs never need
 * more than the payload plus a quarter of it. */
#define WIRE_ARENA (DP_PROTO_MAX_PAYLOAD + DP_PROTO_MAX_PAYLOAD / 4 + 1)

struct wire_fields {
	char *str[DP_T_MAX_]; /* string tags (not ADDR, DATA or the integers) */
	uint64_t u64[DP_T_MAX_];
	bool has[DP_T_MAX_];
	const uint8_t *raw[DP_T_MAX_]; /* every non-ARGV field's bytes, inside the payload */
	uint16_t rawlen[DP_T_MAX_];
	char *argv[WIRE_MAX_ARGV];
	size_t argc;
	const uint8_t *use[DP_USES_MAX]; /* USE fields (field lists, inside the payload) */
	uint16_t use_len[DP_USES_MAX];
	size_t n_uses;	   /* all of them, also those past DP_USES_MAX */
	size_t arena_used; /* everything up to here is zeroed per request, not the arena */
	char arena[WIRE_ARENA];
};

/* Is the value of tag a little-endian u64 (length 8)? */
bool wire_tag_is_u64(uint16_t tag);
/* Parse a payload: 0, or -EBADMSG with the reason in err (unknown or duplicate tag, an
 * integer not 8 bytes long, a NUL inside a string, too many ARGV, a field past the end).
 * USE fields are kept raw (see wire_use_parse). */
int wire_parse(const uint8_t *p, size_t len, struct wire_fields *f, struct dp_err *err) DP_WUR;

/* One USE of a USES report (proto.h), copied out. */
struct wire_use {
	char scheme[8]; /* "http" or "https" (default) */
	char jti[64];
	char method[33];
	char host[256];
	int port;
	uint64_t cookie; /* 0: not said */
	char target[8193];
};
/* 0, or -EBADMSG with the reason: an unknown or repeated tag, a missing or empty field, a
 * string with a NUL or too long, a port outside 1..65535. */
int wire_use_parse(const uint8_t *p, size_t len, struct wire_use *u, struct dp_err *err) DP_WUR;

#endif
