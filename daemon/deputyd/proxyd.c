// SPDX-License-Identifier: MIT
/*
 * proxyd: starting, watching and answering deputy-proxy (see proxyd.h); the proxy's program
 * is daemon/proxy/. What the proxy may ask is narrow: attribute an accepted socket (deputyd
 * looks at the socket itself), a leaf certificate for an attributed connection's route host,
 * a decision for a request on it, and to log its responses and refusals.
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
#include "sessca.h"

#define PROXY_USER "deputy-proxy"
#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 5000
#define HEALTHY_MS 10000 /* a proxy up this long restarts fast again after a crash */
/* Open connections deputyd tracks for the proxy (the proxy caps its own lower). */
#define PCONN_MAX 4096

extern char **environ;

struct pconn {
	uint64_t id;
	char sid[DP_ID_LEN];
	struct dp_proxied orig;
	char sni[256]; /* the route host the leaf was minted for; "" for plain HTTP */
	char comm[17];
	bool tls_asked; /* a leaf was asked for: the connection is TLS from then on */
	bool attested;	/* plain, or TLS with a leaf for a route host: requests may follow */
};

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

static struct pconn *conns;
static size_t n_conns;
static uint64_t conn_ids;
static struct ca_entry *cas;
static size_t n_cas;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the session CAs ------------------------------------------------------------------ */

static struct sessca *ca_of(const char *sid)
{
	for (size_t i = 0; i < n_cas; i++)
		if (strcmp(cas[i].sid, sid) == 0)
			return cas[i].ca;
	return NULL;
}

const char *proxyd_session_ca(struct session *s, struct dp_err *err)
{
	struct sessca *ca = ca_of(s->id);
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

/* deputy-proxy beside deputyd (the build tree) or in ../lib/deputy (an installed prefix). */
static int proxy_path(char *out, size_t outsz)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0)
		return -errno;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (!slash)
		return -ENOENT;
	*slash = '\0';
	snprintf(out, outsz, "%s/deputy-proxy", self);
	if (access(out, X_OK) == 0)
		return 0;
	snprintf(out, outsz, "%s/../lib/deputy/deputy-proxy", self);
	return access(out, X_OK) == 0 ? 0 : -ENOENT;
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

	if (proxy_path(path, sizeof(path)) != 0) {
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
	n_conns = 0;
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
	free(conns);
	conns = NULL;
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

/* ---- the proxy's requests --------------------------------------------------------------- */

struct pmsg {
	struct dp_hdr h;
	const uint8_t *val[DP_T_MAX_];
	uint16_t len[DP_T_MAX_];
	const char *str[DP_T_MAX_]; /* NUL-terminated copies ("" when absent) */
	uint64_t conn;
	int fd; /* SCM_RIGHTS, or -1 */
	char arena[DP_PROTO_MAX_PAYLOAD + DP_T_MAX_];
};

static bool tag_is_text(uint16_t t)
{
	return t == DP_T_REASON || t == DP_T_HOST || t == DP_T_SCHEME || t == DP_T_METHOD ||
	       t == DP_T_TARGET || t == DP_T_JTI;
}

static int pmsg_parse(const uint8_t *p, size_t n, struct pmsg *m)
{
	size_t off = 0, used = 0;
	uint16_t tag, vlen;
	const uint8_t *v;
	int r;

	memset(m->val, 0, sizeof(m->val));
	for (size_t i = 0; i < DP_T_MAX_; i++)
		m->str[i] = "";
	while ((r = dp_field_next(p, n, &off, &tag, &v, &vlen)) == 1) {
		/* Each tag at most once: the copies fit the arena. Strings have no NUL. */
		if (tag == 0 || tag >= DP_T_MAX_ || m->val[tag] ||
		    (tag_is_text(tag) && memchr(v, '\0', vlen)))
			return -EBADMSG;
		m->val[tag] = v;
		m->len[tag] = vlen;
		memcpy(m->arena + used, v, vlen);
		m->arena[used + vlen] = '\0';
		m->str[tag] = m->arena + used;
		used += (size_t)vlen + 1;
	}
	if (r < 0 || (m->val[DP_T_CONN] && m->len[DP_T_CONN] != 8) ||
	    (m->val[DP_T_STATUS] && m->len[DP_T_STATUS] != 8))
		return -EBADMSG;
	m->conn = 0;
	if (m->val[DP_T_CONN])
		memcpy(&m->conn, m->val[DP_T_CONN], 8);
	return 0;
}

static uint64_t pmsg_u64(const struct pmsg *m, uint16_t tag)
{
	uint64_t x = 0;

	if (m->val[tag] && m->len[tag] == 8)
		memcpy(&x, m->val[tag], 8);
	return x;
}

static void reply(struct deputyd *d, struct dp_msg *m)
{
	ssize_t w;

	if (dp_msg_finish(m) != 0)
		return;
	w = send(px.chan, m->buf, m->len, MSG_DONTWAIT | MSG_NOSIGNAL);
	/* The proxy waits for each reply: a full socket means it is not reading them. */
	if (w != (ssize_t)m->len)
		proxy_down(d, "does not read its replies");
}

static void reply_error(struct deputyd *d, const struct pmsg *pm, const char *reason)
{
	uint8_t buf[600];
	struct dp_msg m;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_ERROR, pm->h.seq, 0);
	dp_msg_put(&m, DP_T_REASON, reason, strnlen(reason, 512));
	reply(d, &m);
}

