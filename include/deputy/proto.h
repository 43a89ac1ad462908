/* SPDX-License-Identifier: MIT */
/*
 * The shim/CLI <-> deputyd wire protocol, over deputyd's Unix stream socket.
 *
 * The agent side is untrusted: deputyd parses every frame strictly and decides everything.
 * A frame is a fixed 12-byte header followed by `len` bytes of fields. A field is
 * tag (u16) | length (u16) | value. Integers are little-endian u64 values of length 8,
 * strings are raw bytes (no NUL on the wire, none allowed inside). Unknown tags are an
 * error, as are duplicates of non-repeatable tags, so no two parsers can disagree.
 *
 * Every request gets exactly one reply with the same seq, unless it carries DP_F_NOREPLY.
 * A malformed frame closes the connection. These helpers allocate nothing, so the shim can
 * use them on its request path.
 */
#ifndef DEPUTY_PROTO_H
#define DEPUTY_PROTO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DP_PROTO_VERSION 1
#define DP_PROTO_HDR_LEN 12
#define DP_PROTO_MAX_PAYLOAD 32768 /* a grant is at most 16 KiB */

enum dp_msg_type {
	DP_MSG_OK = 1,		    /* reply: nothing to say */
	DP_MSG_ERROR = 2,	    /* reply: DP_T_REASON */
	DP_MSG_SESSION_OPEN = 10,   /* GRANT, AGENT, PID (the sender's child), ARGV… -> OPENED */
	DP_MSG_SESSION_OPENED = 11, /* SESSION, USER [, CA] */
	DP_MSG_SESSION_CLOSE = 12,  /* SESSION, STATUS -> OK */
	DP_MSG_KILL = 13,	    /* SESSION [, REASON] -> OK: end it now (root or its user) */
	DP_MSG_REVOKE = 14,	    /* JTI (a grant's) | USER, [REASON] -> DATA_REPLY (root) */
	DP_MSG_REVOKE_LIST = 15,    /* -> DATA_REPLY (JSON: the revocation list) (root) */
	DP_MSG_DECIDE = 20, /* SESSION, SCHEME, HOST, PORT, METHOD, TARGET [, COOKIE] -> DECISION */
	DP_MSG_DECISION = 21, /* VERDICT, REASON, [HEADER, TOKEN, JTI], SCOPE, USER */
	DP_MSG_RESPONSE = 22, /* SESSION, JTI, STATUS (usually NOREPLY) */
	/* Session tables (token_binding "session"): what the shim may decide without asking.
	 * 23 was once the shim's claim on a socket (the kernel's business now). */
	DP_MSG_TABLE_GET = 23, /* SESSION -> TABLE, with the session's generation page as
				* SCM_RIGHTS (a read-only memfd whose first u64 is GEN) */
	DP_MSG_DENY_REPORT =
	    24,		   /* SESSION, REASON, [HOST, METHOD, TARGET]: the shim refused locally */
	DP_MSG_TABLE = 25, /* GEN, ENTRY… (none: decide nothing alone) */
	DP_MSG_USES = 26,  /* SESSION, USE… (at most DP_USES_MAX; NOREPLY): tokens of the
			    * table injected without asking */
	DP_MSG_SESSIONS = 30,	/* -> DATA_REPLY (JSON array) */
	DP_MSG_LOG_READ = 31,	/* SESSION | HOST_LOG, OFFSET -> LOG_DATA */
	DP_MSG_LOG_DATA = 32,	/* DATA, OFFSET (next), STATUS (1 = session closed) */
	DP_MSG_JWKS = 33,	/* -> DATA_REPLY (deputyd's JWKS JSON) */
	DP_MSG_DATA_REPLY = 34, /* reply: DATA */
	/* deputy route test: GRANT, AGENT, SCHEME, HOST, PORT, METHOD, TARGET -> DATA_REPLY
	 * (JSON: the route and the decision a session of that grant would get; nothing sent,
	 * logged or minted). SESSIONS may carry filters: USER, AGENT, SESSION (an id prefix),
	 * STATUS (1: open only), SINCE, UNTIL. */
	DP_MSG_ROUTE_TEST = 35,
	/* deputy-proxy <-> deputyd, only on the socketpair deputyd started the proxy with. The
	 * proxy names connections by the CONN id deputyd gave it, never by session. */
	DP_MSG_PROXY_CONN = 40,	    /* the accepted socket as SCM_RIGHTS -> PROXY_CONN_OK */
	DP_MSG_PROXY_CONN_OK = 41,  /* CONN, FAMILY, ADDR, PORT (original destination), COOKIE
				     * (a per-session tag: upstream connections are never shared
				     * across sessions) */
	DP_MSG_PROXY_LEAF = 42,	    /* CONN, HOST (the SNI) -> DATA_REPLY: DATA (leaf cert and key,
				     * PEM), OFFSET (the leaf's id, to cache it by) */
	DP_MSG_PROXY_DECIDE = 43,   /* CONN, SCHEME, HOST, METHOD, TARGET -> DECISION */
	DP_MSG_PROXY_RESPONSE = 44, /* CONN, JTI, STATUS (NOREPLY) */
	DP_MSG_PROXY_DENY = 45,	    /* CONN, REASON [, METHOD, TARGET]: refused in the proxy */
	DP_MSG_PROXY_CLOSE = 46,    /* CONN, STATUS (requests mediated on it) (NOREPLY) */
	/* The proxy's session tables: as TABLE_GET and USES, by CONN instead of SESSION. */
	DP_MSG_PROXY_TABLE_GET = 47, /* CONN -> TABLE, with the session's generation page */
	DP_MSG_PROXY_USES = 48,	     /* CONN, USE… (NOREPLY): uses on that connection */
};

