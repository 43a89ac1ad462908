/* SPDX-License-Identifier: MIT */
/* version: what `deputy --version` and `deputyd --version` print. */
#ifndef DEPUTY_VERSION_H
#define DEPUTY_VERSION_H

#define DEPUTY_VERSION "0.1.0"

#endif
