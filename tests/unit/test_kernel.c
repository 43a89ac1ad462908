// SPDX-License-Identifier: MIT
/*
 * The kernel layer for real: loads bpf/deputy.bpf.c through daemon/deputyd/kernel.c onto a fresh
 * parent cgroup (deputy-test-<pid>), registers session cgroups with a policy that allows one
 * loopback port, and runs the test clients of tests/progs (raw syscalls, io_uring, UDP, TCP
 * Fast Open, raw sockets) and busybox inside and outside the sessions. Checks the syscall
 * results, the events, and that a blocked destination's listener never saw a connection.
 * Mediation: a stand-in proxy at proxy_listen receives the unclaimed connects to a route's
 * destination (v4, v6, v4-mapped), kernel_proxied_lookup finds the original destination and
 * session from its accepted socket, the agent's getpeername still says the original; the
 * claim, "proxy": "off", "tls": "opaque" and UDP to a route's destination.
 * One file for all of it (past the usual size): the cases share one costly setup (cgroups,
 * network namespace, loaded programs, listeners). Needs root and BPF: prints SKIP otherwise, FAIL
 * when DEPUTY_REQUIRE_BPF=1. Cleans up (children, BPF links and pins, cgroups) on every exit path.
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "cgroup.h"
#include "kernel.h"
#include "unit.h"

#define RUN_TIMEOUT_S 120

static char cg_parent[PATH_MAX], cg_s1[PATH_MAX], cg_s2[PATH_MAX], cg_sub[PATH_MAX],
    cg_other[PATH_MAX], cg_other_s[PATH_MAX + 8];
static uint64_t id_s1, id_s2;
static struct dp_kernel *kern;
static char progs[PATH_MAX];
static char unix_path[108];
static pid_t child = -1;
static bool own_netns;

static uint16_t port_a, port_b, port_p; /* a: allowed, b: not, p: the stand-in proxy */
static int lis_a4 = -1, lis_a6 = -1, lis_b4 = -1, lis_b6 = -1, udp_a = -1, udp_b = -1,
	   unix_lis = -1, lis_p4 = -1, lis_p6 = -1, udp_p = -1;

static struct dp_event *evs;
static size_t n_evs, cap_evs;

static void on_event(void *ctx, const struct dp_event *ev)
{
	if (n_evs == cap_evs) {
		size_t ncap = cap_evs ? cap_evs * 2 : 1024;
		struct dp_event *n = realloc(evs, ncap * sizeof(*n));

		if (!n)
			return; /* the count checks will notice */
		evs = n;
		cap_evs = ncap;
	}
	evs[n_evs++] = *ev;
}

/* snprintf that reports truncation (and so keeps gcc's -Wformat-truncation quiet). */
#define fmt_path(buf, ...) (snprintf((buf), sizeof(buf), __VA_ARGS__) >= (int)sizeof(buf))

/* ---- setup and cleanup --------------------------------------------------------------- */

static void cleanup(void)
{
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		child = -1;
	}
	if (kern) {
		kernel_close(kern);
		kern = NULL;
	}
	int fds[] = {lis_a4, lis_a6, lis_b4, lis_b6, udp_a, udp_b, unix_lis, lis_p4, lis_p6, udp_p};
	for (size_t i = 0; i < DP_ARRAY_SIZE(fds); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	lis_a4 = lis_a6 = lis_b4 = lis_b6 = udp_a = udp_b = unix_lis = -1;
	lis_p4 = lis_p6 = udp_p = -1;
	if (unix_path[0])
		unlink(unix_path);
	const char *dirs[] = {cg_sub, cg_s1, cg_s2, cg_other_s, cg_other, cg_parent};
	for (size_t i = 0; i < DP_ARRAY_SIZE(dirs); i++)
		if (dirs[i][0] && rmdir(dirs[i]) != 0 && errno != ENOENT)
			fprintf(stderr, "test_kernel: rmdir %s: %s\n", dirs[i], strerror(errno));
	/* Pins a failed case may have left (released, never closed). */
	if (cg_parent[0]) {
		const char *base = strrchr(cg_parent, '/') + 1;
		char pins[2][PATH_MAX];

		snprintf(pins[0], sizeof(pins[0]), "/sys/fs/bpf/deputy/%s", base);
		snprintf(pins[1], sizeof(pins[1]), "/sys/fs/bpf/deputy/%s_other", base);
		for (int i = 0; i < 2; i++) {
			DIR *d = opendir(pins[i]);
			struct dirent *de;

			while (d && (de = readdir(d)))
				if (de->d_name[0] != '.')
					unlinkat(dirfd(d), de->d_name, 0);
			if (d)
				closedir(d);
			rmdir(pins[i]);
		}
		rmdir("/sys/fs/bpf/deputy");
	}
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static int bind_port(int family, int type, uint16_t port)
{
	struct sockaddr_storage ss = {0};
	socklen_t len;
	int fd = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		a->sin6_addr = in6addr_loopback;
		len = sizeof(*a);
	}
	if (bind(fd, (struct sockaddr *)&ss, len) != 0 ||
	    (type == SOCK_STREAM && listen(fd, 4096) != 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &len) != 0)
		return 0;
	return ntohs(a.sin_port);
}

/* A port free on 127.0.0.1 and ::1 for TCP and UDP; the sockets listen on it. */
static int open_port(uint16_t *port, int *l4, int *l6, int *u4)
{
	for (int attempt = 0; attempt < 50; attempt++) {
		int a = bind_port(AF_INET, SOCK_STREAM, 0), b, c;
		uint16_t p = a >= 0 ? bound_port(a) : 0;

		if (!p)
			return -1;
		b = bind_port(AF_INET6, SOCK_STREAM, p);
		c = bind_port(AF_INET, SOCK_DGRAM, p);
		if (b >= 0 && c >= 0) {
			*port = p;
			*l4 = a;
			*l6 = b;
			*u4 = c;
			return 0;
		}
		close(a);
		if (b >= 0)
			close(b);
		if (c >= 0)
			close(c);
	}
	return -1;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		r = -errno;
	close(fd);
	return r;
}

static struct dp_kallow rule(int family, const char *addr, int prefix, uint16_t port)
{
	struct dp_kallow a = {.family = family, .prefix = prefix, .port = port};

	inet_pton(family, addr, a.addr);
	return a;
}

