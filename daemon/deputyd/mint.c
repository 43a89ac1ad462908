// SPDX-License-Identifier: MIT
/*
 * mint: deputyd's delegation tokens (RFC 9068 access-token JWTs carrying RFC 8693 "act").
 * The containment check (scope in the grant's scope, audience in its resource) lives here,
 * next to the signature, so no caller can mint outside a grant by forgetting to check.
 *
 * The claims are written as JSON text directly (jsonw, no jansson tree per call): minting
 * sits on every request of an agent. Strings from the grant and the config are valid UTF-8
 * (jansson checked them when parsing; jsonw refuses any that is not); the request-derived
 * htm and htu are checked to be ASCII here.
 */
#include "mint.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httphead.h"
#include "jsonw.h"
#include "url.h"

#define MINT_TYP "at+jwt"
#define MINT_STACK_BUF 2048
#define MINT_HTU_PATH_MAX 8192 /* the longest request target deputyd decides on */

static bool is_printable_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* RFC 9068 §2.2 claims, then RFC 8693 act, then the RFC 9449-style request binding. */
static void mint_write_claims(struct jw *jw, const struct mint_request *req, const char *jti,
			      int64_t exp)
{
	const struct dp_grant *g = req->grant;

	jw_obj_open(jw);
	jw_member_str(jw, "iss", req->issuer);
	jw_member_str(jw, "sub", g->sub);
	jw_key(jw, "act");
	jw_obj_open(jw);
	jw_member_str(jw, "sub", req->agent);
	jw_obj_close(jw);
	jw_member_str(jw, "client_id", req->agent);
	jw_member_str(jw, "aud", req->audience);
	jw_member_str(jw, "scope", req->scope);
	jw_member_int(jw, "iat", req->now);
	jw_member_int(jw, "exp", exp);
	jw_member_str(jw, "jti", jti);
	jw_member_str(jw, "sid", req->session);
	jw_key(jw, "grant");
	jw_obj_open(jw);
	jw_member_str(jw, "iss", g->iss);
	jw_member_str(jw, "jti", g->jti);
	jw_obj_close(jw);
	if (req->htm)
		jw_member_str(jw, "htm", req->htm);
	if (req->htu)
		jw_member_str(jw, "htu", req->htu);
	if (req->mcp_method) {
		jw_key(jw, "mcp");
		jw_obj_open(jw);
		jw_member_str(jw, "method", req->mcp_method);
		if (req->mcp_name && req->mcp_name[0])
			jw_member_str(jw, "name", req->mcp_name);
		jw_obj_close(jw);
		jw_member_str(jw, "body_sha256", req->body_sha256 ? req->body_sha256 : "");
	}
	jw_obj_close(jw);
}

