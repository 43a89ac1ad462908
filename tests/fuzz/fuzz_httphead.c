// SPDX-License-Identifier: MIT
/*
 * Fuzz target for preload/httphead.c: request heads, rewriting, chunked bodies and
 * response heads, fed in the splits the first input byte selects. Checks invariants, not
 * just the absence of crashes: a rewritten head must parse again with the same framing.
 */
#include "../../daemon/lib/httphead.c"
#include "../../daemon/lib/httpbody.c"
#include "../../daemon/lib/jsonw.c"

#include <stdlib.h>

static char fz_head[HH_HEAD_MAX + 1];
static char fz_out[HH_HEAD_MAX + 8192];
static struct hh_req fz_r, fz_r2;

/* Header lines of the rewritten head: those kept plus the one added. */
static int fz_added_lines(const struct hh_req *r)
{
	int n = 1;

	for (int h = 0; h < r->nhdr; h++)
		if (!hh_span_ieq(fz_head, r->hdr[h].name, "authorization"))
			n++;
	return n;
}

static void fz_request(const uint8_t *d, size_t n, size_t step)
{
	struct hh_scan sc = {0};
	size_t hlen = 0, off = 0;

	while (off < n) {
		size_t k = n - off < step ? n - off : step, used = 0;
		int rc = hh_scan_feed(&sc, (const char *)d + off, k, &used);
		struct dp_err err = {""};

		if (rc < 0 || hlen + used > HH_HEAD_MAX)
			return;
		memcpy(fz_head + hlen, d + off, used);
		hlen += used;
		off += used;
		if (rc == 0)
			continue;
		if (hh_req_parse(fz_head, hlen, &fz_r, &err) == 0) {
			ssize_t m = hh_req_rewrite(fz_head, hlen, &fz_r, "Authorization",
						   "Bearer a.b.c", fz_out, sizeof(fz_out));

			/* refused only where the parser would refuse the result */
			if (m == -E2BIG &&
			    (fz_added_lines(&fz_r) > HH_MAX_HEADERS || hlen + 64 > HH_HEAD_MAX))
				return;
			if (m <= 0 || (size_t)m > sizeof(fz_out))
				abort();
			if (hh_req_parse(fz_out, (size_t)m, &fz_r2, &err) != 0)
				abort();
			if (fz_r2.content_length != fz_r.content_length ||
			    fz_r2.chunked != fz_r.chunked)
				abort();
		} else if (!err.msg[0]) {
			abort();
		}
		hlen = 0;
	}
}

static void fz_chunked(const uint8_t *d, size_t n, size_t step)
{
	struct hh_body b;
	size_t off = 0;

	hh_body_init(&b, HH_BODY_CHUNKED, 0);
	while (off < n) {
		size_t k = n - off < step ? n - off : step;
		bool done = false;
		ssize_t r = hh_body_feed(&b, (const char *)d + off, k, &done);

		if (r < 0)
			return;
		if ((size_t)r > k || (!done && (size_t)r != k))
			abort();
		off += (size_t)r;
		if (done)
			return;
	}
}

static void fz_response(const uint8_t *d, size_t n, size_t step)
{
	struct hh_resp r;
	size_t off = 0;

	hh_resp_init(&r);
	while (off < n) {
		size_t k = n - off < step ? n - off : step, used = 0;
		int rc = hh_resp_feed(&r, (const char *)d + off, k, &used);

		if (rc < 0)
			return;
		if (used > k)
			abort();
		off += used;
		if (rc == 1) {
			(void)hh_resp_body_mode(&r, false, false);
			hh_resp_init(&r);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t step;

	if (size < 1)
		return 0;
	step = (data[0] & 0x0f) + 1;
	if (data[0] & 0x10)
		step = size;
	switch (data[0] >> 5) {
	case 0:
	case 1:
	case 2:
		fz_request(data + 1, size - 1, step);
		break;
	case 3:
	case 4:
		fz_chunked(data + 1, size - 1, step);
		break;
	case 5:
	case 6:
		fz_response(data + 1, size - 1, step);
		break;
	default: {
		char out[HH_DENY_RESP_MAX];
		char s[512];
		size_t m = size - 1 < sizeof(s) - 1 ? size - 1 : sizeof(s) - 1;

		memcpy(s, data + 1, m);
		s[m] = 0;
		if (hh_deny_response(out, sizeof(out), s, s, s) < 0)
			abort();
		break;
	}
	}
	return 0;
}
