// SPDX-License-Identifier: MIT
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_fail(const char *what, const char *fmt, ...)
{
	char raw[sizeof(((struct dp_err *)0)->msg)];
	struct dp_err why;
	va_list ap;

	/* through dp_err_set: a reason that quotes input stays one line */
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	dp_err_set(&why, "%s", raw);
	fprintf(stderr, "deputy: %s: %s\n", what, why.msg);
	return 1;
}

int cli_is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}
