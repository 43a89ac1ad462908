// SPDX-License-Identifier: MIT
/*
 * kernel_names: kernel events in the audit log's words (design: Audit log, `connect`) and
 * kernel time as wall-clock time.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <time.h>

#include "kernel.h"

struct timespec kernel_event_realtime(uint64_t ts_ns)
{
	struct timespec boot, real, out;
	int64_t ns;

	clock_gettime(CLOCK_BOOTTIME, &boot);
	clock_gettime(CLOCK_REALTIME, &real);
	ns = (int64_t)real.tv_sec * 1000000000 + real.tv_nsec -
	     ((int64_t)boot.tv_sec * 1000000000 + boot.tv_nsec - (int64_t)ts_ns);
	out.tv_sec = ns / 1000000000;
	out.tv_nsec = ns % 1000000000;
	return out;
}

/* ---- naming, for the audit log ------------------------------------------------------- */

/* Each value's name spelled out in a switch, as config_action_name does: a lookup table
 * would need the values dense and in range, and these come from the kernel. */

const char *kernel_family_name(unsigned int family)
{
	switch (family) {
	case AF_INET:
		return "inet";
	case AF_INET6:
		return "inet6";
	case AF_UNIX:
		return "unix";
	case AF_PACKET:
		return "packet";
	}
	return "other";
}

const char *kernel_protocol_name(unsigned int protocol)
{
	return protocol == DP_EV_PROTO_TCP ? "tcp" : protocol == DP_EV_PROTO_UDP ? "udp" : "other";
}

const char *kernel_verdict_name(unsigned int verdict)
{
	return verdict == DP_EV_ALLOW ? "allow" : "block";
}

const char *kernel_event_type_name(unsigned int type)
{
	switch (type) {
	case DP_EV_CONNECT:
		return "connect";
	case DP_EV_SENDMSG:
		return "sendmsg";
	case DP_EV_SOCK_REFUSED:
		return "socket_refused";
	case DP_EV_CLOSE:
		return "close";
	case DP_EV_UNIX_CONNECT:
		return "unix_connect";
	}
	return "unknown";
}

int kernel_event_addr(const struct dp_event *ev, char *out, size_t outsz)
{
	if (!outsz)
		return -ENOSPC;
	out[0] = '\0';
	if (ev->family != AF_INET && ev->family != AF_INET6)
		return 0;
	if (outsz > INT_MAX || !inet_ntop(ev->family, ev->addr, out, (socklen_t)outsz)) {
		out[0] = '\0';
		return -ENOSPC;
	}
	return 0;
}
