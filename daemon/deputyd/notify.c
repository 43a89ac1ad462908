// SPDX-License-Identifier: MIT
/*
 * notify: the service manager's readiness protocol (sd_notify(3)), spoken without
 * libsystemd: one datagram of newline-separated KEY=VALUE lines to the AF_UNIX datagram
 * socket $NOTIFY_SOCKET names (a path, or '@' for the abstract namespace). systemd learns
 * the sender from the kernel's SCM_CREDENTIALS, so nothing else is needed. A failed send is
 * reported to the caller and never stops deputyd: the manager's view is not the policy.
 */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len; /* 0: no manager to tell */

int notify_init(struct dp_err *err)
{
	const char *path = getenv("NOTIFY_SOCKET");
	size_t n;

	notify_addr_len = 0;
	if (!path || !*path)
		return 0;
	n = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || n >= sizeof(notify_addr.sun_path)) {
		dp_err_set(err, "NOTIFY_SOCKET: not a Unix socket address: %s", path);
		unsetenv("NOTIFY_SOCKET");
		return -EINVAL;
	}
	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, path, n);
	if (path[0] == '@')
		notify_addr.sun_path[0] = '\0'; /* abstract: the length, not a NUL, ends it */
	notify_addr_len =
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/' ? 1 : 0));
	unsetenv("NOTIFY_SOCKET");
	return 0;
}

int notify_send(const char *state)
{
	ssize_t n;
	int fd, e;

	if (!notify_addr_len)
		return 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
		   notify_addr_len);
	e = n < 0 ? -errno : 0;
	close(fd);
	return e;
}

int notify_reloading(void)
{
	struct timespec ts;
	char msg[64];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ull +
		     (unsigned long long)ts.tv_nsec / 1000);
	return notify_send(msg);
}