static int set_policy(uint64_t cgid, bool enforce, uint16_t port)
{
	struct dp_kallow allow[] = {
	    rule(AF_INET, "127.0.0.1", 32, port), rule(AF_INET6, "::1", 128, port),
	    rule(AF_INET, "192.0.2.0", 24, 0), /* a CIDR, any port, never used by a test */
	};

	return kernel_session_set(kern, cgid, enforce, allow, DP_ARRAY_SIZE(allow));
}

/* ---- running clients ----------------------------------------------------------------- */

static void consume(void)
{
	if (kern)
		kernel_consume(kern);
}

/* Runs argv (argv[0] under tests/progs unless absolute) in cgroup cg (NULL: ours); returns
 * its exit status (128+signal if killed), its pid in *pid. Drains events meanwhile. */
static int run_in(const char *cg, pid_t *pid, const char *const *argv)
{
	char path[PATH_MAX], procs[PATH_MAX + 16];
	time_t deadline = time(NULL) + RUN_TIMEOUT_S;
	int status = 0;

	if (argv[0][0] == '/' ? fmt_path(path, "%s", argv[0])
			      : fmt_path(path, "%s/%s", progs, argv[0]))
		return -1;
	if (cg && fmt_path(procs, "%s/cgroup.procs", cg))
		return -1;
	fflush(stdout);
	child = fork();
	if (child < 0)
		return -1;
	if (child == 0) {
		if (cg && write_file(procs, "0") != 0)
			_exit(250);
		int null = open("/dev/null", O_RDONLY);

		if (null >= 0)
			dup2(null, STDIN_FILENO);
		dup2(STDERR_FILENO, STDOUT_FILENO); /* keep the PASS/FAIL stream clean */
		execv(path, (char *const *)argv);
		_exit(251);
	}
	*pid = child;
	for (;;) {
		pid_t r = waitpid(child, &status, WNOHANG);

		consume();
		if (r == child)
			break;
		if (time(NULL) > deadline) {
			kill(child, SIGKILL);
			waitpid(child, &status, 0);
			break;
		}
		if (kern) {
			struct pollfd p = {.fd = kernel_fd(kern), .events = POLLIN};

			poll(&p, 1, 5);
		} else {
			usleep(5000);
		}
	}
	child = -1;
	consume();
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static const struct dp_event *find_ev(pid_t tgid, int type, size_t *count)
{
	const struct dp_event *first = NULL;
	size_t n = 0;

	for (size_t i = 0; i < n_evs; i++) {
		if (evs[i].tgid != (uint32_t)tgid || evs[i].type != type)
			continue;
		if (!first)
			first = &evs[i];
		n++;
	}
	if (count)
		*count = n;
	return first;
}

static size_t count_tgid(pid_t tgid)
{
	size_t n = 0;

	for (size_t i = 0; i < n_evs; i++)
		n += evs[i].tgid == (uint32_t)tgid;
	return n;
}

/* Connections (or datagrams) waiting on a socket, taken and counted. Loopback delivery may
 * finish in softirq after the client is gone, so wait a little while fewer than `want`
 * arrived; with want 0, count what is there now. */
static int drain_n(int fd, bool stream, int want)
{
	char buf[64];
	int n = 0, c;

	for (int waited = 0;; waited++) {
		while (stream ? (c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0
			      : recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0) {
			if (stream)
				close(c);
			n++;
		}
		if (n >= want || waited >= 200)
			return n;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		poll(&p, 1, 10);
	}
}

#define drain(fd) drain_n((fd), true, 1)
#define drain_udp(fd) drain_n((fd), false, 1)

static char pa[8], pb[8];

/* Checks an event's fixed parts; returns NULL if fine, else what is wrong. */
static const char *ev_wrong(const struct dp_event *e, uint64_t cgid, int verdict, int enforced,
			    int family, int proto, uint16_t port, const char *addr)
{
	uint8_t want[16] = {0};

	if (!e)
		return "no event";
	if (e->cgid != cgid)
		return "cgroup id";
	if (e->verdict != verdict)
		return "verdict";
	if (e->enforced != enforced)
		return "enforced";
	if (e->family != family)
		return "family";
	if (e->protocol != proto)
		return "protocol";
	if (e->port != port)
		return "port";
	inet_pton(family, addr, want);
	if (memcmp(e->addr, want, family == AF_INET ? 4 : 16) != 0)
		return "address";
	if (!e->ts_ns)
		return "timestamp";
	return NULL;
}

#define check_ev(e, ...)                                                                           \
	do {                                                                                       \
		const char *w_ = ev_wrong((e), __VA_ARGS__);                                       \
		if (w_)                                                                            \
			fail("event: %s", w_);                                                     \
	} while (0)

/* ---- cases ----------------------------------------------------------------------------- */

static void tcp4_blocked(void)
{
	const char *argv[] = {"net_connect", "127.0.0.1", pb, NULL};
	const struct dp_event *e;
	pid_t pid;

	check(run_in(cg_s1, &pid, argv) == EPERM);
	e = find_ev(pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP, port_b, "127.0.0.1");
	check(e->pid == (uint32_t)pid);
	check_str(e->comm, "net_connect");
	check(e->cookie != 0);
	check(drain_n(lis_b4, true, 0) == 0);
}

static void tcp4_allowed_and_closed(void)
{
	const char *argv[] = {"net_connect", "127.0.0.1", pa, NULL};
	const struct dp_event *e, *c = NULL;
	pid_t pid;

	check(run_in(cg_s1, &pid, argv) == 0);
	e = find_ev(pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_ALLOW, 0, AF_INET, DP_EV_PROTO_TCP, port_a, "127.0.0.1");
	check(drain(lis_a4) == 1);
	/* The close comes from the TCP state machine once the FIN is acked. */
	for (int i = 0; i < 300 && !c; i++) {
		consume();
		c = find_ev(pid, DP_EV_CLOSE, NULL);
		if (!c)
			usleep(10000);
	}
	e = find_ev(pid, DP_EV_CONNECT, NULL);
	check_ev(c, id_s1, DP_EV_ALLOW, 0, AF_INET, DP_EV_PROTO_TCP, port_a, "127.0.0.1");
	check(c->cookie == e->cookie);
	check(c->flags & DP_EVF_ESTABLISHED);
	check(c->ts_ns >= e->ts_ns && c->duration_ns == c->ts_ns - e->ts_ns);
	check_str(c->comm, "net_connect");
}

static void tcp6_loopback(void)
{
	const char *blocked[] = {"net_connect", "::1", pb, NULL};
	const char *allowed[] = {"net_connect", "::1", pa, NULL};
	pid_t pid;

	check(run_in(cg_s1, &pid, blocked) == EPERM);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_BLOCK, 1, AF_INET6,
		 DP_EV_PROTO_TCP, port_b, "::1");
	check(drain_n(lis_b6, true, 0) == 0);
	check(run_in(cg_s1, &pid, allowed) == 0);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_ALLOW, 0, AF_INET6,
		 DP_EV_PROTO_TCP, port_a, "::1");
	check(drain(lis_a6) == 1);
}

