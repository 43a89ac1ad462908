// SPDX-License-Identifier: MIT
/*
 * session: one launch of an agent for one user. Opening verifies the grant, creates the
 * session's cgroup under deputy's parent, installs its kernel policy and only then moves
 * `deputy run` into it, so no process of the session ever runs unenforced. A session ends
 * when `deputy run` reports its command's exit (or its connection drops) — remaining
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
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup.h"
#include "kernel.h"

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

struct session *session_find(struct deputyd *d, const char *id)
{
	for (struct session *s = d->sessions; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

int session_log(struct session *s, const char *type, json_t *fields)
{
	struct dp_err err;
	int rc;

	if (!fields)
		return -ENOMEM;
	rc = audit_log_append(s->log, type, fields, &err);
	json_decref(fields);
	if (rc)
		pr_warn("session %s: cannot write %s record: %s", s->id, type, err.msg);
	return rc;
}

/* The length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	size_t len;
	uint32_t cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4, cp = p[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

json_t *session_text(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), o = 0;
	json_t *j = json_stringn(s, n);
	char *out;

	if (j)
		return j;
	out = malloc(n * 4 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(p + i, n - i);

		if (k == 0) {
			o += (size_t)sprintf(out + o, "\\x%02x", p[i]);
			i++;
			continue;
		}
		memcpy(out + o, p + i, k);
		o += k;
		i += k;
	}
	j = json_stringn(out, o);
	free(out);
	return j;
}

/* ---- open ------------------------------------------------------------------------------ */

static int agent_normalize(const char *agent, char **out)
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

static void session_state_path(struct deputyd *d, const char *id, char *out, size_t n)
{
	snprintf(out, n, "%s/%s.state", d->log_dir, id);
}

static int session_save_state(struct deputyd *d, struct session *s)
{
	char path[PATH_MAX];
	json_t *st = json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "grant", s->grant->token, "agent",
			       s->agent, "uid", (json_int_t)s->uid, "pid", (json_int_t)s->leader,
			       "opened", (json_int_t)s->opened, "leader_cgroup", s->leader_cg);
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

static void session_free(struct session *s)
{
	if (!s)
		return;
	grant_free(s->grant);
	if (s->leader_pidfd >= 0)
		close(s->leader_pidfd);
	free(s->agent);
	audit_log_free(s->log);
	for (size_t i = 0; i < s->n_tokens; i++) {
		free(s->tokens[i].audience);
		free(s->tokens[i].scope);
		free(s->tokens[i].token);
	}
	free(s->tokens);
	cookie_set_free(&s->cookies);
	free(s);
}

static int session_make_cgroup(struct deputyd *d, struct session *s)
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

/* Everything that may refuse a session before anything of it exists: its agent name, the
 * asking process (not already in a session), the grant; then its id. */
static int session_admit(struct deputyd *d, struct session *s, const char *grant, const char *agent,
			 struct dp_err *err)
{
	struct dp_err gerr;
	int rc;

