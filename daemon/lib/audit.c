// SPDX-License-Identifier: MIT
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct audit_log {
	int fd;
	char *path;
	char *session;
	uint64_t seq;
	char prev[AUDIT_HASH_HEX];
};

static void audit_hash_line(const char *line, size_t len, char out[AUDIT_HASH_HEX])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)line, len, md);
	dp_hex(md, sizeof(md), out);
}

static struct audit_log *audit_alloc(const char *dir, const char *session)
{
	struct audit_log *log = calloc(1, sizeof(*log));

	if (!log)
		return NULL;
	log->fd = -1;
	if (asprintf(&log->path, "%s/%s.jsonl", dir, session) < 0) {
		log->path = NULL;
		free(log);
		return NULL;
	}
	log->session = strdup(session);
	if (!log->session) {
		audit_free(log);
		return NULL;
	}
	memset(log->prev, '0', 64);
	log->prev[64] = '\0';
	return log;
}

int audit_create(const char *dir, const char *session, struct audit_log **out, struct dp_err *err)
{
	struct audit_log *log = audit_alloc(dir, session);

	if (!log) {
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	log->fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (log->fd < 0) {
		int e = errno;

		dp_err_set(err, "%s: %s", log->path, strerror(e));
		audit_free(log);
		return -e;
	}
	*out = log;
	return 0;
}

int audit_reopen(const char *dir, const char *session, struct audit_log **out, struct dp_err *err)
{
	struct audit_log *log = audit_alloc(dir, session);
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (!log) {
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	rc = dp_read_file(log->path, 256u << 20, &text, &len);
	if (rc) {
		dp_err_set(err, "%s: %s", log->path, strerror(-rc));
		audit_free(log);
		return rc;
	}
	/* A torn last line (crash mid-write) is cut: it was never acknowledged. */
	while (len > 0 && text[len - 1] != '\n')
		len--;
	if (truncate(log->path, (off_t)len) < 0) {
		rc = -errno;
		dp_err_set(err, "%s: %s", log->path, strerror(errno));
		goto fail;
	}
	if (len > 0) {
		size_t end = len - 1, start = end;
		json_t *rec, *seq;

		while (start > 0 && text[start - 1] != '\n')
			start--;
		audit_hash_line(text + start, end - start, log->prev);
		rec = json_loadb(text + start, end - start, 0, NULL);
		seq = json_object_get(rec, "seq");
		if (!json_is_integer(seq)) {
			json_decref(rec);
			rc = -EBADMSG;
			dp_err_set(err, "%s: last record has no seq", log->path);
			goto fail;
		}
		log->seq = (uint64_t)json_integer_value(seq) + 1;
		json_decref(rec);
	}
	log->fd = open(log->path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (log->fd < 0) {
		rc = -errno;
		dp_err_set(err, "%s: %s", log->path, strerror(errno));
		goto fail;
	}
	free(text);
	*out = log;
	return 0;
fail:
	free(text);
	audit_free(log);
	return rc;
}

char *audit_record_tree(uint64_t seq, const char *ts, const char *session, const char *type,
			const char *prev, const json_t *fields, size_t *len)
{
	json_t *rec;
	char *line;

	rec = json_pack("{s:I, s:s, s:s, s:s, s:s}", "seq", (json_int_t)seq, "ts", ts, "session",
			session, "type", type, "prev", prev);
	if (!rec)
		return NULL;
	if (fields) {
		const char *k;
		json_t *v;

		json_object_foreach((json_t *)fields, k, v)
		{
			if (!json_object_get(rec, k))
				json_object_set(rec, k, v);
		}
	}
	line = json_dumps(rec, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(rec);
	if (line)
		*len = strlen(line);
	return line;
}

/* The text path writes only what needs no escaping itself (printable ASCII without quote
 * or backslash: jansson copies those bytes as they are); anything else is dumped by
 * jansson, so both paths give the same bytes by construction. */
struct audit_buf {
	char *p;
	size_t len, cap;
	bool full;
};

static void ab_put(struct audit_buf *b, const char *s, size_t n)
{
	if (b->full || n >= b->cap - b->len) {
		b->full = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static bool ab_plain(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch > 0x7f || ch == '"' || ch == '\\')
			return false;
	}
	return true;
}

/* A member: ,"key":  (the key must be plain: the callers' keys are identifiers). */
static bool ab_key(struct audit_buf *b, const char *key, bool first)
{
	size_t n = strlen(key);

	if (!ab_plain(key, n))
		return false;
	ab_put(b, first ? "{\"" : ",\"", 2);
	ab_put(b, key, n);
	ab_put(b, "\":", 2);
	return true;
}

static bool ab_str(struct audit_buf *b, const char *s, size_t n)
{
	if (!ab_plain(s, n))
		return false;
	ab_put(b, "\"", 1);
	ab_put(b, s, n);
	ab_put(b, "\"", 1);
	return true;
}

static bool ab_value(struct audit_buf *b, const json_t *v)
{
	char num[32];
	char *dump;
	int n;

	switch (json_typeof(v)) {
	case JSON_STRING:
		if (ab_str(b, json_string_value(v), json_string_length(v)))
			return true;
		break;
	case JSON_INTEGER:
		n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		ab_put(b, num, (size_t)n);
		return true;
	case JSON_TRUE:
		ab_put(b, "true", 4);
		return true;
	case JSON_FALSE:
		ab_put(b, "false", 5);
		return true;
	case JSON_NULL:
		ab_put(b, "null", 4);
		return true;
	default:
		break;
	}
	dump = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
	if (!dump)
		return false;
	ab_put(b, dump, strlen(dump));
	free(dump);
	return true;
}

ssize_t audit_record_text(uint64_t seq, const char *ts, const char *session, const char *type,
			  const char *prev, const json_t *fields, char *buf, size_t cap)
{
	static const char *const own[] = {"seq", "ts", "session", "type", "prev"};
	struct audit_buf b = {.p = buf, .cap = cap};
	const char *hv[] = {ts, session, type, prev};
	char num[32];
	int n;

	ab_key(&b, "seq", true);
	n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, (json_int_t)seq);
	ab_put(&b, num, (size_t)n);
	for (size_t i = 0; i < 4; i++)
		if (!ab_key(&b, own[i + 1], false) || !ab_str(&b, hv[i], strlen(hv[i])))
			return -1;
	if (fields) {
		const char *k;
		json_t *v;

		json_object_foreach((json_t *)fields, k, v)
		{
			bool dup = false;

			for (size_t i = 0; i < 5; i++)
				dup |= strcmp(k, own[i]) == 0;
			if (dup)
				continue;
			if (!ab_key(&b, k, false) || !ab_value(&b, v))
				return -1;
		}
	}
	ab_put(&b, "}", 1);
	if (b.full)
		return -1;
	return (ssize_t)b.len;
}

int audit_append(struct audit_log *log, const char *type, const json_t *fields)
{
	/* Room for the longest line the log takes, its newline and the NUL. */
	static _Thread_local char text[AUDIT_MAX_LINE + 2];
	char ts[DP_TS_LEN];
	char *line, *heap = NULL;
	size_t len;
	ssize_t tl;
	int rc = 0;

	dp_timestamp(ts);
	tl = audit_record_text(log->seq, ts, log->session, type, log->prev, fields, text,
			       AUDIT_MAX_LINE);
	if (tl >= 0) {
		line = text;
		len = (size_t)tl;
	} else {
		/* Something the text path does not write itself, or a line too long: the
		 * tree gives the same bytes or the same refusal. */
		line = heap =
		    audit_record_tree(log->seq, ts, log->session, type, log->prev, fields, &len);
		if (!line)
			return -ENOMEM;
	}
	if (len >= AUDIT_MAX_LINE) {
		free(heap);
		return -E2BIG;
	}
	audit_hash_line(line, len, log->prev);
	line[len] = '\n'; /* both paths left room for a NUL */
	/* One write: O_APPEND makes it atomic with respect to other appenders. */
	for (size_t off = 0; off < len + 1;) {
		ssize_t w = write(log->fd, line + off, len + 1 - off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		off += (size_t)w;
	}
	free(heap);
	if (rc == 0)
		log->seq++;
	return rc;
}

static json_t *audit_seal_claims(const char *issuer, const char *session, uint64_t seq,
				 const char *prev, const json_t *counts)
{
	return json_pack("{s:s, s:s, s:I, s:s, s:O}", "iss", issuer ? issuer : "", "session",
			 session, "seq", (json_int_t)seq, "prev", prev, "counts", counts);
}

int audit_seal(struct audit_log *log, const struct dp_key *key, const char *issuer,
	       const json_t *counts)
{
	json_t *empty = NULL, *claims, *fields;
	struct dp_err err;
	char *sig;
	int rc;

	if (!counts)
		counts = empty = json_object();
	claims = audit_seal_claims(issuer, log->session, log->seq, log->prev, counts);
	if (!claims) {
		json_decref(empty);
		return -ENOMEM;
	}
	sig = dp_jws_sign(key, "deputy-audit+jwt", claims, &err);
	json_decref(claims);
	if (!sig) {
		pr_warn("audit: cannot sign %s: %s", log->path, err.msg);
		json_decref(empty);
		return -EIO;
	}
	fields = json_pack("{s:O, s:s}", "counts", counts, "sig", sig);
	free(sig);
	json_decref(empty);
	if (!fields)
		return -ENOMEM;
	rc = audit_append(log, "session_close", fields);
	json_decref(fields);
	if (rc == 0 && fdatasync(log->fd) < 0)
		rc = -errno;
	return rc;
}

void audit_free(struct audit_log *log)
{
	if (!log)
		return;
	if (log->fd >= 0)
		close(log->fd);
	free(log->path);
	free(log->session);
	free(log);
}

const char *audit_path(const struct audit_log *log)
{
	return log->path;
}

uint64_t audit_next_seq(const struct audit_log *log)
{
	return log->seq;
}

/* Checks a session_close record's signature against keys and the chain position. */
static int audit_verify_seal(json_t *rec, const struct dp_keyset *keys, const char *session,
			     uint64_t seq, const char *prev, struct dp_err *err)
{
	const char *sig = json_string_value(json_object_get(rec, "sig"));
	json_t *counts = json_object_get(rec, "counts");
	const struct dp_key *key;
	struct dp_jws jws;
	struct dp_err jerr;
	json_t *c;
	int rc = -EBADMSG;

	if (!sig) {
		dp_err_set(err, "session_close has no sig");
		return -EBADMSG;
	}
	if (dp_jws_parse(sig, &jws, &jerr)) {
		dp_err_set(err, "session_close sig: %s", jerr.msg);
		return -EBADMSG;
	}
	key = jws.kid ? dp_keyset_find(keys, jws.kid) : NULL;
	if (!key) {
		dp_err_set(err, "session_close sig: key \"%s\" not in deputyd's JWKS",
			   jws.kid ? jws.kid : "");
		goto out;
	}
	if (dp_jws_verify(&jws, key, &jerr)) {
		dp_err_set(err, "session_close sig: %s", jerr.msg);
		goto out;
	}
	c = jws.claims;
	if (!json_is_string(json_object_get(c, "session")) ||
	    strcmp(json_string_value(json_object_get(c, "session")), session) != 0 ||
	    json_integer_value(json_object_get(c, "seq")) != (json_int_t)seq ||
	    !json_is_string(json_object_get(c, "prev")) ||
	    strcmp(json_string_value(json_object_get(c, "prev")), prev) != 0 ||
	    !json_equal(json_object_get(c, "counts"), counts)) {
		dp_err_set(err, "session_close sig does not match the record");
		goto out;
	}
	rc = 0;
out:
	dp_jws_clear(&jws);
	return rc;
}

int audit_verify(const char *text, size_t len, const struct dp_keyset *keys, bool *sealed,
		 struct dp_err *err)
{
	char prev[AUDIT_HASH_HEX];
	char *session = NULL;
	size_t off = 0;
	uint64_t lineno = 0;
	bool closed = false;
	int rc = 0;

	*sealed = false;
	memset(prev, '0', 64);
	prev[64] = '\0';
	while (off < len) {
		const char *line = text + off, *nl = memchr(line, '\n', len - off);
		size_t n = nl ? (size_t)(nl - line) : len - off;
		json_t *rec;
		json_error_t jerr;
		const char *type, *rsession, *rprev;
		json_t *seq;

		lineno++;
		off += n + (nl ? 1 : 0);
		if (!nl) {
			dp_err_set(err, "line %llu: not terminated (torn write?)",
				   (unsigned long long)lineno);
			rc = -EBADMSG;
			break;
		}
		if (closed) {
			dp_err_set(err, "line %llu: record after session_close",
				   (unsigned long long)lineno);
			rc = -EBADMSG;
			break;
		}
		rec = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(rec)) {
			dp_err_set(err, "line %llu: not a JSON object", (unsigned long long)lineno);
			json_decref(rec);
			rc = -EBADMSG;
			break;
		}
		seq = json_object_get(rec, "seq");
		type = json_string_value(json_object_get(rec, "type"));
		rsession = json_string_value(json_object_get(rec, "session"));
		rprev = json_string_value(json_object_get(rec, "prev"));
		if (!json_is_integer(seq) || json_integer_value(seq) != (json_int_t)(lineno - 1)) {
			dp_err_set(err, "line %llu: seq is not %llu", (unsigned long long)lineno,
				   (unsigned long long)(lineno - 1));
			rc = -EBADMSG;
		} else if (!type || !rsession || !rprev) {
			dp_err_set(err, "line %llu: missing type, session or prev",
				   (unsigned long long)lineno);
			rc = -EBADMSG;
		} else if (strcmp(rprev, prev) != 0) {
			dp_err_set(err, "line %llu: prev does not match the hash of line %llu",
				   (unsigned long long)lineno, (unsigned long long)(lineno - 1));
			rc = -EBADMSG;
		} else if (session && strcmp(session, rsession) != 0) {
			dp_err_set(err, "line %llu: session differs from line 1",
				   (unsigned long long)lineno);
			rc = -EBADMSG;
		} else if (!session && !(session = strdup(rsession))) {
			rc = -ENOMEM;
		} else if (strcmp(type, "session_close") == 0) {
			closed = true;
			if (keys) {
				struct dp_err serr;

				if (audit_verify_seal(rec, keys, session, lineno - 1, prev,
						      &serr)) {
					dp_err_set(err, "line %llu: %s", (unsigned long long)lineno,
						   serr.msg);
					rc = -EBADMSG;
				}
			}
		}
		json_decref(rec);
		if (rc)
			break;
		audit_hash_line(line, n, prev);
	}
	if (rc == 0 && lineno == 0) {
		dp_err_set(err, "empty log");
		rc = -EBADMSG;
	}
	if (rc == 0)
		*sealed = closed && keys;
	free(session);
	return rc;
}
