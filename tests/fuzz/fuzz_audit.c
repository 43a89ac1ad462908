// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the audit log as `deputy audit verify` reads it back: a file anyone
 * may hand it, and lines whose strings came from the agent (argv, comm, htu, reasons). The
 * first input byte picks the mode:
 *   - raw: the rest is a log; verification must refuse with a one-line reason or accept,
 *     and whatever verifies with keys verifies without them, unsealed;
 *   - round trip: the rest gives field values; records written with audit_log_append and sealed
 *     with audit_log_seal must verify, read back the values written, and stop verifying once
 *     any byte before the last record is changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.c"
#include "jwk.c"
#include "key.c"
#include "keyset.c"
#include "jws.c"
#include "claims.c"
#include "audit.c"
#include "jsonw.c"
#include "audit_export.c"
#include "audit_log.c"

#include "fuzz_key.h"

#define FZ_SESSION "fuzzsession"

static char fz_dir[64];
static struct dp_key *fz_key;
static struct dp_keyset *fz_keys;

static void fz_cleanup(void)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/%s.jsonl", fz_dir, FZ_SESSION);
	unlink(p);
	rmdir(fz_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char *jwks;

	dp_log_init("fuzz_audit", DP_LOG_WARN);
	/* the log is a file: keep it in memory where there is a tmpfs */
	snprintf(fz_dir, sizeof(fz_dir), "%s/fuzz_audit.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(fz_dir))
		abort();
	atexit(fz_cleanup);
	fz_key = fuzz_key_new();
	jwks = dp_key_jwks_json(fz_key);
	fz_keys = jwks ? dp_keyset_parse(jwks, strlen(jwks), NULL) : NULL;
	free(jwks);
	if (!fz_keys)
		abort();
	return 0;
}

static void fz_check_reason(const struct dp_err *err)
{
	/* a reason is printed as one line of "deputy: …" */
	if (!err->msg[0] || strchr(err->msg, '\n') || strchr(err->msg, '\r'))
		abort();
}

static void fz_raw(const char *text, size_t n)
{
	struct dp_err err = {""};
	bool sealed = true, sealed_nokeys = true;
	int with = audit_verify(text, n, fz_keys, &sealed, &err);

	if (with)
		fz_check_reason(&err);
	if (audit_verify(text, n, NULL, &sealed_nokeys, &err) != 0) {
		fz_check_reason(&err);
		if (with == 0)
			abort();
	} else if (sealed_nokeys) {
		abort();
	}
}

/* Field values from n > 0 input bytes: a string (any bytes up to a NUL, as an agent's comm,
 * argv or request target may hold: deputyd's fields are C strings), a number and a flag. */
static json_t *fz_fields(const uint8_t *d, size_t n, size_t *used)
{
	size_t len = d[0] % 64 < n - 1 ? d[0] % 64 : n - 1, k = 1 + len;
	json_int_t num = 0;

	for (; k < n && k < 1 + len + 8; k++)
		num = (json_int_t)((uint64_t)num << 8 | d[k]);
	*used = k;
	len = strnlen((const char *)d + 1, len);
	/* NULL for bytes that are not UTF-8: jansson holds only text */
	return json_pack("{s:s%, s:I, s:b}", "htu", (const char *)d + 1, len, "status", num,
			 "mediated", (d[0] & 0x40) != 0);
}

static bool fz_same_fields(json_t *rec, const json_t *want)
{
	return json_equal(json_object_get(rec, "htu"), json_object_get(want, "htu")) &&
	       json_equal(json_object_get(rec, "status"), json_object_get(want, "status")) &&
	       json_equal(json_object_get(rec, "mediated"), json_object_get(want, "mediated"));
}

static void fz_round_trip(const uint8_t *d, size_t n)
{
	struct audit_log *log = NULL;
	struct dp_err err = {""};
	json_t *written[4] = {0};
	char path[128], *text = NULL;
	size_t len = 0, nrec = 0, last = 0;
	bool sealed = false;

	snprintf(path, sizeof(path), "%s/%s.jsonl", fz_dir, FZ_SESSION);
	unlink(path);
	if (audit_log_create(fz_dir, FZ_SESSION, &log, &err) != 0)
		abort();
	while (nrec < DP_ARRAY_SIZE(written) && n > 0) {
		size_t used;
		json_t *f = fz_fields(d, n, &used);

		d += used, n -= used;
		if (!f)
			continue;
		if (audit_log_append(log, "response", f, &err) != 0)
			abort();
		written[nrec++] = f;
	}
	if (audit_log_seal(log, AUDIT_SEAL_SESSION, fz_key, "https://deputy.fuzz", NULL, NULL,
			   &err) != 0)
		abort();
	if (dp_read_file(path, 1 << 20, &text, &len) != 0)
		abort();
	if (audit_verify(text, len, fz_keys, &sealed, &err) != 0 || !sealed) {
		fprintf(stderr, "fuzz_audit: written log does not verify: %s\n%.*s", err.msg,
			(int)len, text);
		abort();
	}
	/* every record reads back as written, on its own line */
	for (size_t i = 0, off = 0; i < nrec; i++) {
		const char *nl = memchr(text + off, '\n', len - off);
		json_t *rec = json_loadb(text + off, (size_t)(nl - (text + off)), 0, NULL);

		if (!rec || !fz_same_fields(rec, written[i]))
			abort();
		json_decref(rec);
		off = (size_t)(nl - text) + 1;
		last = off;
	}
	/* tampering with any byte before the sealed record breaks the chain */
	if (last > 0 && n >= 3) {
		size_t pos = ((size_t)d[0] << 8 | d[1]) % last;

		text[pos] ^= d[2] ? d[2] : 1;
		if (audit_verify(text, len, fz_keys, &sealed, &err) == 0)
			abort();
		fz_check_reason(&err);
	}
	for (size_t i = 0; i < nrec; i++)
		json_decref(written[i]);
	free(text);
	audit_log_free(log);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fz_round_trip(data + 1, size - 1);
	else
		fz_raw((const char *)data + 1, size - 1);
	return 0;
}
