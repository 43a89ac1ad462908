// SPDX-License-Identifier: MIT
/*
 * peer: ties a connection to a session by what the kernel says about the peer (uid from
 * SO_PEERCRED, cgroup from /proc, liveness from the pidfd), never by what it sends. Every
 * frame on the connection was sent by that same process: conn.c closes a connection on
 * which another process writes.
 */
#include "peer.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cgroup.h"
#include "proc.h"

int peer_home(struct deputyd *d, pid_t pid, int pidfd, char out[DP_ID_LEN])
{
	int rc = session_of_pid(d, pid, out);

	if (rc == 0 && !proc_alive(pidfd))
		rc = -ESRCH;
	if (rc)
		out[0] = '\0';
	return rc;
}

/* Bound on first success: a process cannot leave a session's cgroup (deputyd never moves one
 * out), so later requests of the same process need no /proc read. */
bool peer_in_session(struct conn *c, struct session *s, struct dp_err *err)
{
	char cg[PATH_MAX];
	size_t n = strlen(s->cg_rel);

	if (c->bound) {
		if (c->bound != s)
			dp_err_set(err, "peer is bound to another session");
		return c->bound == s;
	}
	if (c->uid != s->uid) {
		dp_err_set(err, "peer uid %u is not the session's", (unsigned)c->uid);
		return false;
	}
	if (cgroup_of_pid(c->pid, cg, sizeof(cg)) != 0 ||
	    !(strncmp(cg, s->cg_rel, n) == 0 && (cg[n] == '\0' || cg[n] == '/'))) {
		dp_err_set(err, "peer pid %d is not in the session's cgroup", (int)c->pid);
		return false;
	}
	/* The pidfd pins the process that connected: if it is still alive, the pid we read
	 * /proc for was not reused. */
	if (!proc_alive(c->pidfd)) {
		dp_err_set(err, "peer pid %d exited", (int)c->pid);
		return false;
	}
	c->bound = s;
	proc_comm(c->pid, c->comm, sizeof(c->comm));
	return true;
}

struct session *peer_session(struct deputyd *d, struct conn *c, const char *id, struct dp_err *err)
{
	struct session *s;

	if (!id) {
		dp_err_set(err, "no session named");
		return NULL;
	}
	s = session_find(d, id);
	if (!s) {
		dp_err_set(err, "no such open session");
		return NULL;
	}
	return peer_in_session(c, s, err) ? s : NULL;
}
