// SPDX-License-Identifier: MIT
/*
 * grant: the trusted issuers and the verification of user grants. A grant is refused unless
 * every check passes; each refusal has its own one-line reason, because the operator reading
 * "deputy run" output must learn which claim was wrong. Strings from the token that end up
 * in a reason are cut and stripped of control bytes.
 *
 * Key sets: jwks_file is read and jwks_uri (or the one discovery finds) fetched at
 * trust_new; an unknown kid makes the issuer's keys be read again (key rotation), at most
 * once every TRUST_REFETCH_S seconds per issuer so hostile tokens with random kids cannot
 * turn deputyd into a fetch amplifier. A failed (re)load keeps the keys already known and is
 * logged, never fatal; fetched keys are cached in the state directory (jwks_fetch.h).
 *
 * Claim shapes: IdPs say "scp" for scope, give one resource as a string, leave out jti or
 * name the agent in azp. Those shapes are read as what they mean, and an issuer's "claims"
 * renames sub, jti, scope, resource and agent; iss, aud, exp, nbf, iat, the signature and
 * the agent comparison stay exactly as strict.
 */
#include "grant.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "jwks_fetch.h"
#include "jws.h"

#define TRUST_REFETCH_S 30
#define GRANT_MAX_LIST 256 /* scopes, resources */

struct trust_issuer {
	char *issuer;
	char *source; /* jwks_file, jwks_uri, or the issuer when discovery finds the keys */
	bool from_file;
	bool discovery;
	char *ca_file;
	const char *cache_dir;	  /* the trust's */
	char *claims[DP_CLAIM_N]; /* the issuer's claim names; NULL: deputy's */
	struct dp_keyset *keys;
	int64_t loaded_at; /* last (re)load attempt, dp_now() */
	bool want_fetch;   /* deferred: a fetch is asked for (trust_fetch_take) */
	bool fetching;	   /* deferred: taken, its result not yet back */
};

struct dp_trust {
	pthread_mutex_t lock; /* guards keys, loaded_at and the fetch flags of every issuer */
	struct trust_issuer *issuers;
	size_t n;
	bool defer;	 /* jwks_uri keys are fetched by the caller, never inside grant_verify */
	char *cache_dir; /* <state_dir>/issuer-keys, NULL without a state_dir */
};

/* The network keys of an issuer: the same whether fetched here or by trust_fetch_load. */
static struct dp_keyset *issuer_net_load(const char *issuer, const char *source, bool discovery,
					 const char *ca_file, const char *cache_dir,
					 struct dp_err *err)
{
	const struct jwks_issuer src = {.issuer = issuer,
					.jwks_uri = discovery ? NULL : source,
					.ca_file = ca_file,
					.cache_dir = cache_dir};

	return jwks_issuer_load(&src, err);
}

static struct dp_keyset *issuer_load(const struct trust_issuer *ti, struct dp_err *err)
{
	if (ti->from_file)
		return jwks_load(ti->source, err);
	return issuer_net_load(ti->issuer, ti->source, ti->discovery, ti->ca_file, ti->cache_dir,
			       err);
}

static void issuer_reload(struct trust_issuer *ti, int64_t now)
{
	struct dp_err err = {""};
	struct dp_keyset *ks;

	ti->loaded_at = now;
	ks = issuer_load(ti, &err);
	if (!ks) {
		pr_warn("trusted issuer %s: keys not loaded: %s", ti->issuer, err.msg);
		return;
	}
	dp_keyset_free(ti->keys);
	ti->keys = ks;
	pr_debug("trusted issuer %s: %zu keys from %s", ti->issuer, dp_keyset_count(ks),
		 ti->source);
}

static int issuer_init(struct trust_issuer *ti, const struct dp_trusted_issuer *ci, const char *src,
		       const char *cache_dir)
{
	ti->issuer = strdup(ci->issuer);
	ti->source = strdup(src);
	ti->from_file = ci->jwks_file != NULL;
	ti->discovery = ci->discovery;
	ti->cache_dir = cache_dir;
	if (!ti->issuer || !ti->source)
		return -ENOMEM;
	if (ci->ca_file && !(ti->ca_file = strdup(ci->ca_file)))
		return -ENOMEM;
	for (size_t k = 0; k < DP_CLAIM_N; k++)
		if (ci->claims[k] && !(ti->claims[k] = strdup(ci->claims[k])))
			return -ENOMEM;
	return 0;
}

