// SPDX-License-Identifier: MIT
/*
 * server: deputyd's event loop: the listening socket, signals, the tick, the kernel's ring
 * buffer and the connections (conn.c), whose frames go to dispatch.c.
 *
 * The signing key's presign pool (presign.h) is refilled by its own worker thread, so the
 * loop signs each token with a precomputed nonce (the online part only) and never spends a
 * turn on nonce work; the worker wakes when the pool drops below PRESIGN_LOW.
 */
#include "deputyd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "dispatch.h"
#include "hostwatch.h"
#include "kernel.h"
#include "notify.h"
#include "proxyd.h"
#include "keyfetch.h"
#include "reload.h"
#include "retention.h"

#define TICK_MS 200
/* A burst of this many tokens is signed from precomputed nonces (~150 bytes a pair). */
#define PRESIGN_CAP 4096
/* Below this the worker refills: a quarter of the pool is a burst's headroom while the
 * worker catches up, and the worker sleeps through light use instead of waking per token. */
#define PRESIGN_LOW (PRESIGN_CAP * 3 / 4)

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

static void server_tick(struct deputyd *d, int64_t *last_policy)
{
	uint64_t ticks;

	if (read(d->timer_fd, &ticks, sizeof(ticks)) < 0) {
		/* nothing to do: the next tick comes anyway */
	}
	conn_accept_pause(d, false);
	session_end_tick(d);
	session_tick(d);
	hostwatch_tick(d);
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
	case EP_WAKE: {
		uint64_t n;

		if (read(d->wake_fd, &n, sizeof(n)) < 0) {
			/* nothing to do: the results are collected either way */
		}
		policy_collect(d);
		if (keyfetch_collect(d))
			conn_resume_waiting(d, dispatch_frame);
		return;
	}
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
	sigset_t mask;
	int rc;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	d->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d->signal_fd < 0 || d->timer_fd < 0 || d->epfd < 0 || d->wake_fd < 0)
		return -errno;
	timerfd_settime(d->timer_fd, 0, &its, NULL);
	if (epoll_add_tag(d, d->listen_fd, EP_LISTEN) ||
	    epoll_add_tag(d, d->signal_fd, EP_SIGNAL) || epoll_add_tag(d, d->timer_fd, EP_TIMER) ||
	    epoll_add_tag(d, d->wake_fd, EP_WAKE))
		return -errno;
	/* From here on no request waits for the network: issuers' keys and route hosts are
	 * fetched and resolved in threads (keyfetch.c, policy.c). */
	trust_defer_fetches(d->trust);
	if (d->kernel && epoll_add_tag(d, kernel_fd(d->kernel), EP_KERNEL))
		return -errno;

	session_on_gone(d, conn_session_gone);
	proxyd_start(d, EP_PROXY);
	if (dp_key_presign_enable(d->key, PRESIGN_CAP) != 0)
		pr_info("signing key is not ES256: no presigning, every token signed in full");
	else if ((rc = dp_key_presign_start(d->key, PRESIGN_LOW)) != 0)
		pr_warn("presign worker: %s; every token signed in full", strerror(-rc));

	while (!d->stopping) {
		struct epoll_event evs[64];
		int n = epoll_wait(d->epfd, evs, 64, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			pr_warn("epoll_wait: %s", strerror(errno));
			return -errno;
		}
		audit_log_turn_begin();
		for (int i = 0; i < n; i++)
			server_event(d, &evs[i], &last_policy);
		/* Kernel events are drained before anything a client asked is finished; then the
		 * turn's records go to the logs, one write per log, and only then its replies. */
		if (d->kernel)
			kernel_consume(d->kernel);
		keyfetch_start(d);
		do
			audit_log_flush_all();
		while (conn_send_held(d, dispatch_frame));
		conn_reap(d);
	}
	notify_send("STOPPING=1");
	pr_info("shutting down: closing %zu open sessions", d->n_sessions);
	session_close_all(d);
	proxyd_stop(d);
	dp_key_presign_stop(d->key);
	{
		uint64_t hits, misses;
		size_t avail;

		dp_key_presign_stats(d->key, &avail, &hits, &misses);
		pr_info("presign pool: %llu hits, %llu misses, %zu pairs left",
			(unsigned long long)hits, (unsigned long long)misses, avail);
	}
	conn_close_all(d);
	/* A thread that outlived its wait may still write to the eventfd: then it stays open
	 * (deputyd is exiting), rather than its number go to another file. */
	if (keyfetch_stop(d) & policy_stop(d))
		close(d->wake_fd);
	close(d->listen_fd);
	unlink(d->cfg->socket);
	return 0;
}