int mint_token(const struct dp_key *key, const struct mint_request *req, char **token,
	       char jti[DP_ID_LEN], int64_t *exp, struct dp_err *err)
{
	const struct dp_grant *g = req->grant;
	char stackbuf[MINT_STACK_BUF], b[72], *heap = NULL;
	struct jw jw;
	size_t strs, cap = sizeof(stackbuf);
	ssize_t len;
	int64_t e;
	int r;

	*token = NULL;
	if (!g || !req->issuer || !req->agent || !req->session || !req->audience || !req->scope ||
	    req->ttl <= 0) {
		dp_err_set(err, "incomplete mint request");
		return -EINVAL;
	}
	/* The session already bound agent and grant; checked again because a token naming
	 * another agent than the grant's may_act would be a delegation the user never gave. */
	if (g->agent && strcmp(g->agent, req->agent) != 0) {
		dp_err_set(err, "agent \"%s\" is not the grant's may_act", DP_SAFE(b, req->agent));
		return -EACCES;
	}
	if (!grant_has_scope(g, req->scope)) {
		dp_err_set(err, "scope \"%s\" is not in the grant", DP_SAFE(b, req->scope));
		return -EACCES;
	}
	if (!grant_has_resource(g, req->audience)) {
		dp_err_set(err, "audience \"%s\" is not in the grant's resource",
			   DP_SAFE(b, req->audience));
		return -EACCES;
	}
	if (g->exp && req->now >= g->exp) {
		dp_err_set(err, "grant expired");
		return -EACCES;
	}
	if ((req->htm && !hh_is_token(req->htm, strlen(req->htm))) ||
	    (req->htu && !is_printable_ascii(req->htu))) {
		dp_err_set(err, "htm or htu is not a valid method or URL");
		return -EINVAL;
	}
	r = dp_random_id(jti);
	if (r) {
		dp_err_set(err, "no randomness: %s", strerror(-r));
		return r;
	}
	/* A delegation never outlives the consent it derives from. */
	e = req->now + req->ttl;
	if (g->exp && e > g->exp)
		e = g->exp;

	strs = strlen(req->issuer) + strlen(g->sub) + strlen(req->agent) * 2 +
	       strlen(req->audience) + strlen(req->scope) + strlen(req->session) + strlen(g->iss) +
	       strlen(g->jti) + (req->htm ? strlen(req->htm) : 0) +
	       (req->htu ? strlen(req->htu) : 0) + (req->mcp_method ? strlen(req->mcp_method) : 0) +
	       (req->mcp_name ? strlen(req->mcp_name) : 0) +
	       (req->body_sha256 ? strlen(req->body_sha256) : 0);
	/* Each byte escapes to at most 6 (\u00XX); 512 covers the names and numbers. */
	if (6 * strs + 512 > cap) {
		cap = 6 * strs + 512;
		heap = malloc(cap);
		if (!heap) {
			dp_err_set(err, "out of memory");
			return -ENOMEM;
		}
	}
	jw_init(&jw, heap ? heap : stackbuf, cap, 0);
	mint_write_claims(&jw, req, jti, e);
	len = jw_end(&jw);
	if (len < 0) {
		free(heap);
		dp_err_set(err, "cannot write the claims: %s", strerror((int)-len));
		return (int)len;
	}
	*token = dp_jws_sign_raw(key, MINT_TYP, jw.p, (size_t)len, err);
	free(heap);
	if (!*token)
		return -EIO;
	if (exp)
		*exp = e;
	return 0;
}

/* RFC 3986 leaves these out of URIs; a normalised htu carries them percent-encoded. */
static bool url_needs_escape(unsigned char c)
{
	return c <= 0x20 || c >= 0x7f || strchr("\"<>\\^`{|}", c);
}

static bool host_char_ok(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == ':';
}

int mint_htu(const char *scheme, const char *host, int port, const char *target, char *out,
	     size_t outsz)
{
	static const char hex[] = "0123456789ABCDEF";
	char path[MINT_HTU_PATH_MAX + 1] = "/";
	const char *h = host;
	size_t o = 0, hn;
	bool v6;
	int defport, r;

#define PUT(c)                                                                                     \
	do {                                                                                       \
		if (o + 1 >= outsz)                                                                \
			return -ENOSPC;                                                            \
		out[o++] = (c);                                                                    \
	} while (0)

	if (!scheme || !host || !out || outsz == 0)
		return -EINVAL;
	if (strcasecmp(scheme, "https") == 0)
		defport = 443;
	else if (strcasecmp(scheme, "http") == 0)
		defport = 80;
	else
		return -EINVAL;
	if (port < 0 || port > 65535)
		return -EINVAL;
	hn = strlen(h);
	if (hn >= 2 && h[0] == '[' && h[hn - 1] == ']') {
		h++;
		hn -= 2;
	}
	if (hn == 0)
		return -EINVAL;
	for (size_t i = 0; i < hn; i++)
		if (!host_char_ok((unsigned char)h[i]))
			return -EINVAL;
	v6 = memchr(h, ':', hn) != NULL;

	/* of an absolute-form target (a proxy request) only the path counts: the authority
	 * is ours */
	if (target && *target && (r = url_target_path(target, path, sizeof(path))) != 0)
		return r;

	for (const char *s = defport == 443 ? "https://" : "http://"; *s; s++)
		PUT(*s);
	if (v6)
		PUT('[');
	for (size_t i = 0; i < hn; i++)
		PUT((char)tolower((unsigned char)h[i]));
	if (v6)
		PUT(']');
	if (port > 0 && port != defport) {
		char num[8];

		snprintf(num, sizeof(num), ":%d", port);
		for (const char *s = num; *s; s++)
			PUT(*s);
	}
	for (const char *s = path; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (url_needs_escape(c)) {
			PUT('%');
			PUT(hex[c >> 4]);
			PUT(hex[c & 15]);
		} else {
			PUT((char)c);
		}
	}
	out[o] = '\0';
	return 0;
#undef PUT
}
