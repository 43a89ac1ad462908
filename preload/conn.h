/* SPDX-License-Identifier: MIT */
/*
 * conn: one mediated connection (a TCP socket, or an SSL object on one) as the shim sees
 * it: the request stream it parses, rewrites or refuses, and the response stream it
 * observes. The hooks own the tables that map fds and SSL objects to a conn; conn owns
 * what happens to the bytes.
 *
 * Writes: a request head is held back until it is complete (the caller is told its bytes
 * were taken), then deputyd decides and the head is sent rewritten (delegate), as is
 * (passthrough) or not at all (deny). Bodies pass untouched. When the rewritten head cannot
 * be sent at once (EAGAIN, SSL_ERROR_WANT_WRITE) the call fails as would-block and remembers
 * how much of the caller's buffer it already took: the caller retries with the same
 * arguments (OpenSSL requires it; every non-blocking writer does it) and the shim resends
 * its own buffer unchanged, then reports the caller's count.
 *
 * Refusals: the 403 is served once the responses owed for earlier requests on the same
 * connection were read. For a socket, the fd is then replaced (dup3) by one end of a
 * socketpair holding the 403, whose other end is closed: blocking and non-blocking readers,
 * poll, select and MSG_PEEK all see a readable 403 and then end-of-stream, without any
 * further help from the shim. For SSL the 403 is returned by the SSL_read hooks from memory,
 * and the same socketpair (empty) makes poll on the fd report it readable.
 *
 * What the shim cannot read (design: the `mediated` mark). On a route's destination a
 * request with any method is handed to deputyd, which refuses methods that are not
 * upper-case known ones. Where the destination is a delegate or deny route's, bytes that are
 * neither HTTP nor the TLS of the SSL hooks' own libssl (a static TLS stack writing around
 * the hooks, another protocol) make the shim reset the connection (nothing held back
 * reaches the server) and report a `deny` of layer shim.
 *
 * Memory: conns and their buffers are mmap'd, never malloc'd (a fork child of a threaded
 * program may use them).
 */
#ifndef DEPUTY_SHIM_CONN_H
#define DEPUTY_SHIM_CONN_H

#include "client.h"
#include "httphead.h"
#include "mcp.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct conn;

/* How bytes reach the network for one kind of connection. */
struct conn_ops {
	/* >= 0 bytes sent, or -1: errno (sockets) / c->ssl_ret (SSL) says why. */
	ssize_t (*send)(struct conn *c, const void *buf, size_t n, int flags);
	/* Was the last failure a would-block (EAGAIN, EINTR, WANT_WRITE)? */
	bool (*would_block)(struct conn *c);
	/* Reads from the real connection for the shim itself (conn_list.c): > 0 bytes, 0 at
	 * its end, -1 (c->ssl_ret set) otherwise. NULL: the shim never reads for itself. */
	ssize_t (*recv)(struct conn *c, void *buf, size_t n);
};

#define CONN_MAX_INFLIGHT 32
#define CONN_OUT_CAP (HH_HEAD_MAX + 16384) /* a rewritten head and what joins it */
#define CONN_TARGET_MAX 8192
/* An MCP call's framed body waits in c->out behind CONN_OUT_CAP (chunk framing on top of
 * MCP_BODY_MAX, bounded). The mapping is lazy: pages are only used when written. */
#define CONN_MCP_RAW_MAX (MCP_BODY_MAX + 65536)
#define CONN_OUT_MAP (CONN_OUT_CAP + CONN_MCP_RAW_MAX)

enum conn_req_state {
	RQ_FIRST,  /* nothing seen yet: is this HTTP at all? */
	RQ_HEAD,   /* collecting a request head */
	RQ_BODY,   /* passing a request body */
	RQ_OPAQUE, /* not HTTP (or upgraded): bytes pass untouched */
	RQ_DENIED, /* refused: writes are swallowed, reads get the 403 */
	RQ_BROKEN, /* a malformed body after its head went out: the connection is unusable */
	RQ_RESET,  /* bytes the shim cannot read, where it must: the connection was reset */
	RQ_MCP,	   /* an MCP route's body, held back with its head until complete (conn_mcp.c) */
};

struct conn {
	const struct conn_ops *ops;
	pthread_mutex_t wlock; /* the request side; held across blocking sends */
	pthread_mutex_t rlock; /* the response side */
	pthread_mutex_t lock;  /* what both sides share: inflight queue, refusal */
	int fd;
	void *ssl;
	bool https;
	int ssl_ret;  /* SSL: the last real call's return value */
	int fake_err; /* SSL: what SSL_get_error must say after a shim-made result, or 0 */
	uint64_t cookie;
	struct sockaddr_storage peer;
	int port;
	char sni[HH_HOST_MAX];
	uint32_t dest_rule; /* DP_RULE_* of the destination, as the kernel says (0: unknown) */
	bool tls_hooked;    /* socket: its TLS comes from the libssl behind the SSL hooks */

	/* request side */
	enum conn_req_state rq;
	struct hh_scan scan;
	char *head; /* HH_HEAD_MAX, mapped on first use */
	size_t hlen;
	struct hh_body body;
	char *out; /* bytes owed to the network for what the caller already handed over */
	size_t out_len, out_off;
	ssize_t resume; /* >= 0: caller bytes taken by a call that then failed as would-block */

