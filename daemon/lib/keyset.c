// SPDX-License-Identifier: MIT
/*
 * keyset: a JWKS as a bounded list of keys. A set is never changed once parsed; a key
 * rotation is a new set that replaces the old one (grant.c, verify.c).
 */
#include "keyset.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define JWKS_MAX_KEYS 64

struct dp_keyset {
	struct dp_key **keys;
	size_t n;
};

struct dp_keyset *dp_keyset_parse(const char *json, size_t len, struct dp_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *keys, *jwk;
	struct dp_keyset *ks;
	size_t i;

	if (!root) {
		char near[sizeof(jerr.text) * 4];

		/* jansson quotes the input near the error raw */
		dp_err_set(err, "JWKS is not JSON: line %d: %s", jerr.line,
			   dp_escape(jerr.text, strlen(jerr.text), near, sizeof(near)));
		return NULL;
	}
	keys = json_object_get(root, "keys");
	if (!json_is_array(keys)) {
		json_decref(root);
		dp_err_set(err, "JWKS has no \"keys\" array");
		return NULL;
	}
	ks = calloc(1, sizeof(*ks));
	if (ks)
		ks->keys = calloc(JWKS_MAX_KEYS, sizeof(*ks->keys));
	if (!ks || !ks->keys) {
		free(ks);
		json_decref(root);
		dp_err_set(err, "out of memory");
		return NULL;
	}
	json_array_foreach(keys, i, jwk)
	{
		struct dp_err kerr = {""};
		struct dp_key *key;

		if (ks->n == JWKS_MAX_KEYS) {
			pr_warn("JWKS: more than %d keys, the rest ignored", JWKS_MAX_KEYS);
			break;
		}
		key = dp_key_from_jwk(jwk, &kerr);
		if (!key) {
			pr_debug("JWKS: key %zu skipped: %s", i, kerr.msg);
			continue;
		}
		if (dp_keyset_find(ks, dp_key_kid(key))) {
			/* Two keys under one kid: which one signed would be ambiguous. */
			pr_warn("JWKS: duplicate kid, later key skipped");
			dp_key_free(key);
			continue;
		}
		ks->keys[ks->n++] = key;
	}
	json_decref(root);
	return ks;
}

const struct dp_key *dp_keyset_find(const struct dp_keyset *ks, const char *kid)
{
	if (!ks || !kid)
		return NULL;
	for (size_t i = 0; i < ks->n; i++)
		if (strcmp(dp_key_kid(ks->keys[i]), kid) == 0)
			return ks->keys[i];
	return NULL;
}

size_t dp_keyset_count(const struct dp_keyset *ks)
{
	return ks ? ks->n : 0;
}

void dp_keyset_free(struct dp_keyset *ks)
{
	if (!ks)
		return;
	for (size_t i = 0; i < ks->n; i++)
		dp_key_free(ks->keys[i]);
	free(ks->keys);
	free(ks);
}

/* ---- signing ------------------------------------------------------------------------------ */
