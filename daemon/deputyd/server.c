// SPDX-License-Identifier: MIT
/*
 * server: deputyd's Unix socket, its epoll loop, and the wire protocol dispatch table
 * (OpenSSH monitor style: {type, flags, handler}). Every client is non-blocking with its own
 * read and write buffers, so one slow, silent or garbage-sending client never stalls others;
 * a malformed frame closes that client with a logged reason, and a frame left half-sent for
 * CLIENT_PARTIAL_TIMEOUT seconds does too.
 *
 * Idle time goes to the signing key's presign pool (jws.h): once no event has arrived for
 * PRESIGN_IDLE_US, the loop computes nonce pairs one at a time, looking for events between
 * each, so a request arriving meanwhile waits for at most one pair's work.
 */
#include "deputyd.h"

#include <deputy/proto.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "cgroup.h"
#include "kernel.h"
#include "proxyd.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define CLIENT_PARTIAL_TIMEOUT 10
#define CLIENT_MAX_WBUF (4u << 20)
/* Connections one non-root uid may hold: the shim keeps one per process of a session. Each
 * costs deputyd two fds and a frame buffer, so without a bound one user could take them
 * all. Root is not bounded: a root agent can stop deputyd anyway. */
#define CLIENTS_PER_UID 512
#define TICK_MS 200
/* A burst of this many tokens is signed from precomputed nonces (~150 bytes a pair). */
#define PRESIGN_CAP 4096
#define PRESIGN_IDLE_US 200

enum { EP_LISTEN = 1, EP_SIGNAL, EP_TIMER, EP_KERNEL, EP_PROXY, EP_CLIENT_BASE };

struct client {
	struct client *next;
	int fd;
	int pidfd;
	pid_t pid;
	uid_t uid;
	struct session *bound; /* the session this peer proved it belongs to */
	char comm[17];	       /* the peer's name, read once when it is bound */
	struct session *controls;
	uint8_t rbuf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	size_t rlen;
	int64_t partial_since;
	uint8_t *wbuf;
	size_t wlen, wcap;
	bool want_out; /* EPOLLOUT is armed: a reply is waiting for room */
	bool dead;
};

static struct client *clients;
static bool accept_paused; /* out of fds: the listening socket waits for one to be freed */

/* ---- replies ------------------------------------------------------------------------ */

static void client_flush(struct deputyd *d, struct client *c)
{
	while (c->wlen > 0) {
		ssize_t w = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				/* No more requests until the peer reads: what it has not read is
				 * all deputyd ever buffers for it. */
				struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};

				if (!c->want_out)
					epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
				c->want_out = true;
				return;
			}
			c->dead = true;
			return;
		}
		memmove(c->wbuf, c->wbuf + w, c->wlen - (size_t)w);
		c->wlen -= (size_t)w;
	}
	/* The common case (the reply fit) costs no epoll_ctl: only undo an armed EPOLLOUT. */
	if (c->want_out) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

		epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = false;
	}
}

static void client_send(struct deputyd *d, struct client *c, struct dp_msg *m)
{
	if (dp_msg_finish(m) != 0) {
		pr_warn("reply to pid %d too large; closing", (int)c->pid);
		c->dead = true;
		return;
	}
	/* Nothing queued: try to send straight from the caller's buffer, no copy. */
	if (c->wlen == 0) {
		ssize_t w;

		do
			w = send(c->fd, m->buf, m->len, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (w < 0 && errno == EINTR);
		if (w == (ssize_t)m->len)
			return;
		if (w < 0 && errno != EAGAIN) {
			c->dead = true;
			return;
		}
		if (w > 0) {
			memmove(m->buf, m->buf + w, m->len - (size_t)w);
			m->len -= (size_t)w;
		}
	}
	if (c->wlen + m->len > CLIENT_MAX_WBUF) {
		pr_warn("client pid %d does not read its replies; closing", (int)c->pid);
		c->dead = true;
		return;
	}
	if (c->wlen + m->len > c->wcap) {
		size_t cap = c->wcap ? c->wcap : 4096;
		uint8_t *nb;

		while (cap < c->wlen + m->len)
			cap *= 2;
		nb = realloc(c->wbuf, cap);
		if (!nb) {
			c->dead = true;
			return;
		}
		c->wbuf = nb;
		c->wcap = cap;
	}
	memcpy(c->wbuf + c->wlen, m->buf, m->len);
	c->wlen += m->len;
	client_flush(d, c);
}

static void reply_error(struct deputyd *d, struct client *c, uint32_t seq, const char *reason)
{
	uint8_t buf[1024];
	struct dp_msg m;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_ERROR, seq, 0);
	dp_msg_put(&m, DP_T_REASON, reason, strnlen(reason, sizeof(buf) - 64));
	client_send(d, c, &m);
}

