// SPDX-License-Identifier: MIT
/*
 * Unit tests for session.c: a session's states (open, closing, finished) and what each
 * transition leaves behind (cgroup, state file, sealed log, the gone callback), on the real
 * code with real cgroups, grants and audit logs. Opening needs root (a cgroup, a process
 * moved into it); those cases skip when not root. The cookie set and the session's text
 * helpers need nothing.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "deputyd.h"
#include "jwt_helpers.h"
#include "unit.h"

#define ISS "https://idp.test"
#define AGENT "agent:unit"

static struct deputyd d;
static struct dp_key *idp;
static char cg_parent[PATH_MAX];
static struct session *gone[8];
static size_t n_gone;

static void on_gone(struct deputyd *dd, struct session *s)
{
	if (dd == &d && n_gone < DP_ARRAY_SIZE(gone))
		gone[n_gone++] = s;
}

static int setup_once(struct dp_err *err);

static int setup(struct dp_err *err)
{
	int rc;

	static int done;
	static struct dp_err first;

	if (done) {
		*err = first;
		return done > 0 ? 0 : -1;
	}
	done = -1;
	rc = setup_once(err);
	first = *err;
	if (rc == 0)
		done = 1;
	return rc;
}

static int setup_once(struct dp_err *err)
{
	char path[PATH_MAX], *jwks, *text;
	int rc;

	snprintf(path, sizeof(path), "%s/idp.pem", th_tmpdir());
	idp = dp_key_load_or_create(path, err);
	if (!idp)
		return -1;
	snprintf(path, sizeof(path), "%s/idp-jwks.json", th_tmpdir());
	jwks = dp_key_jwks_json(idp);
	rc = dp_write_file_atomic(path, jwks, strlen(jwks), 0644);
	free(jwks);
	if (rc || asprintf(&text,
			   "{\"issuer\": \"https://deputy.test\", \"trusted_issuers\": "
			   "[{\"issuer\": \"" ISS "\", \"jwks_file\": \"%s\"}], \"routes\": []}",
			   path) < 0)
		return -1;
	rc = config_parse(text, strlen(text), &d.cfg, err);
	free(text);
	if (rc)
		return -1;
	d.trust = trust_new(d.cfg, err);
	snprintf(path, sizeof(path), "%s/signing.pem", th_tmpdir());
	d.key = d.trust ? dp_key_load_or_create(path, err) : NULL;
	snprintf(d.log_dir, sizeof(d.log_dir), "%s/sessions", th_tmpdir());
	if (!d.key || mkdir(d.log_dir, 0700) != 0)
		return -1;
	if (cgroup_root(d.cg_root, sizeof(d.cg_root)) != 0) {
		dp_err_set(err, "no cgroup2 mount");
		return -1;
	}
	snprintf(cg_parent, sizeof(cg_parent), "%s/deputy-unit-session-%d", d.cg_root,
		 (int)getpid());
	snprintf(d.cg_parent, sizeof(d.cg_parent), "%s", cg_parent);
	if (mkdir(cg_parent, 0755) != 0) {
		dp_err_set(err, "mkdir %s: %s", cg_parent, strerror(errno));
		return -1;
	}
	session_on_gone(&d, on_gone);
	return 0;
}

static char *grant_for(const char *agent)
{
	int64_t now = dp_now();
	json_t *claims =
	    json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:[s], s:{s:s}}", "iss", ISS, "sub",
		      "alice@example.com", "aud", "https://deputy.test", "iat", (json_int_t)now,
		      "exp", (json_int_t)(now + 600), "jti", "grant-unit", "scope", "s:x",
		      "resource", "https://a.test", "may_act", "sub", agent);
	struct dp_err err;
	char *tok = dp_jws_sign(idp, "JWT", claims, &err);

	json_decref(claims);
	return tok;
}

/* What `deputy run` is to a session: a leader that waits until killed, reaping its child,
 * which waits too and is what deputyd moves into the session. */
static pid_t leader_start(int *pidfd, pid_t *child)
{
	int p[2];
	pid_t pid;

	*child = -1;
	if (pipe(p) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		pid_t c = fork();

		if (c == 0) {
			for (;;)
				pause();
		}
		if (write(p[1], &c, sizeof(c)) != sizeof(c))
			_exit(1);
		for (;;)
			if (waitpid(-1, NULL, 0) < 0)
				pause();
	}
	close(p[1]);
	if (pid > 0 && read(p[0], child, sizeof(*child)) != sizeof(*child))
		*child = -1;
	close(p[0]);
	*pidfd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
	return pid;
}

static void leader_stop(pid_t pid, pid_t child)
{
	if (child > 0)
		kill(child, SIGKILL);
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
}

