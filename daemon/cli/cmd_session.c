// SPDX-License-Identifier: MIT
/*
 * cli_session: `deputy run`, `deputy sessions`, `deputy logs`, `deputy audit verify`.
 *
 * `deputy run` forks the child that will run CMD and keeps it waiting, asks deputyd to open a
 * session for it (deputyd verifies the grant and moves the child into the session's
 * cgroup), then lets it exec CMD with LD_PRELOAD, DEPUTY_SOCKET and DEPUTY_SESSION set (and
 * the session's trust bundle, bundle.h), waits for it, and reports its exit status when
 * closing the session. It stays connected meanwhile: if it dies, deputyd ends the session.
 * It never enters the session itself and is not dumpable: the agent runs as the same user,
 * and a `deputy run` it could ptrace or copy descriptors from would be a process outside
 * the session under its control.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "bundle.h"
#include "cli.h"
#include "client.h"
#include "jws.h"
#include "logsrc.h"

/* ---- deputy run --------------------------------------------------------------------------- */

static const char run_help[] =
    "usage: deputy run [--grant FILE] --agent NAME [--socket PATH] -- CMD [ARG…]\n"
    "Runs CMD as a session of agent \"agent:NAME\" for the user of the grant. deputyd\n"
    "verifies the grant; CMD runs with LD_PRELOAD=libdeputy.so, DEPUTY_SOCKET and\n"
    "DEPUTY_SESSION=<session id>. Exits with CMD's status (128+N if killed by signal N).\n"
    "When CMD exits, the session ends and any process it left behind is killed.\n"
    "  --grant FILE   the user's grant (a JWT; '-' reads it from standard input); by\n"
    "                 default the one `deputy login --agent NAME` stored\n"
    "  --agent NAME   the agent's name (letters, digits, '.', '_', '-')\n"
    "  --socket PATH  deputyd's socket (default $DEPUTY_SOCKET or " DP_DEFAULT_SOCKET ")\n"
    "The shim is $DEPUTY_PRELOAD if set, else libdeputy.so beside this program or in\n"
    "../lib/deputy/.\n";

static pid_t run_child = -1;

static void run_forward(int sig)
{
	if (run_child > 0)
		kill(run_child, sig);
}

static int find_shim(char *out, size_t outsz)
{
	const char *env = getenv("DEPUTY_PRELOAD");

	if (env && *env) {
		snprintf(out, outsz, "%s", env);
		return access(out, R_OK) == 0 ? 0 : -ENOENT;
	}
	return dp_find_installed("libdeputy.so", R_OK, out, outsz);
}

