/* SPDX-License-Identifier: MIT */
/* leaf: SSL_CTXs for the leaf certificates deputyd mints, cached by deputyd's leaf id. */
#ifndef DEPUTY_PROXY_LEAF_H
#define DEPUTY_PROXY_LEAF_H

#include <openssl/ssl.h>
#include <stdint.h>

/* A referenced SSL_CTX for leaf id: the cached one, or one made from pem (cert and key)
 * when pem is not NULL. NULL when neither. */
SSL_CTX *leaf_get(uint64_t id, const char *pem);

#endif
