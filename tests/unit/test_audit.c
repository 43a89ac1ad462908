// SPDX-License-Identifier: MIT
/* Unit tests of daemon/deputyd/audit_log.c and daemon/lib/audit.c: a record's line must be
 * exactly the bytes of the jansson tree records once were (lines are hashed into the chain
 * and compared by tests and verifiers), and audit_log_append must write a chain audit_verify
 * accepts. jsonw's own test covers random values; these are the audit log's records. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_log.h"
#include "unit.h"

#define TS "2026-11-28T16:27:25.123456Z"
#define SESS "AbCdEfGhIjKlMnOpQrStUv"
#define PREV "0000000000000000000000000000000000000000000000000000000000000000"

static char buf[AUDIT_MAX_LINE + 2];

/* The reference: the record as a jansson tree (own members first, fields' own-named members
 * dropped), dumped compact and ASCII-only; NULL where jansson refuses. */
static char *tree_line(uint64_t seq, const char *session, const char *type, const json_t *fields,
		       size_t *len)
{
	json_t *rec = json_pack("{s:I, s:s, s:s, s:s, s:s}", "seq", (json_int_t)seq, "ts", TS,
				"session", session, "type", type, "prev", PREV);
	const char *k;
	json_t *v;
	char *line;

	if (!rec)
		return NULL;
	if (fields)
		json_object_foreach((json_t *)fields, k, v)
		{
			if (!json_object_get(rec, k))
				json_object_set(rec, k, v);
		}
	line = json_dumps(rec, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(rec);
	if (line)
		*len = strlen(line);
	return line;
}

/* 1: the record's line is the tree's; 0: both refused it; -1: they differ (the case has
 * failed). */
static int same_line(uint64_t seq, const char *session, const char *type, const json_t *fields)
{
	size_t tlen = 0;
	char *tree = tree_line(seq, session, type, fields, &tlen);
	ssize_t n = audit_log_record(seq, TS, session, type, PREV, fields, buf, AUDIT_MAX_LINE);
	int rc;

	if (n < 0 && !tree) {
		rc = 0;
	} else if (n < 0 || !tree || (size_t)n != tlen || memcmp(buf, tree, tlen) != 0) {
		printf("# text: %.*s\n# tree: %s\n", n < 0 ? 0 : (int)n, buf,
		       tree ? tree : "(null)");
		rc = -1;
	} else {
		rc = 1;
	}
	free(tree);
	return rc;
}

static void test_hot_records_match(void)
{
	json_t *f[5];
	int rc[5];

	f[0] = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:b, s:I, s:s}", "jti", "j-1", "aud",
			 "https://mail.internal", "scope", "email:send", "htm", "POST", "htu",
			 "https://mail.internal/api/send?x=1&y=/z", "exp", (json_int_t)1795000000,
			 "reused", 0, "pid", (json_int_t)4242, "comm", "curl");
	f[1] = json_pack("{s:s, s:I}", "jti", "j-1", "status", (json_int_t)200);
	f[2] = json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:I, s:s, s:b, s:b, s:I}", "pid",
			 (json_int_t)1, "tid", (json_int_t)2, "comm", "python3", "family", "inet6",
			 "protocol", "tcp", "daddr", "::1", "dport", (json_int_t)443, "verdict",
			 "allow", "enforced", 1, "mediated", 1, "cookie", (json_int_t)INT64_MAX);
	f[3] = json_pack("{s:I, s:s, s:s, s:s, s:s, s:b, s:b}", "pid", (json_int_t)-7, "comm", "x",
			 "family", "unix", "path", "@abstract~", "verdict", "allow", "enforced", 0,
			 "mediated", 0);
	f[4] = json_pack("{s:s, s:n, s:s?}", "layer", "daemon", "scope", "method", NULL);
	for (int i = 0; i < 5; i++) {
		if (!f[i])
			fail("json_pack %d", i);
		rc[i] =
		    same_line((uint64_t)i * 1000003u, SESS, i == 1 ? "response" : "token", f[i]);
		json_decref(f[i]);
	}
	for (int i = 0; i < 5; i++)
		if (rc[i] != 1)
			fail("record %d: %s", i, rc[i] < 0 ? "lines differ" : "refused");
	check(same_line(0, SESS, "session_open", NULL) == 1);
}

/* Every escape jansson makes, in values, keys and the record's own members; nested values;
 * the record's own keys in fields (dropped by both). */
static void test_escaping_matches(void)
{
	static const char *vals[] = {"quote\"inside",
				     "back\\slash",
				     "slash/",
				     "nl\nline",
				     "tab\tcr\r",
				     "bs\bff\f",
				     "ctl\x01\x1f",
				     "del\x7f",
				     "caf\xc3\xa9",
				     "snow\xe2\x98\x83",
				     "emoji\xf0\x9f\x98\x80",
				     "",
				     " ",
				     "~}{][:,"};
	json_t *f = json_object();
	int rc;

	if (!f)
		fail("oom");
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		char k[16];

		snprintf(k, sizeof(k), "k%zu", i);
		json_object_set_new(f, k, json_string(vals[i]));
	}
	json_object_set_new(f, "nul", json_stringn("a\0b", 3));
	json_object_set_new(f, "real", json_real(0.1));
	json_object_set_new(f, "arr", json_pack("[s, i, {s:s}]", "\x02", 3, "q\"", "\xc3\xa9"));
	json_object_set_new(f, "counts", json_pack("{s:i, s:i}", "tokens", 3, "denies", 0));
	json_object_set_new(f, "seq", json_integer(99));
	json_object_set_new(f, "type", json_string("not this"));
	rc = same_line(7, SESS, "deny", f);
	json_decref(f);
	check(rc == 1);

	f = json_pack("{s:s}", "k\"ey", "v");
	check(f && same_line(1, SESS, "token", f) == 1);
	json_decref(f);
	check(same_line(1, "se\"ss", "token", NULL) == 1);
	check(same_line(1, SESS, "t\xc3\xa9", NULL) == 1);
}

