/* SPDX-License-Identifier: MIT */
/*
 * revoke: the revocation list, `deputy revoke --grant JTI | --user SUB`. Kept in
 * <state_dir>/revoked.json (mode 0600, replaced atomically), so a revocation outlives
 * deputyd's restarts; a session whose grant or user is on it is not opened nor resumed.
 *
 *   {"revoked": [{"grant": JTI, "ts": …, "by": UID, "reason": TEXT},
 *                {"user": SUB, "ts": …, "by": UID, "reason": TEXT}, …]}
 *
 * A grant is named by its jti (as session_open records and tokens' grant.jti show it),
 * whichever issuer signed it; a user by the grant's sub.
 */
#ifndef DEPUTY_REVOKE_H
#define DEPUTY_REVOKE_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "grant.h"
#include "util.h"

#define REVOKE_FILE "revoked.json"
#define REVOKE_TEXT_MAX 1024 /* bytes of a jti, sub or reason on the list */

/* (Re)read the list from state_dir. A missing file is an empty list. On any error the list
 * in force stays as it was and err says what is wrong with the file, in one line. */
int revoke_load(const char *state_dir, struct dp_err *err) DP_WUR;
/* Put a grant (user false) or a user on the list and save it. Already listed: 0, nothing
 * changes. -EINVAL (empty or overlong value or reason), or -errno when the file cannot be
 * written: then the revocation holds in memory until deputyd stops, and err says so. */
int revoke_add(bool user, const char *value, uid_t by, const char *reason, struct dp_err *err);
/* "grant" or "user" when g is revoked, else NULL. */
const char *revoke_match(const struct dp_grant *g);
/* The list (borrowed; the file's form). */
const json_t *revoke_list(void);
void revoke_free(void);

#endif
