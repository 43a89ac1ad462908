// SPDX-License-Identifier: MIT
/*
 * decide: one request of a session -> delegate (with a fresh token), passthrough or deny
 * (design: Policy: routes). The grant is checked here, and again by mint_token, so a token
 * outside the grant is never signed whatever the agent side sends. Every decision is
 * written to the session's log before it is answered; if the log cannot be written the
 * answer is deny.
 */
#include "deputyd.h"

#include <deputy/proto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bind.h"
#include "httphead.h"
#include "mint.h"
#include "route.h"
#include "url.h"

/* Under "token_binding": "session" a cached token is reused while it has at least this much
 * of its life left, so a backend never receives one that expires in flight. */
#define SESSION_TOKEN_MIN_LEFT 10
#define DECIDE_TOKEN_MAX 20000

static bool valid_text(const char *s, size_t max)
{
	size_t n = strlen(s);

	return n > 0 && n <= max && !url_has_ctl_or_space(s);
}

/* The asking process, on every decision record. */
static json_t *with_peer(json_t *rec, const struct decide_req *r)
{
	if (rec) {
		json_object_set_new(rec, "pid", json_integer(r->pid));
		json_object_set_new(rec, "comm", session_text(r->comm ? r->comm : ""));
		if (r->mediator)
			json_object_set_new(rec, "mediator", json_string(r->mediator));
		if (r->mcp_method)
			json_object_set_new(rec, "mcp", decide_mcp_json(r));
	}
	return rec;
}

static void deny(struct session *s, const struct decide_req *r, struct decide_res *out,
		 const char *method, const char *url, const char *scope, bool enforced,
		 const char *fmt, ...) DP_PRINTF(8, 9);

static void deny(struct session *s, const struct decide_req *r, struct decide_res *out,
		 const char *method, const char *url, const char *scope, bool enforced,
		 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
	va_end(ap);
	out->verdict = enforced ? DP_VERDICT_DENY : DP_VERDICT_PASSTHROUGH;
	s->counts.denies++;
	if (session_log(s, "deny",
			with_peer(json_pack("{s:s, s:s, s:s, s:s, s:s?, s:b}", "layer", "daemon",
					    "reason", out->reason, "method", method, "url", url,
					    "scope", scope, "enforced", enforced),
				  r)) != 0)
		out->verdict = DP_VERDICT_DENY;
}

static struct token_cache_entry *token_cache_find(struct session *s, const char *aud,
						  const char *scope)
{
	for (size_t i = 0; i < s->n_tokens; i++)
		if (strcmp(s->tokens[i].audience, aud) == 0 &&
		    strcmp(s->tokens[i].scope, scope) == 0)
			return &s->tokens[i];
	return NULL;
}

static void token_cache_put(struct session *s, const char *aud, const char *scope,
			    const char *token, const char *jti, int64_t exp)
{
	struct token_cache_entry *e = token_cache_find(s, aud, scope);
	char *copy = strdup(token);

	if (!copy)
		return;
	if (!e) {
		struct token_cache_entry *n = realloc(s->tokens, (s->n_tokens + 1) * sizeof(*n));

		if (!n) {
			free(copy);
			return;
		}
		s->tokens = n;
		e = &s->tokens[s->n_tokens];
		e->prev_jti[0] = '\0';
		e->audience = strdup(aud);
		e->scope = strdup(scope);
		if (!e->audience || !e->scope) {
			free(e->audience);
			free(e->scope);
			free(copy);
			return;
		}
		s->n_tokens++;
	} else {
		free(e->token);
		memcpy(e->prev_jti, e->jti, sizeof(e->prev_jti));
	}
	e->token = copy;
	snprintf(e->jti, sizeof(e->jti), "%s", jti);
	e->exp = exp;
}

/* scope: the route's, or the one an MCP call needs. Long, over 100 lines, because it is one
 * path read top to bottom: every check the grant makes before a token exists, then the mint,
 * then the record written before the answer. */
