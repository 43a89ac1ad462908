/* SPDX-License-Identifier: MIT */
/*
 * audit: the per-session JSON-lines audit log's format, and reading one back to verify it
 * (design: Audit log). deputyd writes logs (daemon/deputyd/audit_log.h); the deputy CLI and
 * deputyd both verify them.
 *
 * Each record is one line: {"seq","ts","session","type","prev", …fields}. `prev` is the hex
 * SHA-256 of the previous line's bytes (without its newline); the first record's prev is 64
 * zeros. `session_close` also carries `sig`: a compact JWS by deputyd's key (typ
 * "deputy-audit+jwt") whose claims bind session, seq, prev and counts, so the whole chain is
 * sealed.
 */
#ifndef DEPUTY_AUDIT_H
#define DEPUTY_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "jws.h"
#include "util.h"

#define AUDIT_HASH_HEX 65
#define AUDIT_MAX_LINE 65536
#define AUDIT_SEAL_TYP "deputy-audit+jwt"
/* The records that carry a seal: a session log ends with session_close; deputyd's host log
 * (one file across deputyd's runs, whose records say "session": "host") has a deputyd_stop
 * wherever deputyd stopped cleanly, and goes on after it. */
#define AUDIT_SEAL_SESSION "session_close"
#define AUDIT_SEAL_HOST "deputyd_stop"

/* The chain hash of one line (its bytes without the newline), as hex. */
void audit_hash_line(const char *line, size_t len, char out[AUDIT_HASH_HEX]);

/* Check a log's text: chain, seq order, one session id, and (if keys is not NULL) the
 * signature of every seal. 0 when intact; -EBADMSG with err naming the first bad line
 * ("line 7: prev does not match line 6"). *sealed tells whether it ends in a valid seal. */
int audit_verify(const char *text, size_t len, const struct dp_keyset *keys, bool *sealed,
		 struct dp_err *err) DP_WUR;

#endif
