/* SPDX-License-Identifier: MIT */
/*
 * deputyd's state and the modules that act on it. The wire side: server.c (event loop),
 * conn.c (connections, framing), wire.c (request fields), dispatch.c (the table),
 * handlers.c, peer.c (is the peer in its session), reload.c. Below it, never calling back
 * up: session.c (lifecycle), session_logs.c (reading logs), repeat.c (coalescing repeated
 * events), cookie.c, decide.c (routes,
 * grant, minting), policy.c (the kernel layer's allow lists), kevent.c (kernel events as
 * audit records), proc.c (/proc reads). One thread runs all of it; the JWKS HTTP server has its own
 * thread and shares nothing mutable.
 */
#ifndef DEPUTY_DEPUTYD_H
#define DEPUTY_DEPUTYD_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

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
	char prev_jti[DP_ID_LEN]; /* the token it replaced: its last uses may still be reported */
	int64_t exp;
};

struct cookie_conn {	   /* one TCP connection of a session (cookie.c) */
	uint64_t cookie;   /* 0: empty slot */
	uint32_t requests; /* mediated HTTP requests on it so far */
	uint32_t pad_;
};

struct cookie_set { /* a session's live TCP connections, by socket cookie */
	struct cookie_conn *slots;
	size_t cap, used;
};

enum session_state { SESSION_OPEN, SESSION_CLOSING };

struct session_counts {
	uint64_t tokens, denies, passthrough, responses, connects, blocked, unmediated;
};

/* Runs tracked at once per session: identical events may come interleaved from a few
 * processes (repeat.c). */
#define SESSION_REPEAT_SLOTS 8

struct session_repeat { /* a run of identical events, written once then counted (repeat.c) */
	char *key;	/* what the last coalescible event was; NULL: none */
	uint64_t of;	/* seq of its record */
	uint64_t n;	/* repeats since, not yet summed up in a `repeated` record */
	struct session_counts counted; /* what those repeats added to the counts */
	struct timespec last;	       /* CLOCK_REALTIME of the last repeat */
};

struct session {
	struct session *next;
	char id[DP_ID_LEN];
	enum session_state state;
	struct dp_grant *grant;
	char *agent; /* "agent:NAME" */
	uid_t uid;
	pid_t leader;
	int leader_pidfd;	/* deputy run: when it is gone, the session ends */
	uint64_t leader_start;	/* its start time: tells it from a later process of its pid */
	char cg_path[PATH_MAX]; /* absolute */
	char cg_rel[PATH_MAX];	/* as /proc/PID/cgroup shows it */
	uint64_t cg_id;
	struct audit_log *log;
	struct conn *control; /* deputy run's connection (opaque here) */
	int exit_status;      /* -1 until deputy run reports it */
	int64_t opened, close_requested;
	int64_t emptied;    /* when the cgroup was first seen empty while deputy run lives */
	int64_t proxy_wait; /* when the seal began waiting for the proxy's last reports */
	struct session_counts counts;
	const char *close_reason; /* set when deputyd itself ends the session ("log_limit") */
	bool close_by_set;	  /* close_by says who ended it (deputy kill) */
	bool blocked;		  /* its kernel policy is block-all: never widen it again */
	uid_t close_by;
	char *close_text;     /* the operator's words for it, or NULL */
	uint64_t log_dropped; /* records not written: the log was at session_log_max */
	struct session_repeat repeat[SESSION_REPEAT_SLOTS];
	struct token_cache_entry *tokens;
	size_t n_tokens;
	struct cookie_set cookies;
	/* Session tables (table.c): the generation, and the page that shows it to the shim. */
	uint64_t table_gen;
	uint64_t *table_page; /* NULL until a shim asks for the table */
	int table_fd;
	bool dry; /* a `deputy route test` stand-in: decide() logs and mints nothing for it */
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
	char seal_session[DP_ID_LEN], seal_hash[AUDIT_HASH_HEX]; /* the newest seal (chain.c) */
	int64_t retention_next; /* when retention.c looks for old logs again */
	void (*session_gone)(struct deputyd *d, struct session *s); /* see session_on_gone */
};

/* server.c: listen first, so that "ready" in the log means clients can connect. */
int server_listen(struct deputyd *d);
int server_run(struct deputyd *d);

/* session.c */
struct session *session_find(struct deputyd *d, const char *id);
/* Who asks for a session: `deputy run` (the leader), which stays outside it, and the child
 * it forked to become the session's first process (stopped until the session exists). */
