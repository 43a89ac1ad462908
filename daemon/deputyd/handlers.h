/* SPDX-License-Identifier: MIT */
/*
 * handlers: what deputyd does for each request type. They run only after the dispatcher
 * (dispatch.c) checked what the table says of their message: required fields present,
 * the named session proven to be the peer's. A handler sends its own reply, or returns a
 * negative errno with the reason in err for the dispatcher to send (or, for DP_F_NOREPLY
 * requests, to drop).
 */
#ifndef DEPUTY_HANDLERS_H
#define DEPUTY_HANDLERS_H

#include "conn.h"
#include "wire.h"

struct handler_req {
	const struct dp_hdr *h;
	const struct wire_fields *f;
	struct session *s; /* the peer's session, for messages flagged DISPATCH_F_SESSION */
};

typedef int (*handler_fn)(struct deputyd *d, struct conn *c, const struct handler_req *r,
			  struct dp_err *err);

/* One handler per message, all of type handler_fn: dispatch.c's table names them. */
int handle_session_open(struct deputyd *d, struct conn *c, const struct handler_req *r,
			struct dp_err *err);
int handle_session_close(struct deputyd *d, struct conn *c, const struct handler_req *r,
			 struct dp_err *err);
int handle_decide(struct deputyd *d, struct conn *c, const struct handler_req *r,
		  struct dp_err *err);
int handle_response(struct deputyd *d, struct conn *c, const struct handler_req *r,
		    struct dp_err *err);
int handle_deny_report(struct deputyd *d, struct conn *c, const struct handler_req *r,
		       struct dp_err *err);
int handle_sessions(struct deputyd *d, struct conn *c, const struct handler_req *r,
		    struct dp_err *err);
int handle_log_read(struct deputyd *d, struct conn *c, const struct handler_req *r,
		    struct dp_err *err);
/* table.c */
int handle_table_get(struct deputyd *d, struct conn *c, const struct handler_req *r,
		     struct dp_err *err);
int handle_uses(struct deputyd *d, struct conn *c, const struct handler_req *r, struct dp_err *err);
int handle_jwks(struct deputyd *d, struct conn *c, const struct handler_req *r, struct dp_err *err);
/* handlers_ops.c */
int handle_kill(struct deputyd *d, struct conn *c, const struct handler_req *r, struct dp_err *err);
int handle_revoke(struct deputyd *d, struct conn *c, const struct handler_req *r,
		  struct dp_err *err);
int handle_revoke_list(struct deputyd *d, struct conn *c, const struct handler_req *r,
		       struct dp_err *err);
int handle_host_log_read(struct deputyd *d, struct conn *c, const struct handler_req *r,
			 struct dp_err *err);
int handle_route_test(struct deputyd *d, struct conn *c, const struct handler_req *r,
		      struct dp_err *err); /* route_test.c */

#endif
