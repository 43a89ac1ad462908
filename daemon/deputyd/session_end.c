// SPDX-License-Identifier: MIT
/*
 * session_end: deputyd ending sessions on its own account, with the reason the seal will
 * carry: killed (`deputy kill`), revoked (`deputy revoke`, or a grant that no longer
 * verifies when a restarted deputyd resumes), grant_expired (`"on_grant_expiry": "end"`).
 * The kernel policy goes to block-all before anything is killed, so nothing the session's
 * processes try between the decision and their death reaches the network; and the session
 * is CLOSING from the same event-loop turn, so decide() refuses its requests (deputyd is
 * single-threaded: no DECIDE can slip between the decision and the state change).
 */
#include "deputyd.h"

#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "hostlog.h"
#include "kernel.h"

static void session_end_block(struct deputyd *d, struct session *s)
{
	int rc;

	s->blocked = true;
	if (!d->kernel)
		return;
	/* enforce even under "enforce": false: nothing of an ended session is allowed */
	rc = kernel_session_set(d->kernel, s->cg_id, true, NULL, 0);
	if (rc)
		pr_warn("session %s: cannot set the kernel policy to block-all: %s; killing anyway",
			s->id, strerror(-rc));
}

void session_end(struct deputyd *d, struct session *s, const struct session_end_why *why)
{
	if (s->state != SESSION_OPEN) {
		/* already ending: a kill still kills now rather than at the next grace period */
		if (why->host_type)
			hostlog_write(why->host_type, why->host_fields);
		cgroup_kill(s->cg_path);
		return;
	}
	session_end_block(d, s);
	if (why->host_type)
		hostlog_write(why->host_type, why->host_fields);
	if (!s->close_reason)
		s->close_reason = why->reason;
	s->close_by_set = why->by_set;
	s->close_by = why->by;
	free(s->close_text);
	s->close_text = why->text && *why->text ? strdup(why->text) : NULL;
	pr_info("session %s: ending it: %s%s%s", s->id, why->reason, s->close_text ? ": " : "",
		s->close_text ? s->close_text : "");
	session_request_close(d, s, -1);
}

json_t *session_end_revoked(struct deputyd *d, const char *kind, const char *value,
			    const struct session_end_why *why)
{
	json_t *ended = json_array();

	for (struct session *s = d->sessions; s; s = s->next) {
		const char *v = strcmp(kind, "user") == 0 ? s->grant->sub : s->grant->jti;

		if (s->state != SESSION_OPEN || !v || strcmp(v, value) != 0)
			continue;
		session_end(d, s, why);
		json_array_append_new(ended, json_string(s->id));
	}
	return ended;
}

void session_end_tick(struct deputyd *d)
{
	int64_t now = dp_now();

	if (d->cfg->on_grant_expiry != DP_EXPIRY_END)
		return;
	for (struct session *s = d->sessions; s; s = s->next) {
		struct session_end_why expired = {.reason = "grant_expired",
						  .host_type = "grant_expired"};

		if (s->state != SESSION_OPEN || s->grant->exp > now)
			continue;
		expired.host_fields = json_pack("{s:s, s:o, s:s, s:I}", "sid", s->id, "user",
						session_text(s->grant->sub), "grant_jti",
						s->grant->jti, "exp", (json_int_t)s->grant->exp);
		session_end(d, s, &expired);
	}
}

json_t *session_end_fields(const struct session *s)
{
	json_t *f = json_pack("{s:s}", "reason", s->close_reason ? s->close_reason : "exit");

	if (f && s->close_by_set)
		json_object_set_new(f, "by", json_integer((json_int_t)s->close_by));
	if (f && s->close_text)
		json_object_set_new(f, "text", session_text(s->close_text));
	return f;
}

const char *session_end_unverified(const char *token)
{
	struct dp_jws jws = {0};
	struct dp_err err;
	json_t *exp;
	bool expired = false;

	if (dp_jws_parse(token, &jws, &err) == 0) {
		exp = json_object_get(jws.claims, "exp");
		expired = json_is_integer(exp) && json_integer_value(exp) <= dp_now();
	}
	dp_jws_clear(&jws);
	return expired ? "grant_expired" : "revoked";
}