	struct hh_req req; /* the head being decided (too big for a thread's stack) */
	struct dpc_decision dec;
	unsigned local_uses; /* requests given a session-table token (no round trip) */

	/* the MCP call being read (conn_mcp.c) */
	char *mcp_body; /* its content: MCP_BODY_MAX, mapped on first use */
	size_t mcp_raw_len;
	struct mcp_call mcp_call;
	char mcp_host[HH_HOST_MAX], mcp_method[40], mcp_target[CONN_TARGET_MAX];
	int mcp_port;

	/* requests sent whose responses are not complete yet (guarded by lock) */
	struct {
		char jti[128];
		bool head, connect, upgrade;
		bool filter; /* a tools/list answer to cut (conn_list.c) */
	} inflight[CONN_MAX_INFLIGHT];
	int qhead, qlen;
	bool upgraded;

	/* response side */
	bool resp_opaque;
	bool resp_in_body;
	struct hh_resp resp;
	struct hh_body rbody;

	/* refusal (guarded by lock) */
	bool deny_pending; /* decided, waiting for earlier responses */
	bool denied;	   /* the 403 is being served */
	bool swapped;	   /* ...by the socketpair now behind the fd (plain sockets) */
	char deny_buf[MCP_DENY_RESP_MAX];
	size_t deny_len, deny_off;

	/* what the shim answers itself ahead of the connection (conn_list.c; mapped on first
	 * use, guarded by lock) */
	struct conn_list *list;
};

/* Between conn.c and conn_mcp.c only: anonymous memory; the refusal in c->deny_buf served
 * (reason for the debug log); a request sent, its response awaited. */
void *conn_map(size_t n);
void conn_refuse(struct conn *c, const char *reason);
void conn_enqueue(struct conn *c, const char *jti);
/* conn.c, for conn_resp.c: serve what waits in memory from now on (c->lock held). */
void conn_serve_now(struct conn *c);
/* deputyd answered DP_VERDICT_MCP_BODY for the head in c->head: hold it, read the body. */
void conn_mcp_start(struct conn *c, const char *host, int port, const char *method,
		    const char *target);
/* Body bytes of that call: how many were taken. At its end the call is decided. */
size_t conn_mcp_take(struct conn *c, const char *p, size_t n);

/* Answers the shim gives the agent itself, on a connection that goes on (conn_list.c): an
 * interim response (100 Continue) queued for the agent's next read; a tools/list answer
 * under "filter_list" (the request just queued, d its DECISION) read whole by the shim and
 * handed over cut to the tools the grant allows, or replaced by a JSON-RPC error when it
 * cannot be (fail closed). */
void conn_list_interim(struct conn *c, const char *resp, size_t n);
void conn_list_expect(struct conn *c, const struct dpc_decision *d, const char *id);
/* A read the shim serves: > 0 bytes copied (kept unless peek), 0 when the read is the
 * connection's, -1 when the shim's own read failed (c->ssl_ret says how). */
ssize_t conn_list_read(struct conn *c, char *buf, size_t n, bool peek);
/* Bytes of the conn_list_read answers waiting. */
size_t conn_list_pending(struct conn *c);
/* conn_after_read left bytes to the shim (a tools/list answer to cut begins there): it
 * takes p[0..n) and reads on. */
void conn_list_take(struct conn *c, const char *p, size_t n);
void conn_list_free(struct conn *c);

/* A new conn for fd (ssl NULL) or for an SSL object on fd. NULL when out of memory. */
struct conn *conn_new(const struct conn_ops *ops, int fd, void *ssl);
void conn_free(struct conn *c);

/* Takes the caller's bytes. Returns how many were taken (all of them unless partial_ok),
 * or -1 (see conn_ops.send). */
ssize_t conn_write(struct conn *c, const char *buf, size_t len, int flags, bool partial_ok);

/* Observes n bytes the caller just read from the real connection. Returns how many the
 * caller keeps: the rest, where a tools/list answer to cut begins, is for conn_list_take. */
size_t conn_after_read(struct conn *c, const char *buf, size_t n);
/* The real connection ended (EOF or error): a waiting refusal is served now. */
void conn_after_eof(struct conn *c);
/* Must reads be answered from the shim's memory (the 403) instead of the connection? */
bool conn_serves_from_memory(struct conn *c);
/* Copies up to n bytes of the 403 (advancing unless peek). 0 at its end. */
size_t conn_deny_read(struct conn *c, char *buf, size_t n, bool peek);
size_t conn_deny_pending_bytes(struct conn *c);
/* Should reads be observed at all? (false for opaque connections: the fast path) */
bool conn_is_http(struct conn *c);

/* The socket cookie of fd (0 when it has none), and whether c->fd is still the socket c
 * was made for: an fd closed behind the shim's back (fclose, dup2) may now be a file. */
uint64_t conn_fd_cookie(int fd);
bool conn_fd_is_ours(struct conn *c);

/* Resets locks in a fork child. */
void conn_atfork_child(struct conn *c);

#endif
