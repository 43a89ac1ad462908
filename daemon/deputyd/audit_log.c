// SPDX-License-Identifier: MIT
/*
 * audit_log: deputyd's writer of session audit logs: creating and reopening a log, one
 * record per line through jsonw, and the signed session_close that seals it.
 *
 * A record is chained (seq, prev) when it is appended but reaches the file with the other
 * records of the same event-loop turn: audit_log_flush_all writes each log's pending lines
 * with one write(), and the loop sends the turn's replies only after that (conn.c), so what
 * a reply depends on is in the file (the page cache, which outlives deputyd) before the
 * reply leaves, as it was when every record had its own write. A flush that fails rolls
 * the log back to its last written record (seq, prev and size, and a torn tail is cut), and
 * audit_log_failed tells the loop which logs' replies must not go. Logs are appended to and
 * flushed by deputyd's loop thread only.
 */
#include "audit_log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit_export.h"
#include "jsonw.h"

/* A pending record as the syslog export wants it: only a record the file holds is exported. */
struct audit_pending {
	size_t off, len; /* the line in pend, without its newline */
	char type[33];
	char ts[DP_TS_LEN];
};

/* What the file holds: where a failed flush rolls back to. */
struct audit_mark {
	uint64_t seq, size;
	char prev[AUDIT_HASH_HEX];
	char last_ts[DP_TS_LEN];
};

struct audit_log {
	int fd;
	char *path;
	char *session;
	uint64_t seq;
	uint64_t size, max; /* bytes in the file and pending; the limit (0: none) */
	char prev[AUDIT_HASH_HEX];
	char last_ts[DP_TS_LEN];
	struct audit_mark written;
	/* Appended, not yet written: kept between turns, so a busy log allocates nothing. */
	char *pend;
	size_t plen, pcap;
	struct audit_pending *recs;
	size_t nrec, reccap;
	struct audit_log *dirty_next; /* on audit_dirty while pend holds something */
	bool dirty;
	uint64_t failed_turn; /* audit_turn of the flush that failed */
	char last_type[32];   /* of the last record, written or read back */
	bool no_export;	      /* deputyd's host log: not a session's record */
	char prev_seal[AUDIT_HASH_HEX], prev_seal_session[DP_ID_LEN]; /* for the seal; "": none */
};

/* Logs with pending records, and the flush_all round (starts at 1: 0 is "never failed"). */
static struct audit_log *audit_dirty;
static uint64_t audit_turn = 1;

/* A turn's pending bytes above this are written at once: a flood of kernel events between
 * two replies must not grow a buffer without bound. */
#define AUDIT_PEND_MAX (256u << 10)

/* Kept free below the limit for session_close: counts and a signature, well under this. */
#define AUDIT_SEAL_ROOM 8192

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
		audit_log_free(log);
		return NULL;
	}
	memset(log->prev, '0', 64);
	log->prev[64] = '\0';
	memcpy(log->written.prev, log->prev, sizeof(log->prev));
	return log;
}

static void audit_mark_written(struct audit_log *log)
{
	log->written.seq = log->seq;
	log->written.size = log->size;
	memcpy(log->written.prev, log->prev, sizeof(log->prev));
	memcpy(log->written.last_ts, log->last_ts, sizeof(log->last_ts));
}

int audit_log_create(const char *dir, const char *session, struct audit_log **out,
		     struct dp_err *err)
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
		audit_log_free(log);
		return -e;
	}
	*out = log;
	return 0;
}

int audit_log_reopen(const char *dir, const char *session, struct audit_log **out,
		     struct dp_err *err)
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
		audit_log_free(log);
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
		snprintf(log->last_ts, sizeof(log->last_ts), "%s",
			 json_string_value(json_object_get(rec, "ts")) ?: "");
		snprintf(log->last_type, sizeof(log->last_type), "%s",
			 json_string_value(json_object_get(rec, "type")) ?: "");
		json_decref(rec);
	}
	log->fd = open(log->path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (log->fd < 0) {
		rc = -errno;
		dp_err_set(err, "%s: %s", log->path, strerror(errno));
		goto fail;
	}
	free(text);
	log->size = len;
	audit_mark_written(log);
	*out = log;
	return 0;
fail:
	free(text);
	audit_log_free(log);
	return rc;
}

