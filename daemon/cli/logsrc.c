// SPDX-License-Identifier: MIT
/*
 * logsrc: one session log as `deputy audit verify` and `deputy report` read it, and the
 * verdict of checking it. The log comes from a file (checked against a JWKS file: an auditor
 * may hold a copy without access to deputyd) or from deputyd by session id (with deputyd's
 * own JWKS), so both commands accept the same SESSION|FILE argument and say the same thing
 * about the same log.
 */
#include "logsrc.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "cli.h"
#include "locate.h"

/* A session log can grow to session_log_max (64 MiB by default); leave room above it. */
#define LOGSRC_MAX_FILE (256u << 20)

static int logsrc_from_file(struct logsrc *ls, const char *jwks_path, struct dp_err *err)
{
	char guess[PATH_MAX];
	int e = dp_read_file(ls->target, LOGSRC_MAX_FILE, &ls->text, &ls->len);

	if (e) {
		dp_err_set(err, "%s: %s", ls->target, strerror(-e));
		return e;
	}
	if (!jwks_path) {
		const char *slash = strrchr(ls->target, '/');

		/* <state_dir>/sessions/<id>.jsonl -> <state_dir>/jwks.json */
		snprintf(guess, sizeof(guess), "%.*s/../jwks.json",
			 slash ? (int)(slash - ls->target) : 1, slash ? ls->target : ".");
		jwks_path = guess;
	}
	e = dp_read_file(jwks_path, 1 << 20, &ls->jwks, &ls->jwks_len);
	if (e) {
		dp_err_set(err, "%s: %s (name deputyd's JWKS with --jwks)", jwks_path,
			   strerror(-e));
		return e;
	}
	ls->closed = true;
	return 0;
}

static int logsrc_from_deputyd(struct logsrc *ls, const char *sock_opt, struct dp_err *err)
{
	static struct dcli c;
	struct dp_err why;
	const char *sock = cli_socket(sock_opt, NULL, &why);
	char id[DP_ID_LEN];
	uint64_t offset = 0;
	int rc;

	rc = sock ? dcli_connect(&c, sock, &why) : -EINVAL;
	/* the host log has no session id to resolve */
	if (!rc && !ls->host)
		rc = cli_session_id(&c, ls->target, id, &why);
	if (!rc)
		rc = fetch_log(&c, ls->host ? NULL : id, &ls->text, &ls->len, &offset, &ls->closed,
			       &why);
	if (!rc)
		rc = simple_call(&c, DP_MSG_JWKS, NULL, 0, &why);
	if (rc) {
		dcli_close(&c);
		dp_err_set(err, "%s: %s", ls->target, why.msg);
		return rc;
	}
	ls->jwks = dcli_field_str(&c, DP_T_DATA);
	ls->jwks_len = ls->jwks ? strlen(ls->jwks) : 0;
	dcli_close(&c);
	if (!ls->text) {
		dp_err_set(err, "%s: empty log", ls->target);
		return -ENODATA;
	}
	return 0;
}

int logsrc_load(struct logsrc *ls, const char *target, const char *jwks_path, const char *sock_opt,
		struct dp_err *err)
{
	memset(ls, 0, sizeof(*ls));
	ls->target = target ? target : "host log";
	ls->host = !target;
	if (ls->host)
		return logsrc_from_deputyd(ls, sock_opt, err);
	/* A session id never holds '/'; a file name in the current directory is tried as one. */
	if (strchr(target, '/') || access(target, F_OK) == 0)
		return logsrc_from_file(ls, jwks_path, err);
	return logsrc_from_deputyd(ls, sock_opt, err);
}

int logsrc_verify(const struct logsrc *ls, struct logsrc_verdict *v, struct dp_err *err)
{
	struct dp_keyset *keys;
	struct dp_err why;
	int rc;

	memset(v, 0, sizeof(*v));
	for (size_t i = 0; i < ls->len; i++)
		v->records += ls->text[i] == '\n';
	keys = ls->jwks ? dp_keyset_parse(ls->jwks, ls->jwks_len, &why) : NULL;
	if (!keys) {
		dp_err_set(err, "deputyd's JWKS: %s", ls->jwks ? why.msg : "missing");
		return -ENOKEY;
	}
	rc = audit_verify(ls->text, ls->len, keys, &v->sealed, &why);
	dp_keyset_free(keys);
	if (rc) {
		v->broken = true;
		dp_err_set(err, "%s: %s", ls->target, why.msg);
		return rc;
	}
	if (!v->sealed && ls->closed) {
		v->broken = true;
		dp_err_set(err, "%s: chain intact but the log is not sealed by %s", ls->target,
			   ls->host ? AUDIT_SEAL_HOST : AUDIT_SEAL_SESSION);
		return -EBADMSG;
	}
	return 0;
}

void logsrc_free(struct logsrc *ls)
{
	free(ls->text);
	free(ls->jwks);
	ls->text = ls->jwks = NULL;
}
