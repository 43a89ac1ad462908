/* SPDX-License-Identifier: MIT */
/*
 * hello: what a redirected connection starts with, pure (no I/O, no allocation) so a fuzz
 * target can call it. A TLS ClientHello gives the SNI the leaf certificate is minted for;
 * bytes that can start an HTTP/1.x request are proxied as plain HTTP; anything else is
 * refused.
 */
#ifndef DEPUTY_PROXY_HELLO_H
#define DEPUTY_PROXY_HELLO_H

#include <stddef.h>
#include <stdint.h>

/* The ClientHello must fit in the first TLS record (16 KiB of payload, RFC 8446 §5.1). */
#define PXH_HELLO_MAX (5 + 16384)
#define PXH_SNI_MAX 254 /* 253 characters and the NUL */

enum pxh_kind {
	PXH_MORE = 0,  /* undecided: read more (up to PXH_HELLO_MAX bytes) */
	PXH_TLS = 1,   /* a complete ClientHello; sni set ("" when it names none) */
	PXH_PLAIN = 2, /* the start of an HTTP/1.x request */
	PXH_BAD = 3,   /* neither */
};

/* Classifies the first n bytes of a connection. For PXH_TLS, sni receives the host_name of
 * the server_name extension, lower-cased, checked to be a DNS name (letters, digits, '-',
 * '.'), or "" when there is none; *alpn_h1 is 1 when the client offers http/1.1 or no ALPN at
 * all. A ClientHello with two server_name extensions, or two host names, is PXH_BAD. */
enum pxh_kind pxh_classify(const uint8_t *p, size_t n, char sni[PXH_SNI_MAX], int *alpn_h1);

#endif