static void reply_ok(struct deputyd *d, struct client *c, uint32_t seq)
{
	uint8_t buf[DP_PROTO_HDR_LEN];
	struct dp_msg m;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_OK, seq, 0);
	client_send(d, c, &m);
}

/* ---- request fields ----------------------------------------------------------------- */

#define MAX_ARGV 256

/* Fields of one request, validated: strings are NUL-terminated copies without inner NULs,
 * kept in the arena (no allocation per request). Every field has a 4-byte head, so the
 * copies with their NULs never need more than the payload plus a quarter of it. */
#define FIELDS_ARENA (DP_PROTO_MAX_PAYLOAD + DP_PROTO_MAX_PAYLOAD / 4 + 1)

struct fields {
	char *str[DP_T_MAX_];
	uint64_t u64[DP_T_MAX_];
	bool has[DP_T_MAX_];
	const uint8_t *raw[DP_T_MAX_];
	uint16_t rawlen[DP_T_MAX_];
	char *argv[MAX_ARGV];
	size_t argc;
	size_t arena_used; /* everything up to here is zeroed per request, not the arena */
	char arena[FIELDS_ARENA];
};

static bool tag_is_u64(uint16_t t)
{
	return t == DP_T_PORT || t == DP_T_COOKIE || t == DP_T_PID || t == DP_T_STATUS ||
	       t == DP_T_FAMILY || t == DP_T_OFFSET || t == DP_T_VERDICT;
}

static char *field_strdup(struct fields *f, const uint8_t *v, uint16_t n)
{
	char *s;

	if (memchr(v, '\0', n) || f->arena_used + n + 1 > sizeof(f->arena))
		return NULL;
	s = f->arena + f->arena_used;
	memcpy(s, v, n);
	s[n] = '\0';
	f->arena_used += (size_t)n + 1;
	return s;
}

static int fields_parse(const uint8_t *p, size_t len, struct fields *f, char *why, size_t whysz)
{
	size_t off = 0;
	uint16_t tag, vlen;
	const uint8_t *v;
	int r;

	memset(f, 0, offsetof(struct fields, arena));
	while ((r = dp_field_next(p, len, &off, &tag, &v, &vlen)) == 1) {
		if (tag == 0 || tag >= DP_T_MAX_) {
			snprintf(why, whysz, "unknown field tag %u", tag);
			return -EBADMSG;
		}
		if (tag == DP_T_ARGV) {
			if (f->argc == MAX_ARGV) {
				snprintf(why, whysz, "too many argv fields");
				return -EBADMSG;
			}
			f->argv[f->argc] = field_strdup(f, v, vlen);
			if (!f->argv[f->argc]) {
				snprintf(why, whysz, "argv field with a NUL byte");
				return -EBADMSG;
			}
			f->argc++;
			continue;
		}
		if (f->has[tag]) {
			snprintf(why, whysz, "duplicate field tag %u", tag);
			return -EBADMSG;
		}
		f->has[tag] = true;
		f->raw[tag] = v;
		f->rawlen[tag] = vlen;
		if (tag_is_u64(tag)) {
			if (vlen != 8) {
				snprintf(why, whysz, "integer field tag %u of length %u", tag,
					 vlen);
				return -EBADMSG;
			}
			memcpy(&f->u64[tag], v, 8);
		} else if (tag != DP_T_ADDR && tag != DP_T_DATA) {
			f->str[tag] = field_strdup(f, v, vlen);
			if (!f->str[tag]) {
				snprintf(why, whysz, "string field tag %u with a NUL byte", tag);
				return -EBADMSG;
			}
		}
	}
	if (r < 0) {
		snprintf(why, whysz, "field runs past the frame");
		return -EBADMSG;
	}
	return 0;
}