static int run_exec(char **cmd, const char *shim, const char *sock, const char *session)
{
	const char *old = getenv("LD_PRELOAD");
	char *preload = NULL, abs_sock[PATH_MAX];

	/* The canonical path: inside the session the kernel compares the path the shim passes
	 * with deputyd's socket (allow_unix), not the file it names. */
	if (realpath(sock, abs_sock) == NULL) {
		if (sock[0] != '/' && getcwd(abs_sock, sizeof(abs_sock)))
			snprintf(abs_sock + strlen(abs_sock), sizeof(abs_sock) - strlen(abs_sock),
				 "/%s", sock);
		else
			snprintf(abs_sock, sizeof(abs_sock), "%s", sock);
	}
	if (asprintf(&preload, "%s%s%s", shim, old && *old ? ":" : "", old ? old : "") < 0)
		return 127;
	setenv("LD_PRELOAD", preload, 1);
	setenv("DEPUTY_SOCKET", abs_sock, 1);
	setenv("DEPUTY_SESSION", session, 1);
	free(preload);
	execvp(cmd[0], cmd);
	cli_fail("run", "%s: %s", cmd[0], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}

/* What the child waits for: "<session id>\n<trust bundle path or nothing>". */
static int run_go(int go, const char *session, const char *bundle)
{
	char msg[DP_ID_LEN + PATH_MAX + 2];
	int n = snprintf(msg, sizeof(msg), "%s\n%s", session, bundle ? bundle : "");

	return n > 0 && (size_t)n < sizeof(msg) && write(go, msg, (size_t)n) == n ? 0 : -EIO;
}

/* The child: waits for run_go's message on the pipe (deputyd moves it into the session
 * meanwhile), then runs CMD. End of file without an id: no session, so no command. */
static int run_child_main(int go, char **cmd, const char *shim, const char *sock)
{
	char msg[DP_ID_LEN + PATH_MAX + 2];
	ssize_t got;
	size_t n;

	signal(SIGINT, SIG_DFL);
	signal(SIGQUIT, SIG_DFL);
	got = dp_read_upto(go, msg, sizeof(msg) - 1);
	close(go);
	n = got > 0 ? (size_t)got : 0;
	msg[n] = '\0';
	if (n < DP_ID_LEN || msg[DP_ID_LEN - 1] != '\n')
		return 127;
	msg[DP_ID_LEN - 1] = '\0';
	if (msg[DP_ID_LEN])
		bundle_setenv(msg + DP_ID_LEN);
	return run_exec(cmd, shim, sock, msg);
}

/* Opens the session for the child, its reply in c; 0 or the exit status to return. */
static int run_open(struct dcli *c, const char *grant, const char *agent, pid_t child, char **cmd,
		    uint8_t *buf, size_t bufsz)
{
	struct dp_msg m;
	struct dp_err err;
	int rc;

	dp_msg_init(&m, buf, bufsz, DP_MSG_SESSION_OPEN, dcli_next_seq(c), 0);
	dp_msg_put_str(&m, DP_T_GRANT, grant);
	dp_msg_put_str(&m, DP_T_AGENT, agent);
	dp_msg_put_u64(&m, DP_T_PID, (uint64_t)child);
	for (; *cmd; cmd++)
		dp_msg_put_str(&m, DP_T_ARGV, *cmd);
	rc = dcli_call(c, &m, &err);
	if (rc == -EPERM) {
		/* deputyd's reason already reads "grant refused: …" or "session: …". */
		fprintf(stderr, "deputy: %s\n", err.msg);
		return 1;
	}
	if (rc != 0 || c->hdr.type != DP_MSG_SESSION_OPENED)
		return cli_fail("run", "%s", rc ? err.msg : "unexpected reply from deputyd");
	return 0;
}

/* Tells deputyd the command's status; from a new connection if deputyd restarted. */
static void run_close(struct dcli *c, const char *sock, const char *session, int status,
		      uint8_t *buf, size_t bufsz)
{
	struct dp_msg m;
	struct dp_err err;
	int rc;

	for (int attempt = 0; attempt < 2; attempt++) {
		dp_msg_init(&m, buf, bufsz, DP_MSG_SESSION_CLOSE, dcli_next_seq(c), 0);
		dp_msg_put_str(&m, DP_T_SESSION, session);
		dp_msg_put_u64(&m, DP_T_STATUS, (uint64_t)status);
		rc = dcli_call(c, &m, &err);
		if (rc == 0 || rc == -EPERM || attempt == 1)
			break;
		dcli_close(c);
		rc = dcli_connect(c, sock, &err);
		if (rc != 0)
			break;
	}
	if (rc != 0)
		cli_fail("run", "closing session %s: %s", session, err.msg);
}

static int run_wait(void)
{
	int ws;

	while (waitpid(run_child, &ws, 0) < 0)
		if (errno != EINTR)
			return 127;
	return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

/* Over 100 lines on purpose: deputy run's steps in the order that matters (not dumpable
 * before the grant is read, the child forked before the session opens so that deputyd can
 * move it in, then the go message), read top to bottom rather than across helpers. */
int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {{"grant", required_argument, NULL, 'g'},
					     {"agent", required_argument, NULL, 'a'},
					     {"socket", required_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *grant_path = NULL, *agent = NULL, *sock_opt = NULL, *sock;
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	static struct dcli c;
	char shim[PATH_MAX], stored[PATH_MAX], *grant, *session, *ca, *bundle = NULL;
	struct sigaction sa = {.sa_handler = run_forward};
	struct dp_err err;
	int opt, status, go[2];

	/* Before the grant is read: a process of the same user must not read it, nor take
	 * this one over (see the header). Children inherit it until they exec. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+g:a:s:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'g':
			grant_path = optarg;
			break;
		case 'a':
			agent = optarg;
			break;
		case 's':
			sock_opt = optarg;
			break;
		case 'h':
			fputs(run_help, stdout);
			return 0;
		default:
			fputs(run_help, stderr);
			return 2;
		}
	}
	if (!agent || optind >= argc) {
		cli_fail("run", "--agent and a command are required (see --help)");
		return 2;
	}
	if (!grant_path) {
		/* the grant `deputy login --agent NAME` stored */
		if (cli_grant_path(agent, stored, sizeof(stored)))
			return cli_fail("run",
					"no --grant, and no config directory to find one in");
		grant_path = stored;
	}
	if (find_shim(shim, sizeof(shim)) != 0)
		return cli_fail("run", "cannot find libdeputy.so (set DEPUTY_PRELOAD)");
	grant = cli_read_token(grant_path);
	if (!grant || !*grant) {
		free(grant);
		return cli_fail("run", "cannot read the grant from %s", grant_path);
	}
	sock = dcli_socket_path(sock_opt);
	if (dcli_connect(&c, sock, &err) != 0) {
		free(grant);
		return cli_fail("run", "%s", err.msg);
	}
	if (pipe2(go, O_CLOEXEC) < 0 || (run_child = fork()) < 0) {
		free(grant);
		dcli_close(&c);
		return cli_fail("run", "fork: %s", strerror(errno));
	}
	if (run_child == 0) {
		close(go[1]);
		dcli_close(&c); /* deputyd's connection is deputy run's alone */
		free(grant);
		_exit(run_child_main(go[0], argv + optind, shim, sock));
	}
	close(go[0]);
	status = run_open(&c, grant, agent, run_child, argv + optind, buf, sizeof(buf));
	free(grant);
	session = status == 0 ? dcli_field_str(&c, DP_T_SESSION) : NULL;
	ca = status == 0 ? dcli_field_str(&c, DP_T_CA) : NULL;
	if (!session) {
		close(go[1]); /* the child ends without running CMD */
		run_wait();
		dcli_close(&c);
		return status ? status : cli_fail("run", "deputyd sent no session id");
	}
	/* A terminal's SIGINT/SIGQUIT already reach CMD (same process group); others are
	 * forwarded. */
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	/* Without the bundle, TLS through deputy's proxy would fail: the command does not run. */
	if (ca && bundle_write(ca, &bundle, &err) != 0) {
		status = cli_fail("run", "%s", err.msg);
		close(go[1]); /* the child ends without running CMD */
		run_wait();
	} else {
		if (run_go(go[1], session, bundle) != 0)
			kill(run_child, SIGKILL);
		close(go[1]);
		status = run_wait();
	}
	bundle_remove(bundle);
	free(bundle);
	free(ca);
	run_close(&c, sock, session, status, buf, sizeof(buf));
	free(session);
	dcli_close(&c);
	return status;
}

/* ---- requests that return data ---------------------------------------------------------- */

/* A request with at most a session and an offset, and its reply in c. */
int simple_call(struct dcli *c, uint16_t type, const char *session, uint64_t offset,
		struct dp_err *err)
{
	static uint8_t buf[4096];
	struct dp_msg m;

	dp_msg_init(&m, buf, sizeof(buf), type, dcli_next_seq(c), 0);
	if (session)
		dp_msg_put_str(&m, DP_T_SESSION, session);
	if (type == DP_MSG_LOG_READ)
		dp_msg_put_u64(&m, DP_T_OFFSET, offset);
	return dcli_call(c, &m, err);
}

/* Fetch a whole session log (or the part after *offset) into a growing buffer. */
int fetch_log(struct dcli *c, const char *session, char **text, size_t *len, uint64_t *offset,
	      bool *closed, struct dp_err *err)
{
	for (;;) {
		const uint8_t *v;
		uint16_t n;
		char *nt;
		int rc = simple_call(c, DP_MSG_LOG_READ, session, *offset, err);

		if (rc)
			return rc;
		if (!dcli_field(c, DP_T_DATA, &v, &n))
			n = 0;
		*closed = dcli_field_u64(c, DP_T_STATUS, 0) == 1;
		if (n == 0)
			return 0;
		nt = realloc(*text, *len + n + 1);
		if (!nt) {
			dp_err_set(err, "out of memory");
			return -ENOMEM;
		}
		*text = nt;
		memcpy(*text + *len, v, n);
		*len += n;
		(*text)[*len] = '\0';
		*offset += n;
	}
}

/* ---- deputy sessions ------------------------------------------------------------------------ */

static const char sessions_help[] =
    "usage: deputy sessions [--json] [--socket PATH]\n"
    "Lists sessions, open and closed, with their counts (yours; root sees all).\n";

static long long count_of(json_t *e, const char *k)
{
	return json_integer_value(json_object_get(json_object_get(e, "counts"), k));
}

static int by_opened(const void *a, const void *b)
{
	const char *x = json_string_value(json_object_get(*(json_t *const *)a, "opened"));
	const char *y = json_string_value(json_object_get(*(json_t *const *)b, "opened"));

	return strcmp(x ? x : "", y ? y : "");
}

int cmd_sessions(int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
					     {"socket", required_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static struct dcli c;
	const char *sock_opt = NULL;
	bool as_json = false;
	struct dp_err err;
	json_t *list, *e, **sorted;
	char *data;
	size_t i, n;
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "js:h", opts, NULL)) != -1) {
		if (opt == 'j')
			as_json = true;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'h')
			return fputs(sessions_help, stdout), 0;
		else
			return fputs(sessions_help, stderr), 2;
	}
	if (dcli_connect(&c, dcli_socket_path(sock_opt), &err) != 0 ||
	    simple_call(&c, DP_MSG_SESSIONS, NULL, 0, &err) != 0)
		return cli_fail("sessions", "%s", err.msg);
	data = dcli_field_str(&c, DP_T_DATA);
	dcli_close(&c);
	list = data ? json_loads(data, 0, NULL) : NULL;
	free(data);
	if (!json_is_array(list))
		return cli_fail("sessions", "deputyd sent a malformed list");
	n = json_array_size(list);
	sorted = calloc(n + 1, sizeof(*sorted));
	if (!sorted)
		return cli_fail("sessions", "out of memory");
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
		       json_string_value(json_object_get(e, "session")) ?: "?",
		       json_string_value(json_object_get(e, "state")) ?: "?",
		       json_string_value(json_object_get(e, "opened")) ?: "?",
		       json_string_value(json_object_get(e, "user")) ?: "?",
		       json_string_value(json_object_get(e, "agent")) ?: "?", count_of(e, "tokens"),
		       count_of(e, "denies"), count_of(e, "connects"), count_of(e, "blocked"),
		       count_of(e, "unmediated"));
	}
	free(sorted);
	json_decref(list);
	return 0;
}