	if (agent_normalize(agent, &s->agent) != 0) {
		dp_err_set(err, "agent: name must be 1-64 of [A-Za-z0-9._-]");
		return -EINVAL;
	}
	/* A process of a session that opened another would leave its cgroup: it would outlive
	 * its session and its records would go to another log. */
	if (cgroup_of_pid(s->leader, s->leader_cg, sizeof(s->leader_cg)) == 0) {
		const char *parent = d->cg_parent + strlen(d->cg_root);
		size_t n = strlen(parent);

		if (strncmp(s->leader_cg, parent, n) == 0 && s->leader_cg[n] == '/') {
			dp_err_set(err,
				   "session: pid %d is in session %.22s: it cannot open another "
				   "session",
				   (int)s->leader, s->leader_cg + n + 1);
			return -EPERM;
		}
	}
	rc = grant_verify(d->trust, grant, d->cfg->issuer, s->agent, s->opened, &s->grant, &gerr);
	if (rc == -EINPROGRESS) {
		/* The issuer's keys are being fetched: the request waits and is asked again. */
		dp_err_set(err, "%s", gerr.msg);
		return rc;
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

int session_open(struct deputyd *d, struct conn *c, pid_t pid, uid_t uid, int pidfd,
		 const char *grant, const char *agent, char *const *argv, size_t argc,
		 struct session **out, struct dp_err *err)
{
	struct session *s = calloc(1, sizeof(*s));
	struct dp_err gerr;
	json_t *jargv;
	int rc;

	if (!s) {
		dp_err_set(err, "session: out of memory");
		return -ENOMEM;
	}
	s->exit_status = -1;
	s->uid = uid;
	s->leader = pid;
	s->leader_pidfd = pidfd >= 0 ? fcntl(pidfd, F_DUPFD_CLOEXEC, 0) : -1;
	s->control = c;
	s->opened = dp_now();
	rc = session_admit(d, s, grant, agent, err);
	if (rc) {
		session_free(s);
		return rc;
	}
	rc = session_make_cgroup(d, s);
	if (rc) {
		dp_err_set(err, "session: cannot create cgroup %s: %s", s->cg_path, strerror(-rc));
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
	jargv = json_array();
	for (size_t i = 0; i < argc; i++)
		json_array_append_new(jargv, session_text(argv[i]));
	rc = session_log(s, "session_open",
			 json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:s}", "user",
				   s->grant->sub, "agent", s->agent, "grant_iss", s->grant->iss,
				   "grant_jti", s->grant->jti, "argv", jargv, "uid",
				   (json_int_t)uid, "pid", (json_int_t)pid, "cgroup", s->cg_rel));
	if (cgroup_of_pid(pid, s->leader_cg, sizeof(s->leader_cg)) != 0)
		s->leader_cg[0] = '\0';
	if (rc == 0)
		rc = session_save_state(d, s);
	if (rc) {
		dp_err_set(err, "session: cannot write the audit log: %s", strerror(-rc));
		goto fail;
	}
	rc = cgroup_move(s->cg_path, pid);
	/* If the process that asked is gone, its pid may already name another process. */
	if (rc == 0 && pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) != 0)
		rc = -ESRCH;
	if (rc) {
		dp_err_set(err, "session: cannot move pid %d into %s: %s", (int)pid, s->cg_path,
			   strerror(-rc));
		goto fail;
	}
	s->next = d->sessions;
	d->sessions = s;
	d->n_sessions++;
	pr_info("session %s opened: user %s, %s, uid %u", s->id, s->grant->sub, s->agent,
		(unsigned)uid);
	*out = s;
	return 0;
fail:
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
	s->close_requested = dp_now();
	/* deputy run itself is in the session: it asked to close after its command ended, so
	 * it goes back where it came from before the rest of the session is killed. */
	if (status >= 0 && s->control && s->leader_cg[0]) {
		char back[PATH_MAX * 2];

		snprintf(back, sizeof(back), "%s%s", d->cg_root, s->leader_cg);
		if (cgroup_move(back, s->leader) != 0)
			pr_debug("session %s: cannot move pid %d back to %s", s->id, (int)s->leader,
				 back);
	}
	cgroup_kill(s->cg_path);
	/* session_tick() finishes it once the cgroup is empty: not from here, since callers
	 * (session_tick itself among them) still hold s. */
}