static void test_each_byte_matches(void)
{
	/* Every single character from U+0001 to U+00FF, alone and between plain bytes. */
	for (unsigned cp = 1; cp < 0x100; cp++) {
		char s[8];
		json_t *f;
		int rc;

		if (cp < 0x80)
			snprintf(s, sizeof(s), "a%cb", (char)cp);
		else
			snprintf(s, sizeof(s), "a%c%cb", (char)(0xc0 | (cp >> 6)),
				 (char)(0x80 | (cp & 0x3f)));
		f = json_pack("{s:s}", "comm", s);
		if (!f)
			fail("json_pack U+%04X", cp);
		rc = same_line(cp, SESS, "connect", f);
		json_decref(f);
		if (rc != 1)
			fail("U+%04X: lines differ", cp);
	}
}

static void test_not_utf8(void)
{
	json_t *f = json_object();
	size_t len = 1;
	char *tree;

	if (!f)
		fail("oom");
	json_object_set_new_nocheck(f, "comm", json_stringn_nocheck("a\xff", 2));
	tree = tree_line(1, SESS, "connect", f, &len);
	check(!tree); /* jansson refuses it, and so does the log */
	check(audit_log_record(1, TS, SESS, "connect", PREV, f, buf, AUDIT_MAX_LINE) == -EILSEQ);
	free(tree);
	json_decref(f);
}

/* Lines up to AUDIT_MAX_LINE - 1 bytes are taken and longer ones refused, as before. */
static void test_size_limit(void)
{
	static char big[AUDIT_MAX_LINE + 8];
	size_t base, tlen;
	json_t *f;
	char *tree;
	ssize_t n;

	f = json_pack("{s:s}", "comm", "");
	tree = tree_line(5, SESS, "connect", f, &base);
	json_decref(f);
	if (!tree)
		fail("tree");
	free(tree);
	for (size_t want = AUDIT_MAX_LINE - 2; want <= AUDIT_MAX_LINE + 1; want++) {
		memset(big, 'x', want - base);
		big[want - base] = '\0';
		f = json_pack("{s:s}", "comm", big);
		tree = tree_line(5, SESS, "connect", f, &tlen);
		n = audit_log_record(5, TS, SESS, "connect", PREV, f, buf, AUDIT_MAX_LINE);
		json_decref(f);
		if (!tree || tlen != want) {
			free(tree);
			fail("tree length %zu, want %zu", tlen, want);
		}
		if (want < AUDIT_MAX_LINE) {
			if (n != (ssize_t)want || memcmp(buf, tree, tlen) != 0) {
				free(tree);
				fail("a %zu-byte line: text gave %zd", want, n);
			}
		} else if (n != -E2BIG) {
			free(tree);
			fail("a %zu-byte line: not refused (%zd)", want, n);
		}
		free(tree);
	}
}

static void test_append_chain(void)
{
	char dir[] = "/tmp/deputy-test-audit-XXXXXX";
	struct audit_log *log = NULL;
	struct dp_err err = {0};
	char path[128];
	char *text = NULL;
	size_t len = 0;
	bool sealed = true;
	int rc = 0;

	if (!mkdtemp(dir))
		fail("mkdtemp: %s", strerror(errno));
	if (audit_log_create(dir, SESS, &log, &err) != 0) {
		rmdir(dir);
		fail("audit_log_create: %s", err.msg);
	}
	for (int i = 0; i < 50 && rc == 0; i++) {
		json_t *f = json_pack("{s:s, s:I, s:s}", "jti", i % 3 ? "j" : "q\"\n\xc3\xa9",
				      "status", (json_int_t)i, "comm", i % 5 ? "c" : "\x01");

		rc = audit_log_append(log, i % 2 ? "response" : "token", f, &err);
		json_decref(f);
	}
	if (rc == 0)
		rc = audit_log_append(log, "session_open", NULL, &err);
	snprintf(path, sizeof(path), "%s", audit_log_path(log));
	audit_log_free(log);
	if (rc == 0)
		rc = dp_read_file(path, 1 << 20, &text, &len);
	if (rc == 0)
		rc = audit_verify(text, len, NULL, &sealed, &err) ? -EBADMSG : 0;
	if (rc == 0) {
		const char *p = text;
		int lines = 0;

		for (const char *nl; (nl = memchr(p, '\n', len - (size_t)(p - text))); p = nl + 1)
			lines++;
		if (lines != 51)
			rc = -EINVAL;
	}
	free(text);
	unlink(path);
	rmdir(dir);
	if (rc)
		fail("append/verify: %s (%s)", strerror(-rc), err.msg);
	check(!sealed);
}

int main(void)
{
	RUN(test_hot_records_match);
	RUN(test_escaping_matches);
	RUN(test_each_byte_matches);
	RUN(test_not_utf8);
	RUN(test_size_limit);
	RUN(test_append_chain);
	UNIT_EXIT();
}
