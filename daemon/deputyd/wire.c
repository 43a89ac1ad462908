// SPDX-License-Identifier: MIT
/*
 * wire: the strict parser of request fields, the bytes any local process can send to
 * deputyd as root. One rule set, so the shim, the CLI and deputyd cannot disagree on what a
 * frame means: unknown tags, duplicates of non-repeatable tags and malformed values are
 * errors, never skipped.
 */
#include "wire.h"

#include <errno.h>
#include <string.h>

bool wire_tag_is_u64(uint16_t t)
{
	return t == DP_T_PORT || t == DP_T_COOKIE || t == DP_T_PID || t == DP_T_STATUS ||
	       t == DP_T_FAMILY || t == DP_T_OFFSET || t == DP_T_VERDICT || t == DP_T_CONN ||
	       t == DP_T_GEN || t == DP_T_EXP || t == DP_T_HOST_LOG;
}

static char *wire_strdup(struct wire_fields *f, const uint8_t *v, uint16_t n)
{
	return dp_field_str(f->arena, sizeof(f->arena), &f->arena_used, v, n);
}

int wire_parse(const uint8_t *p, size_t len, struct wire_fields *f, struct dp_err *err)
{
	size_t off = 0;
	uint16_t tag, vlen;
	const uint8_t *v;
	int r;

	memset(f, 0, offsetof(struct wire_fields, arena));
	while ((r = dp_field_next(p, len, &off, &tag, &v, &vlen)) == 1) {
		if (tag == 0 || tag >= DP_T_MAX_) {
			dp_err_set(err, "unknown field tag %u", tag);
			return -EBADMSG;
		}
		if (tag == DP_T_ARGV) {
			if (f->argc == WIRE_MAX_ARGV) {
				dp_err_set(err, "too many argv fields");
				return -EBADMSG;
			}
			f->argv[f->argc] = wire_strdup(f, v, vlen);
			if (!f->argv[f->argc]) {
				dp_err_set(err, "argv field with a NUL byte");
				return -EBADMSG;
			}
			f->argc++;
			continue;
		}
		if (tag == DP_T_USE) {
			/* Past the limit they are only counted: the handler refuses the batch
			 * and logs why, which a closed connection would not. */
			if (f->n_uses < DP_USES_MAX) {
				f->use[f->n_uses] = v;
				f->use_len[f->n_uses] = vlen;
			}
			f->n_uses++;
			continue;
		}
		if (f->has[tag]) {
			dp_err_set(err, "duplicate field tag %u", tag);
			return -EBADMSG;
		}
		f->has[tag] = true;
		f->raw[tag] = v;
		f->rawlen[tag] = vlen;
		if (wire_tag_is_u64(tag)) {
			if (vlen != 8) {
				dp_err_set(err, "integer field tag %u of length %u", tag, vlen);
				return -EBADMSG;
			}
			memcpy(&f->u64[tag], v, 8);
		} else if (tag != DP_T_ADDR && tag != DP_T_DATA) {
			f->str[tag] = wire_strdup(f, v, vlen);
			if (!f->str[tag]) {
				dp_err_set(err, "string field tag %u with a NUL byte", tag);
				return -EBADMSG;
			}
		}
	}
	if (r < 0) {
		dp_err_set(err, "field runs past the frame");
		return -EBADMSG;
	}
	return 0;
}

static int wire_use_str(char *dst, size_t cap, const uint8_t *v, uint16_t n)
{
	if (n == 0 || n >= cap || memchr(v, '\0', n))
		return -EBADMSG;
	memcpy(dst, v, n);
	dst[n] = '\0';
	return 0;
}

int wire_use_parse(const uint8_t *p, size_t len, struct wire_use *u, struct dp_err *err)
{
	size_t off = 0;
	uint16_t tag, vlen;
	const uint8_t *v;
	uint64_t port = 0, seen = 0;
	int r;

	memset(u, 0, offsetof(struct wire_use, target));
	u->target[0] = '\0';
	while ((r = dp_field_next(p, len, &off, &tag, &v, &vlen)) == 1) {
		int e;

		if (tag >= 64 || (seen & (1ull << tag))) {
			dp_err_set(err, "use: unknown or repeated field tag %u", tag);
			return -EBADMSG;
		}
		seen |= 1ull << tag;
		switch (tag) {
		case DP_T_JTI:
			e = wire_use_str(u->jti, sizeof(u->jti), v, vlen);
			break;
		case DP_T_METHOD:
			e = wire_use_str(u->method, sizeof(u->method), v, vlen);
			break;
		case DP_T_HOST:
			e = wire_use_str(u->host, sizeof(u->host), v, vlen);
			break;
		case DP_T_TARGET:
			e = wire_use_str(u->target, sizeof(u->target), v, vlen);
			break;
		case DP_T_SCHEME:
			e = wire_use_str(u->scheme, sizeof(u->scheme), v, vlen);
			if (e == 0 && strcmp(u->scheme, "http") && strcmp(u->scheme, "https"))
				e = -EBADMSG;
			break;
		case DP_T_PORT:
		case DP_T_COOKIE:
			e = vlen == 8 ? 0 : -EBADMSG;
			if (e == 0)
				memcpy(tag == DP_T_PORT ? &port : &u->cookie, v, 8);
			break;
		default:
			e = -EBADMSG;
		}
		if (e) {
			dp_err_set(err, "use: bad field tag %u", tag);
			return e;
		}
	}
	if (r < 0) {
		dp_err_set(err, "use: field runs past its end");
		return -EBADMSG;
	}
	if (!(seen & (1ull << DP_T_JTI)) || !(seen & (1ull << DP_T_METHOD)) ||
	    !(seen & (1ull << DP_T_HOST)) || !(seen & (1ull << DP_T_TARGET)) || port < 1 ||
	    port > 65535) {
		dp_err_set(err, "use: jti, method, host, target and port are required");
		return -EBADMSG;
	}
	u->port = (int)port;
	if (!u->scheme[0])
		strcpy(u->scheme, "https");
	return 0;
}
