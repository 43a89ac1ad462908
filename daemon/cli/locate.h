/* SPDX-License-Identifier: MIT */
/*
 * locate: what the CLI's commands take from the command line to find things: deputyd's
 * socket, a session by its id or a unique prefix of it, a point in time (locate.c).
 */
#ifndef DEPUTY_CLI_LOCATE_H
#define DEPUTY_CLI_LOCATE_H

#include <stdbool.h>
#include <stddef.h>

#include "client.h"
#include "util.h"

/* The shortest session id prefix taken: shorter ones match too much to be meant. */
#define LOCATE_MIN_PREFIX 4

/* deputyd's socket: --socket, else $DEPUTY_SOCKET, else the `socket` of deputyd's config
 * (--config, else $DEPUTY_CONFIG, else /etc/deputy/deputy.json when it exists), else the
 * default. NULL, and err, only when a config named by --config or $DEPUTY_CONFIG cannot be
 * read: a wrong file must not silently mean the default socket. */
const char *cli_socket(const char *sock_opt, const char *config_opt, struct dp_err *err);
/* The full id of the one session (visible to this user) whose id starts with arg, asked
 * from deputyd on c; -ENOENT, -EINVAL (too short, not an id) or -EEXIST (ambiguous: err
 * names the candidates). */
int cli_session_id(struct dcli *c, const char *arg, char out[DP_ID_LEN], struct dp_err *err);
/* T as RFC 3339 ("2026-11-28T15:18:11Z", fractions and offsets allowed) or relative to now
 * ("90s", "10m", "2h", "1d"), as the records' own form "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC),
 * which compares as a string. */
int cli_time_arg(const char *arg, char out[DP_TS_LEN], struct dp_err *err);

#define CLI_TIME_HELP "T is RFC 3339 (2026-11-28T15:00:00Z) or a time ago: 90s, 10m, 2h, 1d"

#endif
