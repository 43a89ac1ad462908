// SPDX-License-Identifier: MIT
/*
 * proxyd: starting, watching and restarting deputy-proxy (daemon/proxy/), its channel, and
 * each session's CA (see proxyd.h). What the proxy may ask, and the answers, are
 * proxyreq.c's.
 */
#include "proxyd.h"

#include <arpa/inet.h>
#include <deputy/proto.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "kernel.h"
#include "proxyreq.h"
#include "sessca.h"

#define PROXY_USER "deputy-proxy"
#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 5000
#define HEALTHY_MS 10000 /* a proxy up this long restarts fast again after a crash */

extern char **environ;

struct ca_entry {
	char sid[DP_ID_LEN];
	struct sessca *ca;
};

static struct {
	bool wanted;
	pid_t pid; /* 0: not running */
	int chan;  /* deputyd's end of the socketpair; -1 when not running */
	uint64_t ep_tag;
	int64_t started_ms, restart_at_ms;
	int backoff_ms;
	char *listen, *ca_file; /* the settings it runs with */
	uid_t uid;
	gid_t gid;
	struct sockaddr_storage la[2];
	socklen_t la_len[2];
	int n_la;
} px = {.chan = -1, .backoff_ms = RESTART_MIN_MS};

static struct ca_entry *cas;
static size_t n_cas;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the session CAs ------------------------------------------------------------------ */

struct sessca *proxyd_sessca(const char *sid)
{
	for (size_t i = 0; i < n_cas; i++)
		if (strcmp(cas[i].sid, sid) == 0)
			return cas[i].ca;
	return NULL;
}

const char *proxyd_session_ca(struct session *s, struct dp_err *err)
{
	struct sessca *ca = proxyd_sessca(s->id);
	struct ca_entry *n;

	if (ca)
		return sessca_cert_pem(ca);
	ca = sessca_new(s->id, err);
	if (!ca)
		return NULL;
	n = realloc(cas, (n_cas + 1) * sizeof(*n));
	if (!n) {
		sessca_free(ca);
		dp_err_set(err, "out of memory");
		return NULL;
	}
	cas = n;
	snprintf(cas[n_cas].sid, sizeof(cas[n_cas].sid), "%s", s->id);
	cas[n_cas++].ca = ca;
	return sessca_cert_pem(ca);
}

/* ---- starting the proxy --------------------------------------------------------------- */

static int proxy_user(struct dp_err *err)
{
	struct passwd *pw = getpwnam(PROXY_USER);

	if (!pw) {
		char *argv[] = {"useradd",	     "--system",     "--no-create-home",
				"--home-dir",	     "/nonexistent", "--shell",
				"/usr/sbin/nologin", PROXY_USER,     NULL};
		pid_t pid;
		int st = -1;

		if (posix_spawnp(&pid, "useradd", NULL, NULL, argv, environ) == 0)
			waitpid(pid, &st, 0);
		pw = getpwnam(PROXY_USER);
		if (!pw) {
			dp_err_set(err, "cannot create the system user %s (useradd: status %d)",
				   PROXY_USER, st);
			return -ENOENT;
		}
		pr_info("created the system user %s for the proxy", PROXY_USER);
	}
	if (pw->pw_uid == 0) {
		dp_err_set(err, "the user %s is root", PROXY_USER);
		return -EPERM;
	}
	px.uid = pw->pw_uid;
	px.gid = pw->pw_gid;
	return 0;
}

