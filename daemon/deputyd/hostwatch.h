/* SPDX-License-Identifier: MIT */
/* hostwatch: deputyd's own losses (kernel events, exported records) into the host log. */
#ifndef DEPUTY_HOSTWATCH_H
#define DEPUTY_HOSTWATCH_H

#include <jansson.h>

#include "deputyd.h"

/* After the kernel layer and the export are set up: losses from before are reported once. */
void hostwatch_start(struct deputyd *d);
/* Every tick: new losses since the last record, at most one record per kind per 10 s. */
void hostwatch_tick(struct deputyd *d);
/* The totals, for the deputyd_stop seal (a new object). */
json_t *hostwatch_counts(struct deputyd *d);

#endif