static void v4mapped_gets_ipv4_rules(void)
{
	const char *blocked[] = {"net_connect", "::ffff:127.0.0.1", pb, NULL};
	const char *allowed[] = {"net_connect", "::ffff:127.0.0.1", pa, NULL};
	const struct dp_event *e;
	pid_t pid;

	check(run_in(cg_s1, &pid, blocked) == EPERM);
	e = find_ev(pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP, port_b, "127.0.0.1");
	check(e->flags & DP_EVF_V4MAPPED);
	check(drain_n(lis_b4, true, 0) == 0);
	check(run_in(cg_s1, &pid, allowed) == 0);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_ALLOW, 0, AF_INET, DP_EV_PROTO_TCP,
		 port_a, "127.0.0.1");
	check(drain(lis_a4) == 1);
}

static void io_uring_connect(void)
{
	const char *blocked[] = {"net_uring", "127.0.0.1", pb, NULL};
	const char *async_blocked[] = {"net_uring", "--async", "127.0.0.1", pb, NULL};
	const char *allowed[] = {"net_uring", "127.0.0.1", pa, NULL};
	const struct dp_event *e;
	pid_t pid;

	check(run_in(cg_s1, &pid, blocked) == EPERM);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP,
		 port_b, "127.0.0.1");
	/* On an io-wq worker: the event must still name the process, not "iou-wrk-N". */
	check(run_in(cg_s1, &pid, async_blocked) == EPERM);
	e = find_ev(pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP, port_b, "127.0.0.1");
	check_str(e->comm, "net_uring");
	check(e->pid != e->tgid); /* it did run on the worker thread */
	check(drain_n(lis_b4, true, 0) == 0);
	check(run_in(cg_s1, &pid, allowed) == 0);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_ALLOW, 0, AF_INET, DP_EV_PROTO_TCP,
		 port_a, "127.0.0.1");
	check(drain(lis_a4) == 1);
}

static void udp_sendto(void)
{
	const char *blocked[] = {"net_udp", "127.0.0.1", pb, NULL};
	const char *blocked6[] = {"net_udp", "::1", pb, NULL};
	const char *mapped[] = {"net_udp", "::ffff:127.0.0.1", pb, NULL};
	const char *allowed[] = {"net_udp", "--count", "50", "127.0.0.1", pa, NULL};
	const char *connected[] = {"net_connect", "--udp", "127.0.0.1", pb, NULL};
	const struct dp_event *e;
	size_t n;
	pid_t pid;

	check(run_in(cg_s1, &pid, blocked) == EPERM);
	check_ev(find_ev(pid, DP_EV_SENDMSG, NULL), id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_UDP,
		 port_b, "127.0.0.1");
	check(run_in(cg_s1, &pid, blocked6) == EPERM);
	check_ev(find_ev(pid, DP_EV_SENDMSG, NULL), id_s1, DP_EV_BLOCK, 1, AF_INET6,
		 DP_EV_PROTO_UDP, port_b, "::1");
	check(run_in(cg_s1, &pid, mapped) == EPERM);
	e = find_ev(pid, DP_EV_SENDMSG, NULL);
	check_ev(e, id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_UDP, port_b, "127.0.0.1");
	check(drain_n(udp_b, false, 0) == 0);
	check(run_in(cg_s1, &pid, connected) == EPERM);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_UDP,
		 port_b, "127.0.0.1");
	/* 50 datagrams to one destination: all delivered, one event. */
	check(run_in(cg_s1, &pid, allowed) == 0);
	e = find_ev(pid, DP_EV_SENDMSG, &n);
	check_ev(e, id_s1, DP_EV_ALLOW, 0, AF_INET, DP_EV_PROTO_UDP, port_a, "127.0.0.1");
	check(n == 1);
	check(drain_n(udp_a, false, 50) == 50);
}

static void tcp_fast_open(void)
{
	const char *blocked[] = {"net_tfo", "127.0.0.1", pb, NULL};
	const char *allowed[] = {"net_tfo", "127.0.0.1", pa, NULL};
	pid_t pid;

	check(run_in(cg_s1, &pid, blocked) == EPERM);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP,
		 port_b, "127.0.0.1");
	check(drain_n(lis_b4, true, 0) == 0);
	check(run_in(cg_s1, &pid, allowed) == 0);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_ALLOW, 0, AF_INET, DP_EV_PROTO_TCP,
		 port_a, "127.0.0.1");
	check(drain(lis_a4) == 1);
}

static void bypass_sockets_refused(void)
{
	static const char *const refused[] = {"raw", "raw6", "ping", "sctp"};
	static const char *const fine[] = {"tcp", "udp", "netlink"};

	for (size_t i = 0; i < DP_ARRAY_SIZE(refused); i++) {
		const char *argv[] = {"net_sock", refused[i], NULL};
		const struct dp_event *e;
		pid_t pid;
		int st = run_in(cg_s1, &pid, argv);

		/* SCTP may simply not exist in this kernel, and ping sockets be closed by
		 * net.ipv4.ping_group_range (we open them in our own network namespace):
		 * then there is nothing to refuse. */
		if (strcmp(refused[i], "sctp") == 0 &&
		    (st == EPROTONOSUPPORT || st == ESOCKTNOSUPPORT))
			continue;
		if (strcmp(refused[i], "ping") == 0 && st == EACCES && !own_netns)
			continue;
		if (st != EPERM)
			fail("socket %s: status %d, want EPERM", refused[i], st);
		e = find_ev(pid, DP_EV_SOCK_REFUSED, NULL);
		if (!e || e->cgid != id_s1 || e->verdict != DP_EV_BLOCK || !e->enforced)
			fail("socket %s: no refusal event", refused[i]);
	}
	/* AF_PACKET is refused by killing the process (no cgroup hook covers it). */
	{
		const char *argv[] = {"net_sock", "packet", NULL};
		const struct dp_event *e;
		pid_t pid;
		int st = run_in(cg_s1, &pid, argv);

		if (st != 128 + SIGKILL)
			fail("socket packet: status %d, want killed", st);
		e = find_ev(pid, DP_EV_SOCK_REFUSED, NULL);
		if (!e || e->family != AF_PACKET || !e->enforced || !(e->flags & DP_EVF_KILLED))
			fail("socket packet: no refusal event");
	}
	for (size_t i = 0; i < DP_ARRAY_SIZE(fine); i++) {
		const char *argv[] = {"net_sock", fine[i], NULL};
		pid_t pid;

		if (run_in(cg_s1, &pid, argv) != 0)
			fail("socket %s refused", fine[i]);
		check(count_tgid(pid) == 0);
	}
}

