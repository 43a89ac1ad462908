/* SPDX-License-Identifier: MIT */
/* report: a session log as one self-contained HTML page for an auditor (report.c). */
#ifndef DEPUTY_REPORT_H
#define DEPUTY_REPORT_H

#include <stddef.h>
#include <stdio.h>

#include "logsrc.h"

struct report_source {
	const char *target; /* the SESSION|FILE it was read from */
	const char *text;   /* the log's lines */
	size_t len;
	const struct logsrc_verdict *verdict;
	const char *why; /* when verdict->broken: what is wrong, as audit verify says it */
};

/* Writes the page to out; 0, or a negative errno when out of memory or out failed. */
int report_html(FILE *out, const struct report_source *src);

#endif
