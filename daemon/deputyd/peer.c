// SPDX-License-Identifier: MIT
/*
 * peer: ties a connection to a session by what the kernel says about the peer (uid from
 * SO_PEERCRED, cgroup from /proc, liveness from the pidfd), never by what it sends.
 */
#include "peer.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup.h"

static bool pidfd_alive(int pidfd)
{
	return pidfd < 0 || syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

static void peer_read_comm(struct conn *c)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)c->pid);
	f = fopen(path, "re");
	if (f) {
		if (fgets(c->comm, sizeof(c->comm), f))
			c->comm[strcspn(c->comm, "\n")] = '\0';
		fclose(f);
	}
}

/* Bound on first success: a process cannot leave a session's cgroup, so later requests need
 * no /proc read. */
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
	if (!pidfd_alive(c->pidfd)) {
		dp_err_set(err, "peer pid %d exited", (int)c->pid);
		return false;
	}
	c->bound = s;
	peer_read_comm(c);
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
