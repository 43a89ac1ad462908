/* SPDX-License-Identifier: MIT */
/*
 * session_int: what session.c shares with session_recover.c, nobody else.
 */
#ifndef DEPUTY_SESSION_INT_H
#define DEPUTY_SESSION_INT_H

#include "deputyd.h"

void session_state_path(struct deputyd *d, const char *id, char *out, size_t n);
void session_free(struct session *s);
int session_make_cgroup(struct deputyd *d, struct session *s);

#endif
