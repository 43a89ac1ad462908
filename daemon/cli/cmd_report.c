// SPDX-License-Identifier: MIT
/*
 * cmd_report: `deputy report SESSION|FILE --html`, a session log as one page for an auditor.
 * The page is written even for a log that fails verification (the auditor must see what is
 * there, under a red verdict), but the command then exits 1 like `deputy audit verify`, so a
 * script that files reports notices.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "logsrc.h"
#include "report.h"

static const char report_help[] =
    "usage: deputy report SESSION|FILE --html [--output FILE] [--jwks FILE] [--socket PATH]\n"
    "Writes one self-contained HTML page about a session for an auditor: user, agent and\n"
    "grant; a timeline of requests (method, URL, scope, decision, API status) and\n"
    "connections (allowed, blocked, unmediated); totals; and the verdict of\n"
    "'deputy audit verify'. The page fetches nothing and runs no script.\n"
    "  --html         the format (the only one so far)\n"
    "  --output FILE  write the page to FILE instead of standard output\n"
    "  --jwks FILE    deputyd's JWKS, for a FILE (default: jwks.json of its state directory)\n"
    "  --socket PATH  deputyd's socket, for a SESSION (default $DEPUTY_SOCKET or " DP_DEFAULT_SOCKET
    ")\n"
    "Exits 1 when the log is not intact (the page is still written and says so).\n";

int cmd_report(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"html", no_argument, NULL, 'H'},	    {"output", required_argument, NULL, 'o'},
	    {"jwks", required_argument, NULL, 'k'}, {"socket", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},	    {NULL, 0, NULL, 0}};
	const char *jwks_path = NULL, *sock_opt = NULL, *output = NULL;
	struct logsrc_verdict v;
	struct report_source src;
	struct logsrc ls;
	struct dp_err err, why;
	bool html = false;
	FILE *out = stdout;
	int opt, rc;

	optind = 1;
	/* The getopt loop every command has: alike in shape, each with its own options. */
	while ((opt = getopt_long(argc, argv, "Ho:k:s:h", opts, NULL)) != -1) {
		if (opt == 'H')
			html = true;
		else if (opt == 'o')
			output = optarg;
		else if (opt == 'k')
			jwks_path = optarg;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'h')
			return fputs(report_help, stdout), 0;
		else
			return fputs(report_help, stderr), 2;
	}
	if (optind != argc - 1) {
		fputs(report_help, stderr);
		return 2;
	}
	if (!html) {
		cli_fail("report", "say the format: --html (see --help)");
		return 2;
	}
	if (logsrc_load(&ls, argv[optind], jwks_path, sock_opt, &err) != 0) {
		logsrc_free(&ls);
		return cli_fail("report", "%s", err.msg);
	}
	rc = logsrc_verify(&ls, &v, &why);
	if (rc && !v.broken) {
		/* no verdict at all (no usable JWKS): a page without one would mislead */
		logsrc_free(&ls);
		return cli_fail("report", "%s", why.msg);
	}
	src = (struct report_source){
	    .target = ls.target, .text = ls.text, .len = ls.len, .verdict = &v, .why = why.msg};
	if (output && !(out = fopen(output, "w"))) {
		logsrc_free(&ls);
		return cli_fail("report", "%s: %s", output, strerror(errno));
	}
	rc = report_html(out, &src);
	if ((out != stdout ? fclose(out) : fflush(out)) != 0 && !rc)
		rc = -EIO;
	logsrc_free(&ls);
	if (rc)
		return cli_fail("report", "%s: %s", output ? output : "standard output",
				strerror(-rc));
	if (v.broken)
		return cli_fail("report", "%s (the page says so)", why.msg);
	return 0;
}
