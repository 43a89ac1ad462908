// SPDX-License-Identifier: MIT
/*
 * session: one launch of an agent for one user. Opening verifies the grant, creates the
 * session's cgroup under deputy's parent, installs its kernel policy and only then moves the
 * child `deputy run` forked for the command into it, so no process of the session ever runs
 * unenforced. `deputy run` itself stays outside: nothing ever leaves a session's cgroup, and
 * a process that could be moved out would be a way out for the agent. A session ends when
 * `deputy run` reports its command's exit (or its connection drops, or it dies) — remaining
 * processes are killed, since nothing may keep acting on the user's grant after it — or
 * when its cgroup empties; deputyd then seals the log with `session_close` and removes
 * the cgroup.
 *
 * Restart: each open session has <log_dir>/<id>.state (mode 0600: it holds the grant). A
 * deputyd that starts again re-verifies those grants and resumes sessions whose cgroups
 * still have processes; it seals the others.
 */
#include "deputyd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup.h"
#include "hostlog.h"
#include "chain.h"
#include "kernel.h"
#include "proc.h"
#include "proxyreq.h"
#include "revoke.h"
#include "session_int.h"

#define CLOSE_GRACE_SECONDS 5 /* after this, a closing session's cgroup is killed again */

bool session_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (n != DP_ID_LEN - 1)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = id[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

void session_on_gone(struct deputyd *d, void (*fn)(struct deputyd *d, struct session *s))
{
	d->session_gone = fn;
}

int session_of_pid(struct deputyd *d, pid_t pid, char out[DP_ID_LEN])
{
	const char *parent = d->cg_parent + strlen(d->cg_root);
	size_t n = strlen(parent);
	char cg[PATH_MAX];
	int rc = cgroup_of_pid(pid, cg, sizeof(cg));

	out[0] = '\0';
	if (rc)
		return rc;
	/* <parent>/<id>, or below it: a session's processes cannot make cgroups of their own,
	 * but nothing here relies on that. */
	if (strncmp(cg, parent, n) == 0 && cg[n] == '/' && strlen(cg + n + 1) >= DP_ID_LEN - 1 &&
	    (cg[n + DP_ID_LEN] == '\0' || cg[n + DP_ID_LEN] == '/'))
		snprintf(out, DP_ID_LEN, "%.*s", DP_ID_LEN - 1, cg + n + 1);
	return 0;
}

struct session *session_find(struct deputyd *d, const char *id)
{
	for (struct session *s = d->sessions; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

int session_log(struct session *s, const char *type, json_t *fields)
{
	return session_log_at(s, type, fields, NULL);
}

int session_log_at(struct session *s, const char *type, json_t *fields, const struct timespec *when)
{
	struct dp_err err;
	int rc;

	if (!fields)
		return -ENOMEM;
	if (s->dry) { /* `deputy route test`: decided, never recorded */
		json_decref(fields);
		return 0;
	}
	rc = audit_log_append_at(s->log, type, fields, when, &err);
	json_decref(fields);
	if (rc == -EFBIG) {
		/* The session ends (session_tick) rather than run on unlogged; what it did
		 * meanwhile is refused or counted as dropped in the seal. */
		if (!s->close_reason)
			pr_warn("session %s: %s; ending the session", s->id, err.msg);
		s->close_reason = "log_limit";
		s->log_dropped++;
	} else if (rc) {
		pr_warn("session %s: cannot write %s record: %s", s->id, type, err.msg);
	}
	return rc;
}

/* ---- open ------------------------------------------------------------------------------ */

int session_agent_name(const char *agent, char **out)
{
	const char *name = strncmp(agent, "agent:", 6) == 0 ? agent + 6 : agent;
	size_t n = strlen(name);

	if (n == 0 || n > 64)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.'))
			return -EINVAL;
	}
	return asprintf(out, "agent:%s", name) < 0 ? -ENOMEM : 0;
}

void session_state_path(struct deputyd *d, const char *id, char *out, size_t n)
{
	snprintf(out, n, "%s/%s.state", d->log_dir, id);
}

static int session_save_state(struct deputyd *d, struct session *s)
{
	char path[PATH_MAX];
	json_t *st =
	    json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "grant", s->grant->token, "agent", s->agent,
		      "uid", (json_int_t)s->uid, "pid", (json_int_t)s->leader, "opened",
		      (json_int_t)s->opened, "leader_start", (json_int_t)s->leader_start);
	char *text;
	int rc;

	if (!st)
		return -ENOMEM;
	text = json_dumps(st, JSON_COMPACT);
	json_decref(st);
	if (!text)
		return -ENOMEM;
	session_state_path(d, s->id, path, sizeof(path));
	rc = dp_write_file_atomic(path, text, strlen(text), 0600);
	free(text);
	return rc;
}

void session_free(struct session *s)
{
	if (!s)
		return;
	grant_free(s->grant);
	if (s->leader_pidfd >= 0)
		close(s->leader_pidfd);
	free(s->agent);
	free(s->close_text);
	audit_log_free(s->log);
	for (size_t i = 0; i < s->n_tokens; i++) {
		free(s->tokens[i].audience);
		free(s->tokens[i].scope);
		free(s->tokens[i].token);
	}
	free(s->tokens);
	table_free(s);
	cookie_set_free(&s->cookies);
	repeat_free(s);
	free(s);
}

int session_make_cgroup(struct deputyd *d, struct session *s)
{
	int rc;

	if (snprintf(s->cg_path, sizeof(s->cg_path), "%s/%s", d->cg_parent, s->id) >=
	    (int)sizeof(s->cg_path))
		return -ENAMETOOLONG;
	snprintf(s->cg_rel, sizeof(s->cg_rel), "%s", s->cg_path + strlen(d->cg_root));
	rc = cgroup_create(s->cg_path);
	if (rc)
		return rc;
	s->cg_id = cgroup_id(s->cg_path);
	return s->cg_id ? 0 : -errno;
}

/* A new session must find room for a full log: an agent that fills the disk would otherwise
 * make deputyd refuse every request of every session, since nothing is granted unlogged. */
static int session_disk_ok(struct deputyd *d, struct dp_err *err)
{
	struct statvfs vfs;
	uint64_t avail;

	if (statvfs(d->log_dir, &vfs) != 0)
		return 0; /* not knowing is no reason to refuse: writing the log will tell */
	avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (avail >= (uint64_t)d->cfg->session_log_max)
		return 0;
	dp_err_set(err,
		   "session: %s has %llu KiB free, less than session_log_max (%d KiB): not "
		   "opening a session whose log may not fit",
		   d->log_dir, (unsigned long long)(avail >> 10), d->cfg->session_log_max >> 10);
	pr_warn("%s", err->msg);
	return -ENOSPC;
}

/* Refuses a process already in a session as leader or child: its session's processes would
 * get a second cgroup (leaving the first) and their records another log. */
static int session_check_fresh(struct deputyd *d, pid_t pid, struct dp_err *err)
{
	char in[DP_ID_LEN];

	if (session_of_pid(d, pid, in) != 0) {
		dp_err_set(err, "session: pid %d is gone", (int)pid);
		return -ESRCH;
	}
	if (in[0]) {
		dp_err_set(err, "session: pid %d is in session %s: it cannot open another session",
			   (int)pid, in);
		return -EPERM;
	}
	return 0;
}

/* The child deputy run names must be its own, of its uid, not in a session; pinned by
 * *pidfd so that what /proc said stays about the process deputyd then moves. */
static int session_check_child(struct deputyd *d, const struct session_req *q, int *pidfd,
			       struct dp_err *err)
{
	uint64_t start;
	pid_t ppid;
	uid_t ruid, euid;
	int rc;

	*pidfd = proc_pidfd(q->child);
	if (*pidfd < 0 || proc_stat(q->child, &ppid, &start) != 0 ||
	    proc_uids(q->child, &ruid, &euid) != 0 || ppid != q->leader || ruid != q->uid ||
	    euid != q->uid) {
		dp_err_set(err, "session: pid %d is not a child of pid %d with its uid",
			   (int)q->child, (int)q->leader);
		return -EPERM;
	}
	rc = session_check_fresh(d, q->child, err);
	if (rc == 0 && !proc_alive(*pidfd)) {
		dp_err_set(err, "session: pid %d is gone", (int)q->child);
		rc = -ESRCH;
	}
	return rc;
}

/* Everything that may refuse a session before anything of it exists: its agent name, the
 * asking process and its child (not already in a session), the grant; then its id. */
static int session_admit(struct deputyd *d, struct session *s, const struct session_req *q,
			 int *child_pidfd, struct dp_err *err)
{
	const char *grant = q->grant;
	struct dp_err gerr;
	uint64_t start = 0;
	pid_t ppid;
	int rc;

	if (session_agent_name(q->agent, &s->agent) != 0) {
		dp_err_set(err, "agent: name must be 1-64 of [A-Za-z0-9._-]");
		return -EINVAL;
	}
	rc = session_check_fresh(d, s->leader, err);
	if (rc == 0)
		rc = session_check_child(d, q, child_pidfd, err);
	if (rc)
		return rc;
	if (proc_stat(s->leader, &ppid, &start) == 0)
		s->leader_start = start;
	rc = grant_verify(d->trust, grant, d->cfg->issuer, s->agent, s->opened, &s->grant, &gerr);
	if (rc == -EINPROGRESS) {
		/* The issuer's keys are being fetched: the request waits and is asked again. */
		dp_err_set(err, "%s", gerr.msg);
		return rc;
	}
	if (rc == 0 && revoke_match(s->grant)) {
		dp_err_set(&gerr, "grant revoked (%s %s is on deputyd's revocation list)",
			   revoke_match(s->grant),
			   strcmp(revoke_match(s->grant), "user") == 0 ? s->grant->sub
								       : s->grant->jti);
		rc = -EACCES;
	}
	if (rc) {
		pr_info("grant refused for uid %u (%s): %s", (unsigned)s->uid, s->agent, gerr.msg);
		dp_err_set(err, "grant refused: %s", gerr.msg);
		return rc;
	}
	/* An id starting with '-' would read as an option on command lines: draw again
	 * (this keeps more than 127 bits of randomness). */
	do {
		rc = dp_random_id(s->id);
	} while (rc == 0 && (s->id[0] == '-' || s->id[0] == '_'));
	if (rc != 0) {
		dp_err_set(err, "session: no randomness");
		return -EIO;
	}
	return 0;
}

/* A refused session in the host log: who asked (the kernel's uid), for which agent, and
 * what the grant claims to be (unverified: it may be forged; the reason says so). */
static void session_refused_record(const struct session_req *q, const struct dp_err *why)
{
	struct dp_jws jws = {0};
	struct dp_err jerr;
	json_t *rec =
	    json_pack("{s:I, s:o, s:o}", "uid", (json_int_t)q->uid, "agent",
		      session_text(q->agent ? q->agent : ""), "reason", session_text(why->msg));

	if (rec && q->grant && dp_jws_parse(q->grant, &jws, &jerr) == 0) {
		static const char *const claimed[][2] = {
		    {"sub", "user"}, {"iss", "grant_iss"}, {"jti", "grant_jti"}};

		for (size_t i = 0; i < DP_ARRAY_SIZE(claimed); i++) {
			const char *v =
			    json_string_value(json_object_get(jws.claims, claimed[i][0]));

			if (v && strlen(v) <= 1024)
				json_object_set_new(rec, claimed[i][1], session_text(v));
		}
	}
	dp_jws_clear(&jws);
	hostlog_write("session_refused", rec);
}

int session_open(struct deputyd *d, struct conn *c, const struct session_req *q,
		 struct session **out, struct dp_err *err)
{
	struct session *s = calloc(1, sizeof(*s));
	struct dp_err gerr;
	int child_pidfd = -1;
	json_t *jargv;
	int rc;

	if (!s) {
		dp_err_set(err, "session: out of memory");
		return -ENOMEM;
	}
	s->exit_status = -1;
	s->uid = q->uid;
	s->leader = q->leader;
	s->leader_pidfd = q->leader_pidfd >= 0 ? fcntl(q->leader_pidfd, F_DUPFD_CLOEXEC, 0) : -1;
	s->control = c;
	s->opened = dp_now();
	rc = session_disk_ok(d, err);
	if (rc == 0)
		rc = session_admit(d, s, q, &child_pidfd, err);
	if (rc) {
		session_refused_record(q, err);
		if (child_pidfd >= 0)
			close(child_pidfd);
		session_free(s);
		return rc;
	}
	rc = session_make_cgroup(d, s);
	if (rc) {
		dp_err_set(err, "session: cannot create cgroup %s: %s", s->cg_path, strerror(-rc));
		close(child_pidfd);
		session_free(s);
		return rc;
	}
	/* Policy first, then the process: nothing of the session runs unenforced. */
	rc = policy_apply(d, s);
	if (rc == 0)
		rc = audit_log_create(d->log_dir, s->id, &s->log, &gerr);
	else
		dp_err_set(&gerr, "kernel policy: %s", strerror(-rc));
	if (rc) {
		dp_err_set(err, "session: %s", gerr.msg);
		goto fail;
	}
	audit_log_set_max(s->log, (uint64_t)d->cfg->session_log_max);
	jargv = json_array();
	for (size_t i = 0; i < q->argc; i++)
		json_array_append_new(jargv, session_text(q->argv[i]));
	rc = session_log(
	    s, "session_open",
	    chain_put_prev(d, json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:s}", "user",
					s->grant->sub, "agent", s->agent, "grant_iss",
					s->grant->iss, "grant_jti", s->grant->jti, "argv", jargv,
					"uid", (json_int_t)q->uid, "pid", (json_int_t)q->leader,
					"cgroup", s->cg_rel)));
	if (rc == 0)
		rc = session_save_state(d, s);
	if (rc) {
		dp_err_set(err, "session: cannot write the audit log: %s", strerror(-rc));
		goto fail;
	}
	rc = cgroup_move(s->cg_path, q->child);
	/* If the child is gone, its pid may already name another process. */
	if (rc == 0 && !proc_alive(child_pidfd))
		rc = -ESRCH;
	if (rc) {
		dp_err_set(err, "session: cannot move pid %d into %s: %s", (int)q->child,
			   s->cg_path, strerror(-rc));
		goto fail;
	}
	close(child_pidfd);
	s->next = d->sessions;
	d->sessions = s;
	d->n_sessions++;
	pr_info("session %s opened: user %s, %s, uid %u", s->id, s->grant->sub, s->agent,
		(unsigned)q->uid);
	*out = s;
	return 0;
