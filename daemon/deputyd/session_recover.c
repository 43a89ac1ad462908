// SPDX-License-Identifier: MIT
/*
 * session_recover: a restarted deputyd takes over the sessions a crashed or stopped one left
 * (<log_dir>/<id>.state, mode 0600: it holds the grant): it re-verifies each grant and
 * resumes the sessions whose cgroups still have processes, sealing the others. Apart from
 * session.c, which opens and ends sessions, because it runs once, at start.
 */
#include "deputyd.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "proc.h"
#include "revoke.h"
#include "session_int.h"

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
		} else if (strcmp(type, "repeated") == 0) {
			json_t *c = json_object_get(rec, "counts");

			s->counts.connects += json_integer_value(json_object_get(c, "connects"));
			s->counts.blocked += json_integer_value(json_object_get(c, "blocked"));
			s->counts.unmediated +=
			    json_integer_value(json_object_get(c, "unmediated"));
			s->counts.denies += json_integer_value(json_object_get(c, "denies"));
		} else if (strcmp(type, "disconnect") == 0 && json_object_get(rec, "mediator") &&
			   json_is_false(json_object_get(rec, "mediated"))) {
			s->counts.unmediated++; /* mediated at connect, bytes but no request */
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
	audit_log_set_max(s->log, (uint64_t)d->cfg->session_log_max);
	s->uid = (uid_t)json_integer_value(json_object_get(st, "uid"));
	s->leader = (pid_t)json_integer_value(json_object_get(st, "pid"));
	s->opened = json_integer_value(json_object_get(st, "opened"));
	s->leader_start = (uint64_t)json_integer_value(json_object_get(st, "leader_start"));
	s->agent = strdup(json_string_value(json_object_get(st, "agent")) ?: "agent:?");
	populated = cgroup_populated(s->cg_path);
	rc = grant_verify(d->trust, json_string_value(json_object_get(st, "grant")) ?: "",
			  d->cfg->issuer, s->agent, dp_now(), &s->grant, &err);
	if (rc == 0 && revoke_match(s->grant)) {
		rc = -EACCES;
		dp_err_set(&err, "grant revoked");
	}
	if (rc)
		s->close_reason =
		    session_end_unverified(json_string_value(json_object_get(st, "grant")) ?: "");
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
	/* Watch deputy run again, if the pid still names the process that opened the session
	 * (same start time, read while the pidfd shows it alive). */
	s->leader_pidfd = proc_pidfd(s->leader);
	if (s->leader_pidfd >= 0) {
		uint64_t start;
		pid_t ppid;

		if (proc_stat(s->leader, &ppid, &start) != 0 || start != s->leader_start ||
		    !proc_alive(s->leader_pidfd)) {
			close(s->leader_pidfd);
			s->leader_pidfd = -1;
		}
	}
	/* The outage as far as the log can tell: from its last record to now. Kernel events of
	 * that time follow, with their own time; those the ring buffer could not hold are in
	 * the seal's lost_events. */
	session_log(s, "session_resume",
		    json_pack("{s:s, s:s}", "reason", "deputyd restarted", "down_since",
			      audit_log_last_ts(s->log)));
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
	/* before deputyd says it is ready: its resume records are in the logs */
	audit_log_flush_all();
	return 0;
}
