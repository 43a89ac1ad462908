/* SPDX-License-Identifier: MIT */
/*
 * presign: deputyd's pool of precomputed ECDSA nonces for its ES256 signing key, so a
 * signature on the request path costs a few microseconds instead of a full ECDSA sign.
 * Each pair signs exactly once and is wiped; an empty pool means a normal signature, never
 * a wait.
 */
#ifndef DEPUTY_PRESIGN_H
#define DEPUTY_PRESIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "key.h"

/* Keep up to cap nonce pairs (k⁻¹, r) for key; from then on dp_key_sign draws on them.
 * -EINVAL for keys that are not private ES256. Call before the key is shared. */
int dp_key_presign_enable(struct dp_key *key, size_t cap);
bool dp_key_presign_wanted(const struct dp_key *key);
/* Computes up to max pairs (each ~ one signature's work) on the calling thread and returns
 * how many it added. */
size_t dp_key_presign_fill(const struct dp_key *key, size_t max);
/* A worker thread keeps the pool filled: it wakes when a signature takes the pool below
 * low_water pairs and fills it to its cap. Fork-safe (a child has no worker and drops the
 * pairs). 0, -EINVAL without a pool, or -errno. */
int dp_key_presign_start(const struct dp_key *key, size_t low_water);
/* Stops and joins the worker (also done when the key is freed). */
void dp_key_presign_stop(const struct dp_key *key);
void dp_key_presign_stats(const struct dp_key *key, size_t *available, uint64_t *hits,
			  uint64_t *misses);

#endif