static int listen_on(const struct sockaddr_storage *ss, socklen_t len, struct dp_err *err)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	char host[INET6_ADDRSTRLEN], port[8];

	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ss->ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)ss, len) == 0 && listen(fd, 512) == 0)
			return fd;
	}
	getnameinfo((const struct sockaddr *)ss, len, host, sizeof(host), port, sizeof(port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	dp_err_set(err, "proxy_listen: cannot listen on %s port %s: %s", host, port,
		   strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* proxy_listen, and [::1] at the same port for IPv6 connects. */
static int listen_addrs(const char *listen, struct dp_err *err)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&px.la[1];
	uint16_t port;

	px.n_la = 0;
	if (config_parse_listen(listen, false, &px.la[0], &px.la_len[0]) != 0 ||
	    px.la[0].ss_family != AF_INET) {
		dp_err_set(err, "proxy_listen: not a loopback IPv4 ADDR:PORT: %s", listen);
		return -EINVAL;
	}
	port = ((struct sockaddr_in *)&px.la[0])->sin_port;
	memset(s6, 0, sizeof(*s6));
	s6->sin6_family = AF_INET6;
	s6->sin6_port = port;
	s6->sin6_addr = in6addr_loopback;
	px.la_len[1] = sizeof(*s6);
	px.n_la = 2;
	return 0;
}

/* In the child, between fork and exec: no capabilities left, not even in the bounding set,
 * and no way to get any back (no_new_privs). Returns only on failure. */
static void child_exec(int exe, const char *cg_procs, int chan, int *lfd, int nl, int cafd)
{
	char a_chan[16], a_l[2][16], a_ca[16];
	char *argv[12], *envp[3] = {NULL, NULL, NULL};
	int argc = 0, fd, e = 0;
	struct __user_cap_header_struct ch = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct cd[2] = {{0, 0, 0}, {0, 0, 0}};

	fd = open(cg_procs, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "0", 1) != 1)
			e = errno; /* then it stays in deputyd's cgroup, also outside sessions */
		close(fd);
	}
	(void)e;
	setsid();
	argv[argc++] = "deputy-proxy";
	snprintf(a_chan, sizeof(a_chan), "%d", chan);
	argv[argc++] = "--chan";
	argv[argc++] = a_chan;
	for (int i = 0; i < nl; i++) {
		snprintf(a_l[i], sizeof(a_l[i]), "%d", lfd[i]);
		argv[argc++] = "--listen";
		argv[argc++] = a_l[i];
	}
	if (cafd >= 0) {
		snprintf(a_ca, sizeof(a_ca), "%d", cafd);
		argv[argc++] = "--upstream-ca";
		argv[argc++] = a_ca;
	}
	argv[argc] = NULL;
	envp[0] = "PATH=/usr/bin:/bin";
	if (getenv("DEPUTY_DEBUG"))
		envp[1] = "DEPUTY_DEBUG=1";
	/* The fds it gets lose close-on-exec; everything else deputyd holds is CLOEXEC. */
	fcntl(chan, F_SETFD, 0);
	for (int i = 0; i < nl; i++)
		fcntl(lfd[i], F_SETFD, 0);
	if (cafd >= 0)
		fcntl(cafd, F_SETFD, 0);
	for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
		prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	if (setgroups(0, NULL) != 0 || setresgid(px.gid, px.gid, px.gid) != 0 ||
	    setresuid(px.uid, px.uid, px.uid) != 0 || syscall(SYS_capset, &ch, cd) != 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
		_exit(126);
	/* By the fd deputyd opened as root: the path may be in a directory the proxy's user
	 * cannot search (a 0700 checkout). */
	execveat(exe, "", argv, envp, AT_EMPTY_PATH);
	_exit(127);
}

static int spawn(struct deputyd *d, struct dp_err *err)
{
	char path[PATH_MAX], cg[PATH_MAX], procs[PATH_MAX + 16];
	int sv[2] = {-1, -1}, lfd[2] = {-1, -1}, cafd = -1, exe = -1, nl = 0, rc = -EIO;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = px.ep_tag};
	pid_t pid;

	if (dp_find_installed("deputy-proxy", X_OK, path, sizeof(path)) != 0) {
		dp_err_set(err, "deputy-proxy not found beside deputyd nor in ../lib/deputy");
		return -ENOENT;
	}
	if (!px.uid && (rc = proxy_user(err)) != 0)
		return rc;
	if ((rc = listen_addrs(px.listen, err)) != 0)
		return rc;
	/* A cgroup beside deputy's parent ("<parent>-proxy"): never a session's. */
	snprintf(cg, sizeof(cg), "%s-proxy", d->cg_parent);
	if (cgroup_create(cg) != 0)
		pr_warn("proxy: cannot create its cgroup %s", cg);
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
	rc = -EIO;
	for (int i = 0; i < px.n_la; i++) {
		lfd[nl] = listen_on(&px.la[i], px.la_len[i], err);
		/* [::1] may be missing (IPv6 off): IPv4 alone still serves. */
		if (lfd[nl] >= 0)
			nl++;
		else if (i == 0)
			goto out;
	}
	exe = open(path, O_PATH | O_CLOEXEC);
	if (exe < 0) {
		dp_err_set(err, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (px.ca_file && (cafd = open(px.ca_file, O_RDONLY | O_CLOEXEC)) < 0) {
		dp_err_set(err, "upstream_ca_file: %s: %s", px.ca_file, strerror(errno));
		goto out;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		dp_err_set(err, "socketpair: %s", strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		dp_err_set(err, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0)
		child_exec(exe, procs, sv[1], lfd, nl, cafd);
	/* deputyd keeps no copy of the listening sockets: when the proxy is gone, nothing
	 * listens and redirected connects are refused. */
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	px.pid = pid;
	px.chan = sv[0];
	sv[0] = -1;
	px.started_ms = now_ms();
	if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, px.chan, &ev) != 0)
		pr_warn("proxy: epoll: %s", strerror(errno));
	pr_info("proxy started (pid %d, user %s, %s)", (int)pid, PROXY_USER, px.listen);
	rc = 0;
out:
	for (int i = 0; i < nl; i++)
		close(lfd[i]);
	if (cafd >= 0)
		close(cafd);
	if (exe >= 0)
		close(exe);
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	return rc;
}

static void schedule_restart(void)
{
	px.restart_at_ms = now_ms() + px.backoff_ms;
	px.backoff_ms = px.backoff_ms * 2 > RESTART_MAX_MS ? RESTART_MAX_MS : px.backoff_ms * 2;
}

/* The proxy is gone or misbehaved: kill it (its sockets close, its connections fail) and
 * forget its connections. */
static void proxy_down(struct deputyd *d, const char *why)
{
	int st;

	if (px.chan >= 0) {
		epoll_ctl(d->epfd, EPOLL_CTL_DEL, px.chan, NULL);
		close(px.chan);
		px.chan = -1;
	}
	if (px.pid > 0) {
		kill(px.pid, SIGKILL);
		waitpid(px.pid, &st, 0);
		pr_warn("proxy (pid %d) %s; %s", (int)px.pid, why,
			px.wanted ? "restarting it" : "stopped");
		px.pid = 0;
	}
	if (now_ms() - px.started_ms >= HEALTHY_MS)
		px.backoff_ms = RESTART_MIN_MS;
	proxyreq_forget_all();
	if (px.wanted)
		schedule_restart();
}

static void try_start(struct deputyd *d)
{
	struct dp_err err;

	if (spawn(d, &err) != 0) {
		pr_warn("proxy: %s; retrying", err.msg);
		schedule_restart();
	}
}

static void settings_take(struct deputyd *d)
{
	free(px.listen);
	free(px.ca_file);
	px.wanted = d->kernel && d->cfg->proxy;
	px.listen = strdup(d->cfg->proxy_listen ? d->cfg->proxy_listen : "127.0.0.1:8472");
	px.ca_file = d->cfg->upstream_ca_file ? strdup(d->cfg->upstream_ca_file) : NULL;
}

void proxyd_start(struct deputyd *d, uint64_t ep_tag)
{
	px.ep_tag = ep_tag;
	settings_take(d);
	if (px.wanted)
		try_start(d);
	else
		pr_info("proxy: off (%s)", d->kernel ? "\"proxy\": \"off\"" : "no kernel layer");
}

void proxyd_reload(struct deputyd *d)
{
	bool was = px.wanted;
	char *listen = px.listen ? strdup(px.listen) : NULL;
	char *ca = px.ca_file ? strdup(px.ca_file) : NULL;
	bool same;

	settings_take(d);
	same = was == px.wanted && listen && strcmp(listen, px.listen) == 0 &&
	       ((!ca && !px.ca_file) || (ca && px.ca_file && strcmp(ca, px.ca_file) == 0));
	free(listen);
	free(ca);
	if (same)
		return;
	proxy_down(d, "stopped for new settings");
	px.backoff_ms = RESTART_MIN_MS;
	if (px.wanted)
		try_start(d);
}

void proxyd_stop(struct deputyd *d)
{
	px.wanted = false;
	proxy_down(d, "stopped");
	for (size_t i = 0; i < n_cas; i++)
		sessca_free(cas[i].ca);
	free(cas);
	cas = NULL;
	n_cas = 0;
	proxyreq_forget_all();
	if (d->cg_parent[0]) {
		char cg[PATH_MAX];

		snprintf(cg, sizeof(cg), "%s-proxy", d->cg_parent);
		cgroup_remove(cg);
	}
}

void proxyd_tick(struct deputyd *d)
{
	size_t keep = 0;
	int st;

	if (px.pid > 0 && waitpid(px.pid, &st, WNOHANG) == px.pid) {
		px.pid = 0;
		proxy_down(d, WIFSIGNALED(st) ? "was killed" : "exited");
	}
	if (px.wanted && px.pid == 0 && now_ms() >= px.restart_at_ms)
		try_start(d);
	/* Closed sessions: their CA goes (the bundle was removed with the session). */
	for (size_t i = 0; i < n_cas; i++) {
		struct session *s = session_find(d, cas[i].sid);

		if (s && s->state == SESSION_OPEN)
			cas[keep++] = cas[i];
		else
			sessca_free(cas[i].ca);
	}
	n_cas = keep;
}

bool proxyd_is_listener(const struct sockaddr_storage *ss)
{
	for (int i = 0; i < px.n_la; i++) {
		if (ss->ss_family != px.la[i].ss_family)
			continue;
		if (ss->ss_family == AF_INET) {
			const struct sockaddr_in *a = (const void *)ss,
						 *b = (const void *)&px.la[i];

			if (a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr)
				return true;
		} else {
			const struct sockaddr_in6 *a = (const void *)ss,
						  *b = (const void *)&px.la[i];

			if (a->sin6_port == b->sin6_port &&
			    memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0)
				return true;
		}
	}
	return false;
}

void proxyd_reply(struct deputyd *d, struct dp_msg *m)
{
	proxyd_reply_fd(d, m, -1);
}

void proxyd_reply_fd(struct deputyd *d, struct dp_msg *m, int fd)
{
	union dp_fd_cmsg ctl;
	struct iovec iov;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t w;

	if (dp_msg_finish(m) != 0)
		return;
	/* What the reply depends on is in the file first (audit_log.h); a decision whose
	 * records were lost was already turned into a refusal (proxyreq.c). */
	audit_log_flush_all();
	iov = (struct iovec){m->buf, m->len};
	if (fd >= 0)
		dp_msghdr_fd(&mh, &ctl, fd);
	w = sendmsg(px.chan, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	/* The proxy waits for each reply: a full socket means it is not reading them. */
	if (w != (ssize_t)m->len)
		proxy_down(d, "does not read its replies");
}

void proxyd_event(struct deputyd *d)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];

	for (int rounds = 0; rounds < 64 && px.chan >= 0; rounds++) {
		union {
			struct cmsghdr align;
			char b[CMSG_SPACE(4 * sizeof(int))];
		} cbuf;
		struct iovec iov = {buf, sizeof(buf)};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = cbuf.b,
				    .msg_controllen = sizeof(cbuf.b)};
		int fds[4], nfd = 0;
		const char *bad;
		ssize_t r = recvmsg(px.chan, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r <= 0) {
			proxy_down(d, r == 0 ? "closed its channel" : "channel failed");
			return;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
				for (size_t i = 0;
				     CMSG_LEN((i + 1) * sizeof(int)) <= c->cmsg_len && nfd < 4; i++)
					memcpy(&fds[nfd++], CMSG_DATA(c) + i * sizeof(int),
					       sizeof(int));
		if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || nfd > 1)
			bad = "truncated message, or more than one socket";
		else
			bad = proxyreq_handle(d, buf, (size_t)r, nfd ? fds[0] : -1);
		for (int i = 0; i < nfd; i++)
			close(fds[i]);
		if (bad) {
			char why[128];

			snprintf(why, sizeof(why), "broke the protocol (%s)", bad);
			proxy_down(d, why);
			return;
		}
	}
}
