/* SPDX-License-Identifier: MIT */
/*
 * audit: the per-session JSON-lines audit log (design: Audit log).
 *
 * Each record is one line: {"seq","ts","session","type","prev", …fields}. `prev` is the hex
 * SHA-256 of the previous line's bytes (without its newline); the first record's prev is 64
 * zeros. `session_close` also carries `sig`: a compact JWS by deputyd's key (typ
 * "deputy-audit+jwt") whose claims bind session, seq, prev and counts, so the whole chain is
 * sealed. Records are written with one write() on an O_APPEND descriptor before deputyd
 * acknowledges anything that depends on them: a crash of deputyd loses no acknowledged
 * record (the page cache outlives the process; fdatasync at session close covers power loss
 * of closed sessions).
 */
#ifndef DEPUTY_AUDIT_H
#define DEPUTY_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "jws.h"
#include "util.h"

#define AUDIT_HASH_HEX 65
#define AUDIT_MAX_LINE 65536

struct audit_log;

/* Create <dir>/<session>.jsonl (must not exist). */
int audit_create(const char *dir, const char *session, struct audit_log **out,
		 struct dp_err *err) DP_WUR;
/* Reopen an existing log to continue it (after a deputyd restart): recovers seq and prev. */
int audit_reopen(const char *dir, const char *session, struct audit_log **out,
		 struct dp_err *err) DP_WUR;
/* Append one record of type with the members of fields (borrowed; may be NULL). */
int audit_append(struct audit_log *log, const char *type, const json_t *fields) DP_WUR;
/* Append session_close with counts (borrowed) and the signature, then fdatasync. */
int audit_seal(struct audit_log *log, const struct dp_key *key, const char *issuer,
	       const json_t *counts) DP_WUR;
void audit_free(struct audit_log *log);
const char *audit_path(const struct audit_log *log);
uint64_t audit_next_seq(const struct audit_log *log);

/* Check a log's text: chain, seq order, one session id, and (if keys is not NULL) the
 * session_close signature. 0 when intact; -EBADMSG with err naming the first bad line
 * ("line 7: prev does not match line 6"). *sealed tells whether it ends in a valid
 * session_close. */
int audit_verify(const char *text, size_t len, const struct dp_keyset *keys, bool *sealed,
		 struct dp_err *err) DP_WUR;

#endif
