// SPDX-License-Identifier: MIT
/*
 * server: deputyd's event loop: the listening socket, signals, the tick, the kernel's ring
 * buffer and the connections (conn.c), whose frames go to dispatch.c.
 *
 * Idle time goes to the signing key's presign pool (jws.h): once no event has arrived for
 * PRESIGN_IDLE_US, the loop computes nonce pairs one at a time, looking for events between
 * each, so a request arriving meanwhile waits for at most one pair's work.
 */
#include "deputyd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "dispatch.h"
#include "kernel.h"
#include "notify.h"
#include "proxyd.h"
#include "reload.h"
#include "retention.h"

#define TICK_MS 200
/* A burst of this many tokens is signed from precomputed nonces (~150 bytes a pair). */
#define PRESIGN_CAP 4096
#define PRESIGN_IDLE_US 200

/* ---- setup and loop ------------------------------------------------------------------ */

int server_listen(struct deputyd *d)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	const char *path = d->cfg->socket;
	char dir[PATH_MAX];
	char *slash;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		pr_warn("socket: path too long: %s", path);
		return -ENAMETOOLONG;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (dp_mkdir_p(dir, 0755) != 0) {
			pr_warn("socket: cannot create %s: %s", dir, strerror(errno));
			return -errno;
		}
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Accepted sockets inherit it, so even bytes sent before accept() name their writer
	 * (conn.c checks each read against the process that connected). */
	if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &(int){1}, sizeof(int)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
		int e = errno;

		pr_warn("socket: %s: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	/* Anyone may connect: deputyd authenticates each request by grant and by the peer's
	 * uid and cgroup, never by who can reach the socket. */
	chmod(path, 0666);
	d->listen_fd = fd;
	return 0;
}

static int epoll_add_tag(struct deputyd *d, int fd, uintptr_t tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

	return epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* epoll_wait with a microsecond timeout (-1: none); epoll_pwait2 is Linux 5.11+, older
 * kernels get the millisecond rounded up. */
static int server_wait(struct deputyd *d, struct epoll_event *evs, int max, long timeout_us)
{
	static bool no_pwait2;
	struct timespec ts = {timeout_us / 1000000, (timeout_us % 1000000) * 1000};
	int n;

	if (timeout_us < 0)
		return epoll_wait(d->epfd, evs, max, -1);
	if (!no_pwait2) {
		n = epoll_pwait2(d->epfd, evs, max, &ts, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		no_pwait2 = true;
	}
	return epoll_wait(d->epfd, evs, max, (int)((timeout_us + 999) / 1000));
}

static void server_tick(struct deputyd *d, int64_t *last_policy)
{
	uint64_t ticks;

	if (read(d->timer_fd, &ticks, sizeof(ticks)) < 0) {
		/* nothing to do: the next tick comes anyway */
	}
	conn_accept_pause(d, false);
	session_tick(d);
	proxyd_tick(d);
	retention_tick(d);
	if (dp_now() - *last_policy >= d->cfg->resolve_interval) {
		*last_policy = dp_now();
		policy_refresh(d);
	}
}

static void server_event(struct deputyd *d, const struct epoll_event *ev, int64_t *last_policy)
{
	uint64_t tag = ev->data.u64;
	struct signalfd_siginfo si;
	struct conn *c;

	switch (tag) {
	case EP_LISTEN:
		conn_accept(d);
		return;
	case EP_SIGNAL:
		while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGHUP) {
				notify_reloading();
				reload_config(d);
				notify_send("READY=1");
			} else {
				d->stopping = true;
			}
		}
		return;
	case EP_TIMER:
		server_tick(d, last_policy);
		return;
	case EP_KERNEL:
		kernel_consume(d->kernel);
		return;
	case EP_PROXY:
		proxyd_event(d);
		return;
	}
	c = ev->data.ptr;
	if (c->dead)
		return;
	if (ev->events & EPOLLOUT)
		conn_writable(d, c, dispatch_frame);
	if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_readable(d, c, dispatch_frame);
}

int server_run(struct deputyd *d)
{
	struct itimerspec its = {.it_interval = {0, TICK_MS * 1000000L},
				 .it_value = {0, TICK_MS * 1000000L}};
	int64_t last_policy = dp_now();
	bool refilling = false;
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->signal_fd < 0 || d->timer_fd < 0 || d->epfd < 0)
		return -errno;
	timerfd_settime(d->timer_fd, 0, &its, NULL);
	if (epoll_add_tag(d, d->listen_fd, EP_LISTEN) ||
	    epoll_add_tag(d, d->signal_fd, EP_SIGNAL) || epoll_add_tag(d, d->timer_fd, EP_TIMER))
		return -errno;
	if (d->kernel && epoll_add_tag(d, kernel_fd(d->kernel), EP_KERNEL))
		return -errno;

	session_on_gone(d, conn_session_gone);
	proxyd_start(d, EP_PROXY);
	if (dp_key_presign_enable(d->key, PRESIGN_CAP) != 0)
		pr_info("signing key is not ES256: no presigning, every token signed in full");

	while (!d->stopping) {
		struct epoll_event evs[64];
		bool want = dp_key_presign_wanted(d->key);
		int n = server_wait(d, evs, 64, !want ? -1 : refilling ? 0 : PRESIGN_IDLE_US);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			pr_warn("epoll_wait: %s", strerror(errno));
			return -errno;
		}
		if (n == 0) {
			refilling = want && dp_key_presign_fill(d->key, 1) == 1;
			continue;
		}
		refilling = false;
		for (int i = 0; i < n; i++)
			server_event(d, &evs[i], &last_policy);
		/* Kernel events are drained before anything a client asked is finished. */
		if (d->kernel)
			kernel_consume(d->kernel);
		conn_reap(d);
	}
	notify_send("STOPPING=1");
	pr_info("shutting down: closing %zu open sessions", d->n_sessions);
	session_close_all(d);
	proxyd_stop(d);
	{
		uint64_t hits, misses;
		size_t avail;

		dp_key_presign_stats(d->key, &avail, &hits, &misses);
		pr_info("presign pool: %llu hits, %llu misses, %zu pairs left",
			(unsigned long long)hits, (unsigned long long)misses, avail);
	}
	conn_close_all(d);
	close(d->listen_fd);
	unlink(d->cfg->socket);
	return 0;
}