/* ---- deputy logs --------------------------------------------------------------------------- */

static const char logs_help[] =
    "usage: deputy logs SESSION [--json] [--follow] [--socket PATH]\n"
    "Shows a session's records: time, pid/comm, what, verdict, and the chain\n"
    "user→agent→scope→status. --json prints the raw records, one per line; --follow\n"
    "keeps printing until the session closes.\n";

struct log_view {
	json_t *status_by_jti; /* jti -> response status, for the chain column */
	char *user, *agent;
};

static const char *js(json_t *rec, const char *k)
{
	const char *v = json_string_value(json_object_get(rec, k));

	return v ? v : "";
}

/* One case per record type, side by side so the text view's columns are seen together:
 * long (over 100 lines) because each type is a few lines and splitting them apart would
 * hide how they line up. */
static void print_record(struct log_view *lv, json_t *rec)
{
	const char *type = js(rec, "type"), *ts = js(rec, "ts");
	char when[16] = "", who[40] = "-", what[512] = "", verdict[40] = "", chain[512] = "";
	json_int_t pid = json_integer_value(json_object_get(rec, "pid"));

	if (strlen(ts) >= 23)
		snprintf(when, sizeof(when), "%.12s", ts + 11);
	if (pid)
		snprintf(who, sizeof(who), "%lld/%s", (long long)pid, js(rec, "comm"));
	if (strcmp(type, "session_open") == 0) {
		char *argv = json_dumps(json_object_get(rec, "argv"), JSON_COMPACT);

		free(lv->user);
		free(lv->agent);
		lv->user = strdup(js(rec, "user"));
		lv->agent = strdup(js(rec, "agent"));
		snprintf(what, sizeof(what), "session_open %s", argv ? argv : "");
		snprintf(verdict, sizeof(verdict), "open");
		snprintf(chain, sizeof(chain), "%s→%s", js(rec, "user"), js(rec, "agent"));
		free(argv);
	} else if (strcmp(type, "token") == 0) {
		json_t *st = json_object_get(lv->status_by_jti, js(rec, "jti"));
		char status[16] = "…";

		if (st)
			snprintf(status, sizeof(status), "%lld", (long long)json_integer_value(st));
		snprintf(what, sizeof(what), "%s %s", js(rec, "htm"), js(rec, "htu"));
		snprintf(verdict, sizeof(verdict), "delegate");
		snprintf(chain, sizeof(chain), "%s→%s→%s→%s", lv->user ? lv->user : "?",
			 lv->agent ? lv->agent : "?", js(rec, "scope"), status);
	} else if (strcmp(type, "deny") == 0) {
		json_t *enf = json_object_get(rec, "enforced");

		snprintf(what, sizeof(what), "%s%s%s%s", js(rec, "method"),
			 *js(rec, "method") ? " " : "", js(rec, "url"),
			 *js(rec, "url") ? ": " : "");
		snprintf(what + strlen(what), sizeof(what) - strlen(what), "%s", js(rec, "reason"));
		snprintf(verdict, sizeof(verdict), "deny(%s)%s", js(rec, "layer"),
			 json_is_false(enf) ? " not enforced" : "");
		snprintf(chain, sizeof(chain), "%s→%s→%s", lv->user ? lv->user : "?",
			 lv->agent ? lv->agent : "?", *js(rec, "scope") ? js(rec, "scope") : "-");
	} else if (strcmp(type, "token_use") == 0) {
		/* Requests the shim sent with the session's token from its table, a batch. */
		json_t *uses = json_object_get(rec, "uses"), *u0 = json_array_get(uses, 0);

		snprintf(what, sizeof(what), "%s %s%s", js(u0, "htm"), js(u0, "htu"),
			 json_array_size(uses) > 1 ? " …" : "");
		snprintf(verdict, sizeof(verdict), "delegate ×%zu", json_array_size(uses));
		snprintf(chain, sizeof(chain), "%s→%s→%s", lv->user ? lv->user : "?",
			 lv->agent ? lv->agent : "?", js(u0, "scope"));
	} else if (strcmp(type, "passthrough") == 0) {
		snprintf(what, sizeof(what), "%s %s", js(rec, "method"), js(rec, "url"));
		snprintf(verdict, sizeof(verdict), "passthrough");
	} else if (strcmp(type, "response") == 0) {
		snprintf(what, sizeof(what), "response to %s", js(rec, "jti"));
		snprintf(verdict, sizeof(verdict), "%lld",
			 (long long)json_integer_value(json_object_get(rec, "status")));
	} else if (strcmp(type, "connect") == 0) {
		if (strcmp(js(rec, "family"), "unix") == 0)
			snprintf(what, sizeof(what), "unix %s", js(rec, "path"));
		else
			snprintf(what, sizeof(what), "%s %s%s%s:%lld", js(rec, "protocol"),
				 strcmp(js(rec, "family"), "inet6") == 0 ? "[" : "",
				 js(rec, "daddr"),
				 strcmp(js(rec, "family"), "inet6") == 0 ? "]" : "",
				 (long long)json_integer_value(json_object_get(rec, "dport")));
		snprintf(verdict, sizeof(verdict), "%s%s", js(rec, "verdict"),
			 json_is_false(json_object_get(rec, "enforced")) ? " not enforced" : "");
		snprintf(chain, sizeof(chain), "%s",
			 json_is_true(json_object_get(rec, "mediated")) ? "mediated"
									: "UNMEDIATED");
	} else if (strcmp(type, "disconnect") == 0) {
		snprintf(what, sizeof(what), "closed %s:%lld after %.3f ms", js(rec, "daddr"),
			 (long long)json_integer_value(json_object_get(rec, "dport")),
			 (double)json_integer_value(json_object_get(rec, "duration_us")) / 1000.0);
	} else if (strcmp(type, "session_close") == 0) {
		json_t *cn = json_object_get(rec, "counts");

		snprintf(what, sizeof(what),
			 "session_close: exit %lld, %lld tokens, %lld denies, %lld connects "
			 "(%lld blocked, %lld unmediated)",
			 (long long)json_integer_value(json_object_get(cn, "exit_status")),
			 (long long)json_integer_value(json_object_get(cn, "tokens")),
			 (long long)json_integer_value(json_object_get(cn, "denies")),
			 (long long)json_integer_value(json_object_get(cn, "connects")),
			 (long long)json_integer_value(json_object_get(cn, "blocked")),
			 (long long)json_integer_value(json_object_get(cn, "unmediated")));
		snprintf(verdict, sizeof(verdict), "sealed%s%s%s", *js(rec, "reason") ? " (" : "",
			 js(rec, "reason"), *js(rec, "reason") ? ")" : "");
	} else if (strcmp(type, "repeated") == 0) {
		snprintf(what, sizeof(what), "%lld more like record %lld, the last at %.12s",
			 (long long)json_integer_value(json_object_get(rec, "count")),
			 (long long)json_integer_value(json_object_get(rec, "of")),
			 strlen(js(rec, "until")) >= 23 ? js(rec, "until") + 11 : "");
		snprintf(verdict, sizeof(verdict), "repeated");
	} else {
		snprintf(what, sizeof(what), "%s", type);
	}
	{
		/* comm, argv, targets and reasons come from the agent: no control byte of
		 * theirs reaches the auditor's terminal */
		char line[1280], safe[sizeof(line) * 4];

		snprintf(line, sizeof(line), "%-12s  %-22s  %-60s  %-22s  %s", when, who, what,
			 verdict, chain);
		puts(dp_escape(line, strlen(line), safe, sizeof(safe)));
	}
}