enum dp_tag {
	DP_T_REASON = 1,
	DP_T_GRANT = 2,
	DP_T_AGENT = 3,
	DP_T_ARGV = 4, /* repeatable */
	DP_T_SESSION = 5,
	DP_T_USER = 6,
	DP_T_STATUS = 7,
	DP_T_SCHEME = 8,
	DP_T_HOST = 9,
	DP_T_PORT = 10,
	DP_T_METHOD = 11,
	DP_T_TARGET = 12,
	DP_T_COOKIE = 13,
	DP_T_VERDICT = 14,
	DP_T_HEADER = 15,
	DP_T_TOKEN = 16,
	DP_T_JTI = 17,
	DP_T_SCOPE = 18,
	DP_T_PID = 19,
	DP_T_FAMILY = 20, /* AF_INET / AF_INET6 */
	DP_T_ADDR = 21,	  /* 4 or 16 raw bytes */
	DP_T_OFFSET = 22,
	DP_T_DATA = 23,
	DP_T_CONN = 24, /* a proxied connection's id, given by deputyd */
	DP_T_CA = 25,	/* SESSION_OPENED: the session's proxy CA certificate, PEM */
	/* DECIDE may also carry SNI (the TLS server name the client sent) and FAMILY + ADDR
	 * (the socket's peer, as the shim knows it). */
	DP_T_SNI = 26,
	DP_T_HOST_LOG = 27, /* LOG_READ: deputyd's own host log instead of a session's (u64 1) */
	/* 28-29: unused. Session tables: ENTRY and USE are repeatable, each value a field list
	 * of its own (the same encoding and tags, see below). */
	DP_T_ENTRY = 30,
	DP_T_USE = 31,
	DP_T_GEN = 32, /* u64: the table's generation */
	DP_T_EXP = 33, /* u64: a token's exp (seconds since the epoch) */
	/* MCP routes: a DECIDE answered DP_VERDICT_MCP_BODY is asked again with the JSON-RPC
	 * call the body makes (its method, params.name or params.uri, and the hex SHA-256 of
	 * the body); the token binds all three, which is what the server checks. */
	DP_T_MCP_METHOD = 34,
	DP_T_MCP_NAME = 35,
	DP_T_BODY_SHA256 = 36,
	/* DECISION for a tools/list under "filter_list": repeatable "+NAME" / "-NAME", NAME "*"
	 * for the rest: the tools the grant allows. */
	DP_T_MCP_RULE = 37,
	/* SESSIONS: sessions that ran at some time in [SINCE, UNTIL], as RFC 3339 UTC
	 * timestamps with microseconds, the records' own form (compared as strings). */
	DP_T_SINCE = 38,
	DP_T_UNTIL = 39,
	DP_T_MAX_ = 40,
};

enum dp_verdict {
	DP_VERDICT_DENY = 0,
	DP_VERDICT_DELEGATE = 1,
	DP_VERDICT_PASSTHROUGH = 2,
	/* An MCP route: read the whole body and DECIDE again with its call (MCP_METHOD …).
	 * Anything that does not know this verdict refuses the request, as for any other. */
	DP_VERDICT_MCP_BODY = 3,
};

#define DP_F_NOREPLY 0x01

/*
 * A table ENTRY is one route that shares host and port with a route the shim may decide
 * alone, in config order (first match wins, as in deputyd): VERDICT (enum dp_entry), HOST, PORT,
 * [METHOD], [TARGET: the path glob], and for DP_ENTRY_LOCAL: HEADER, TOKEN, JTI, EXP and ADDR…
 * (family byte, prefix byte, 4 or 16 address bytes: where the token may go). A USE is one request
 * the shim sent with a table token: JTI, METHOD, HOST, PORT, TARGET [, SCHEME (default https),
 * COOKIE].
 */
