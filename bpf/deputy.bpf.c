// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * deputy's kernel layer: cgroup socket hooks that see, and may refuse, every connection a
 * session makes, whatever the process does in userspace (static binaries, raw syscalls,
 * io_uring, children without LD_PRELOAD). Attached to deputy's parent cgroup, they run for
 * every session below it; a session is the ancestor cgroup at `session_level`, so processes
 * in deeper sub-cgroups still count, and a process not in a registered session is ignored.
 *
 *  - cgroup/connect4, connect6: TCP connect (incl. TCP Fast Open sendto) and UDP connect.
 *  - cgroup/sendmsg4, sendmsg6: unconnected UDP sends.
 *  - cgroup/sock_create: refuses sockets that would never reach the hooks above (raw,
 *    packet, ping, SCTP, MPTCP…), so they cannot be used to go around them.
 *  - tracepoint syscalls/sys_enter_socket: AF_PACKET sockets. The sock_create hook only runs
 *    for IP sockets, and a tracepoint cannot fail a syscall, so an enforced session's
 *    process that asks for a packet socket is killed (SIGKILL, sent before the socket
 *    exists, reaches every thread before the call returns).
 *  - raw_tp/inet_sock_set_state: connection lifecycle, a close event with the duration.
 *  - connect_unix (loaded only where the kernel has BPF_CGROUP_UNIX_CONNECT): logs the
 *    path of Unix-socket connects, never blocks them.
 *  - cgroup/setsockopt, getsockopt: the shim's claim of a socket (DP_SO_CLAIM) and its
 *    question what the destination is (DP_SO_DEST), answered from socket-local storage.
 *  - sockops, cgroup/getpeername4/6: for connects sent to the proxy (below); bind4/6 keep
 *    session processes off the proxy's port.
 *
 * Mediation (design: layer 4). In an enforced session, a TCP connect to a route's
 * destination ("tls": "intercept") that the shim did not claim goes to deputy's proxy: the
 * connect hook rewrites the address (IPv4 -> proxy_listen, IPv6 -> [::1]:port, v4-mapped
 * -> ::ffff:proxy address) and keeps the original in the socket's local storage; the
 * getpeername hooks give the agent the original back; when the connect picks its local
 * port (sockops TCP_CONNECT_CB) the original destination is re-keyed by the agent side's
 * address into `proxied`, where deputyd finds it from the proxy's accepted socket (the
 * Merbridge pattern). With the proxy off such connects fail (EPERM), and UDP to a route's
 * destination (QUIC) always does in an enforced session: nothing could mediate it. The
 * model is Merbridge's and Cilium's socket-level redirect.
 *
 * Verdict: a destination is allowed when an allow rule of the session matches; no implicit
 * allow for loopback. A block returns 0, which fails the syscall with EPERM, unless the
 * session is not enforced: then the call goes through and the event says block/not
 * enforced. IPv4-mapped IPv6 destinations are matched against the IPv4 rules, since the
 * kernel then talks IPv4 without ever running the connect4/sendmsg4 hooks.
 *
 * Limits. The cgroup hooks run for sockets created in a cgroup below the parent: a socket
 * created outside (before a process joined its session, or passed in over a Unix socket by
 * a process outside) is not seen, so whoever starts a session must not leak sockets into it.
 * A session process with root privileges can leave its cgroup or detach programs; sessions
 * are meant for unprivileged agents. AF_PACKET is refused by SIGKILL, not EPERM.
 *
 * One file of ~800 lines rather than several: the programs share their maps and one
 * skeleton, and the loader pins and adopts them as one object.
 *
 * UDP: a DNS-heavy agent sends many datagrams, often one socket per query. A sendmsg event
 * is emitted for the first datagram of a (session, process, destination) and again when the
 * verdict changes or UDP_RELOG_NS passed since the last one, so every distinct destination
 * is logged without a flood. Every datagram still gets a verdict; the session counters count
 * what is logged.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "deputy/event.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SOCK_STREAM 1
#define SOCK_DGRAM 2

#define UDP_RELOG_NS (60ULL * 1000 * 1000 * 1000)