static struct pconn *conn_find(uint64_t id)
{
	for (size_t i = 0; i < n_conns; i++)
		if (conns[i].id == id)
			return &conns[i];
	return NULL;
}

/* The open session a connection belongs to, or NULL. */
static struct session *conn_session(struct deputyd *d, const struct pconn *pc)
{
	struct session *s = session_find(d, pc->sid);

	return s && s->state == SESSION_OPEN ? s : NULL;
}

static json_t *proxy_record(json_t *rec, const struct pconn *pc)
{
	if (rec) {
		json_object_set_new(rec, "pid", json_integer(pc->orig.pid));
		json_object_set_new(rec, "comm", session_text(pc->comm));
		json_object_set_new(rec, "mediator", json_string("proxy"));
		json_object_set_new(rec, "cookie", json_integer((json_int_t)pc->orig.cookie));
	}
	return rec;
}

static void log_deny(struct session *s, const struct pconn *pc, const char *layer,
		     const char *reason, const char *method, const char *target)
{
	s->counts.denies++;
	session_log(
	    s, "deny",
	    proxy_record(json_pack("{s:s, s:o, s:o, s:o, s:o, s:b}", "layer", layer, "reason",
				   session_text(reason), "host", session_text(pc->sni), "method",
				   session_text(method ? method : ""), "target",
				   session_text(target ? target : ""), "enforced", true),
			 pc));
}

static bool is_local_listener(const struct sockaddr_storage *ss)
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

static void read_comm(pid_t pid, char out[17])
{
	char path[64];
	FILE *f;

	out[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (f) {
		if (fgets(out, 17, f))
			out[strcspn(out, "\n")] = '\0';
		fclose(f);
	}
}

/* PROXY_CONN: who is on the other end of the socket the proxy accepted, by the kernel's map
 * of redirected connections, looked up with the socket's own addresses. */
static void on_conn(struct deputyd *d, struct pmsg *pm)
{
	struct sockaddr_storage local, peer;
	socklen_t ll = sizeof(local), pl = sizeof(peer);
	struct dp_proxied orig;
	struct session *s;
	struct pconn *pc;
	uint8_t buf[256];
	struct dp_msg m;
	int rc;

	if (pm->fd < 0 || getsockname(pm->fd, (struct sockaddr *)&local, &ll) != 0 ||
	    getpeername(pm->fd, (struct sockaddr *)&peer, &pl) != 0 || !is_local_listener(&local)) {
		reply_error(d, pm, "not a connection to the proxy's listening address");
		return;
	}
	rc = kernel_proxied_lookup(d->kernel, (struct sockaddr *)&peer, pl, &orig);
	if (rc != 0) {
		reply_error(d, pm,
			    rc == -ENOENT ? "not a redirected connection" : "kernel lookup failed");
		return;
	}
	for (s = d->sessions; s; s = s->next)
		if (s->cg_id == orig.cgroup_id && s->state == SESSION_OPEN)
			break;
	if (!s || !ca_of(s->id)) {
		reply_error(d, pm, "no open session for this connection");
		return;
	}
	if (n_conns == PCONN_MAX) {
		reply_error(d, pm, "too many proxied connections");
		return;
	}
	if (n_conns % 64 == 0) {
		struct pconn *n = realloc(conns, (n_conns + 64) * sizeof(*n));

		if (!n) {
			reply_error(d, pm, "out of memory");
			return;
		}
		conns = n;
	}
	pc = &conns[n_conns++];
	memset(pc, 0, sizeof(*pc));
	pc->id = ++conn_ids;
	pc->orig = orig;
	pc->attested = true; /* until it asks for a leaf: plain HTTP */
	snprintf(pc->sid, sizeof(pc->sid), "%s", s->id);
	read_comm((pid_t)orig.pid, pc->comm);
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_PROXY_CONN_OK, pm->h.seq, 0);
	dp_msg_put_u64(&m, DP_T_CONN, pc->id);
	dp_msg_put_u64(&m, DP_T_FAMILY, (uint64_t)orig.family);
	dp_msg_put(&m, DP_T_ADDR, orig.addr, orig.family == AF_INET ? 4 : 16);
	dp_msg_put_u64(&m, DP_T_PORT, orig.port);
	dp_msg_put_u64(&m, DP_T_COOKIE, s->cg_id);
	reply(d, &m);
}

