// SPDX-License-Identifier: MIT
/*
 * pxmcp: MCP calls in the proxy: the whole body read before anything is sent, its call and
 * hash for deputyd, and the tools/list filter (see pxmcp.h).
 */
#include "pxmcp.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pxhttp.h"
#include "util.h"

/* Chunk framing on top of a 1 MiB content: generous, but bounded. */
#define PXMCP_RAW_MAX (MCP_BODY_MAX + 65536)

void pxmcp_reset(struct pxmcp *m)
{
	free(m->raw);
	free(m->body);
	free(m->rulebuf);
	memset(m, 0, sizeof(*m));
}

int pxmcp_read_body(struct pxio *io, char *in, size_t cap, size_t *in_len, size_t head_len,
		    const struct hh_req *r, struct pxmcp *m, const char **why)
{
	struct hh_body b;
	size_t off = head_len;
	bool done = false;

	*why = "an MCP request body over 1 MiB is refused";
	if (r->content_length > (int64_t)MCP_BODY_MAX)
		return -E2BIG;
	pxhttp_req_body(r, &b);
	if (b.mode == HH_BODY_NONE) {
		*why = "an MCP call without a body";
		return -1;
	}
	m->body = malloc(MCP_BODY_MAX);
	m->raw = malloc(PXMCP_RAW_MAX);
	if (!m->body || !m->raw) {
		*why = "out of memory";
		return -1;
	}
	hh_body_sink(&b, m->body, MCP_BODY_MAX);
	for (;;) {
		ssize_t k = hh_body_feed(&b, in + off, *in_len - off, &done), n;

		if (k < 0) {
			*why = "malformed chunked request body";
			return -1;
		}
		if (b.sink_over || m->raw_len + (size_t)k > PXMCP_RAW_MAX) {
			*why = "an MCP request body over 1 MiB is refused";
			return -E2BIG;
		}
		memcpy(m->raw + m->raw_len, in + off, (size_t)k);
		m->raw_len += (size_t)k;
		off += (size_t)k;
		if (done)
			break;
		*in_len = off = head_len;
		n = pxio_read(io, in + head_len, cap - head_len);
		if (n <= 0) {
			*why = "the agent's connection ended inside the body";
			return -1;
		}
		*in_len += (size_t)n;
	}
	memmove(in + head_len, in + off, *in_len - off);
	*in_len = head_len + (*in_len - off);
	m->body_len = b.sink_len;
	return 0;
}

int pxmcp_call(struct pxmcp *m, const char *head, const struct hh_req *r, const char **why)
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	if (mcp_call_parse(m->body, m->body_len, &m->call, why) != 0 ||
	    mcp_headers_check(head, r, &m->call, why) != 0)
		return -1;
	if (EVP_Digest(m->body, m->body_len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		*why = "cannot hash the body";
		return -1;
	}
	dp_hex(md, sizeof(md), m->sha256);
	m->active = true;
	return 0;
}

void pxmcp_put_call(struct dp_msg *msg, const struct pxmcp *m)
{
	dp_msg_put_str(msg, DP_T_MCP_METHOD, m->call.method);
	if (m->call.name[0])
		dp_msg_put_str(msg, DP_T_MCP_NAME, m->call.name);
	dp_msg_put_str(msg, DP_T_BODY_SHA256, m->sha256);
}

void pxmcp_take_rules(struct pxmcp *m, const struct chan_reply *rep)
{
	size_t off = 0, used = 0;
	uint16_t tag, vlen;
	const uint8_t *v;

	m->n_rules = 0;
	m->filter = false;
	while (dp_field_next(rep->payload, rep->h.len, &off, &tag, &v, &vlen) == 1)
		m->filter |= tag == DP_T_MCP_RULE;
	if (!m->filter)
		return;
	off = 0;
	free(m->rulebuf);
	m->rulebuf = malloc(rep->h.len + 1);
	if (!m->rulebuf)
		return; /* no rules: every tool is hidden, none is shown by mistake */
	while (dp_field_next(rep->payload, rep->h.len, &off, &tag, &v, &vlen) == 1)
		if (tag == DP_T_MCP_RULE && m->n_rules < PXMCP_RULES_MAX && vlen > 1) {
			memcpy(m->rulebuf + used, v, vlen);
			m->rulebuf[used + vlen] = '\0';
			if (strlen(m->rulebuf + used) != vlen)
				continue;
			m->rules[m->n_rules++] = m->rulebuf + used;
			used += (size_t)vlen + 1;
		}
}

