// SPDX-License-Identifier: MIT
/*
 * Fuzz target for the proxy's parsers of hostile input: the first bytes of a redirected
 * connection (daemon/proxy/hello.c: ClientHello and SNI, or the start of a request) and a
 * request head's host and upstream rewrite (daemon/proxy/pxhttp.c). Invariants:
 *  - classification is stable: a prefix of an input is never classified differently except
 *    as "need more"; a complete hello gives the same SNI however much follows it;
 *  - an SNI is a lower-case DNS name that fits its buffer;
 *  - a head the proxy forwards parses again, names the same host, keeps its framing, and
 *    carries the token in exactly one header.
 */
#include "../../daemon/lib/httpbody.c"
#include "../../daemon/lib/httphead.c"
#include "../../daemon/lib/jsonw.c"
#include "../../daemon/lib/util.c"
#include "../../daemon/proxy/hello.c"
#include "../../daemon/proxy/pxhttp.c"

#include <errno.h>
#include <stdlib.h>

static char fz_out[HH_HEAD_MAX + 24576];
static struct hh_req fz_r, fz_r2;

static void fz_hello(const uint8_t *d, size_t n)
{
	char sni[PXH_SNI_MAX], sni2[PXH_SNI_MAX];
	int h1, h1b;
	enum pxh_kind k = pxh_classify(d, n, sni, &h1), k2;

	if (k == PXH_TLS) {
		size_t len = strlen(sni);

		if (len >= PXH_SNI_MAX)
			abort();
		for (size_t i = 0; i < len; i++)
			if (!((sni[i] >= 'a' && sni[i] <= 'z') ||
			      (sni[i] >= '0' && sni[i] <= '9') || sni[i] == '-' || sni[i] == '.'))
				abort();
	}
	/* Every prefix is "more" or the same verdict. */
	for (size_t cut = n > 64 ? n - 64 : 0; cut < n; cut++) {
		k2 = pxh_classify(d, cut, sni2, &h1b);
		if (k2 != PXH_MORE && k2 != k)
			abort();
		if (k2 == PXH_TLS && (strcmp(sni, sni2) != 0 || h1 != h1b))
			abort();
	}
}

static void fz_http(const uint8_t *d, size_t n)
{
	struct hh_scan sc = {0};
	size_t used = 0;
	struct dp_err err;
	char host[HH_HOST_MAX], host2[HH_HOST_MAX];
	ssize_t m;
	int auth = 0;

	if (hh_scan_feed(&sc, (const char *)d, n, &used) != 1 ||
	    hh_req_parse((const char *)d, used, &fz_r, &err) != 0 ||
	    pxhttp_host((const char *)d, &fz_r, host, &err) != 0)
		return;
	if (strlen(host) >= HH_HOST_MAX)
		abort();
	/* An HTTP/1.0 request without keep-alive is always the last one. */
	if (fz_r.minor == 0 && !pxhttp_last_request((const char *)d, &fz_r) &&
	    !memmem(d, used, "live", 4) && !memmem(d, used, "LIVE", 4) &&
	    !memmem(d, used, "Live", 4))
		abort();
	m = pxhttp_upstream_head((const char *)d, used, &fz_r, "Authorization", "t.o.k", fz_out,
				 sizeof(fz_out));
	/* A head the token cannot be added to (too many header lines or bytes for the parser)
	 * is refused by the relay, never sent: a refusal, not a failure. */
	if (m == -E2BIG || m == -ENOSPC)
		return;
	if (m <= 0)
		abort();
	if (hh_req_parse(fz_out, (size_t)m, &fz_r2, &err) != 0 ||
	    pxhttp_host(fz_out, &fz_r2, host2, &err) != 0 || strcmp(host, host2) != 0 ||
	    fz_r2.content_length != fz_r.content_length || fz_r2.chunked != fz_r.chunked ||
	    fz_r2.method.len != fz_r.method.len ||
	    memcmp(fz_out + fz_r2.method.off, d + fz_r.method.off, fz_r.method.len) != 0)
		abort();
	for (int i = 0; i < fz_r2.nhdr; i++)
		if (fz_r2.hdr[i].name.len == 13 &&
		    strncasecmp(fz_out + fz_r2.hdr[i].name.off, "authorization", 13) == 0) {
			auth++;
			if (fz_r2.hdr[i].value.len != 12 ||
			    memcmp(fz_out + fz_r2.hdr[i].value.off, "Bearer t.o.k", 12) != 0)
				abort();
		}
	if (auth != 1)
		abort();
	/* Unchanged when nothing is injected. */
	m = pxhttp_upstream_head((const char *)d, used, &fz_r, NULL, NULL, fz_out, sizeof(fz_out));
	if (m != (ssize_t)used || memcmp(fz_out, d, used) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	if (n == 0)
		return 0;
	if (d[0] & 1)
		fz_hello(d + 1, n - 1);
	else
		fz_http(d + 1, n - 1);
	return 0;
}
