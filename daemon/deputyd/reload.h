/* SPDX-License-Identifier: MIT */
/* reload: take a changed config without a restart (SIGHUP). */
#ifndef DEPUTY_RELOAD_H
#define DEPUTY_RELOAD_H

#include "deputyd.h"

/* Keeps the running config, with a logged reason, when the new one does not load. */
void reload_config(struct deputyd *d);

#endif
