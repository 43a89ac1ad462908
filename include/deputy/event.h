/* SPDX-License-Identifier: MIT */
/*
 * The kernel -> deputyd event layout: one record per ring-buffer entry, written by
 * bpf/deputy.bpf.c and read by daemon/deputyd/kernel.c. Both sides compile this header, so it uses
 * fixed-width fields only, no pointers, and explicit padding: the layout must not depend on
 * the compiler or the target (BPF is 64-bit little-endian here, like the hosts we run on).
 */
#ifndef DEPUTY_EVENT_H
#define DEPUTY_EVENT_H

#ifdef __bpf__
/* vmlinux.h provides the __u* types for BPF programs. */
typedef __u8 dp_u8;
typedef __u16 dp_u16;
typedef __u32 dp_u32;
typedef __u64 dp_u64;
#else
#include <stdint.h>
typedef uint8_t dp_u8;
typedef uint16_t dp_u16;
typedef uint32_t dp_u32;
typedef uint64_t dp_u64;
#endif

enum dp_event_type {
	DP_EV_CONNECT = 1, /* connect() (TCP, or UDP "connect"), incl. TCP Fast Open sendto */
	DP_EV_SENDMSG = 2, /* unconnected UDP sendto/sendmsg (deduplicated, see deputy.bpf.c) */
	DP_EV_SOCK_REFUSED = 3, /* socket() refused in a session: raw, ping, other protocols;
				 * AF_PACKET: the process is killed instead (DP_EVF_KILLED) */
	DP_EV_CLOSE = 4,	/* a TCP connection of a session reached CLOSE (duration known) */
	DP_EV_UNIX_CONNECT = 5, /* connect() on an AF_UNIX socket */
	DP_EV_UNIX_SENDMSG = 6, /* sendto/sendmsg with an address on an AF_UNIX socket
				 * (deduplicated like DP_EV_SENDMSG) */
};

enum dp_event_verdict {
	DP_EV_ALLOW = 0,
	DP_EV_BLOCK = 1,
};

/* Values of dp_event.protocol: IANA protocol numbers, like IPPROTO_*. */
#define DP_EV_PROTO_TCP 6
#define DP_EV_PROTO_UDP 17

/* dp_event.flags */
#define DP_EVF_V4MAPPED 0x01	  /* destination was ::ffff:a.b.c.d on an AF_INET6 socket */
#define DP_EVF_ESTABLISHED 0x02	  /* DP_EV_CLOSE: the connection reached ESTABLISHED */
#define DP_EVF_UNIX_ABSTRACT 0x04 /* DP_EV_UNIX_CONNECT: abstract name (path[0] was NUL) */
#define DP_EVF_KILLED 0x08	  /* DP_EV_SOCK_REFUSED: the process was killed (AF_PACKET) */
#define DP_EVF_CLAIMED 0x10	  /* TCP connect the shim claimed: it mediates the connection */
#define DP_EVF_PROXIED 0x20	  /* TCP connect redirected to deputy's proxy */
#define DP_EVF_OPAQUE 0x40	  /* to a "tls": "opaque" route's destination: left untouched */
#define DP_EVF_UNMEDIATED                                                                          \
	0x80 /* blocked: a route's destination nobody would mediate                                \
	      * ("proxy": "off" and the shim did not claim it) */

#define DP_EV_COMM_LEN 16
#define DP_EV_PATH_LEN 108 /* sizeof(sun_path) */

