/* SPDX-License-Identifier: MIT */
/*
 * sessca: a session's certificate authority for the proxy (design: layer 4). Made at session
 * open (P-256), kept in deputyd's memory only: the agent gets its certificate in the trust
 * bundle, never its key, and the proxy gets leaves, never the CA key. Leaves are minted on
 * demand for a route host and cached per session.
 */
#ifndef DEPUTY_SESSCA_H
#define DEPUTY_SESSCA_H

#include <stdint.h>

#include "util.h"

struct sessca;

/* A new CA named after the session. NULL with err set. */
struct sessca *sessca_new(const char *session_id, struct dp_err *err);
void sessca_free(struct sessca *ca);
/* The CA certificate, PEM (owned by ca). */
const char *sessca_cert_pem(const struct sessca *ca);
/* A leaf for host (a DNS name or an address literal): certificate, key and the CA
 * certificate, PEM, owned by ca; *id names it for the proxy's cache (unique in this
 * deputyd). 0 or -errno with err set. */
int sessca_leaf(struct sessca *ca, const char *host, const char **pem, uint64_t *id,
		struct dp_err *err);

#endif
