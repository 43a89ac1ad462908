/* SPDX-License-Identifier: MIT */
/*
 * Shared bits of the network test clients: parse "ADDR PORT" into a sockaddr (IPv4, IPv6,
 * v4-mapped IPv6 as written), and report a result the same way everywhere: one line
 * "<what>: ok" or "<what>: errno=N (text)", exit status 0 or the errno. Usage errors exit
 * NETADDR_USAGE, which no errno the tests expect can be confused with.
 */
#ifndef DEPUTY_TEST_NETADDR_H
#define DEPUTY_TEST_NETADDR_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define NETADDR_USAGE 200

static inline int netaddr_parse(const char *addr, const char *port, struct sockaddr_storage *ss,
				socklen_t *len)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	char *end;
	long p = strtol(port, &end, 10);

	if (*end || p < 0 || p > 65535)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)p);
		*len = sizeof(*in4);
		return 0;
	}
	if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		*len = sizeof(*in6);
		return 0;
	}
	return -1;
}

/* err: 0 or a positive errno. Returns the exit status. */
static inline int netaddr_report(const char *what, int err)
{
	if (err == 0)
		printf("%s: ok\n", what);
	else
		printf("%s: errno=%d (%s)\n", what, err, strerror(err));
	fflush(stdout);
	return err > 0 && err < NETADDR_USAGE ? err : (err ? NETADDR_USAGE + 1 : 0);
}

#endif
