// SPDX-License-Identifier: MIT
/*
 * handlers: one function per request type of the wire protocol, each doing only its own
 * job; the checks every request shares are the dispatcher's (dispatch.c).
 */
#include "handlers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "peer.h"
#include "proc.h"
#include "proxyd.h"

/* Replies that carry a token, a session list or a log chunk: one thread, so one buffer,
 * and 32 KiB is better off the stack. */
static uint8_t big_reply[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];

static json_t *field_text(const struct wire_fields *f, uint16_t tag)
{
	return session_text(f->str[tag] ? f->str[tag] : "");
}

int handle_session_open(struct deputyd *d, struct conn *c, const struct handler_req *r,
			struct dp_err *err)
{
	const struct wire_fields *f = r->f;
	struct session_req q = {.leader = c->pid,
				.uid = c->uid,
				.leader_pidfd = c->pidfd,
				.child = (pid_t)f->u64[DP_T_PID],
				.grant = f->str[DP_T_GRANT],
				.agent = f->str[DP_T_AGENT],
				.argv = f->argv,
				.argc = f->argc};
	uint8_t buf[4096];
	struct dp_msg m;
	struct session *s;
	const char *ca;
	int rc;

	if (c->controls) {
		dp_err_set(err, "session: this connection already opened one");
		return -EBUSY;
	}
	if (f->u64[DP_T_PID] == 0 || f->u64[DP_T_PID] > INT32_MAX) {
		dp_err_set(err, "session: bad pid");
		return -EINVAL;
	}
	rc = session_open(d, c, &q, &s, err);
	if (rc)
		return rc;
	/* deputy run is not in its session: its connection controls it, but is bound to none. */
	c->controls = s;
	/* The proxy's CA for this session: deputy run makes the agent trust it. */
	ca = proxyd_session_ca(s, err);
	if (!ca) {
		session_request_close(d, s, -1);
		return -ENOMEM;
	}
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_SESSION_OPENED, r->h->seq, 0);
	dp_msg_put_str(&m, DP_T_SESSION, s->id);
	dp_msg_put_str(&m, DP_T_USER, s->grant->sub);
	dp_msg_put_str(&m, DP_T_CA, ca);
	conn_send(d, c, &m);
	return 0;
}

int handle_session_close(struct deputyd *d, struct conn *c, const struct handler_req *r,
			 struct dp_err *err)
{
	const struct wire_fields *f = r->f;
	const char *id = f->str[DP_T_SESSION];
	struct session *s = c->controls;

	/* After a deputyd restart deputy run's first connection is gone: its leader process
	 * may close it from a new one. Same pid, both pidfds alive: the same process (the
	 * leader's was checked by start time when the session was resumed). */
	if (!s) {
		s = session_find(d, id);
		if (s &&
		    !(c->pid == s->leader && !s->control && !c->controls && s->leader_pidfd >= 0 &&
		      proc_alive(s->leader_pidfd) && proc_alive(c->pidfd)))
			s = NULL;
		if (s) {
			s->control = c;
			c->controls = s;
		}
	}
	/* Only deputy run ends its session: every frame here was sent by the process that
	 * connected (conn.c), and that must be the leader. */
	if (!s || strcmp(id, s->id) != 0 || c->pid != s->leader) {
		dp_err_set(err, "session: only the deputy run that opened it may close it");
		return -EPERM;
	}
	/* Close first: deputy run is moved out of the session's cgroup before the rest is
	 * killed, so nothing it does after this reply (e.g. a sanitizer's exit-time helper
	 * process) can be caught by the kill. */
	session_request_close(d, s, f->has[DP_T_STATUS] ? (int)f->u64[DP_T_STATUS] : -1);
	return 0;
}

int handle_decide(struct deputyd *d, struct conn *c, const struct handler_req *r,
		  struct dp_err *err)
{
	const struct wire_fields *f = r->f;
	struct session *s = r->s;
	struct decide_req q;
	struct decide_res res;
	struct dp_msg m;

	q.scheme = f->str[DP_T_SCHEME];
	q.host = f->str[DP_T_HOST];
	q.method = f->str[DP_T_METHOD];
	q.target = f->str[DP_T_TARGET];
	q.port = f->u64[DP_T_PORT] <= 65535 ? (int)f->u64[DP_T_PORT] : -1;
	q.cookie = f->u64[DP_T_COOKIE];
	q.sni = f->str[DP_T_SNI];
	q.peer_family = 0;
	if (f->has[DP_T_ADDR] &&
	    ((f->u64[DP_T_FAMILY] == AF_INET && f->rawlen[DP_T_ADDR] == 4) ||
	     (f->u64[DP_T_FAMILY] == AF_INET6 && f->rawlen[DP_T_ADDR] == 16))) {
		q.peer_family = (int)f->u64[DP_T_FAMILY];
		memset(q.peer_addr, 0, sizeof(q.peer_addr));
		memcpy(q.peer_addr, f->raw[DP_T_ADDR], f->rawlen[DP_T_ADDR]);
	}
	q.mcp_method = f->str[DP_T_MCP_METHOD];
	q.mcp_name = f->str[DP_T_MCP_NAME];
	q.body_sha256 = f->str[DP_T_BODY_SHA256];
	q.pid = c->pid;
	q.comm = c->comm;
	q.mediator = NULL;
	kevent_request(d, s, q.cookie);
	decide(d, s, &q, &res);
	dp_msg_init(&m, big_reply, sizeof(big_reply), DP_MSG_DECISION, r->h->seq, 0);
	decide_put_reply(&m, &res, s);
	/* The shim may fetch the session's table (table.c) and ask less from now on. */
	if (d->cfg->token_binding == DP_BINDING_SESSION)
		dp_msg_put_u64(&m, DP_T_GEN, s->table_gen);
	free(res.token);
	conn_send(d, c, &m);
	return 0;
}

