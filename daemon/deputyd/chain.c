// SPDX-License-Identifier: MIT
/*
 * chain: links the sessions' logs into one chain per host (chain.h), so that deleting or
 * cutting a whole session log is as visible as editing a line inside one. The seals form
 * the chain because they are the one record of each log that is written in a total order
 * (sessions overlap; their opens and closes interleave); session_open also carries the
 * newest seal so a session is anchored in the chain from its first line, which its own
 * signed seal then covers.
 */
#include "chain.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "deputyd.h"

static void chain_head_path(const struct deputyd *d, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", d->cfg->state_dir, CHAIN_HEAD_FILE);
}

void chain_load(struct deputyd *d)
{
	char path[PATH_MAX];
	const char *id, *hash;
	json_error_t jerr;
	json_t *head;

	d->seal_session[0] = d->seal_hash[0] = '\0';
	chain_head_path(d, path, sizeof(path));
	head = json_load_file(path, 0, &jerr);
	if (!head)
		return;
	id = json_string_value(json_object_get(head, "session"));
	hash = json_string_value(json_object_get(head, "seal"));
	if (id && hash && session_id_valid(id) && strlen(hash) == AUDIT_HASH_HEX - 1) {
		snprintf(d->seal_session, sizeof(d->seal_session), "%s", id);
		snprintf(d->seal_hash, sizeof(d->seal_hash), "%s", hash);
	} else {
		/* verify --all will say the head does not match; the chain goes on from here */
		pr_warn("%s: not a seal chain head; starting the chain again", path);
	}
	json_decref(head);
}

json_t *chain_put_prev(struct deputyd *d, json_t *fields)
{
	if (fields && d->seal_hash[0]) {
		json_object_set_new(fields, "prev_seal", json_string(d->seal_hash));
		json_object_set_new(fields, "prev_seal_session", json_string(d->seal_session));
	}
	return fields;
}

void chain_before_seal(struct deputyd *d, struct audit_log *log)
{
	audit_log_set_prev_seal(log, d->seal_session, d->seal_hash);
}

void chain_after_seal(struct deputyd *d, const char *session, const struct audit_log *log)
{
	char path[PATH_MAX], *text;
	json_t *head;
	int rc = -ENOMEM;

	snprintf(d->seal_session, sizeof(d->seal_session), "%s", session);
	snprintf(d->seal_hash, sizeof(d->seal_hash), "%s", audit_log_last_hash(log));
	head = json_pack("{s:s, s:s}", "session", d->seal_session, "seal", d->seal_hash);
	text = head ? json_dumps(head, JSON_COMPACT) : NULL;
	json_decref(head);
	chain_head_path(d, path, sizeof(path));
	if (text)
		rc = dp_write_file_atomic(path, text, strlen(text), 0600);
	free(text);
	if (rc)
		pr_warn("%s: cannot record the newest seal: %s", path, strerror(-rc));
}