struct session_req {
	pid_t leader;
	uid_t uid;
	int leader_pidfd;
	pid_t child;
	const char *grant, *agent;
	char *const *argv;
	size_t argc;
};
int session_open(struct deputyd *d, struct conn *c, const struct session_req *q,
		 struct session **out, struct dp_err *err);
/* The id of the session whose cgroup holds pid ("" for none), as /proc says now. */
int session_of_pid(struct deputyd *d, pid_t pid, char out[DP_ID_LEN]) DP_WUR;
/* fn is called with each session just before it is freed, so whoever keeps pointers to
 * sessions (the server's connections) can drop them: sessions never call the server. */
void session_on_gone(struct deputyd *d, void (*fn)(struct deputyd *d, struct session *s));
void session_request_close(struct deputyd *d, struct session *s, int status);
void session_tick(struct deputyd *d); /* finishes sessions whose cgroup emptied */
void session_close_all(struct deputyd *d);
/* Append a record; steals fields. Non-zero when it could not be written: callers that were
 * about to grant something must refuse instead. */
int session_log(struct session *s, const char *type, json_t *fields);
/* The same, stamped at `when` (CLOCK_REALTIME; NULL: now): kernel events keep their time. */
int session_log_at(struct session *s, const char *type, json_t *fields,
		   const struct timespec *when);
/* Text an agent chose (its strings, its comm) as a JSON string for a record: bytes that are
 * not UTF-8, which jansson refuses, are written as \xNN so the record is never lost. */
json_t *session_text(const char *s);
int session_recover(struct deputyd *d);
/* "NAME" or "agent:NAME" -> "agent:NAME" (malloc'd); -EINVAL for a name outside
 * 1-64 of [A-Za-z0-9._-]. */
int session_agent_name(const char *agent, char **out);
bool session_id_valid(const char *id);

/* session_end.c: deputyd ends a session on its own account. reason is a static string of
 * the design's list; by (when by_set) and text are who and why, for the seal. The kernel
 * policy goes to block-all first; a session already ending is only killed again. */
struct session_end_why {
	const char *reason;
	bool by_set;
	uid_t by;
	const char *text;
	/* A host log record written once the policy blocks and before anything is killed, so
	 * its time bounds every connection the session was allowed (NULL: none). */
	const char *host_type;
	json_t *host_fields; /* stolen */
};
void session_end(struct deputyd *d, struct session *s, const struct session_end_why *why);
/* Ends the open sessions whose grant's jti (kind "grant") or sub ("user") is value; the
 * ids ended, as a JSON array. */
json_t *session_end_revoked(struct deputyd *d, const char *kind, const char *value,
			    const struct session_end_why *why);
/* "on_grant_expiry": "end": ends the sessions whose grant expired. Every tick. */
void session_end_tick(struct deputyd *d);
/* session_close's reason, by and text (a new object). */
json_t *session_end_fields(const struct session *s);
/* Why a resumed session's grant that failed verification ends it: "grant_expired" when its
 * (unverified) exp is past, else "revoked" (the trust it was given was withdrawn). */
const char *session_end_unverified(const char *token);

/* session_logs.c: sessions' logs as the CLI reads them, open or closed. */
json_t *session_list_json(struct deputyd *d);
int session_log_owner(struct deputyd *d, const char *id, uid_t *owner, bool *open);
ssize_t session_log_read(struct deputyd *d, const char *id, uint64_t off, char *buf, size_t n);

/* repeat.c: an event that repeats one of the session's recent coalescible ones (same key,
 * within a minute) is counted but not written: true, and the caller writes nothing.
 * Otherwise false, and the caller writes its record(s) next. delta is what the event adds
 * to the counts (the caller adds it to s->counts either way). */
bool repeat_event(struct session *s, const char *key, const struct session_counts *delta,
		  const struct timespec *when);
/* Write the `repeated` records for repeats not yet summed up, if any. */
void repeat_flush(struct session *s);
void repeat_free(struct session *s);

/* table.c: what a shim may decide alone under "token_binding": "session". Invalidating
 * bumps the generation the shims read from the session's page before every request: what
 * they hold stops being used at once (reload, revocation, a token replaced, the session
 * ending). */
void table_invalidate(struct session *s);
void table_invalidate_all(struct deputyd *d);
void table_free(struct session *s);

/* The session's TABLE reply (seq for its header), in static memory, and its page's fd to
 * pass along; NULL with the reason in err. For a shim (handle_table_get) or the proxy. */
struct dp_msg;
const struct dp_msg *table_build(struct deputyd *d, struct session *s, uint32_t seq, int *page_fd,
				 struct dp_err *err);