static void delegate(struct deputyd *d, struct session *s, const struct decide_req *r,
		     const struct dp_route *rt, const char *scope, const char *method,
		     const char *htu, struct decide_res *out)
{
	const struct dp_grant *g = s->grant;
	/* An MCP call's token is bound to its body: never one to reuse. */
	bool bind_session = d->cfg->token_binding == DP_BINDING_SESSION && !r->mcp_method;
	int64_t now = dp_now(), exp;
	struct token_cache_entry *cached;
	struct mint_request mr;
	struct dp_err err;
	char *token = NULL;
	char jti[DP_ID_LEN];
	bool reused = false;
	int ttl;

	out->scope = scope;
	if (g->exp <= now) {
		deny(s, r, out, method, htu, scope, true, "the user's grant has expired");
		return;
	}
	if (!grant_has_scope(g, scope)) {
		deny(s, r, out, method, htu, scope, true, "scope \"%s\" is not in the user's grant",
		     scope);
		return;
	}
	if (!grant_has_resource(g, rt->audience)) {
		deny(s, r, out, method, htu, scope, true,
		     "audience \"%s\" is not in the user's grant", rt->audience);
		return;
	}
	if (s->dry) { /* route test: no connection to bind, no token */
		out->verdict = DP_VERDICT_DELEGATE;
		out->header = rt->header ? rt->header : "Authorization";
		snprintf(out->reason, sizeof(out->reason), "delegated");
		return;
	}
	if (bind_check(d, s, r, rt, &err) != 0) {
		deny(s, r, out, method, htu, scope, true, "%s", err.msg);
		return;
	}
	cached = bind_session ? token_cache_find(s, rt->audience, scope) : NULL;
	if (cached && cached->exp - now >= SESSION_TOKEN_MIN_LEFT) {
		token = strdup(cached->token);
		snprintf(jti, sizeof(jti), "%s", cached->jti);
		exp = cached->exp;
		reused = true;
	} else {
		/* A token never outlives the grant it derives from. */
		ttl = d->cfg->token_ttl;
		if (g->exp - now < ttl)
			ttl = (int)(g->exp - now);
		mr = (struct mint_request){.grant = g,
					   .issuer = d->cfg->issuer,
					   .agent = s->agent,
					   .session = s->id,
					   .audience = rt->audience,
					   .scope = scope,
					   .htm = bind_session ? NULL : method,
					   .htu = bind_session ? NULL : htu,
					   .mcp_method = r->mcp_method,
					   .mcp_name = r->mcp_name,
					   .body_sha256 = r->body_sha256,
					   .ttl = ttl,
					   .now = now};
		if (mint_token(d->key, &mr, &token, jti, &exp, &err) != 0) {
			deny(s, r, out, method, htu, scope, true, "%s", err.msg);
			return;
		}
		if (bind_session) {
			token_cache_put(s, rt->audience, scope, token, jti, exp);
			table_invalidate(s); /* the shims' tables may carry it now */
		}
	}
	if (!token) {
		deny(s, r, out, method, htu, scope, true, "out of memory");
		return;
	}
	/* A token must fit in one reply frame with room to spare; refused before it is logged
	 * as given. Only an absurd grant (a huge sub) or URL gets here. */
	if (strlen(token) > DECIDE_TOKEN_MAX) {
		free(token);
		deny(s, r, out, method, htu, scope, true, "the token would exceed %d bytes",
		     DECIDE_TOKEN_MAX);
		return;
	}
	if (session_log(s, "token",
			with_peer(json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:b, s:s?}", "jti", jti,
					    "aud", rt->audience, "scope", scope, "htm", method,
					    "htu", htu, "exp", (json_int_t)exp, "reused", reused,
					    "body_sha256", r->mcp_method ? r->body_sha256 : NULL),
				  r)) != 0) {
		free(token);
		snprintf(out->reason, sizeof(out->reason), "the audit log cannot be written");
		out->verdict = DP_VERDICT_DENY;
		return;
	}
	s->counts.tokens++;
	out->verdict = DP_VERDICT_DELEGATE;
	out->token = token;
	out->header = rt->header ? rt->header : "Authorization";
	snprintf(out->jti, sizeof(out->jti), "%s", jti);
	snprintf(out->reason, sizeof(out->reason), "delegated");
}

/* A delegate route: an MCP route's POST is decided on its call, asked for first. */
static void decide_delegate(struct deputyd *d, struct session *s, const struct decide_req *r,
			    const struct dp_route *rt, const char *method, const char *url,
			    struct decide_res *out)
{
	const char *scope = rt->scope;
	char why[300];

