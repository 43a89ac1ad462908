// SPDX-License-Identifier: MIT
/*
 * alpn: the protocol lists the SSL hooks hand on (see hooks_ssl.c): "h2" removed, so servers
 * answer in HTTP/1.1, the only HTTP the shim reads and rewrites.
 */
#include "hooks.h"
#include "shim.h"

#include <string.h>

/* Rewrites a wire-format protocol list without "h2". Returns the new length, or -1 to
 * leave the list alone (malformed: OpenSSL will say so). */
static int alpn_filter(const unsigned char *in, unsigned int len, unsigned char *out,
		       unsigned int cap)
{
	unsigned int i = 0, o = 0;

	if (len > cap)
		return -1;
	while (i < len) {
		unsigned int l = in[i];

		if (l == 0 || i + 1 + l > len)
			return -1;
		if (!(l == 2 && memcmp(in + i + 1, "h2", 2) == 0)) {
			memcpy(out + o, in + i, 1 + l);
			o += 1 + l;
		}
		i += 1 + l;
	}
	if (o == 0 && len > 0) {
		memcpy(out, "\x08http/1.1", 9);
		o = 9;
	}
	return (int)o;
}

const unsigned char *alpn_offer(const unsigned char *protos, unsigned int *len, unsigned char *buf,
				unsigned int cap)
{
	int n;

	if (shim_guard || !protos || (n = alpn_filter(protos, *len, buf, cap)) < 0)
		return protos;
	if ((unsigned int)n != *len)
		shim_debug("ALPN: h2 removed, HTTP/1.1 only");
	*len = (unsigned int)n;
	return buf;
}
