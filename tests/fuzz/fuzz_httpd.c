// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for httpd's request-head parsing: the bytes any local process can send.
 * The input is fed to one client in pieces (the first byte picks the piece size), as
 * recv() would deliver it; whatever happens, the client ends up answered or still reading,
 * and an answer is a well-formed status line.
 */
#include "../../daemon/lib/util.c"
#include "../../daemon/lib/jsonw.c"
#include "../../daemon/lib/httphead.c"
#include "../../daemon/lib/url.c"
#include "../../daemon/lib/urlpath.c"
#include "../../daemon/lib/config_value.c"
#include "../../daemon/lib/config.c"
#include "../../daemon/lib/config_issuer.c"
#include "../../daemon/lib/config_mcp.c"
#include "../../daemon/deputyd/httpd.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dp_httpd h = {.lock = PTHREAD_MUTEX_INITIALIZER};
	static struct httpd_client c;
	size_t step, off = 0;

	if (size < 1)
		return 0;
	h.jwks = "{\"keys\":[]}";
	h.meta = "{}";
	step = (size_t)data[0] % 64 + 1;
	data++, size--;
	memset(&c, 0, sizeof(c));
	c.state = CL_READ;
	c.fd = -1;
	while (off < size && c.state == CL_READ) {
		size_t n = size - off < step ? size - off : step;
		size_t old = c.in_len;

		if (n > sizeof(c.in) - c.in_len)
			n = sizeof(c.in) - c.in_len;
		memcpy(c.in + c.in_len, data + off, n);
		c.in_len += n;
		off += n;
		httpd_client_check_input(&h, &c, old);
	}
	if (c.state == CL_WRITE) {
		if (c.out_len < 17 || memcmp(c.out, "HTTP/1.1 ", 9) != 0)
			__builtin_trap();
		free(c.out);
	} else if (c.state != CL_READ || c.in_len >= sizeof(c.in)) {
		__builtin_trap();
	}
	return 0;
}
