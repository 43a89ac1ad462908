// SPDX-License-Identifier: MIT
/*
 * kevent: what the kernel layer reports (include/deputy/event.h) as records of the session
 * whose cgroup it came from: `connect` (with `mediated` and `mediator`: the shim claimed the
 * socket or the kernel sent it to the proxy, as the kernel saw it), `deny` for enforced
 * blocks and refused sockets, `disconnect` (with the mediated requests it carried: a
 * mediated connection that carried bytes but no mediated request is counted unmediated
 * then). Events keep the kernel's order and its time (also when read late, after a
 * restart); those of sessions that already ended are dropped. Blocked connects (Unix ones
 * too) and refused sockets that repeat are coalesced (repeat.c).
 */
#include "deputyd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <deputy/event.h>
#include <stdio.h>
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

/* Who mediates a connection, from the kernel's flags; NULL: nobody. */
static const char *kevent_mediator(const struct dp_event *ev)
{
	return ev->flags & DP_EVF_CLAIMED ? "shim" : ev->flags & DP_EVF_PROXIED ? "proxy" : NULL;
}

/* A `connect` record, and why nobody mediates the connection when the kernel knows. */
static json_t *kevent_connect_fields(struct deputyd *d, const struct dp_event *ev, const char *comm,
				     const char *addr)
{
	bool block = ev->verdict == DP_EV_BLOCK;
	const char *mediator = kevent_mediator(ev);
	json_t *o =
	    json_pack("{s:I, s:I, s:o, s:s, s:s, s:s, s:I, s:s, s:b, s:b, s:I}", "pid",
		      (json_int_t)ev->tgid, "tid", (json_int_t)ev->pid, "comm", session_text(comm),
		      "family", kernel_family_name(ev->family), "protocol",
		      ev->protocol == DP_EV_PROTO_UDP ? "udp" : "tcp", "daddr", addr, "dport",
		      (json_int_t)ev->port, "verdict", block ? "block" : "allow", "enforced",
		      block ? ev->enforced != 0 : d->cfg->enforce, "mediated", mediator != NULL,
		      "cookie", (json_int_t)ev->cookie);

	if (o && mediator)
		json_object_set_new(o, "mediator", json_string(mediator));
	else if (o && (ev->flags & DP_EVF_OPAQUE))
		json_object_set_new(o, "reason", json_string("tls opaque"));
	else if (o && (ev->flags & DP_EVF_UNMEDIATED))
		json_object_set_new(o, "reason", json_string("not mediated"));
	return o;
}

/* A `disconnect` record. A connection mediated at connect time that sent bytes without a
 * single mediated request was not mediated after all (raw bytes on a claimed socket, a
 * request the proxy never asked about): it counts as unmediated now. */
static json_t *kevent_close_fields(struct session *s, const struct dp_event *ev, const char *addr)
{
	const char *mediator = kevent_mediator(ev);
	uint32_t requests = 0;
	bool mediated;
	json_t *o;

	cookie_conn_close(&s->cookies, ev->cookie, &requests);
	mediated = mediator && (requests > 0 || ev->bytes_out == 0);
	if (mediator && !mediated)
		s->counts.unmediated++;
	o = json_pack("{s:I, s:s, s:s, s:I, s:I, s:b, s:I, s:b, s:I, s:I}", "pid",
		      (json_int_t)ev->tgid, "family", kernel_family_name(ev->family), "daddr", addr,
		      "dport", (json_int_t)ev->port, "duration_us",
		      (json_int_t)(ev->duration_ns / 1000), "established",
		      (ev->flags & DP_EVF_ESTABLISHED) != 0, "requests", (json_int_t)requests,
		      "mediated", mediated, "bytes_sent", (json_int_t)ev->bytes_out,
		      "bytes_received", (json_int_t)ev->bytes_in);
	if (o && mediator)
		json_object_set_new(o, "mediator", json_string(mediator));
	return o;
}

void kevent_request(struct deputyd *d, struct session *s, uint64_t cookie)
{
	if (!cookie || cookie_conn_request(&s->cookies, cookie) || !d->kernel)
		return;
	/* The connect event may still be queued: the agent asks right after connecting. */
	kernel_consume(d->kernel);
	cookie_conn_request(&s->cookies, cookie);
}

/* A blocked connect or refused socket that repeats an earlier one of its process exactly
 * (but for the socket and the thread) is counted, not written again; `repeated` names the
 * first one's record. */
static bool kevent_repeats(struct session *s, const struct dp_event *ev, const char *comm,
			   const char *addr, bool mediated, const struct timespec *when)
{
	struct session_counts delta = {0};
	char key[256]; /* a Unix path is up to 108 bytes */

	if (ev->type == DP_EV_SOCK_REFUSED) {
		delta.denies = 1;
	} else {
		delta.connects = 1;
		delta.blocked = 1;
		delta.unmediated = !mediated;
		delta.denies = ev->enforced != 0;
	}
	snprintf(key, sizeof(key), "kernel %u %u %s %u %u %s %u %u %u %d", ev->type, ev->tgid, comm,
		 ev->family, ev->protocol, addr, ev->port, ev->enforced, ev->flags, mediated);
	return repeat_event(s, key, &delta, when);
}

