// SPDX-License-Identifier: MIT
/*
 * deputy-proxy: mediates a session's connections that the shim cannot (design: layer 4).
 * deputyd starts it as the unprivileged user deputy-proxy with no capabilities, and hands it
 * what it cannot get itself: the listening sockets (proxy_listen and [::1] at the same port,
 * bound by deputyd, which keeps no copy), the socketpair to deputyd, and upstream_ca_file. It holds
 * no signing key and decides nothing: every request goes to deputyd, which attributes each
 * connection from kernel data (see relay.c).
 *
 *   deputy-proxy --chan FD --listen FD [--listen FD] [--upstream-ca FD] [-v]
 */
#include <errno.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chan.h"
#include "io.h"
#include "relay.h"
#include "upstream.h"
#include "util.h"

/* Each connection holds a thread and ~200 KiB: the cap bounds the proxy's memory whatever
 * the sessions do. A connection over it is reset, never passed. */
#define PROXY_MAX_CONNS 256
#define THREAD_STACK (256 * 1024)
#define CA_PEM_MAX (4u << 20)

static atomic_int n_conns;

static void *conn_thread(void *arg)
{
	relay_conn((int)(intptr_t)arg);
	atomic_fetch_sub(&n_conns, 1);
	return NULL;
}

static void serve(int *lfd, int n)
{
	pthread_attr_t attr;
	struct pollfd pfd[2];

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, THREAD_STACK);
	for (int i = 0; i < n; i++)
		pfd[i] = (struct pollfd){lfd[i], POLLIN, 0};
	for (;;) {
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_warn("poll: %s", strerror(errno));
			exit(1);
		}
		for (int i = 0; i < n; i++) {
			pthread_t t;
			int fd;

			if (!(pfd[i].revents & POLLIN))
				continue;
			fd = accept4(lfd[i], NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			if (atomic_fetch_add(&n_conns, 1) >= PROXY_MAX_CONNS) {
				atomic_fetch_sub(&n_conns, 1);
				pxio_reset(fd);
				continue;
			}
			if (pthread_create(&t, &attr, conn_thread, (void *)(intptr_t)fd) != 0) {
				atomic_fetch_sub(&n_conns, 1);
				pxio_reset(fd);
			}
		}
	}
}

static char *read_fd(int fd)
{
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap + 1);

	while (buf) {
		ssize_t r = read(fd, buf + len, cap - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len == cap) {
			char *nb = cap < CA_PEM_MAX ? realloc(buf, cap * 2 + 1) : NULL;

			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (buf)
		buf[len] = '\0';
	close(fd);
	return buf;
}

static int fd_arg(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	return *end || v < 0 || v > 65535 ? -1 : (int)v;
}

int main(int argc, char **argv)
{
	int lfd[2], nl = 0, chan = -1, ca = -1;
	enum dp_log_level lvl = getenv("DEPUTY_DEBUG") ? DP_LOG_DEBUG : DP_LOG_INFO;
	char *ca_pem = NULL;
	struct dp_err err;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";

		if (strcmp(a, "-v") == 0) {
			lvl = DP_LOG_DEBUG;
			continue;
		}
		if (strcmp(a, "--chan") == 0)
			chan = fd_arg(v);
		else if (strcmp(a, "--listen") == 0 && nl < 2)
			lfd[nl++] = fd_arg(v);
		else if (strcmp(a, "--upstream-ca") == 0)
			ca = fd_arg(v);
		else {
			fprintf(stderr, "usage: deputy-proxy --chan FD --listen FD [--listen FD] "
					"[--upstream-ca FD] [-v]\n(started by deputyd)\n");
			return 2;
		}
		i++;
	}
	dp_log_init("deputy-proxy", lvl);
	if (chan < 0 || nl == 0 || lfd[0] < 0 || (nl == 2 && lfd[1] < 0)) {
		pr_warn("started without its sockets: deputyd starts the proxy");
		return 2;
	}
	/* deputyd's end is the only way to mediate anything: die with it. The name is set
	 * here since an exec by fd may name the process after the fd. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	prctl(PR_SET_NAME, "deputy-proxy");
	if (getppid() == 1)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	if (geteuid() == 0)
		pr_warn("running as root: deputyd starts the proxy as the user deputy-proxy");
	if (ca >= 0 && !(ca_pem = read_fd(ca))) {
		pr_warn("cannot read upstream_ca_file");
		return 1;
	}
	if (up_init(ca_pem, &err) != 0) {
		pr_warn("%s", err.msg);
		return 1;
	}
	free(ca_pem);
	chan_init(chan);
	pr_debug("serving %d listening sockets", nl);
	serve(lfd, nl);
	return 0;
}
