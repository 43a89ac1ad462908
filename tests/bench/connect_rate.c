// SPDX-License-Identifier: MIT
/*
 * connect_rate: what the kernel layer costs a connect(). A TCP listener on loopback, and a
 * client that opens and closes connections to it as fast as it can (or at a set rate) for a
 * while. The driver runs the listener outside any session and the client once inside a
 * session (cgroup hooks attached, every connection logged) and once outside.
 *
 *   connect_rate -l                          listen on 127.0.0.1:0, print "port N", accept
 *                                            and close until killed
 *   connect_rate [-d MS] [-r PER_SEC] PORT   connect to 127.0.0.1:PORT in a loop
 *
 * The client closes with SO_LINGER 0 (a reset), so no TIME_WAIT socket is left behind and
 * the ephemeral ports never run out at high rates. Prints one JSON line: connects, errors,
 * eperm, secs, per_s, target_per_s.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

static int cr_listen(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		perror("connect_rate: listen");
		return 1;
	}
	printf("port %d\n", ntohs(sa.sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

		if (c >= 0)
			close(c);
		else if (errno != EINTR && errno != ECONNABORTED && errno != EMFILE)
			return 1;
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct linger lg = {1, 0};
	long ms = 2000, rate = 0, ok = 0, errors = 0, eperm = 0;
	uint64_t start, end, now;
	int o;

	while ((o = getopt(argc, argv, "ld:r:")) != -1) {
		switch (o) {
		case 'l':
			return cr_listen();
		case 'd':
			ms = atol(optarg);
			break;
		case 'r':
			rate = atol(optarg);
			break;
		default:
			return 2;
		}
	}
	if (optind + 1 != argc || ms < 1 || rate < 0) {
		fprintf(stderr,
			"usage: connect_rate -l | connect_rate [-d MS] [-r PER_SEC] PORT\n");
		return 2;
	}
	sa.sin_port = htons((uint16_t)atoi(argv[optind]));
	start = bench_now_ns();
	end = start + (uint64_t)ms * 1000000ull;
	for (long i = 0;; i++) {
		int fd;

		now = bench_now_ns();
		if (now >= end)
			break;
		if (rate) {
			uint64_t due = start + (uint64_t)i * 1000000000ull / (uint64_t)rate;

			if (due > now) {
				struct timespec ts = {0, (long)(due - now)};

				if (due - now > 20000)
					nanosleep(&ts, NULL);
				else
					while (bench_now_ns() < due)
						;
			}
		}
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			errors++;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			ok++;
		else if (errno == EPERM)
			eperm++;
		else
			errors++;
		close(fd);
	}
	now = bench_now_ns();
	printf("{\"connects\":%ld,\"errors\":%ld,\"eperm\":%ld,\"secs\":%.3f,\"per_s\":%.1f,"
	       "\"target_per_s\":%ld}\n",
	       ok, errors, eperm, (double)(now - start) / 1e9,
	       (double)ok / ((double)(now - start) / 1e9), rate);
	return 0;
}