/* A Unix-socket connect or addressed send: its path ("@name" for an abstract socket), and
 * a deny record when it was refused. Counted as connects only when blocked: every process
 * that resolves a name or a user tries nscd's socket, which would drown the counts. */
static void kevent_unix(struct deputyd *d, struct session *s, const struct dp_event *ev,
			const char *comm, const struct timespec *when)
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
		s->counts.denies += ev->enforced != 0;
		if (kevent_repeats(s, ev, comm, path, false, when))
			return;
	}
	session_log_at(s, "connect",
		       json_pack("{s:I, s:o, s:s, s:s, s:s, s:s, s:b, s:b}", "pid",
				 (json_int_t)ev->tgid, "comm", session_text(comm), "family", "unix",
				 "op", ev->type == DP_EV_UNIX_SENDMSG ? "sendmsg" : "connect",
				 "path", path, "verdict", block ? "block" : "allow", "enforced",
				 block ? ev->enforced != 0 : d->cfg->enforce, "mediated", false),
		       when);
	if (block && ev->enforced)
		session_log_at(s, "deny",
			       json_pack("{s:s, s:s, s:I, s:o, s:s, s:b}", "layer", "kernel",
					 "reason", "Unix socket not in allow_unix", "pid",
					 (json_int_t)ev->tgid, "comm", session_text(comm), "path",
					 path, "enforced", true),
			       when);
}

/* A blocked connect's reason; when a route host on that port did not resolve, it is named:
 * the agent probably meant it, and only deputyd's own log said why it allows nothing. */
static const char *kevent_block_reason(const struct dp_event *ev, char *buf, size_t n)
{
	const char *host = policy_unresolved(ev->port);

	if (ev->flags & DP_EVF_UNMEDIATED)
		return "not mediated";
	if (!host)
		return "destination not allowed by the session's routes";
	snprintf(buf, n,
		 "destination not allowed by the session's routes (route host %s port %d does "
		 "not resolve, so it allows no address)",
		 host, (int)ev->port);
	return buf;
}

void kevent_record(void *ctx, const struct dp_event *ev)
{
	struct deputyd *d = ctx;
	struct session *s = session_by_cgid(d, ev->cgid);
	char comm[DP_EV_COMM_LEN + 1], addr[INET6_ADDRSTRLEN] = "", reason[384];
	bool block = ev->verdict == DP_EV_BLOCK;
	struct timespec when = kernel_event_realtime(ev->ts_ns);
	bool repeated = false;

	if (!s)
		return; /* a session that already ended, or not ours */
	memcpy(comm, ev->comm, DP_EV_COMM_LEN);
	comm[DP_EV_COMM_LEN] = '\0';
	if (ev->family == AF_INET || ev->family == AF_INET6)
		inet_ntop(ev->family, ev->addr, addr, sizeof(addr));
	if ((block && (ev->type == DP_EV_CONNECT || ev->type == DP_EV_SENDMSG)) ||
	    ev->type == DP_EV_SOCK_REFUSED)
		repeated = kevent_repeats(s, ev, comm, addr, kevent_mediator(ev) != NULL, &when);

	switch (ev->type) {
	case DP_EV_CONNECT:
	case DP_EV_SENDMSG:
		s->counts.connects++;
		s->counts.blocked += block;
		s->counts.unmediated += !kevent_mediator(ev);
		s->counts.denies += block && ev->enforced;
		if (repeated)
			break;
		if (ev->protocol == DP_EV_PROTO_TCP && (!block || !ev->enforced) &&
		    cookie_conn_open(&s->cookies, ev->cookie) == -ENOMEM)
			pr_warn("session %s: cannot track connection %llu", s->id,
				(unsigned long long)ev->cookie);
		session_log_at(s, "connect", kevent_connect_fields(d, ev, comm, addr), &when);
		if (block && ev->enforced)
			session_log_at(s, "deny",
				       json_pack("{s:s, s:s, s:I, s:o, s:s, s:I, s:b}", "layer",
						 "kernel", "reason",
						 kevent_block_reason(ev, reason, sizeof(reason)),
						 "pid", (json_int_t)ev->tgid, "comm",
						 session_text(comm), "daddr", addr, "dport",
						 (json_int_t)ev->port, "enforced", true),
				       &when);
		break;
	case DP_EV_UNIX_CONNECT:
	case DP_EV_UNIX_SENDMSG:
		kevent_unix(d, s, ev, comm, &when);
		break;
	case DP_EV_SOCK_REFUSED:
		s->counts.denies++;
		if (repeated)
			break;
		session_log_at(s, "deny",
			       json_pack("{s:s, s:s, s:I, s:o, s:s, s:I, s:b}", "layer", "kernel",
					 "reason",
					 "raw and packet sockets are not allowed in a session",
					 "pid", (json_int_t)ev->tgid, "comm", session_text(comm),
					 "family", kernel_family_name(ev->family), "type",
					 (json_int_t)ev->port, "enforced", ev->enforced != 0),
			       &when);
		break;
	case DP_EV_CLOSE:
		session_log_at(s, "disconnect", kevent_close_fields(s, ev, addr), &when);
		break;
	default:
		break;
	}
}