/* Set by the loader before load: the cgroup level of the session cgroups (parent's + 1). */
const volatile __u32 session_level = 2;
/* Set by the loader when bpf_get_current_task is callable from cgroup programs. */
const volatile __u8 have_current_task = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct dp_session_val);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct dp_allow_key);
	__type(value, __u32);
} allow SEC(".maps");

/* Where the proxy listens, and whether it is on (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_proxy_cfg);
} proxy_cfg SEC(".maps");

/* Original destinations of connections sent to the proxy, by the agent side's address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct dp_proxied_key);
	__type(value, struct dp_proxied);
} proxied SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* socket cookie */
	__type(value, struct dp_conn);
} conns SEC(".maps");

struct udp_key {
	__u64 cgid;
	__u32 tgid;
	__u16 family;
	__u16 port;
	__u8 addr[16];
};

struct udp_val {
	__u64 last_ns;
	__u32 verdict; /* verdict | enforced << 8 of the last event */
	__u32 pad_;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct udp_key);
	__type(value, struct udp_val);
} udp_seen SEC(".maps");

/* A destination as the hooks see it, normalised (v4-mapped -> AF_INET). */
struct dest {
	__u32 addr[4]; /* network order */
	__u16 family;
	__u16 port; /* network order */
	__u8 flags;
};

/* What the kernel knows about one TCP socket of a session (socket-local storage). */
struct sk_state {
	__u8 claimed; /* the shim said it mediates this socket */
	__u8 proxied; /* connect() was sent to the proxy; orig is where the agent meant */
	__u8 pad_[2];
	__u32 rule; /* DP_RULE_* of the destination at connect() */
	__u32 tgid;
	__u32 pad2_;
	__u64 cgid;
	struct dest orig;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_state);
} sk_states SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

static __always_inline struct dp_session_val *session_of(__u64 *cgid)
{
	__u64 id = bpf_get_current_ancestor_cgroup_id(session_level);

	if (!id)
		return NULL;
	*cgid = id;
	return bpf_map_lookup_elem(&sessions, &id);
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);

	if (n)
		*n += 1; /* per-CPU: no other writer */
}

/*
 * One session must not crowd the others out of the ring buffer: while it is more than half
 * full, a session gets at most EV_RATE events a second (with a burst of EV_BURST); beyond
 * that its events are dropped, and counted as its own loss. The budget is a GCRA on
 * ev_tat, updated without atomics: a race between CPUs only skews it by an event.
 */
#define EV_RATE 10000
#define EV_BURST_NS 1000000000ULL
#define EV_RING_SIZE (4 << 20)

static __always_inline int session_over_budget(struct dp_session_val *s, __u64 now)
{
	__u64 tat = s->ev_tat > now ? s->ev_tat : now;

	if (tat - now > EV_BURST_NS)
		return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > EV_RING_SIZE / 2;
	s->ev_tat = tat + 1000000000ULL / EV_RATE;
	return 0;
}

static __always_inline struct dp_event *event_new(__u16 type, __u64 cgid)
{
	struct dp_session_val *s = bpf_map_lookup_elem(&sessions, &cgid);
	__u64 now = bpf_ktime_get_boot_ns();
	struct dp_event *e = NULL;

	if (!s || !session_over_budget(s, now))
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		if (s)
			__sync_fetch_and_add(&s->n_lost, 1);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->cgid = cgid;
	e->ts_ns = now;
	return e;
}

/* Caller identity. io_uring workers (iou-wrk-N) and other threads are named after their
 * thread-group leader, which is the process the audit log should name. */
static __always_inline void event_task(struct dp_event *e)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->pid = (__u32)id;
	e->tgid = id >> 32;
	if (have_current_task) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		struct task_struct *leader = BPF_CORE_READ(t, group_leader);

		if (bpf_core_read_str(e->comm, sizeof(e->comm), &leader->comm) > 0)
			return;
	}
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline __u32 rule_match(__u64 cgid, const struct dest *d, __u16 port)
{
	struct dp_allow_key k = {};
	__u32 *v;

	k.prefixlen = DP_ALLOW_FIXED_BITS + (d->family == AF_INET ? 32 : 128);
	k.cgid[0] = (__u32)cgid;
	k.cgid[1] = cgid >> 32;
	k.family = d->family;
	k.port = port;
	__builtin_memcpy(k.addr, d->addr, sizeof(k.addr));
	v = bpf_map_lookup_elem(&allow, &k);
	return v ? *v : 0;
}

