/* SPDX-License-Identifier: MIT */
/*
 * httphead: HTTP/1.x message framing for the shim (and request heads for deputyd's JWKS
 * endpoint), pure (no I/O, no allocation), so it can be unit-tested and fuzzed on its own.
 *
 * Requests are parsed strictly: the shim must frame the byte stream exactly as the server
 * will, or a second request could hide inside what the shim took for a body (smuggling).
 * Anything ambiguous (two Content-Length, Content-Length with Transfer-Encoding, bare CR or
 * LF, obs-fold, whitespace before a colon, a head over HH_HEAD_MAX) is refused.
 * Responses are only observed (status and framing, for the audit log and to know when the
 * responses owed before a refusal are complete), so their parser is lenient but bounded.
 */
#ifndef DEPUTY_HTTPHEAD_H
#define DEPUTY_HTTPHEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HH_HEAD_MAX 65536 /* request header section, request line included */
#define HH_MAX_HEADERS 128
#define HH_HOST_MAX 256

/* Where a request head ends: fed bytes in any split, finds the CRLF CRLF. */
struct hh_scan {
	uint8_t st;
	bool started; /* a byte other than the CRLFs allowed before a request line was seen */
};
/* Consumes bytes up to and including the end of the head. Returns 1 when the head ended
 * (*used counts its last byte), 0 when more is needed (*used == n), -EBADMSG on a bare CR,
 * a bare LF or a NUL. */
int hh_scan_feed(struct hh_scan *s, const char *p, size_t n, size_t *used);

struct hh_span {
	uint32_t off, len;
};

struct hh_req {
	struct hh_span method, target;
	struct hh_span host;	/* Host header value, raw */
	struct hh_span start;	/* the request line begins at start.off (leading CRLFs skipped) */
	int minor;		/* HTTP/1.<minor> */
	int64_t content_length; /* -1: none */
	bool chunked, expect_continue, upgrade, is_head, is_connect, absolute_form;
	char abs_host[HH_HOST_MAX]; /* host of an absolute-form target, normalised */
	int abs_port;		    /* -1 when absent */
	int nhdr;
	struct {
		struct hh_span name, value, line; /* line: the whole line with its CRLF */
	} hdr[HH_MAX_HEADERS];
};

/* Parses a complete head (as delimited by hh_scan_feed). 0, or -EBADMSG with a short reason
 * in err (used in the 403 and the audit log). */
struct dp_err;
int hh_req_parse(const char *buf, size_t len, struct hh_req *r, struct dp_err *err);

/* Copies the head to out with every header named `name` (case-insensitive) removed and
 * "name: value" added as the last header. Returns the new length, -ENOSPC (cap too small),
 * -E2BIG (hh_req_parse would refuse the result: too many headers or too large) or -EINVAL
 * (name not a token, value with CR, LF or NUL). */
ssize_t hh_req_rewrite(const char *buf, size_t len, const struct hh_req *r, const char *name,
		       const char *value, char *out, size_t cap);

/* A Host value (or URI authority) lower-cased, without port, IPv6 brackets kept.
 * *port = the port or -1. 0 or -EINVAL for an empty or malformed authority. */
int hh_host_norm(const char *p, size_t n, char *out, size_t cap, int *port);

/* Could the bytes so far start a request ("GET /…")? Used only on a connection's first
 * bytes, to leave non-HTTP protocols (TLS records at the socket layer, echo protocols)
 * untouched. */
enum hh_prefix { HH_PREFIX_NO, HH_PREFIX_MAYBE, HH_PREFIX_YES };
enum hh_prefix hh_method_prefix(const char *p, size_t n);
/* Is m, exactly as written, one of those known methods (upper-case)? On a routed
 * destination deputyd refuses others unless the route names them (design: Policy). */
bool hh_method_known(const char *m);

/* Message body framing (Content-Length, chunked, until close, none): httpbody.c. */
enum hh_body_mode { HH_BODY_NONE, HH_BODY_LENGTH, HH_BODY_CHUNKED, HH_BODY_CLOSE };
struct hh_body {
	uint8_t mode, st;
	uint8_t digits;
	uint64_t left;
	uint32_t line; /* bytes in the current chunk-ext/trailer line, bounded */
	uint32_t trailer;
	/* Where hh_body_feed copies the content (chunk framing removed), if set. */
	char *sink;
	size_t sink_cap, sink_len;
	bool sink_over; /* more content than sink_cap: the rest was not copied */
};
void hh_body_init(struct hh_body *b, enum hh_body_mode mode, uint64_t length);
/* Also keep the content: an MCP route decides on the body it reads (mcp.h). */
void hh_body_sink(struct hh_body *b, char *buf, size_t cap);
/* Consumes the body bytes among p[0..n): returns how many belong to the body; *done is set
 * when the body ended (the rest starts the next message). -EBADMSG on a malformed chunked
 * encoding. HH_BODY_CLOSE never ends. */
ssize_t hh_body_feed(struct hh_body *b, const char *p, size_t n, bool *done);

/* A response head, observed line by line with a small bounded line buffer. */
struct hh_resp {
	uint8_t st;
	bool got_status, chunked, te_other, cl_bad;
	int status;
	int64_t content_length;
	uint32_t head_bytes;
	uint16_t linelen;
	char line[512]; /* first bytes of the current line: enough for the fields we read */
};
void hh_resp_init(struct hh_resp *r);
/* Returns 1 when the head ended (*used counts its last byte), 0 when more is needed,
 * -EBADMSG on something that is not an HTTP/1.x response head. */
int hh_resp_feed(struct hh_resp *r, const char *p, size_t n, size_t *used);
/* The framing of the body that follows a response head, given the request method. */
enum hh_body_mode hh_resp_body_mode(const struct hh_resp *r, bool req_head, bool req_connect);

/* The refusal the agent reads: a complete HTTP/1.1 403 with a JSON body
 * {"error":"deputy_denied","reason":…,"scope":…,"user":…}, each field cut at
 * HH_DENY_FIELD_MAX bytes. Length, or -ENOSPC when cap < HH_DENY_RESP_MAX may not do. */
#define HH_DENY_FIELD_MAX 256
#define HH_DENY_RESP_MAX (3 * 6 * HH_DENY_FIELD_MAX + 256)
ssize_t hh_deny_response(char *out, size_t cap, const char *reason, const char *scope,
			 const char *user);
/* That JSON object alone, into a writer (the MCP refusal carries it as its error's data). */
struct jw;
void hh_deny_json(struct jw *w, const char *reason, const char *scope, const char *user);

/* Is c a tchar (RFC 9110 §5.6.2 token character: what methods and field names are made of)?
 * The one copy of that check for the shim, deputyd and the CLI. */
bool hh_is_tchar(unsigned char c);
/* Is c allowed in a field value (VCHAR, obs-text, SP, HTAB)? */
bool hh_is_vchar_obs(unsigned char c);
/* Is s a token of 1 to max tchars? */
bool hh_is_token(const char *s, size_t max);

#endif
