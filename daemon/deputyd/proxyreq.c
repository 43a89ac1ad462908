// SPDX-License-Identifier: MIT
/*
 * proxyreq: what deputy-proxy may ask deputyd, one handler per message (see proxyd.h for
 * the process and its channel). A connection is attributed from the accepted socket itself:
 * its local address must be the proxy's, its peer is looked up in the kernel's map of
 * redirected connections; later messages name deputyd's connection id, never a session. A
 * leaf is minted only for an SNI that is a route host of the original destination, and a
 * request's host must be that SNI (or, in plain HTTP, such a route host).
 */
#include "proxyreq.h"

#include <arpa/inet.h>
#include <deputy/proto.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "kernel.h"
#include "proxyd.h"
#include "sessca.h"
#include "wire.h"

/* Open connections deputyd tracks for the proxy (the proxy caps its own lower). */
#define PCONN_MAX 4096

struct pconn {
	uint64_t id;
	char sid[DP_ID_LEN];
	struct dp_proxied orig;
	char sni[256]; /* the route host the leaf was minted for; "" for plain HTTP */
	char comm[17];
	bool tls_asked; /* a leaf was asked for: the connection is TLS from then on */
	bool attested;	/* plain, or TLS with a leaf for a route host: requests may follow */
};

static struct pconn *conns;
static size_t n_conns;
static uint64_t conn_ids;

void proxyreq_forget_all(void)
{
	free(conns);
	conns = NULL;
	n_conns = 0;
}

size_t proxyreq_open(const char *sid)
{
	size_t n = 0;

	for (size_t i = 0; i < n_conns; i++)
		n += strcmp(conns[i].sid, sid) == 0;
	return n;
}

struct pmsg {
	struct dp_hdr h;
	uint64_t conn; /* DP_T_CONN, 0 when absent */
	int fd;	       /* SCM_RIGHTS, or -1 */
	struct wire_fields f;
};

/* A string field, "" when absent. */
static const char *pm_str(const struct pmsg *pm, uint16_t tag)
{
	return pm->f.str[tag] ? pm->f.str[tag] : "";
}

static void reply_error(struct deputyd *d, const struct pmsg *pm, const char *reason)
{
	uint8_t buf[600];
	struct dp_msg m;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_ERROR, pm->h.seq, 0);
	dp_msg_put(&m, DP_T_REASON, reason, strnlen(reason, 512));
	proxyd_reply(d, &m);
}

static struct pconn *conn_find(uint64_t id)
{
	for (size_t i = 0; i < n_conns; i++)
		if (conns[i].id == id)
			return &conns[i];
	return NULL;
}

/* The open session a connection belongs to, or NULL. */
static struct session *conn_session(struct deputyd *d, const struct pconn *pc)
{
	struct session *s = session_find(d, pc->sid);

	return s && s->state == SESSION_OPEN ? s : NULL;
}

static json_t *proxy_record(json_t *rec, const struct pconn *pc)
{
	if (rec) {
		json_object_set_new(rec, "pid", json_integer(pc->orig.pid));
		json_object_set_new(rec, "comm", session_text(pc->comm));
		json_object_set_new(rec, "mediator", json_string("proxy"));
		json_object_set_new(rec, "cookie", json_integer((json_int_t)pc->orig.cookie));
	}
	return rec;
}

static void log_deny(struct session *s, const struct pconn *pc, const char *layer,
		     const char *reason, const char *method, const char *target)
{
	s->counts.denies++;
	session_log(
	    s, "deny",
	    proxy_record(json_pack("{s:s, s:o, s:o, s:o, s:o, s:b}", "layer", layer, "reason",
				   session_text(reason), "host", session_text(pc->sni), "method",
				   session_text(method ? method : ""), "target",
				   session_text(target ? target : ""), "enforced", true),
			 pc));
}

