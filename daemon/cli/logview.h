/* SPDX-License-Identifier: MIT */
/*
 * logview: one session's records as `deputy logs` shows them: the filters (--type,
 * --verdict, --since, --until), the text table and the folding of Unix-socket lookups
 * (logview.c). --json prints the matching records' lines exactly as logged.
 */
#ifndef DEPUTY_CLI_LOGVIEW_H
#define DEPUTY_CLI_LOGVIEW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct logview_filter {
	const char *types;    /* comma-separated record types; NULL: all */
	const char *verdicts; /* comma-separated verdicts (logview_verdict); NULL: all */
	char since[DP_TS_LEN], until[DP_TS_LEN]; /* "" : unbounded */
	bool json, all_records, with_session;
};

struct logview {
	const struct logview_filter *f;
	json_t *status_by_jti; /* jti -> response status, for the chain column */
	char *user, *agent;
	/* a run of one process's Unix-socket connects, shown as one line when it ends */
	json_t *fold;
	long long fold_more;
};

void logview_init(struct logview *lv, const struct logview_filter *f);
void logview_free(struct logview *lv);
void logview_header(const struct logview_filter *f);
/* Print the complete lines of text[*done, len), advancing *done past them. */
void logview_lines(struct logview *lv, char *text, size_t len, size_t *done);
/* Print a pending fold now (end of the log, or the follower is idle). */
void logview_flush(struct logview *lv);
/* A record's verdict for --verdict: delegate, passthrough, deny, allow, block; "" if none. */
const char *logview_verdict(json_t *rec);

#endif
