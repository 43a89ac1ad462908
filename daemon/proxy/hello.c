// SPDX-License-Identifier: MIT
/*
 * hello: classifies a redirected connection's first bytes, and reads the SNI of a TLS
 * ClientHello (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301 §3.1). Every length is checked
 * against what encloses it, so a field can never reach past the record.
 */
#include "hello.h"

#include <string.h>

#include "httphead.h"

struct rd {
	const uint8_t *p;
	size_t n, off;
	int bad;
};

static unsigned rd_u8(struct rd *r)
{
	if (r->bad || r->n - r->off < 1) {
		r->bad = 1;
		return 0;
	}
	return r->p[r->off++];
}

static unsigned rd_u16(struct rd *r)
{
	unsigned hi = rd_u8(r);

	return (hi << 8) | rd_u8(r);
}

/* A sub-reader over the next len bytes, skipped in the parent. */
static struct rd rd_sub(struct rd *r, size_t len)
{
	struct rd s = {r->p + r->off, len, 0, r->bad};

	if (r->bad || r->n - r->off < len) {
		r->bad = 1;
		s.bad = 1;
		s.n = 0;
		return s;
	}
	r->off += len;
	return s;
}

static int sni_copy(const uint8_t *name, size_t len, char sni[PXH_SNI_MAX])
{
	if (len == 0 || len >= PXH_SNI_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = name[i];

		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return -1;
		sni[i] = (char)c;
	}
	sni[len] = '\0';
	return 0;
}

static int ext_server_name(struct rd *e, char sni[PXH_SNI_MAX])
{
	struct rd list = rd_sub(e, rd_u16(e));
	int names = 0;

	while (!list.bad && list.off < list.n) {
		unsigned type = rd_u8(&list);
		struct rd name = rd_sub(&list, rd_u16(&list));

		if (list.bad)
			return -1;
		if (type != 0) /* only host_name (0) is defined */
			continue;
		if (names++ || sni_copy(name.p, name.n, sni) != 0)
			return -1;
	}
	return list.bad || e->off != e->n || names == 0 ? -1 : 0;
}

static int ext_alpn_has_h1(struct rd *e)
{
	struct rd list = rd_sub(e, rd_u16(e));
	int h1 = 0;

	while (!list.bad && list.off < list.n) {
		struct rd proto = rd_sub(&list, rd_u8(&list));

		if (!list.bad && proto.n == 8 && memcmp(proto.p, "http/1.1", 8) == 0)
			h1 = 1;
	}
	return list.bad ? -1 : h1;
}

static enum pxh_kind client_hello(struct rd *h, char sni[PXH_SNI_MAX], int *alpn_h1)
{
	struct rd exts;
	int seen_sni = 0, seen_alpn = 0;

	rd_u16(h);			/* legacy_version */
	rd_sub(h, 32);			/* random */
	if (rd_sub(h, rd_u8(h)).n > 32) /* legacy_session_id */
		return PXH_BAD;
	if (rd_sub(h, rd_u16(h)).n % 2) /* cipher_suites */
		return PXH_BAD;
	rd_sub(h, rd_u8(h)); /* legacy_compression_methods */
	if (h->bad)
		return PXH_BAD;
	if (h->off == h->n)
		return PXH_TLS; /* no extensions: no SNI, no ALPN */
	exts = rd_sub(h, rd_u16(h));
	if (h->bad || h->off != h->n)
		return PXH_BAD;
	while (exts.off < exts.n) {
		unsigned type = rd_u16(&exts);
		struct rd e = rd_sub(&exts, rd_u16(&exts));

		if (exts.bad)
			return PXH_BAD;
		if (type == 0) {
			if (seen_sni++ || ext_server_name(&e, sni) != 0)
				return PXH_BAD;
		} else if (type == 16) {
			int h1 = ext_alpn_has_h1(&e);

			if (seen_alpn++ || h1 < 0)
				return PXH_BAD;
			*alpn_h1 = h1;
		}
	}
	return PXH_TLS;
}

/* A request line starts with a token and a space: the method is judged later, by deputyd
 * (an unknown or lower-case one gets deputy's 403, not a dropped connection). */
static enum pxh_kind plain_start(const uint8_t *p, size_t n)
{
	size_t i = 0, tok = 0;

	while (i < n && (p[i] == '\r' || p[i] == '\n'))
		i++;
	for (; i < n && i < 64; i++) {
		if (p[i] == ' ')
			return tok ? PXH_PLAIN : PXH_BAD;
		if (!hh_is_tchar(p[i]))
			return PXH_BAD;
		tok++;
	}
	return i < 64 ? PXH_MORE : PXH_BAD;
}

enum pxh_kind pxh_classify(const uint8_t *p, size_t n, char sni[PXH_SNI_MAX], int *alpn_h1)
{
	struct rd rec = {p, n, 0, 0}, body, hs;
	size_t rlen, hlen;

	sni[0] = '\0';
	*alpn_h1 = 1;
	if (n == 0)
		return PXH_MORE;
	if (p[0] != 0x16)
		return plain_start(p, n);
	if (n < 5)
		return n >= 2 && p[1] != 0x03 ? PXH_BAD : PXH_MORE;
	rd_u8(&rec);
	if (rd_u8(&rec) != 0x03)
		return PXH_BAD;
	rd_u8(&rec);
	rlen = rd_u16(&rec);
	if (rlen < 4 || rlen > 16384)
		return PXH_BAD;
	if (n - 5 < rlen) {
		/* A ClientHello's header tells early whether it fits in this record. */
		if (n >= 9 &&
		    (p[5] != 1 || ((size_t)p[6] << 16 | (size_t)p[7] << 8 | p[8]) + 4 > rlen))
			return PXH_BAD;
		return PXH_MORE;
	}
	body = rd_sub(&rec, rlen);
	if (rd_u8(&body) != 1) /* client_hello */
		return PXH_BAD;
	hlen = (size_t)rd_u8(&body) << 16;
	hlen |= rd_u16(&body);
	hs = rd_sub(&body, hlen);
	if (body.bad || body.off != body.n)
		return PXH_BAD;
	return client_hello(&hs, sni, alpn_h1);
}