int handle_response(struct deputyd *d, struct conn *c, const struct handler_req *r,
		    struct dp_err *err)
{
	const struct wire_fields *f = r->f;

	if (f->u64[DP_T_STATUS] > 999) {
		dp_err_set(err, "response: bad status");
		return -EINVAL;
	}
	r->s->counts.responses++;
	session_log(r->s, "response",
		    json_pack("{s:o, s:I}", "jti", field_text(f, DP_T_JTI), "status",
			      (json_int_t)f->u64[DP_T_STATUS]));
	return 0;
}

/* What a shim's deny report may put in the log: a frame holds up to 32 KiB of the agent's
 * choosing, the log keeps a bounded prefix of each field. */
#define DENY_REPORT_FIELD_MAX 512

static json_t *field_text_max(const struct wire_fields *f, uint16_t tag, bool *cut)
{
	const char *v = f->str[tag] ? f->str[tag] : "";
	size_t n = strnlen(v, DENY_REPORT_FIELD_MAX + 1);
	char buf[DENY_REPORT_FIELD_MAX + 1];

	if (n <= DENY_REPORT_FIELD_MAX)
		return session_text(v);
	*cut = true;
	memcpy(buf, v, DENY_REPORT_FIELD_MAX);
	buf[DENY_REPORT_FIELD_MAX] = '\0';
	return session_text(buf); /* a UTF-8 sequence cut in two is written as \xNN */
}

int handle_deny_report(struct deputyd *d, struct conn *c, const struct handler_req *r,
		       struct dp_err *err)
{
	static const struct session_counts delta = {.denies = 1};
	const struct wire_fields *f = r->f;
	bool cut = false;
	json_t *rec;
	char *key;

	r->s->counts.denies++;
	rec = json_pack("{s:s, s:o, s:o, s:o, s:o, s:I, s:o}", "layer", "shim", "reason",
			field_text_max(f, DP_T_REASON, &cut), "host",
			field_text_max(f, DP_T_HOST, &cut), "method",
			field_text_max(f, DP_T_METHOD, &cut), "target",
			field_text_max(f, DP_T_TARGET, &cut), "pid", (json_int_t)c->pid, "comm",
			session_text(c->comm));
	if (rec && cut)
		json_object_set_new(rec, "truncated", json_true());
	/* The same report again (a loop in the agent) is counted, not written. */
	key = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	if (key && repeat_event(r->s, key, &delta, NULL)) {
		json_decref(rec);
		free(key);
		return 0;
	}
	free(key);
	session_log(r->s, "deny", rec);
	return 0;
}

/* Sessions visible to this peer: a process in a session sees that session only (the same
 * user's other sessions run other agents); outside sessions, root sees all, others their
 * own uid's. home is the peer's session, read for this request. */
static bool may_see(const struct conn *c, const char *home, const char *id, uid_t owner)
{
	if (home[0])
		return strcmp(home, id) == 0;
	return c->uid == 0 || c->uid == owner;
}

/* Closed before open, then oldest first: what does not fit in one frame is cut from the
 * front, so open sessions and the newest closed ones are listed. */
static int session_entry_cmp(const void *a, const void *b)
{
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	int ox = strcmp(json_string_value(json_object_get(x, "state")) ?: "", "open") == 0;
	int oy = strcmp(json_string_value(json_object_get(y, "state")) ?: "", "open") == 0;

	if (ox != oy)
		return ox - oy;
	return strcmp(json_string_value(json_object_get(x, "opened")) ?: "",
		      json_string_value(json_object_get(y, "opened")) ?: "");
}

static const char *entry_str(json_t *e, const char *k)
{
	return json_string_value(json_object_get(e, k)) ?: "";
}

/* The SESSIONS request's filters, applied here rather than in the CLI: the reply holds at
 * most one frame, so filtering after the cut would lose older matches. A session matches
 * SINCE..UNTIL when it ran at some time in that window (RFC 3339 UTC strings of one form
 * compare as times); one not sealed counts as running until now. */