static void busybox_static(void)
{
	const char *argv[] = {"/bin/busybox", "nc", "127.0.0.1", pb, NULL};
	const struct dp_event *e;
	pid_t pid;

	if (access("/bin/busybox", X_OK) != 0) {
		skip("/bin/busybox not installed");
	}
	check(run_in(cg_s1, &pid, argv) != 0);
	e = find_ev(pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP, port_b, "127.0.0.1");
	check_str(e->comm, "busybox");
	check(drain_n(lis_b4, true, 0) == 0);
}

static void outside_sessions_unaffected(void)
{
	const char *argv[] = {"net_connect", "127.0.0.1", pb, NULL};
	const char *raw[] = {"net_sock", "raw", NULL};
	pid_t pid;

	check(run_in(NULL, &pid, argv) == 0); /* our own cgroup */
	check(count_tgid(pid) == 0);
	check(run_in(cg_parent, &pid, argv) == 0); /* the parent itself */
	check(count_tgid(pid) == 0);
	check(run_in(cg_parent, &pid, raw) == 0);
	check(run_in(cg_other, &pid, argv) == 0); /* a child cgroup never registered */
	check(count_tgid(pid) == 0);
	check(drain_n(lis_b4, true, 3) == 3);
}

static void sub_cgroup_counts_as_session(void)
{
	const char *argv[] = {"net_connect", "127.0.0.1", pb, NULL};
	pid_t pid;

	check(run_in(cg_sub, &pid, argv) == EPERM);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP,
		 port_b, "127.0.0.1");
	check(drain_n(lis_b4, true, 0) == 0);
}

static void unenforced_logs_only(void)
{
	const char *tcp[] = {"net_connect", "127.0.0.1", pb, NULL};
	const char *udp[] = {"net_udp", "127.0.0.1", pb, NULL};
	const char *raw[] = {"net_sock", "raw", NULL};
	const char *packet[] = {"net_sock", "packet", NULL};
	const struct dp_event *e;
	pid_t pid;

	check(run_in(cg_s2, &pid, tcp) == 0);
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s2, DP_EV_BLOCK, 0, AF_INET, DP_EV_PROTO_TCP,
		 port_b, "127.0.0.1");
	check(drain(lis_b4) == 1);
	check(run_in(cg_s2, &pid, udp) == 0);
	check_ev(find_ev(pid, DP_EV_SENDMSG, NULL), id_s2, DP_EV_BLOCK, 0, AF_INET, DP_EV_PROTO_UDP,
		 port_b, "127.0.0.1");
	check(drain_udp(udp_b) == 1);
	check(run_in(cg_s2, &pid, raw) == 0);
	e = find_ev(pid, DP_EV_SOCK_REFUSED, NULL);
	check(e && e->verdict == DP_EV_BLOCK && !e->enforced);
	check(run_in(cg_s2, &pid, packet) == 0);
	e = find_ev(pid, DP_EV_SOCK_REFUSED, NULL);
	check(e && e->family == AF_PACKET && !e->enforced && !(e->flags & DP_EVF_KILLED));
}

static void policy_replace_and_stats(void)
{
	const char *to_a[] = {"net_connect", "127.0.0.1", pa, NULL};
	const char *to_b[] = {"net_connect", "127.0.0.1", pb, NULL};
	struct dp_kernel_stats st;
	uint64_t ids[8];
	pid_t pid;

	check(set_policy(id_s1, true, port_b) == 0);
	check(run_in(cg_s1, &pid, to_a) == EPERM);
	check(run_in(cg_s1, &pid, to_b) == 0);
	check(drain(lis_b4) == 1);
	check(drain_n(lis_a4, true, 0) == 0);
	check(set_policy(id_s1, true, port_a) == 0);
	check(run_in(cg_s1, &pid, to_b) == EPERM);
	check(kernel_session_stats(kern, id_s1, &st) == 0);
	check(st.n_allow > 0 && st.n_block > 0 && st.n_refused > 0);
	check(kernel_session_list(kern, ids, DP_ARRAY_SIZE(ids)) == 2);
	check((ids[0] == id_s1 && ids[1] == id_s2) || (ids[0] == id_s2 && ids[1] == id_s1));
	struct dp_kallow bad = rule(AF_INET, "127.0.0.1", 33, 0);
	check(kernel_session_set(kern, id_s1, true, &bad, 1) == -EINVAL);
	check(run_in(cg_s1, &pid, to_b) == EPERM); /* a refused update changes nothing */
}

/* What deputy kill, revoke and on_grant_expiry "end" set before killing (session_end.c):
 * enforced and no rule blocks what the policy allowed, also one that only logged. */
static void block_all_refuses_what_was_allowed(void)
{
	const char *to_a[] = {"net_connect", "127.0.0.1", pa, NULL};
	pid_t pid;

	check(set_policy(id_s1, false, port_a) == 0);
	check(run_in(cg_s1, &pid, to_a) == 0);
	check(drain(lis_a4) == 1);
	check(kernel_session_set(kern, id_s1, true, NULL, 0) == 0);
	check(run_in(cg_s1, &pid, to_a) == EPERM);
	check(drain_n(lis_a4, true, 0) == 0);
	check(set_policy(id_s1, true, port_a) == 0);
}

