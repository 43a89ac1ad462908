// SPDX-License-Identifier: MIT
/*
 * cli_session: `deputy run` and `deputy audit verify` (sessions: cmd_sessions.c, logs:
 * cmd_logs.c, verify --all: audit_all.c).
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
#include "locate.h"
#include "logsrc.h"

/* ---- deputy run --------------------------------------------------------------------------- */

static const char run_help[] =
    "usage: deputy run [--grant FILE] --agent NAME [--socket PATH] [--config FILE]\n"
    "                  -- CMD [ARG…]\n"
    "Runs CMD as a session of agent \"agent:NAME\" for the user of the grant. deputyd\n"
    "verifies the grant; CMD runs with LD_PRELOAD=libdeputy.so, DEPUTY_SOCKET and\n"
    "DEPUTY_SESSION=<session id>. Exits with CMD's status (128+N if killed by signal N).\n"
    "When CMD exits, the session ends and any process it left behind is killed.\n"
    "  --grant FILE   the user's grant (a JWT; '-' reads it from standard input); by\n"
    "                 default the one `deputy login --agent NAME` stored\n"
    "  --agent NAME   the agent's name (letters, digits, '.', '_', '-')\n"
    "  --socket PATH  deputyd's socket (default $DEPUTY_SOCKET, else the `socket` of\n"
    "                 deputyd's config: --config FILE, $DEPUTY_CONFIG or\n"
    "                 /etc/deputy/deputy.json, else " DP_DEFAULT_SOCKET ")\n"
    "Run agents as an unprivileged user: a process with root privileges can leave any\n"
    "session (move itself out of its cgroup, detach the eBPF programs).\n"
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
	static const struct option opts[] = {
	    {"grant", required_argument, NULL, 'g'},  {"agent", required_argument, NULL, 'a'},
	    {"socket", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0}};
	const char *grant_path = NULL, *agent = NULL, *sock_opt = NULL, *config = NULL, *sock;
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
		case 'c':
			config = optarg;
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
	sock = cli_socket(sock_opt, config, &err);
	if (!sock || dcli_connect(&c, sock, &err) != 0) {
		free(grant);
		return cli_fail("run", "%s", err.msg);
	}
	/* deputyd cannot stop a root agent from leaving: said, not refused (root may test).
	 * Said to a person at a terminal: scripts that run root agents on purpose (CI, tests)
	 * keep a clean stderr. */
	if (geteuid() == 0 && isatty(STDERR_FILENO))
		fprintf(stderr, "deputy: run: warning: running as root: a process with root "
				"privileges can leave any session; run agents as an unprivileged "
				"user\n");
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
	if (type == DP_MSG_LOG_READ && !session)
		dp_msg_put_u64(&m, DP_T_HOST_LOG, 1);
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

/* ---- deputy audit verify --------------------------------------------------------------------- */

static const char audit_help[] =
    "usage: deputy audit verify SESSION|FILE [--jwks FILE] [--socket PATH]\n"
    "       deputy audit verify --host [--socket PATH]\n"
    "       deputy audit verify --all [DIR] [--jwks FILE] [--config FILE]\n"
    "Checks a session log's hash chain and, once the session is closed, the signature of\n"
    "its session_close record by deputyd's key. A FILE is checked locally against --jwks\n"
    "(default: jwks.json in the log's state directory); a SESSION id (or a unique prefix\n"
    "of one) is fetched from deputyd. Exits 0 if intact, 1 naming the first bad line.\n"
    "--all checks every session log of the state directory DIR (default: the state_dir of\n"
    "deputyd's config: --config, $DEPUTY_CONFIG, /etc/deputy/deputy.json) and the chain\n"
    "of seals across them: a deleted or cut session log fails, one removed by retention\n"
    "does not. Exits 1 naming each problem.\n";

int cmd_audit(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"jwks", required_argument, NULL, 'k'}, {"socket", required_argument, NULL, 's'},
	    {"all", no_argument, NULL, 'A'},	    {"config", required_argument, NULL, 'c'},
	    {"host", no_argument, NULL, 'H'},	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0}};
	const char *jwks_path = NULL, *sock_opt = NULL, *config = NULL, *target;
	bool all = false, host = false;
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
		else if (opt == 'H')
			host = true;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'A')
			all = true;
		else if (opt == 'c')
			config = optarg;
		else if (opt == 'h')
			return fputs(audit_help, stdout), 0;
		else
			return fputs(audit_help, stderr), 2;
	}
	if (all && !host && optind >= argc - 1)
		return cli_audit_all(optind < argc ? argv[optind] : NULL, jwks_path, config);
	if (all || optind != argc - !host) {
		fputs(audit_help, stderr);
		return 2;
	}
	target = host ? NULL : argv[optind];
	if (logsrc_load(&ls, target, jwks_path, sock_opt, &err) != 0 ||
	    logsrc_verify(&ls, &v, &err) != 0) {
		cli_fail("audit", "%s", err.msg);
	} else if (v.sealed) {
		printf("%s: intact: %zu records, sealed by deputyd\n", ls.target, v.records);
		rc = 0;
	} else {
		printf("%s: intact so far: %zu records (%s, not sealed yet)\n", ls.target,
		       v.records, host ? "deputyd running" : "session open");
		rc = 0;
	}
	logsrc_free(&ls);
	return rc;
}