/* The DP_RULE_* bits of a destination: its own port's rule, and when that one does not
 * allow (none, or only a deny route's mark) the any-port rules (allow_cidrs). */
static __always_inline __u32 dest_rule(__u64 cgid, const struct dest *d)
{
	__u32 r = rule_match(cgid, d, d->port);

	if (!(r & DP_RULE_ALLOW))
		r |= rule_match(cgid, d, 0);
	return r;
}

static __always_inline void dest_v6(struct dest *d, struct bpf_sock_addr *ctx)
{
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];

	d->port = (__u16)ctx->user_port;
	if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) {
		d->family = AF_INET;
		d->flags = DP_EVF_V4MAPPED;
		d->addr[0] = a3;
		return;
	}
	d->family = AF_INET6;
	d->addr[0] = a0;
	d->addr[1] = a1;
	d->addr[2] = a2;
	d->addr[3] = a3;
}

static __always_inline void dest_v4(struct dest *d, struct bpf_sock_addr *ctx)
{
	d->family = AF_INET;
	d->port = (__u16)ctx->user_port;
	d->addr[0] = ctx->user_ip4;
}

static __always_inline void event_dest(struct dp_event *e, const struct dest *d)
{
	e->family = d->family;
	e->port = bpf_ntohs(d->port);
	e->flags = d->flags;
	__builtin_memcpy(e->addr, d->addr, sizeof(e->addr)); /* unused bytes are 0 */
}

/* Remember a TCP connection so the state tracepoint can report its close. */
static __always_inline void conn_track(struct dp_event *e)
{
	struct dp_conn c = {};

	if (!e->cookie)
		return;
	c.cgid = e->cgid;
	c.start_ns = e->ts_ns;
	c.pid = e->pid;
	c.tgid = e->tgid;
	c.family = e->family;
	c.port = e->port;
	c.verdict = e->verdict;
	c.enforced = e->enforced;
	c.flags = e->flags;
	__builtin_memcpy(c.addr, e->addr, sizeof(c.addr));
	__builtin_memcpy(c.comm, e->comm, sizeof(c.comm));
	bpf_map_update_elem(&conns, &e->cookie, &c, BPF_ANY);
}

static __always_inline void set_user_ip6(struct bpf_sock_addr *ctx, __u32 a0, __u32 a1, __u32 a2,
					 __u32 a3)
{
	ctx->user_ip6[0] = a0;
	ctx->user_ip6[1] = a1;
	ctx->user_ip6[2] = a2;
	ctx->user_ip6[3] = a3;
}

/* Sends the connect to the proxy: the address the socket really connects to. */
static __always_inline void redirect_to_proxy(struct bpf_sock_addr *ctx, const struct dest *d,
					      const struct dp_proxy_cfg *p)
{
	if (d->family == AF_INET && !(d->flags & DP_EVF_V4MAPPED))
		ctx->user_ip4 = p->addr4;
	else if (d->family == AF_INET)
		set_user_ip6(ctx, 0, 0, bpf_htonl(0xffff), p->addr4);
	else
		set_user_ip6(ctx, 0, 0, 0, bpf_htonl(1));
	ctx->user_port = p->port;
}

/* Who mediates a TCP connect of an enforced session: DP_EVF_CLAIMED (the shim),
 * DP_EVF_PROXIED (redirected here), DP_EVF_UNMEDIATED (nobody: refuse it), or
 * DP_EVF_OPAQUE / 0 (left untouched). */