/* A deferred trust takes the keys of a jwks_uri from old (same issuer and source), fetch
 * state included; otherwise it keeps asking for a fetch. */
static void issuer_adopt(struct trust_issuer *ti, struct dp_trust *old)
{
	for (size_t i = 0; old && i < old->n; i++) {
		struct trust_issuer *o = &old->issuers[i];

		if (strcmp(o->issuer, ti->issuer) || strcmp(o->source, ti->source))
			continue;
		pthread_mutex_lock(&old->lock);
		if (!o->keys && !o->fetching) {
			/* never loaded: the reload is a good moment to try again */
			pthread_mutex_unlock(&old->lock);
			return;
		}
		ti->keys = o->keys;
		o->keys = NULL;
		ti->loaded_at = o->loaded_at;
		ti->want_fetch = o->want_fetch;
		ti->fetching = o->fetching;
		pthread_mutex_unlock(&old->lock);
		return;
	}
}

static struct dp_trust *trust_build(const struct dp_config *cfg, bool defer, struct dp_err *err)
{
	struct dp_trust *t = calloc(1, sizeof(*t));
	int64_t now = dp_now();

	if (!t) {
		dp_err_set(err, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&t->lock, NULL);
	if (cfg->state_dir && asprintf(&t->cache_dir, "%s/issuer-keys", cfg->state_dir) < 0) {
		t->cache_dir = NULL;
		trust_free(t);
		dp_err_set(err, "out of memory");
		return NULL;
	}
	t->issuers = calloc(cfg->n_issuers ? cfg->n_issuers : 1, sizeof(*t->issuers));
	if (!t->issuers) {
		trust_free(t);
		dp_err_set(err, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_issuers; i++) {
		const struct dp_trusted_issuer *ci = &cfg->issuers[i];
		struct trust_issuer *ti = &t->issuers[t->n];
		const char *src = ci->jwks_file	  ? ci->jwks_file
				  : ci->jwks_uri  ? ci->jwks_uri
				  : ci->discovery ? ci->issuer
						  : NULL;

		if (!ci->issuer || !src) {
			dp_err_set(err,
				   "trusted_issuers[%zu]: needs issuer and jwks_file, jwks_uri or "
				   "discovery",
				   i);
			trust_free(t);
			return NULL;
		}
		if (!ci->jwks_file && !jwks_url_allowed(src)) {
			dp_err_set(err,
				   "trusted_issuers[%zu].jwks_uri: must be https:// (http:// only "
				   "to loopback)",
				   i);
			trust_free(t);
			return NULL;
		}
		t->n++;
		if (issuer_init(ti, ci, src, t->cache_dir)) {
			trust_free(t);
			dp_err_set(err, "out of memory");
			return NULL;
		}
		if (ci->jwks_file) {
			/* A key file is local configuration: unreadable means misconfigured, and
			 * deputyd refuses to start. A jwks_uri may be down for a while: logged. */
			struct dp_err lerr = {""};

			ti->loaded_at = now;
			ti->keys = jwks_load(ti->source, &lerr);
			if (!ti->keys) {
				dp_err_set(err, "trusted_issuers[%zu].jwks_file: %s", i, lerr.msg);
				trust_free(t);
				return NULL;
			}
		} else if (defer) {
			ti->loaded_at = now;
			ti->want_fetch = true;
		} else {
			issuer_reload(ti, now);
		}
	}
	t->defer = defer;
	return t;
}

struct dp_trust *trust_new(const struct dp_config *cfg, struct dp_err *err)
{
	return trust_build(cfg, false, err);
}

struct dp_trust *trust_new_deferred(const struct dp_config *cfg, struct dp_trust *old,
				    struct dp_err *err)
{
	struct dp_trust *t = trust_build(cfg, true, err);

	/* Only once the new trust is whole: a failed reload must leave old's keys alone. */
	for (size_t i = 0; t && i < t->n; i++)
		if (!t->issuers[i].keys)
			issuer_adopt(&t->issuers[i], old);
	return t;
}

void trust_defer_fetches(struct dp_trust *t)
{
	pthread_mutex_lock(&t->lock);
	t->defer = true;
	pthread_mutex_unlock(&t->lock);
}

static char *strdup_opt(const char *s, bool *oom)
{
	char *d = s ? strdup(s) : NULL;

	if (s && !d)
		*oom = true;
	return d;
}

int trust_fetch_take(struct dp_trust *t, struct trust_fetch *f)
{
	int r = 0;

	memset(f, 0, sizeof(*f));
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n && !r; i++) {
		struct trust_issuer *ti = &t->issuers[i];
		bool oom = false;

		if (!ti->want_fetch)
			continue;
		f->issuer = strdup_opt(ti->issuer, &oom);
		f->source = strdup_opt(ti->source, &oom);
		f->ca_file = strdup_opt(ti->ca_file, &oom);
		f->cache_dir = strdup_opt(ti->cache_dir, &oom);
		f->discovery = ti->discovery;
		if (oom) {
			trust_fetch_clear(f);
			r = -ENOMEM;
			break;
		}
		ti->want_fetch = false;
		ti->fetching = true;
		r = 1;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

struct dp_keyset *trust_fetch_load(const struct trust_fetch *f, struct dp_err *err)
{
	return issuer_net_load(f->issuer, f->source, f->discovery, f->ca_file, f->cache_dir, err);
}

void trust_fetch_clear(struct trust_fetch *f)
{
	free(f->issuer);
	free(f->source);
	free(f->ca_file);
	free(f->cache_dir);
	memset(f, 0, sizeof(*f));
}

void trust_fetch_done(struct dp_trust *t, const char *issuer, const char *source,
		      struct dp_keyset *ks)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		struct trust_issuer *ti = &t->issuers[i];

		if (strcmp(ti->issuer, issuer) || strcmp(ti->source, source))
			continue;
		ti->fetching = false;
		if (ks) {
			dp_keyset_free(ti->keys);
			ti->keys = ks;
			ks = NULL;
		}
		break;
	}
	pthread_mutex_unlock(&t->lock);
	dp_keyset_free(ks); /* the issuer went with a reload */
}

void trust_free(struct dp_trust *trust)
{
	if (!trust)
		return;
	for (size_t i = 0; i < trust->n; i++) {
		struct trust_issuer *ti = &trust->issuers[i];

		free(ti->issuer);
		free(ti->source);
		free(ti->ca_file);
		for (size_t k = 0; k < DP_CLAIM_N; k++)
			free(ti->claims[k]);
		dp_keyset_free(ti->keys);
	}
	free(trust->issuers);
	free(trust->cache_dir);
	pthread_mutex_destroy(&trust->lock);
	free(trust);
}

void grant_free(struct dp_grant *g)
{
	if (!g)
		return;
	free(g->token);
	free(g->iss);
	free(g->sub);
	free(g->jti);
	free(g->agent);
	for (size_t i = 0; i < g->n_scopes; i++)
		free(g->scopes[i]);
	free(g->scopes);
	for (size_t i = 0; i < g->n_resources; i++)
		free(g->resources[i]);
	free(g->resources);
	free(g);
}

bool grant_has_scope(const struct dp_grant *g, const char *scope)
{
	for (size_t i = 0; i < g->n_scopes; i++)
		if (strcmp(g->scopes[i], scope) == 0)
			return true;
	return false;
}

bool grant_has_resource(const struct dp_grant *g, const char *resource)
{
	for (size_t i = 0; i < g->n_resources; i++)
		if (strcmp(g->resources[i], resource) == 0)
			return true;
	return false;
}

/* Claim string helpers: "missing" and "wrong type" are one refusal, worded once. */
static const char *claim_str(const json_t *claims, const char *name)
{
	const char *s = json_string_value(json_object_get(claims, name));

	return s && *s ? s : NULL;
}

/* A list claim: an array of strings, or one string (split at spaces when split: a scope
 * string is several scopes, a resource string is one URI). Each value must be one word:
 * routes compare whole scopes and URIs, so "a b" in an array could only mislead. */
static int claim_list(const json_t *v, const char *name, bool split, char ***out, size_t *n,
		      struct dp_err *err)
{
	const char *text = json_string_value(v);
	const json_t *e;
	size_t i;

