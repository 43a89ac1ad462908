// SPDX-License-Identifier: MIT
/*
 * Test client: TCP Fast Open, sendto(MSG_FASTOPEN) on an unconnected TCP socket, which
 * connects without calling connect().
 *   net_tfo ADDR PORT                    exit 0 or the errno of the sendto
 */
#include <unistd.h>

#include "netaddr.h"

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, err;

	if (argc != 3 || netaddr_parse(argv[1], argv[2], &ss, &len) != 0) {
		fprintf(stderr, "usage: net_tfo ADDR PORT\n");
		return NETADDR_USAGE;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return netaddr_report("socket", errno);
	err = sendto(fd, "deputy", 6, MSG_FASTOPEN, (struct sockaddr *)&ss, len) < 0 ? errno : 0;
	close(fd);
	return netaddr_report("sendto", err);
}
