// SPDX-License-Identifier: MIT
/*
 * report: one session log as a self-contained HTML page for an auditor (`deputy report
 * SESSION --html`): who (user, agent, grant), a timeline of requests and connections,
 * totals, and the audit-verify verdict.
 *
 * Every string in a log may come from the agent (argv, comm, URLs, reasons quoting them),
 * so the page treats all of them as hostile: HTML-escaped, control bytes and bidi controls
 * shown as escapes (an agent must not be able to reorder what the auditor reads), and a
 * Content-Security-Policy that forbids scripts and every fetch, so the page stays
 * self-contained even if something slipped through.
 */
#include "report.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

/* What the page counts itself, so an open or cut log still gets totals. */
struct report_totals {
	long long delegated, passthrough, refused, responses;
	long long allowed, blocked, unmediated, unix_connects;
};

struct report {
	FILE *out;
	json_t *records;    /* the log's parsed lines, in order */
	json_t *status_by;  /* token jti -> the API's status */
	json_t *unix_paths; /* Unix socket path -> connects, folded out of the timeline */
	json_t *open, *close;
	struct report_totals t;
};

/* ---- escaping ------------------------------------------------------------------------------ */

/* Length of the UTF-8 sequence at s (1 for a stray byte) and its code point. */
static size_t report_utf8(const unsigned char *s, uint32_t *cp)
{
	if (s[0] < 0x80 || (s[0] & 0xe0) == 0xc0) {
		if (s[0] < 0x80 || (s[1] & 0xc0) != 0x80)
			return *cp = s[0], 1;
		return *cp = ((uint32_t)(s[0] & 0x1f) << 6) | (s[1] & 0x3f), 2;
	}
	if ((s[0] & 0xf0) == 0xe0 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80)
		return *cp = ((uint32_t)(s[0] & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) |
			     (s[2] & 0x3f),
		       3;
	return *cp = s[0], 1;
}

/* Bidi embeddings, overrides and isolates, and the invisible marks: shown, not obeyed. */
static int report_is_bidi(uint32_t cp)
{
	return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
	       cp == 0x200f || cp == 0x061c;
}

static void report_esc(FILE *out, const char *text)
{
	const unsigned char *s = (const unsigned char *)(text ? text : "");

	while (*s) {
		uint32_t cp;
		size_t n = report_utf8(s, &cp);

		if (*s == '&')
			fputs("&amp;", out);
		else if (*s == '<')
			fputs("&lt;", out);
		else if (*s == '>')
			fputs("&gt;", out);
		else if (*s == '"')
			fputs("&quot;", out);
		else if (*s == '\'')
			fputs("&#39;", out);
		else if (*s < 0x20 || *s == 0x7f || (cp >= 0x80 && cp < 0xa0))
			fprintf(out, "<span class=\"esc\">\\x%02x</span>", (unsigned)cp);
		else if (report_is_bidi(cp))
			fprintf(out, "<span class=\"esc\">\\u%04x</span>", (unsigned)cp);
		else
			fwrite(s, 1, n, out);
		s += n;
	}
}

/* ---- reading records ----------------------------------------------------------------------- */

static const char *report_str(const json_t *rec, const char *key)
{
	const char *v = json_string_value(json_object_get(rec, key));

	return v ? v : "";
}

static long long report_int(const json_t *rec, const char *key)
{
	return (long long)json_integer_value(json_object_get(rec, key));
}

static int report_is(const json_t *rec, const char *type)
{
	return strcmp(report_str(rec, "type"), type) == 0;
}

static int report_is_unix(const json_t *rec)
{
	return report_is(rec, "connect") && strcmp(report_str(rec, "family"), "unix") == 0;
}

static void report_count(struct report *r, json_t *rec)
{
	struct report_totals *t = &r->t;

	if (report_is(rec, "session_open") && !r->open) {
		r->open = rec;
	} else if (report_is(rec, "session_close")) {
		r->close = rec;
	} else if (report_is(rec, "token")) {
		t->delegated++;
	} else if (report_is(rec, "token_use")) {
		t->delegated += json_array_size(json_object_get(rec, "uses"));
	} else if (report_is(rec, "passthrough")) {
		t->passthrough++;
	} else if (report_is(rec, "deny")) {
		t->refused += !json_is_false(json_object_get(rec, "enforced"));
	} else if (report_is(rec, "response")) {
		t->responses++;
		if (*report_str(rec, "jti"))
			json_object_set(r->status_by, report_str(rec, "jti"),
					json_object_get(rec, "status"));
	} else if (report_is_unix(rec)) {
		json_t *n = json_object_get(r->unix_paths, report_str(rec, "path"));

		t->unix_connects++;
		json_object_set_new(r->unix_paths, report_str(rec, "path"),
				    json_integer(json_integer_value(n) + 1));
	} else if (report_is(rec, "connect")) {
		bool allowed = strcmp(report_str(rec, "verdict"), "allow") == 0;

		t->allowed += allowed;
		t->blocked += !allowed;
		t->unmediated += allowed && !json_is_true(json_object_get(rec, "mediated"));
	}
}

static int report_parse(struct report *r, const char *text, size_t len)
{
	size_t off = 0;

	r->records = json_array();
	r->status_by = json_object();
	r->unix_paths = json_object();
	if (!r->records || !r->status_by || !r->unix_paths)
		return -1;
	while (off < len) {
		const char *nl = memchr(text + off, '\n', len - off);
		size_t n = nl ? (size_t)(nl - (text + off)) : len - off;
		json_t *rec = json_loadb(text + off, n, 0, NULL);

		/* A line that is not a JSON object is left out here; the verdict names it. */
		if (json_is_object(rec)) {
			report_count(r, rec);
			json_array_append(r->records, rec);
		}
		json_decref(rec);
		off += n + 1;
	}
	return 0;
}

/* ---- the page ------------------------------------------------------------------------------ */

static const char report_style[] =
    "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:78em;color:#1d2330;"
    "padding:0 1em}"
    "h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.6em 0 .5em;"
    "border-bottom:1px solid #d5d9e0}"
    "code,td.mono{font-family:ui-monospace,monospace;font-size:.93em}"
    ".verdict{padding:.6em .9em;border-radius:6px;font-weight:600;margin:.8em 0}"
    ".verdict.ok{background:#e3f4e6;color:#145a25}.verdict.open{background:#fff4d6;"
    "color:#6b4d00}.verdict.bad{background:#fde2e1;color:#8a1712}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;"
    "padding:.3em .6em;border-bottom:1px solid #eceef2}"
    "table.kv th{width:11em;color:#556}td{overflow-wrap:anywhere}"
    "table.tl td:nth-child(1),table.tl td:nth-child(4){white-space:nowrap}"
    ".totals{display:flex;flex-wrap:wrap;gap:.6em}.totals div{border:1px solid #d5d9e0;"
    "border-radius:6px;padding:.5em .8em;min-width:8.5em}.totals b{display:block;"
    "font-size:1.5em}"
    "tr.good td.d{color:#145a25}tr.bad td.d,tr.bad td.r{color:#8a1712;font-weight:600}"
    "tr.warn td.d,tr.warn td.r{color:#8a4b00;font-weight:600}tr.meta td{color:#556}"
    ".esc{background:#fde2e1;color:#8a1712;border-radius:3px}"
    "footer{margin-top:2em;color:#667;font-size:.9em}";

static void report_kv(struct report *r, const char *key, const char *value)
{
	fprintf(r->out, "<tr><th>%s</th><td>", key);
	report_esc(r->out, value);
	fputs("</td></tr>\n", r->out);
}

static void report_who(struct report *r)
{
	const json_t *o = r->open, *c = r->close;
	char *argv = o ? json_dumps(json_object_get(o, "argv"), JSON_COMPACT) : NULL;
	char buf[256];

	fputs("<section id=\"who\"><h2>Who and what</h2><table class=\"kv\">\n", r->out);
	if (!o) {
		fputs("<tr><th>Session</th><td>no session_open record in this log</td></tr>\n",
		      r->out);
	} else {
		report_kv(r, "User", report_str(o, "user"));
		report_kv(r, "Agent", report_str(o, "agent"));
		report_kv(r, "Grant issuer", report_str(o, "grant_iss"));
		report_kv(r, "Grant id (jti)", report_str(o, "grant_jti"));
		snprintf(buf, sizeof(buf), "%lld", report_int(o, "uid"));
		report_kv(r, "Unix uid", buf);
		report_kv(r, "Command", argv ? argv : "");
		report_kv(r, "Opened", report_str(o, "ts"));
	}
	if (c) {
		const json_t *counts = json_object_get(c, "counts");

		report_kv(r, "Closed", report_str(c, "ts"));
		if (*report_str(c, "reason"))
			report_kv(r, "Close reason", report_str(c, "reason"));
		snprintf(buf, sizeof(buf), "%lld", report_int(counts, "exit_status"));
		report_kv(r, "Exit status", buf);
	} else {
		report_kv(r, "Closed", "not closed: the session is open, or the log ends early");
	}
	fputs("</table></section>\n", r->out);
	free(argv);
}

static void report_total(struct report *r, const char *what, long long n)
{
	fprintf(r->out, "<div><b>%lld</b>%s</div>\n", n, what);
}

static void report_totals(struct report *r)
{
	const struct report_totals *t = &r->t;

	fputs("<section id=\"totals\"><h2>Totals</h2><div class=\"totals\">\n", r->out);
	report_total(r, "requests delegated", t->delegated);
	report_total(r, "requests passed through", t->passthrough);
	report_total(r, "refused", t->refused);
	report_total(r, "API responses seen", t->responses);
	report_total(r, "connections allowed", t->allowed);
	report_total(r, "connections blocked", t->blocked);
	report_total(r, "connections unmediated", t->unmediated);
	if (r->close)
		report_total(r, "kernel events lost",
			     report_int(json_object_get(r->close, "counts"), "lost_events"));
	fputs("</div></section>\n", r->out);
}

/* One timeline row: time, process, event, scope, decision, result. cls colours it. */
struct report_row {
	const char *cls, *event, *scope, *decision, *result;
};

static void report_row(struct report *r, const json_t *rec, const struct report_row *row)
{
	const char *ts = report_str(rec, "ts");
	char who[64] = "", when[16];

	if (report_int(rec, "pid"))
		snprintf(who, sizeof(who), "%lld ", report_int(rec, "pid"));
	/* 2026-11-28T15:18:11.631563Z -> 15:18:11.631 */
	snprintf(when, sizeof(when), "%.12s", strlen(ts) >= 23 ? ts + 11 : ts);
	fprintf(r->out, "<tr class=\"%s\"><td class=\"mono\">", row->cls);
	report_esc(r->out, when);
	fputs("</td><td class=\"mono\">", r->out);
	report_esc(r->out, who);
	report_esc(r->out, report_str(rec, "comm"));
	fputs("</td><td class=\"mono\">", r->out);
	report_esc(r->out, row->event);
	fputs("</td><td>", r->out);
	report_esc(r->out, row->scope);
	fputs("</td><td class=\"d\">", r->out);
	report_esc(r->out, row->decision);
	fputs("</td><td class=\"r\">", r->out);
	report_esc(r->out, row->result);
	fputs("</td></tr>\n", r->out);
}

static void report_request_row(struct report *r, const json_t *rec)
{
	char event[4600], decision[64], result[64];
	struct report_row row = {.event = event, .decision = decision, .result = result};

	if (report_is(rec, "token")) {
		json_t *st = json_object_get(r->status_by, report_str(rec, "jti"));

		snprintf(event, sizeof(event), "%s %s", report_str(rec, "htm"),
			 report_str(rec, "htu"));
		snprintf(decision, sizeof(decision), "delegated%s",
			 json_is_true(json_object_get(rec, "reused")) ? " (token reused)" : "");
		if (st)
			snprintf(result, sizeof(result), "API status %lld",
				 (long long)json_integer_value(st));
		else
			snprintf(result, sizeof(result), "no response seen");
		row.cls = st && json_integer_value(st) >= 400 ? "warn" : "good";
		row.scope = report_str(rec, "scope");
	} else {
		snprintf(event, sizeof(event), "%s %s", report_str(rec, "method"),
			 report_str(rec, "url"));
		snprintf(decision, sizeof(decision), "passed through");
		snprintf(result, sizeof(result), "not mediated by a token");
		row.cls = "good";
		row.scope = "";
	}
	report_row(r, rec, &row);
}

static void report_deny_row(struct report *r, const json_t *rec)
{
	const char *layer = report_str(rec, "layer");
	bool enforced = !json_is_false(json_object_get(rec, "enforced"));
	char event[4600], decision[64];
	struct report_row row = {.event = event,
				 .decision = decision,
				 .result = report_str(rec, "reason"),
				 .scope = report_str(rec, "scope")};

	if (strcmp(layer, "kernel") == 0 && *report_str(rec, "daddr"))
		snprintf(event, sizeof(event), "connect %s port %lld", report_str(rec, "daddr"),
			 report_int(rec, "dport"));
	else if (strcmp(layer, "kernel") == 0)
		snprintf(event, sizeof(event), "socket %s", report_str(rec, "family"));
	else if (strcmp(layer, "shim") == 0)
		snprintf(event, sizeof(event), "%s %s%s", report_str(rec, "method"),
			 report_str(rec, "host"), report_str(rec, "target"));
	else
		snprintf(event, sizeof(event), "%s %s", report_str(rec, "method"),
			 report_str(rec, "url"));
	snprintf(decision, sizeof(decision), "%s (%s)%s",
		 strcmp(layer, "kernel") == 0 ? "blocked" : "refused", layer,
		 enforced ? "" : ", not enforced");
	row.cls = enforced ? "bad" : "warn";
	report_row(r, rec, &row);
}

static void report_connect_row(struct report *r, const json_t *rec)
{
	bool allowed = strcmp(report_str(rec, "verdict"), "allow") == 0;
	bool enforced = !json_is_false(json_object_get(rec, "enforced"));
	bool inet6 = strcmp(report_str(rec, "family"), "inet6") == 0;
	char event[256], decision[64], result[64];
	struct report_row row = {
	    .event = event, .decision = decision, .result = result, .scope = ""};

	snprintf(event, sizeof(event), "%s %s%s%s:%lld", report_str(rec, "protocol"),
		 inet6 ? "[" : "", report_str(rec, "daddr"), inet6 ? "]" : "",
		 report_int(rec, "dport"));
	snprintf(decision, sizeof(decision), "%s",
		 allowed    ? "allowed"
		 : enforced ? "blocked"
			    : "would block (not enforced)");
	if (!allowed)
		snprintf(result, sizeof(result), "-");
	else if (json_is_true(json_object_get(rec, "mediated")))
		snprintf(result, sizeof(result), "mediated (%s)",
			 *report_str(rec, "mediator") ? report_str(rec, "mediator") : "shim");
	else
		snprintf(result, sizeof(result), "UNMEDIATED");
	row.cls = !allowed					   ? (enforced ? "bad" : "warn")
		  : json_is_true(json_object_get(rec, "mediated")) ? "good"
								   : "warn";
	report_row(r, rec, &row);
}

static void report_session_row(struct report *r, const json_t *rec)
{
	const char *type = report_str(rec, "type");
	char event[128];
	struct report_row row = {.cls = "meta",
				 .event = event,
				 .scope = "",
				 .decision = "",
				 .result = report_str(rec, "reason")};

	if (report_is(rec, "session_open"))
		snprintf(event, sizeof(event), "session opened");
	else if (report_is(rec, "session_close"))
		snprintf(event, sizeof(event), "session closed (exit status %lld)",
			 report_int(json_object_get(rec, "counts"), "exit_status"));
	else if (report_is(rec, "session_resume"))
		snprintf(event, sizeof(event), "session taken over by a restarted deputyd");
	else
		snprintf(event, sizeof(event), "%s", type);
	report_row(r, rec, &row);
}

static void report_timeline(struct report *r)
{
	size_t i;
	json_t *rec;
	const char *path;
	json_t *n;

	fputs("<section id=\"timeline\"><h2>Timeline</h2>\n<table class=\"tl\"><thead><tr>"
	      "<th>Time (UTC)</th><th>Process</th><th>Request or connection</th><th>Scope</th>"
	      "<th>Decision</th><th>Result</th></tr></thead><tbody>\n",
	      r->out);
	json_array_foreach(r->records, i, rec)
	{
		if (report_is(rec, "token") || report_is(rec, "passthrough"))
			report_request_row(r, rec);
		else if (report_is(rec, "deny"))
			report_deny_row(r, rec);
		else if (report_is(rec, "connect") && !report_is_unix(rec))
			report_connect_row(r, rec);
		else if (!report_is(rec, "connect") && !report_is(rec, "response") &&
			 !report_is(rec, "disconnect"))
			report_session_row(r, rec);
	}
	fputs("</tbody></table>\n", r->out);
	if (r->t.unix_connects) {
		fprintf(r->out,
			"<p>%lld Unix-socket connects (always allowed, never mediated) are not "
			"listed:",
			r->t.unix_connects);
		json_object_foreach(r->unix_paths, path, n)
		{
			fputs(" <code>", r->out);
			report_esc(r->out, path);
			fprintf(r->out, "</code> &times;%lld", (long long)json_integer_value(n));
		}
		fputs("</p>\n", r->out);
	}
	fputs("</section>\n", r->out);
}

static void report_verdict(struct report *r, const struct report_source *src)
{
	const char *cls = src->verdict->broken ? "bad" : src->verdict->sealed ? "ok" : "open";

	fprintf(r->out, "<p class=\"verdict %s\" id=\"verdict\">Audit log: ", cls);
	if (src->verdict->broken) {
		fputs("NOT INTACT: ", r->out);
		report_esc(r->out, src->why);
	} else if (src->verdict->sealed) {
		fprintf(r->out, "intact, %zu records, sealed by deputyd", src->verdict->records);
	} else {
		fprintf(r->out, "intact so far, %zu records (session open, not sealed yet)",
			src->verdict->records);
	}
	fputs("</p>\n", r->out);
}

int report_html(FILE *out, const struct report_source *src)
{
	struct report r = {.out = out};
	const char *session;
	char now[DP_TS_LEN];
	int rc = report_parse(&r, src->text, src->len);

	if (rc)
		goto out;
	session = r.open ? report_str(r.open, "session") : src->target;
	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
	      "style-src 'unsafe-inline'\">\n"
	      "<meta name=\"viewport\" content=\"width=device-width\">\n<title>deputy session ",
	      out);
	report_esc(out, session);
	fprintf(out, "</title>\n<style>%s</style></head><body>\n<header><h1>deputy session <code>",
		report_style);
	report_esc(out, session);
	fputs("</code></h1>\n", out);
	report_verdict(&r, src);
	fputs("</header>\n", out);
	report_who(&r);
	report_totals(&r);
	report_timeline(&r);
	dp_timestamp(now);
	fprintf(out, "<footer>Written by deputy %s at %s from ", DEPUTY_VERSION, now);
	report_esc(out, src->target);
	fputs(". Every value above comes from the session's audit log; the verdict is "
	      "<code>deputy audit verify</code>'s.</footer>\n</body></html>\n",
	      out);
	rc = ferror(out) ? -EIO : 0;
out:
	json_decref(r.records);
	json_decref(r.status_by);
	json_decref(r.unix_paths);
	return rc;
}