static void unix_connect_logged(void)
{
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	const char *argv[] = {"net_connect", "--unix", unix_path, NULL};
	const char *allowed[] = {"@deputy-test-abstract", unix_path};
	const struct dp_event *e;
	pid_t pid;

	snprintf(unix_path, sizeof(unix_path), "/tmp/deputy-test-kernel-%d.sock", (int)getpid());
	memcpy(un.sun_path, unix_path, strlen(unix_path) + 1);
	unix_lis = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	check(unix_lis >= 0);
	check(bind(unix_lis, (struct sockaddr *)&un, sizeof(un)) == 0 && listen(unix_lis, 8) == 0);
	/* Not in the allow list: refused and logged as a block. */
	check(kernel_unix_allow_set(kern, allowed, 1) == 0);
	if (run_in(cg_s1, &pid, argv) == 0 && !find_ev(pid, DP_EV_UNIX_CONNECT, NULL))
		skip("no Unix connect events (kernel without connect_unix hooks)");
	e = find_ev(pid, DP_EV_UNIX_CONNECT, NULL);
	check(e && e->verdict == DP_EV_BLOCK && e->enforced);
	check(drain_n(unix_lis, true, 0) == 0);
	/* Listed: allowed, and the event names the path. */
	check(kernel_unix_allow_set(kern, allowed, 2) == 0);
	check(run_in(cg_s1, &pid, argv) == 0);
	e = find_ev(pid, DP_EV_UNIX_CONNECT, NULL);
	check(e && e->cgid == id_s1 && e->family == AF_UNIX && e->verdict == DP_EV_ALLOW);
	check(e->path_len >= strlen(unix_path) &&
	      memcmp(e->path, unix_path, strlen(unix_path)) == 0);
	check(drain(unix_lis) == 1);
	/* A replaced list drops what it no longer names. */
	check(kernel_unix_allow_set(kern, allowed, 1) == 0);
	check(run_in(cg_s1, &pid, argv) == EPERM);
}

static void burst_no_event_lost(void)
{
	const char *argv[] = {"net_connect", "--count", "10000", "127.0.0.1", pb, NULL};
	uint64_t lost = kernel_lost_events(kern);
	size_t n;
	pid_t pid;

	check(run_in(cg_s1, &pid, argv) == EPERM);
	find_ev(pid, DP_EV_CONNECT, &n);
	if (n != 10000)
		fail("%zu of 10000 connect events", n);
	check(kernel_lost_events(kern) == lost);
	check(drain_n(lis_b4, true, 0) == 0);
}

static void restart_keeps_enforcing(void)
{
	const char *argv[] = {"net_connect", "127.0.0.1", pb, NULL};
	struct dp_err err = {{0}};
	char pins[PATH_MAX];
	uint64_t ids[8];
	struct stat st;
	pid_t pid;

	/* deputyd gone: the pinned programs still block, events wait in the ring buffer. */
	kernel_release(kern);
	kern = NULL;
	check(run_in(cg_s1, &pid, argv) == EPERM);
	if (kernel_open(cg_parent, on_event, NULL, &kern, &err) != 0)
		fail("kernel_open again: %s", err.msg);
	consume();
	check_ev(find_ev(pid, DP_EV_CONNECT, NULL), id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP,
		 port_b, "127.0.0.1");
	check(kernel_session_list(kern, ids, DP_ARRAY_SIZE(ids)) == 2);
	check(run_in(cg_s1, &pid, argv) == EPERM);
	check(find_ev(pid, DP_EV_CONNECT, NULL) != NULL);
	check(drain_n(lis_b4, true, 0) == 0);

	/* Closing takes everything away: no pins, no hooks. */
	check(kernel_session_remove(kern, id_s2) == 0);
	check(kernel_session_remove(kern, id_s2) == -ENOENT);
	kernel_close(kern);
	kern = NULL;
	snprintf(pins, sizeof(pins), "/sys/fs/bpf/deputy/%s", strrchr(cg_parent, '/') + 1);
	check(stat(pins, &st) != 0 && errno == ENOENT);
	check(run_in(cg_s1, &pid, argv) == 0);
	check(drain(lis_b4) == 1);
}

/* ---- mediation: the shim's claim, the proxy's redirect ------------------------------- */

/* s1's policy with port_b as a route's destination of the given kind; port_a stays plain. */
static int set_route_policy(uint32_t kind)
{
	struct dp_kallow allow[] = {
	    rule(AF_INET, "127.0.0.1", 32, port_a),
	    rule(AF_INET6, "::1", 128, port_a),
	    rule(AF_INET, "127.0.0.1", 32, port_b),
	    rule(AF_INET6, "::1", 128, port_b),
	};

	allow[2].rule = allow[3].rule = kind;
	return kernel_session_set(kern, id_s1, true, allow, DP_ARRAY_SIZE(allow));
}

static int set_proxy(bool on)
{
	char listen[32];
	struct dp_config c = {.proxy = on, .proxy_listen = listen};

	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port_p);
	return kernel_proxy_configure(kern, &c);
}

struct proxied_run {
	int rc;			      /* the client's exit status */
	pid_t pid;		      /* its pid */
	bool accepted;		      /* `lis` got its connection */
	int lookup;		      /* kernel_proxied_lookup on the accepted socket's peer */
	struct dp_proxied px;	      /* ...and what it said */
	struct sockaddr_storage peer; /* the accepted socket's peer: the agent side */
	socklen_t peer_len;
	char out[512]; /* the client's stdout */
};

/* Runs `net_connect --peer [extra] ADDR PORT` in s1 and serves it from `lis` (the stand-in
 * proxy, or the real destination): accepts, looks the connection up as deputyd would, then
 * sends the byte the client waits for. */
static void run_proxied(const char *extra, const char *addr, const char *port, int lis,
			struct proxied_run *r)
{
	const char *argv[] = {"net_connect", "--peer", extra, addr, port, NULL};
	char path[PATH_MAX], procs[PATH_MAX + 16];
	time_t deadline = time(NULL) + RUN_TIMEOUT_S;
	int pfd[2], status = 0;
	size_t got = 0;