static bool fields_require(const struct fields *f, const uint16_t *tags, size_t n, char *why,
			   size_t whysz)
{
	for (size_t i = 0; i < n; i++)
		if (!f->has[tags[i]]) {
			snprintf(why, whysz, "missing field tag %u", tags[i]);
			return false;
		}
	return true;
}

/* ---- peer checks ---------------------------------------------------------------------- */

static bool pidfd_alive(int pidfd)
{
	return pidfd < 0 || syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

static void client_read_comm(struct client *c)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)c->pid);
	f = fopen(path, "re");
	if (f) {
		if (fgets(c->comm, sizeof(c->comm), f))
			c->comm[strcspn(c->comm, "\n")] = '\0';
		fclose(f);
	}
}

/* Does this client's process belong to session s? Bound on first success: a process
 * cannot leave a session's cgroup, so later requests need no /proc read. */
static bool peer_in_session(struct client *c, struct session *s, char *why, size_t whysz)
{
	char cg[PATH_MAX];
	size_t n = strlen(s->cg_rel);

	if (c->bound)
		return c->bound == s;
	if (c->uid != s->uid) {
		snprintf(why, whysz, "peer uid %u is not the session's", (unsigned)c->uid);
		return false;
	}
	if (cgroup_of_pid(c->pid, cg, sizeof(cg)) != 0 ||
	    !(strncmp(cg, s->cg_rel, n) == 0 && (cg[n] == '\0' || cg[n] == '/'))) {
		snprintf(why, whysz, "peer pid %d is not in the session's cgroup", (int)c->pid);
		return false;
	}
	/* The pidfd pins the process that connected: if it is still alive, the pid we read
	 * /proc for was not reused. */
	if (!pidfd_alive(c->pidfd)) {
		snprintf(why, whysz, "peer pid %d exited", (int)c->pid);
		return false;
	}
	c->bound = s;
	client_read_comm(c);
	return true;
}

static struct session *request_session(struct deputyd *d, struct client *c, struct fields *f,
				       char *why, size_t whysz)
{
	struct session *s;

	if (!f->str[DP_T_SESSION]) {
		snprintf(why, whysz, "no session named");
		return NULL;
	}
	s = session_find(d, f->str[DP_T_SESSION]);
	if (!s || !peer_in_session(c, s, why, whysz)) {
		if (!s)
			snprintf(why, whysz, "no such open session");
		return NULL;
	}
	return s;
}

/* ---- handlers ----------------------------------------------------------------------- */

typedef void (*handler_fn)(struct deputyd *d, struct client *c, const struct dp_hdr *h,
			   struct fields *f);

static void on_session_open(struct deputyd *d, struct client *c, const struct dp_hdr *h,
			    struct fields *f)
{
	static const uint16_t need[] = {DP_T_GRANT, DP_T_AGENT};
	uint8_t buf[4096];
	struct dp_msg m;
	struct session *s;
	struct dp_err err;
	const char *ca;
	char why[128];

	if (!fields_require(f, need, DP_ARRAY_SIZE(need), why, sizeof(why))) {
		reply_error(d, c, h->seq, why);
		return;
	}
	if (c->controls) {
		reply_error(d, c, h->seq, "session: this connection already opened one");
		return;
	}
	if (session_open(d, c, c->pid, c->uid, c->pidfd, f->str[DP_T_GRANT], f->str[DP_T_AGENT],
			 f->argv, f->argc, &s, &err) != 0) {
		reply_error(d, c, h->seq, err.msg);
		return;
	}
	c->controls = s;
	c->bound = s;
	/* The proxy's CA for this session: deputy run makes the agent trust it. */
	ca = proxyd_session_ca(s, &err);
	if (!ca) {
		session_request_close(d, s, -1);
		reply_error(d, c, h->seq, err.msg);
		return;
	}
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_SESSION_OPENED, h->seq, 0);
	dp_msg_put_str(&m, DP_T_SESSION, s->id);
	dp_msg_put_str(&m, DP_T_USER, s->grant->sub);
	dp_msg_put_str(&m, DP_T_CA, ca);
	client_send(d, c, &m);
}

static void on_session_close(struct deputyd *d, struct client *c, const struct dp_hdr *h,
			     struct fields *f)
{
	struct session *s = c->controls;
	char why[256];

