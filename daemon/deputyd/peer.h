/* SPDX-License-Identifier: MIT */
/* peer: is the process at the other end of a connection really in the session it names? */
#ifndef DEPUTY_PEER_H
#define DEPUTY_PEER_H

#include <stdbool.h>

#include "conn.h"

/* Does c's process belong to s? Binds c to s on the first success. */
bool peer_in_session(struct conn *c, struct session *s, struct dp_err *err);
/* The open session named id, if c's process is in it; NULL with the reason in err. */
struct session *peer_session(struct deputyd *d, struct conn *c, const char *id, struct dp_err *err);

#endif