struct dp_event {
	dp_u64 ts_ns;	    /* CLOCK_BOOTTIME, ns (kernel_event_realtime() converts) */
	dp_u64 cgid;	    /* the session's cgroup id (kernfs id of the session cgroup) */
	dp_u64 cookie;	    /* socket cookie, as getsockopt(SO_COOKIE) returns it; 0 if none */
	dp_u64 duration_ns; /* DP_EV_CLOSE: time from connect() to CLOSE */
	dp_u64 bytes_out;   /* DP_EV_CLOSE: payload bytes the agent sent (tcp bytes_sent) */
	dp_u64 bytes_in;    /* DP_EV_CLOSE: payload bytes it received (tcp bytes_received) */
	dp_u32 pid;	    /* thread id of the caller (DP_EV_CLOSE: of the connect) */
	dp_u32 tgid;	    /* process id */
	dp_u16 type;	    /* enum dp_event_type */
	dp_u16 family;	    /* AF_INET / AF_INET6 / AF_UNIX / AF_PACKET… (effective family:
			     * a v4-mapped destination is reported as AF_INET, see flags) */
	dp_u16 protocol;    /* DP_EV_PROTO_TCP / _UDP; for DP_EV_SOCK_REFUSED the socket's */
	dp_u16 port;	    /* destination port, host byte order; DP_EV_SOCK_REFUSED: sock type */
	dp_u8 verdict;	    /* enum dp_event_verdict */
	dp_u8 enforced;	    /* 1 if a block verdict really blocked (session enforce on) */
	dp_u8 flags;	    /* DP_EVF_* */
	dp_u8 pad_;
	dp_u32 path_len;	   /* DP_EV_UNIX_CONNECT: bytes of path used (<= DP_EV_PATH_LEN) */
	dp_u8 addr[16];		   /* destination: 4 bytes (AF_INET, network order) or 16 */
	char comm[DP_EV_COMM_LEN]; /* the process's name (thread-group leader's comm) */
	char path[DP_EV_PATH_LEN]; /* DP_EV_UNIX_CONNECT: sun_path, not NUL-terminated */
	dp_u8 pad2_[4];
};

/*
 * The shim's claim: setsockopt(fd, DP_SOL_DEPUTY, DP_SO_CLAIM, NULL, 0) right before
 * connect() says "the shim mediates this socket", so the kernel does not send it to the
 * proxy. A cgroup/setsockopt program answers it inside sessions; elsewhere the kernel says
 * ENOPROTOOPT. getsockopt(fd, DP_SOL_DEPUTY, DP_SO_DEST, &u32, &len) after connect() tells
 * the shim the DP_RULE_* bits of the destination (0 when none; outside deputy's cgroups the
 * call fails, EOPNOTSUPP).
 * The level is no protocol number Linux uses.
 */
#define DP_SOL_DEPUTY 0x64707479 /* "dpty" */
#define DP_SO_CLAIM 1
#define DP_SO_DEST 2

/* The original destination of a connection the kernel sent to the proxy, as deputyd finds
 * it from the agent side's local address (the proxy's peer). */
struct dp_proxied {
	dp_u64 cgroup_id; /* the session's cgroup id */
	dp_u64 cookie;	  /* the agent socket's cookie (the kernel's connect/close events) */
	dp_u32 pid;	  /* process (tgid) that called connect() */
	int family;	  /* AF_INET / AF_INET6: of the original destination (v4-mapped: AF_INET) */
	dp_u8 addr[16];	  /* network order; IPv4 in the first 4 bytes */
	dp_u16 port;	  /* host order */
	dp_u16 pad_;
	dp_u32 pad2_;
};

/* Key of the map deputyd looks a proxied connection up in: the agent side's address. */
struct dp_proxied_key {
	dp_u16 family; /* AF_INET (also for v4-mapped) / AF_INET6 */
	dp_u16 port;   /* host order */
	dp_u8 addr[16];
};

/* Where the proxy listens, written by deputyd (kernel_proxy_configure). */
struct dp_proxy_cfg {
	dp_u32 on;    /* 0: unclaimed connects to a route's destination are refused */
	dp_u32 addr4; /* network order: IPv4 and v4-mapped connects go here */
	dp_u16 port;  /* network order; IPv6 connects go to [::1]:port */
	dp_u16 pad_;
	dp_u32 pad2_;
};

/*
 * A TCP connection of a session, from its connect() to its close: the value of the `conns`
 * map, keyed by socket cookie. The close event needs it (the state tracepoint does not run
 * in the process), and deputyd reads a connection's real destination from it before it lets
 * a token go there (kernel_conn_lookup).
 */
