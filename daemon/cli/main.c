// SPDX-License-Identifier: MIT
/* deputy: the command line. Dispatches to the subcommands in cli_*.c. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "version.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
} commands[] = {
    {"run", cmd_run, "run a command as a session of an agent for a user"},
    {"sessions", cmd_sessions, "list sessions, open and closed"},
    {"logs", cmd_logs, "show a session's connections and actions"},
    {"audit", cmd_audit, "verify a session log's hash chain and signature"},
    {"grant", cmd_grant, "issue a grant JWT from an issuer key (no IdP)"},
    {"verify", cmd_verify, "verify a delegation token as a backend does, or a grant"},
    {"report", cmd_report, "write a session's log as one HTML page for an auditor"},
    {"login", cmd_login, "get a grant from an OpenID Provider (device flow)"},
    {"kill", cmd_kill, "end a live session now"},
    {"revoke", cmd_revoke, "refuse a grant or a user from now on, ending their sessions"},
    {"route", cmd_route, "show the route and decision for a request, nothing sent"},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: deputy COMMAND [ARG…]\n\ncommands:\n");
	for (size_t i = 0; i < DP_ARRAY_SIZE(commands); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "  %-10s %s\n", "--version", "print deputy's version");
	fprintf(out, "\n'deputy help COMMAND' or 'deputy COMMAND --help' tells more. deputyd is\n"
		     "found at --socket PATH, $DEPUTY_SOCKET, the `socket` of deputyd's config\n"
		     "(--config FILE, $DEPUTY_CONFIG, /etc/deputy/deputy.json), or\n"
		     "/run/deputy/deputy.sock.\n");
}

int main(int argc, char **argv)
{
	dp_log_init("deputy", DP_LOG_WARN);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	/* `deputy help CMD` is `deputy CMD --help`, as git and systemctl take it */
	if (strcmp(argv[1], "help") == 0 && argc >= 3) {
		char *help_argv[] = {argv[2], "--help", NULL};

		for (size_t i = 0; i < DP_ARRAY_SIZE(commands); i++)
			if (strcmp(argv[2], commands[i].name) == 0)
				return commands[i].fn(2, help_argv);
		cli_fail(argv[2], "unknown command (see 'deputy --help')");
		return 2;
	}
	if (cli_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("deputy %s\n", DEPUTY_VERSION);
		return 0;
	}
	for (size_t i = 0; i < DP_ARRAY_SIZE(commands); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	cli_fail(argv[1], "unknown command (see 'deputy --help')");
	return 2;
}