	/* After a deputyd restart deputy run's first connection is gone: its leader process
	 * (same pid, proven in the session by the peer checks) may close it from a new one. */
	if (!s && f->str[DP_T_SESSION]) {
		s = session_find(d, f->str[DP_T_SESSION]);
		if (s && !(c->pid == s->leader && !s->control && !c->controls &&
			   peer_in_session(c, s, why, sizeof(why))))
			s = NULL;
		if (s) {
			s->control = c;
			c->controls = s;
		}
	}
	if (!s || !f->str[DP_T_SESSION] || strcmp(f->str[DP_T_SESSION], s->id) != 0) {
		reply_error(d, c, h->seq,
			    "session: only the connection that opened it may close it");
		return;
	}
	/* Close first: deputy run is moved out of the session's cgroup before the rest is
	 * killed, so nothing it does after this reply (e.g. a sanitizer's exit-time helper
	 * process) can be caught by the kill. */
	session_request_close(d, s, f->has[DP_T_STATUS] ? (int)f->u64[DP_T_STATUS] : -1);
	reply_ok(d, c, h->seq);
}

static void on_decide(struct deputyd *d, struct client *c, const struct dp_hdr *h, struct fields *f)
{
	static const uint16_t need[] = {DP_T_SESSION, DP_T_SCHEME, DP_T_HOST,
					DP_T_PORT,    DP_T_METHOD, DP_T_TARGET};
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct decide_req r;
	struct decide_res res;
	struct dp_msg m;
	struct session *s;
	char why[256];

	if (!fields_require(f, need, DP_ARRAY_SIZE(need), why, sizeof(why))) {
		reply_error(d, c, h->seq, why);
		return;
	}
	s = request_session(d, c, f, why, sizeof(why));
	if (!s) {
		pr_warn("decide refused to pid %d: %s", (int)c->pid, why);
		reply_error(d, c, h->seq, why);
		return;
	}
	r.scheme = f->str[DP_T_SCHEME];
	r.host = f->str[DP_T_HOST];
	r.method = f->str[DP_T_METHOD];
	r.target = f->str[DP_T_TARGET];
	r.port = f->u64[DP_T_PORT] <= 65535 ? (int)f->u64[DP_T_PORT] : -1;
	r.cookie = f->u64[DP_T_COOKIE];
	r.pid = c->pid;
	r.comm = c->comm;
	r.mediator = NULL;
	decide(d, s, &r, &res);
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DECISION, h->seq, 0);
	decide_put_reply(&m, &res, s);
	free(res.token);
	client_send(d, c, &m);
}

static void on_response(struct deputyd *d, struct client *c, const struct dp_hdr *h,
			struct fields *f)
{
	struct session *s;
	char why[256];

	s = request_session(d, c, f, why, sizeof(why));
	if (!s || !f->has[DP_T_STATUS] || f->u64[DP_T_STATUS] > 999) {
		if (!(h->flags & DP_F_NOREPLY))
			reply_error(d, c, h->seq, s ? "response: bad status" : why);
		return;
	}
	s->counts.responses++;
	session_log(s, "response",
		    json_pack("{s:o, s:I}", "jti",
			      session_text(f->str[DP_T_JTI] ? f->str[DP_T_JTI] : ""), "status",
			      (json_int_t)f->u64[DP_T_STATUS]));
	if (!(h->flags & DP_F_NOREPLY))
		reply_ok(d, c, h->seq);
}

static void on_conn(struct deputyd *d, struct client *c, const struct dp_hdr *h, struct fields *f)
{
	struct session *s;
	char why[256];

	s = request_session(d, c, f, why, sizeof(why));
	if (!s || !f->has[DP_T_COOKIE]) {
		if (!(h->flags & DP_F_NOREPLY))
			reply_error(d, c, h->seq, s ? "conn: no cookie" : why);
		return;
	}
	if (cookie_set_add(&s->cookies, f->u64[DP_T_COOKIE]) != 0)
		pr_warn("session %s: cannot remember socket cookie", s->id);
	if (!(h->flags & DP_F_NOREPLY))
		reply_ok(d, c, h->seq);
}

static void on_deny_report(struct deputyd *d, struct client *c, const struct dp_hdr *h,
			   struct fields *f)
{
	struct session *s;
	char why[256];

