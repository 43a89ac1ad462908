// SPDX-License-Identifier: MIT
/*
 * logview: `deputy logs`' view of records. Columns have fixed widths and a value too long
 * for its column (an agent's argv, a long reason or URL) is cut with "…", so one record is
 * one line whose columns line up; --json is the way to the whole value. Every value is
 * escaped first (comm, argv, targets and reasons come from the agent: no control byte of
 * theirs reaches the auditor's terminal). A process's back-to-back Unix-socket connects
 * (glibc asking nscd for every name lookup, dozens per second) are folded into one line
 * unless --all-records.
 */
#include "logview.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LV_WHEN 12
#define LV_WHO 22
#define LV_WHAT 60
#define LV_VERDICT 22
#define LV_CHAIN 72

static const char *js(json_t *rec, const char *k)
{
	const char *v = json_string_value(json_object_get(rec, k));

	return v ? v : "";
}

static long long ji(json_t *rec, const char *k)
{
	return (long long)json_integer_value(json_object_get(rec, k));
}

static bool is_type(json_t *rec, const char *t)
{
	return strcmp(js(rec, "type"), t) == 0;
}

static bool is_unix_connect(json_t *rec)
{
	return is_type(rec, "connect") && strcmp(js(rec, "family"), "unix") == 0;
}

/* Append text to out as a column of width characters: escaped, cut with an ellipsis, padded
 * (pad false: the last column). Widths count characters, not bytes (the chain has arrows). */
static void lv_cell(char *out, size_t cap, const char *text, size_t width, bool pad)
{
	char esc[2048];
	size_t len = strlen(out), chars = 0, i;

	dp_escape(text, strlen(text), esc, sizeof(esc));
	for (i = 0; esc[i]; i++) {
		if (((unsigned char)esc[i] & 0xc0) == 0x80)
			continue;
		if (chars == width - 1) {
			size_t rest = 0;

			for (size_t j = i; esc[j]; j++)
				rest += ((unsigned char)esc[j] & 0xc0) != 0x80;
			if (rest > 1) {
				memcpy(esc + i, "…", sizeof("…"));
				chars++;
				break;
			}
		}
		chars++;
	}
	snprintf(out + len, cap - len, "%s", esc);
	for (len = strlen(out); pad && chars < width && len + 1 < cap; chars++)
		out[len++] = ' ';
	if (pad && len + 2 < cap)
		out[len++] = ' ', out[len++] = ' ';
	out[len < cap ? len : cap - 1] = '\0';
}

static void lv_print(const struct logview *lv, json_t *rec, const char *when, const char *who,
		     const char *what, const char *verdict, const char *chain)
{
	char line[4096] = "";

	if (lv->f->with_session) {
		char sid[12];

		snprintf(sid, sizeof(sid), "%.8s", rec ? js(rec, "session") : "SESSION");
		lv_cell(line, sizeof(line), sid, 8, true);
	}
	lv_cell(line, sizeof(line), when, LV_WHEN, true);
	lv_cell(line, sizeof(line), who, LV_WHO, true);
	lv_cell(line, sizeof(line), what, LV_WHAT, true);
	lv_cell(line, sizeof(line), verdict, LV_VERDICT, true);
	lv_cell(line, sizeof(line), chain, LV_CHAIN, false);
	for (size_t n = strlen(line); n > 0 && line[n - 1] == ' ';)
		line[--n] = '\0';
	puts(line);
}

void logview_header(const struct logview_filter *f)
{
	struct logview lv = {.f = f};

	if (f->json)
		return;
	lv_print(&lv, NULL, "TIME", "PID/COMM", "WHAT", "VERDICT", "USER→AGENT→SCOPE→STATUS");
}

const char *logview_verdict(json_t *rec)
{
	if (is_type(rec, "token") || is_type(rec, "token_use"))
		return "delegate";
	if (is_type(rec, "passthrough"))
		return "passthrough";
	if (is_type(rec, "deny"))
		return "deny";
	if (is_type(rec, "connect"))
		return js(rec, "verdict");
	return "";
}

static bool in_list(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");

		if (len == n && n && strncmp(p, word, n) == 0)
			return true;
		p += len + (p[len] == ',');
	}
	return false;
}

