// SPDX-License-Identifier: MIT
/*
 * hostlog: deputyd's host log (hostlog.h), a chain written by audit_log.c like any session
 * log. One per deputyd, so module state rather than a handle passed around: the modules
 * that notice host events (session, reload, kernel, export) write to it without knowing
 * where it lives.
 */
#include "hostlog.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_log.h"

static struct audit_log *hl;
static char hl_path[PATH_MAX];

int hostlog_open(const char *state_dir, bool *was_sealed, struct dp_err *err)
{
	struct stat st;
	int rc;

	hostlog_close();
	snprintf(hl_path, sizeof(hl_path), "%s/%s.jsonl", state_dir, HOSTLOG_NAME);
	*was_sealed = true;
	if (stat(hl_path, &st) == 0 && st.st_size > 0) {
		rc = audit_log_reopen(state_dir, HOSTLOG_NAME, &hl, err);
		if (rc == 0)
			*was_sealed = strcmp(audit_log_last_type(hl), AUDIT_SEAL_HOST) == 0;
	} else {
		if (stat(hl_path, &st) == 0)
			unlink(hl_path); /* empty: a crash before its first record */
		rc = audit_log_create(state_dir, HOSTLOG_NAME, &hl, err);
	}
	if (rc)
		return rc;
	/* Root only: it names users and their refused grants. */
	chmod(hl_path, 0600);
	audit_log_no_export(hl);
	return 0;
}

void hostlog_write(const char *type, json_t *fields)
{
	struct dp_err err;

	if (!hl) {
		json_decref(fields);
		return;
	}
	/* Written at once, not at the end of the loop's turn as session records are: host
	 * records are rare, and some must be on disk before what they announce happens (a
	 * `kill` before cgroup.kill; an outage before the loop starts). */
	if (!fields || audit_log_append(hl, type, fields, &err) != 0 ||
	    audit_log_flush(hl, &err) != 0)
		pr_warn("host log: cannot write %s record: %s", type,
			fields ? err.msg : "out of memory");
	json_decref(fields);
}

void hostlog_seal(const struct dp_key *key, const char *issuer, const json_t *counts)
{
	struct dp_err err;

	if (!hl)
		return;
	if (audit_log_seal(hl, AUDIT_SEAL_HOST, key, issuer, counts, NULL, &err) != 0)
		pr_warn("host log: cannot seal: %s", err.msg);
	hostlog_close();
}

void hostlog_close(void)
{
	audit_log_free(hl);
	hl = NULL;
}

const char *hostlog_last_ts(void)
{
	return hl ? audit_log_last_ts(hl) : "";
}

const char *hostlog_path(void)
{
	return hl_path;
}
