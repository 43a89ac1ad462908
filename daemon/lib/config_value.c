// SPDX-License-Identifier: MIT
/*
 * config_value: the config parser's checks of single JSON values (strings, integers,
 * choices, paths, URIs, HTTP tokens), of an object's keys and of arrays of objects, each
 * failing with one line that names the key path. config.c holds the schema that uses them.
 */
#include "config_value.h"

#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cfg_fail(struct cfg_ctx *c, const char *key, const char *fmt, ...)
{
	struct config_report *rep = c->report;
	struct dp_err line;
	char why[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (c->where[0] && key)
		dp_err_set(&line, "%s.%s: %s", c->where, key, why);
	else if (c->where[0] || key)
		dp_err_set(&line, "%s: %s", c->where[0] ? c->where : key, why);
	else
		dp_err_set(&line, "%s", why);
	if (c->err && !c->err->msg[0])
		*c->err = line;
	if (rep && rep->n < CONFIG_MAX_REPORT)
		snprintf(rep->line[rep->n++], sizeof(rep->line[0]), "%s", line.msg);
	else if (rep)
		rep->more++;
	return -EINVAL;
}

/* Edit distance of two short keys, a swap of neighbours counting as one edit (optimal string
 * alignment: "scpoe" is one typo from "scope"); longer keys are "far". */
static size_t cfg_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), m[65][65];

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t i = 0; i <= la; i++)
		m[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		m[0][j] = j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			size_t best = m[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

			if (m[i - 1][j] + 1 < best)
				best = m[i - 1][j] + 1;
			if (m[i][j - 1] + 1 < best)
				best = m[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    m[i - 2][j - 2] + 1 < best)
				best = m[i - 2][j - 2] + 1;
			m[i][j] = best;
		}
	return m[la][lb];
}

/* The allowed key a typo most likely meant: the nearest within a third of its length (at
 * least 1, at most 3 edits), else NULL. */
static const char *cfg_meant(const char *key, const char *const *allowed, size_t n)
{
	size_t best = SIZE_MAX, limit = strlen(key) / 3;
	const char *meant = NULL;

	if (limit < 1)
		limit = 1;
	if (limit > 3)
		limit = 3;
	for (size_t i = 0; i < n; i++) {
		size_t d = cfg_distance(key, allowed[i]);

		if (d < best) {
			best = d;
			meant = allowed[i];
		}
	}
	return best <= limit ? meant : NULL;
}

/* ---- character classes ------------------------------------------------------------- */

/* RFC 6749 §3.3 scope-token: printable ASCII except space, '"' and '\'. */
bool cfg_is_scope_token(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CFG_MAX_SCOPE)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
			return false;
	}
	return true;
}

/* ---- value checkers: each takes the JSON value of one key --------------------------- */

int cfg_get_string(struct cfg_ctx *c, const char *key, json_t *v, const char **out)
{
	if (!json_is_string(v))
		return cfg_fail(c, key, "must be a string");
	*out = json_string_value(v);
	return 0;
}

