// SPDX-License-Identifier: MIT
/*
 * cmd_ops: the operator's commands: `deputy kill`, `deputy revoke`, `deputy logs --host`.
 * deputyd decides who may do them (from the caller's kernel credentials); these only ask
 * and print the answer.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* ---- deputy kill ------------------------------------------------------------------------ */

static const char kill_help[] =
    "usage: deputy kill SESSION [--reason TEXT] [--socket PATH]\n"
    "Ends a live session now: deputyd sets its kernel policy to block everything, then\n"
    "kills every process of the session (cgroup.kill). Its log is sealed with reason\n"
    "\"killed\", your uid and TEXT. Root may kill any session, a user their own.\n";

int cmd_kill(int argc, char **argv)
{
	static const struct option opts[] = {{"reason", required_argument, NULL, 'r'},
					     {"socket", required_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static struct dcli c;
	static uint8_t buf[4096];
	const char *sock_opt = NULL, *reason = NULL;
	struct dp_err err;
	struct dp_msg m;
	int opt, rc;

	optind = 1;
	/* The getopt loop every command has: alike in shape, each with its own options. */
	while ((opt = getopt_long(argc, argv, "r:s:h", opts, NULL)) != -1) {
		if (opt == 'r')
			reason = optarg;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'h')
			return fputs(kill_help, stdout), 0;
		else
			return fputs(kill_help, stderr), 2;
	}
	if (optind != argc - 1) {
		fputs(kill_help, stderr);
		return 2;
	}
	if (dcli_connect(&c, dcli_socket_path(sock_opt), &err) != 0)
		return cli_fail("kill", "%s", err.msg);
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_KILL, dcli_next_seq(&c), 0);
	dp_msg_put_str(&m, DP_T_SESSION, argv[optind]);
	if (reason)
		dp_msg_put_str(&m, DP_T_REASON, reason);
	rc = dcli_call(&c, &m, &err);
	dcli_close(&c);
	if (rc)
		return cli_fail("kill", "%s", err.msg);
	printf("session %s: killed\n", argv[optind]);
	return 0;
}

/* ---- deputy revoke ---------------------------------------------------------------------- */

static const char revoke_help[] =
    "usage: deputy revoke --grant JTI | --user SUB [--reason TEXT] [--socket PATH]\n"
    "       deputy revoke --list [--json] [--socket PATH]\n"
    "Refuses a grant (by its jti, as session_open records show it) or every grant of a\n"
    "user (sub) from now on: their live sessions end (reason \"revoked\") and new ones are\n"
    "refused with \"grant revoked\". The list is kept in deputyd's state directory\n"
    "(revoked.json) across restarts. Root only.\n";

static int revoke_print_list(const char *data, bool as_json)
{
	json_t *root = data ? json_loads(data, 0, NULL) : NULL, *e;
	size_t i;

	if (!json_is_array(json_object_get(root, "revoked"))) {
		json_decref(root);
		return cli_fail("revoke", "deputyd sent a malformed list");
	}
	if (!as_json)
		printf("%-5s  %-40s  %-27s  %-5s  %s\n", "WHAT", "GRANT (JTI) OR USER", "SINCE",
		       "BY", "REASON");
	json_array_foreach(json_object_get(root, "revoked"), i, e)
	{
		const char *g = json_string_value(json_object_get(e, "grant"));
		char line[4096], safe[sizeof(line) * 4];
		char *one;

		if (as_json) {
			one = json_dumps(e, JSON_COMPACT);
			if (one)
				puts(one);
			free(one);
			continue;
		}
		snprintf(line, sizeof(line), "%-5s  %-40s  %-27s  %-5lld  %s", g ? "grant" : "user",
			 g ? g : json_string_value(json_object_get(e, "user")) ?: "?",
			 json_string_value(json_object_get(e, "ts")) ?: "",
			 (long long)json_integer_value(json_object_get(e, "by")),
			 json_string_value(json_object_get(e, "reason")) ?: "");
		puts(dp_escape(line, strlen(line), safe, sizeof(safe)));
	}
	json_decref(root);
	return 0;
}

static int revoke_print_result(const char *what, const char *data)
{
	json_t *root = data ? json_loads(data, 0, NULL) : NULL, *ids, *e;
	const char *error;
	size_t i;
	int rc = 0;

	ids = json_object_get(root, "sessions");
	error = json_string_value(json_object_get(root, "error"));
	printf("revoked %s; %zu live session(s) ended", what, json_array_size(ids));
	json_array_foreach(ids, i, e) printf("%s%s", i ? ", " : ": ", json_string_value(e));
	putchar('\n');
	if (!json_is_true(json_object_get(root, "saved")))
		rc = cli_fail("revoke", "%s", error && *error ? error : "not saved");
	json_decref(root);
	return rc;
}

