// SPDX-License-Identifier: MIT
/*
 * cmd_sessions: `deputy sessions`, with filters deputyd applies (so that they see every
 * session, not only those that fit in one reply).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "locate.h"

static const char sessions_help[] =
    "usage: deputy sessions [--json] [--user U] [--agent A] [--since T] [--until T] [--open]\n"
    "                       [--socket PATH] [--config FILE]\n"
    "Lists sessions, open and closed, with their counts (yours; root sees all).\n"
    "  --user U       only sessions of that user (the grant's sub)\n"
    "  --agent A      only sessions of that agent (NAME or agent:NAME)\n"
    "  --since T, --until T   only sessions that ran at some time in that window;\n"
    "                 " CLI_TIME_HELP "\n"
    "  --open         only sessions still open\n"
    "deputyd is found at --socket, $DEPUTY_SOCKET, or the `socket` of deputyd's config\n"
    "(--config, $DEPUTY_CONFIG, /etc/deputy/deputy.json).\n";

static long long count_of(json_t *e, const char *k)
{
	return json_integer_value(json_object_get(json_object_get(e, "counts"), k));
}

static const char *str_of(json_t *e, const char *k)
{
	return json_string_value(json_object_get(e, k)) ?: "?";
}

static int by_opened(const void *a, const void *b)
{
	return strcmp(str_of(*(json_t *const *)a, "opened"), str_of(*(json_t *const *)b, "opened"));
}

static void sessions_print(json_t *list, bool as_json)
{
	size_t i, n = json_array_size(list);
	json_t *e, **sorted = calloc(n + 1, sizeof(*sorted));

	if (!sorted)
		return;
	json_array_foreach(list, i, e) sorted[i] = e;
	qsort(sorted, n, sizeof(*sorted), by_opened);
	if (!as_json)
		printf("%-22s  %-6s  %-27s  %-16s  %-20s  %6s %6s %8s %7s %10s\n", "SESSION",
		       "STATE", "OPENED", "USER", "AGENT", "TOKENS", "DENIES", "CONNECTS",
		       "BLOCKED", "UNMEDIATED");
	for (i = 0; i < n; i++) {
		e = sorted[i];
		if (as_json) {
			char *line = json_dumps(e, JSON_COMPACT);

			if (line)
				puts(line);
			free(line);
			continue;
		}
		printf("%-22s  %-6s  %-27s  %-16s  %-20s  %6lld %6lld %8lld %7lld %10lld\n",
		       str_of(e, "session"), str_of(e, "state"), str_of(e, "opened"),
		       str_of(e, "user"), str_of(e, "agent"), count_of(e, "tokens"),
		       count_of(e, "denies"), count_of(e, "connects"), count_of(e, "blocked"),
		       count_of(e, "unmediated"));
	}
	free(sorted);
}

int cmd_sessions(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},	      {"user", required_argument, NULL, 'u'},
	    {"agent", required_argument, NULL, 'a'},  {"since", required_argument, NULL, 'S'},
	    {"until", required_argument, NULL, 'U'},  {"open", no_argument, NULL, 'o'},
	    {"socket", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0}};
	static uint8_t buf[4096];
	static struct dcli c;
	const char *sock_opt = NULL, *config = NULL, *user = NULL, *agent = NULL, *sock;
	char since[DP_TS_LEN] = "", until[DP_TS_LEN] = "", *data;
	bool as_json = false, open_only = false;
	struct dp_err err;
	struct dp_msg m;
	json_t *list;
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "js:h", opts, NULL)) != -1) {
		if (opt == 'j')
			as_json = true;
		else if (opt == 'u')
			user = optarg;
		else if (opt == 'a')
			agent = optarg;
		else if (opt == 'o')
			open_only = true;
		else if ((opt == 'S' || opt == 'U') &&
			 cli_time_arg(optarg, opt == 'S' ? since : until, &err) != 0)
			return cli_fail("sessions", "%s", err.msg);
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'c')
			config = optarg;
		else if (opt == 'h')
			return fputs(sessions_help, stdout), 0;
		else if (opt != 'S' && opt != 'U')
			return fputs(sessions_help, stderr), 2;
	}
	if (optind != argc)
		return fputs(sessions_help, stderr), 2;
	sock = cli_socket(sock_opt, config, &err);
	if (!sock || dcli_connect(&c, sock, &err) != 0)
		return cli_fail("sessions", "%s", err.msg);
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_SESSIONS, dcli_next_seq(&c), 0);
	if (user)
		dp_msg_put_str(&m, DP_T_USER, user);
	if (agent)
		dp_msg_put_str(&m, DP_T_AGENT, agent);
	if (since[0])
		dp_msg_put_str(&m, DP_T_SINCE, since);
	if (until[0])
		dp_msg_put_str(&m, DP_T_UNTIL, until);
	if (open_only)
		dp_msg_put_u64(&m, DP_T_STATUS, 1);
	if (dcli_call(&c, &m, &err) != 0) {
		dcli_close(&c);
		return cli_fail("sessions", "%s", err.msg);
	}
	data = dcli_field_str(&c, DP_T_DATA);
	dcli_close(&c);
	list = data ? json_loads(data, 0, NULL) : NULL;
	free(data);
	if (!json_is_array(list)) {
		json_decref(list);
		return cli_fail("sessions", "deputyd sent a malformed list");
	}
	sessions_print(list, as_json);
	json_decref(list);
	return 0;
}