struct dp_conn {
	dp_u64 cgid; /* the session's cgroup id */
	dp_u64 start_ns;
	dp_u32 pid;
	dp_u32 tgid;
	dp_u16 family; /* effective: a v4-mapped destination is AF_INET (flags say so) */
	dp_u16 port;   /* host byte order */
	dp_u8 verdict;
	dp_u8 enforced;
	dp_u8 flags;
	dp_u8 pad_;
	dp_u8 addr[16]; /* network order; IPv4 in the first 4 bytes */
	char comm[DP_EV_COMM_LEN];
	struct dp_proxied_key pkey; /* DP_EVF_PROXIED: its entry in `proxied` (port 0: none) */
	dp_u32 pad2_;
};

/*
 * Policy maps, written by deputyd and read by the BPF programs. One entry in `sessions` per
 * session cgroup; the allow rules live in one LPM trie whose key starts with the session's
 * cgroup id, the family and the port, so a rule is found by a longest-prefix lookup on
 * (cgid, family, port, address) and, failing that, on (cgid, family, port 0 = any, address).
 * Exact destinations are rules with a full-length prefix.
 */
#define DP_SESSION_ENFORCE 0x1

/* The value of an allow rule: what kind of destination it is. A rule without
 * DP_RULE_ALLOW only marks a deny route's destination (DP_RULE_STRICT) and allows nothing. */
#define DP_RULE_ALLOW 0x1  /* connections may go there */
#define DP_RULE_ROUTE 0x2  /* a delegate/passthrough route's ("tls": "intercept"): mediated */
#define DP_RULE_OPAQUE 0x4 /* a "tls": "opaque" route's: untouched, unmediated */
#define DP_RULE_STRICT 0x8 /* a delegate or deny route's: the shim refuses what it can't read */

struct dp_session_val {
	dp_u32 flags; /* DP_SESSION_* */
	dp_u32 pad_;
	dp_u64 n_allow;	  /* connect and sendmsg events with verdict allow */
	dp_u64 n_block;	  /* ... with verdict block (blocked or, unenforced, would be) */
	dp_u64 n_refused; /* sockets refused at socket() */
	dp_u64 n_lost;	  /* events of this session not queued (ring buffer full, or its share) */
	dp_u64 ev_tat;	  /* the session's event budget, deputy.bpf.c event_new (BPF only) */
};

/* The bits of dp_allow_key after prefixlen that always take part in a match. */
#define DP_ALLOW_FIXED_BITS 96

struct dp_allow_key {
	dp_u32 prefixlen; /* DP_ALLOW_FIXED_BITS + address prefix length */
	dp_u32 cgid[2];	  /* the session's cgroup id, as two halves (keeps the key unpadded) */
	dp_u16 family;	  /* AF_INET / AF_INET6 */
	dp_u16 port;	  /* network byte order; 0 = any port */
	dp_u8 addr[16];	  /* network order; IPv4 uses the first 4 bytes */
};

/* Key of the `unix_allow` map: the Unix socket addresses every session may reach
 * ("allow_unix" and deputyd's own socket). A path is its bytes up to the first NUL, an
 * abstract name its bytes after the leading NUL up to the address length; the rest of
 * `path` is zero, so one address has exactly one key. */
struct dp_unix_key {
	dp_u32 len; /* bytes of path used */
	dp_u8 abstract;
	dp_u8 pad_[3];
	char path[DP_EV_PATH_LEN];
};

#ifndef __bpf__
_Static_assert(sizeof(struct dp_unix_key) == 116, "dp_unix_key layout is shared with BPF");
_Static_assert(sizeof(struct dp_event) == 216, "dp_event layout is shared with BPF");
_Static_assert(sizeof(struct dp_allow_key) == 32, "LPM key must have no padding");
_Static_assert(sizeof(struct dp_proxied) == 48, "dp_proxied layout is shared with BPF");
_Static_assert(sizeof(struct dp_proxied_key) == 20, "hash key must have no padding");
_Static_assert(sizeof(struct dp_conn) == 88, "dp_conn layout is shared with BPF");
#endif

#endif