	memset(r, 0, sizeof(*r));
	r->rc = -1;
	r->lookup = 1;
	if (!extra)
		argv[2] = addr, argv[3] = port, argv[4] = NULL;
	if (fmt_path(path, "%s/net_connect", progs) || fmt_path(procs, "%s/cgroup.procs", cg_s1) ||
	    pipe2(pfd, O_CLOEXEC) != 0)
		return;
	fflush(stdout);
	child = fork();
	if (child == 0) {
		if (write_file(procs, "0") != 0)
			_exit(250);
		dup2(pfd[1], STDOUT_FILENO);
		execv(path, (char *const *)argv);
		_exit(251);
	}
	close(pfd[1]);
	r->pid = child;
	for (;;) {
		struct pollfd p[2] = {{.fd = lis, .events = POLLIN},
				      {.fd = pfd[0], .events = POLLIN}};
		pid_t w = waitpid(child, &status, WNOHANG);

		consume();
		if (w == child || time(NULL) > deadline)
			break;
		poll(p, 2, 10);
		if (p[1].revents && got < sizeof(r->out) - 1) {
			ssize_t n = read(pfd[0], r->out + got, sizeof(r->out) - 1 - got);

			got += n > 0 ? (size_t)n : 0;
		}
		if (!r->accepted && (p[0].revents & POLLIN)) {
			int c;

			r->peer_len = sizeof(r->peer);
			c = accept4(lis, (struct sockaddr *)&r->peer, &r->peer_len, SOCK_CLOEXEC);
			if (c < 0)
				continue;
			r->accepted = true;
			r->lookup = kernel_proxied_lookup(kern, (struct sockaddr *)&r->peer,
							  r->peer_len, &r->px);
			(void)!write(c, "x", 1);
			close(c);
		}
	}
	if (waitpid(child, &status, WNOHANG) == 0) {
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
	}
	child = -1;
	for (ssize_t n; got < sizeof(r->out) - 1 &&
			(n = read(pfd[0], r->out + got, sizeof(r->out) - 1 - got)) > 0;)
		got += (size_t)n;
	close(pfd[0]);
	consume();
	r->rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The agent connects to a route's destination without a claim: it lands on the proxy,
 * still sees the original peer, and deputyd finds the original destination and session
 * from the proxy's accepted socket alone. */
static void redirect_case(const char *addr, int family, const char *evaddr, int lis)
{
	struct proxied_run r;
	const struct dp_event *e;
	char want[64];
	uint8_t a[16] = {0};

	if (set_route_policy(DP_RULE_ALLOW | DP_RULE_ROUTE) != 0 || set_proxy(true) != 0)
		fail("policy");
	run_proxied(NULL, addr, pb, lis, &r);
	check(r.rc == 0);
	check(r.accepted);
	snprintf(want, sizeof(want), "peer %s %u\ndest %d\nconnect: ok\n", addr, port_b,
		 DP_RULE_ALLOW | DP_RULE_ROUTE);
	check_str(r.out, want);
	check(r.lookup == 0);
	check(r.px.cgroup_id == id_s1 && r.px.pid == (uint32_t)r.pid);
	check(r.px.family == family && r.px.port == port_b);
	inet_pton(family, evaddr, a);
	check(memcmp(r.px.addr, a, 16) == 0);
	e = find_ev(r.pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_ALLOW, 0, family, DP_EV_PROTO_TCP, port_b, evaddr);
	check(e->flags & DP_EVF_PROXIED);
	check(!(e->flags & (DP_EVF_CLAIMED | DP_EVF_UNMEDIATED)));
	check(r.px.cookie == e->cookie);
	check(drain_n(lis_b4, true, 0) == 0 && drain_n(lis_b6, true, 0) == 0);
}

static void redirect_v4(void)
{
	redirect_case("127.0.0.1", AF_INET, "127.0.0.1", lis_p4);
}

static void redirect_v6(void)
{
	redirect_case("::1", AF_INET6, "::1", lis_p6);
}

static void redirect_v4mapped(void)
{
	redirect_case("::ffff:127.0.0.1", AF_INET, "127.0.0.1", lis_p4);
}

/* After the connection closed its entry is gone: a later peer on the same port is not
 * taken for it. */
static void redirect_entry_removed_at_close(void)
{
	struct proxied_run r;
	struct dp_proxied px;
	const struct dp_event *c = NULL;

	if (set_route_policy(DP_RULE_ALLOW | DP_RULE_ROUTE) != 0 || set_proxy(true) != 0)
		fail("policy");
	run_proxied(NULL, "127.0.0.1", pb, lis_p4, &r);
	check(r.rc == 0 && r.lookup == 0);
	/* The close is seen once the FIN handshake ends. */
	for (int i = 0; i < 300 && !c; i++) {
		consume();
		c = find_ev(r.pid, DP_EV_CLOSE, NULL);
		if (!c)
			usleep(10000);
	}
	check(c && (c->flags & DP_EVF_PROXIED));
	check(kernel_proxied_lookup(kern, (struct sockaddr *)&r.peer, r.peer_len, &px) == -ENOENT);
	check(kernel_proxied_lookup(kern, (struct sockaddr *)&r.peer, 3, &px) == -EINVAL);
}

/* A claimed socket goes where the agent said, and says it was claimed. */
static void claimed_goes_direct(void)
{
	struct proxied_run r;
	const struct dp_event *e;
	char want[64];

	if (set_route_policy(DP_RULE_ALLOW | DP_RULE_ROUTE | DP_RULE_STRICT) != 0 ||
	    set_proxy(true) != 0)
		fail("policy");
	run_proxied("--claim", "127.0.0.1", pb, lis_b4, &r);
	check(r.rc == 0 && r.accepted);
	snprintf(want, sizeof(want), "claim: ok\npeer 127.0.0.1 %u\ndest %d\nconnect: ok\n", port_b,
		 DP_RULE_ALLOW | DP_RULE_ROUTE | DP_RULE_STRICT);
	check_str(r.out, want);
	check(r.lookup == -ENOENT);
	e = find_ev(r.pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_ALLOW, 0, AF_INET, DP_EV_PROTO_TCP, port_b, "127.0.0.1");
	check((e->flags & (DP_EVF_CLAIMED | DP_EVF_PROXIED)) == DP_EVF_CLAIMED);
	check(drain_n(lis_p4, true, 0) == 0);
}

/* "proxy": "off": nobody would mediate an unclaimed connect to a route's destination. */
static void proxy_off_refuses(void)
{
	const char *argv[] = {"net_connect", "::ffff:127.0.0.1", pb, NULL};
	const char *plain[] = {"net_connect", "127.0.0.1", pa, NULL};
	const struct dp_event *e;
	pid_t pid;

	if (set_route_policy(DP_RULE_ALLOW | DP_RULE_ROUTE) != 0 || set_proxy(false) != 0)
		fail("policy");
	check(run_in(cg_s1, &pid, argv) == EPERM);
	e = find_ev(pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_BLOCK, 1, AF_INET, DP_EV_PROTO_TCP, port_b, "127.0.0.1");
	check(e->flags & DP_EVF_UNMEDIATED);
	check(drain_n(lis_b4, true, 0) == 0 && drain_n(lis_p4, true, 0) == 0);
	check(run_in(cg_s1, &pid, plain) == 0); /* not a route's destination: as before */
	check(drain(lis_a4) == 1);
	check(set_proxy(true) == 0);
}

/* UDP to a route's destination (QUIC) cannot be mediated: refused in an enforced session. */
static void udp_to_route_refused(void)
{
	const char *argv[] = {"net_connect", "--udp", "127.0.0.1", pb, NULL};
	pid_t pid;

	if (set_route_policy(DP_RULE_ALLOW | DP_RULE_ROUTE) != 0)
		fail("policy");
	check(run_in(cg_s1, &pid, argv) == EPERM);
	check(find_ev(pid, DP_EV_CONNECT, NULL) &&
	      (find_ev(pid, DP_EV_CONNECT, NULL)->flags & DP_EVF_UNMEDIATED));
}

/* "tls": "opaque": untouched, and the event says why it is unmediated. */
static void opaque_goes_direct(void)
{
	struct proxied_run r;
	const struct dp_event *e;

	if (set_route_policy(DP_RULE_ALLOW | DP_RULE_OPAQUE) != 0 || set_proxy(true) != 0)
		fail("policy");
	run_proxied(NULL, "::1", pb, lis_b6, &r);
	check(r.rc == 0 && r.accepted && r.lookup == -ENOENT);
	e = find_ev(r.pid, DP_EV_CONNECT, NULL);
	check_ev(e, id_s1, DP_EV_ALLOW, 0, AF_INET6, DP_EV_PROTO_TCP, port_b, "::1");
	check((e->flags & (DP_EVF_OPAQUE | DP_EVF_PROXIED | DP_EVF_CLAIMED)) == DP_EVF_OPAQUE);
	check(drain_n(lis_p6, true, 0) == 0);
}

/* Outside a session (here: below the parent, in no session) the claim is no option the
 * kernel knows, the destination's kind is none, and nothing is redirected. */
static void claim_outside_session(void)
{
	const char *argv[] = {"net_connect", "--claim", "127.0.0.1", pb, NULL};
	pid_t pid;

	if (set_route_policy(DP_RULE_ALLOW | DP_RULE_ROUTE) != 0 || set_proxy(true) != 0)
		fail("policy");
	check(run_in(cg_other, &pid, argv) == 0);
	check(count_tgid(pid) == 0);
	check(drain(lis_b4) == 1 && drain_n(lis_p4, true, 0) == 0);
	/* and in no cgroup of ours at all, the hooks do not even run */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint32_t dest = 7;
	socklen_t dl = sizeof(dest);

	check(fd >= 0 && setsockopt(fd, DP_SOL_DEPUTY, DP_SO_CLAIM, NULL, 0) == -1 &&
	      errno == ENOPROTOOPT);
	check(getsockopt(fd, DP_SOL_DEPUTY, DP_SO_DEST, &dest, &dl) == -1 && dest == 7);
	close(fd);
}

/* A session process cannot listen on the proxy's port (any address); elsewhere it can. */
static void proxy_port_not_bindable(void)
{
	char code[128];
	const char *argv[] = {"/usr/bin/python3", "-c", code, NULL};
	pid_t pid;

	if (set_proxy(true) != 0)
		fail("policy");
	snprintf(code, sizeof(code),
		 "import socket, sys\ns = socket.socket(socket.AF_INET6)\ntry:\n"
		 "    s.bind(('::', %u))\nexcept OSError as e:\n    sys.exit(e.errno)",
		 0u);
	check(run_in(cg_s1, &pid, argv) == 0); /* another (any free) port */
	snprintf(code, sizeof(code),
		 "import socket, sys\ns = socket.socket(socket.AF_INET6)\ntry:\n"
		 "    s.bind(('::', %u))\nexcept OSError as e:\n    sys.exit(e.errno)",
		 port_p);
	check(run_in(cg_s1, &pid, argv) == EPERM);
	check(run_in(cg_other, &pid, argv) != EPERM); /* in use by the stand-in: EADDRINUSE */
}

/* Not a test: puts s1 back as the other cases expect it, whatever failed above. */
static void mediation_restore(void)
{
	check(set_policy(id_s1, true, port_a) == 0);
	check(set_proxy(true) == 0);
}

static char *dirname_of(const char *path)
{
	static char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	return dir;
}

/* A parent cgroup removed and created again has a new id: the pins left for the old one are
 * stale (their links defunct) and must be replaced, not adopted. */
static void stale_pins_replaced(void)
{
	const char *argv[] = {"net_connect", "127.0.0.1", pb, NULL};
	struct dp_err err = {{0}};
	char *sess = cg_other_s, pin[PATH_MAX];
	struct dp_kernel *k = NULL;
	int fd;
	uint64_t ids[4];
	pid_t pid;

	check(fmt_path(cg_other_s, "%s/s", cg_other) == 0);
	/* A map of another layout (an older deputyd's) must not make loading fail. */
	check(fmt_path(pin, "/sys/fs/bpf/deputy/%s_other/sessions", strrchr(cg_parent, '/') + 1) ==
	      0);
	check(dp_mkdir_p(dirname_of(pin), 0700) == 0);
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, NULL, 4, 4, 1, NULL);
	check(fd >= 0);
	check(bpf_obj_pin(fd, pin) == 0);
	close(fd);
	if (kernel_open(cg_other, on_event, NULL, &k, &err) != 0)
		fail("kernel_open: %s", err.msg);
	kern = k; /* so cleanup() closes it if a check fails */
	check(mkdir(sess, 0755) == 0);
	check(set_policy(cgroup_id(sess), true, port_a) == 0);
	check(run_in(sess, &pid, argv) == EPERM);
	kernel_release(k);
	kern = k = NULL;
	check(rmdir(sess) == 0 && rmdir(cg_other) == 0);
	check(mkdir(cg_other, 0755) == 0 && mkdir(sess, 0755) == 0);
	if (kernel_open(cg_other, on_event, NULL, &k, &err) != 0)
		fail("kernel_open after re-creation: %s", err.msg);
	kern = k;
	check(kernel_session_list(k, ids, DP_ARRAY_SIZE(ids)) == 0);
	check(run_in(sess, &pid, argv) == 0);
	check(drain(lis_b4) == 1);
	check(set_policy(cgroup_id(sess), true, port_a) == 0);
	check(run_in(sess, &pid, argv) == EPERM);
	kernel_close(k);
	kern = NULL;
	check(rmdir(sess) == 0);
}

