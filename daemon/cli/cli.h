/* SPDX-License-Identifier: MIT */
/*
 * cli: the deputy command's subcommands. Each takes argc/argv starting at its own name,
 * returns the process exit status, prints its errors as "deputy: <what>: <why>".
 */
#ifndef DEPUTY_CLI_H
#define DEPUTY_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "client.h"
#include "util.h"

int cmd_grant(int argc, char **argv);	 /* cli_token.c */
int cmd_verify(int argc, char **argv);	 /* cli_token.c */
int cmd_run(int argc, char **argv);	 /* cli_session.c */
int cmd_sessions(int argc, char **argv); /* cmd_sessions.c */
int cmd_logs(int argc, char **argv);	 /* cmd_logs.c */
int cmd_audit(int argc, char **argv);	 /* cli_session.c */
int cmd_login(int argc, char **argv);	 /* cmd_login.c */

/* `deputy verify --grant` (cmd_grant_check.c); config NULL: $DEPUTY_CONFIG or the default. */
int cli_verify_grant(const char *grant_path, const char *agent, const char *config);

/* grant_store.c: the file `deputy login` keeps an agent's grant in,
 * $XDG_CONFIG_HOME/deputy/grants/NAME.jwt (~/.config/… without it); 0 or -errno. */
int cli_grant_path(const char *agent, char *out, size_t outsz);
/* Stores it whole (atomically), mode 0600, the directories 0700. 0 or -errno. */
int cli_grant_store(const char *path, const char *token);
/* A token or grant from a file or '-' (stdin), trailing blanks dropped; NULL on failure. */
char *cli_read_token(const char *path);

int cmd_report(int argc, char **argv); /* cmd_report.c */
int cmd_kill(int argc, char **argv);   /* cmd_ops.c */
int cmd_revoke(int argc, char **argv); /* cmd_ops.c */
/* `deputy logs --host` (cmd_ops.c): argv as cmd_logs got it. */
int cli_logs_host(int argc, char **argv);
int cmd_route(int argc, char **argv);  /* cmd_route.c */
/* `deputy audit verify --all [DIR]` (audit_all.c): the exit status. */
int cli_audit_all(const char *dir, const char *jwks_path, const char *config);

/* cmd_session.c's requests to deputyd, shared with logsrc.c: a request with at most a
 * session and an offset (its reply in c), and a whole session log from *offset on
 * (session NULL: deputyd's host log). */
int simple_call(struct dcli *c, uint16_t type, const char *session, uint64_t offset,
		struct dp_err *err);
int fetch_log(struct dcli *c, const char *session, char **text, size_t *len, uint64_t *offset,
	      bool *closed, struct dp_err *err);

/* "deputy: <what>: <why>" on stderr; returns 1 (the failure exit status). */
int cli_fail(const char *what, const char *fmt, ...) DP_PRINTF(2, 3);
/* True when argv[i] is -h or --help. */
int cli_is_help(const char *arg);

#endif