static void print_lines(struct log_view *lv, char *text, size_t len, size_t *done, bool as_json)
{
	while (*done < len) {
		char *line = text + *done, *nl = memchr(line, '\n', len - *done);
		json_t *rec;

		if (!nl)
			return; /* an incomplete line waits for the next chunk */
		*nl = '\0';
		*done += (size_t)(nl - line) + 1;
		if (as_json) {
			puts(line);
			continue;
		}
		rec = json_loads(line, 0, NULL);
		if (rec)
			print_record(lv, rec);
		json_decref(rec);
	}
}

static void index_responses(struct log_view *lv, const char *text, size_t len)
{
	size_t off = 0;

	while (off < len) {
		const char *nl = memchr(text + off, '\n', len - off);
		size_t n = nl ? (size_t)(nl - (text + off)) : len - off;
		json_t *rec = json_loadb(text + off, n, 0, NULL);

		if (strcmp(js(rec, "type"), "response") == 0 && *js(rec, "jti"))
			json_object_set(lv->status_by_jti, js(rec, "jti"),
					json_object_get(rec, "status"));
		json_decref(rec);
		off += n + 1;
	}
}

int cmd_logs(int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
					     {"follow", no_argument, NULL, 'f'},
					     {"socket", required_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static struct dcli c;
	const char *sock_opt = NULL, *session;
	bool as_json = false, follow = false, closed = false;
	struct log_view lv = {0};
	struct dp_err err;
	char *text = NULL;
	size_t len = 0, done = 0;
	uint64_t offset = 0;
	int opt, rc = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "jfs:h", opts, NULL)) != -1) {
		if (opt == 'j')
			as_json = true;
		else if (opt == 'f')
			follow = true;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'h')
			return fputs(logs_help, stdout), 0;
		else
			return fputs(logs_help, stderr), 2;
	}
	if (optind != argc - 1) {
		fputs(logs_help, stderr);
		return 2;
	}
	session = argv[optind];
	if (dcli_connect(&c, dcli_socket_path(sock_opt), &err) != 0)
		return cli_fail("logs", "%s", err.msg);
	lv.status_by_jti = json_object();
	if (!as_json)
		printf("%-12s  %-22s  %-60s  %-22s  %s\n", "TIME", "PID/COMM", "WHAT", "VERDICT",
		       "USER→AGENT→SCOPE→STATUS");
	for (;;) {
		size_t before = len;

		if (fetch_log(&c, session, &text, &len, &offset, &closed, &err) != 0) {
			rc = cli_fail("logs", "%s: %s", session, err.msg);
			break;
		}
		if (len > before)
			index_responses(&lv, text + before, len - before);
		print_lines(&lv, text, len, &done, as_json);
		fflush(stdout);
		if (!follow || closed)
			break;
		usleep(200 * 1000);
	}
	dcli_close(&c);
	json_decref(lv.status_by_jti);
	free(lv.user);
	free(lv.agent);
	free(text);
	return rc;
}

