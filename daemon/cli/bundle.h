/* SPDX-License-Identifier: MIT */
/*
 * bundle: the trust bundle `deputy run` gives a session (design: layer 4): the system roots,
 * the session's proxy CA, and every CA file the user's environment already named, in one
 * PEM file readable by the session's user only, named by every variable that runtimes read
 * (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, GIT_SSL_CAINFO,
 * DENO_CERT, PIP_CERT, npm_config_cafile). Removed when the session ends.
 */
#ifndef DEPUTY_BUNDLE_H
#define DEPUTY_BUNDLE_H

#include "util.h"

/* Writes the bundle into a new private directory; *path is malloc'd. 0 or -errno. */
int bundle_write(const char *ca_pem, char **path, struct dp_err *err) DP_WUR;
/* Points every variable at the bundle (in the calling process's environment). */
void bundle_setenv(const char *path);
/* Removes the bundle and its directory. */
void bundle_remove(const char *path);

#endif
