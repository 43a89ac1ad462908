// SPDX-License-Identifier: MIT
/*
 * audit: reading a session's audit log back and checking it (hash chain, seq order, one
 * session, the session_close signature). Shared by deputyd and the CLI's `deputy audit
 * verify`; writing logs is deputyd's alone (daemon/deputyd/audit_log.c).
 */
#include "audit.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

void audit_hash_line(const char *line, size_t len, char out[AUDIT_HASH_HEX])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)line, len, md);
	dp_hex(md, sizeof(md), out);
}

/* Members of a seal record that its signature covers besides the counts, when present. */
static const char *const audit_seal_extra[] = {"reason", "by", "text"};

/* Checks a seal record's signature against keys and the chain position. */
static int audit_verify_seal(json_t *rec, const char *type, const struct dp_keyset *keys,
			     const char *session, uint64_t seq, const char *prev,
			     struct dp_err *err)
{
	const char *sig = json_string_value(json_object_get(rec, "sig"));
	json_t *counts = json_object_get(rec, "counts");
	const struct dp_key *key;
	struct dp_jws jws;
	struct dp_err jerr;
	json_t *c;
	int rc = -EBADMSG;

	if (!sig) {
		dp_err_set(err, "%s has no sig", type);
		return -EBADMSG;
	}
	if (dp_jws_parse(sig, &jws, &jerr)) {
		dp_err_set(err, "%s sig: %s", type, jerr.msg);
		return -EBADMSG;
	}
	key = jws.kid ? dp_keyset_find(keys, jws.kid) : NULL;
	if (!key) {
		dp_err_set(err, "%s sig: key \"%s\" not in deputyd's JWKS", type,
			   jws.kid ? jws.kid : "");
		goto out;
	}
	if (dp_jws_verify(&jws, key, &jerr)) {
		dp_err_set(err, "%s sig: %s", type, jerr.msg);
		goto out;
	}
	c = jws.claims;
	if (!json_is_string(json_object_get(c, "session")) ||
	    strcmp(json_string_value(json_object_get(c, "session")), session) != 0 ||
	    json_integer_value(json_object_get(c, "seq")) != (json_int_t)seq ||
	    !json_is_string(json_object_get(c, "prev")) ||
	    strcmp(json_string_value(json_object_get(c, "prev")), prev) != 0 ||
	    !json_equal(json_object_get(c, "counts"), counts)) {
		dp_err_set(err, "%s sig does not match the record", type);
		goto out;
	}
	/* Why it ended and who ended it are signed where the seal has a reason (seals made
	 * before that carry none, and then neither may the record say who). */
	for (size_t i = 0; i < DP_ARRAY_SIZE(audit_seal_extra); i++) {
		json_t *signed_v = json_object_get(c, audit_seal_extra[i]);
		json_t *rec_v = json_object_get(rec, audit_seal_extra[i]);
		bool ok = json_object_get(c, "reason")
			      ? (signed_v ? rec_v && json_equal(signed_v, rec_v) : !rec_v)
			      : i == 0 || !rec_v; /* an old seal: an unsigned reason, no more */

		if (!ok) {
			dp_err_set(err, "%s sig does not match the record's %s", type,
				   audit_seal_extra[i]);
			goto out;
		}
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
	bool closed = false, seal_last = false;
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
		} else if ((seal_last = strcmp(type, AUDIT_SEAL_SESSION) == 0 ||
					(strcmp(type, AUDIT_SEAL_HOST) == 0 &&
					 strcmp(session, "host") == 0))) {
			closed = strcmp(type, AUDIT_SEAL_SESSION) == 0;
			if (keys) {
				struct dp_err serr;

				if (audit_verify_seal(rec, type, keys, session, lineno - 1, prev,
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
		*sealed = seal_last && keys;
	free(session);
	return rc;
}