int cfg_dup_string(struct cfg_ctx *c, const char *key, const char *s, char **out)
{
	free(*out);
	*out = strdup(s);
	if (!*out) {
		dp_err_set(c->err, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

int cfg_get_int(struct cfg_ctx *c, const char *key, json_t *v, int lo, int hi, int *out)
{
	json_int_t i;

	if (!json_is_integer(v))
		return cfg_fail(c, key, "must be an integer from %d to %d", lo, hi);
	i = json_integer_value(v);
	if (i < lo || i > hi)
		return cfg_fail(c, key, "must be an integer from %d to %d", lo, hi);
	*out = (int)i;
	return 0;
}

int cfg_get_bool(struct cfg_ctx *c, const char *key, json_t *v, bool *out)
{
	if (!json_is_boolean(v))
		return cfg_fail(c, key, "must be true or false");
	*out = json_is_true(v);
	return 0;
}

/* One of two words; *out is 0 for the first, 1 for the second. */
int cfg_get_choice(struct cfg_ctx *c, const char *key, json_t *v, const char *a, const char *b,
		   int *out)
{
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;

	if (s && strcmp(s, a) == 0)
		*out = 0;
	else if (s && strcmp(s, b) == 0)
		*out = 1;
	else
		return cfg_fail(c, key, "must be \"%s\" or \"%s\"", a, b);
	return 0;
}

int cfg_get_abs_path(struct cfg_ctx *c, const char *key, json_t *v, size_t max, char **out)
{
	const char *s = NULL;
	int r = cfg_get_string(c, key, v, &s);

	if (r)
		return r;
	if (s[0] != '/')
		return cfg_fail(c, key, "must be an absolute path");
	if (strlen(s) > max)
		return cfg_fail(c, key, "path too long (at most %zu bytes)", max);
	return cfg_dup_string(c, key, s, out);
}

/*
 * An http(s) URI as issuers and audiences are written. It is compared byte for byte
 * elsewhere, so it is not normalised, and its scheme must be written in lower case.
 */
int cfg_check_uri(struct cfg_ctx *c, const char *key, const char *s, struct url_parts *parts)
{
	struct dp_err uerr;
	int r;

	if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0)
		return cfg_fail(c, key, "must be an https:// or http:// URI");
	r = url_parse_http(s, parts, &uerr);
	if (r == -ENOMEM) {
		dp_err_set(c->err, "out of memory");
		return r;
	}
	return r ? cfg_fail(c, key, "%s", uerr.msg) : 0;
}

int cfg_check_keys(struct cfg_ctx *c, json_t *obj, const char *const *allowed, size_t n)
{
	const char *key, *meant;
	json_t *v;
	int r = 0;

	json_object_foreach(obj, key, v)
	{
		size_t i;

		for (i = 0; i < n; i++)
			if (strcmp(key, allowed[i]) == 0)
				break;
		if (i == n) {
			char shown[64];

			/* keys are printed quoted; cut absurd ones and hide control bytes */
			snprintf(shown, sizeof(shown), "%s", key);
			for (char *p = shown; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == '"')
					*p = '?';
			meant = cfg_meant(key, allowed, n);
			if (meant)
				r = cfg_fail(c, NULL, "unknown key \"%s\" (did you mean \"%s\"?)",
					     shown, meant);
			else
				r = cfg_fail(c, NULL, "unknown key \"%s\"", shown);
		}
	}
	return r;
}

/* Arrays of objects: counted, bounded, each element parsed with its index in the path. */
int cfg_parse_array(struct cfg_ctx *c, const char *key, json_t *arr, size_t max, size_t elsize,
		    void **out, size_t *n_out, int (*parse_one)(struct cfg_ctx *, json_t *, void *))
{
	size_t n;
	char *items;

	if (!json_is_array(arr))
		return cfg_fail(c, key, "must be an array");
	n = json_array_size(arr);
	if (n > max)
		return cfg_fail(c, key, "at most %zu entries", max);
	items = calloc(n ? n : 1, elsize);
	if (!items) {
		dp_err_set(c->err, "out of memory");
		return -ENOMEM;
	}
	*out = items;
	*n_out = n; /* config_free frees partially filled arrays too */
	int first = 0;

	for (size_t i = 0; i < n; i++) {
		struct cfg_ctx sub = {.err = c->err, .report = c->report};
		int r;

		/* nested arrays (a route's addrs) keep the whole key path */
		if (c->where[0])
			snprintf(sub.where, sizeof(sub.where), "%s.%s[%zu]", c->where, key, i);
		else
			snprintf(sub.where, sizeof(sub.where), "%s[%zu]", key, i);
		/* the next element is checked too: every broken one is reported */
		r = parse_one(&sub, json_array_get(arr, i), items + i * elsize);
		if (r == -ENOMEM)
			return r;
		if (r && !first)
			first = r;
	}
	return first;
}
