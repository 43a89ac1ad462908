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
#include <sys/types.h>

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
/* One record's line (no newline) built two ways that must give the same bytes: as a
 * jansson tree dumped compact and ASCII-only (the reference: malloc'd, NULL when out of memory
 * or a string is not UTF-8), and as text straight into buf (the hot path; its length, or -1
 * when it needs the tree or the line would not fit in cap). audit_append uses the second
 * and falls back to the first; both are here for the unit test that keeps them equal. */
char *audit_record_tree(uint64_t seq, const char *ts, const char *session, const char *type,
			const char *prev, const json_t *fields, size_t *len);
ssize_t audit_record_text(uint64_t seq, const char *ts, const char *session, const char *type,
			  const char *prev, const json_t *fields, char *buf, size_t cap);
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
