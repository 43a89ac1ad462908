// SPDX-License-Identifier: MIT
/*
 * grant: the trusted issuers and the verification of user grants. A grant is refused unless
 * every check passes; each refusal has its own one-line reason, because the operator reading
 * "deputy run" output must learn which claim was wrong. Strings from the token that end up
 * in a reason are cut and stripped of control bytes.
 *
 * Key sets: jwks_file is read and jwks_uri fetched at trust_new; an unknown kid makes the
 * issuer's keys be read again (key rotation), at most once every TRUST_REFETCH_S seconds per
 * issuer so hostile tokens with random kids cannot turn deputyd into a fetch amplifier.
 * A failed (re)load keeps the keys already known and is logged, never fatal.
 */
#include "grant.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "jwks_fetch.h"
#include "jws.h"

#define TRUST_REFETCH_S 30
#define GRANT_MAX_SCOPES 256
#define GRANT_MAX_RESOURCES 256

struct trust_issuer {
	char *issuer;
	char *source; /* jwks_file or jwks_uri */
	struct dp_keyset *keys;
	int64_t loaded_at; /* last (re)load attempt, dp_now() */
	bool want_fetch;   /* deferred: a fetch is asked for (trust_fetch_take) */
	bool fetching;	   /* deferred: taken, its result not yet back */
};

struct dp_trust {
	pthread_mutex_t lock; /* guards keys, loaded_at and the fetch flags of every issuer */
	struct trust_issuer *issuers;
	size_t n;
	bool defer; /* jwks_uri keys are fetched by the caller, never inside grant_verify */
};