static void read_comm(pid_t pid, char out[17])
{
	char path[64];
	FILE *f;

	out[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (f) {
		if (fgets(out, 17, f))
			out[strcspn(out, "\n")] = '\0';
		fclose(f);
	}
}

/* PROXY_CONN: who is on the other end of the socket the proxy accepted, by the kernel's map
 * of redirected connections, looked up with the socket's own addresses. */
static void on_conn(struct deputyd *d, struct pmsg *pm)
{
	struct sockaddr_storage local, peer;
	socklen_t ll = sizeof(local), pl = sizeof(peer);
	struct dp_proxied orig;
	struct session *s;
	struct pconn *pc;
	uint8_t buf[256];
	struct dp_msg m;
	int rc;

	if (pm->fd < 0 || getsockname(pm->fd, (struct sockaddr *)&local, &ll) != 0 ||
	    getpeername(pm->fd, (struct sockaddr *)&peer, &pl) != 0 ||
	    !proxyd_is_listener(&local)) {
		reply_error(d, pm, "not a connection to the proxy's listening address");
		return;
	}
	rc = kernel_proxied_lookup(d->kernel, (struct sockaddr *)&peer, pl, &orig);
	if (rc != 0) {
		reply_error(d, pm,
			    rc == -ENOENT ? "not a redirected connection" : "kernel lookup failed");
		return;
	}
	for (s = d->sessions; s; s = s->next)
		if (s->cg_id == orig.cgroup_id && s->state == SESSION_OPEN)
			break;
	if (!s || !proxyd_sessca(s->id)) {
		reply_error(d, pm, "no open session for this connection");
		return;
	}
	if (n_conns == PCONN_MAX) {
		reply_error(d, pm, "too many proxied connections");
		return;
	}
	if (n_conns % 64 == 0) {
		struct pconn *n = realloc(conns, (n_conns + 64) * sizeof(*n));

		if (!n) {
			reply_error(d, pm, "out of memory");
			return;
		}
		conns = n;
	}
	pc = &conns[n_conns++];
	memset(pc, 0, sizeof(*pc));
	pc->id = ++conn_ids;
	pc->orig = orig;
	pc->attested = true; /* until it asks for a leaf: plain HTTP */
	snprintf(pc->sid, sizeof(pc->sid), "%s", s->id);
	read_comm((pid_t)orig.pid, pc->comm);
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_PROXY_CONN_OK, pm->h.seq, 0);
	dp_msg_put_u64(&m, DP_T_CONN, pc->id);
	dp_msg_put_u64(&m, DP_T_FAMILY, (uint64_t)orig.family);
	dp_msg_put(&m, DP_T_ADDR, orig.addr, orig.family == AF_INET ? 4 : 16);
	dp_msg_put_u64(&m, DP_T_PORT, orig.port);
	dp_msg_put_u64(&m, DP_T_COOKIE, s->cg_id);
	proxyd_reply(d, &m);
}

/* Is host a route host on the original destination's port, and the original destination one
 * of its addresses? (The kernel redirected the connect because some route's host resolved
 * there; the name the agent uses must be one of those.) The addresses are policy.c's last
 * resolution, as for destination binding: no lookup here, on deputyd's loop. */
static bool host_serves(struct deputyd *d, const char *host, const struct dp_proxied *o)
{
	for (size_t i = 0; i < d->cfg->n_routes; i++) {
		const struct dp_route *rt = &d->cfg->routes[i];

		if (rt->port == o->port && !rt->tls_opaque && strcasecmp(rt->host, host) == 0 &&
		    policy_route_has_addr(d, rt, o->family, o->addr))
			return true;
	}
	return false;
}

/* PROXY_LEAF: a certificate for the SNI, only if it names a route host of the original
 * destination. */
static void on_leaf(struct deputyd *d, struct pmsg *pm)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;
	const char *sni = pm_str(pm, DP_T_HOST), *pem;
	struct dp_err err;
	uint64_t id;
	struct dp_msg m;

	if (!s || pc->tls_asked) {
		reply_error(d, pm, "no such connection, or a second handshake");
		return;
	}
	pc->tls_asked = true;
	pc->attested = false;
	snprintf(pc->sni, sizeof(pc->sni), "%s", sni);
	if (!sni[0] || !host_serves(d, sni, &pc->orig)) {
		char reason[400];

		snprintf(reason, sizeof(reason),
			 sni[0] ? "TLS server name \"%s\" is not a route host of the destination"
				: "TLS without a server name (SNI)%s",
			 sni);
		log_deny(s, pc, "daemon", reason, NULL, NULL);
		pc->sni[0] = '\0';
		reply_error(d, pm, reason);
		return;
	}
	if (sessca_leaf(proxyd_sessca(s->id), sni, &pem, &id, &err) != 0) {
		log_deny(s, pc, "daemon", err.msg, NULL, NULL);
		reply_error(d, pm, err.msg);
		return;
	}
	pc->attested = true;
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DATA_REPLY, pm->h.seq, 0);
	dp_msg_put_str(&m, DP_T_DATA, pem);
	dp_msg_put_u64(&m, DP_T_OFFSET, id);
	proxyd_reply(d, &m);
}

