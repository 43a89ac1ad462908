/* SPDX-License-Identifier: MIT */
/* dispatch: from one complete frame to the handler of its type (OpenSSH monitor style). */
#ifndef DEPUTY_DISPATCH_H
#define DEPUTY_DISPATCH_H

#include "conn.h"

/* A conn_frame_fn: parses, checks what the table requires, runs the handler, replies. */
void dispatch_frame(struct deputyd *d, struct conn *c, const struct dp_hdr *h,
		    const uint8_t *payload);

#endif
