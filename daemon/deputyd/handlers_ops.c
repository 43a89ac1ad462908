// SPDX-License-Identifier: MIT
/*
 * handlers_ops: the operator's requests: `deputy kill`, `deputy revoke` (and its list) and
 * reading the host log. Who may ask is decided from the kernel's word on the peer (its uid
 * from SO_PEERCRED, its cgroup from /proc), never from anything in the message.
 */
#include "handlers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hostlog.h"
#include "peer.h"
#include "revoke.h"

/* An operator's words for the log: bounded like the rest of what a client may send. */
#define OPS_TEXT_MAX 512

static uint8_t ops_reply[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];

/* Root outside any session. A root process inside a session is an agent, not an operator. */
static bool ops_is_root(struct deputyd *d, struct conn *c, struct dp_err *err)
{
	char home[DP_ID_LEN];

	if (c->uid == 0 && peer_home(d, c->pid, c->pidfd, home) == 0 && !home[0])
		return true;
	dp_err_set(err, "only root (outside any session) may do this");
	return false;
}

static const char *ops_text(const struct wire_fields *f, struct dp_err *err)
{
	const char *t = f->str[DP_T_REASON];

	if (t && strlen(t) > OPS_TEXT_MAX) {
		dp_err_set(err, "the reason is longer than %d bytes", OPS_TEXT_MAX);
		return NULL;
	}
	return t ? t : "";
}

int handle_kill(struct deputyd *d, struct conn *c, const struct handler_req *r, struct dp_err *err)
{
	const char *id = r->f->str[DP_T_SESSION], *text = ops_text(r->f, err);
	struct session_end_why why = {.reason = "killed", .by_set = true, .by = c->uid};
	char home[DP_ID_LEN];
	struct session *s;

	if (!text)
		return -EINVAL;
	why.text = text;
	s = session_find(d, id);
	/* The session's own user (from outside sessions, or from inside that very session), or
	 * root outside sessions. Another user's session is answered as absent, as `deputy
	 * logs` does: ids are not disclosed. */
	if (!s || peer_home(d, c->pid, c->pidfd, home) != 0 ||
	    !(home[0] ? strcmp(home, s->id) == 0 && c->uid == s->uid
		      : c->uid == 0 || c->uid == s->uid)) {
		pr_info("kill refused to pid %d (uid %u): %s: not its session", (int)c->pid,
			(unsigned)c->uid, id);
		dp_err_set(err, "kill: %s: no such open session of yours", id);
		return -ENOENT;
	}
	why.host_type = "kill";
	why.host_fields =
	    json_pack("{s:s, s:o, s:s, s:I, s:I, s:o}", "sid", s->id, "user",
		      session_text(s->grant->sub), "agent", s->agent, "by", (json_int_t)c->uid,
		      "pid", (json_int_t)c->pid, "text", session_text(text));
	session_end(d, s, &why);
	return 0;
}

static void ops_reply_json(struct deputyd *d, struct conn *c, uint32_t seq, json_t *v)
{
	char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
	struct dp_msg m;

	dp_msg_init(&m, ops_reply, sizeof(ops_reply), DP_MSG_DATA_REPLY, seq, 0);
	dp_msg_put_str(&m, DP_T_DATA, text ? text : "null");
	free(text);
	if (dp_msg_finish(&m) != 0) { /* a list too long for one frame: say so, do not cut */
		dp_msg_init(&m, ops_reply, sizeof(ops_reply), DP_MSG_DATA_REPLY, seq, 0);
		dp_msg_put_str(&m, DP_T_DATA, "{\"error\":\"too long for one reply\"}");
	}
	conn_send(d, c, &m);
}

int handle_revoke(struct deputyd *d, struct conn *c, const struct handler_req *r,
		  struct dp_err *err)
{
	const struct wire_fields *f = r->f;
	bool user = f->has[DP_T_USER];
	const char *value = user ? f->str[DP_T_USER] : f->str[DP_T_JTI];
	const char *kind = user ? "user" : "grant", *text = ops_text(f, err);
	struct session_end_why why = {.reason = "revoked", .by_set = true, .by = c->uid};
	struct dp_err serr = {.msg = ""};
	json_t *ended, *out;
	int rc;

	if (!text)
		return -EINVAL;
	if (!ops_is_root(d, c, err))
		return -EPERM;
	if (f->has[DP_T_USER] == f->has[DP_T_JTI] || !value || !*value) {
		dp_err_set(err, "revoke: name a grant (its jti) or a user (sub), not both");
		return -EINVAL;
	}
	rc = revoke_add(user, value, c->uid, text, &serr);
	if (rc == -EINVAL || rc == -ENOMEM) {
		*err = serr;
		return rc;
	}
	/* Saved or not, it holds from now: the sessions end and new ones are refused. */
	why.text = text;
	ended = session_end_revoked(d, kind, value, &why);
	hostlog_write("revoke", json_pack("{s:o, s:I, s:o, s:O?, s:b}", kind, session_text(value),
					  "by", (json_int_t)c->uid, "text", session_text(text),
					  "sessions", ended, "saved", rc == 0));
	out = json_pack("{s:O?, s:b, s:s}", "sessions", ended, "saved", rc == 0, "error",
			rc ? serr.msg : "");
	ops_reply_json(d, c, r->h->seq, out);
	json_decref(out);
	json_decref(ended);
	return 0;
}

int handle_revoke_list(struct deputyd *d, struct conn *c, const struct handler_req *r,
		       struct dp_err *err)
{
	json_t *out;

	if (!ops_is_root(d, c, err))
		return -EPERM;
	out = json_pack("{s:O?}", "revoked", (json_t *)revoke_list());
	ops_reply_json(d, c, r->h->seq, out);
	json_decref(out);
	return 0;
}

int handle_host_log_read(struct deputyd *d, struct conn *c, const struct handler_req *r,
			 struct dp_err *err)
{
	static char chunk[DP_PROTO_MAX_PAYLOAD - 256];
	uint64_t off = r->f->u64[DP_T_OFFSET];
	struct dp_msg m;
	ssize_t n;
	int fd;

	if (!ops_is_root(d, c, err))
		return -EPERM;
	fd = open(hostlog_path(), O_RDONLY | O_CLOEXEC);
	n = fd < 0 ? -errno : pread(fd, chunk, sizeof(chunk), (off_t)off);
	if (n < 0)
		n = -errno;
	if (fd >= 0)
		close(fd);
	if (n < 0) {
		dp_err_set(err, "logs: cannot read the host log: %s", strerror((int)-n));
		return (int)n;
	}
	dp_msg_init(&m, ops_reply, sizeof(ops_reply), DP_MSG_LOG_DATA, r->h->seq, 0);
	dp_msg_put(&m, DP_T_DATA, chunk, (size_t)n);
	dp_msg_put_u64(&m, DP_T_OFFSET, off + (uint64_t)n);
	dp_msg_put_u64(&m, DP_T_STATUS, 0); /* never closed while deputyd runs */
	conn_send(d, c, &m);
	return 0;
}