static bool lv_wanted(const struct logview_filter *f, json_t *rec)
{
	const char *ts = js(rec, "ts");

	if (f->types && !in_list(f->types, js(rec, "type")))
		return false;
	if (f->verdicts && !in_list(f->verdicts, logview_verdict(rec)))
		return false;
	if (f->since[0] && strcmp(ts, f->since) < 0)
		return false;
	return !f->until[0] || strcmp(ts, f->until) <= 0;
}

static void lv_when_who(json_t *rec, char when[16], char who[64])
{
	const char *ts = js(rec, "ts");

	when[0] = '\0';
	snprintf(who, 64, "-");
	if (strlen(ts) >= 23)
		snprintf(when, 16, "%.12s", ts + 11);
	if (ji(rec, "pid"))
		snprintf(who, 64, "%lld/%s", ji(rec, "pid"), js(rec, "comm"));
}

void logview_flush(struct logview *lv)
{
	char when[16], who[64], what[512];

	if (!lv->fold)
		return;
	lv_when_who(lv->fold, when, who);
	if (lv->fold_more)
		snprintf(what, sizeof(what), "unix %s (+%lld more Unix-socket connects)",
			 js(lv->fold, "path"), lv->fold_more);
	else
		snprintf(what, sizeof(what), "unix %s", js(lv->fold, "path"));
	lv_print(lv, lv->fold, when, who, what, js(lv->fold, "verdict"), "");
	json_decref(lv->fold);
	lv->fold = NULL;
	lv->fold_more = 0;
}

/* The WHAT, VERDICT and chain columns of one record. */
static void lv_describe(struct logview *lv, json_t *rec, char *what, char *verdict, char *chain)
{
	const char *type = js(rec, "type"), *user = lv->user ? lv->user : "?",
		   *agent = lv->agent ? lv->agent : "?";
	const size_t W = 1024, V = 64, C = 1024;

	if (is_type(rec, "session_open")) {
		char *argv = json_dumps(json_object_get(rec, "argv"), JSON_COMPACT);

		snprintf(what, W, "session_open %s", argv ? argv : "");
		snprintf(verdict, V, "open");
		snprintf(chain, C, "%s→%s", js(rec, "user"), js(rec, "agent"));
		free(argv);
	} else if (is_type(rec, "token")) {
		json_t *st = json_object_get(lv->status_by_jti, js(rec, "jti"));
		char status[24] = "…";

		if (st)
			snprintf(status, sizeof(status), "%lld", (long long)json_integer_value(st));
		snprintf(what, W, "%s %s", js(rec, "htm"), js(rec, "htu"));
		snprintf(verdict, V, "delegate");
		snprintf(chain, C, "%s→%s→%s→%s", user, agent, js(rec, "scope"), status);
	} else if (is_type(rec, "deny")) {
		snprintf(what, W, "%s%s%s%s%s", js(rec, "method"), *js(rec, "method") ? " " : "",
			 js(rec, "url"), *js(rec, "url") ? ": " : "", js(rec, "reason"));
		snprintf(verdict, V, "deny(%s)%s", js(rec, "layer"),
			 json_is_false(json_object_get(rec, "enforced")) ? " not enforced" : "");
		snprintf(chain, C, "%s→%s→%s", user, agent,
			 *js(rec, "scope") ? js(rec, "scope") : "-");
	} else if (is_type(rec, "token_use")) {
		/* requests the shim sent with the session's token from its table, a batch */
		json_t *uses = json_object_get(rec, "uses"), *u0 = json_array_get(uses, 0);

		snprintf(what, W, "%s %s%s", js(u0, "htm"), js(u0, "htu"),
			 json_array_size(uses) > 1 ? " …" : "");
		snprintf(verdict, V, "delegate ×%zu", json_array_size(uses));
		snprintf(chain, C, "%s→%s→%s", user, agent, js(u0, "scope"));
	} else if (is_type(rec, "passthrough")) {
		snprintf(what, W, "%s %s", js(rec, "method"), js(rec, "url"));
		snprintf(verdict, V, "passthrough");
	} else if (is_type(rec, "response")) {
		snprintf(what, W, "response to %s", js(rec, "jti"));
		snprintf(verdict, V, "%lld", ji(rec, "status"));
	} else if (is_type(rec, "connect")) {
		bool v6 = strcmp(js(rec, "family"), "inet6") == 0;

		if (strcmp(js(rec, "family"), "unix") == 0)
			snprintf(what, W, "unix %s", js(rec, "path"));
		else
			snprintf(what, W, "%s %s%s%s:%lld", js(rec, "protocol"), v6 ? "[" : "",
				 js(rec, "daddr"), v6 ? "]" : "", ji(rec, "dport"));
		snprintf(verdict, V, "%s%s", js(rec, "verdict"),
			 json_is_false(json_object_get(rec, "enforced")) ? " not enforced" : "");
		snprintf(chain, C, "%s",
			 json_is_true(json_object_get(rec, "mediated")) ? "mediated"
									: "UNMEDIATED");
	} else if (is_type(rec, "disconnect")) {
		snprintf(what, W, "closed %s:%lld after %.3f ms", js(rec, "daddr"),
			 ji(rec, "dport"), (double)ji(rec, "duration_us") / 1000.0);
	} else if (is_type(rec, "session_close")) {
		json_t *cn = json_object_get(rec, "counts");

		/* the counts go where there is room for them */
		snprintf(what, W, "session_close: exit %lld", ji(cn, "exit_status"));
		snprintf(chain, C,
			 "%lld tokens, %lld denies, %lld connects (%lld blocked, %lld unmediated)",
			 ji(cn, "tokens"), ji(cn, "denies"), ji(cn, "connects"), ji(cn, "blocked"),
			 ji(cn, "unmediated"));
		snprintf(verdict, V, "sealed%s%s%s", *js(rec, "reason") ? " (" : "",
			 js(rec, "reason"), *js(rec, "reason") ? ")" : "");
	} else if (is_type(rec, "repeated")) {
		snprintf(what, W, "%lld more like record %lld, the last at %.12s", ji(rec, "count"),
			 ji(rec, "of"),
			 strlen(js(rec, "until")) >= 23 ? js(rec, "until") + 11 : "");
		snprintf(verdict, V, "repeated");
	} else {
		snprintf(what, W, "%s", type);
	}
}