static bool addr_matches(const struct addrinfo *ai, const struct dp_proxied *o)
{
	if (ai->ai_family == AF_INET && o->family == AF_INET)
		return memcmp(&((struct sockaddr_in *)ai->ai_addr)->sin_addr, o->addr, 4) == 0;
	if (ai->ai_family == AF_INET6 && o->family == AF_INET6)
		return memcmp(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, o->addr, 16) == 0;
	return false;
}

/* Is host a route host on the original destination's port, and the original destination one
 * of its addresses? (The kernel redirected the connect because some route's host resolved
 * there; the name the agent uses must be one of those.) */
static bool host_serves(struct deputyd *d, const char *host, const struct dp_proxied *o)
{
	bool route = false, found = false;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;

	for (size_t i = 0; i < d->cfg->n_routes && !route; i++) {
		const struct dp_route *rt = &d->cfg->routes[i];

		route = rt->port == o->port && !rt->tls_opaque && strcasecmp(rt->host, host) == 0;
	}
	if (!route || getaddrinfo(host, NULL, &hints, &res) != 0)
		return false;
	for (ai = res; ai && !found; ai = ai->ai_next)
		found = addr_matches(ai, o);
	freeaddrinfo(res);
	return found;
}

/* PROXY_LEAF: a certificate for the SNI, only if it names a route host of the original
 * destination. */
static void on_leaf(struct deputyd *d, struct pmsg *pm)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;
	const char *sni = pm->str[DP_T_HOST], *pem;
	struct dp_err err;
	uint64_t id;
	struct dp_msg m;

	if (!s || pc->tls_asked) {
		reply_error(d, pm, "no such connection, or a second handshake");
		return;
	}
	pc->tls_asked = true;
	pc->attested = false;
	snprintf(pc->sni, sizeof(pc->sni), "%s", sni);
	if (!sni[0] || !host_serves(d, sni, &pc->orig)) {
		char reason[400];

		snprintf(reason, sizeof(reason),
			 sni[0] ? "TLS server name \"%s\" is not a route host of the destination"
				: "TLS without a server name (SNI)%s",
			 sni);
		log_deny(s, pc, "daemon", reason, NULL, NULL);
		pc->sni[0] = '\0';
		reply_error(d, pm, reason);
		return;
	}
	if (sessca_leaf(ca_of(s->id), sni, &pem, &id, &err) != 0) {
		log_deny(s, pc, "daemon", err.msg, NULL, NULL);
		reply_error(d, pm, err.msg);
		return;
	}
	pc->attested = true;
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DATA_REPLY, pm->h.seq, 0);
	dp_msg_put_str(&m, DP_T_DATA, pem);
	dp_msg_put_u64(&m, DP_T_OFFSET, id);
	reply(d, &m);
}

/* PROXY_DECIDE: the shim's DECIDE, for a connection deputyd attributed. The host the request
 * names must be the one the TLS handshake named (or, in plain HTTP, a route host of the
 * original destination). */
