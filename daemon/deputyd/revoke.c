// SPDX-License-Identifier: MIT
/*
 * revoke: the revocation list (revoke.h). The file is root's, but it is read as hostile
 * all the same (an editor's slip, a disk error): strict keys and types, bounded sizes, one
 * line naming what is wrong, and the list in force kept rather than an empty one taken.
 */
#include "revoke.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REVOKE_MAX_ENTRIES 65536
#define REVOKE_MAX_FILE (16u << 20)

static json_t *list; /* the "revoked" array in force; NULL: empty */
static char list_path[PATH_MAX];

static bool revoke_text_ok(const json_t *v)
{
	size_t n = json_string_length(v);

	return json_is_string(v) && n > 0 && n <= REVOKE_TEXT_MAX;
}

static int revoke_check_entry(const json_t *e, size_t i, struct dp_err *err)
{
	json_t *g = json_object_get(e, "grant"), *u = json_object_get(e, "user"), *v;
	const char *k;

	if (!json_is_object(e)) {
		dp_err_set(err, "revoked[%zu]: must be an object", i);
		return -EINVAL;
	}
	if (!g == !u || !revoke_text_ok(g ? g : u)) {
		dp_err_set(err,
			   "revoked[%zu]: needs exactly one of \"grant\" and \"user\" (a "
			   "string of 1 to %d bytes)",
			   i, REVOKE_TEXT_MAX);
		return -EINVAL;
	}
	json_object_foreach((json_t *)e, k, v)
	{
		bool ok =
		    strcmp(k, "grant") == 0 || strcmp(k, "user") == 0 ||
		    (strcmp(k, "ts") == 0 && json_is_string(v)) ||
		    (strcmp(k, "reason") == 0 && json_is_string(v) &&
		     json_string_length(v) <= REVOKE_TEXT_MAX) ||
		    (strcmp(k, "by") == 0 && json_is_integer(v) && json_integer_value(v) >= 0);

		if (!ok) {
			dp_err_set(err, "revoked[%zu].%s: unknown key or wrong type", i, k);
			return -EINVAL;
		}
	}
	return 0;
}

static int revoke_parse(const char *text, size_t len, json_t **out, struct dp_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr), *arr, *e;
	size_t i;

	if (!root) {
		dp_err_set(err, "invalid JSON at %d:%d: %s", jerr.line, jerr.column, jerr.text);
		return -EINVAL;
	}
	arr = json_object_get(root, "revoked");
	if (!json_is_object(root) || json_object_size(root) != 1 || !json_is_array(arr)) {
		json_decref(root);
		dp_err_set(err, "must be an object {\"revoked\": [...]}");
		return -EINVAL;
	}
	if (json_array_size(arr) > REVOKE_MAX_ENTRIES) {
		json_decref(root);
		dp_err_set(err, "more than %d entries", REVOKE_MAX_ENTRIES);
		return -EINVAL;
	}
	json_array_foreach(arr, i, e)
	{
		int rc = revoke_check_entry(e, i, err);

		if (rc) {
			json_decref(root);
			return rc;
		}
	}
	*out = json_incref(arr);
	json_decref(root);
	return 0;
}

int revoke_load(const char *state_dir, struct dp_err *err)
{
	char path[PATH_MAX], *text = NULL;
	struct dp_err why;
	json_t *arr = NULL;
	size_t len = 0;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", state_dir, REVOKE_FILE);
	rc = dp_read_file(path, REVOKE_MAX_FILE, &text, &len);
	if (rc == -ENOENT) {
		arr = json_array();
		rc = arr ? 0 : -ENOMEM;
		dp_err_set(&why, "out of memory");
	} else if (rc) {
		dp_err_set(&why, "%s", strerror(-rc));
	} else {
		rc = revoke_parse(text, len, &arr, &why);
	}
	free(text);
	if (rc) {
		dp_err_set(err, "%s: %s", path, why.msg);
		return rc;
	}
	json_decref(list);
	list = arr;
	snprintf(list_path, sizeof(list_path), "%s", path);
	return 0;
}

static bool revoke_listed(const char *kind, const char *value)
{
	json_t *e;
	size_t i;

	json_array_foreach(list, i, e)
	{
		const char *v = json_string_value(json_object_get(e, kind));

		if (v && strcmp(v, value) == 0)
			return true;
	}
	return false;
}

int revoke_add(bool user, const char *value, uid_t by, const char *reason, struct dp_err *err)
{
	const char *kind = user ? "user" : "grant";
	char ts[DP_TS_LEN], *text;
	json_t *e, *root;
	int rc;

	if (!value || !*value || strlen(value) > REVOKE_TEXT_MAX ||
	    (reason && strlen(reason) > REVOKE_TEXT_MAX)) {
		dp_err_set(err, "revoke: the %s and the reason are 1 to %d bytes", kind,
			   REVOKE_TEXT_MAX);
		return -EINVAL;
	}
	if (!list && !(list = json_array()))
		goto oom;
	if (revoke_listed(kind, value))
		return 0;
	dp_timestamp(ts);
	e = json_pack("{s:s, s:s, s:I}", kind, value, "ts", ts, "by", (json_int_t)by);
	if (e && reason && *reason)
		json_object_set_new(e, "reason", json_string(reason));
	if (!e || json_array_append_new(list, e) != 0)
		goto oom;
	root = json_pack("{s:O}", "revoked", list);
	text = root ? json_dumps(root, JSON_INDENT(1)) : NULL;
	json_decref(root);
	if (!text)
		goto oom;
	rc = dp_write_file_atomic(list_path, text, strlen(text), 0600);
	free(text);
	if (rc) {
		dp_err_set(err, "revoke: %s: %s (revoked until deputyd stops)", list_path,
			   strerror(-rc));
		return rc;
	}
	return 0;
oom:
	dp_err_set(err, "revoke: out of memory");
	return -ENOMEM;
}

const char *revoke_match(const struct dp_grant *g)
{
	if (g->jti && revoke_listed("grant", g->jti))
		return "grant";
	if (g->sub && revoke_listed("user", g->sub))
		return "user";
	return NULL;
}

const json_t *revoke_list(void)
{
	return list;
}

void revoke_free(void)
{
	json_decref(list);
	list = NULL;
}
