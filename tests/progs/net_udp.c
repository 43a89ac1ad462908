// SPDX-License-Identifier: MIT
/*
 * Test client: unconnected UDP, sendto() with a destination per datagram (the sendmsg
 * hooks' case). --count sends N datagrams from one socket.
 *   net_udp [--count N] ADDR PORT        exit 0 or the errno of the last send
 */
#include <unistd.h>

#include "netaddr.h"

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len;
	long count = 1;
	int i = 1, fd, err = 0;

	if (i + 1 < argc && strcmp(argv[i], "--count") == 0) {
		count = strtol(argv[i + 1], NULL, 10);
		i += 2;
	}
	if (argc - i != 2 || count < 1 || netaddr_parse(argv[i], argv[i + 1], &ss, &len) != 0) {
		fprintf(stderr, "usage: net_udp [--count N] ADDR PORT\n");
		return NETADDR_USAGE;
	}
	fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return netaddr_report("socket", errno);
	for (long n = 0; n < count; n++)
		err = sendto(fd, "deputy", 6, 0, (struct sockaddr *)&ss, len) < 0 ? errno : 0;
	close(fd);
	return netaddr_report("sendto", err);
}