	*out = calloc(GRANT_MAX_LIST + 1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	if (text) {
		for (const char *p = text; *p;) {
			size_t w;

			while (*p == ' ')
				p++;
			w = split ? strcspn(p, " ") : strlen(p);
			if (w == 0)
				break;
			if (*n == GRANT_MAX_LIST)
				goto too_many;
			if (!((*out)[*n] = strndup(p, w)))
				return -ENOMEM;
			(*n)++;
			p += w;
		}
		if (!split && strchr(text, ' '))
			goto not_list;
		return 0;
	}
	if (!json_is_array(v))
		goto not_list;
	json_array_foreach(v, i, e)
	{
		const char *s = json_string_value(e);

		if (!s || !*s || strchr(s, ' '))
			goto not_list;
		if (*n == GRANT_MAX_LIST)
			goto too_many;
		if (!((*out)[*n] = strdup(s)))
			return -ENOMEM;
		(*n)++;
	}
	return 0;
not_list:
	dp_err_set(err, "grant %s is not %s or an array of strings", name,
		   split ? "a space-separated string" : "a string");
	return -EACCES;
too_many:
	dp_err_set(err, "grant has more than %d %s values", GRANT_MAX_LIST, name);
	return -EACCES;
}

/* The scope: "scope" (RFC 8693, a string) or "scp" (Okta: an array; Entra: a string), or the
 * issuer's claims.scope. Both scope and scp would leave open which one the IdP meant. */
static int grant_read_scope(const json_t *c, const struct trust_issuer *ti, struct dp_grant *g,
			    struct dp_err *err)
{
	const char *name = ti->claims[DP_CLAIM_SCOPE];
	const json_t *v;

