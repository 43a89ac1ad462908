// SPDX-License-Identifier: MIT
/*
 * table: session tables (token_binding "session", issue 14). A session's tokens are reused
 * until shortly before they expire, so asking deputyd for each request buys nothing but a
 * round trip. A shim asks once for its session's table instead: each route it may decide
 * alone (a delegate route whose token this session already holds, within the grant) with
 * that token and the addresses it may go to, plus every other route on the same host and
 * port, in config order, so the shim's first match is deputyd's (route.c, compiled into the
 * shim). Whatever the table does not cover exactly goes to deputyd as before.
 *
 * Staleness: the generation. Each session has one page (a sealed memfd the shim maps
 * read-only) whose first u64 deputyd bumps on every change: a reload, a revocation, a
 * token replaced or added, the session closing. The shim compares it with its table's
 * before each request, a memory read and no system call, so the very next request after
 * a change asks again. The page is the shim's convenience, not a boundary: an agent that
 * fakes it only keeps using a token it holds anyway.
 *
 * Uses: the shim reports what it injected in batches (USES, NOREPLY). Each use must name a
 * token this session was given (never another session's: only this session's tokens are
 * searched) and a request its route covers; a batch that does not is refused whole and the
 * refusal logged. Accepted uses go into one `token_use` record per batch.
 */
#include "deputyd.h"

#include <deputy/proto.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "handlers.h"
#include "mint.h"
#include "route.h"
#include "url.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

#define TABLE_PAGE 4096
/* As decide.c: a token with less life left is not handed out again. */
#define TABLE_TOKEN_MIN_LEFT 10
/* What one refused use report puts in the log of its claims: a bounded prefix. */
#define TABLE_FIELD_MAX 512
/* URL bytes in one token_use record: with the rest well under a log line (AUDIT_MAX_LINE). */
#define TABLE_RECORD_TEXT 32768

static uint8_t table_reply[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];

static int table_page_make(struct session *s)
{
	uint64_t *p;
	int fd;

	if (s->table_page)
		return 0;
	fd = memfd_create("deputy-session-gen", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, TABLE_PAGE) < 0)
		goto fail;
	p = mmap(NULL, TABLE_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		goto fail;
	/* From here on nobody maps it writable or writes it; deputyd's mapping, made before
	 * the seal, still does. */
	if (fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0) {
		munmap(p, TABLE_PAGE);
		goto fail;
	}
	s->table_page = p;
	s->table_fd = fd;
	s->table_gen++;
	__atomic_store_n(s->table_page, s->table_gen, __ATOMIC_RELEASE);
	return 0;
fail:
	close(fd);
	return -errno;
}

void table_invalidate(struct session *s)
{
	s->table_gen++;
	if (s->table_page)
		__atomic_store_n(s->table_page, s->table_gen, __ATOMIC_RELEASE);
}

void table_invalidate_all(struct deputyd *d)
{
	for (struct session *s = d->sessions; s; s = s->next)
		table_invalidate(s);
}

void table_free(struct session *s)
{
	if (!s->table_page)
		return;
	table_invalidate(s); /* a shim still mapping it must not trust its table */
	munmap(s->table_page, TABLE_PAGE);
	close(s->table_fd);
	s->table_page = NULL;
}

/* ---- building the table ---------------------------------------------------------------- */

static const struct token_cache_entry *table_token(struct session *s, const struct dp_route *rt)
{
	for (size_t i = 0; i < s->n_tokens; i++)
		if (strcmp(s->tokens[i].audience, rt->audience) == 0 &&
		    strcmp(s->tokens[i].scope, rt->scope) == 0)
			return &s->tokens[i];
	return NULL;
}

/* The token a request matching rt may carry without asking, or NULL: the checks decide.c's
 * delegate() makes, on what they do not need the request for. Destination binding is the
 * shim's, against the addresses the entry carries. */
static const struct token_cache_entry *table_local(struct deputyd *d, struct session *s,
						   const struct dp_route *rt, int64_t now)
{
	const struct token_cache_entry *t;

	/* An MCP route's token carries the body's hash: such requests always ask. */
	if (rt->action != DP_ACTION_DELEGATE || rt->tls_opaque || rt->mcp || s->grant->exp <= now ||
	    !grant_has_scope(s->grant, rt->scope) || !grant_has_resource(s->grant, rt->audience))
		return NULL;
	t = table_token(s, rt);
	if (!t || t->exp - now < TABLE_TOKEN_MIN_LEFT || t->exp > s->grant->exp)
		return NULL;
	return t;
}

static void table_put_addr(void *ctx, int family, const uint8_t *addr, int prefix)
{
	uint8_t v[18];
	size_t alen = family == AF_INET ? 4 : 16;

	v[0] = (uint8_t)family;
	v[1] = (uint8_t)prefix;
	memcpy(v + 2, addr, alen);
	dp_msg_put(ctx, DP_T_ADDR, v, 2 + alen);
}