static bool gone_within(pid_t pid, int ms)
{
	for (; ms > 0 && kill(pid, 0) == 0; ms -= 10)
		usleep(10000);
	return kill(pid, 0) != 0;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Ticks until no session is left, for at most ~10 s (a busy machine is slow to kill). */
static bool tick_until_finished(void)
{
	for (int i = 0; i < 200 && d.sessions; i++) {
		session_tick(&d);
		if (d.sessions)
			usleep(50000);
	}
	return d.sessions == NULL;
}

static int open_as(pid_t pid, int pidfd, pid_t child, const char *grant, struct session **s,
		   struct dp_err *err)
{
	char *argv[] = {"sleep", "\xff"};
	struct session_req q = {pid, 0, pidfd, child, grant, "unit", argv, 2};

	return session_open(&d, NULL, &q, s, err);
}

static struct session *open_one(pid_t pid, int pidfd, pid_t child, struct dp_err *err)
{
	char *grant = grant_for(AGENT);
	struct session *s = NULL;
	int rc = open_as(pid, pidfd, child, grant, &s, err);

	free(grant);
	return rc == 0 ? s : NULL;
}

static json_t *last_record(const char *id)
{
	char path[PATH_MAX], line[16384];
	json_t *rec = NULL;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.jsonl", d.log_dir, id);
	audit_log_flush_all(); /* as deputyd's loop does at the end of each turn */
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f)) {
		json_decref(rec);
		rec = json_loads(line, 0, NULL);
	}
	if (f)
		fclose(f);
	return rec;
}

/* Starts a leader and opens its session; fails the case when it cannot. */
#define OPEN_SESSION(s, pid, pidfd, child)                                                         \
	do {                                                                                       \
		struct dp_err e_ = {"fork failed"};                                                \
		pid = leader_start(&pidfd, &child);                                                \
		s = pid > 0 && child > 0 ? open_one(pid, pidfd, child, &e_) : NULL;                \
		if (!s) {                                                                          \
			leader_stop(pid, child);                                                   \
			fail("session_open: %s", e_.msg);                                          \
		}                                                                                  \
	} while (0)

#define NEED_ROOT()                                                                                \
	do {                                                                                       \
		struct dp_err e_ = {""};                                                           \
		if (geteuid() != 0)                                                                \
			skip("needs root (cgroups)");                                              \
		if (setup(&e_) != 0)                                                               \
			fail("setup: %s", e_.msg);                                                 \
	} while (0)

/* Open: the leader's child is in the session's cgroup, the leader is not; the log starts
 * with session_open and the state file (it holds the grant) is private. Closing with a
 * status: CLOSING, processes killed, then finished by the tick: log sealed, files and
 * cgroup gone, callback told; the leader, outside, lives on. */
static void open_close_finish(void)
{
	char state[PATH_MAX], cg[PATH_MAX], cg_path[PATH_MAX], id[DP_ID_LEN];
	struct session *s;
	struct stat st;
	json_t *rec;
	pid_t pid, child;
	int pidfd;

	NEED_ROOT();
	OPEN_SESSION(s, pid, pidfd, child);
	check(s->state == SESSION_OPEN && session_find(&d, s->id) == s);
	check(cgroup_of_pid(child, cg, sizeof(cg)) == 0);
	check_str(cg, s->cg_rel);
	check(cgroup_of_pid(pid, cg, sizeof(cg)) == 0 && strcmp(cg, s->cg_rel) != 0);
	snprintf(state, sizeof(state), "%s/%s.state", d.log_dir, s->id);
	check(stat(state, &st) == 0 && (st.st_mode & 0777) == 0600);
	rec = last_record(s->id);
	check_str(json_string_value(json_object_get(rec, "type")), "session_open");
	check_str(json_string_value(json_array_get(json_object_get(rec, "argv"), 1)), "\\xff");
	json_decref(rec);

	snprintf(id, sizeof(id), "%s", s->id);
	snprintf(cg_path, sizeof(cg_path), "%s", s->cg_path);
	n_gone = 0;
	session_request_close(&d, s, 7);
	check(s->state == SESSION_CLOSING && s->exit_status == 7);
	/* A second request changes nothing but may give the status. */
	session_request_close(&d, s, -1);
	check(s->exit_status == 7);
	check(tick_until_finished());
	check(gone_within(child, 5000) && kill(pid, 0) == 0);
	check(n_gone == 1 && gone[0] == s);
	check(!session_find(&d, id));
	check(!exists(state) && !exists(cg_path));
	rec = last_record(id);
	check_str(json_string_value(json_object_get(rec, "type")), "session_close");
	check(json_integer_value(json_object_get(json_object_get(rec, "counts"), "exit_status")) ==
	      7);
	json_decref(rec);
	leader_stop(pid, -1);
	close(pidfd);
}

/* The leader gone without a close (deputy run killed): the next tick ends the session. */
static void leader_exit_ends_session(void)
{
	struct session *s;
	pid_t pid, child;
	int pidfd;

	NEED_ROOT();
	OPEN_SESSION(s, pid, pidfd, child);
	n_gone = 0;
	session_tick(&d);
	check(s->state == SESSION_OPEN && d.sessions == s);
	leader_stop(pid, -1);
	check(tick_until_finished());
	check(n_gone == 1 && gone[0] == s);
	check(gone_within(child, 5000));
	close(pidfd);
}