/* A jansson value as jw calls, in jansson's own order (objects keep insertion order). */
static void audit_put_value(struct jw *w, const json_t *v)
{
	const char *k;
	json_t *m;
	size_t i;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		jw_obj_open(w);
		json_object_foreach((json_t *)v, k, m)
		{
			jw_key(w, k);
			audit_put_value(w, m);
		}
		jw_obj_close(w);
		break;
	case JSON_ARRAY:
		jw_arr_open(w);
		json_array_foreach(v, i, m) audit_put_value(w, m);
		jw_arr_close(w);
		break;
	case JSON_STRING:
		jw_strn(w, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		jw_int(w, json_integer_value(v));
		break;
	case JSON_REAL:
		jw_real(w, json_real_value(v));
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		jw_bool(w, json_is_true(v));
		break;
	case JSON_NULL:
		jw_null(w);
		break;
	}
}

ssize_t audit_log_record(uint64_t seq, const char *ts, const char *session, const char *type,
			 const char *prev, const json_t *fields, char *buf, size_t cap)
{
	static const char *const own[] = {"seq", "ts", "session", "type", "prev"};
	const char *own_val[] = {NULL, ts, session, type, prev};
	struct jw w;
	ssize_t n;

	jw_init(&w, buf, cap, JW_ASCII);
	jw_obj_open(&w);
	jw_member_int(&w, "seq", (int64_t)seq);
	for (size_t i = 1; i < DP_ARRAY_SIZE(own); i++)
		jw_member_str(&w, own[i], own_val[i]);
	if (fields) {
		const char *k;
		json_t *v;

		json_object_foreach((json_t *)fields, k, v)
		{
			bool dup = false;

			for (size_t i = 0; i < DP_ARRAY_SIZE(own); i++)
				dup |= strcmp(k, own[i]) == 0;
			if (dup)
				continue;
			jw_key(&w, k);
			audit_put_value(&w, v);
		}
	}
	jw_obj_close(&w);
	n = jw_end(&w);
	return n == -ENOSPC ? -E2BIG : n;
}

void audit_log_set_max(struct audit_log *log, uint64_t max)
{
	log->max = max;
}

static int audit_grow(void **p, size_t *cap, size_t need, size_t elem, size_t first)
{
	size_t c = *cap ? *cap : first;
	void *n;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	n = realloc(*p, c * elem);
	if (!n)
		return -ENOMEM;
	*p = n;
	*cap = c;
	return 0;
}

static void audit_unlink_dirty(struct audit_log *log)
{
	for (struct audit_log **pp = &audit_dirty; *pp; pp = &(*pp)->dirty_next)
		if (*pp == log) {
			*pp = log->dirty_next;
			break;
		}
	log->dirty = false;
	log->dirty_next = NULL;
}

/* Writes what is pending with one write() (more only if the kernel takes less), then
 * exports each record. On failure the pending records are dropped and the log is as it was
 * after its last written record. */