static __always_inline __u8 tcp_mediation(struct bpf_sock_addr *ctx, const struct dest *d,
					  __u32 rule, __u64 cgid, int enforce)
{
	struct sk_state *st =
	    bpf_sk_storage_get(&sk_states, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	struct dp_proxy_cfg *p;
	__u32 zero = 0;

	if (!st)
		return (rule & DP_RULE_ROUTE) && enforce ? DP_EVF_UNMEDIATED : 0;
	st->rule = rule;
	st->proxied = 0;
	if (st->claimed)
		return DP_EVF_CLAIMED;
	if (!(rule & DP_RULE_ROUTE))
		return rule & DP_RULE_OPAQUE ? DP_EVF_OPAQUE : 0;
	if (!enforce)
		return 0;
	p = bpf_map_lookup_elem(&proxy_cfg, &zero);
	if (!p || !p->on || !p->port)
		return DP_EVF_UNMEDIATED;
	st->proxied = 1;
	st->cgid = cgid;
	st->tgid = bpf_get_current_pid_tgid() >> 32;
	st->orig = *d;
	redirect_to_proxy(ctx, d, p);
	return DP_EVF_PROXIED;
}

/* Returns 1 (let the call go on) or 0 (EPERM). */
static __always_inline int on_connect(struct bpf_sock_addr *ctx, const struct dest *d,
				      struct dp_session_val *s, __u64 cgid)
{
	__u32 rule = dest_rule(cgid, d);
	int ok = rule & DP_RULE_ALLOW;
	int enforce = s->flags & DP_SESSION_ENFORCE;
	__u16 proto = ctx->type == SOCK_STREAM ? DP_EV_PROTO_TCP : DP_EV_PROTO_UDP;
	__u8 how = 0;
	struct dp_event *e;

	if (ok && proto == DP_EV_PROTO_TCP)
		how = tcp_mediation(ctx, d, rule, cgid, enforce);
	else if (ok && (rule & DP_RULE_ROUTE) && enforce)
		how = DP_EVF_UNMEDIATED; /* UDP (QUIC) to a route's destination */
	if (how == DP_EVF_UNMEDIATED)
		ok = 0;
	__sync_fetch_and_add(ok ? &s->n_allow : &s->n_block, 1);
	e = event_new(DP_EV_CONNECT, cgid);
	if (e) {
		event_task(e);
		event_dest(e, d);
		e->flags |= how;
		e->protocol = proto;
		e->verdict = ok ? DP_EV_ALLOW : DP_EV_BLOCK;
		e->enforced = !ok && enforce;
		e->cookie = bpf_get_socket_cookie(ctx);
		if (proto == DP_EV_PROTO_TCP && (ok || !enforce))
			conn_track(e);
		bpf_ringbuf_submit(e, 0);
	}
	return ok || !enforce;
}

static __always_inline int udp_should_log(__u64 cgid, const struct dest *d, __u32 verdict)
{
	struct udp_key k = {};
	struct udp_val v = {}, *old;
	__u64 now = bpf_ktime_get_boot_ns();

	k.cgid = cgid;
	k.tgid = bpf_get_current_pid_tgid() >> 32;
	k.family = d->family;
	k.port = d->port;
	__builtin_memcpy(k.addr, d->addr, sizeof(k.addr));
	old = bpf_map_lookup_elem(&udp_seen, &k);
	if (old && old->verdict == verdict && now - old->last_ns < UDP_RELOG_NS)
		return 0;
	v.last_ns = now;
	v.verdict = verdict;
	bpf_map_update_elem(&udp_seen, &k, &v, BPF_ANY);
	return 1;
}

static __always_inline int on_sendmsg(struct bpf_sock_addr *ctx, const struct dest *d,
				      struct dp_session_val *s, __u64 cgid)
{
	__u32 rule = dest_rule(cgid, d);
	int enforce = s->flags & DP_SESSION_ENFORCE;
	/* UDP to a route's destination (QUIC) could not be mediated: refused. */
	__u8 how =
	    (rule & DP_RULE_ALLOW) && (rule & DP_RULE_ROUTE) && enforce ? DP_EVF_UNMEDIATED : 0;
	int ok = (rule & DP_RULE_ALLOW) && !how;
	__u8 verdict = ok ? DP_EV_ALLOW : DP_EV_BLOCK;
	__u8 enforced = !ok && enforce;
	struct dp_event *e;

	if (udp_should_log(cgid, d, verdict | (__u32)enforced << 8)) {
		__sync_fetch_and_add(ok ? &s->n_allow : &s->n_block, 1);
		e = event_new(DP_EV_SENDMSG, cgid);
		if (e) {
			event_task(e);
			event_dest(e, d);
			e->flags |= how;
			e->protocol = DP_EV_PROTO_UDP;
			e->verdict = verdict;
			e->enforced = enforced;
			e->cookie = bpf_get_socket_cookie(ctx);
			bpf_ringbuf_submit(e, 0);
		}
	}
	return ok || !enforce;
}

/* The four connect/sendmsg programs differ only in constants: each section needs its own
 * entry point, and with the constants inlined the verifier sees no branch on them. */
static __always_inline int on_sock_addr(struct bpf_sock_addr *ctx, int v6, int udp)
{
	struct dp_session_val *s;
	struct dest d = {};
	__u64 cgid;

	s = session_of(&cgid);
	if (!s)
		return 1;
	if (v6)
		dest_v6(&d, ctx);
	else
		dest_v4(&d, ctx);
	return udp ? on_sendmsg(ctx, &d, s, cgid) : on_connect(ctx, &d, s, cgid);
}

SEC("cgroup/connect4")
int deputy_connect4(struct bpf_sock_addr *ctx)
{
	return on_sock_addr(ctx, 0, 0);
}

SEC("cgroup/connect6")
int deputy_connect6(struct bpf_sock_addr *ctx)
{
	return on_sock_addr(ctx, 1, 0);
}

SEC("cgroup/sendmsg4")
int deputy_sendmsg4(struct bpf_sock_addr *ctx)
{
	return on_sock_addr(ctx, 0, 1);
}

SEC("cgroup/sendmsg6")
int deputy_sendmsg6(struct bpf_sock_addr *ctx)
{
	return on_sock_addr(ctx, 1, 1);
}

/* Only TCP and UDP over IP reach the connect/sendmsg hooks; anything else could carry
 * traffic around them. AF_NETLINK (SOCK_RAW too), AF_UNIX etc. are not IP and stay open. */
static __always_inline int sock_bypasses_hooks(__u32 family, __u32 type, __u32 protocol)
{
	if (family == AF_PACKET)
		return 1;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (type == SOCK_STREAM)
		return protocol != IPPROTO_TCP;
	if (type == SOCK_DGRAM)
		return protocol != IPPROTO_UDP;
	return 1;
}

/* A socket a session asked for and was refused (type in the port field); the session's
 * verdict, 0 (refuse) when it enforces. */
static __always_inline int sock_refused(struct dp_session_val *s, __u64 cgid, __u16 family,
					__u16 type, __u16 protocol, __u8 flags)
{
	int enforce = s->flags & DP_SESSION_ENFORCE;
	struct dp_event *e;

	__sync_fetch_and_add(&s->n_refused, 1);
	e = event_new(DP_EV_SOCK_REFUSED, cgid);
	if (e) {
		event_task(e);
		e->family = family;
		e->protocol = protocol;
		e->port = type;
		e->verdict = DP_EV_BLOCK;
		e->enforced = enforce;
		e->flags = enforce ? flags : 0;
		bpf_ringbuf_submit(e, 0);
	}
	return !enforce;
}

SEC("cgroup/sock_create")
int deputy_sock_create(struct bpf_sock *sk)
{
	struct dp_session_val *s;
	__u64 cgid;

	if (!sock_bypasses_hooks(sk->family, sk->type, sk->protocol))
		return 1;
	s = session_of(&cgid);
	if (!s)
		return 1;
	return sock_refused(s, cgid, sk->family, sk->type, sk->protocol, 0);
}

SEC("tracepoint/syscalls/sys_enter_socket")
int deputy_socket_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct dp_session_val *s;
	__u64 cgid;

	if (ctx->args[0] != AF_PACKET)
		return 0;
	s = session_of(&cgid);
	if (!s)
		return 0;
	/* The type without SOCK_NONBLOCK / SOCK_CLOEXEC; the protocol in network order. */
	if (!sock_refused(s, cgid, AF_PACKET, ctx->args[1] & 0xf, bpf_ntohs((__u16)ctx->args[2]),
			  DP_EVF_KILLED))
		bpf_send_signal(9 /* SIGKILL */);
	return 0;
}