enum dp_entry {
	DP_ENTRY_ASK = 0,   /* a request this route matches goes to deputyd */
	DP_ENTRY_LOCAL = 1, /* ...gets the entry's token without asking */
	DP_ENTRY_DENY = 2,  /* a deny route: asks too, and matches as deny routes do */
};
#define DP_USES_MAX 64
#define DP_TABLE_MAX_ENTRIES 64

struct dp_hdr {
	uint32_t len; /* payload bytes after the header */
	uint8_t version;
	uint8_t flags;
	uint16_t type;
	uint32_t seq;
};
_Static_assert(sizeof(struct dp_hdr) == DP_PROTO_HDR_LEN, "wire header is 12 bytes");

/* A message under construction in a caller-provided buffer. */
struct dp_msg {
	uint8_t *buf;
	size_t cap;
	size_t len;
	int err; /* sticky: first error of a put */
};

static inline void dp_msg_init(struct dp_msg *m, void *buf, size_t cap, uint16_t type, uint32_t seq,
			       uint8_t flags)
{
	struct dp_hdr h = {0, DP_PROTO_VERSION, flags, type, seq};

	m->buf = (uint8_t *)buf;
	m->cap = cap;
	m->len = 0;
	m->err = 0;
	if (cap < DP_PROTO_HDR_LEN) {
		m->err = -ENOSPC;
		return;
	}
	memcpy(m->buf, &h, sizeof(h));
	m->len = DP_PROTO_HDR_LEN;
}

static inline void dp_msg_put(struct dp_msg *m, uint16_t tag, const void *val, size_t n)
{
	uint16_t t = tag, l = (uint16_t)n;

	if (m->err)
		return;
	if (n > 0xffff || m->len + 4 + n > m->cap ||
	    m->len - DP_PROTO_HDR_LEN + 4 + n > DP_PROTO_MAX_PAYLOAD) {
		m->err = -ENOSPC;
		return;
	}
	memcpy(m->buf + m->len, &t, 2);
	memcpy(m->buf + m->len + 2, &l, 2);
	if (n)
		memcpy(m->buf + m->len + 4, val, n);
	m->len += 4 + n;
}

static inline void dp_msg_put_str(struct dp_msg *m, uint16_t tag, const char *s)
{
	dp_msg_put(m, tag, s, s ? strlen(s) : 0);
}

static inline void dp_msg_put_u64(struct dp_msg *m, uint16_t tag, uint64_t v)
{
	dp_msg_put(m, tag, &v, sizeof(v));
}

/* A USE's own field list (USES, PROXY_USES), into u started after a header not sent. */
static inline void dp_use_put(struct dp_msg *u, const char *scheme, const char *jti,
			      const char *method, const char *host, int port, const char *target)
{
	dp_msg_put_str(u, DP_T_SCHEME, scheme);
	dp_msg_put_str(u, DP_T_JTI, jti);
	dp_msg_put_str(u, DP_T_METHOD, method);
	dp_msg_put_str(u, DP_T_HOST, host);
	dp_msg_put_u64(u, DP_T_PORT, (uint64_t)port);
	dp_msg_put_str(u, DP_T_TARGET, target);
}

/* A received string field as a C string: copied with its NUL into arena[*used..cap), which
 * holds a message's strings without allocating. NULL when it has an inner NUL or there is
 * no room. */
static inline char *dp_field_str(char *arena, size_t cap, size_t *used, const uint8_t *v,
				 uint16_t n)
{
	char *s;

	if (memchr(v, '\0', n) || *used + n + 1 > cap)
		return NULL;
	s = arena + *used;
	memcpy(s, v, n);
	s[n] = '\0';
	*used += (size_t)n + 1;
	return s;
}

/* Finish: write the payload length into the header. 0 or the sticky error. */
static inline int dp_msg_finish(struct dp_msg *m)
{
	uint32_t plen;

	if (m->err)
		return m->err;
	plen = (uint32_t)(m->len - DP_PROTO_HDR_LEN);
	memcpy(m->buf, &plen, sizeof(plen));
	return 0;
}

/* Check a received header. 0, or -EPROTO (version) / -EMSGSIZE (length). */
static inline int dp_hdr_check(const struct dp_hdr *h)
{
	if (h->version != DP_PROTO_VERSION)
		return -EPROTO;
	if (h->len > DP_PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	return 0;
}

/* Walk the fields of a payload. Returns 1 with tag/val/vlen set, 0 at the end, -EBADMSG on a
 * field that runs past the payload. */
static inline int dp_field_next(const uint8_t *p, size_t len, size_t *off, uint16_t *tag,
				const uint8_t **val, uint16_t *vlen)
{
	if (*off == len)
		return 0;
	if (len - *off < 4)
		return -EBADMSG;
	memcpy(tag, p + *off, 2);
	memcpy(vlen, p + *off + 2, 2);
	if (len - *off - 4 < *vlen)
		return -EBADMSG;
	*val = p + *off + 4;
	*off += 4 + (size_t)*vlen;
	return 1;
}

#endif
