/* SPDX-License-Identifier: MIT */
/*
 * kernel: loads deputy's eBPF programs (bpf/deputy.bpf.c) onto deputy's parent cgroup, keeps
 * each session's connection policy in their maps, and hands their events to deputyd.
 *
 * A session is a direct child cgroup of the parent; everything below it belongs to it.
 * Nothing is enforced or logged for a cgroup until kernel_session_set() registers it, and
 * processes outside sessions (the parent itself, anything else) are never affected.
 *
 * Not thread-safe: one thread owns a struct dp_kernel (deputyd's event loop).
 *
 * Restart: the programs' links and the maps are pinned under
 * /sys/fs/bpf/deputy/<parent cgroup>/, so while deputyd is down (crash, upgrade) sessions
 * stay enforced with their last policy and events queue in the ring buffer (up to 16 MiB,
 * then they are counted as lost). kernel_open() adopts what it finds there: the new programs
 * replace the old ones in place, the policy maps are kept. kernel_close() takes it all away;
 * kernel_release() leaves it in place for the next deputyd.
 */
#ifndef DEPUTY_KERNEL_H
#define DEPUTY_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <sys/socket.h>

#include "config.h"
#include "deputy/event.h"
#include "util.h"

struct dp_kernel;

/* One allow rule: destinations in addr/prefix (network order, IPv4 in the first 4 bytes),
 * on port `port` (host order, 0 = any port). An exact address is prefix 32 / 128.
 * `rule` says what kind of destination it is (DP_RULE_* of deputy/event.h; 0 means
 * DP_RULE_ALLOW): a route's destinations are mediated (the proxy gets what the shim did not
 * claim), an opaque route's are not, and one without DP_RULE_ALLOW only marks a deny
 * route's destination for the shim. A route's rule must name its port: any-port rules are
 * looked at only when the port's own rule does not allow. */
struct dp_kallow {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	int prefix; /* 0..32 or 0..128 */
	uint16_t port;
	uint32_t rule;
};

/* Called from kernel_consume() for each event, with a pointer valid only during the call. */
typedef void (*dp_kernel_event_fn)(void *ctx, const struct dp_event *ev);

/* Per-session counters kept by the kernel side (see struct dp_session_val). */
struct dp_kernel_stats {
	uint64_t n_allow;
	uint64_t n_block;
	uint64_t n_refused;
	uint64_t n_lost; /* this session's events that did not reach deputyd */
};

/* Load and attach onto the parent cgroup: an absolute path, or one relative to the cgroup2
 * mount ("deputy"). The cgroup must exist. Mounts bpffs on /sys/fs/bpf, and tracefs if
 * needed. Adopts pinned state of an earlier deputyd (see above): its sessions stay
 * registered, kernel_session_list() tells which, and queued events are delivered.
 * 0 or -errno with err saying what failed. */
int kernel_open(const char *parent_cgroup, dp_kernel_event_fn fn, void *ctx, struct dp_kernel **out,
		struct dp_err *err) DP_WUR;

/* Detach everything and remove the pinned state. Sessions are no longer enforced: for a
 * stop while sessions live on (restart, upgrade), kernel_release() instead. */
void kernel_close(struct dp_kernel *k);
/* Free the loader but leave programs attached and state pinned for the next kernel_open(). */
void kernel_release(struct dp_kernel *k);

/* The ring buffer's epoll-able fd (readable when events are pending). */
int kernel_fd(const struct dp_kernel *k);
/* Deliver every pending event to fn; the number delivered or -errno. Never blocks. */
int kernel_consume(struct dp_kernel *k);
/* Events the kernel could not queue because the ring buffer was full, since the maps were
 * created (an adopting kernel_open() keeps counting). */
uint64_t kernel_lost_events(const struct dp_kernel *k);
/* The TCP connection of a session whose socket has this cookie, from its connect() until it
 * closes: where it really goes, whatever the process says. 0, or -ENOENT (none: not a TCP
 * socket connected in a session, already closed, or pushed out of the map by 16384 newer
 * ones) or -errno. */