static void session_finish(struct deputyd *d, struct session *s)
{
	char path[PATH_MAX];
	struct dp_err serr;
	json_t *counts;
	uint64_t lost;

	/* The session's last events go in before the counts are taken and the log sealed: they
	 * may still be in the ring buffer when the timer or deputy run says the session ended. */
	if (d->kernel)
		kernel_consume(d->kernel);
	lost = d->kernel ? kernel_lost_events(d->kernel) : 0;
	counts = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "tokens",
			   (json_int_t)s->counts.tokens, "denies", (json_int_t)s->counts.denies,
			   "passthrough", (json_int_t)s->counts.passthrough, "responses",
			   (json_int_t)s->counts.responses, "connects",
			   (json_int_t)s->counts.connects, "blocked", (json_int_t)s->counts.blocked,
			   "unmediated", (json_int_t)s->counts.unmediated, "lost_events",
			   (json_int_t)lost, "exit_status", (json_int_t)s->exit_status);
	if (d->kernel)
		kernel_session_remove(d->kernel, s->cg_id);
	if (!counts)
		pr_warn("session %s: cannot seal the audit log: out of memory", s->id);
	else if (audit_log_seal(s->log, d->key, d->cfg->issuer, counts, &serr) != 0)
		pr_warn("session %s: cannot seal the audit log: %s", s->id, serr.msg);
	json_decref(counts);
	session_state_path(d, s->id, path, sizeof(path));
	unlink(path);
	if (cgroup_remove(s->cg_path) != 0)
		pr_warn("session %s: cannot remove %s: %s", s->id, s->cg_path, strerror(errno));
	pr_info("session %s closed (exit status %d)", s->id, s->exit_status);
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

void session_tick(struct deputyd *d)
{
	struct session *s = d->sessions, *next;
	int64_t now = dp_now();

	for (; s; s = next) {
		int populated;

		next = s->next;
		if (s->state == SESSION_OPEN && s->leader_pidfd >= 0 &&
		    syscall(SYS_pidfd_send_signal, s->leader_pidfd, 0, NULL, 0) != 0)
			session_request_close(d, s, -1); /* deputy run is gone */
		populated = cgroup_populated(s->cg_path);
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
			if (s->state != SESSION_CLOSING)
				session_request_close(d, s, -1);
			else
				cgroup_kill(s->cg_path);
		session_tick(d);
		if (d->sessions)
			usleep(100000);
	}
	while (d->sessions) {
		pr_warn("session %s: processes survive SIGKILL; sealing anyway", d->sessions->id);
		session_finish(d, d->sessions);
	}
}

/* ---- restart ---------------------------------------------------------------------------- */

/* The counts of a resumed session start from what its log already holds, counted by the
 * rules the live counters follow (decide.c, handlers.c, kevent.c), so the seal covers the
 * whole session and not only the part after the restart. */
static void session_recount(struct session *s)
{
	char *text = NULL, *line, *nl;

	if (dp_read_file(audit_log_path(s->log), 256u << 20, &text, NULL) != 0)
		return;
	for (line = text; *line; line = nl + 1) {
		json_t *rec;
		const char *type, *family;

		nl = strchr(line, '\n');
		if (!nl)
			break;
		rec = json_loadb(line, (size_t)(nl - line), 0, NULL);
		type = json_string_value(json_object_get(rec, "type")) ?: "";
		family = json_string_value(json_object_get(rec, "family")) ?: "";
		if (strcmp(type, "token") == 0) {
			s->counts.tokens++;
		} else if (strcmp(type, "passthrough") == 0) {
			s->counts.passthrough++;
		} else if (strcmp(type, "response") == 0) {
			s->counts.responses++;
		} else if (strcmp(type, "deny") == 0) {
			const char *layer = json_string_value(json_object_get(rec, "layer")) ?: "";

			s->counts.denies++;
			/* unrouted "monitor": logged as a deny, let through as a passthrough */
			if (strcmp(layer, "daemon") == 0 &&
			    json_is_false(json_object_get(rec, "enforced")))
				s->counts.passthrough++;
		} else if (strcmp(type, "connect") == 0 &&
			   (strcmp(family, "inet") == 0 || strcmp(family, "inet6") == 0)) {
			const char *verdict =
			    json_string_value(json_object_get(rec, "verdict")) ?: "";

			s->counts.connects++;
			if (strcmp(verdict, "block") == 0)
				s->counts.blocked++;
			if (!json_is_true(json_object_get(rec, "mediated")))
				s->counts.unmediated++;
		}
		json_decref(rec);
	}
	free(text);
}

