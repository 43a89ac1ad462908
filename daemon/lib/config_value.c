// SPDX-License-Identifier: MIT
/*
 * config_value: the config parser's checks of single JSON values (strings, integers,
 * choices, paths, URIs, HTTP tokens), of an object's keys and of arrays of objects, each
 * failing with one line that names the key path. config.c holds the schema that uses them.
 */
#include "config_value.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cfg_fail(struct cfg_ctx *c, const char *key, const char *fmt, ...)
{
	char why[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (c->where[0] && key)
		dp_err_set(c->err, "%s.%s: %s", c->where, key, why);
	else if (c->where[0] || key)
		dp_err_set(c->err, "%s: %s", c->where[0] ? c->where : key, why);
	else
		dp_err_set(c->err, "%s", why);
	return -EINVAL;
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

	if (!v)
		return 0;
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
	if (!v)
		return 0;
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

	if (!v)
		return 0;
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
	const char *key;
	json_t *v;

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
			return cfg_fail(c, NULL, "unknown key \"%s\"", shown);
		}
	}
	return 0;
}

int cfg_check_object(struct cfg_ctx *c, json_t *obj, const char *const *allowed, size_t n)
{
	if (!json_is_object(obj))
		return cfg_fail(c, NULL, "must be an object");
	return cfg_check_keys(c, obj, allowed, n);
}

int cfg_required_string(struct cfg_ctx *c, json_t *obj, const char *key, const char **out)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return cfg_fail(c, key, "required");
	return cfg_get_string(c, key, v, out);
}

int cfg_get_issuer(struct cfg_ctx *c, json_t *obj, char **out)
{
	struct url_parts parts;
	const char *s = NULL;
	int r;

	if ((r = cfg_required_string(c, obj, "issuer", &s)) ||
	    (r = cfg_check_uri(c, "issuer", s, &parts)))
		return r;
	return cfg_dup_string(c, "issuer", s, out);
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
	for (size_t i = 0; i < n; i++) {
		struct cfg_ctx sub = {.err = c->err};
		int r;

		/* nested arrays (a route's addrs) keep the whole key path */
		if (c->where[0])
			snprintf(sub.where, sizeof(sub.where), "%s.%s[%zu]", c->where, key, i);
		else
			snprintf(sub.where, sizeof(sub.where), "%s[%zu]", key, i);
		r = parse_one(&sub, json_array_get(arr, i), items + i * elsize);
		if (r)
			return r;
	}
	return 0;
}

static int cfg_parse_unix_cb(struct cfg_ctx *c, json_t *v, void *item)
{
	const char *s = NULL;
	size_t n;
	int r;

	if ((r = cfg_get_string(c, NULL, v, &s)))
		return r;
	n = json_string_length(v);
	if ((s[0] != '/' && s[0] != '@') || n < 2 || strlen(s) != n)
		return cfg_fail(c, NULL,
				"must be an absolute socket path or \"@name\" (abstract socket)");
	/* sun_path holds 108 bytes: a path and its NUL, or an abstract name after a NUL. */
	if (n > 107 + (s[0] == '@'))
		return cfg_fail(c, NULL, "longer than a Unix socket address (107 bytes)");
	return cfg_dup_string(c, NULL, s, item);
}

int cfg_parse_allow_unix(struct cfg_ctx *c, json_t *v, char ***out, size_t *n_out)
{
	/* glibc asks nscd (when it runs) for names and users; where it is not running, the
	 * connect fails either way. /var/run is a link to /run, but the hook sees the path as
	 * written, and glibc writes the old one. */
	static const char *const defaults[] = {"/var/run/nscd/socket", "/run/nscd/socket"};

	if (v)
		return cfg_parse_array(c, "allow_unix", v, 256, sizeof(char *), (void **)out, n_out,
				       cfg_parse_unix_cb);
	*out = calloc(DP_ARRAY_SIZE(defaults), sizeof(char *));
	if (!*out)
		return -ENOMEM;
	for (*n_out = 0; *n_out < DP_ARRAY_SIZE(defaults); (*n_out)++)
		if (!((*out)[*n_out] = strdup(defaults[*n_out])))
			return -ENOMEM;
	return 0;
}