/* PROXY_DECIDE: the shim's DECIDE, for a connection deputyd attributed. The host the request
 * names must be the one the TLS handshake named (or, in plain HTTP, a route host of the
 * original destination). */
static void on_decide(struct deputyd *d, struct pmsg *pm)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;
	const char *scheme = pm_str(pm, DP_T_SCHEME), *host = pm_str(pm, DP_T_HOST);
	struct decide_req r = {0};
	struct decide_res res;
	struct dp_msg m;
	struct dp_err err;
	bool tls = pc && pc->tls_asked;

	if (!s) {
		reply_error(d, pm, "no such connection");
		return;
	}
	if (!pm->f.has[DP_T_METHOD] || !pm->f.has[DP_T_TARGET] || !pc->attested) {
		reply_error(d, pm, "decide: missing fields, or a refused connection");
		return;
	}
	r = (struct decide_req){.scheme = tls ? "https" : "http",
				.host = host,
				.sni = tls ? pc->sni : NULL,
				.method = pm_str(pm, DP_T_METHOD),
				.target = pm_str(pm, DP_T_TARGET),
				.port = pc->orig.port,
				.cookie = pc->orig.cookie,
				.pid = (pid_t)pc->orig.pid,
				.comm = pc->comm,
				.mediator = "proxy",
				.mcp_method = pm->f.str[DP_T_MCP_METHOD],
				.mcp_name = pm->f.str[DP_T_MCP_NAME],
				.body_sha256 = pm->f.str[DP_T_BODY_SHA256]};
	if (strcmp(scheme, r.scheme) != 0 ||
	    (tls ? strcasecmp(host, pc->sni) != 0 : !host_serves(d, host, &pc->orig))) {
		char reason[400];

		snprintf(reason, sizeof(reason),
			 tls ? "the request's host \"%s\" is not the TLS server name"
			     : "the request's host \"%s\" is not a route host of the destination",
			 host);
		log_deny(s, pc, "daemon", reason, r.method, r.target);
		res = (struct decide_res){.verdict = DP_VERDICT_DENY};
		snprintf(res.reason, sizeof(res.reason), "%s", reason);
	} else {
		kevent_request(d, s, pc->orig.cookie);
		decide(d, s, &r, &res);
		if (audit_log_flush(s->log, &err) != 0) {
			free(res.token);
			res = (struct decide_res){.verdict = DP_VERDICT_DENY};
			snprintf(res.reason, sizeof(res.reason), "the audit log cannot be written");
		}
	}
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DECISION, pm->h.seq, 0);
	decide_put_reply(&m, &res, s);
	/* As for a shim: the proxy may fetch the session's table (PROXY_TABLE_GET). */
	if (d->cfg->token_binding == DP_BINDING_SESSION)
		dp_msg_put_u64(&m, DP_T_GEN, s->table_gen);
	free(res.token);
	proxyd_reply(d, &m);
}

/* PROXY_TABLE_GET: the table of the session deputyd attributed the connection to. */
static void on_table_get(struct deputyd *d, struct pmsg *pm)
{
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;
	const struct dp_msg *m;
	struct dp_err err;
	int fd;

	if (!s || !pc->attested) {
		reply_error(d, pm, "no such connection, or a refused one");
		return;
	}
	m = table_build(d, s, pm->h.seq, &fd, &err);
	if (!m) {
		reply_error(d, pm, err.msg);
		return;
	}
	proxyd_reply_fd(d, (struct dp_msg *)m, fd);
}

/* A use the proxy reports must be one its connection could carry: the scheme, the port of
 * the original destination, and the host the handshake named (or, in plain HTTP, a route
 * host of that destination) — as on_decide requires of a request. */