static void session_recover_one(struct deputyd *d, const char *id)
{
	char path[PATH_MAX];
	struct session *s = calloc(1, sizeof(*s));
	struct dp_err err;
	json_t *st = NULL;
	char *text = NULL;
	int rc, populated;

	if (!s)
		return;
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->exit_status = -1;
	s->leader_pidfd = -1;
	session_state_path(d, id, path, sizeof(path));
	rc = dp_read_file(path, 1 << 20, &text, NULL);
	if (rc == 0)
		st = json_loads(text, 0, NULL);
	free(text);
	if (!json_is_object(st) || session_make_cgroup(d, s) != 0 ||
	    audit_log_reopen(d->log_dir, id, &s->log, &err) != 0) {
		pr_warn("session %s: cannot recover its state; leaving its files", id);
		json_decref(st);
		session_free(s);
		return;
	}
	s->uid = (uid_t)json_integer_value(json_object_get(st, "uid"));
	s->leader = (pid_t)json_integer_value(json_object_get(st, "pid"));
	s->opened = json_integer_value(json_object_get(st, "opened"));
	snprintf(s->leader_cg, sizeof(s->leader_cg), "%s",
		 json_string_value(json_object_get(st, "leader_cgroup")) ?: "");
	s->agent = strdup(json_string_value(json_object_get(st, "agent")) ?: "agent:?");
	populated = cgroup_populated(s->cg_path);
	rc = grant_verify(d->trust, json_string_value(json_object_get(st, "grant")) ?: "",
			  d->cfg->issuer, s->agent, dp_now(), &s->grant, &err);
	json_decref(st);
	s->next = d->sessions;
	d->sessions = s;
	d->n_sessions++;
	if (rc != 0 || populated != 1) {
		const char *why = rc ? err.msg : "its processes ended while deputyd was down";

		pr_info("session %s: not resumed: %s", id, why);
		session_log(s, "deny", json_pack("{s:s, s:s}", "layer", "daemon", "reason", why));
		s->state = SESSION_CLOSING;
		s->close_requested = dp_now();
		cgroup_kill(s->cg_path);
		if (!s->grant)
			s->grant = calloc(1, sizeof(*s->grant));
		return;
	}
	session_recount(s);
	if (policy_apply(d, s) != 0)
		pr_warn("session %s: cannot reinstall kernel policy", id);
	/* Watch deputy run again, if the pid still names a process of this session. */
	s->leader_pidfd = (int)syscall(SYS_pidfd_open, s->leader, 0);
	if (s->leader_pidfd >= 0) {
		char cg[PATH_MAX];
		size_t n = strlen(s->cg_rel);

		if (cgroup_of_pid(s->leader, cg, sizeof(cg)) != 0 ||
		    strncmp(cg, s->cg_rel, n) != 0 || (cg[n] != '\0' && cg[n] != '/')) {
			close(s->leader_pidfd);
			s->leader_pidfd = -1;
		}
	}
	session_log(s, "session_resume", json_pack("{s:s}", "reason", "deputyd restarted"));
	pr_info("session %s resumed (user %s)", id, s->grant->sub);
}

int session_recover(struct deputyd *d)
{
	DIR *dir = opendir(d->log_dir);
	struct dirent *de;

	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		char id[DP_ID_LEN + 8];
		size_t n = strlen(de->d_name);

		if (n != DP_ID_LEN - 1 + 6 || strcmp(de->d_name + DP_ID_LEN - 1, ".state") != 0)
			continue;
		memcpy(id, de->d_name, DP_ID_LEN - 1);
		id[DP_ID_LEN - 1] = '\0';
		if (session_id_valid(id) && !session_find(d, id))
			session_recover_one(d, id);
	}
	closedir(dir);
	return 0;
}