/* Attached as BPF_CGROUP_UNIX_CONNECT by the loader (libbpf 1.1 does not know the section
 * name), and only where the kernel has it. The path is read from the kernel's copy of the
 * address: the sockaddr buffer there is a sockaddr_storage, so sun_path is always in it. */
SEC("cgroup/connect4")
int deputy_connect_unix(struct bpf_sock_addr *ctx)
{
	struct bpf_sock_addr_kern *kctx;
	struct dp_session_val *s;
	struct sockaddr *sa;
	struct dp_event *e;
	__u32 len;
	__u64 cgid;

	s = session_of(&cgid);
	if (!s || !bpf_cast_to_kern_ctx)
		return 1;
	e = event_new(DP_EV_UNIX_CONNECT, cgid);
	if (!e)
		return 1;
	event_task(e);
	e->family = AF_UNIX;
	e->cookie = bpf_get_socket_cookie(ctx);
	kctx = bpf_cast_to_kern_ctx(ctx);
	len = kctx->uaddrlen;
	sa = kctx->uaddr;
	len = len > 2 ? len - 2 : 0;
	if (len > DP_EV_PATH_LEN)
		len = DP_EV_PATH_LEN;
	e->path_len = len;
	if (sa && bpf_probe_read_kernel(e->path, sizeof(e->path), sa->sa_data) == 0 && len &&
	    e->path[0] == 0)
		e->flags = DP_EVF_UNIX_ABSTRACT;
	bpf_ringbuf_submit(e, 0);
	return 1;
}