	s = request_session(d, c, f, why, sizeof(why));
	if (!s) {
		if (!(h->flags & DP_F_NOREPLY))
			reply_error(d, c, h->seq, why);
		return;
	}
	s->counts.denies++;
	session_log(s, "deny",
		    json_pack("{s:s, s:o, s:o, s:o, s:o, s:I, s:o}", "layer", "shim", "reason",
			      session_text(f->str[DP_T_REASON] ? f->str[DP_T_REASON] : ""), "host",
			      session_text(f->str[DP_T_HOST] ? f->str[DP_T_HOST] : ""), "method",
			      session_text(f->str[DP_T_METHOD] ? f->str[DP_T_METHOD] : ""),
			      "target",
			      session_text(f->str[DP_T_TARGET] ? f->str[DP_T_TARGET] : ""), "pid",
			      (json_int_t)c->pid, "comm", session_text(c->comm)));
	if (!(h->flags & DP_F_NOREPLY))
		reply_ok(d, c, h->seq);
}

/* Sessions visible to this client: root sees all, others their own uid's. */
static bool may_see(const struct client *c, uid_t owner)
{
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

static void on_sessions(struct deputyd *d, struct client *c, const struct dp_hdr *h,
			struct fields *f)
{
	json_t *list = session_list_json(d);
	json_t *out = json_array(), *e, **v = NULL;
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct dp_msg m;
	size_t i, n = 0, from, total = 2;
	char *text = NULL;

	if (list && out)
		v = calloc(json_array_size(list) + 1, sizeof(*v));
	json_array_foreach(list, i, e)
	{
		if (v && may_see(c, (uid_t)json_integer_value(json_object_get(e, "uid"))))
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
		reply_error(d, c, h->seq, "sessions: out of memory");
		return;
	}
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DATA_REPLY, h->seq, 0);
	dp_msg_put_str(&m, DP_T_DATA, text);
	free(text);
	client_send(d, c, &m);
}

static void on_log_read(struct deputyd *d, struct client *c, const struct dp_hdr *h,
			struct fields *f)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	char chunk[DP_PROTO_MAX_PAYLOAD - 256];
	const char *id = f->str[DP_T_SESSION];
	struct dp_msg m;
	uid_t owner;
	bool open;
	ssize_t n;
	int rc;

	if (!id) {
		reply_error(d, c, h->seq, "logs: no session named");
		return;
	}
	rc = session_log_owner(d, id, &owner, &open);
	if (rc != 0 || !may_see(c, owner)) {
		/* The same answer for "absent" and "not yours": ids are not disclosed. */
		reply_error(d, c, h->seq, "no such session");
		return;
	}
	n = session_log_read(d, id, f->u64[DP_T_OFFSET], chunk, sizeof(chunk));
	if (n < 0) {
		reply_error(d, c, h->seq, "logs: cannot read the session log");
		return;
	}
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_LOG_DATA, h->seq, 0);
	dp_msg_put(&m, DP_T_DATA, chunk, (size_t)n);
	dp_msg_put_u64(&m, DP_T_OFFSET, f->u64[DP_T_OFFSET] + (uint64_t)n);
	dp_msg_put_u64(&m, DP_T_STATUS, open ? 0 : 1);
	client_send(d, c, &m);
}

static void on_jwks(struct deputyd *d, struct client *c, const struct dp_hdr *h, struct fields *f)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct dp_msg m;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DATA_REPLY, h->seq, 0);
	dp_msg_put_str(&m, DP_T_DATA, d->jwks_json);
	client_send(d, c, &m);
}

static const struct {
	uint16_t type;
	handler_fn fn;
} handlers[] = {
    {DP_MSG_SESSION_OPEN, on_session_open},
    {DP_MSG_SESSION_CLOSE, on_session_close},
    {DP_MSG_DECIDE, on_decide},
    {DP_MSG_RESPONSE, on_response},
    {DP_MSG_CONN, on_conn},
    {DP_MSG_DENY_REPORT, on_deny_report},
    {DP_MSG_SESSIONS, on_sessions},
    {DP_MSG_LOG_READ, on_log_read},
    {DP_MSG_JWKS, on_jwks},
};

/* ---- connections ------------------------------------------------------------------- */

static void accept_pause(struct deputyd *d, bool pause)
{
	struct epoll_event ev = {.events = pause ? 0 : EPOLLIN, .data.u64 = EP_LISTEN};

	if (accept_paused != pause && epoll_ctl(d->epfd, EPOLL_CTL_MOD, d->listen_fd, &ev) == 0)
		accept_paused = pause;
}