/* Who reported uses: named in the records; check (optional) refuses a use the reporter may
 * not make (the proxy: outside its connection's destination); cookie, when not 0, is the
 * connection every use is counted on, whatever the use says. */
struct wire_use;
struct wire_fields;
struct table_who {
	pid_t pid;
	const char *comm;
	const char *mediator; /* NULL: the shim */
	uint64_t cookie;
	const char *(*check)(struct deputyd *d, void *ctx, const struct wire_use *u);
	void *ctx;
};
/* A USES report: all logged as `token_use`, or refused whole (a `deny` record). */
void table_uses(struct deputyd *d, struct session *s, const struct wire_fields *f,
		const struct table_who *w, struct dp_err *err);

/* cookie.c: a session's TCP connections and the mediated requests on each. open: the
 * kernel reported a connect (0, -EINVAL for cookie 0, -ENOSPC at the limit, -ENOMEM);
 * request: true if the connection is known and the request counted; close: true if it was
 * known, with its count, and forgets it. */
int cookie_conn_open(struct cookie_set *cs, uint64_t cookie);
bool cookie_conn_request(struct cookie_set *cs, uint64_t cookie);
bool cookie_conn_close(struct cookie_set *cs, uint64_t cookie, uint32_t *requests);
void cookie_set_free(struct cookie_set *cs);

/* decide.c */
struct decide_req {
	const char *scheme, *host, *method, *target;
	const char *sni; /* the TLS server name the client sent; NULL or "" when none */
	int port;
	uint64_t cookie;
	pid_t pid;	      /* the asking process, for the log */
	const char *comm;     /* its name */
	const char *mediator; /* "proxy" for the proxy's requests; NULL: the shim's */
	/* The shim's word on where its socket goes (AF_INET/AF_INET6, network order; family 0:
	 * not said): binding uses it only under "kernel": "off". */
	int peer_family;
	uint8_t peer_addr[16];
	/* An MCP route's POST, asked again with its call (decide_mcp.c); NULL: not sent. */
	const char *mcp_method, *mcp_name, *body_sha256;
};
struct decide_res {
	int verdict; /* enum dp_verdict */
	char reason[256];
	const char *header; /* borrowed from config */
	char *token;	    /* malloc'd */
	char jti[DP_ID_LEN];
	const char *scope;
	const struct dp_route *mcp_route; /* an MCP call was decided under it */
	bool mcp_list;			  /* that call was tools/list */
};
void decide(struct deputyd *d, struct session *s, const struct decide_req *r,
	    struct decide_res *out);
/* The DECISION reply's fields for res (shim and proxy get the same). */
struct dp_msg;
void decide_put_reply(struct dp_msg *m, const struct decide_res *res, const struct session *s);

/* decide_mcp.c: the scope an MCP call needs under rt (NULL with why: refused); the call as
 * records carry it ({"method", "name"}); the tools/list filter rules of a DECISION. */
const char *decide_mcp_scope(const struct dp_route *rt, const struct decide_req *r, char *why,
			     size_t whysz);
json_t *decide_mcp_json(const struct decide_req *r);
void decide_mcp_put_rules(struct dp_msg *m, const struct decide_res *res, const struct session *s);

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
/* A route host on this port that the last resolution could not resolve, or NULL. */
const char *policy_unresolved(int port);
/* `deputyd -t`: warns about each route host that does not resolve; how many. */
int policy_check_hosts(const struct dp_config *cfg);
/* The allow list computed afresh from d->cfg (resolving route hosts); valid until the next
 * policy call. */
struct dp_kallow;
size_t policy_allowed(struct deputyd *d, const struct dp_kallow **out);
/* Is addr (family AF_INET: 4 bytes, AF_INET6: 16, network order) where rt's host is: one of
 * its addresses as deputyd last resolved them, or in the route's "addrs"? */
bool policy_route_has_addr(struct deputyd *d, const struct dp_route *rt, int family,
			   const uint8_t *addr);
/* The same set, each address or CIDR given to fn (prefix 32/128 for a resolved address).
 * Returns how many. */
size_t policy_route_addrs(struct deputyd *d, const struct dp_route *rt,
			  void (*fn)(void *ctx, int family, const uint8_t *addr, int prefix),
			  void *ctx);

/* kevent.c: a kernel event (ctx is the struct deputyd) as records of its session's log;
 * kevent_request counts a mediated HTTP request on the session's connection `cookie` (the
 * agent's socket: the shim's word, or the kernel's for proxied connections). */
struct dp_event;
void kevent_record(void *ctx, const struct dp_event *ev);
void kevent_request(struct deputyd *d, struct session *s, uint64_t cookie);

#endif