static void table_put_entry(struct deputyd *d, struct dp_msg *m, const struct dp_route *rt,
			    const struct token_cache_entry *t)
{
	uint8_t buf[DP_PROTO_MAX_PAYLOAD];
	struct dp_msg e;
	uint64_t kind = t			       ? DP_ENTRY_LOCAL
			: rt->action == DP_ACTION_DENY ? DP_ENTRY_DENY
						       : DP_ENTRY_ASK;

	/* A nested field list: built after a dummy header, which is not sent. */
	dp_msg_init(&e, buf, sizeof(buf), 0, 0, 0);
	dp_msg_put_u64(&e, DP_T_VERDICT, kind);
	dp_msg_put_str(&e, DP_T_HOST, rt->host);
	dp_msg_put_u64(&e, DP_T_PORT, (uint64_t)rt->port);
	if (rt->method)
		dp_msg_put_str(&e, DP_T_METHOD, rt->method);
	if (rt->path)
		dp_msg_put_str(&e, DP_T_TARGET, rt->path);
	if (t) {
		dp_msg_put_str(&e, DP_T_HEADER, rt->header ? rt->header : "Authorization");
		dp_msg_put_str(&e, DP_T_TOKEN, t->token);
		dp_msg_put_str(&e, DP_T_JTI, t->jti);
		dp_msg_put_u64(&e, DP_T_EXP, (uint64_t)t->exp);
		dp_msg_put_str(&e, DP_T_SCOPE, rt->scope);
		policy_route_addrs(d, rt, table_put_addr, &e);
	}
	if (e.err) {
		m->err = e.err;
		return;
	}
	dp_msg_put(m, DP_T_ENTRY, buf + DP_PROTO_HDR_LEN, e.len - DP_PROTO_HDR_LEN);
}

/* Every route sharing host and port with a route decided locally, in config order. */
static void table_put_entries(struct deputyd *d, struct session *s, struct dp_msg *m)
{
	const struct dp_config *cfg = d->cfg;
	int64_t now = dp_now();
	size_t n = 0;

	for (size_t i = 0; i < cfg->n_routes && !m->err; i++) {
		const struct dp_route *rt = &cfg->routes[i];
		bool group = false;

		for (size_t j = 0; j < cfg->n_routes && !group; j++)
			group = cfg->routes[j].port == rt->port &&
				strcmp(cfg->routes[j].host, rt->host) == 0 &&
				table_local(d, s, &cfg->routes[j], now);
		if (!group)
			continue;
		if (++n > DP_TABLE_MAX_ENTRIES) {
			m->err = -ENOSPC;
			break;
		}
		table_put_entry(d, m, rt, table_local(d, s, rt, now));
	}
}

const struct dp_msg *table_build(struct deputyd *d, struct session *s, uint32_t seq, int *page_fd,
				 struct dp_err *err)
{
	static struct dp_msg m;
	int rc = table_page_make(s);

	if (rc) {
		dp_err_set(err, "table: cannot make the session's page: %s", strerror(-rc));
		return NULL;
	}
	dp_msg_init(&m, table_reply, sizeof(table_reply), DP_MSG_TABLE, seq, 0);
	dp_msg_put_u64(&m, DP_T_GEN, s->table_gen);
	if (d->cfg->token_binding == DP_BINDING_SESSION && s->state == SESSION_OPEN)
		table_put_entries(d, s, &m);
	if (m.err) {
		/* Too big for one frame: an empty table, every request asks. */
		dp_msg_init(&m, table_reply, sizeof(table_reply), DP_MSG_TABLE, seq, 0);
		dp_msg_put_u64(&m, DP_T_GEN, s->table_gen);
	}
	*page_fd = s->table_fd;
	return &m;
}

int handle_table_get(struct deputyd *d, struct conn *c, const struct handler_req *r,
		     struct dp_err *err)
{
	int fd;
	const struct dp_msg *m = table_build(d, r->s, r->h->seq, &fd, err);

	if (!m)
		return -EIO;
	conn_send_fd(d, c, (struct dp_msg *)m, fd);
	return 0;
}

/* ---- use reports ----------------------------------------------------------------------- */

static const struct token_cache_entry *table_jti(struct session *s, const char *jti)
{
	for (size_t i = 0; i < s->n_tokens; i++)
		if (strcmp(s->tokens[i].jti, jti) == 0 || strcmp(s->tokens[i].prev_jti, jti) == 0)
			return &s->tokens[i];
	return NULL;
}

static json_t *table_text(const char *v)
{
	char buf[TABLE_FIELD_MAX + 1];

	snprintf(buf, sizeof(buf), "%s", v);
	return session_text(buf);
}

/* The batch is refused whole: a `deny` record says why and what the first bad use claimed,
 * nothing is counted as a token. */
