// SPDX-License-Identifier: MIT
/*
 * jsonw: compact JSON text into a fixed buffer, escaping and UTF-8 checking as jansson's
 * dump.c and utf.c do (see jsonw.h for why the bytes must match).
 */
#include "jsonw.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void jw_init(struct jw *w, char *buf, size_t cap, unsigned flags)
{
	*w = (struct jw){.p = buf, .cap = cap, .flags = flags};
	if (cap == 0)
		w->err = -ENOSPC;
	else
		buf[0] = '\0';
}

/* Keeps room for the NUL jw_end promises. */
static void jw_put(struct jw *w, const char *s, size_t n)
{
	if (w->err)
		return;
	if (n >= w->cap - w->len) {
		w->err = -ENOSPC;
		return;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
	w->p[w->len] = '\0';
}

static void jw_sep(struct jw *w)
{
	if (w->comma)
		jw_put(w, ",", 1);
}

/* The length of the UTF-8 sequence at s (at most n bytes) and its code point, or 0 when it
 * is not valid UTF-8: jansson's rules (no overlongs, no surrogates, nothing past U+10FFFF). */
static size_t jw_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t v;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		v = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		v = c & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000) || v > 0x10ffff ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

static void jw_escape_cp(struct jw *w, uint32_t cp)
{
	char esc[16];
	int n;

	if (cp < 0x10000) {
		n = snprintf(esc, sizeof(esc), "\\u%04X", (unsigned)cp);
	} else {
		cp -= 0x10000;
		n = snprintf(esc, sizeof(esc), "\\u%04X\\u%04X", (unsigned)(0xd800 | (cp >> 10)),
			     (unsigned)(0xdc00 | (cp & 0x3ff)));
	}
	jw_put(w, esc, (size_t)n);
}

static void jw_string(struct jw *w, const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str, *end = s + n, *run = s;

	jw_put(w, "\"", 1);
	while (s < end && !w->err) {
		const char *short_esc = NULL;
		uint32_t cp;
		size_t len = jw_utf8(s, (size_t)(end - s), &cp);

		if (len == 0) {
			if (!(w->flags & JW_UTF8_REPLACE)) {
				w->err = -EILSEQ;
				return;
			}
			jw_put(w, (const char *)run, (size_t)(s - run));
			jw_put(w, "?", 1);
			run = ++s;
			continue;
		}
		if (cp >= 0x20 && cp != '"' && cp != '\\' &&
		    (cp < 0x80 || !(w->flags & JW_ASCII))) {
			s += len;
			continue;
		}
		jw_put(w, (const char *)run, (size_t)(s - run));
		switch (cp) {
		case '"':
			short_esc = "\\\"";
			break;
		case '\\':
			short_esc = "\\\\";
			break;
		case '\b':
			short_esc = "\\b";
			break;
		case '\f':
			short_esc = "\\f";
			break;
		case '\n':
			short_esc = "\\n";
			break;
		case '\r':
			short_esc = "\\r";
			break;
		case '\t':
			short_esc = "\\t";
			break;
		default:
			break;
		}
		if (short_esc)
			jw_put(w, short_esc, 2);
		else
			jw_escape_cp(w, cp);
		s += len;
		run = s;
	}
	jw_put(w, (const char *)run, (size_t)(s - run));
	jw_put(w, "\"", 1);
}

static void jw_open(struct jw *w, const char *bracket)
{
	jw_sep(w);
	jw_put(w, bracket, 1);
	w->comma = false;
}

static void jw_close(struct jw *w, const char *bracket)
{
	jw_put(w, bracket, 1);
	w->comma = true;
}

void jw_obj_open(struct jw *w)
{
	jw_open(w, "{");
}

void jw_obj_close(struct jw *w)
{
	jw_close(w, "}");
}

void jw_arr_open(struct jw *w)
{
	jw_open(w, "[");
}

void jw_arr_close(struct jw *w)
{
	jw_close(w, "]");
}

void jw_keyn(struct jw *w, const char *key, size_t n)
{
	jw_sep(w);
	jw_string(w, key, n);
	jw_put(w, ":", 1);
	w->comma = false;
}

void jw_key(struct jw *w, const char *key)
{
	jw_keyn(w, key, strlen(key));
}

void jw_strn(struct jw *w, const char *s, size_t n)
{
	jw_sep(w);
	jw_string(w, s, n);
	w->comma = true;
}

void jw_str(struct jw *w, const char *s)
{
	jw_strn(w, s, strlen(s));
}

static void jw_literal(struct jw *w, const char *text)
{
	jw_sep(w);
	jw_put(w, text, strlen(text));
	w->comma = true;
}

void jw_int(struct jw *w, int64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRId64, v);
	jw_literal(w, num);
}

/* jansson's jsonp_dtostr with its default precision: %.17g, ".0" when that reads as an
 * integer (so the value stays a real when parsed back), and an exponent without '+' or
 * leading zeros. */
void jw_real(struct jw *w, double v)
{
	char num[40], *e;

	if (!isfinite(v)) {
		if (!w->err)
			w->err = -EDOM;
		return;
	}
	snprintf(num, sizeof(num), "%.17g", v);
	if (!strpbrk(num, ".eE"))
		strcat(num, ".0");
	e = strchr(num, 'e');
	if (e) {
		char *start = e + 1, *end = start + 1;

		if (*start == '-')
			start++;
		while (*end == '0')
			end++;
		memmove(start, end, strlen(end) + 1);
	}
	jw_literal(w, num);
}

void jw_bool(struct jw *w, bool v)
{
	jw_literal(w, v ? "true" : "false");
}

void jw_null(struct jw *w)
{
	jw_literal(w, "null");
}

void jw_member_str(struct jw *w, const char *key, const char *s)
{
	jw_key(w, key);
	jw_str(w, s);
}

void jw_member_int(struct jw *w, const char *key, int64_t v)
{
	jw_key(w, key);
	jw_int(w, v);
}

ssize_t jw_end(const struct jw *w)
{
	return w->err ? w->err : (ssize_t)w->len;
}