	if (!name) {
		bool scope = json_object_get(c, "scope"), scp = json_object_get(c, "scp");

		if (scope && scp) {
			dp_err_set(err, "grant has both scope and scp (expected one of them)");
			return -EACCES;
		}
		name = scp ? "scp" : "scope";
	}
	v = json_object_get(c, name);
	if (!v) {
		dp_err_set(err, "grant has no %s (expected the scopes the user allows)", name);
		return -EACCES;
	}
	return claim_list(v, name, true, &g->scopes, &g->n_scopes, err);
}

static int grant_read_resource(const json_t *c, const struct trust_issuer *ti, struct dp_grant *g,
			       struct dp_err *err)
{
	const char *name = ti->claims[DP_CLAIM_RESOURCE] ?: "resource";
	const json_t *v = json_object_get(c, name);

	if (!v) {
		dp_err_set(err, "grant has no %s (expected the API base URIs the user allows)",
			   name);
		return -EACCES;
	}
	return claim_list(v, name, false, &g->resources, &g->n_resources, err);
}

/* The agent: may_act.sub (RFC 8693), or the issuer's claims.agent — a string (azp,
 * client_id: the OAuth client is the agent, "agent:" added when it is not there) or an
 * object with a sub. The comparison with the agent asking stays exact. */
static int grant_read_agent(const json_t *c, const struct trust_issuer *ti, const char *agent,
			    struct dp_grant *g, struct dp_err *err)
{
	const char *name = ti->claims[DP_CLAIM_AGENT];
	const json_t *v = json_object_get(c, name ?: "may_act");
	const char *s;
	char b1[72], b2[72];
	int n;

