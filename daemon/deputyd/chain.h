/* SPDX-License-Identifier: MIT */
/*
 * chain: the host's chain across sessions (chain.c). Every session_close carries
 * `prev_seal` (hex SHA-256 of the session_close line sealed before it on this host) and
 * `prev_seal_session` (that session's id); every session_open carries the same pair as it
 * stood when the session opened. `<state_dir>/seal-chain` holds the newest seal, so
 * `deputy audit verify --all` can tell a missing or cut session log from a complete set.
 */
#ifndef DEPUTY_CHAIN_H
#define DEPUTY_CHAIN_H

#include <jansson.h>

struct deputyd;
struct audit_log;

#define CHAIN_HEAD_FILE "seal-chain"

/* Read the newest seal back from the state directory (none yet: the chain starts). */
void chain_load(struct deputyd *d);
/* Adds prev_seal/prev_seal_session to a session_open record's fields (which may be NULL);
 * returns fields. */
json_t *chain_put_prev(struct deputyd *d, json_t *fields);
/* Around sealing a session's log: before, its seal is told the previous seal; after a
 * successful seal, that seal becomes the newest. */
void chain_before_seal(struct deputyd *d, struct audit_log *log);
void chain_after_seal(struct deputyd *d, const char *session, const struct audit_log *log);

#endif
