// SPDX-License-Identifier: MIT
/*
 * httpbody: HTTP/1.x message body framing (Content-Length, chunked, until close) for the
 * shim: where a request's or a response's body ends, so the next message is framed as the
 * peer frames it. Part of the httphead interface (httphead.h), in a file of its own to keep
 * each under the house size.
 */
#include "httphead.h"

#include <errno.h>
#include <string.h>

enum {
	CH_SIZE,     /* hex digits */
	CH_SIZE_WS,  /* BWS after the size */
	CH_EXT,	     /* chunk-ext up to CR */
	CH_SIZE_LF,  /* LF after the size line */
	CH_DATA,     /* chunk data */
	CH_DATA_CR,  /* CR after data */
	CH_DATA_LF,  /* LF after data */
	CH_TRAILER,  /* start of a trailer line (or the final CRLF) */
	CH_TLINE,    /* inside a trailer line */
	CH_TLINE_LF, /* LF ending a trailer line */
	CH_END_LF,   /* LF of the final CRLF */
	CH_DONE,
};

#define HH_LINE_MAX 4096
#define HH_TRAILER_MAX HH_HEAD_MAX

void hh_body_init(struct hh_body *b, enum hh_body_mode mode, uint64_t length)
{
	memset(b, 0, sizeof(*b));
	b->mode = (uint8_t)mode;
	b->left = length;
	b->st = CH_SIZE;
}

void hh_body_sink(struct hh_body *b, char *buf, size_t cap)
{
	b->sink = buf;
	b->sink_cap = cap;
	b->sink_len = 0;
	b->sink_over = false;
}

static void hh_sink_put(struct hh_body *b, const char *p, size_t n)
{
	if (!b->sink)
		return;
	if (n > b->sink_cap - b->sink_len) {
		n = b->sink_cap - b->sink_len;
		b->sink_over = true;
	}
	memcpy(b->sink + b->sink_len, p, n);
	b->sink_len += n;
}

/* A hex digit's value (util.c's b64url_value is the same shape for another alphabet). */
static int hh_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Over 100 lines on purpose: one state machine (RFC 9112 §7.1) that takes the bytes in any
 * split; its states read best in one switch. The CR LF states look alike (and like
 * httphead.c's) because each checks one byte; folded, they would not say which was wrong. */
static ssize_t hh_chunked_feed(struct hh_body *b, const char *p, size_t n, bool *done)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)p[i];
		int hv;

		switch (b->st) {
		case CH_SIZE:
			hv = hh_hexval(c);
			if (hv >= 0) {
				if (b->digits >= 15) /* keeps left below 2^60, no overflow */
					return -EBADMSG;
				b->left = b->left * 16 + (uint64_t)hv;
				b->digits++;
				i++;
				break;
			}
			if (b->digits == 0)
				return -EBADMSG;
			if (c == '\r')
				b->st = CH_SIZE_LF;
			else if (c == ';')
				b->st = CH_EXT;
			else if (c == ' ' || c == '\t')
				b->st = CH_SIZE_WS;
			else
				return -EBADMSG;
			b->line = 0;
			i++;
			break;
		case CH_SIZE_WS:
			if (c == '\r')
				b->st = CH_SIZE_LF;
			else if (c == ';')
				b->st = CH_EXT;
			else if (c != ' ' && c != '\t')
				return -EBADMSG;
			i++;
			break;
		case CH_EXT:
			/* Extensions are skipped, but only printable bytes: a CR or LF inside
			 * one is where parsers have disagreed. */
			if (c == '\r')
				b->st = CH_SIZE_LF;
			else if (!hh_is_vchar_obs(c) || ++b->line > HH_LINE_MAX)
				return -EBADMSG;
			i++;
			break;
		case CH_SIZE_LF:
			if (c != '\n')
				return -EBADMSG;
			i++;
			b->digits = 0;
			if (b->left == 0) {
				b->st = CH_TRAILER;
				b->trailer = 0;
			} else {
				b->st = CH_DATA;
			}
			break;
		case CH_DATA: {
			size_t take = n - i;

			if (take > b->left)
				take = (size_t)b->left;
			hh_sink_put(b, p + i, take);
			b->left -= take;
			i += take;
			if (b->left == 0)
				b->st = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
			if (c != '\r')
				return -EBADMSG;
			b->st = CH_DATA_LF;
			i++;
			break;
		case CH_DATA_LF:
			if (c != '\n')
				return -EBADMSG;
			b->st = CH_SIZE;
			b->left = 0;
			i++;
			break;
		case CH_TRAILER:
			if (c == '\r') {
				b->st = CH_END_LF;
			} else if (c == ' ' || c == '\t' || !hh_is_tchar(c)) {
				return -EBADMSG;
			} else {
				b->st = CH_TLINE;
			}
			i++;
			if (++b->trailer > HH_TRAILER_MAX)
				return -EBADMSG;
			break;
		case CH_TLINE:
			if (c == '\r')
				b->st = CH_TLINE_LF;
			else if (!hh_is_vchar_obs(c))
				return -EBADMSG;
			i++;
			if (++b->trailer > HH_TRAILER_MAX)
				return -EBADMSG;
			break;
		case CH_TLINE_LF:
			if (c != '\n')
				return -EBADMSG;
			b->st = CH_TRAILER;
			i++;
			break;
		case CH_END_LF:
			if (c != '\n')
				return -EBADMSG;
			b->st = CH_DONE;
			i++;
			*done = true;
			return (ssize_t)i;
		default:
			*done = true;
			return (ssize_t)i;
		}
	}
	return (ssize_t)i;
}

ssize_t hh_body_feed(struct hh_body *b, const char *p, size_t n, bool *done)
{
	*done = false;
	switch (b->mode) {
	case HH_BODY_NONE:
		*done = true;
		return 0;
	case HH_BODY_CLOSE:
		hh_sink_put(b, p, n);
		return (ssize_t)n;
	case HH_BODY_LENGTH: {
		size_t take = n < b->left ? n : (size_t)b->left;

		hh_sink_put(b, p, take);
		b->left -= take;
		*done = b->left == 0;
		return (ssize_t)take;
	}
	case HH_BODY_CHUNKED:
		if (b->st == CH_DONE) {
			*done = true;
			return 0;
		}
		return hh_chunked_feed(b, p, n, done);
	}
	return -EINVAL;
}