	if (json_is_object(v))
		v = json_object_get(v, "sub");
	else if (!name)
		v = NULL;
	s = json_string_value(v);
	if (!s || !*s) {
		if (name)
			dp_err_set(err, "grant has no %s (expected the agent, per claims.agent)",
				   name);
		else
			dp_err_set(err, "grant has no may_act.sub (no agent may act)");
		return -EACCES;
	}
	n = strncmp(s, "agent:", 6) == 0 ? asprintf(&g->agent, "%s", s)
					 : asprintf(&g->agent, "agent:%s", s);
	if (n < 0) {
		g->agent = NULL;
		return -ENOMEM;
	}
	if (agent && strcmp(g->agent, agent) != 0) {
		dp_err_set(err, "agent \"%s\" is not in the grant's %s (\"%s\")",
			   DP_SAFE(b1, agent), name ?: "may_act", DP_SAFE(b2, g->agent));
		return -EACCES;
	}
	return 0;
}

/* The grant's id: its jti, or for IdPs that issue none (Entra) one derived from the token's
 * SHA-256, so that logs and `deputy revoke --grant` can still name this very grant. */
static int grant_read_jti(const json_t *c, const struct trust_issuer *ti, const char *token,
			  struct dp_grant *g, struct dp_err *err)
{
	const char *name = ti->claims[DP_CLAIM_JTI] ?: "jti";
	const json_t *v = json_object_get(c, name);
	unsigned char md[EVP_MAX_MD_SIZE];
	char b64[DP_B64URL_LEN(32)];
	unsigned int mdlen = 0;

