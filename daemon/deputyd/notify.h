/* SPDX-License-Identifier: MIT */
/* notify: telling a service manager deputyd's state (sd_notify protocol; notify.c). */
#ifndef DEPUTY_NOTIFY_H
#define DEPUTY_NOTIFY_H

#include "util.h"

/* Takes $NOTIFY_SOCKET out of the environment (children must not speak for deputyd) and
 * keeps it for the calls below. Without it they do nothing. 0, or -EINVAL for an address
 * that is not a Unix socket's. */
int notify_init(struct dp_err *err) DP_WUR;
/* One datagram of "KEY=VALUE" lines: "READY=1", "STOPPING=1", "STATUS=…". 0 or -errno. */
int notify_send(const char *state);
/* "RELOADING=1" with the MONOTONIC_USEC= that Type=notify-reload asks for. */
int notify_reloading(void);

#endif
