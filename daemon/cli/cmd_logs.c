// SPDX-License-Identifier: MIT
/*
 * cmd_logs: `deputy logs SESSION|--all [--follow]`. Each log is read from deputyd by offset,
 * so a follower that loses deputyd (a restart) reconnects and asks again from the offset it
 * had: nothing is printed twice and nothing is skipped, whatever the log gained meanwhile.
 * --all finds sessions by asking deputyd for those that ran since its last look (a margin
 * behind, so one that opened and closed in between is not missed) and follows each until
 * it is sealed and read to its end.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "locate.h"
#include "logview.h"

#define LOGS_POLL_US (200 * 1000)
#define LOGS_MARGIN_S 30 /* how far back each look for new sessions reaches */

static const char logs_help[] =
    "usage: deputy logs SESSION|--all [--json] [--follow] [--type T[,T…]]\n"
    "                   [--verdict V[,V…]] [--since T] [--until T] [--all-records]\n"
    "                   [--socket PATH] [--config FILE]\n"
    "       deputy logs --host [--json] [--follow] [--socket PATH]\n"
    "Shows a session's records: time, pid/comm, what, verdict, and the chain\n"
    "user→agent→scope→status. SESSION is an id or a unique prefix of one (4 or more\n"
    "characters). Long values are cut with '…' in the table; --json prints the records\n"
    "whole, one per line.\n"
    "  --all          every session's records (yours; root sees all), session by session\n"
    "  --follow, -f   keep printing records as they are written, until the session closes\n"
    "                 (with --all: new sessions too, until interrupted; only records\n"
    "                 written from now on unless --since). Survives a deputyd restart.\n"
    "  --type T       only records of these types (session_open, token, deny, connect, …)\n"
    "  --verdict V    only records with this verdict: delegate, passthrough, deny, allow,\n"
    "                 block\n"
    "  --since T, --until T   only records written in that time; " CLI_TIME_HELP "\n"
    "  --all-records  also each Unix-socket connect (by default a process's back-to-back\n"
    "                 ones, glibc's lookups through nscd, are folded into one line)\n"
    "deputyd is found at --socket, $DEPUTY_SOCKET, or the `socket` of deputyd's config\n"
    "(--config, $DEPUTY_CONFIG, /etc/deputy/deputy.json).\n";

struct logs_src {
	char id[DP_ID_LEN];
	uint64_t offset;
	char *text; /* read, not yet printed */
	size_t len, done;
	bool closed, finished;
	struct logview lv;
};

struct logs {
	struct dcli c;
	const char *sock;
	bool connected, said_lost;
	struct logview_filter f;
	struct logs_src *src;
	size_t n;
	time_t last_look;
};

static struct logs_src *logs_add(struct logs *L, const char *id)
{
	struct logs_src *v;

	for (size_t i = 0; i < L->n; i++)
		if (strcmp(L->src[i].id, id) == 0)
			return NULL;
	v = realloc(L->src, (L->n + 1) * sizeof(*v));
	if (!v)
		return NULL;
	L->src = v;
	v = &L->src[L->n++];
	memset(v, 0, sizeof(*v));
	snprintf(v->id, sizeof(v->id), "%s", id);
	logview_init(&v->lv, &L->f);
	return v;
}

static int by_opened(const void *a, const void *b)
{
	const char *x = json_string_value(json_object_get(*(json_t *const *)a, "opened"));
	const char *y = json_string_value(json_object_get(*(json_t *const *)b, "opened"));

	return strcmp(x ? x : "", y ? y : "");
}

/* Sessions that ran since `since` ("" : all), oldest first, added to the follow list. */
static int logs_look(struct logs *L, const char *since, struct dp_err *err)
{
	static uint8_t buf[4096];
	json_t *list, *e, **v;
	struct dp_msg m;
	char *data;
	size_t i, n;
	int rc;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_SESSIONS, dcli_next_seq(&L->c), 0);
	if (since[0])
		dp_msg_put_str(&m, DP_T_SINCE, since);
	if (L->f.until[0])
		dp_msg_put_str(&m, DP_T_UNTIL, L->f.until);
	if ((rc = dcli_call(&L->c, &m, err)))
		return rc;
	data = dcli_field_str(&L->c, DP_T_DATA);
	list = data ? json_loads(data, 0, NULL) : NULL;
	free(data);
	n = json_array_size(list);
	v = calloc(n + 1, sizeof(*v));
	if (!json_is_array(list) || !v) {
		free(v);
		json_decref(list);
		dp_err_set(err, "deputyd sent a malformed list");
		return -EPROTO;
	}
	json_array_foreach(list, i, e) v[i] = e;
	qsort(v, n, sizeof(*v), by_opened);
	for (i = 0; i < n; i++)
		logs_add(L, json_string_value(json_object_get(v[i], "session")) ?: "");
	free(v);
	json_decref(list);
	return 0;
}

/* Reads and prints what s's log gained; 0, or the error of the call that failed. */
static int logs_read(struct logs *L, struct logs_src *s, struct dp_err *err)
{
	int rc = fetch_log(&L->c, s->id, &s->text, &s->len, &s->offset, &s->closed, err);

	logview_lines(&s->lv, s->text, s->len, &s->done);
	/* what was printed is dropped: a follower runs for days */
	memmove(s->text, s->text + s->done, s->len - s->done);
	s->len -= s->done;
	s->done = 0;
	if (rc == 0 && s->closed) {
		s->finished = true;
		logview_flush(&s->lv);
	}
	return rc;
}