/* The shim's claim. Only inside a session: elsewhere the kernel's own handler answers
 * ENOPROTOOPT for the unknown level, so a shim outside sessions learns it has nothing to do. */
SEC("cgroup/setsockopt")
int deputy_setsockopt(struct bpf_sockopt *ctx)
{
	struct sk_state *st;
	__u64 cgid;

	if (ctx->level != DP_SOL_DEPUTY || ctx->optname != DP_SO_CLAIM || !ctx->sk)
		return 1;
	if (!session_of(&cgid))
		return 1;
	st = bpf_sk_storage_get(&sk_states, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 0; /* EPERM: the shim then does not count on the claim */
	st->claimed = 1;
	ctx->optlen = -1; /* answered here: the kernel's handler does not run */
	return 1;
}

SEC("cgroup/getsockopt")
int deputy_getsockopt(struct bpf_sockopt *ctx)
{
	__u32 *out = ctx->optval;
	struct sk_state *st;

	if (ctx->level != DP_SOL_DEPUTY || ctx->optname != DP_SO_DEST || !ctx->sk)
		return 1;
	if ((void *)(out + 1) > ctx->optval_end)
		return 1; /* too short: the kernel's ENOPROTOOPT stands */
	st = bpf_sk_storage_get(&sk_states, ctx->sk, 0, 0);
	*out = st ? st->rule : 0;
	ctx->optlen = sizeof(*out);
	ctx->retval = 0;
	return 1;
}

/* Nothing in a session may listen where the proxy does: while the proxy is down, a
 * session's listener there would receive other sessions' redirected connections. */
static __always_inline int bind_allowed(struct bpf_sock_addr *ctx)
{
	struct dp_proxy_cfg *p;
	__u32 zero = 0;
	__u64 cgid;

	if (ctx->type != SOCK_STREAM || !session_of(&cgid))
		return 1;
	p = bpf_map_lookup_elem(&proxy_cfg, &zero);
	return !p || !p->port || ctx->user_port != p->port;
}

SEC("cgroup/bind4")
int deputy_bind4(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx);
}

SEC("cgroup/bind6")
int deputy_bind6(struct bpf_sock_addr *ctx)
{
	return bind_allowed(ctx);
}

/* The socket state of a connection sent to the proxy, or NULL. */
static __always_inline struct sk_state *proxied_state(struct bpf_sock_addr *ctx)
{
	struct sk_state *st;

	if (!ctx->sk)
		return NULL;
	st = bpf_sk_storage_get(&sk_states, ctx->sk, 0, 0);
	return st && st->proxied ? st : NULL;
}

