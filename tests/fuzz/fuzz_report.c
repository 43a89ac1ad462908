// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for `deputy report --html`: a session log (any bytes: a file anyone may
 * hand it, with strings the agent chose) made into a page. The page must always be whole,
 * and no input may add markup: every '<' in the output opens or closes one of the page's
 * own elements, and every '&' starts an entity. The first byte picks the verdict shown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.c"
#include "report.c"

static const char *const fz_tags[] = {
    "!DOCTYPE html>", "html", "head", "meta", "title", "style", "body", "header", "h1", "h2",
    "code",	      "p",    "section", "table", "thead", "tbody", "tr", "th", "td", "div", "b",
    "span",	      "footer",
};

static int fz_known_tag(const char *p, size_t left)
{
	p++, left--;
	if (left && *p == '/')
		p++, left--;
	for (size_t i = 0; i < sizeof(fz_tags) / sizeof(fz_tags[0]); i++) {
		size_t n = strlen(fz_tags[i]);

		if (left > n && memcmp(p, fz_tags[i], n) == 0 &&
		    (p[n] == '>' || p[n] == ' ' || fz_tags[i][n - 1] == '>'))
			return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct logsrc_verdict v = {0};
	struct report_source src;
	char *page = NULL;
	size_t len = 0;
	FILE *out;

	if (size < 1)
		return 0;
	v.records = size;
	v.sealed = data[0] & 1;
	v.broken = (data[0] >> 1) & 1;
	src = (struct report_source){.target = "fuzz", .text = (const char *)data + 1,
				     .len = size - 1, .verdict = &v, .why = "line 1: <bad> & \"x\""};
	out = open_memstream(&page, &len);
	if (!out)
		abort();
	if (report_html(out, &src) != 0)
		abort();
	fclose(out);
	if (len < 20 || strcmp(page + len - 15, "</body></html>\n") != 0)
		abort(); /* the page always ends */
	for (size_t i = 0; i < len; i++) {
		if (page[i] == '<' && !fz_known_tag(page + i, len - i))
			abort(); /* markup the input added */
		if (page[i] == '&' && !(strncmp(page + i, "&amp;", 5) == 0 ||
					strncmp(page + i, "&lt;", 4) == 0 ||
					strncmp(page + i, "&gt;", 4) == 0 ||
					strncmp(page + i, "&quot;", 6) == 0 ||
					strncmp(page + i, "&#39;", 5) == 0 ||
					strncmp(page + i, "&times;", 7) == 0))
			abort();
	}
	free(page);
	return 0;
}
