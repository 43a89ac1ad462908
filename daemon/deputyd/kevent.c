// SPDX-License-Identifier: MIT
/*
 * kevent: what the kernel layer reports (include/deputy/event.h) as records of the session
 * whose cgroup it came from: `connect` (with `mediated` from the shim's cookies), `deny`
 * for enforced blocks and refused sockets, `disconnect`. Events keep the kernel's order;
 * those of sessions that already ended are dropped.
 */
#include "deputyd.h"

#include <arpa/inet.h>
#include <deputy/event.h>
#include <string.h>
#include <sys/socket.h>

#include "kernel.h"

static struct session *session_by_cgid(struct deputyd *d, uint64_t cgid)
{
	for (struct session *s = d->sessions; s; s = s->next)
		if (s->cg_id == cgid)
			return s;
	return NULL;
}

/* A Unix-socket connect or addressed send: its path ("@name" for an abstract socket), and
 * a deny record when it was refused. Counted as connects only when blocked: every process
 * that resolves a name or a user tries nscd's socket, which would drown the counts. */
static void kevent_unix(struct deputyd *d, struct session *s, const struct dp_event *ev,
			const char *comm)
{
	bool abstract = ev->flags & DP_EVF_UNIX_ABSTRACT, block = ev->verdict == DP_EV_BLOCK;
	size_t n = ev->path_len < DP_EV_PATH_LEN ? ev->path_len : DP_EV_PATH_LEN, o = 0;
	char path[DP_EV_PATH_LEN + 2];

	if (abstract)
		path[o++] = '@';
	for (size_t i = abstract ? 1 : 0; i < n && ev->path[i]; i++)
		path[o++] = (ev->path[i] >= 0x20 && ev->path[i] < 0x7f) ? ev->path[i] : '?';
	path[o] = '\0';
	/* The shim's own channel to deputyd is deputy's plumbing, not the agent's. */
	if (!block && strcmp(path, d->cfg->socket) == 0)
		return;
	if (block) {
		s->counts.connects++;
		s->counts.blocked++;
		s->counts.unmediated++;
	}
	session_log(s, "connect",
		    json_pack("{s:I, s:o, s:s, s:s, s:s, s:s, s:b, s:b}", "pid",
			      (json_int_t)ev->tgid, "comm", session_text(comm), "family", "unix",
			      "op", ev->type == DP_EV_UNIX_SENDMSG ? "sendmsg" : "connect", "path",
			      path, "verdict", block ? "block" : "allow", "enforced",
			      block ? ev->enforced != 0 : d->cfg->enforce, "mediated", false));
	if (block && ev->enforced) {
		s->counts.denies++;
		session_log(s, "deny",
			    json_pack("{s:s, s:s, s:I, s:o, s:s, s:b}", "layer", "kernel", "reason",
				      "Unix socket not in allow_unix", "pid", (json_int_t)ev->tgid,
				      "comm", session_text(comm), "path", path, "enforced", true));
	}
}

void kevent_record(void *ctx, const struct dp_event *ev)
{
	struct deputyd *d = ctx;
	struct session *s = session_by_cgid(d, ev->cgid);
	char comm[DP_EV_COMM_LEN + 1], addr[INET6_ADDRSTRLEN] = "";
	bool block = ev->verdict == DP_EV_BLOCK;
	bool mediated;

	if (!s)
		return; /* a session that already ended, or not ours */
	memcpy(comm, ev->comm, DP_EV_COMM_LEN);
	comm[DP_EV_COMM_LEN] = '\0';
	if (ev->family == AF_INET || ev->family == AF_INET6)
		inet_ntop(ev->family, ev->addr, addr, sizeof(addr));
	mediated = cookie_set_has(&s->cookies, ev->cookie);

	switch (ev->type) {
	case DP_EV_CONNECT:
	case DP_EV_SENDMSG:
		s->counts.connects++;
		if (block)
			s->counts.blocked++;
		if (!mediated)
			s->counts.unmediated++;
		session_log(s, "connect",
			    json_pack("{s:I, s:I, s:o, s:s, s:s, s:s, s:I, s:s, s:b, s:b, s:I}",
				      "pid", (json_int_t)ev->tgid, "tid", (json_int_t)ev->pid,
				      "comm", session_text(comm), "family",
				      kernel_family_name(ev->family), "protocol",
				      ev->protocol == DP_EV_PROTO_UDP ? "udp" : "tcp", "daddr",
				      addr, "dport", (json_int_t)ev->port, "verdict",
				      block ? "block" : "allow", "enforced",
				      block ? ev->enforced != 0 : d->cfg->enforce, "mediated",
				      mediated, "cookie", (json_int_t)ev->cookie));
		if (block && ev->enforced) {
			s->counts.denies++;
			session_log(s, "deny",
				    json_pack("{s:s, s:s, s:I, s:o, s:s, s:I, s:b}", "layer",
					      "kernel", "reason",
					      "destination not allowed by the session's routes",
					      "pid", (json_int_t)ev->tgid, "comm",
					      session_text(comm), "daddr", addr, "dport",
					      (json_int_t)ev->port, "enforced", true));
		}
		break;
	case DP_EV_UNIX_CONNECT:
	case DP_EV_UNIX_SENDMSG:
		kevent_unix(d, s, ev, comm);
		break;
	case DP_EV_SOCK_REFUSED:
		s->counts.denies++;
		session_log(s, "deny",
			    json_pack("{s:s, s:s, s:I, s:o, s:s, s:I, s:b}", "layer", "kernel",
				      "reason",
				      "raw and packet sockets are not allowed in a session", "pid",
				      (json_int_t)ev->tgid, "comm", session_text(comm), "family",
				      kernel_family_name(ev->family), "type", (json_int_t)ev->port,
				      "enforced", ev->enforced != 0));
		break;
	case DP_EV_CLOSE:
		session_log(s, "disconnect",
			    json_pack("{s:I, s:s, s:s, s:I, s:I, s:b}", "pid", (json_int_t)ev->tgid,
				      "family", kernel_family_name(ev->family), "daddr", addr,
				      "dport", (json_int_t)ev->port, "duration_us",
				      (json_int_t)(ev->duration_ns / 1000), "established",
				      (ev->flags & DP_EVF_ESTABLISHED) != 0));
		break;
	default:
		break;
	}
}