static size_t clients_of_uid(uid_t uid)
{
	size_t n = 0;

	for (struct client *c = clients; c; c = c->next)
		n += c->uid == uid;
	return n;
}

static void client_accept(struct deputyd *d)
{
	static int64_t last_warn;

	for (;;) {
		int fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct epoll_event ev;
		struct client *c;

		if (fd < 0) {
			/* Out of fds the socket stays readable: wait for a client to go (or the
			 * next tick) instead of spinning on accept. */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				if (dp_now() != last_warn)
					pr_warn("accept: %s; waiting", strerror(errno));
				last_warn = dp_now();
				accept_pause(d, true);
			} else if (errno != EAGAIN && errno != EINTR) {
				pr_warn("accept: %s", strerror(errno));
			}
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			pr_warn("SO_PEERCRED: %s", strerror(errno));
			close(fd);
			continue;
		}
		if (cred.uid != 0 && clients_of_uid(cred.uid) >= CLIENTS_PER_UID) {
			if (dp_now() != last_warn)
				pr_warn("uid %u holds %d connections; refusing more",
					(unsigned)cred.uid, CLIENTS_PER_UID);
			last_warn = dp_now();
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->pid = cred.pid;
		c->uid = cred.uid;
		len = sizeof(c->pidfd);
		/* SO_PEERPIDFD (Linux 6.5) pins the exact process that connected; older kernels
		 * get pidfd_open, which is racy only if that process already exited. */
		if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &c->pidfd, &len) < 0)
			c->pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		/* Without a pidfd the peer checks could be fooled by a reused pid. */
		if (c->pidfd < 0 || epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			if (c->pidfd >= 0)
				close(c->pidfd);
			close(fd);
			free(c);
			continue;
		}
		c->next = clients;
		clients = c;
	}
}

void server_client_close(struct deputyd *d, struct client *c)
{
	struct client **pp;

	for (pp = &clients; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	if (c->controls) {
		c->controls->control = NULL;
		/* deputy run went away without a close: the session ends with it. */
		if (c->controls->state == SESSION_OPEN)
			session_request_close(d, c->controls, -1);
	}
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->pidfd >= 0)
		close(c->pidfd);
	free(c->wbuf);
	free(c);
	if (!d->stopping)
		accept_pause(d, false);
}

void server_session_gone(struct session *s)
{
	for (struct client *c = clients; c; c = c->next) {
		if (c->bound == s)
			c->bound = NULL, c->dead = true;
		if (c->controls == s)
			c->controls = NULL;
	}
}

static void client_dispatch(struct deputyd *d, struct client *c, const struct dp_hdr *h,
			    const uint8_t *payload)
{
	static struct fields f; /* one thread; 40 KiB is better off the stack */
	char why[160];

	if (fields_parse(payload, h->len, &f, why, sizeof(why)) != 0) {
		pr_warn("client pid %d: malformed message: %s; closing", (int)c->pid, why);
		c->dead = true;
		return;
	}
	for (size_t i = 0; i < DP_ARRAY_SIZE(handlers); i++)
		if (handlers[i].type == h->type) {
			handlers[i].fn(d, c, h, &f);
			return;
		}
	pr_warn("client pid %d: unknown message type %u; closing", (int)c->pid, h->type);
	c->dead = true;
}

/* Dispatches the complete frames buffered for c, in order. A reply the peer has not read
 * stops it (main's back-pressure rule: deputyd buffers no more than one unread reply's
 * worth); the rest waits until client_flush has sent everything. */
static void client_process(struct deputyd *d, struct client *c)
{
	size_t off = 0;

	while (!c->dead && c->wlen == 0 && c->rlen - off >= DP_PROTO_HDR_LEN) {
		struct dp_hdr h;
		int err;

		memcpy(&h, c->rbuf + off, sizeof(h));
		err = dp_hdr_check(&h);
		if (err) {
			pr_warn("client pid %d: %s; closing", (int)c->pid,
				err == -EPROTO ? "unsupported protocol version"
					       : "message over the size limit");
			c->dead = true;
			return;
		}
		if (c->rlen - off - DP_PROTO_HDR_LEN < h.len)
			break;
		client_dispatch(d, c, &h, c->rbuf + off + DP_PROTO_HDR_LEN);
		off += DP_PROTO_HDR_LEN + h.len;
	}
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
		c->partial_since = dp_now();
	}
}

