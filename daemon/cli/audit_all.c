// SPDX-License-Identifier: MIT
/*
 * audit_all: `deputy audit verify --all [DIR]`: every session log of a state directory, each
 * checked as `audit verify FILE` checks one, then the chain across them (deputyd's chain.h):
 * every `prev_seal` a session_open or session_close names must be the hash of that
 * session's seal as its log holds it now, or of a log retention removed (its removal is in
 * retention.jsonl, with the seal's hash), and `seal-chain` must name a seal that exists. A
 * deleted log is then a gap named by the record that links to it; a cut one either fails
 * its own check (not sealed) or no longer matches what the next seal recorded. Read from the
 * files, as root reads them: no deputyd needed, as ausearch needs no auditd.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "cli.h"
#include "config.h"
#include "keyset.h"

#define AUDIT_ALL_MAX_FILE (256u << 20)

struct aa_log {
	char id[DP_ID_LEN];
	char seal[AUDIT_HASH_HEX]; /* hash of its session_close line; "" unsealed */
	json_t *open, *close;	   /* its first and (when sealed) last record */
};

struct aa {
	const char *dir;
	struct aa_log *logs;
	size_t n;
	json_t *removed; /* session -> seal hash, from retention.jsonl */
	int problems;
};

static void aa_problem(struct aa *a, const char *fmt, ...) DP_PRINTF(2, 3);
static void aa_problem(struct aa *a, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cli_fail("audit", "%s", msg);
	a->problems++;
}

static struct aa_log *aa_find(struct aa *a, const char *id)
{
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->logs[i].id, id) == 0)
			return &a->logs[i];
	return NULL;
}

/* One log: checked alone, then kept for the links. */
static void aa_load_one(struct aa *a, const char *id, const struct dp_keyset *keys)
{
	char path[PATH_MAX], state[PATH_MAX], *text = NULL;
	struct aa_log *l, *grown;
	struct dp_err why;
	bool sealed = false;
	size_t len = 0;
	int e;

	grown = realloc(a->logs, (a->n + 1) * sizeof(*grown));
	if (!grown)
		return aa_problem(a, "out of memory");
	a->logs = grown;
	l = &a->logs[a->n++];
	memset(l, 0, sizeof(*l));
	snprintf(l->id, sizeof(l->id), "%s", id);
	snprintf(path, sizeof(path), "%s/sessions/%s.jsonl", a->dir, id);
	snprintf(state, sizeof(state), "%s/sessions/%s.state", a->dir, id);
	if ((e = dp_read_file(path, AUDIT_ALL_MAX_FILE, &text, &len)) != 0)
		return aa_problem(a, "%s: %s", path, strerror(-e));
	if (audit_verify(text, len, keys, &sealed, &why) != 0) {
		aa_problem(a, "%s: %s", path, why.msg);
	} else if (!sealed && access(state, F_OK) != 0) {
		/* open sessions have their .state beside the log; any other must be sealed */
		aa_problem(a, "%s: not sealed, and the session is not open (cut short?)", path);
	}
	l->open = json_loadb(text, strcspn(text, "\n"), 0, NULL);
	if (sealed && len > 1) {
		size_t end = len - 1, start = end;

		while (start > 0 && text[start - 1] != '\n')
			start--;
		audit_hash_line(text + start, end - start, l->seal);
		l->close = json_loadb(text + start, end - start, 0, NULL);
	}
	free(text);
}

/* A link: `rec` of session `from` says the seal before it was `hash` of session `to`. */
static void aa_link(struct aa *a, const char *from, const char *what, json_t *rec)
{
	const char *hash = json_string_value(json_object_get(rec, "prev_seal"));
	const char *to = json_string_value(json_object_get(rec, "prev_seal_session"));
	const char *gone;
	struct aa_log *l;

	if (!hash)
		return; /* written before the chain existed, or the first of it */
	if (!to)
		return aa_problem(a, "session %s: %s has prev_seal but no prev_seal_session", from,
				  what);
	l = aa_find(a, to);
	gone = json_string_value(json_object_get(a->removed, to));
	if (l && strcmp(l->seal, hash) != 0)
		aa_problem(a,
			   "session %s: its seal is not the one session %s's %s recorded (cut "
			   "short or rewritten)",
			   to, from, what);
	else if (!l && gone && strcmp(gone, hash) != 0)
		aa_problem(a,
			   "session %s: removed by retention with another seal than %s's %s "
			   "recorded",
			   to, from, what);
	else if (!l && !gone)
		aa_problem(a, "gap: session %s's log is missing (%s's %s names it)", to, from,
			   what);
}