fail:
	session_refused_record(q, err);
	close(child_pidfd);
	if (d->kernel)
		kernel_session_remove(d->kernel, s->cg_id);
	if (s->log) {
		char path[PATH_MAX];

		unlink(audit_log_path(s->log));
		session_state_path(d, s->id, path, sizeof(path));
		unlink(path);
	}
	cgroup_kill(s->cg_path);
	cgroup_remove(s->cg_path);
	session_free(s);
	return rc ? rc : -EIO;
}

/* ---- close ----------------------------------------------------------------------------- */

void session_request_close(struct deputyd *d, struct session *s, int status)
{
	if (status >= 0)
		s->exit_status = status;
	if (s->state == SESSION_CLOSING)
		return;
	s->state = SESSION_CLOSING;
	table_invalidate(s);
	s->close_requested = dp_now();
	cgroup_kill(s->cg_path);
	/* session_tick() finishes it once the cgroup is empty: not from here, since callers
	 * (session_tick itself among them) still hold s. */
}

static void session_finish(struct deputyd *d, struct session *s)
{
	struct dp_kernel_stats ks = {0};
	char path[PATH_MAX];
	struct dp_err serr;
	json_t *counts, *why;

	/* The session's last events go in before the counts are taken and the log sealed: they
	 * may still be in the ring buffer when the timer or deputy run says the session ended. */
	if (d->kernel) {
		kernel_consume(d->kernel);
		kernel_session_stats(d->kernel, s->cg_id, &ks);
	}
	repeat_flush(s);
	counts = json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "tokens",
	    (json_int_t)s->counts.tokens, "denies", (json_int_t)s->counts.denies, "passthrough",
	    (json_int_t)s->counts.passthrough, "responses", (json_int_t)s->counts.responses,
	    "connects", (json_int_t)s->counts.connects, "blocked", (json_int_t)s->counts.blocked,
	    "unmediated", (json_int_t)s->counts.unmediated, "lost_events", (json_int_t)ks.n_lost,
	    "log_dropped", (json_int_t)s->log_dropped, "exit_status", (json_int_t)s->exit_status,
	    "proxy_unflushed", (json_int_t)proxyreq_open(s->id));
	if (d->kernel)
		kernel_session_remove(d->kernel, s->cg_id);
	chain_before_seal(d, s->log);
	why = session_end_fields(s);
	if (!counts || !why)
		pr_warn("session %s: cannot seal the audit log: out of memory", s->id);
	else if (audit_log_seal(s->log, AUDIT_SEAL_SESSION, d->key, d->cfg->issuer, counts, why,
				&serr) != 0)
		pr_warn("session %s: cannot seal the audit log: %s", s->id, serr.msg);
	else
		chain_after_seal(d, s->id, s->log);
	json_decref(counts);
	json_decref(why);
	session_state_path(d, s->id, path, sizeof(path));
	unlink(path);
	if (cgroup_remove(s->cg_path) != 0)
		pr_warn("session %s: cannot remove %s: %s", s->id, s->cg_path, strerror(errno));
	pr_info("session %s closed (%s, exit status %d)", s->id,
		s->close_reason ? s->close_reason : "exit", s->exit_status);
	if (d->session_gone)
		d->session_gone(d, s);
	for (struct session **pp = &d->sessions; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	d->n_sessions--;
	session_free(s);
}