/* Reads what the socket holds (up to one maximal frame) and dispatches every complete frame
 * in it: one recv per request in the common case, not one per header and payload. */
static void client_readable(struct deputyd *d, struct client *c)
{
	for (int rounds = 0; rounds < 64 && !c->dead && c->wlen == 0; rounds++) {
		size_t room = sizeof(c->rbuf) - c->rlen;
		ssize_t r;

		if (room == 0)
			return; /* a full buffer is a whole frame, waiting for its reply's room */
		r = recv(c->fd, c->rbuf + c->rlen, room, 0);
		if (r == 0) {
			if (c->rlen)
				pr_warn("client pid %d: closed mid-message", (int)c->pid);
			c->dead = true;
			return;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				c->dead = true;
			return;
		}
		if (c->rlen == 0)
			c->partial_since = dp_now();
		c->rlen += (size_t)r;
		client_process(d, c);
		/* Level-triggered epoll reports what is left; no recv just to see EAGAIN. */
		if ((size_t)r < room)
			return;
	}
}

static void clients_reap(struct deputyd *d)
{
	int64_t now = dp_now();
	struct client *c = clients, *next;

	for (; c; c = next) {
		next = c->next;
		/* Frames held back while the peer does not read its replies are not incomplete. */
		if (!c->dead && c->rlen > 0 && c->wlen == 0 &&
		    now - c->partial_since > CLIENT_PARTIAL_TIMEOUT) {
			pr_warn("client pid %d: message incomplete for %ds; closing", (int)c->pid,
				CLIENT_PARTIAL_TIMEOUT);
			c->dead = true;
		}
		if (c->dead)
			server_client_close(d, c);
	}
}

/* ---- setup and loop ------------------------------------------------------------------ */

static int server_listen(struct deputyd *d)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	const char *path = d->cfg->socket;
	char dir[PATH_MAX];
	char *slash;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		pr_warn("socket: path too long: %s", path);
		return -ENAMETOOLONG;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (dp_mkdir_p(dir, 0755) != 0) {
			pr_warn("socket: cannot create %s: %s", dir, strerror(errno));
			return -errno;
		}
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
		int e = errno;

		pr_warn("socket: %s: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	/* Anyone may connect: deputyd authenticates each request by grant and by the peer's
	 * uid and cgroup, never by who can reach the socket. */
	chmod(path, 0666);
	d->listen_fd = fd;
	return 0;
}

static void server_reload(struct deputyd *d)
{
	struct dp_config *cfg;
	struct dp_trust *trust;
	struct dp_err err;

	if (config_load(d->cfg->path, &cfg, &err) != 0) {
		pr_warn("reload: %s; keeping the running configuration", err.msg);
		return;
	}
	trust = trust_new(cfg, &err);
	if (!trust) {
		pr_warn("reload: %s; keeping the running configuration", err.msg);
		config_free(cfg);
		return;
	}
	if (strcmp(cfg->socket, d->cfg->socket) || strcmp(cfg->state_dir, d->cfg->state_dir) ||
	    strcmp(cfg->issuer, d->cfg->issuer) || strcmp(cfg->cgroup, d->cfg->cgroup) ||
	    cfg->kernel != d->cfg->kernel)
		pr_warn("reload: socket, state_dir, issuer, cgroup and kernel take effect only "
			"at restart");
	/* Keep what only a restart may change; take routes, issuers and policy. */
	{
		struct dp_config *old = d->cfg;
#define KEEP(field)                                                                                \
	do {                                                                                       \
		char *t_ = cfg->field;                                                             \
		cfg->field = old->field;                                                           \
		old->field = t_;                                                                   \
	} while (0)
		KEEP(socket);
		KEEP(state_dir);
		KEEP(issuer);
		KEEP(cgroup);
		KEEP(signing_key);
#undef KEEP
		cfg->kernel = old->kernel;
		d->cfg = cfg;
		config_free(old);
	}
	trust_free(d->trust);
	d->trust = trust;
	policy_refresh(d);
	proxyd_reload(d);
	pr_info("reloaded %s: %zu routes, %zu trusted issuers", d->cfg->path, d->cfg->n_routes,
		d->cfg->n_issuers);
}