/* ---- deputy audit verify --------------------------------------------------------------------- */

static const char audit_help[] =
    "usage: deputy audit verify SESSION|FILE [--jwks FILE] [--socket PATH]\n"
    "Checks a session log's hash chain and, once the session is closed, the signature of\n"
    "its session_close record by deputyd's key. A FILE is checked locally against --jwks\n"
    "(default: jwks.json in the log's state directory); a SESSION id is fetched from\n"
    "deputyd. Exits 0 if intact, 1 naming the first bad line.\n";

int cmd_audit(int argc, char **argv)
{
	static const struct option opts[] = {{"jwks", required_argument, NULL, 'k'},
					     {"socket", required_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *jwks_path = NULL, *sock_opt = NULL, *target;
	struct logsrc_verdict v;
	struct logsrc ls;
	struct dp_err err;
	int opt, rc = 1;

	if (argc >= 2 && cli_is_help(argv[1]))
		return fputs(audit_help, stdout), 0;
	if (argc < 2 || strcmp(argv[1], "verify") != 0) {
		fputs(audit_help, stderr);
		return 2;
	}
	optind = 2;
	/* The getopt loop every command has: alike in shape, each with its own options. */
	while ((opt = getopt_long(argc, argv, "k:s:h", opts, NULL)) != -1) {
		if (opt == 'k')
			jwks_path = optarg;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'h')
			return fputs(audit_help, stdout), 0;
		else
			return fputs(audit_help, stderr), 2;
	}
	if (optind != argc - 1) {
		fputs(audit_help, stderr);
		return 2;
	}
	target = argv[optind];
	if (logsrc_load(&ls, target, jwks_path, sock_opt, &err) != 0 ||
	    logsrc_verify(&ls, &v, &err) != 0) {
		cli_fail("audit", "%s", err.msg);
	} else if (v.sealed) {
		printf("%s: intact: %zu records, sealed by deputyd\n", target, v.records);
		rc = 0;
	} else {
		printf("%s: intact so far: %zu records (session open, not sealed yet)\n", target,
		       v.records);
		rc = 0;
	}
	logsrc_free(&ls);
	return rc;
}