static void aa_load_removed(struct aa *a)
{
	char path[PATH_MAX], *text = NULL, *line, *save = NULL;
	size_t len;

	a->removed = json_object();
	snprintf(path, sizeof(path), "%s/retention.jsonl", a->dir);
	if (dp_read_file(path, AUDIT_ALL_MAX_FILE, &text, &len) != 0)
		return;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_t *r = json_loads(line, 0, NULL);
		const char *id = json_string_value(json_object_get(r, "session"));
		const char *seal = json_string_value(json_object_get(r, "seal"));

		if (id && seal)
			json_object_set_new(a->removed, id, json_string(seal));
		json_decref(r);
	}
	free(text);
}

static void aa_head(struct aa *a)
{
	char path[PATH_MAX];
	json_t *head;
	bool chained = false;

	for (size_t i = 0; i < a->n; i++)
		chained |= json_object_get(a->logs[i].close, "prev_seal") != NULL;
	snprintf(path, sizeof(path), "%s/seal-chain", a->dir);
	head = json_load_file(path, 0, NULL);
	if (!head) {
		if (chained || json_object_size(a->removed))
			aa_problem(a, "%s: missing: the newest seal is not known", path);
		return;
	}
	json_object_set_new(head, "prev_seal", json_incref(json_object_get(head, "seal")));
	json_object_set_new(head, "prev_seal_session",
			    json_incref(json_object_get(head, "session")));
	aa_link(a, "(the host's newest seal)", "seal-chain", head);
	json_decref(head);
}

static int aa_keys(const char *dir, const char *jwks_path, struct dp_keyset **keys)
{
	char guess[PATH_MAX], *text = NULL;
	struct dp_err err;
	size_t len;
	int e;

	if (!jwks_path) {
		snprintf(guess, sizeof(guess), "%s/jwks.json", dir);
		jwks_path = guess;
	}
	e = dp_read_file(jwks_path, 1 << 20, &text, &len);
	*keys = e ? NULL : dp_keyset_parse(text, len, &err);
	free(text);
	if (!*keys)
		return cli_fail("audit", "%s: %s (name deputyd's JWKS with --jwks)", jwks_path,
				e ? strerror(-e) : err.msg);
	return 0;
}

/* The state directory: DIR, or the config's state_dir (--config, $DEPUTY_CONFIG, default). */
static const char *aa_dir(const char *dir, const char *config, char *buf, size_t n)
{
	json_t *root;

	if (dir)
		return dir;
	if (!config || !*config)
		config = getenv("DEPUTY_CONFIG");
	if (!config || !*config)
		config = DP_DEFAULT_CONFIG;
	root = json_load_file(config, 0, NULL);
	snprintf(buf, n, "%s",
		 json_string_value(json_object_get(root, "state_dir")) ?: "/var/lib/deputy");
	json_decref(root);
	return buf;
}

int cli_audit_all(const char *dir, const char *jwks_path, const char *config)
{
	char sessions[PATH_MAX], dirbuf[PATH_MAX];
	struct aa a = {.dir = aa_dir(dir, config, dirbuf, sizeof(dirbuf))};
	struct dp_keyset *keys;
	struct dirent *de;
	DIR *d;

	if (aa_keys(a.dir, jwks_path, &keys))
		return 1;
	snprintf(sessions, sizeof(sessions), "%s/sessions", a.dir);
	d = opendir(sessions);
	if (!d) {
		dp_keyset_free(keys);
		return cli_fail("audit", "%s: %s", sessions, strerror(errno));
	}
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		char id[DP_ID_LEN];

		if (n != DP_ID_LEN - 1 + 6 || strcmp(de->d_name + DP_ID_LEN - 1, ".jsonl") != 0)
			continue;
		snprintf(id, sizeof(id), "%.*s", DP_ID_LEN - 1, de->d_name);
		aa_load_one(&a, id, keys);
	}
	closedir(d);
	dp_keyset_free(keys);
	aa_load_removed(&a);
	for (size_t i = 0; i < a.n; i++) {
		aa_link(&a, a.logs[i].id, "session_open", a.logs[i].open);
		aa_link(&a, a.logs[i].id, "session_close", a.logs[i].close);
	}
	aa_head(&a);
	if (a.problems == 0)
		printf("%s: intact: %zu session logs, chain across them complete (%zu removed by "
		       "retention)\n",
		       a.dir, a.n, json_object_size(a.removed));
	for (size_t i = 0; i < a.n; i++) {
		json_decref(a.logs[i].open);
		json_decref(a.logs[i].close);
	}
	free(a.logs);
	json_decref(a.removed);
	return a.problems ? 1 : 0;
}