int kernel_conn_lookup(const struct dp_kernel *k, uint64_t cookie, struct dp_conn *out);

/* Register the session cgroup `cgid` or replace its policy: n allow rules, enforce or only
 * log blocks. New rules apply before old ones are dropped, so a replacement never blocks
 * what both the old and the new policy allow. Counters survive a replacement.
 * Register a session before its first process enters the cgroup: an unregistered cgroup is
 * neither checked nor logged. On failure the session may hold some of the new rules: treat
 * it as not set up. 0, -EINVAL (bad rule), -E2BIG (maps full) or -errno. */
int kernel_session_set(struct dp_kernel *k, uint64_t cgid, bool enforce,
		       const struct dp_kallow *allow, size_t n) DP_WUR;
/* Forget a session: its processes are no longer checked. 0 or -ENOENT. */
int kernel_session_remove(struct dp_kernel *k, uint64_t cgid);
/* The Unix socket addresses every session may connect or send to: absolute paths, "@name"
 * for abstract ones, as written (the kernel hook sees the address the process passed, not
 * the file it names). Replaces the previous set. 0, -EINVAL or -errno. */
int kernel_unix_allow_set(struct dp_kernel *k, const char *const *addrs, size_t n) DP_WUR;
/* The session's counters. 0 or -ENOENT. */
int kernel_session_stats(const struct dp_kernel *k, uint64_t cgid, struct dp_kernel_stats *out);
/* Registered sessions (e.g. adopted after a restart): fills up to max ids, returns how many
 * there are in total (may exceed max), or -errno. */
int kernel_session_list(const struct dp_kernel *k, uint64_t *cgids, size_t max);

/* Where the proxy listens (proxy_listen: a loopback IPv4 address; IPv6 connects go to
 * [::1] on the same port) and whether it is on ("proxy": "off": unclaimed connects to a
 * route's destination are refused instead). Applies to every session at once; call it at
 * start and on every reload. 0 or -EINVAL (proxy_listen not IPv4 loopback) / -errno. */
int kernel_proxy_configure(struct dp_kernel *k, const struct dp_config *c) DP_WUR;

/* The original destination of a connection the kernel sent to the proxy, found by the
 * agent side's address: what getpeername() says on the proxy's accepted socket (v4-mapped
 * addresses count as IPv4). 0, -ENOENT (not a redirected connection, or it is closed
 * already), -EINVAL (not AF_INET/AF_INET6) or -errno. */
int kernel_proxied_lookup(struct dp_kernel *k, const struct sockaddr *agent_local, socklen_t len,
			  struct dp_proxied *out) DP_WUR;

/* Can the kernel layer run here? 0, or -errno with err saying why not (not root, no BTF, no
 * cgroup2, cgroup socket programs or ring buffers unsupported). */
int kernel_available(struct dp_err *err);

/* Names for the audit log (design: Audit log, `connect`): "inet", "inet6", "unix",
 * "packet" or "other"; "tcp", "udp" or "other"; "allow" / "block"; and the event type
 * ("connect", "sendmsg", "socket_refused", "close", "unix_connect", "unix_sendmsg", "unknown"). */
const char *kernel_family_name(unsigned int family);
const char *kernel_protocol_name(unsigned int protocol);
const char *kernel_verdict_name(unsigned int verdict);
const char *kernel_event_type_name(unsigned int type);
/* The event's destination address as text (inet_ntop); "" for events without one.
 * 0 or -ENOSPC (out needs 46 bytes for any address). */
int kernel_event_addr(const struct dp_event *ev, char *out, size_t outsz);

/* An event timestamp (CLOCK_BOOTTIME ns) as wall-clock time. */
struct timespec kernel_event_realtime(uint64_t ts_ns);

#endif