/* A grant for another agent opens nothing and leaves nothing behind. */
static void refused_grant_leaves_nothing(void)
{
	struct session *s = NULL;
	struct dp_err err = {""};
	int pidfd, rc, left = 0;
	pid_t pid, child;
	char *grant;

	NEED_ROOT();
	pid = leader_start(&pidfd, &child);
	grant = grant_for("agent:someone-else");
	rc = open_as(pid, pidfd, child, grant, &s, &err);
	free(grant);
	leader_stop(pid, child);
	close(pidfd);
	check(rc != 0 && !s && d.sessions == NULL);
	check(strstr(err.msg, "grant refused"));
	{
		char cmd[PATH_MAX + 64];
		FILE *p;

		snprintf(cmd, sizeof(cmd), "find '%s' -mindepth 1 -type d | wc -l", cg_parent);
		p = popen(cmd, "r");
		check(p && fscanf(p, "%d", &left) == 1);
		pclose(p);
	}
	check(left == 0);
}

/* A process already in a session cannot open another, nor be the child of a new one: it
 * would leave its cgroup. Nor can a leader name a process that is not its child. */
static void nested_open_refused(void)
{
	struct dp_err err = {""};
	struct session *s, *inner = NULL;
	pid_t pid, child, pid2, child2;
	int pidfd, pidfd2, rc;
	char *grant;

	NEED_ROOT();
	OPEN_SESSION(s, pid, pidfd, child);
	grant = grant_for(AGENT);
	rc = open_as(child, -1, child, grant, &inner, &err);
	check(rc == -EPERM && !inner && strstr(err.msg, "cannot open another session"));
	/* another leader naming the session's process, or a process not its child */
	pid2 = leader_start(&pidfd2, &child2);
	rc = open_as(pid2, pidfd2, child, grant, &inner, &err);
	check(rc == -EPERM && !inner && strstr(err.msg, "not a child of"));
	rc = open_as(pid2, pidfd2, pid, grant, &inner, &err);
	check(rc == -EPERM && !inner && strstr(err.msg, "not a child of"));
	leader_stop(pid2, child2);
	close(pidfd2);
	free(grant);
	check(d.n_sessions == 1);
	session_request_close(&d, s, 0);
	check(tick_until_finished());
	leader_stop(pid, -1);
	close(pidfd);
}

/* The connection table: entries only by open, counts by request, gone at close, also when
 * others moved in around them. */
static void cookie_connections(void)
{
	struct cookie_set cs = {0};
	uint32_t n;

	check(!cookie_conn_request(&cs, 5));
	check(cookie_conn_open(&cs, 0) == -EINVAL);
	for (uint64_t c = 1; c <= 5000; c++)
		if (cookie_conn_open(&cs, c * 64) != 0)
			fail("open %llu", (unsigned long long)c);
	check(cs.used == 5000);
	check(cookie_conn_request(&cs, 64) && cookie_conn_request(&cs, 64));
	check(!cookie_conn_request(&cs, 65));
	for (uint64_t c = 2; c <= 5000; c += 2)
		check(cookie_conn_close(&cs, c * 64, &n) && n == 0);
	check(cookie_conn_close(&cs, 64, &n) && n == 2);
	check(!cookie_conn_close(&cs, 64, &n) && n == 0);
	for (uint64_t c = 3; c <= 5000; c += 2)
		if (!cookie_conn_request(&cs, c * 64))
			fail("lost %llu", (unsigned long long)c);
	check(cs.used == 2499);
	cookie_set_free(&cs);
	check(!cookie_conn_request(&cs, 3 * 64));
}

static void ids_and_text(void)
{
	json_t *j;

	check(session_id_valid("abcdefghijklmnopqrs-_9"));
	check(!session_id_valid("abcdefghijklmnopqrs-_"));
	check(!session_id_valid("abcdefghijklmnopqrs/.."));
	check(!session_id_valid(""));
	j = session_text("ok \xc3\xa9 \xed\xa0\x80 \xff");
	check_str(json_string_value(j), "ok \xc3\xa9 \\xed\\xa0\\x80 \\xff");
	json_decref(j);
}

static void cleanup(void)
{
	while (d.sessions) {
		session_request_close(&d, d.sessions, -1);
		if (!tick_until_finished())
			break;
	}
	if (cg_parent[0])
		rmdir(cg_parent);
	trust_free(d.trust);
	dp_key_free(d.key);
	dp_key_free(idp);
	config_free(d.cfg);
	th_cleanup();
}

int main(void)
{
	dp_log_init("test_session", DP_LOG_WARN);
	RUN(ids_and_text);
	RUN(cookie_connections);
	RUN(open_close_finish);
	RUN(leader_exit_ends_session);
	RUN(refused_grant_leaves_nothing);
	RUN(nested_open_refused);
	cleanup();
	UNIT_EXIT();
}
