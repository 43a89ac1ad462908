/* SPDX-License-Identifier: MIT */
/* keyset: a set of public keys parsed from JWKS JSON (RFC 7517 §5), looked up by kid. */
#ifndef DEPUTY_KEYSET_H
#define DEPUTY_KEYSET_H

#include <stddef.h>

#include "key.h"
#include "util.h"

/* Keys without a usable kty/alg are skipped (logged at debug level), as are a second key
 * under a kid already seen and keys beyond the 64th. */
struct dp_keyset;
struct dp_keyset *dp_keyset_parse(const char *json, size_t len, struct dp_err *err);
const struct dp_key *dp_keyset_find(const struct dp_keyset *ks, const char *kid);
size_t dp_keyset_count(const struct dp_keyset *ks);
void dp_keyset_free(struct dp_keyset *ks);

#endif