static bool sessions_wanted(const struct wire_fields *f, json_t *e)
{
	const char *closed = entry_str(e, "closed"), *agent = f->str[DP_T_AGENT];

	if (f->str[DP_T_USER] && strcmp(f->str[DP_T_USER], entry_str(e, "user")) != 0)
		return false;
	if (agent && strcmp(agent, entry_str(e, "agent")) != 0 &&
	    !(strncmp(entry_str(e, "agent"), "agent:", 6) == 0 &&
	      strcmp(agent, entry_str(e, "agent") + 6) == 0))
		return false;
	if (f->str[DP_T_SESSION] &&
	    strncmp(f->str[DP_T_SESSION], entry_str(e, "session"), strlen(f->str[DP_T_SESSION])))
		return false;
	if (f->u64[DP_T_STATUS] == 1 && strcmp(entry_str(e, "state"), "open") != 0)
		return false;
	if (f->str[DP_T_UNTIL] && strcmp(entry_str(e, "opened"), f->str[DP_T_UNTIL]) > 0)
		return false;
	if (f->str[DP_T_SINCE] && closed[0] && strcmp(closed, f->str[DP_T_SINCE]) < 0)
		return false;
	return true;
}

int handle_sessions(struct deputyd *d, struct conn *c, const struct handler_req *r,
		    struct dp_err *err)
{
	json_t *list = session_list_json(d);
	json_t *out = json_array(), *e, **v = NULL;
	struct dp_msg m;
	size_t i, n = 0, from, total = 2;
	char *text = NULL, home[DP_ID_LEN];

	if (peer_home(d, c->pid, c->pidfd, home) != 0) {
		json_decref(list);
		json_decref(out);
		dp_err_set(err, "sessions: cannot tell where the asking process is");
		return -ESRCH;
	}
	if (list && out)
		v = calloc(json_array_size(list) + 1, sizeof(*v));
	json_array_foreach(list, i, e)
	{
		if (v &&
		    may_see(c, home, json_string_value(json_object_get(e, "session")) ?: "",
			    (uid_t)json_integer_value(json_object_get(e, "uid"))) &&
		    sessions_wanted(r->f, e))
			v[n++] = e;
	}
	if (v) {
		qsort(v, n, sizeof(*v), session_entry_cmp);
		/* Sizes one by one, newest first: dumping the whole list again after each cut
		 * made this quadratic in the number of logs. */
		for (from = n; from > 0; from--) {
			char *one = json_dumps(v[from - 1], JSON_COMPACT);
			size_t len = one ? strlen(one) + 1 : SIZE_MAX / 2;

			free(one);
			if (total + len >= DP_PROTO_MAX_PAYLOAD - 64)
				break;
			total += len;
		}
		for (i = from; i < n; i++)
			json_array_append(out, v[i]);
		text = json_dumps(out, JSON_COMPACT);
	}
	free(v);
	json_decref(list);
	json_decref(out);
	if (!text) {
		dp_err_set(err, "sessions: out of memory");
		return -ENOMEM;
	}
	dp_msg_init(&m, big_reply, sizeof(big_reply), DP_MSG_DATA_REPLY, r->h->seq, 0);
	dp_msg_put_str(&m, DP_T_DATA, text);
	free(text);
	conn_send(d, c, &m);
	return 0;
}

int handle_log_read(struct deputyd *d, struct conn *c, const struct handler_req *r,
		    struct dp_err *err)
{
	static char chunk[DP_PROTO_MAX_PAYLOAD - 256];
	const char *id = r->f->str[DP_T_SESSION];
	uint64_t off = r->f->u64[DP_T_OFFSET];
	char home[DP_ID_LEN];
	struct dp_msg m;
	uid_t owner;
	bool open;
	ssize_t n;

	if (r->f->has[DP_T_HOST_LOG])
		return handle_host_log_read(d, c, r, err);
	if (!id || session_log_owner(d, id, &owner, &open) != 0 ||
	    peer_home(d, c->pid, c->pidfd, home) != 0 || !may_see(c, home, id, owner)) {
		/* The same answer for "absent" and "not yours": ids are not disclosed. */
		dp_err_set(err, "no such session");
		return -ENOENT;
	}
	n = session_log_read(d, id, off, chunk, sizeof(chunk));
	if (n < 0) {
		dp_err_set(err, "logs: cannot read the session log");
		return (int)n;
	}
	dp_msg_init(&m, big_reply, sizeof(big_reply), DP_MSG_LOG_DATA, r->h->seq, 0);
	dp_msg_put(&m, DP_T_DATA, chunk, (size_t)n);
	dp_msg_put_u64(&m, DP_T_OFFSET, off + (uint64_t)n);
	dp_msg_put_u64(&m, DP_T_STATUS, open ? 0 : 1);
	conn_send(d, c, &m);
	return 0;
}

int handle_jwks(struct deputyd *d, struct conn *c, const struct handler_req *r, struct dp_err *err)
{
	struct dp_msg m;

	dp_msg_init(&m, big_reply, sizeof(big_reply), DP_MSG_DATA_REPLY, r->h->seq, 0);
	dp_msg_put_str(&m, DP_T_DATA, d->jwks_json);
	conn_send(d, c, &m);
	return 0;
}
