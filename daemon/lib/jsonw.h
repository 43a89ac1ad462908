/* SPDX-License-Identifier: MIT */
/*
 * jsonw: the one JSON text writer of deputyd, the CLI and the shim (token claims, audit
 * records, the shim's 403 body). It writes into a caller's fixed buffer, allocates nothing
 * and needs no jansson, so the shim can carry it; its output is byte for byte what jansson's
 * json_dumps(JSON_COMPACT [| JSON_ENSURE_ASCII]) gives for the same values in the same
 * order (tests/unit/test_jsonw.c holds it to that), because audit records are hashed into
 * the chain and must not change bytes with the writer.
 *
 * Errors are sticky: calls after the first one do nothing, and jw_end reports it.
 */
#ifndef DEPUTY_JSONW_H
#define DEPUTY_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum jw_flags {
	JW_ASCII = 1,	     /* non-ASCII as \uXXXX (jansson's JSON_ENSURE_ASCII) */
	JW_UTF8_REPLACE = 2, /* a byte that is not valid UTF-8 becomes '?' instead of an error */
};

struct jw {
	char *p;
	size_t len, cap;
	unsigned flags;
	int err;    /* 0, -ENOSPC, -EILSEQ (not UTF-8) or -EDOM (a real that JSON cannot hold) */
	bool comma; /* the next member or element needs a ',' first */
};

void jw_init(struct jw *w, char *buf, size_t cap, unsigned flags);
void jw_obj_open(struct jw *w);
void jw_obj_close(struct jw *w);
void jw_arr_open(struct jw *w);
void jw_arr_close(struct jw *w);
/* An object member's name; the value follows with one of the value calls. */
void jw_key(struct jw *w, const char *key);
void jw_keyn(struct jw *w, const char *key, size_t n);
void jw_str(struct jw *w, const char *s);
void jw_strn(struct jw *w, const char *s, size_t n); /* n bytes, NULs included */
void jw_int(struct jw *w, int64_t v);
void jw_real(struct jw *w, double v);
void jw_bool(struct jw *w, bool v);
void jw_null(struct jw *w);
/* An object member whose value is a string or an integer: jw_key, then the value. */
void jw_member_str(struct jw *w, const char *key, const char *s);
void jw_member_int(struct jw *w, const char *key, int64_t v);
/* The text's length (NUL-terminated in the buffer), or the first error. */
ssize_t jw_end(const struct jw *w);

#endif