static bool logs_reconnect(struct logs *L)
{
	struct dp_err err;

	if (L->connected)
		return true;
	if (dcli_connect(&L->c, L->sock, &err) != 0)
		return false;
	L->connected = true;
	if (L->said_lost)
		fprintf(stderr, "deputy: logs: deputyd is back; going on\n");
	L->said_lost = false;
	return true;
}

static void logs_lost(struct logs *L, const struct dp_err *err)
{
	dcli_close(&L->c);
	L->connected = false;
	if (!L->said_lost)
		fprintf(stderr, "deputy: logs: %s; waiting for deputyd\n", err->msg);
	L->said_lost = true;
}

/* One pass over the sessions followed; -EPERM (deputyd refused: stop) or 0. */
static int logs_pass(struct logs *L, bool all, bool follow)
{
	char since[DP_TS_LEN];
	struct dp_err err;
	int rc = 0;

	if (!logs_reconnect(L))
		return 0;
	if (all) {
		struct timespec t = {.tv_sec = L->last_look - LOGS_MARGIN_S};

		if (L->last_look)
			dp_timestamp_at(&t, since);
		else
			snprintf(since, sizeof(since), "%s", L->f.since);
		rc = logs_look(L, since, &err);
		if (rc == 0)
			L->last_look = time(NULL);
	}
	for (size_t i = 0; rc == 0 && i < L->n; i++) {
		if (!L->src[i].finished)
			rc = logs_read(L, &L->src[i], &err);
		if (!follow && rc == 0)
			logview_flush(&L->src[i].lv);
	}
	if (rc == -EPERM) {
		cli_fail("logs", "%s", err.msg);
		return rc;
	}
	if (rc) {
		if (!follow) {
			cli_fail("logs", "%s", err.msg);
			return rc;
		}
		logs_lost(L, &err);
	}
	return 0;
}

static int logs_follow(struct logs *L, bool all)
{
	for (;;) {
		bool pending = false;

		if (logs_pass(L, all, true) != 0)
			return 1;
		fflush(stdout);
		for (size_t i = 0; i < L->n; i++)
			pending |= !L->src[i].finished;
		if (!all && !pending)
			return 0;
		usleep(LOGS_POLL_US);
		for (size_t i = 0; i < L->n; i++) /* idle: a fold waits no longer */
			logview_flush(&L->src[i].lv);
	}
}

static int logs_opts(int argc, char **argv, struct logs *L, bool *all, bool *follow,
		     const char **sock_opt, const char **config)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},	      {"follow", no_argument, NULL, 'f'},
	    {"all", no_argument, NULL, 'A'},	      {"all-records", no_argument, NULL, 'R'},
	    {"type", required_argument, NULL, 't'},   {"verdict", required_argument, NULL, 'V'},
	    {"since", required_argument, NULL, 'S'},  {"until", required_argument, NULL, 'U'},
	    {"socket", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0}};
	struct dp_err err;
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "jfs:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			L->f.json = true;
			break;
		case 'f':
			*follow = true;
			break;
		case 'A':
			*all = true;
			break;
		case 'R':
			L->f.all_records = true;
			break;
		case 't':
			L->f.types = optarg;
			break;
		case 'V':
			L->f.verdicts = optarg;
			break;
		case 'S':
		case 'U':
			if (cli_time_arg(optarg, opt == 'S' ? L->f.since : L->f.until, &err) != 0)
				return cli_fail("logs", "%s", err.msg);
			break;
		case 's':
			*sock_opt = optarg;
			break;
		case 'c':
			*config = optarg;
			break;
		case 'h':
			fputs(logs_help, stdout);
			return -1;
		default:
			fputs(logs_help, stderr);
			return 2;
		}
	}
	if (optind != argc - (*all ? 0 : 1)) {
		fputs(logs_help, stderr);
		return 2;
	}
	return 0;
}

int cmd_logs(int argc, char **argv)
{
	static struct logs L;
	const char *sock_opt = NULL, *config = NULL;
	bool all = false, follow = false;
	char id[DP_ID_LEN];
	struct dp_err err;
	int rc;

	/* deputyd's own host log: its own reader, options and access rule (root) */
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--host") == 0)
			return cli_logs_host(argc, argv);
	memset(&L, 0, sizeof(L));
	rc = logs_opts(argc, argv, &L, &all, &follow, &sock_opt, &config);
	if (rc)
		return rc < 0 ? 0 : rc;
	L.sock = cli_socket(sock_opt, config, &err);
	if (!L.sock || dcli_connect(&L.c, L.sock, &err) != 0)
		return cli_fail("logs", "%s", err.msg);
	L.connected = true;
	/* a bad id fails here, before anything is printed */
	if (!all && cli_session_id(&L.c, argv[optind], id, &err) != 0) {
		dcli_close(&L.c);
		return cli_fail("logs", "%s", err.msg);
	}
	if (!all)
		logs_add(&L, id);
	/* following everything starts now, as tail -f would, unless asked for more */
	if (all && follow && !L.f.since[0])
		dp_timestamp(L.f.since);
	L.f.with_session = all;
	logview_header(&L.f);
	rc = follow ? logs_follow(&L, all) : logs_pass(&L, all, false) ? 1 : 0;
	for (size_t i = 0; i < L.n; i++) {
		logview_free(&L.src[i].lv);
		free(L.src[i].text);
	}
	free(L.src);
	dcli_close(&L.c);
	return rc;
}