/* Pure helpers: run without root or BPF. */
static void cgroup2_found(void)
{
	char root[PATH_MAX], path[PATH_MAX + 32];

	check(cgroup_root(root, sizeof(root)) == 0);
	check(fmt_path(path, "%s/cgroup.controllers", root) == 0);
	check(access(path, F_OK) == 0);
	check(cgroup_id(root) != 0);
	check(cgroup_root(root, 2) == -ENAMETOOLONG || strlen(root) < 2);
}

static void audit_names(void)
{
	struct dp_event ev = {.family = AF_INET6, .addr = {[15] = 1}};
	char buf[64];

	check_str(kernel_family_name(AF_INET), "inet");
	check_str(kernel_family_name(AF_INET6), "inet6");
	check_str(kernel_family_name(12345), "other");
	check_str(kernel_protocol_name(DP_EV_PROTO_TCP), "tcp");
	check_str(kernel_protocol_name(DP_EV_PROTO_UDP), "udp");
	check_str(kernel_verdict_name(DP_EV_BLOCK), "block");
	check_str(kernel_event_type_name(DP_EV_CONNECT), "connect");
	check_str(kernel_event_type_name(999), "unknown");
	check(kernel_event_addr(&ev, buf, sizeof(buf)) == 0);
	check_str(buf, "::1");
	check(kernel_event_addr(&ev, buf, 3) == -ENOSPC && buf[0] == '\0');
	ev.family = AF_INET;
	memcpy(ev.addr, (uint8_t[]){192, 0, 2, 7}, 4);
	check(kernel_event_addr(&ev, buf, sizeof(buf)) == 0);
	check_str(buf, "192.0.2.7");
	ev.family = AF_UNIX;
	check(kernel_event_addr(&ev, buf, sizeof(buf)) == 0 && buf[0] == '\0');
}

