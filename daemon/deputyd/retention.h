/* SPDX-License-Identifier: MIT */
/* retention: closed session logs past `retention_days` removed, and recorded (retention.c). */
#ifndef DEPUTY_RETENTION_H
#define DEPUTY_RETENTION_H

struct deputyd;

/* <state_dir>/RETENTION_FILE: one JSON line per removed log {ts, session, seal, closed,
 * retention_days}; `seal` is the hex SHA-256 of its session_close line. */
#define RETENTION_FILE "retention.jsonl"

/* Called every tick; looks at the logs at the first call and then once a day. */
void retention_tick(struct deputyd *d);

#endif