static int audit_log_flush_one(struct audit_log *log, struct dp_err *err)
{
	int rc = 0;

	if (log->dirty)
		audit_unlink_dirty(log);
	for (size_t off = 0; off < log->plen;) {
		ssize_t wr = write(log->fd, log->pend + off, log->plen - off);

		if (wr < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			dp_err_set(err, "%s: %s", log->path, strerror(errno));
			break;
		}
		off += (size_t)wr;
	}
	if (rc) {
		/* A torn tail would break the chain for every record after it. */
		if (ftruncate(log->fd, (off_t)log->written.size) < 0) {
			/* audit_log_reopen cuts a torn line too */
		}
		log->seq = log->written.seq;
		log->size = log->written.size;
		memcpy(log->prev, log->written.prev, sizeof(log->prev));
		memcpy(log->last_ts, log->written.last_ts, sizeof(log->last_ts));
		log->failed_turn = audit_turn;
	} else {
		/* only a record the session log holds is exported: the log stays the reference;
		 * the host log is deputyd's own, not a session's record */
		for (size_t i = 0; i < log->nrec && !log->no_export; i++)
			audit_export_record(log->recs[i].type, log->recs[i].ts,
					    log->pend + log->recs[i].off, log->recs[i].len);
		audit_mark_written(log);
	}
	log->plen = 0;
	log->nrec = 0;
	/* A flood's buffer is not kept for the session's quiet rest. */
	if (log->pcap > 2 * AUDIT_PEND_MAX) {
		free(log->pend);
		log->pend = NULL;
		log->pcap = 0;
	}
	return rc;
}

int audit_log_flush(struct audit_log *log, struct dp_err *err)
{
	return log->plen ? audit_log_flush_one(log, err) : 0;
}

size_t audit_log_flush_all(void)
{
	size_t failed = 0;

	audit_export_drain();
	while (audit_dirty) {
		struct audit_log *log = audit_dirty;
		struct dp_err err;

		if (audit_log_flush_one(log, &err) != 0) {
			pr_warn("audit log %s: records lost: %s", log->session, err.msg);
			failed++;
		}
	}
	return failed;
}

void audit_log_turn_begin(void)
{
	audit_turn++;
}

bool audit_log_failed(const struct audit_log *log)
{
	return log && log->failed_turn == audit_turn;
}

