/* SPDX-License-Identifier: MIT */
/*
 * audit_log: deputyd writing a session's audit log (the format is in audit.h).
 *
 * Records are written on an O_APPEND descriptor before deputyd acknowledges anything that
 * depends on them: a crash of deputyd loses no acknowledged record (the page cache outlives
 * the process; fdatasync at session close covers power loss of closed sessions). Appending
 * chains a record and keeps it pending; the event loop writes every log's pending records
 * with one write() per log (audit_log_flush_all) before it sends the turn's replies.
 */
#ifndef DEPUTY_AUDIT_LOG_H
#define DEPUTY_AUDIT_LOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "audit.h"
#include "jws.h"
#include "util.h"

struct audit_log;

/* Create <dir>/<session>.jsonl (must not exist). */
int audit_log_create(const char *dir, const char *session, struct audit_log **out,
		     struct dp_err *err) DP_WUR;
/* Reopen an existing log to continue it (after a deputyd restart): recovers seq and prev. */
int audit_log_reopen(const char *dir, const char *session, struct audit_log **out,
		     struct dp_err *err) DP_WUR;
/* One record's line (no newline) into buf: the five own members, then those of fields
 * (borrowed; may be NULL; its own-named members dropped), compact and ASCII-only: the bytes
 * jansson's json_dumps gave when records were trees. Its length; -E2BIG when it would not
 * fit in cap, -EILSEQ when a string is not UTF-8, -EDOM for a real JSON cannot hold. */
ssize_t audit_log_record(uint64_t seq, const char *ts, const char *session, const char *type,
			 const char *prev, const json_t *fields, char *buf, size_t cap);
/* Append one record of type with the members of fields (borrowed; may be NULL), stamped
 * now, or at `when` (CLOCK_REALTIME) when not NULL. -EFBIG, and nothing written, when the
 * record would take the log past its limit (room for session_close is always kept). */
int audit_log_append(struct audit_log *log, const char *type, const json_t *fields,
		     struct dp_err *err) DP_WUR;
int audit_log_append_at(struct audit_log *log, const char *type, const json_t *fields,
			const struct timespec *when, struct dp_err *err) DP_WUR;
/* Writes this log's pending records now (nothing pending: 0). On failure they are lost and
 * the log continues from its last written record. */
int audit_log_flush(struct audit_log *log, struct dp_err *err) DP_WUR;
/* Writes every log's pending records, one write() per log; how many logs failed (each
 * logged). Call once per event-loop turn, before the turn's replies are sent. */
size_t audit_log_flush_all(void);
/* A new event-loop turn: what audit_log_failed reports starts over. */
void audit_log_turn_begin(void);
/* This log lost records in a flush since the turn began: replies of that turn that depend
 * on them must not be sent. */
bool audit_log_failed(const struct audit_log *log);
/* Bytes the log may hold (0: no limit). */
void audit_log_set_max(struct audit_log *log, uint64_t max);
/* Append the sealing record of type (AUDIT_SEAL_SESSION, or AUDIT_SEAL_HOST for deputyd's host
 * log) with counts (borrowed), the members of extra (borrowed; may be NULL) and the
 * signature, then fdatasync. The log's limit does not apply to it. */
int audit_log_seal(struct audit_log *log, const char *type, const struct dp_key *key,
		   const char *issuer, const json_t *counts, const json_t *extra,
		   struct dp_err *err) DP_WUR;
void audit_log_free(struct audit_log *log);
const char *audit_log_path(const struct audit_log *log);
uint64_t audit_log_next_seq(const struct audit_log *log);
/* The host chain (chain.h): what the seal says was sealed before it (NULL/"": nothing). */
void audit_log_set_prev_seal(struct audit_log *log, const char *session, const char *hash);
/* Hex SHA-256 of the last line written (after audit_log_seal: of the seal). */
const char *audit_log_last_hash(const struct audit_log *log);
/* The ts of the last record written, or read back by audit_log_reopen ("" if none). */
const char *audit_log_last_ts(const struct audit_log *log);
/* The type of that record ("" if none). */
const char *audit_log_last_type(const struct audit_log *log);
/* Its records are not sent to audit_export (deputyd's host log). */
void audit_log_no_export(struct audit_log *log);

#endif
