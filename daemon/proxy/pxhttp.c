// SPDX-License-Identifier: MIT
/*
 * pxhttp: which host a request names, the head that goes upstream, and the request body's
 * framing, for the proxy (see pxhttp.h).
 */
#include "pxhttp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util.h"

int pxhttp_host(const char *buf, const struct hh_req *r, char host[HH_HOST_MAX], struct dp_err *err)
{
	int port;

	if (r->is_connect || r->upgrade) {
		dp_err_set(err, "the proxy does not tunnel (CONNECT, Upgrade)");
		return -EBADMSG;
	}
	if (r->host.len == 0) {
		dp_err_set(err, "no Host header");
		return -EBADMSG;
	}
	if (hh_host_norm(buf + r->host.off, r->host.len, host, HH_HOST_MAX, &port) != 0) {
		dp_err_set(err, "malformed Host header");
		return -EBADMSG;
	}
	if (r->absolute_form && strcasecmp(r->abs_host, host) != 0) {
		dp_err_set(err, "the request target and Host name different hosts");
		return -EBADMSG;
	}
	return 0;
}

ssize_t pxhttp_upstream_head(const char *buf, size_t len, const struct hh_req *r,
			     const char *header, const char *token, char *out, size_t cap)
{
	char value[24000];

	if (!header) {
		if (len > cap)
			return -ENOSPC;
		memcpy(out, buf, len);
		return (ssize_t)len;
	}
	if ((size_t)snprintf(value, sizeof(value), "Bearer %s", token) >= sizeof(value))
		return -ENOSPC;
	return hh_req_rewrite(buf, len, r, header, value, out, cap);
}

/* Is token (case-insensitive) one of the comma-separated elements of the value? */
static bool list_has(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token);

	while (n > 0) {
		size_t e = 0, s, l;

		while (e < n && v[e] != ',')
			e++;
		for (s = 0; s < e && (v[s] == ' ' || v[s] == '\t'); s++)
			;
		for (l = e; l > s && (v[l - 1] == ' ' || v[l - 1] == '\t'); l--)
			;
		if (l - s == tl && strncasecmp(v + s, token, tl) == 0)
			return true;
		v += e < n ? e + 1 : e;
		n -= e < n ? e + 1 : e;
	}
	return false;
}

bool pxhttp_last_request(const char *buf, const struct hh_req *r)
{
	bool close = r->minor == 0, keep = false;

	for (int i = 0; i < r->nhdr; i++) {
		const char *name = buf + r->hdr[i].name.off;

		if (r->hdr[i].name.len != 10 || strncasecmp(name, "connection", 10) != 0)
			continue;
		close |= list_has(buf + r->hdr[i].value.off, r->hdr[i].value.len, "close");
		keep |= list_has(buf + r->hdr[i].value.off, r->hdr[i].value.len, "keep-alive");
	}
	return r->minor == 0 ? !keep || close : close;
}

void pxhttp_req_body(const struct hh_req *r, struct hh_body *b)
{
	if (r->chunked)
		hh_body_init(b, HH_BODY_CHUNKED, 0);
	else if (r->content_length > 0)
		hh_body_init(b, HH_BODY_LENGTH, (uint64_t)r->content_length);
	else
		hh_body_init(b, HH_BODY_NONE, 0);
}