static int audit_log_write(struct audit_log *log, const char *type, const json_t *fields,
			   const struct timespec *when, bool seal, struct dp_err *err)
{
	/* Room for the longest line the log takes and its newline. */
	static _Thread_local char line[AUDIT_MAX_LINE + 1];
	struct audit_pending *rec;
	char ts[DP_TS_LEN];
	ssize_t n;
	size_t len;

	if (when)
		dp_timestamp_at(when, ts);
	else
		dp_timestamp(ts);
	n = audit_log_record(log->seq, ts, log->session, type, log->prev, fields, line,
			     AUDIT_MAX_LINE);
	if (n < 0) {
		dp_err_set(err, "%s",
			   n == -E2BIG	  ? "longer than the log's line limit"
			   : n == -EILSEQ ? "a string is not UTF-8"
					  : strerror((int)-n));
		return (int)n;
	}
	len = (size_t)n;
	if (log->max && !seal && log->size + len + 1 + AUDIT_SEAL_ROOM > log->max) {
		dp_err_set(err, "%s: the session's log is at its limit (%llu bytes)", log->path,
			   (unsigned long long)log->max);
		return -EFBIG;
	}
	if (log->plen + len + 1 > AUDIT_PEND_MAX && audit_log_flush(log, err) != 0)
		return -EIO;
	if (audit_grow((void **)&log->pend, &log->pcap, log->plen + len + 1, 1, 4096) ||
	    audit_grow((void **)&log->recs, &log->reccap, log->nrec + 1, sizeof(*log->recs), 16)) {
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	audit_hash_line(line, len, log->prev);
	line[len] = '\n';
	rec = &log->recs[log->nrec++];
	rec->off = log->plen;
	rec->len = len;
	snprintf(rec->type, sizeof(rec->type), "%s", type);
	memcpy(rec->ts, ts, sizeof(ts));
	memcpy(log->pend + log->plen, line, len + 1);
	log->plen += len + 1;
	if (!log->dirty) {
		log->dirty = true;
		log->dirty_next = audit_dirty;
		audit_dirty = log;
	}
	log->seq++;
	log->size += len + 1;
	memcpy(log->last_ts, ts, sizeof(ts));
	snprintf(log->last_type, sizeof(log->last_type), "%s", type);
	return 0;
}

int audit_log_append(struct audit_log *log, const char *type, const json_t *fields,
		     struct dp_err *err)
{
	return audit_log_write(log, type, fields, NULL, false, err);
}

int audit_log_append_at(struct audit_log *log, const char *type, const json_t *fields,
			const struct timespec *when, struct dp_err *err)
{
	return audit_log_write(log, type, fields, when, false, err);
}

static json_t *audit_seal_claims(const char *issuer, const char *session, uint64_t seq,
				 const char *prev, const json_t *counts)
{
	return json_pack("{s:s, s:s, s:I, s:s, s:O}", "iss", issuer ? issuer : "", "session",
			 session, "seq", (json_int_t)seq, "prev", prev, "counts", counts);
}

int audit_log_seal(struct audit_log *log, const char *type, const struct dp_key *key,
		   const char *issuer, const json_t *counts, const json_t *extra,
		   struct dp_err *err)
{
	json_t *empty = NULL, *claims, *fields;
	struct dp_err jerr;
	char *sig;
	int rc;

	if (!counts)
		counts = empty = json_object();
	claims = audit_seal_claims(issuer, log->session, log->seq, log->prev, counts);
	/* The seal is the last line: no later prev covers it, so what it says beyond the counts
	 * (why the session ended, who ended it) is signed too. */
	if (claims && extra)
		json_object_update_missing(claims, (json_t *)extra);
	if (!claims) {
		json_decref(empty);
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	sig = dp_jws_sign(key, AUDIT_SEAL_TYP, claims, &jerr);
	json_decref(claims);
	if (!sig) {
		dp_err_set(err, "cannot sign %s: %s", log->path, jerr.msg);
		json_decref(empty);
		return -EIO;
	}
	fields = json_pack("{s:O}", "counts", counts);
	if (fields && extra)
		json_object_update(fields, (json_t *)extra);
	if (fields)
		json_object_set_new(fields, "sig", json_string(sig));
	free(sig);
	if (fields && log->prev_seal[0]) {
		json_object_set_new(fields, "prev_seal", json_string(log->prev_seal));
		json_object_set_new(fields, "prev_seal_session",
				    json_string(log->prev_seal_session));
	}
	json_decref(empty);
	if (!fields) {
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	rc = audit_log_write(log, type, fields, NULL, true, err);
	json_decref(fields);
	if (rc == 0)
		rc = audit_log_flush(log, err);
	if (rc == 0 && fdatasync(log->fd) < 0) {
		rc = -errno;
		dp_err_set(err, "%s: fdatasync: %s", log->path, strerror(errno));
	}
	return rc;
}

/* An opaque handle's destructor and accessor, shaped like every module's (sessca.c, key.c). */
void audit_log_free(struct audit_log *log)
{
	struct dp_err err;

	if (!log)
		return;
	if (log->fd >= 0 && audit_log_flush(log, &err) != 0)
		pr_warn("audit log %s: records lost: %s", log->session, err.msg);
	if (log->dirty)
		audit_unlink_dirty(log);
	if (log->fd >= 0)
		close(log->fd);
	free(log->pend);
	free(log->recs);
	free(log->path);
	free(log->session);
	free(log);
}

const char *audit_log_path(const struct audit_log *log)
{
	return log->path;
}

uint64_t audit_log_next_seq(const struct audit_log *log)
{
	return log->seq;
}

void audit_log_set_prev_seal(struct audit_log *log, const char *session, const char *hash)
{
	snprintf(log->prev_seal, sizeof(log->prev_seal), "%s", hash ? hash : "");
	snprintf(log->prev_seal_session, sizeof(log->prev_seal_session), "%s",
		 session ? session : "");
}

const char *audit_log_last_hash(const struct audit_log *log)
{
	return log->prev;
}

const char *audit_log_last_ts(const struct audit_log *log)
{
	return log->last_ts;
}

const char *audit_log_last_type(const struct audit_log *log)
{
	return log->last_type;
}

void audit_log_no_export(struct audit_log *log)
{
	log->no_export = true;
}
