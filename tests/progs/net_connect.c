// SPDX-License-Identifier: MIT
/*
 * Test client: connect() through the raw system call, as a program that bypasses libc (and
 * any LD_PRELOAD shim) would. TCP by default, --udp for a connected UDP socket, --unix for
 * an AF_UNIX path (leading '@' = abstract name).
 *   net_connect [--udp] [--count N] ADDR PORT      exit 0 or the errno of the last attempt
 *   net_connect --unix PATH
 * --count repeats socket/connect/close N times (a burst) and prints the tally.
 * --claim first claims the socket as the shim does (DP_SO_CLAIM) and prints "claim: ok" or
 * "claim: errno=N"; --peer, once connected, prints "peer ADDR PORT" (getpeername), "dest N"
 * (the DP_SO_DEST answer, -errno if refused) and waits for one byte from the peer before it
 * closes, so the other side can look at the live connection.
 */
#include <deputy/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "netaddr.h"

static bool opt_claim, opt_peer;

static void show_peer(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char addr[INET6_ADDRSTRLEN] = "?", byte;
	uint32_t dest = 0;
	socklen_t dl = sizeof(dest);
	long rule;
	int port = -1;

	if (syscall(SYS_getpeername, fd, (struct sockaddr *)&ss, &len) == 0) {
		const void *a = ss.ss_family == AF_INET
				    ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
				    : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;

		inet_ntop(ss.ss_family, a, addr, sizeof(addr));
		port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						     : ((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	rule = syscall(SYS_getsockopt, fd, DP_SOL_DEPUTY, DP_SO_DEST, &dest, &dl) == 0
		   ? (long)dest
		   : -(long)errno;
	printf("peer %s %d\ndest %ld\n", addr, port, rule);
	fflush(stdout);
	(void)!read(fd, &byte, 1);
}

static int connect_once(int family, int type, const struct sockaddr *sa, socklen_t len)
{
	long fd = syscall(SYS_socket, family, type | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd < 0)
		return errno;
	if (opt_claim) {
		if (syscall(SYS_setsockopt, fd, DP_SOL_DEPUTY, DP_SO_CLAIM, NULL, 0) == 0)
			printf("claim: ok\n");
		else
			printf("claim: errno=%d\n", errno);
	}
	if (syscall(SYS_connect, fd, sa, len) != 0)
		err = errno;
	else if (opt_peer)
		show_peer((int)fd);
	close((int)fd);
	return err;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int type = SOCK_STREAM, i = 1, err = 0;
	long count = 1, ok = 0, eperm = 0, other = 0;

	if (argc == 3 && strcmp(argv[1], "--unix") == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)&ss;
		size_t n = strlen(argv[2]);

		if (n == 0 || n >= sizeof(un->sun_path))
			return NETADDR_USAGE;
		memset(&ss, 0, sizeof(ss));
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, argv[2], n);
		if (un->sun_path[0] == '@')
			un->sun_path[0] = '\0';
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return netaddr_report(
		    "connect", connect_once(AF_UNIX, SOCK_STREAM, (struct sockaddr *)&ss, len));
	}
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--udp") == 0)
			type = SOCK_DGRAM;
		else if (strcmp(argv[i], "--claim") == 0)
			opt_claim = true;
		else if (strcmp(argv[i], "--peer") == 0)
			opt_peer = true;
		else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
			count = strtol(argv[++i], NULL, 10);
		else
			return NETADDR_USAGE;
	}
	if (argc - i != 2 || count < 1 || netaddr_parse(argv[i], argv[i + 1], &ss, &len) != 0) {
		fprintf(stderr,
			"usage: net_connect [--udp] [--claim] [--peer] [--count N] ADDR PORT | "
			"--unix PATH\n");
		return NETADDR_USAGE;
	}
	for (long n = 0; n < count; n++) {
		err = connect_once(ss.ss_family, type, (struct sockaddr *)&ss, len);
		if (err == 0)
			ok++;
		else if (err == EPERM)
			eperm++;
		else
			other++;
	}
	if (count > 1)
		printf("attempts=%ld ok=%ld eperm=%ld other=%ld\n", count, ok, eperm, other);
	return netaddr_report("connect", err);
}