static int epoll_add_tag(struct deputyd *d, int fd, uintptr_t tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

	return epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* epoll_wait with a microsecond timeout (-1: none); epoll_pwait2 is Linux 5.11+, older
 * kernels get the millisecond rounded up. */
static int server_wait(struct deputyd *d, struct epoll_event *evs, int max, long timeout_us)
{
	static bool no_pwait2;
	struct timespec ts = {timeout_us / 1000000, (timeout_us % 1000000) * 1000};
	int n;

	if (timeout_us < 0)
		return epoll_wait(d->epfd, evs, max, -1);
	if (!no_pwait2) {
		n = epoll_pwait2(d->epfd, evs, max, &ts, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		no_pwait2 = true;
	}
	return epoll_wait(d->epfd, evs, max, (int)((timeout_us + 999) / 1000));
}

int server_run(struct deputyd *d)
{
	struct itimerspec its = {.it_interval = {0, TICK_MS * 1000000L},
				 .it_value = {0, TICK_MS * 1000000L}};
	int64_t last_policy = dp_now();
	bool refilling = false;
	sigset_t mask;
	int rc;

	rc = server_listen(d);
	if (rc)
		return rc;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->signal_fd < 0 || d->timer_fd < 0 || d->epfd < 0)
		return -errno;
	timerfd_settime(d->timer_fd, 0, &its, NULL);
	if (epoll_add_tag(d, d->listen_fd, EP_LISTEN) ||
	    epoll_add_tag(d, d->signal_fd, EP_SIGNAL) || epoll_add_tag(d, d->timer_fd, EP_TIMER))
		return -errno;
	if (d->kernel && epoll_add_tag(d, kernel_fd(d->kernel), EP_KERNEL))
		return -errno;

	proxyd_start(d, EP_PROXY);
	if (dp_key_presign_enable(d->key, PRESIGN_CAP) != 0)
		pr_info("signing key is not ES256: no presigning, every token signed in full");

	while (!d->stopping) {
		struct epoll_event evs[64];
		bool want = dp_key_presign_wanted(d->key);
		int n = server_wait(d, evs, 64, !want ? -1 : refilling ? 0 : PRESIGN_IDLE_US);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			pr_warn("epoll_wait: %s", strerror(errno));
			return -errno;
		}
		if (n == 0) {
			refilling = want && dp_key_presign_fill(d->key, 1) == 1;
			continue;
		}
		refilling = false;
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;

			if (tag == EP_LISTEN) {
				client_accept(d);
			} else if (tag == EP_SIGNAL) {
				struct signalfd_siginfo si;

				while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
					if (si.ssi_signo == SIGHUP)
						server_reload(d);
					else
						d->stopping = true;
				}
			} else if (tag == EP_TIMER) {
				uint64_t ticks;

				if (read(d->timer_fd, &ticks, sizeof(ticks)) < 0) {
					/* nothing to do: the next tick comes anyway */
				}
				accept_pause(d, false);
				session_tick(d);
				proxyd_tick(d);
				if (dp_now() - last_policy >= d->cfg->resolve_interval) {
					last_policy = dp_now();
					policy_refresh(d);
				}
			} else if (tag == EP_KERNEL) {
				kernel_consume(d->kernel);
			} else if (tag == EP_PROXY) {
				proxyd_event(d);
			} else {
				struct client *c = evs[i].data.ptr;

				if (c->dead)
					continue;
				if (evs[i].events & EPOLLOUT) {
					client_flush(d, c);
					/* frames read before the peer stopped reading */
					client_process(d, c);
				}
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					client_readable(d, c);
			}
		}
		/* Kernel events are drained before anything a client asked is finished. */
		if (d->kernel)
			kernel_consume(d->kernel);
		clients_reap(d);
	}
	pr_info("shutting down: closing %zu open sessions", d->n_sessions);
	session_close_all(d);
	proxyd_stop(d);
	{
		uint64_t hits, misses;
		size_t avail;

		dp_key_presign_stats(d->key, &avail, &hits, &misses);
		pr_info("presign pool: %llu hits, %llu misses, %zu pairs left",
			(unsigned long long)hits, (unsigned long long)misses, avail);
	}
	while (clients)
		server_client_close(d, clients);
	close(d->listen_fd);
	unlink(d->cfg->socket);
	return 0;
}