static void issuer_reload(struct trust_issuer *ti, int64_t now)
{
	struct dp_err err = {""};
	struct dp_keyset *ks;

	ti->loaded_at = now;
	ks = jwks_load(ti->source, &err);
	if (!ks) {
		pr_warn("trusted issuer %s: keys not loaded: %s", ti->issuer, err.msg);
		return;
	}
	dp_keyset_free(ti->keys);
	ti->keys = ks;
	pr_debug("trusted issuer %s: %zu keys from %s", ti->issuer, dp_keyset_count(ks),
		 ti->source);
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
	t->issuers = calloc(cfg->n_issuers ? cfg->n_issuers : 1, sizeof(*t->issuers));
	if (!t->issuers) {
		trust_free(t);
		dp_err_set(err, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_issuers; i++) {
		const struct dp_trusted_issuer *ci = &cfg->issuers[i];
		struct trust_issuer *ti = &t->issuers[t->n];
		const char *src = ci->jwks_file ? ci->jwks_file : ci->jwks_uri;

		if (!ci->issuer || !src) {
			dp_err_set(
			    err, "trusted_issuers[%zu]: needs issuer and jwks_file or jwks_uri", i);
			trust_free(t);
			return NULL;
		}
		if (!ci->jwks_file && !jwks_url_allowed(ci->jwks_uri)) {
			dp_err_set(err,
				   "trusted_issuers[%zu].jwks_uri: must be https:// (http:// only "
				   "to loopback)",
				   i);
			trust_free(t);
			return NULL;
		}
		ti->issuer = strdup(ci->issuer);
		ti->source = strdup(src);
		if (!ti->issuer || !ti->source) {
			free(ti->issuer);
			free(ti->source);
			trust_free(t);
			dp_err_set(err, "out of memory");
			return NULL;
		}
		t->n++;
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

int trust_fetch_take(struct dp_trust *t, char **issuer, char **source)
{
	int r = 0;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n && !r; i++) {
		struct trust_issuer *ti = &t->issuers[i];

		if (!ti->want_fetch)
			continue;
		*issuer = strdup(ti->issuer);
		*source = strdup(ti->source);
		if (!*issuer || !*source) {
			free(*issuer);
			free(*source);
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
		free(trust->issuers[i].issuer);
		free(trust->issuers[i].source);
		dp_keyset_free(trust->issuers[i].keys);
	}
	free(trust->issuers);
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

static int split_scopes(const char *scope, struct dp_grant *g, struct dp_err *err)
{
	g->scopes = calloc(GRANT_MAX_SCOPES, sizeof(*g->scopes));
	if (!g->scopes)
		return -ENOMEM;
	for (const char *p = scope; *p;) {
		size_t w;

		while (*p == ' ')
			p++;
		w = strcspn(p, " ");
		if (w == 0)
			break;
		if (g->n_scopes == GRANT_MAX_SCOPES) {
			dp_err_set(err, "grant has more than %d scopes", GRANT_MAX_SCOPES);
			return -EINVAL;
		}
		g->scopes[g->n_scopes] = strndup(p, w);
		if (!g->scopes[g->n_scopes])
			return -ENOMEM;
		g->n_scopes++;
		p += w;
	}
	return 0;
}

static int copy_resources(const json_t *res, struct dp_grant *g, struct dp_err *err)
{
	const json_t *e;
	size_t i;

	if (json_array_size(res) > GRANT_MAX_RESOURCES) {
		dp_err_set(err, "grant has more than %d resources", GRANT_MAX_RESOURCES);
		return -EINVAL;
	}
	g->resources = calloc(json_array_size(res) + 1, sizeof(*g->resources));
	if (!g->resources)
		return -ENOMEM;
	json_array_foreach(res, i, e)
	{
		g->resources[i] = strdup(json_string_value(e));
		if (!g->resources[i])
			return -ENOMEM;
		g->n_resources++;
	}
	return 0;
}

/* The claim checks, after the signature: every one a distinct reason. */
static int grant_check_claims(const json_t *c, const char *audience, const char *agent, int64_t now,
			      struct dp_err *err)
{
	const struct dp_jwt_expect want = {.audience = audience, .now = now};
	const json_t *may_act, *scope, *res, *e;
	const char *act_sub;
	char b1[72], b2[72];
	size_t i;
	int r;

	if (!claim_str(c, "sub")) {
		dp_err_set(err, "grant has no sub (user)");
		return -EACCES;
	}
	if (!claim_str(c, "jti")) {
		dp_err_set(err, "grant has no jti");
		return -EACCES;
	}
	r = dp_jwt_check_registered(c, DP_JWT_GRANT, &want, err);
	if (r)
		return r;
	may_act = json_object_get(c, "may_act");
	act_sub = json_string_value(json_object_get(may_act, "sub"));
	if (!json_is_object(may_act) || !act_sub) {
		dp_err_set(err, "grant has no may_act.sub (no agent may act)");
		return -EACCES;
	}
	if (agent && strcmp(act_sub, agent) != 0) {
		dp_err_set(err, "agent \"%s\" is not in the grant's may_act (\"%s\")",
			   DP_SAFE(b1, agent), DP_SAFE(b2, act_sub));
		return -EACCES;
	}
	scope = json_object_get(c, "scope");
	if (!scope) {
		dp_err_set(err, "grant has no scope");
		return -EACCES;
	}
	if (!json_is_string(scope)) {
		dp_err_set(err, "grant scope is not a string");
		return -EACCES;
	}
	res = json_object_get(c, "resource");
	if (!res) {
		dp_err_set(err, "grant has no resource");
		return -EACCES;
	}
	if (!json_is_array(res)) {
		dp_err_set(err, "grant resource is not an array of strings");
		return -EACCES;
	}
	json_array_foreach(res, i, e)
	{
		if (!json_is_string(e)) {
			dp_err_set(err, "grant resource is not an array of strings");
			return -EACCES;
		}
	}
	return 0;
}

static struct dp_grant *grant_from_claims(const json_t *c, const char *token, struct dp_err *err)
{
	struct dp_grant *g = calloc(1, sizeof(*g));
	int64_t t;
	int r;

	if (!g)
		goto oom;
	g->token = strdup(token);
	g->iss = strdup(claim_str(c, "iss"));
	g->sub = strdup(claim_str(c, "sub"));
	g->jti = strdup(claim_str(c, "jti"));
	g->agent = strdup(json_string_value(json_object_get(json_object_get(c, "may_act"), "sub")));
	if (!g->token || !g->iss || !g->sub || !g->jti || !g->agent)
		goto oom;
	if (dp_jwt_time_claim(c, "exp", &g->exp))
		g->exp = 0;
	g->iat = dp_jwt_time_claim(c, "iat", &t) == 0 ? t : 0;
	r = split_scopes(json_string_value(json_object_get(c, "scope")), g, err);
	if (!r)
		r = copy_resources(json_object_get(c, "resource"), g, err);
	if (r == -ENOMEM)
		goto oom;
	if (r) {
		grant_free(g);
		return NULL;
	}
	return g;
oom:
	grant_free(g);
	dp_err_set(err, "out of memory");
	return NULL;
}

int grant_verify(struct dp_trust *trust, const char *token, const char *audience, const char *agent,
		 int64_t now, struct dp_grant **out, struct dp_err *err)
{
	struct dp_jws jws;
	struct dp_err perr = {""};
	struct trust_issuer *ti = NULL;
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
	key = dp_keyset_find(ti->keys, jws.kid);
	if (!key && trust->defer && jwks_is_url(ti->source)) {
		/* The caller's event loop must not wait for the network: it fetches and asks
		 * again, and only this grant waits for it. */
		if (!ti->fetching && now - ti->loaded_at >= TRUST_REFETCH_S) {
			ti->want_fetch = true;
			ti->loaded_at = now;
		}
		if (ti->want_fetch || ti->fetching) {
			pthread_mutex_unlock(&trust->lock);
			dp_err_set(err, "keys of issuer \"%s\" are being fetched",
				   DP_SAFE(b1, iss));
			r = -EINPROGRESS;
			goto out;
		}
	} else if (!key && now - ti->loaded_at >= TRUST_REFETCH_S) {
		issuer_reload(ti, now);
		key = dp_keyset_find(ti->keys, jws.kid);
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
	r = grant_check_claims(jws.claims, audience, agent, now, err);
	if (r)
		goto out;
	*out = grant_from_claims(jws.claims, token, err);
	r = *out ? 0 : -EACCES;
out:
	dp_jws_clear(&jws);
	return r;
}