/* ---- the tools/list answer ------------------------------------------------------------ */

static void pxmcp_unfilterable(struct pxio *agent, const struct pxmcp *m, const char *why)
{
	char resp[MCP_UNFILTERABLE_MAX];
	ssize_t n = mcp_unfilterable_response(resp, sizeof(resp), m->call.id, why);

	if (n > 0)
		pxio_write(agent, resp, (size_t)n);
}

/* The response head into buf[0..*head_len), interim (1xx) heads passed on as they come.
 * *len: bytes in buf. 0, -1, or -2 when the upstream sent nothing at all. */
static int pxmcp_read_head(struct pxio *up, struct pxio *agent, char *buf, size_t cap, size_t *len,
			   size_t *head_len, struct hh_resp *rs)
{
	size_t fed = 0;
	bool any = false;

	hh_resp_init(rs);
	for (;;) {
		ssize_t n;

		if (fed < *len) {
			size_t used = 0;
			int r = hh_resp_feed(rs, buf + fed, *len - fed, &used);

			if (r < 0)
				return -1;
			fed += used;
			if (r == 1 && rs->status >= 100 && rs->status < 200) {
				if (rs->status == 101 || pxio_write(agent, buf, fed) != 0)
					return -1;
				memmove(buf, buf + fed, *len - fed);
				*len -= fed;
				fed = 0;
				hh_resp_init(rs);
				continue;
			}
			if (r == 1) {
				*head_len = fed;
				return 0;
			}
		}
		if (*len == cap)
			return -1;
		n = pxio_read(up, buf + *len, cap - *len);
		if (n <= 0)
			return any ? -1 : -2;
		any = true;
		*len += (size_t)n;
	}
}

int pxmcp_relay_filtered(struct pxio *up, struct pxio *agent, char *buf, size_t cap,
			 const struct pxmcp *m, bool req_head, int *status)
{
	struct hh_resp rs;
	struct hh_body b;
	size_t len = 0, head_len = 0, off;
	char *body = NULL, *out = NULL;
	size_t cap_out;
	bool done = false;
	ssize_t n;
	int r, rc;

	if ((r = pxmcp_read_head(up, agent, buf, cap, &len, &head_len, &rs)) != 0)
		return r;
	*status = rs.status;
	hh_body_init(&b, hh_resp_body_mode(&rs, req_head, false),
		     rs.content_length > 0 ? (uint64_t)rs.content_length : 0);
	if (b.mode == HH_BODY_NONE)
		return pxio_write(agent, buf, head_len) == 0 && len == head_len ? 0 : -1;
	body = malloc(MCP_BODY_MAX);
	if (!body)
		return -1;
	hh_body_sink(&b, body, MCP_BODY_MAX);
	off = head_len;
	for (;;) {
		ssize_t k = hh_body_feed(&b, buf + off, len - off, &done);

		if (k < 0 || b.sink_over) {
			free(body);
			pxmcp_unfilterable(agent, m,
					   "the tools/list answer is malformed or too large");
			return 1;
		}
		off += (size_t)k;
		if (done)
			break;
		len = off = head_len;
		n = pxio_read(up, buf + head_len, cap - head_len);
		if (n <= 0 && !(n == 0 && b.mode == HH_BODY_CLOSE)) {
			free(body);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	rc = done && off == len ? 0 : 1;
	cap_out = head_len + 48 + (rs.status == 200 ? b.sink_len + 1 : b.sink_len);
	out = malloc(cap_out);
	n = out ? mcp_filter_response(buf, head_len, rs.status, body, b.sink_len, m->rules,
				      m->n_rules, out, cap_out)
		: -ENOMEM;
	free(body);
	if (n < 0) {
		free(out);
		pxmcp_unfilterable(agent, m,
				   n == -EBADMSG ? "the tools/list answer cannot be filtered"
						 : "the tools/list answer is too large");
		return 1;
	}
	r = pxio_write(agent, out, (size_t)n) == 0 ? rc : -1;
	free(out);
	return r;
}
