/* SPDX-License-Identifier: MIT */
/* bind: may a token for a route travel on this request's connection? (see bind.c) */
#ifndef DEPUTY_BIND_H
#define DEPUTY_BIND_H

#include "deputyd.h"

/* 0 when the request's connection goes to rt's host (the kernel's word, or under "kernel":
 * "off" the shim's) on rt's port, and its SNI and absolute-form target, if any, name that
 * host; else -EPERM with a reason naming both sides in err. */
int bind_check(struct deputyd *d, struct session *s, const struct decide_req *r,
	       const struct dp_route *rt, struct dp_err *err) DP_WUR;

#endif
