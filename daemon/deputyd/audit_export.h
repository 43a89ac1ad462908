/* SPDX-License-Identifier: MIT */
/* audit_export: every audit record to the host's syslog pipeline (audit_export.c). */
#ifndef DEPUTY_AUDIT_EXPORT_H
#define DEPUTY_AUDIT_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Send records to the Unix datagram socket at path from now on; NULL stops exporting.
 * 0, or -EINVAL / -errno with err saying why (the socket need not exist yet). */
int audit_export_open(const char *path, struct dp_err *err) DP_WUR;
/* One record, as written to its session log: its type, ts and line (no newline). Never
 * blocks; a record the receiver has no room for now waits in a bounded queue, one that
 * cannot be sent or queued is counted as dropped. */
void audit_export_record(const char *type, const char *ts, const char *line, size_t len);
/* Sends what waits in the queue, until the receiver has no room (each loop turn). */
void audit_export_drain(void);
/* Records sent and dropped since deputyd started (for the host log and the exit line). */
void audit_export_counts(uint64_t *sent, uint64_t *dropped);
void audit_export_close(void);

#endif
