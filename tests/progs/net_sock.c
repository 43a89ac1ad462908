// SPDX-License-Identifier: MIT
/*
 * Test client: opens one socket of a kind that would carry traffic around the connect and
 * sendmsg hooks (or, for "tcp", "udp", "netlink", one that must stay possible).
 *   net_sock raw|raw6|packet|ping|sctp|tcp|udp|netlink     exit 0 or the socket() errno
 */
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <unistd.h>

#include "netaddr.h"

static const struct {
	const char *name;
	int family, type, protocol;
} kinds[] = {
    {"raw", AF_INET, SOCK_RAW, IPPROTO_ICMP},
    {"raw6", AF_INET6, SOCK_RAW, IPPROTO_ICMPV6},
    {"packet", AF_PACKET, SOCK_RAW, 0}, /* protocol 0: no traffic, only the socket */
    {"ping", AF_INET, SOCK_DGRAM, IPPROTO_ICMP},
    {"sctp", AF_INET, SOCK_STREAM, IPPROTO_SCTP},
    {"tcp", AF_INET, SOCK_STREAM, 0},
    {"udp", AF_INET6, SOCK_DGRAM, 0},
    {"netlink", AF_NETLINK, SOCK_RAW, NETLINK_ROUTE},
};

int main(int argc, char **argv)
{
	for (size_t i = 0; argc == 2 && i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		int fd;

		if (strcmp(argv[1], kinds[i].name) != 0)
			continue;
		fd = socket(kinds[i].family, kinds[i].type | SOCK_CLOEXEC, kinds[i].protocol);
		if (fd < 0)
			return netaddr_report("socket", errno);
		close(fd);
		return netaddr_report("socket", 0);
	}
	fprintf(stderr, "usage: net_sock raw|raw6|packet|ping|sctp|tcp|udp|netlink\n");
	return NETADDR_USAGE;
}
