/* SPDX-License-Identifier: MIT */
/* reload: take a changed config without a restart (SIGHUP). */
#ifndef DEPUTY_RELOAD_H
#define DEPUTY_RELOAD_H

#include "deputyd.h"

/* Keeps the running config, with a logged reason, when the new one does not load. */
void reload_config(struct deputyd *d);
/* Keep the config file's JSON as it is at start, to say later which keys a reload changed. */
void reload_remember(const char *path);

#endif