static void table_refuse(struct session *s, const struct table_who *w, const char *why,
			 const struct wire_use *u)
{
	json_t *rec = json_pack("{s:s, s:s, s:I, s:o}", "layer", "daemon", "reason", why, "pid",
				(json_int_t)w->pid, "comm", session_text(w->comm));

	if (rec && u) {
		json_object_set_new(rec, "method", table_text(u->method));
		json_object_set_new(rec, "host", table_text(u->host));
		json_object_set_new(rec, "target", table_text(u->target));
		json_object_set_new(rec, "jti", table_text(u->jti));
	}
	if (rec && w->mediator)
		json_object_set_new(rec, "mediator", json_string(w->mediator));
	s->counts.denies++;
	session_log(s, "deny", rec);
	pr_warn("session %s: use report from pid %d refused: %s", s->id, (int)w->pid, why);
}

/* Does the use name a request its token's route covers, as deputyd would have decided it? */
static const char *table_use_check(struct deputyd *d, const struct token_cache_entry *t,
				   const struct wire_use *u)
{
	char path[URL_PATH_MAX + 1];
	const struct dp_route *rt;

	if (u->target[0] != '/' || url_target_path(u->target, path, sizeof(path)) != 0 ||
	    url_path_ambiguous(path, strlen(path)))
		return "a use report names a request path no table covers";
	rt = route_match(d->cfg, u->host, u->port, u->method, path);
	if (!rt || rt->action != DP_ACTION_DELEGATE || rt->mcp ||
	    strcmp(rt->audience, t->audience) != 0 || strcmp(rt->scope, t->scope) != 0)
		return "a use report names a request outside its token's route";
	return NULL;
}

static int table_log_uses(struct session *s, const struct table_who *w, json_t *uses)
{
	size_t n = json_array_size(uses);
	json_t *rec = json_pack("{s:o, s:I, s:I, s:o}", "uses", uses, "n", (json_int_t)n, "pid",
				(json_int_t)w->pid, "comm", session_text(w->comm));

	if (rec && w->mediator)
		json_object_set_new(rec, "mediator", json_string(w->mediator));
	return session_log(s, "token_use", rec);
}

int handle_uses(struct deputyd *d, struct conn *c, const struct handler_req *r, struct dp_err *err)
{
	struct table_who w = {.pid = c->pid, .comm = c->comm};

	table_uses(d, r->s, r->f, &w, err);
	return 0;
}

void table_uses(struct deputyd *d, struct session *s, const struct wire_fields *f,
		const struct table_who *w, struct dp_err *err)
{
	static struct wire_use u[DP_USES_MAX];
	const struct token_cache_entry *t[DP_USES_MAX];
	struct dp_err perr;
	json_t *uses;
	char why[128], url[8192 + 300];

	if (f->n_uses == 0 || f->n_uses > DP_USES_MAX) {
		snprintf(why, sizeof(why), "a use report with %zu uses (1 to %d)", f->n_uses,
			 DP_USES_MAX);
		table_refuse(s, w, why, NULL);
		return;
	}
	for (size_t i = 0; i < f->n_uses; i++) {
		const char *bad;

		if (wire_use_parse(f->use[i], f->use_len[i], &u[i], &perr) != 0) {
			table_refuse(s, w, perr.msg, NULL);
			return;
		}
		t[i] = table_jti(s, u[i].jti);
		if (!t[i]) {
			table_refuse(s, w, "a use report names a token this session was not given",
				     &u[i]);
			return;
		}
		if ((bad = table_use_check(d, t[i], &u[i])) ||
		    (w->check && (bad = w->check(d, w->ctx, &u[i])))) {
			table_refuse(s, w, bad, &u[i]);
			return;
		}
	}
	/* One record per batch, split where it would outgrow a log line (long URLs). */
	uses = json_array();
	for (size_t i = 0, text = 0; i < f->n_uses && uses; i++) {
		if (mint_htu(u[i].scheme, u[i].host, u[i].port, u[i].target, url, sizeof(url)) != 0)
			snprintf(url, sizeof(url), "(invalid)");
		if (text + strlen(url) > TABLE_RECORD_TEXT && json_array_size(uses)) {
			if (table_log_uses(s, w, uses) != 0)
				dp_err_set(err, "the audit log cannot be written");
			uses = json_array();
			text = 0;
		}
		text += strlen(url) + 200;
		json_array_append_new(uses, json_pack("{s:s, s:s, s:s, s:o, s:o}", "jti", u[i].jti,
						      "aud", t[i]->audience, "scope", t[i]->scope,
						      "htm", session_text(u[i].method), "htu",
						      session_text(url)));
		kevent_request(d, s, w->cookie ? w->cookie : u[i].cookie);
	}
	s->counts.tokens += f->n_uses;
	if (uses && table_log_uses(s, w, uses) != 0)
		dp_err_set(err, "the audit log cannot be written");
}