	if (v) {
		if (!claim_str(c, name)) {
			dp_err_set(err, "grant %s is not a non-empty string", name);
			return -EACCES;
		}
		g->jti = strdup(claim_str(c, name));
		return g->jti ? 0 : -ENOMEM;
	}
	if (!EVP_Digest(token, strlen(token), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32 ||
	    dp_b64url_encode(md, 32, b64, sizeof(b64)) < 0) {
		dp_err_set(err, "cannot hash the grant");
		return -EIO;
	}
	if (asprintf(&g->jti, "sha256:%s", b64) < 0) {
		g->jti = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* The claim checks, after the signature, in a fixed order: every one a distinct reason. */
static int grant_read_claims(const json_t *c, const struct trust_issuer *ti, const char *token,
			     const char *audience, const char *agent, int64_t now,
			     struct dp_grant *g, struct dp_err *err)
{
	const struct dp_jwt_expect want = {.audience = audience, .now = now};
	const char *sub_name = ti->claims[DP_CLAIM_SUB] ?: "sub";
	int64_t t;
	int r;

	if (!claim_str(c, sub_name)) {
		dp_err_set(err, "grant has no %s (user)", sub_name);
		return -EACCES;
	}
	if ((r = grant_read_jti(c, ti, token, g, err)) ||
	    (r = dp_jwt_check_registered(c, DP_JWT_GRANT, &want, err)) ||
	    (r = grant_read_agent(c, ti, agent, g, err)) || (r = grant_read_scope(c, ti, g, err)) ||
	    (r = grant_read_resource(c, ti, g, err)))
		return r;
	g->token = strdup(token);
	g->iss = strdup(claim_str(c, "iss"));
	g->sub = strdup(claim_str(c, sub_name));
	if (!g->token || !g->iss || !g->sub)
		return -ENOMEM;
	if (dp_jwt_time_claim(c, "exp", &g->exp))
		g->exp = 0;
	g->iat = dp_jwt_time_claim(c, "iat", &t) == 0 ? t : 0;
	return 0;
}

/* The issuer's key for kid (NULL: none), with trust->lock held: reloaded at most every
 * TRUST_REFETCH_S. A deferred trust never waits for the network: the caller's event loop
 * fetches and asks again (-EINPROGRESS), and only this grant waits for it. */
static int issuer_key(struct dp_trust *trust, struct trust_issuer *ti, const char *kid, int64_t now,
		      const struct dp_key **out)
{
	const struct dp_key *key = dp_keyset_find(ti->keys, kid);

	*out = NULL;
	if (!key && trust->defer && jwks_is_url(ti->source)) {
		if (!ti->fetching && now - ti->loaded_at >= TRUST_REFETCH_S) {
			ti->want_fetch = true;
			ti->loaded_at = now;
		}
		if (ti->want_fetch || ti->fetching)
			return -EINPROGRESS;
	} else if (!key && now - ti->loaded_at >= TRUST_REFETCH_S) {
		issuer_reload(ti, now);
		key = dp_keyset_find(ti->keys, kid);
	}
	*out = key;
	return 0;
}

int grant_verify(struct dp_trust *trust, const char *token, const char *audience, const char *agent,
		 int64_t now, struct dp_grant **out, struct dp_err *err)
{
	struct dp_jws jws;
	struct dp_err perr = {""};
	struct trust_issuer *ti = NULL;
	struct dp_grant *g;
	const struct dp_key *key;
	const char *iss;
	char b1[72], b2[72];
	int r;

	*out = NULL;
	if (!token || !audience) {
		dp_err_set(err, "no grant or no audience");
		return -EINVAL;
	}
	if (strnlen(token, DP_JWS_MAX_LEN + 1) > DP_JWS_MAX_LEN) {
		dp_err_set(err, "grant too large (over %d bytes)", DP_JWS_MAX_LEN);
		return -EINVAL;
	}
	if (dp_jws_parse(token, &jws, &perr)) {
		dp_err_set(err, "malformed grant: %s", perr.msg);
		return -EINVAL;
	}
	iss = claim_str(jws.claims, "iss");
	if (!iss) {
		dp_err_set(err, "grant has no iss");
		r = -EACCES;
		goto out;
	}
	for (size_t i = 0; i < trust->n; i++)
		if (strcmp(trust->issuers[i].issuer, iss) == 0)
			ti = &trust->issuers[i];
	if (!ti) {
		dp_err_set(err, "unknown issuer \"%s\"", DP_SAFE(b1, iss));
		r = -EACCES;
		goto out;
	}
	/* The alg refusals come before the key lookup: such tokens often carry no kid, and
	 * "alg none" says more than "no kid". */
	if (dp_jws_alg_is_none(jws.alg)) {
		dp_err_set(err, "grant alg \"none\" refused (unsigned)");
		r = -EACCES;
		goto out;
	}
	if (dp_jws_alg_is_hmac(jws.alg)) {
		dp_err_set(err, "grant HMAC alg \"%s\" refused (issuers sign with keys)",
			   DP_SAFE(b1, jws.alg));
		r = -EACCES;
		goto out;
	}
	if (!jws.kid) {
		dp_err_set(err, "grant has no kid");
		r = -EACCES;
		goto out;
	}
	pthread_mutex_lock(&trust->lock);
	if (issuer_key(trust, ti, jws.kid, now, &key) == -EINPROGRESS) {
		pthread_mutex_unlock(&trust->lock);
		dp_err_set(err, "keys of issuer \"%s\" are being fetched", DP_SAFE(b1, iss));
		r = -EINPROGRESS;
		goto out;
	}
	if (!key) {
		pthread_mutex_unlock(&trust->lock);
		dp_err_set(err, "unknown kid \"%s\" for issuer \"%s\"", DP_SAFE(b1, jws.kid),
			   DP_SAFE(b2, iss));
		r = -EACCES;
		goto out;
	}
	if (strcmp(jws.alg, dp_key_alg(key)) != 0) {
		dp_err_set(err, "grant alg \"%s\" does not match the key's %s",
			   DP_SAFE(b1, jws.alg), dp_key_alg(key));
		r = -EACCES;
	} else {
		r = dp_jws_verify(&jws, key, &perr);
		if (r)
			dp_err_set(err, "bad grant signature");
	}
	pthread_mutex_unlock(&trust->lock);
	if (r) {
		r = -EACCES;
		goto out;
	}
	g = calloc(1, sizeof(*g));
	r = g ? grant_read_claims(jws.claims, ti, token, audience, agent, now, g, err) : -ENOMEM;
	if (r == -ENOMEM)
		dp_err_set(err, "out of memory");
	if (r)
		grant_free(g);
	else
		*out = g;
out:
	dp_jws_clear(&jws);
	return r;
}
