// SPDX-License-Identifier: MIT
/*
 * mcp_json: the strict, allocation-free JSON scanner of the MCP reader and filter (see
 * mcp_json.h).
 */
#include "mcp_json.h"

#include <errno.h>
#include <string.h>

#include "mcp.h"

static void mcpj_ws(struct mcpj *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

void mcpj_skip_ws(struct mcpj *j)
{
	mcpj_ws(j);
}

static int mcpj_hex4(const char *p, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = (unsigned char)p[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			return -1;
		*v = *v * 16 + d;
	}
	return 0;
}

static void mcpj_put(char *out, size_t cap, size_t *n, bool *over, const char *b, size_t k)
{
	if (!out)
		return;
	if (*n + k >= cap) {
		*over = true;
		return;
	}
	memcpy(out + *n, b, k);
	*n += k;
	out[*n] = '\0';
}

/* One UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates, at most U+10FFFF): its
 * length, or 0 when invalid. */
static size_t mcpj_utf8(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0], need, min, cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 1, min = 0x80, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		need = 2, min = 0x800, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 3, min = 0x10000, cp = c & 0x07;
	else
		return 0;
	if ((size_t)(end - p) <= need)
		return 0;
	for (unsigned i = 1; i <= need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need + 1;
}

static size_t mcpj_encode(unsigned cp, char b[4])
{
	if (cp < 0x80) {
		b[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	b[0] = (char)(0xf0 | (cp >> 18));
	b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	b[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A \u escape at j->p (after the backslash and 'u'), a surrogate pair taken whole. */
static int mcpj_uescape(struct mcpj *j, unsigned *cp)
{
	unsigned lo;

	if (j->end - j->p < 4 || mcpj_hex4(j->p, cp))
		return -EBADMSG;
	j->p += 4;
	if (*cp >= 0xdc00 && *cp <= 0xdfff)
		return -EBADMSG;
	if (*cp < 0xd800 || *cp > 0xdbff)
		return 0;
	if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || mcpj_hex4(j->p + 2, &lo) ||
	    lo < 0xdc00 || lo > 0xdfff)
		return -EBADMSG;
	j->p += 6;
	*cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
	return 0;
}

int mcpj_string(struct mcpj *j, char *out, size_t cap, size_t *outlen, bool *over)
{
	size_t n = 0;

	*over = false;
	if (out && cap)
		out[0] = '\0';
	if (j->p >= j->end || *j->p != '"')
		return -EBADMSG;
	j->p++;
	while (j->p < j->end) {
		unsigned char c = (unsigned char)*j->p;
		char b[4];
		unsigned cp;
		size_t k;

		if (c == '"') {
			j->p++;
			if (outlen)
				*outlen = n;
			return 0;
		}
		if (c < 0x20)
			return -EBADMSG;
		if (c != '\\') {
			k = mcpj_utf8((const unsigned char *)j->p, (const unsigned char *)j->end);
			if (!k)
				return -EBADMSG;
			mcpj_put(out, cap, &n, over, j->p, k);
			j->p += k;
			continue;
		}
		if (j->end - j->p < 2)
			return -EBADMSG;
		c = (unsigned char)j->p[1];
		j->p += 2;
		/* One case per escape of RFC 8259 §7, alike in shape: a table would be no shorter.
		 */
		switch (c) {
		case '"':
		case '\\':
		case '/':
			b[0] = (char)c;
			break;
		case 'b':
			b[0] = '\b';
			break;
		case 'f':
			b[0] = '\f';
			break;
		case 'n':
			b[0] = '\n';
			break;
		case 'r':
			b[0] = '\r';
			break;
		case 't':
			b[0] = '\t';
			break;
		case 'u':
			if (mcpj_uescape(j, &cp))
				return -EBADMSG;
			mcpj_put(out, cap, &n, over, b, mcpj_encode(cp, b));
			continue;
		default:
			return -EBADMSG;
		}
		mcpj_put(out, cap, &n, over, b, 1);
	}
	return -EBADMSG;
}

static bool mcpj_digit(const struct mcpj *j)
{
	return j->p < j->end && *j->p >= '0' && *j->p <= '9';
}

static int mcpj_number(struct mcpj *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (!mcpj_digit(j))
		return -EBADMSG;
	if (*j->p == '0')
		j->p++;
	else
		while (mcpj_digit(j))
			j->p++;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (!mcpj_digit(j))
			return -EBADMSG;
		while (mcpj_digit(j))
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (!mcpj_digit(j))
			return -EBADMSG;
		while (mcpj_digit(j))
			j->p++;
	}
	return 0;
}

static int mcpj_lit(struct mcpj *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return -EBADMSG;
	j->p += n;
	return 0;
}

/* Any value inside a container: skipped, depth counted. */
static int mcpj_skip_item(struct mcpj *j, const char *key, size_t klen, void *arg)
{
	(void)key;
	(void)klen;
	return mcpj_value(j, *(int *)arg + 1);
}

int mcpj_list(struct mcpj *j, mcpj_item_fn item, void *arg)
{
	char close, key[8];
	size_t klen = 0;
	int r;

	mcpj_ws(j);
	if (j->p >= j->end || (*j->p != '{' && *j->p != '['))
		return -EBADMSG;
	close = *j->p == '{' ? '}' : ']';
	j->p++;
	mcpj_ws(j);
	if (j->p < j->end && *j->p == close) {
		j->p++;
		return 0;
	}
	for (;;) {
		if (close == '}' && mcpj_key(j, key, sizeof(key), &klen))
			return -EBADMSG;
		mcpj_ws(j);
		if ((r = item(j, close == '}' ? key : NULL, klen, arg)))
			return r;
		mcpj_ws(j);
		if (j->p >= j->end)
			return -EBADMSG;
		if (*j->p == close) {
			j->p++;
			return 0;
		}
		if (*j->p++ != ',')
			return -EBADMSG;
	}
}

int mcpj_value(struct mcpj *j, int depth)
{
	bool over;

	mcpj_ws(j);
	if (j->p >= j->end || depth > MCP_DEPTH_MAX)
		return -EBADMSG;
	switch (*j->p) {
	case '"':
		return mcpj_string(j, NULL, 0, NULL, &over);
	case 't':
		return mcpj_lit(j, "true");
	case 'f':
		return mcpj_lit(j, "false");
	case 'n':
		return mcpj_lit(j, "null");
	case '{':
	case '[':
		return mcpj_list(j, mcpj_skip_item, &depth) ? -EBADMSG : 0;
	default:
		return mcpj_number(j);
	}
}

int mcpj_key(struct mcpj *j, char *key, size_t cap, size_t *klen)
{
	bool over;

	mcpj_ws(j);
	if (mcpj_string(j, key, cap, klen, &over))
		return -EBADMSG;
	if (over)
		*klen = 0; /* longer than any key we look for */
	mcpj_ws(j);
	if (j->p >= j->end || *j->p != ':')
		return -EBADMSG;
	j->p++;
	mcpj_ws(j);
	return 0;
}

bool mcpj_key_is(const char *key, size_t klen, const char *want)
{
	return klen == strlen(want) && memcmp(key, want, klen) == 0;
}
