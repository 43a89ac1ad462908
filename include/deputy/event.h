/* SPDX-License-Identifier: MIT */
/*
 * The kernel -> deputyd event layout: one record per ring-buffer entry, written by
 * bpf/deputy.bpf.c and read by daemon/kernel.c. Both sides compile this header, so it uses
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

#define DP_EV_COMM_LEN 16
#define DP_EV_PATH_LEN 108 /* sizeof(sun_path) */

struct dp_event {
	dp_u64 ts_ns;	    /* CLOCK_BOOTTIME, ns (kernel_event_realtime() converts) */
	dp_u64 cgid;	    /* the session's cgroup id (kernfs id of the session cgroup) */
	dp_u64 cookie;	    /* socket cookie, as getsockopt(SO_COOKIE) returns it; 0 if none */
	dp_u64 duration_ns; /* DP_EV_CLOSE: time from connect() to CLOSE */
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
 * Policy maps, written by deputyd and read by the BPF programs. One entry in `sessions` per
 * session cgroup; the allow rules live in one LPM trie whose key starts with the session's
 * cgroup id, the family and the port, so a rule is found by a longest-prefix lookup on
 * (cgid, family, port, address) and, failing that, on (cgid, family, port 0 = any, address).
 * Exact destinations are rules with a full-length prefix.
 */
#define DP_SESSION_ENFORCE 0x1

struct dp_session_val {
	dp_u32 flags; /* DP_SESSION_* */
	dp_u32 pad_;
	dp_u64 n_allow;	  /* connect and sendmsg events with verdict allow */
	dp_u64 n_block;	  /* ... with verdict block (blocked or, unenforced, would be) */
	dp_u64 n_refused; /* sockets refused at socket() */
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
_Static_assert(sizeof(struct dp_event) == 200, "dp_event layout is shared with BPF");
_Static_assert(sizeof(struct dp_allow_key) == 32, "LPM key must have no padding");
#endif

#endif