static void on_decide(struct deputyd *d, struct pmsg *pm)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;
	const char *scheme = pm->str[DP_T_SCHEME], *host = pm->str[DP_T_HOST];
	struct decide_req r = {0};
	struct decide_res res;
	struct dp_msg m;
	bool tls = pc && pc->tls_asked;

	if (!s) {
		reply_error(d, pm, "no such connection");
		return;
	}
	if (!pm->val[DP_T_METHOD] || !pm->val[DP_T_TARGET] || !pc->attested) {
		reply_error(d, pm, "decide: missing fields, or a refused connection");
		return;
	}
	r = (struct decide_req){.scheme = tls ? "https" : "http",
				.host = host,
				.method = pm->str[DP_T_METHOD],
				.target = pm->str[DP_T_TARGET],
				.port = pc->orig.port,
				.cookie = pc->orig.cookie,
				.pid = (pid_t)pc->orig.pid,
				.comm = pc->comm,
				.mediator = "proxy"};
	if (strcmp(scheme, r.scheme) != 0 ||
	    (tls ? strcasecmp(host, pc->sni) != 0 : !host_serves(d, host, &pc->orig))) {
		char reason[400];

		snprintf(reason, sizeof(reason),
			 tls ? "the request's host \"%s\" is not the TLS server name"
			     : "the request's host \"%s\" is not a route host of the destination",
			 host);
		log_deny(s, pc, "daemon", reason, r.method, r.target);
		res = (struct decide_res){.verdict = DP_VERDICT_DENY};
		snprintf(res.reason, sizeof(res.reason), "%s", reason);
	} else {
		kevent_request(d, s, pc->orig.cookie);
		decide(d, s, &r, &res);
	}
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DECISION, pm->h.seq, 0);
	decide_put_reply(&m, &res, s);
	free(res.token);
	reply(d, &m);
}

static void on_response(struct deputyd *d, struct pmsg *pm)
{
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;
	uint64_t status = pmsg_u64(pm, DP_T_STATUS);

	if (!s || status > 999)
		return;
	s->counts.responses++;
	session_log(s, "response",
		    proxy_record(json_pack("{s:o, s:I}", "jti", session_text(pm->str[DP_T_JTI]),
					   "status", (json_int_t)status),
				 pc));
}

static void on_deny(struct deputyd *d, struct pmsg *pm)
{
	struct pconn *pc = conn_find(pm->conn);
	struct session *s = pc ? conn_session(d, pc) : NULL;

	if (s)
		log_deny(s, pc, "proxy", pm->str[DP_T_REASON], pm->str[DP_T_METHOD],
			 pm->str[DP_T_TARGET]);
}

static void on_close(struct deputyd *d, struct pmsg *pm)
{
	struct pconn *pc = conn_find(pm->conn);

	if (pc)
		*pc = conns[--n_conns];
}

static const struct {
	uint16_t type;
	bool noreply;
	void (*fn)(struct deputyd *d, struct pmsg *pm);
} handlers[] = {
    {DP_MSG_PROXY_CONN, false, on_conn},     {DP_MSG_PROXY_LEAF, false, on_leaf},
    {DP_MSG_PROXY_DECIDE, false, on_decide}, {DP_MSG_PROXY_RESPONSE, true, on_response},
    {DP_MSG_PROXY_DENY, true, on_deny},	     {DP_MSG_PROXY_CLOSE, true, on_close},
};

/* One message: NULL, or why the proxy broke the protocol (it is then stopped). */
static const char *dispatch(struct deputyd *d, const uint8_t *buf, size_t n, int fd)
{
	static struct pmsg pm; /* one thread; 40 KiB is better off the stack */

	if (n < DP_PROTO_HDR_LEN)
		return "short message";
	memcpy(&pm.h, buf, sizeof(pm.h));
	pm.fd = fd;
	if (dp_hdr_check(&pm.h) != 0 || pm.h.len != n - DP_PROTO_HDR_LEN)
		return "bad header";
	if (pmsg_parse(buf + DP_PROTO_HDR_LEN, pm.h.len, &pm) != 0)
		return "malformed fields";
	if ((pm.fd >= 0) != (pm.h.type == DP_MSG_PROXY_CONN))
		return "a socket where none belongs, or none where one does";
	for (size_t i = 0; i < DP_ARRAY_SIZE(handlers); i++)
		if (handlers[i].type == pm.h.type) {
			/* A request that gets a reply must ask for one, and the reverse. */
			if (handlers[i].noreply != ((pm.h.flags & DP_F_NOREPLY) != 0))
				return "reply flag";
			handlers[i].fn(d, &pm);
			return NULL;
		}
	return "unknown message type";
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
			bad = dispatch(d, buf, (size_t)r, nfd ? fds[0] : -1);
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
