// SPDX-License-Identifier: MIT
/*
 * dispatch: the wire protocol's table, OpenSSH monitor style: per message type its
 * required fields and flags, checked here once so no handler repeats them. A frame that
 * does not parse, or of a type not in the table, closes the connection; a request that
 * fails the table's checks gets an error reply.
 */
#include "dispatch.h"

#include <errno.h>

#include "handlers.h"
#include "peer.h"

/* The request names a session (DP_T_SESSION) that the peer must be proven to be in. */
#define DISPATCH_F_SESSION 0x01
/* The request may carry DP_F_NOREPLY: then it gets no reply at all, not even an error (the
 * shim's reports, sent on its request path without waiting). */
#define DISPATCH_F_NOREPLY 0x02
/* Success is answered with a bare DP_MSG_OK, by the dispatcher. */
#define DISPATCH_F_ACK 0x04

#define TAG(t) (1ull << (t))
_Static_assert(DP_T_MAX_ <= 64, "required fields are a 64-bit mask of tags");

static const struct {
	uint16_t type;
	const char *name; /* for the log */
	unsigned flags;
	uint64_t need; /* TAG() of every field that must be present */
	handler_fn fn;
} dispatch_table[] = {
    {DP_MSG_SESSION_OPEN, "session open", 0, TAG(DP_T_GRANT) | TAG(DP_T_AGENT) | TAG(DP_T_PID),
     handle_session_open},
    {DP_MSG_SESSION_CLOSE, "session close", DISPATCH_F_ACK, TAG(DP_T_SESSION),
     handle_session_close},
    {DP_MSG_DECIDE, "decide", DISPATCH_F_SESSION,
     TAG(DP_T_SCHEME) | TAG(DP_T_HOST) | TAG(DP_T_PORT) | TAG(DP_T_METHOD) | TAG(DP_T_TARGET),
     handle_decide},
    {DP_MSG_RESPONSE, "response", DISPATCH_F_SESSION | DISPATCH_F_NOREPLY | DISPATCH_F_ACK,
     TAG(DP_T_STATUS), handle_response},
    {DP_MSG_DENY_REPORT, "deny report", DISPATCH_F_SESSION | DISPATCH_F_NOREPLY | DISPATCH_F_ACK, 0,
     handle_deny_report},
    {DP_MSG_TABLE_GET, "table", DISPATCH_F_SESSION, 0, handle_table_get},
    {DP_MSG_USES, "use report", DISPATCH_F_SESSION | DISPATCH_F_NOREPLY | DISPATCH_F_ACK, 0,
     handle_uses},
    {DP_MSG_SESSIONS, "sessions", 0, 0, handle_sessions},
    {DP_MSG_LOG_READ, "log read", 0, 0, handle_log_read},
    {DP_MSG_JWKS, "jwks", 0, 0, handle_jwks},
    {DP_MSG_KILL, "kill", DISPATCH_F_ACK, TAG(DP_T_SESSION), handle_kill},
    {DP_MSG_REVOKE, "revoke", 0, 0, handle_revoke},
    {DP_MSG_REVOKE_LIST, "revoke list", 0, 0, handle_revoke_list},
    {DP_MSG_ROUTE_TEST, "route test", 0,
     TAG(DP_T_GRANT) | TAG(DP_T_AGENT) | TAG(DP_T_SCHEME) | TAG(DP_T_HOST) | TAG(DP_T_PORT) |
	 TAG(DP_T_METHOD) | TAG(DP_T_TARGET),
     handle_route_test},
};

static int dispatch_check(struct deputyd *d, struct conn *c, unsigned flags, uint64_t need,
			  struct handler_req *r, struct dp_err *err)
{
	for (uint16_t t = 1; t < DP_T_MAX_; t++)
		if ((need & TAG(t)) && !r->f->has[t]) {
			dp_err_set(err, "missing field tag %u", t);
			return -EBADMSG;
		}
	if (flags & DISPATCH_F_SESSION) {
		r->s = peer_session(d, c, r->f->str[DP_T_SESSION], err);
		if (!r->s)
			return -EPERM;
	}
	return 0;
}

void dispatch_frame(struct deputyd *d, struct conn *c, const struct dp_hdr *h,
		    const uint8_t *payload)
{
	static struct wire_fields f; /* one thread; 40 KiB is better off the stack */
	struct handler_req r = {h, &f, NULL};
	struct dp_err err;
	size_t i;
	bool quiet;
	int rc;

	if (wire_parse(payload, h->len, &f, &err) != 0) {
		pr_warn("client pid %d: malformed message: %s; closing", (int)c->pid, err.msg);
		c->dead = true;
		return;
	}
	for (i = 0; i < DP_ARRAY_SIZE(dispatch_table); i++)
		if (dispatch_table[i].type == h->type)
			break;
	if (i == DP_ARRAY_SIZE(dispatch_table)) {
		pr_warn("client pid %d: unknown message type %u; closing", (int)c->pid, h->type);
		c->dead = true;
		return;
	}
	quiet = (dispatch_table[i].flags & DISPATCH_F_NOREPLY) && (h->flags & DP_F_NOREPLY);
	if (c->orphaned && !quiet) {
		pr_warn("client pid %d exited; its %s is dropped", (int)c->pid,
			dispatch_table[i].name);
		c->dead = true;
		return;
	}
	rc = dispatch_check(d, c, dispatch_table[i].flags, dispatch_table[i].need, &r, &err);
	if (rc && !quiet)
		pr_warn("%s refused to pid %d: %s", dispatch_table[i].name, (int)c->pid, err.msg);
	if (rc == 0)
		rc = dispatch_table[i].fn(d, c, &r, &err);
	if (rc == -EINPROGRESS) {
		conn_wait(d, c); /* asked again when what it waits for is there */
		return;
	}
	if (quiet)
		return;
	if (rc)
		conn_reply_error(d, c, h->seq, err.msg);
	else if (dispatch_table[i].flags & DISPATCH_F_ACK)
		conn_reply_ok(d, c, h->seq);
}