/* ---- main ------------------------------------------------------------------------------ */

/* A network namespace of our own: the listeners and clients meet no host traffic, and ping
 * sockets can be enabled for the refusal test without touching the host's sysctls. */
static void enter_netns(void)
{
	struct ifreq ifr = {0};
	int fd;

	if (unshare(CLONE_NEWNET) != 0) {
		fprintf(stderr, "test_kernel: no own network namespace (%s)\n", strerror(errno));
		return;
	}
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) != 0 ||
	    (ifr.ifr_flags |= IFF_UP, ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)) {
		fprintf(stderr, "test_kernel: cannot bring up lo: %s\n", strerror(errno));
		exit(1);
	}
	close(fd);
	own_netns = write_file("/proc/sys/net/ipv4/ping_group_range", "0 2147483647") == 0;
}

static int setup(struct dp_err *err)
{
	char root[PATH_MAX], exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n <= 0) {
		dp_err_set(err, "readlink /proc/self/exe failed");
		return -1;
	}
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	*slash = '\0';
	if (fmt_path(progs, "%s/../progs", exe)) {
		dp_err_set(err, "path too long");
		return -1;
	}
	if (cgroup_root(root, sizeof(root)) != 0) {
		dp_err_set(err, "no cgroup2 mount");
		return -1;
	}
	if (fmt_path(cg_parent, "%s/deputy-test-%d", root, (int)getpid())) {
		dp_err_set(err, "path too long");
		return -1;
	}
	if (mkdir(cg_parent, 0755) != 0) {
		dp_err_set(err, "mkdir %s: %s", cg_parent, strerror(errno));
		cg_parent[0] = '\0';
		return -1;
	}
	if (fmt_path(cg_s1, "%s/s1", cg_parent) || fmt_path(cg_s2, "%s/s2", cg_parent) ||
	    fmt_path(cg_other, "%s/other", cg_parent) || fmt_path(cg_sub, "%s/sub", cg_s1)) {
		dp_err_set(err, "path too long");
		return -1;
	}
	if (mkdir(cg_s1, 0755) || mkdir(cg_s2, 0755) || mkdir(cg_other, 0755) ||
	    mkdir(cg_sub, 0755)) {
		dp_err_set(err, "creating session cgroups: %s", strerror(errno));
		return -1;
	}
	id_s1 = cgroup_id(cg_s1);
	id_s2 = cgroup_id(cg_s2);
	if (!id_s1 || !id_s2 || id_s1 == id_s2) {
		dp_err_set(err, "cgroup ids");
		return -1;
	}
	if (open_port(&port_a, &lis_a4, &lis_a6, &udp_a) ||
	    open_port(&port_b, &lis_b4, &lis_b6, &udp_b) ||
	    open_port(&port_p, &lis_p4, &lis_p6, &udp_p)) {
		dp_err_set(err, "no free loopback ports");
		return -1;
	}
	snprintf(pa, sizeof(pa), "%u", port_a);
	snprintf(pb, sizeof(pb), "%u", port_b);
	if (kernel_open(cg_parent, on_event, NULL, &kern, err) != 0)
		return -1;
	if (set_policy(id_s1, true, port_a) != 0 || set_policy(id_s2, false, port_a) != 0) {
		dp_err_set(err, "kernel_session_set failed");
		return -1;
	}
	return 0;
}

int main(void)
{
	bool require =
	    getenv("DEPUTY_REQUIRE_BPF") && strcmp(getenv("DEPUTY_REQUIRE_BPF"), "1") == 0;
	struct dp_err err = {{0}};

	dp_log_init("test_kernel", getenv("DEPUTY_DEBUG") ? DP_LOG_DEBUG : DP_LOG_WARN);
	RUN(audit_names);
	RUN(cgroup2_found);
	if (kernel_available(&err) != 0) {
		printf("%s: kernel: BPF unavailable: %s\n", require ? "FAIL" : "SKIP", err.msg);
		return require || unit_failed ? 1 : 0;
	}
	enter_netns();
	atexit(cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	if (setup(&err) != 0) {
		printf("FAIL: kernel_setup: %s\n", err.msg);
		return 1;
	}
	RUN(tcp4_blocked);
	RUN(tcp4_allowed_and_closed);
	RUN(tcp6_loopback);
	RUN(v4mapped_gets_ipv4_rules);
	RUN(io_uring_connect);
	RUN(udp_sendto);
	RUN(tcp_fast_open);
	RUN(bypass_sockets_refused);
	RUN(busybox_static);
	RUN(outside_sessions_unaffected);
	RUN(sub_cgroup_counts_as_session);
	RUN(unenforced_logs_only);
	RUN(policy_replace_and_stats);
	RUN(block_all_refuses_what_was_allowed);
	RUN(unix_connect_logged);
	RUN(burst_no_event_lost);
	RUN(redirect_v4);
	RUN(redirect_v6);
	RUN(redirect_v4mapped);
	RUN(redirect_entry_removed_at_close);
	RUN(claimed_goes_direct);
	RUN(proxy_off_refuses);
	RUN(udp_to_route_refused);
	RUN(opaque_goes_direct);
	RUN(claim_outside_session);
	RUN(proxy_port_not_bindable);
	RUN(mediation_restore);
	RUN(restart_keeps_enforcing);
	RUN(stale_pins_replaced);
	cleanup();
	UNIT_EXIT();
}