/* How long a session's seal waits for the proxy to close the session's connections. */
#define PROXY_FLUSH_SECONDS 2

void session_tick(struct deputyd *d)
{
	struct session *s = d->sessions, *next;
	int64_t now = dp_now();

	for (; s; s = next) {
		int populated;

		next = s->next;
		repeat_flush(s);
		if (s->state == SESSION_OPEN && s->close_reason)
			session_request_close(d, s, -1); /* e.g. its log is full */
		if (s->state == SESSION_OPEN && s->leader_pidfd >= 0 &&
		    !proc_alive(s->leader_pidfd))
			session_request_close(d, s, -1); /* deputy run is gone */
		populated = cgroup_populated(s->cg_path);
		/* The agent tree ended: deputy run, outside the cgroup, is about to report the
		 * command's status; it gets CLOSE_GRACE_SECONDS to do so. */
		if (populated == 0 && s->state == SESSION_OPEN && s->leader_pidfd >= 0) {
			if (!s->emptied)
				s->emptied = now;
			if (now - s->emptied < CLOSE_GRACE_SECONDS)
				continue;
		}
		/* The agent's connections through the proxy are closed with it; the proxy's last
		 * reports on them (sent before each PROXY_CLOSE) may still be on their way. The
		 * seal waits for them, a bounded time: what is missing then is counted. */
		if ((populated == 0 || populated == -ENOENT) && proxyreq_open(s->id) > 0) {
			if (!s->proxy_wait)
				s->proxy_wait = now;
			if (now - s->proxy_wait < PROXY_FLUSH_SECONDS)
				continue;
		}
		if (populated == 0 || populated == -ENOENT) {
			session_finish(d, s);
			continue;
		}
		if (s->state == SESSION_CLOSING &&
		    now - s->close_requested >= CLOSE_GRACE_SECONDS) {
			cgroup_kill(s->cg_path);
			s->close_requested = now;
		}
	}
}

void session_close_all(struct deputyd *d)
{
	for (int i = 0; i < 50 && d->sessions; i++) {
		for (struct session *s = d->sessions; s; s = s->next)
			if (s->state != SESSION_CLOSING) {
				if (!s->close_reason)
					s->close_reason = "deputyd_stopped";
				session_request_close(d, s, -1);
			} else {
				cgroup_kill(s->cg_path);
			}
		session_tick(d);
		if (d->sessions)
			usleep(100000);
	}
	while (d->sessions) {
		pr_warn("session %s: processes survive SIGKILL; sealing anyway", d->sessions->id);
		session_finish(d, d->sessions);
	}
}