	if (rt->mcp && strcmp(r->method, "POST") == 0) {
		if (!r->mcp_method) {
			out->verdict = DP_VERDICT_MCP_BODY;
			out->scope = rt->scope;
			snprintf(out->reason, sizeof(out->reason),
				 "an MCP route: the call decides");
			return;
		}
		out->mcp_route = rt;
		out->mcp_list = strcmp(r->mcp_method, "tools/list") == 0;
		if (!(scope = decide_mcp_scope(rt, r, why, sizeof(why)))) {
			deny(s, r, out, method, url, NULL, true, "%s", why);
			return;
		}
	} else if (r->mcp_method) {
		deny(s, r, out, method, url, NULL, true, "an MCP call for a route without \"mcp\"");
		return;
	}
	delegate(d, s, r, rt, scope, method, url, out);
}

void decide(struct deputyd *d, struct session *s, const struct decide_req *r,
	    struct decide_res *out)
{
	const struct dp_route *rt;
	char path[URL_PATH_MAX + 1], url[8192 + 64];
	const char *method = r->method, *why;

	memset(out, 0, sizeof(*out));
	out->verdict = DP_VERDICT_DENY;
	if (!hh_is_token(r->method, 32))
		method = "?";
	if (mint_htu(r->scheme, r->host, r->port, r->target, url, sizeof(url)) != 0)
		snprintf(url, sizeof(url), "(invalid)");
	if (s->state != SESSION_OPEN) {
		deny(s, r, out, method, url, NULL, true, "the session is closing");
		return;
	}
	if ((strcmp(r->scheme, "https") && strcmp(r->scheme, "http")) || r->port < 1 ||
	    r->port > 65535 || method[0] == '?' || !valid_text(r->host, 255) ||
	    !valid_text(r->target, 8192) || url_target_path(r->target, path, sizeof(path)) != 0) {
		deny(s, r, out, method, url, NULL, true, "malformed request");
		return;
	}
	rt = route_match(d->cfg, r->host, r->port, r->method, path);
	if (!rt) {
		bool monitor = d->cfg->unrouted == DP_UNROUTED_MONITOR;

		deny(s, r, out, method, url, NULL, !monitor, "no route allows %s %s", method, url);
		if (monitor && out->verdict == DP_VERDICT_PASSTHROUGH)
			s->counts.passthrough++;
		return;
	}
	if (!hh_method_known(r->method) && !(rt->method && strcmp(rt->method, r->method) == 0)) {
		deny(s, r, out, method, url, NULL, true,
		     "method %s is not an upper-case known method and no route names it", method);
		return;
	}
	/* Backends disagree on what such a path names, so no route can be said to cover it. */
	if ((why = url_path_ambiguous(path, strlen(path)))) {
		deny(s, r, out, method, url, NULL, true, "ambiguous request path: %s", why);
		return;
	}
	switch (rt->action) {
	case DP_ACTION_DENY:
		deny(s, r, out, method, url, NULL, true, "a route denies %s %s", method, url);
		return;
	case DP_ACTION_PASSTHROUGH:
		if (session_log(
			s, "passthrough",
			with_peer(json_pack("{s:s, s:s}", "method", method, "url", url), r)) != 0) {
			snprintf(out->reason, sizeof(out->reason),
				 "the audit log cannot be written");
			return;
		}
		s->counts.passthrough++;
		out->verdict = DP_VERDICT_PASSTHROUGH;
		snprintf(out->reason, sizeof(out->reason), "passthrough");
		return;
	case DP_ACTION_DELEGATE:
		decide_delegate(d, s, r, rt, method, url, out);
		return;
	}
}

void decide_put_reply(struct dp_msg *m, const struct decide_res *res, const struct session *s)
{
	dp_msg_put_u64(m, DP_T_VERDICT, (uint64_t)res->verdict);
	dp_msg_put_str(m, DP_T_REASON, res->reason);
	if (res->verdict == DP_VERDICT_DELEGATE) {
		dp_msg_put_str(m, DP_T_HEADER, res->header);
		dp_msg_put_str(m, DP_T_TOKEN, res->token);
		dp_msg_put_str(m, DP_T_JTI, res->jti);
	}
	dp_msg_put_str(m, DP_T_SCOPE, res->scope ? res->scope : "");
	/* The user is for the agent's 403 body: bounded, so the reply always fits. */
	dp_msg_put(m, DP_T_USER, s->grant->sub, strnlen(s->grant->sub, 1024));
	decide_mcp_put_rules(m, res, s);
}
