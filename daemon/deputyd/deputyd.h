/* SPDX-License-Identifier: MIT */
/*
 * deputyd's state and the modules that act on it. The wire side: server.c (event loop),
 * conn.c (connections, framing), wire.c (request fields), dispatch.c (the table),
 * handlers.c, peer.c (is the peer in its session), reload.c. Below it, never calling back
 * up: session.c (lifecycle), session_logs.c (reading logs), cookie.c, decide.c (routes,
 * grant, minting), policy.c (the kernel layer's allow lists), kevent.c (kernel events as
 * audit records). One thread runs all of it; the JWKS HTTP server has its own thread and
 * shares nothing mutable.
 */
#ifndef DEPUTY_DEPUTYD_H
#define DEPUTY_DEPUTYD_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "audit_log.h"
#include "config.h"
#include "grant.h"
#include "jws.h"
#include "presign.h"
#include "util.h"

struct conn;
struct dp_kernel;

struct token_cache_entry { /* token_binding "session": one token per (audience, scope) */
	char *audience, *scope, *token;
	char jti[DP_ID_LEN];
	int64_t exp;
};

struct cookie_set { /* sockets the shim accounted for (open addressing, 0 = empty) */
	uint64_t *slots;
	size_t cap, used;
	uint64_t *old; /* the previous generation, still looked up (see cookie_set_add) */
	size_t old_cap;
};

enum session_state { SESSION_OPEN, SESSION_CLOSING };

struct session {
	struct session *next;
	char id[DP_ID_LEN];
	enum session_state state;
	struct dp_grant *grant;
	char *agent; /* "agent:NAME" */
	uid_t uid;
	pid_t leader;
	int leader_pidfd;	  /* deputy run: when it is gone, the session ends */
	char leader_cg[PATH_MAX]; /* where deputy run came from, to return it there at close */
	char cg_path[PATH_MAX];	  /* absolute */
	char cg_rel[PATH_MAX];	  /* as /proc/PID/cgroup shows it */
	uint64_t cg_id;
	struct audit_log *log;
	struct conn *control; /* deputy run's connection (opaque here) */
	int exit_status;      /* -1 until deputy run reports it */
	int64_t opened, close_requested;
	struct {
		uint64_t tokens, denies, passthrough, responses, connects, blocked, unmediated;
	} counts;
	struct token_cache_entry *tokens;
	size_t n_tokens;
	struct cookie_set cookies;
};

struct deputyd {
	struct dp_config *cfg;
	struct dp_trust *trust;
	struct dp_key *key;
	char *jwks_json;
	struct dp_kernel *kernel; /* NULL under "kernel": "off" */
	struct session *sessions;
	size_t n_sessions;
	char cg_root[PATH_MAX];	  /* cgroup2 mount */
	char cg_parent[PATH_MAX]; /* <root>/<cfg->cgroup> */
	char log_dir[PATH_MAX];	  /* <state_dir>/sessions */
	int epfd, listen_fd, signal_fd, timer_fd;
	int wake_fd; /* eventfd: a worker thread (keyfetch.c, policy.c) has a result */
	bool stopping;
	uint64_t lost_reported;
	void (*session_gone)(struct deputyd *d, struct session *s); /* see session_on_gone */
};

/* server.c: listen first, so that "ready" in the log means clients can connect. */
int server_listen(struct deputyd *d);
int server_run(struct deputyd *d);

/* session.c */
struct session *session_find(struct deputyd *d, const char *id);
int session_open(struct deputyd *d, struct conn *c, pid_t pid, uid_t uid, int pidfd,
		 const char *grant, const char *agent, char *const *argv, size_t argc,
		 struct session **out, struct dp_err *err);
/* fn is called with each session just before it is freed, so whoever keeps pointers to
 * sessions (the server's connections) can drop them: sessions never call the server. */
void session_on_gone(struct deputyd *d, void (*fn)(struct deputyd *d, struct session *s));
void session_request_close(struct deputyd *d, struct session *s, int status);
void session_tick(struct deputyd *d); /* finishes sessions whose cgroup emptied */
void session_close_all(struct deputyd *d);
/* Append a record; steals fields. Non-zero when it could not be written: callers that were
 * about to grant something must refuse instead. */
int session_log(struct session *s, const char *type, json_t *fields);
/* Text an agent chose (its strings, its comm) as a JSON string for a record: bytes that are
 * not UTF-8, which jansson refuses, are written as \xNN so the record is never lost. */
json_t *session_text(const char *s);
int session_recover(struct deputyd *d);
bool session_id_valid(const char *id);

/* session_logs.c: sessions' logs as the CLI reads them, open or closed. */
json_t *session_list_json(struct deputyd *d);
int session_log_owner(struct deputyd *d, const char *id, uid_t *owner, bool *open);
ssize_t session_log_read(struct deputyd *d, const char *id, uint64_t off, char *buf, size_t n);

/* cookie.c: the sockets the shim accounted for, per session. */
int cookie_set_add(struct cookie_set *cs, uint64_t cookie);
bool cookie_set_has(const struct cookie_set *cs, uint64_t cookie);
void cookie_set_free(struct cookie_set *cs);

/* decide.c */
struct decide_req {
	const char *scheme, *host, *method, *target;
	int port;
	uint64_t cookie;
	pid_t pid;	  /* the asking process, for the log */
	const char *comm; /* its name */
};
struct decide_res {
	int verdict; /* enum dp_verdict */
	char reason[256];
	const char *header; /* borrowed from config */
	char *token;	    /* malloc'd */
	char jti[DP_ID_LEN];
	const char *scope;
};
void decide(struct deputyd *d, struct session *s, const struct decide_req *r,
	    struct decide_res *out);

/* policy.c: kernel allow lists for every session (routes' resolved addresses, allow_cidrs,
 * resolvers). policy_refresh resolves in a thread once deputyd serves (d->wake_fd set);
 * policy_collect, on a wake-up, applies what it found to every session. */
int policy_apply(struct deputyd *d, struct session *s);
void policy_refresh(struct deputyd *d);
void policy_collect(struct deputyd *d);
/* At exit: waits a while for a resolution under way; false if it is still running (then
 * its thread may still write to d->wake_fd). */
bool policy_stop(struct deputyd *d);
/* The Unix sockets sessions may reach: deputyd's own and allow_unix. 0 or -errno. */
int policy_unix_apply(struct deputyd *d);
/* The allow list computed afresh from d->cfg (resolving route hosts); valid until the next
 * policy call. */
struct dp_kallow;
size_t policy_allowed(struct deputyd *d, const struct dp_kallow **out);

/* kevent.c: a kernel event (ctx is the struct deputyd) as records of its session's log. */
struct dp_event;
void kevent_record(void *ctx, const struct dp_event *ev);

#endif