int cmd_revoke(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"grant", required_argument, NULL, 'g'},  {"user", required_argument, NULL, 'u'},
	    {"reason", required_argument, NULL, 'r'}, {"list", no_argument, NULL, 'l'},
	    {"json", no_argument, NULL, 'j'},	      {"socket", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0}};
	static struct dcli c;
	static uint8_t buf[8192];
	const char *sock_opt = NULL, *reason = NULL, *grant = NULL, *user = NULL;
	bool list = false, as_json = false;
	char what[2100], *data;
	struct dp_err err;
	struct dp_msg m;
	int opt, rc;

	optind = 1;
	/* The getopt loop every command has: alike in shape, each with its own options. */
	while ((opt = getopt_long(argc, argv, "g:u:r:ljs:h", opts, NULL)) != -1) {
		if (opt == 'g')
			grant = optarg;
		else if (opt == 'u')
			user = optarg;
		else if (opt == 'r')
			reason = optarg;
		else if (opt == 'l')
			list = true;
		else if (opt == 'j')
			as_json = true;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'h')
			return fputs(revoke_help, stdout), 0;
		else
			return fputs(revoke_help, stderr), 2;
	}
	if (optind != argc || list + !!grant + !!user != 1 || (list && reason)) {
		fputs(revoke_help, stderr);
		return 2;
	}
	if (dcli_connect(&c, dcli_socket_path(sock_opt), &err) != 0)
		return cli_fail("revoke", "%s", err.msg);
	dp_msg_init(&m, buf, sizeof(buf), list ? DP_MSG_REVOKE_LIST : DP_MSG_REVOKE,
		    dcli_next_seq(&c), 0);
	if (grant)
		dp_msg_put_str(&m, DP_T_JTI, grant);
	if (user)
		dp_msg_put_str(&m, DP_T_USER, user);
	if (reason)
		dp_msg_put_str(&m, DP_T_REASON, reason);
	rc = dcli_call(&c, &m, &err);
	data = rc ? NULL : dcli_field_str(&c, DP_T_DATA);
	dcli_close(&c);
	if (rc)
		return cli_fail("revoke", "%s", err.msg);
	snprintf(what, sizeof(what), "%s %s", grant ? "grant" : "user", grant ? grant : user);
	rc = list ? revoke_print_list(data, as_json) : revoke_print_result(what, data);
	free(data);
	return rc;
}

/* ---- deputy logs --host ----------------------------------------------------------------- */

static const char logs_host_help[] =
    "usage: deputy logs --host [--json] [--follow] [--socket PATH]\n"
    "Shows deputyd's host log: starts and stops, refused sessions, kills, revocations,\n"
    "reloads, lost kernel events and dropped exports. Root only. --follow keeps printing,\n"
    "also across a restart of deputyd.\n";

/* One host record as a line: time, type, then its own members as key=value. */
static void host_print_record(const char *line, size_t n)
{
	static const char *const own[] = {"seq", "ts", "session", "type", "prev", "sig"};
	json_t *rec = json_loadb(line, n, 0, NULL), *v;
	char out[8192], safe[sizeof(out) * 4];
	const char *k, *ts = json_string_value(json_object_get(rec, "ts")) ?: "";
	size_t o;

	if (!rec)
		return;
	o = (size_t)snprintf(out, sizeof(out), "%-27s  %-18s ", ts,
			     json_string_value(json_object_get(rec, "type")) ?: "?");
	json_object_foreach(rec, k, v)
	{
		bool skip = false;
		char *val;

		for (size_t i = 0; i < DP_ARRAY_SIZE(own); i++)
			skip |= strcmp(k, own[i]) == 0;
		if (skip || o >= sizeof(out))
			continue;
		val = json_is_string(v) ? strdup(json_string_value(v))
					: json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		o += (size_t)snprintf(out + o, sizeof(out) - o, " %s=%s", k, val ? val : "?");
		free(val);
	}
	puts(dp_escape(out, strlen(out), safe, sizeof(safe)));
	json_decref(rec);
}

int cli_logs_host(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"host", no_argument, NULL, 'H'},	{"json", no_argument, NULL, 'j'},
	    {"follow", no_argument, NULL, 'f'}, {"socket", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},	{NULL, 0, NULL, 0}};
	static struct dcli c;
	const char *sock_opt = NULL;
	bool as_json = false, follow = false, closed, connected = false;
	char *text = NULL;
	size_t len = 0, done = 0;
	uint64_t offset = 0;
	struct dp_err err;
	int opt, rc = 0;

	optind = 1;
	/* The getopt loop every command has: alike in shape, each with its own options. */
	while ((opt = getopt_long(argc, argv, "Hjfs:h", opts, NULL)) != -1) {
		if (opt == 'j')
			as_json = true;
		else if (opt == 'f')
			follow = true;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'h')
			return fputs(logs_host_help, stdout), 0;
		else if (opt != 'H')
			return fputs(logs_host_help, stderr), 2;
	}
	if (optind != argc)
		return fputs(logs_host_help, stderr), 2;
	for (;;) {
		if (!connected && dcli_connect(&c, dcli_socket_path(sock_opt), &err) == 0)
			connected = true;
		if (connected && fetch_log(&c, NULL, &text, &len, &offset, &closed, &err) != 0) {
			dcli_close(&c);
			connected = false;
			/* refused (not root) is final; a deputyd gone while following is not */
			if (!follow || err.msg[0] == '\0' || strstr(err.msg, "root")) {
				rc = cli_fail("logs", "host log: %s", err.msg);
				break;
			}
		} else if (!connected && !follow) {
			rc = cli_fail("logs", "%s", err.msg);
			break;
		}
		while (done < len) {
			char *line = text + done, *nl = memchr(line, '\n', len - done);

			if (!nl)
				break;
			if (as_json)
				printf("%.*s\n", (int)(nl - line), line);
			else
				host_print_record(line, (size_t)(nl - line));
			done += (size_t)(nl - line) + 1;
		}
		fflush(stdout);
		if (!follow)
			break;
		usleep(connected ? 200 * 1000 : 500 * 1000);
	}
	if (connected)
		dcli_close(&c);
	free(text);
	return rc;
}
