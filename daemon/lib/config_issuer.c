// SPDX-License-Identifier: MIT
/*
 * config_issuer: one entry of "trusted_issuers" — where its keys come from (jwks_file,
 * jwks_uri or discovery), its ca_file, and its "claims" names. A mapping of claim names
 * may rename what deputy reads, never the claims that carry the exact checks.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "config_value.h"

static const char *const cfg_claim_names[DP_CLAIM_N] = {"sub", "jti", "scope", "resource", "agent"};

const char *config_claim_name(enum dp_claim c)
{
	return c < DP_CLAIM_N ? cfg_claim_names[c] : "?";
}

/* "claims": {deputy's name: the issuer's}. iss, aud, exp, nbf and iat cannot be renamed: they
 * carry the exact checks, and a mapping must never loosen one. */
static int cfg_parse_issuer_claims(struct cfg_ctx *c, json_t *obj, struct dp_trusted_issuer *ti)
{
	const char *name, *s = NULL;
	json_t *v;
	int r;

	if (!json_is_object(obj))
		return cfg_fail(c, "claims", "must be an object");
	json_object_foreach(obj, name, v)
	{
		size_t i;
		char key[80];

		for (i = 0; i < DP_CLAIM_N; i++)
			if (strcmp(name, cfg_claim_names[i]) == 0)
				break;
		snprintf(key, sizeof(key), "claims.%.40s", name);
		if (i == DP_CLAIM_N)
			return cfg_fail(c, key,
					"unknown (mappable: sub, jti, scope, resource, agent)");
		if ((r = cfg_get_string(c, key, v, &s)))
			return r;
		if (!*s || strlen(s) > 64 || url_has_ctl_or_space(s))
			return cfg_fail(c, key, "must be a claim name of 1 to 64 printable bytes");
		if (!strcmp(s, "iss") || !strcmp(s, "aud") || !strcmp(s, "exp") ||
		    !strcmp(s, "nbf") || !strcmp(s, "iat"))
			return cfg_fail(c, key, "\"%s\" carries a check of its own", s);
		if ((r = cfg_dup_string(c, key, s, &ti->claims[i])))
			return r;
	}
	return 0;
}

/* Where the issuer's keys come from: exactly one of jwks_file, jwks_uri, "discovery": true. */
static int cfg_parse_issuer_keys(struct cfg_ctx *c, json_t *obj, struct dp_trusted_issuer *ti)
{
	struct url_parts parts;
	const char *s = NULL;
	json_t *v;
	int r, n = !!json_object_get(obj, "jwks_file") + !!json_object_get(obj, "jwks_uri");

	if ((v = json_object_get(obj, "discovery")) &&
	    (r = cfg_get_bool(c, "discovery", v, &ti->discovery)))
		return r;
	n += ti->discovery;
	if (n > 1)
		return cfg_fail(c, NULL, "give one of jwks_file, jwks_uri or \"discovery\": true");
	if (n == 0)
		return cfg_fail(c, NULL, "needs jwks_file, jwks_uri or \"discovery\": true");
	if (ti->discovery) {
		if ((r = cfg_check_uri(c, "issuer", ti->issuer, &parts)))
			return r;
		if (!url_fetch_allowed(&parts))
			return cfg_fail(c, "discovery",
					"the issuer must be https:// (http:// only for loopback "
					"hosts)");
		return 0;
	}
	if ((v = json_object_get(obj, "jwks_file")))
		return cfg_get_abs_path(c, "jwks_file", v, CFG_MAX_PATH, &ti->jwks_file);
	v = json_object_get(obj, "jwks_uri");
	if ((r = cfg_get_string(c, "jwks_uri", v, &s)) ||
	    (r = cfg_check_uri(c, "jwks_uri", s, &parts)))
		return r;
	if (!url_fetch_allowed(&parts))
		return cfg_fail(c, "jwks_uri",
				"must be https:// (http:// only for loopback hosts)");
	return cfg_dup_string(c, "jwks_uri", s, &ti->jwks_uri);
}

int cfg_parse_issuer_entry(struct cfg_ctx *c, json_t *obj, struct dp_trusted_issuer *ti)
{
	static const char *const keys[] = {"issuer",	"jwks_file", "jwks_uri",
					   "discovery", "ca_file",   "claims"};
	json_t *v;
	int r;

	if ((r = cfg_check_object(c, obj, keys, DP_ARRAY_SIZE(keys))) ||
	    (r = cfg_get_issuer(c, obj, &ti->issuer)))
		return r;
	if ((v = json_object_get(obj, "ca_file")) &&
	    (r = cfg_get_abs_path(c, "ca_file", v, CFG_MAX_PATH, &ti->ca_file)))
		return r;
	if ((v = json_object_get(obj, "claims")) && (r = cfg_parse_issuer_claims(c, v, ti)))
		return r;
	return cfg_parse_issuer_keys(c, obj, ti);
}
