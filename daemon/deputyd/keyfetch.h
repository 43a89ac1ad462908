/* SPDX-License-Identifier: MIT */
/*
 * keyfetch: trusted issuers' jwks_uri fetched in threads of their own, so deputyd's event
 * loop never waits for an issuer (see grant.h, trust_defer_fetches).
 */
#ifndef DEPUTY_KEYFETCH_H
#define DEPUTY_KEYFETCH_H

#include <stdbool.h>

#include "deputyd.h"

/* Starts a thread for every fetch d->trust wants; each wakes d->wake_fd when done. */
void keyfetch_start(struct deputyd *d);
/* Installs the finished fetches' keys into d->trust; true if any finished, so requests
 * that waited for keys may be asked again. */
bool keyfetch_collect(struct deputyd *d);
/* At exit: waits (bounded by the fetch timeout) for fetches under way; false if one is
 * still running (then its thread may still write to d->wake_fd). */
bool keyfetch_stop(struct deputyd *d);

#endif