static void lv_record(struct logview *lv, json_t *rec)
{
	char when[16], who[64], what[1024] = "", verdict[64] = "", chain[1024] = "";

	if (is_type(rec, "session_open")) { /* the chain column's user and agent */
		free(lv->user);
		free(lv->agent);
		lv->user = strdup(js(rec, "user"));
		lv->agent = strdup(js(rec, "agent"));
	}
	if (!lv_wanted(lv->f, rec))
		return;
	if (!lv->f->all_records && is_unix_connect(rec)) {
		if (lv->fold && ji(lv->fold, "pid") == ji(rec, "pid")) {
			lv->fold_more++;
			return;
		}
		logview_flush(lv);
		lv->fold = json_incref(rec);
		return;
	}
	logview_flush(lv);
	lv_when_who(rec, when, who);
	lv_describe(lv, rec, what, verdict, chain);
	lv_print(lv, rec, when, who, what, verdict, chain);
}

void logview_lines(struct logview *lv, char *text, size_t len, size_t *done)
{
	/* responses first: a token's line shows the status the API answered, when known */
	for (size_t off = *done; off < len;) {
		const char *nl = memchr(text + off, '\n', len - off);
		json_t *rec;

		if (!nl)
			break;
		rec = json_loadb(text + off, (size_t)(nl - (text + off)), 0, NULL);
		if (is_type(rec, "response") && *js(rec, "jti"))
			json_object_set(lv->status_by_jti, js(rec, "jti"),
					json_object_get(rec, "status"));
		json_decref(rec);
		off = (size_t)(nl - text) + 1;
	}
	while (*done < len) {
		char *line = text + *done, *nl = memchr(line, '\n', len - *done);
		json_t *rec;

		if (!nl)
			return; /* an incomplete line waits for the next chunk */
		*done += (size_t)(nl - line) + 1;
		rec = json_loadb(line, (size_t)(nl - line), 0, NULL);
		if (lv->f->json) {
			if (!rec || lv_wanted(lv->f, rec))
				printf("%.*s\n", (int)(nl - line), line);
		} else if (rec) {
			lv_record(lv, rec);
		}
		json_decref(rec);
	}
}

void logview_init(struct logview *lv, const struct logview_filter *f)
{
	memset(lv, 0, sizeof(*lv));
	lv->f = f;
	lv->status_by_jti = json_object();
}

void logview_free(struct logview *lv)
{
	json_decref(lv->status_by_jti);
	json_decref(lv->fold);
	free(lv->user);
	free(lv->agent);
	lv->status_by_jti = lv->fold = NULL;
	lv->user = lv->agent = NULL;
}