/* The agent sees the address it connected to, not the proxy's. */
SEC("cgroup/getpeername4")
int deputy_getpeername4(struct bpf_sock_addr *ctx)
{
	struct sk_state *st = proxied_state(ctx);

	if (st && st->orig.family == AF_INET) {
		ctx->user_ip4 = st->orig.addr[0];
		ctx->user_port = st->orig.port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int deputy_getpeername6(struct bpf_sock_addr *ctx)
{
	struct sk_state *st = proxied_state(ctx);

	if (!st)
		return 1;
	if (st->orig.family == AF_INET) /* v4-mapped */
		set_user_ip6(ctx, 0, 0, bpf_htonl(0xffff), st->orig.addr[0]);
	else
		set_user_ip6(ctx, st->orig.addr[0], st->orig.addr[1], st->orig.addr[2],
			     st->orig.addr[3]);
	ctx->user_port = st->orig.port;
	return 1;
}

/* A proxied connect has its local port now (TCP_CONNECT_CB runs before the SYN is sent,
 * so before the proxy can accept): keep the original destination under the agent side's
 * address, which is what the proxy sees as its peer. */
SEC("sockops")
int deputy_sockops(struct bpf_sock_ops *ops)
{
	struct dp_proxied_key k = {};
	struct dp_proxied v = {};
	struct sk_state *st;
	struct dp_conn *c;
	struct bpf_sock *sk;
	__u64 cookie;

	if (ops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	sk = ops->sk;
	if (!sk)
		return 1;
	st = bpf_sk_storage_get(&sk_states, sk, 0, 0);
	if (!st || !st->proxied)
		return 1;
	k.port = (__u16)ops->local_port;
	if (ops->family == AF_INET) {
		k.family = AF_INET;
		__builtin_memcpy(k.addr, &ops->local_ip4, 4);
	} else if (ops->local_ip6[0] == 0 && ops->local_ip6[1] == 0 &&
		   ops->local_ip6[2] == bpf_htonl(0xffff)) {
		__u32 a = ops->local_ip6[3];

		k.family = AF_INET;
		__builtin_memcpy(k.addr, &a, 4);
	} else {
		__u32 a[4] = {ops->local_ip6[0], ops->local_ip6[1], ops->local_ip6[2],
			      ops->local_ip6[3]};

		k.family = AF_INET6;
		__builtin_memcpy(k.addr, a, 16);
	}
	cookie = bpf_get_socket_cookie(ops);
	v.cgroup_id = st->cgid;
	v.cookie = cookie;
	v.pid = st->tgid;
	v.family = st->orig.family;
	__builtin_memcpy(v.addr, st->orig.addr, sizeof(v.addr));
	v.port = bpf_ntohs(st->orig.port);
	bpf_map_update_elem(&proxied, &k, &v, BPF_ANY);
	c = bpf_map_lookup_elem(&conns, &cookie);
	if (c)
		c->pkey = k; /* the close event removes the entry */
	return 1;
}

/* Runs in whatever context changes the state (often softirq), so who and where come from
 * what the connect hook stored under the socket cookie. The cookie is read from the socket
 * rather than generated: a socket the hooks never saw has none and is skipped cheaply. */
SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(deputy_sock_state, struct sock *sk, int oldstate, int newstate)
{
	struct dp_conn *c;
	struct dp_event *e;
	__u64 cookie;

	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!cookie)
		return 0;
	c = bpf_map_lookup_elem(&conns, &cookie);
	if (!c)
		return 0;
	if (newstate == TCP_ESTABLISHED) {
		c->flags |= DP_EVF_ESTABLISHED;
		return 0;
	}
	e = event_new(DP_EV_CLOSE, c->cgid);
	if (e) {
		struct tcp_sock *tp = (struct tcp_sock *)sk;

		e->cookie = cookie;
		e->duration_ns = e->ts_ns - c->start_ns;
		e->bytes_out = BPF_CORE_READ(tp, bytes_sent);
		e->bytes_in = BPF_CORE_READ(tp, bytes_received);
		e->pid = c->pid;
		e->tgid = c->tgid;
		e->family = c->family;
		e->protocol = DP_EV_PROTO_TCP;
		e->port = c->port;
		e->verdict = c->verdict;
		e->enforced = c->enforced;
		e->flags = c->flags;
		__builtin_memcpy(e->addr, c->addr, sizeof(e->addr));
		__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
		bpf_ringbuf_submit(e, 0);
	}
	if (c->pkey.port)
		bpf_map_delete_elem(&proxied, &c->pkey);
	bpf_map_delete_elem(&conns, &cookie);
	return 0;
}
