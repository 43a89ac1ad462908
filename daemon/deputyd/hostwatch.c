// SPDX-License-Identifier: MIT
/*
 * hostwatch: what deputyd notices about its own health, put in the host log: events the
 * kernel's ring buffer could not hold, and audit records the export could not send. Both
 * are counters that may grow every tick under load, so a record says how many since the
 * last one, at most every HOSTWATCH_INTERVAL seconds: a flood of losses is a few records,
 * not a flood of its own.
 */
#include "hostwatch.h"

#include "audit_export.h"
#include "hostlog.h"
#include "kernel.h"

#define HOSTWATCH_INTERVAL 10

static struct {
	uint64_t lost, dropped; /* reported so far */
	int64_t lost_at, dropped_at;
} hw;

void hostwatch_start(struct deputyd *d)
{
	uint64_t sent;

	/* Adopted maps count from before this deputyd: those losses are the outage's. */
	hw.lost = d->kernel ? kernel_lost_events(d->kernel) : 0;
	audit_export_counts(&sent, &hw.dropped);
	if (hw.lost)
		hostlog_write("kernel_lost",
			      json_pack("{s:I, s:I, s:b}", "lost", (json_int_t)hw.lost, "total",
					(json_int_t)hw.lost, "before_start", 1));
}

void hostwatch_tick(struct deputyd *d)
{
	int64_t now = dp_now();
	uint64_t sent, dropped, lost = d->kernel ? kernel_lost_events(d->kernel) : 0;

	if (lost > hw.lost && now - hw.lost_at >= HOSTWATCH_INTERVAL) {
		hostlog_write("kernel_lost",
			      json_pack("{s:I, s:I}", "lost", (json_int_t)(lost - hw.lost), "total",
					(json_int_t)lost));
		pr_warn("kernel: %llu events lost (ring buffer full)",
			(unsigned long long)(lost - hw.lost));
		hw.lost = lost;
		hw.lost_at = now;
	}
	audit_export_counts(&sent, &dropped);
	if (dropped > hw.dropped && now - hw.dropped_at >= HOSTWATCH_INTERVAL) {
		hostlog_write("export_dropped",
			      json_pack("{s:I, s:I, s:I}", "dropped",
					(json_int_t)(dropped - hw.dropped), "total",
					(json_int_t)dropped, "sent", (json_int_t)sent));
		hw.dropped = dropped;
		hw.dropped_at = now;
	}
}

json_t *hostwatch_counts(struct deputyd *d)
{
	uint64_t sent, dropped;

	audit_export_counts(&sent, &dropped);
	return json_pack("{s:I, s:I, s:I}", "export_sent", (json_int_t)sent, "export_dropped",
			 (json_int_t)dropped, "lost_events",
			 (json_int_t)(d->kernel ? kernel_lost_events(d->kernel) : 0));
}
