/* SPDX-License-Identifier: MIT */
/* logsrc: a session log read from a file or from deputyd, and checking it (logsrc.c). */
#ifndef DEPUTY_LOGSRC_H
#define DEPUTY_LOGSRC_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct logsrc {
	const char *target; /* the SESSION|FILE argument, borrowed */
	char *text;	    /* the log's lines */
	size_t len;
	char *jwks; /* deputyd's public keys, to check the seal with */
	size_t jwks_len;
	bool closed; /* no record will be added: a file, or a session deputyd closed */
	bool host;   /* deputyd's host log, asked from deputyd */
};

struct logsrc_verdict {
	size_t records;
	bool sealed; /* ends in session_close with a valid signature */
	bool broken; /* the chain, a signature or the seal is wrong (err says where) */
};

/* target: a session id (asked from deputyd at sock_opt, else $DEPUTY_SOCKET or the default),
 * a file (checked against jwks_path, default <state_dir>/jwks.json beside it), or NULL for
 * deputyd's host log (asked from deputyd). */
int logsrc_load(struct logsrc *ls, const char *target, const char *jwks_path, const char *sock_opt,
		struct dp_err *err) DP_WUR;
/* 0 when intact (sealed, or open and intact so far); else v->broken or no usable JWKS, and
 * err says why in the words `deputy audit verify` prints. */
int logsrc_verify(const struct logsrc *ls, struct logsrc_verdict *v, struct dp_err *err) DP_WUR;
void logsrc_free(struct logsrc *ls);

#endif