static const char *use_check(struct deputyd *d, void *ctx, const struct wire_use *u)
{
	const struct pconn *pc = ctx;
	bool tls = pc->tls_asked;

	if (!pc->attested)
		return "a use report for a connection deputyd refused";
	if (strcmp(u->scheme[0] ? u->scheme : "https", tls ? "https" : "http") != 0 ||
	    u->port != pc->orig.port ||
	    (tls ? strcasecmp(u->host, pc->sni) != 0 : !host_serves(d, u->host, &pc->orig)))
		return "a use report names a request its connection did not carry";
	return NULL;
}

/* PROXY_USES: credited to the session deputyd attributed the connection to, whatever a
 * use says. */
static void on_uses(struct deputyd *d, struct pmsg *pm)
{
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;
	struct table_who w;
	struct dp_err err;

	if (!s) {
		pr_warn("proxy: use report for an unknown connection %llu ignored",
			(unsigned long long)pm->conn);
		return;
	}
	w = (struct table_who){.pid = (pid_t)pc->orig.pid,
			       .comm = pc->comm,
			       .mediator = "proxy",
			       .cookie = pc->orig.cookie,
			       .check = use_check,
			       .ctx = pc};
	err.msg[0] = '\0';
	table_uses(d, s, &pm->f, &w, &err);
	if (err.msg[0])
		pr_warn("session %s: %s", s->id, err.msg);
}

static void on_response(struct deputyd *d, struct pmsg *pm)
{
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;
	uint64_t status = pm->f.u64[DP_T_STATUS];

	if (!s || status > 999)
		return;
	s->counts.responses++;
	session_log(s, "response",
		    proxy_record(json_pack("{s:o, s:I}", "jti", session_text(pm_str(pm, DP_T_JTI)),
					   "status", (json_int_t)status),
				 pc));
}

static void on_deny(struct deputyd *d, struct pmsg *pm)
{
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;

	if (s)
		log_deny(s, pc, "proxy", pm_str(pm, DP_T_REASON), pm_str(pm, DP_T_METHOD),
			 pm_str(pm, DP_T_TARGET));
}

static void on_close(struct deputyd *d, struct pmsg *pm)
{
	struct pconn *pc = conn_find(pm->conn);

	if (pc)
		*pc = conns[--n_conns];
}

static const struct {
	uint16_t type;
	bool noreply;
	void (*fn)(struct deputyd *d, struct pmsg *pm);
} handlers[] = {
    {DP_MSG_PROXY_CONN, false, on_conn},
    {DP_MSG_PROXY_LEAF, false, on_leaf},
    {DP_MSG_PROXY_DECIDE, false, on_decide},
    {DP_MSG_PROXY_RESPONSE, true, on_response},
    {DP_MSG_PROXY_DENY, true, on_deny},
    {DP_MSG_PROXY_CLOSE, true, on_close},
    {DP_MSG_PROXY_TABLE_GET, false, on_table_get},
    {DP_MSG_PROXY_USES, true, on_uses},
};

/* One message: NULL, or why the proxy broke the protocol (it is then stopped). */
const char *proxyreq_handle(struct deputyd *d, const uint8_t *buf, size_t n, int fd)
{
	static struct pmsg pm; /* one thread; 40 KiB is better off the stack */
	struct dp_err err;

	if (n < DP_PROTO_HDR_LEN)
		return "short message";
	memcpy(&pm.h, buf, sizeof(pm.h));
	pm.fd = fd;
	if (dp_hdr_check(&pm.h) != 0 || pm.h.len != n - DP_PROTO_HDR_LEN)
		return "bad header";
	if (wire_parse(buf + DP_PROTO_HDR_LEN, pm.h.len, &pm.f, &err) != 0)
		return "malformed fields";
	pm.conn = pm.f.u64[DP_T_CONN];
	if ((pm.fd >= 0) != (pm.h.type == DP_MSG_PROXY_CONN))
		return "a socket where none belongs, or none where one does";
	for (size_t i = 0; i < DP_ARRAY_SIZE(handlers); i++)
		if (handlers[i].type == pm.h.type) {
			/* A request that gets a reply must ask for one, and the reverse. */
			if (handlers[i].noreply != ((pm.h.flags & DP_F_NOREPLY) != 0))
				return "reply flag";
			handlers[i].fn(d, &pm);
			return NULL;
		}
	return "unknown message type";
}
