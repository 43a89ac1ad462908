/* SPDX-License-Identifier: MIT */
/*
 * hostlog: deputyd's own audit log, <state_dir>/host.jsonl: what happens to the host rather
 * than inside one session (start and stop, refused sessions, kills, revocations, reloads,
 * outages of the kernel layer, records the audit export dropped). The same records and
 * chain as a session log (audit_log.c writes both; "session" is "host"), one file across
 * deputyd's runs: each clean stop seals it with a signed deputyd_stop, and the next start
 * goes on from there. Records go to the file only, not to audit_export.
 */
#ifndef DEPUTY_HOSTLOG_H
#define DEPUTY_HOSTLOG_H

#include <jansson.h>
#include <stdbool.h>

#include "jws.h"
#include "util.h"

#define HOSTLOG_NAME "host"

/* Open (or create) the log in state_dir. *was_sealed: the previous run stopped cleanly (or
 * there was none). 0 or -errno with err saying why. */
int hostlog_open(const char *state_dir, bool *was_sealed, struct dp_err *err) DP_WUR;
/* Append one record; steals fields. A record that cannot be written is said on stderr (or
 * syslog): the host log never stops deputyd. Nothing happens before hostlog_open. */
void hostlog_write(const char *type, json_t *fields);
/* deputyd_stop: counts (borrowed) signed with key, then the log is closed. */
void hostlog_seal(const struct dp_key *key, const char *issuer, const json_t *counts);
void hostlog_close(void);
/* The ts of the last record read back or written ("" if none). */
const char *hostlog_last_ts(void);
/* The file, for readers ("" before hostlog_open). */
const char *hostlog_path(void);

#endif
