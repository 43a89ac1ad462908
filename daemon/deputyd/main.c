// SPDX-License-Identifier: MIT
/* deputyd: the host daemon. Loads config, key, trusted issuers and the kernel layer, then
 * serves the Unix socket (server.c) until SIGTERM/SIGINT; SIGHUP reloads the config. */
#include "deputyd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit_export.h"
#include "cgroup.h"
#include "hostlog.h"
#include "hostwatch.h"
#include "chain.h"
#include "httpd.h"
#include "kernel.h"
#include "notify.h"
#include "reload.h"
#include "revoke.h"
#include "version.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: deputyd [-c FILE] [-f] [-v] [-t] | --version\n"
		     "  -c FILE   configuration (JSON; default " DP_DEFAULT_CONFIG ")\n"
		     "  -f        stay in the foreground (otherwise detach and log to syslog)\n"
		     "  -v        log debug messages too (also DEPUTY_DEBUG=1)\n"
		     "  -t        check the configuration and exit\n");
}

static int fail(const char *what, const char *fmt, ...) DP_PRINTF(2, 3);
static int fail(const char *what, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	/* Through the log: stderr before detaching, syslog after, "deputyd: what: why". */
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	pr_warn("%s: %s", what, why);
	/* once the host log is open, a start that fails is in it too */
	hostlog_write(strcmp(what, "kernel") == 0 ? "kernel_load_failed" : "start_failed",
		      json_pack("{s:s, s:s}", "what", what, "reason", why));
	return 1;
}

/* Each client costs two fds (socket, pidfd) and each session may hold 512 (conn.c): the
 * usual soft limit of 1024 would let one session stop deputyd from accepting anyone. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 &&
	    rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int setup_dirs(struct deputyd *d)
{
	int rc = dp_mkdir_p(d->cfg->state_dir, 0700);

	if (rc)
		return fail("state_dir", "%s: %s", d->cfg->state_dir, strerror(-rc));
	snprintf(d->log_dir, sizeof(d->log_dir), "%s/sessions", d->cfg->state_dir);
	rc = dp_mkdir_p(d->log_dir, 0750);
	if (rc)
		return fail("state_dir", "%s: %s", d->log_dir, strerror(-rc));
	chain_load(d);
	return 0;
}

/* The host log first, so that everything after it that fails is recorded; a revocation
 * list that cannot be read stops deputyd: starting without it would honour revoked grants. */
static int setup_hostlog(struct deputyd *d, const char *config_path, char *down_since)
{
	struct dp_err err;
	bool sealed;

	if (hostlog_open(d->cfg->state_dir, &sealed, &err) != 0)
		return fail("state_dir", "host log: %s", err.msg);
	down_since[0] = '\0';
	if (!sealed)
		snprintf(down_since, DP_TS_LEN, "%s", hostlog_last_ts());
	hostlog_write("deputyd_start",
		      json_pack("{s:s, s:I, s:s, s:b, s:b}", "version", DEPUTY_VERSION, "pid",
				(json_int_t)getpid(), "config", config_path, "kernel",
				d->cfg->kernel, "previous_stop_clean", sealed));
	if (revoke_load(d->cfg->state_dir, &err) != 0)
		return fail("revocations", "%s", err.msg);
	return 0;
}

static int setup_key(struct deputyd *d)
{
	char path[PATH_MAX];
	struct dp_err err;
	int rc;

	d->key = dp_key_load_or_create(d->cfg->signing_key, &err);
	if (!d->key)
		return fail("signing_key", "%s", err.msg);
	d->jwks_json = dp_key_jwks_json(d->key);
	if (!d->jwks_json)
		return fail("signing_key", "cannot build the JWKS");
	snprintf(path, sizeof(path), "%s/jwks.json", d->cfg->state_dir);
	rc = dp_write_file_atomic(path, d->jwks_json, strlen(d->jwks_json), 0644);
	if (rc)
		return fail("state_dir", "%s: %s", path, strerror(-rc));
	return 0;
}

/* Before sessions are recovered: their session_resume records are exported too. */
static int setup_export(struct deputyd *d)
{
	struct dp_err err;

	if (audit_export_open(d->cfg->audit_syslog, &err) != 0)
		return fail("audit_export", "%s", err.msg);
	if (d->cfg->audit_syslog)
		pr_info("audit_export: every audit record also goes to %s (RFC 5424)",
			d->cfg->audit_syslog);
	return 0;
}

static void close_export(void)
{
	uint64_t sent, dropped;

	audit_export_counts(&sent, &dropped);
	if (sent || dropped)
		pr_info("audit_export: %llu records sent, %llu dropped", (unsigned long long)sent,
			(unsigned long long)dropped);
	audit_export_close();
}

static int setup_cgroups(struct deputyd *d)
{
	int rc = cgroup_root(d->cg_root, sizeof(d->cg_root));

	if (rc)
		return fail("cgroup",
			    "no cgroup2 file system is mounted (see /proc/self/mountinfo)");
	snprintf(d->cg_parent, sizeof(d->cg_parent), "%s/%s", d->cg_root, d->cfg->cgroup);
	rc = cgroup_create(d->cg_parent);
	if (rc)
		return fail("cgroup", "%s: %s", d->cg_parent, strerror(-rc));
	return 0;
}

static int setup_kernel(struct deputyd *d)
{
	struct dp_err err;
	int rc;

	if (!d->cfg->kernel) {
		pr_warn("WARNING: \"kernel\": \"off\" — the eBPF layer is not loaded: connections "
			"of agents are NOT logged and NOT enforced; only the shim mediates HTTP");
		policy_refresh(d); /* destination binding still needs the route hosts */
		return 0;
	}
	if (kernel_available(&err) != 0 ||
	    kernel_open(d->cg_parent, kevent_record, d, &d->kernel, &err) != 0)
		return fail("kernel", "%s (set \"kernel\": \"off\" to run without the eBPF layer)",
			    err.msg);
	rc = policy_unix_apply(d);
	if (rc)
		return fail("allow_unix", "%s", strerror(-rc));
	policy_refresh(d); /* resolved here, once: later in a thread, off the loop */
	return 0;
}

/* Detaching forks before anything else runs: threads do not survive fork(), and the HTTP
 * server is one (it was lost when deputyd forked after starting it). The parent stays until
 * the daemon says it is ready, so its exit status tells whether deputyd started and the
 * reason for a failed start still reaches stderr. Returns in the daemon with the pipe's
 * write end; the parent never returns. */
static int detach_begin(void)
{
	int p[2], status;
	pid_t pid;
	char ok;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		close(p[0]);
		if (setsid() < 0 || chdir("/") < 0)
			pr_warn("start: cannot detach fully: %s", strerror(errno));
		return p[1];
	}
	close(p[1]);
	if (read(p[0], &ok, 1) == 1)
		_exit(0);
	/* The daemon died before it was ready: it said why on stderr. */
	if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status))
		_exit(WEXITSTATUS(status));
	_exit(1);
}

/* In the daemon, once it serves: log to syslog, let go of the terminal, release the
 * parent. */
static void detach_ready(int fd)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	dp_log_use_syslog();
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	if (write(fd, "r", 1) != 1)
		pr_warn("start: cannot tell the parent that deputyd is ready");
	close(fd);
}

static int setup_socket(struct deputyd *d)
{
	if (server_listen(d) != 0)
		return -1;
	if (policy_unix_apply(d) != 0) /* again, now the socket's canonical path is known */
		pr_warn("allow_unix: cannot add the canonical path of %s", d->cfg->socket);
	return 0;
}

/* Every error of the file, one line each: fixed in one go, not one per start. */
static int load_config(const char *path, struct dp_config **cfg)
{
	static struct config_report report;
	struct dp_err err;

	if (config_load_report(path, cfg, &err, &report) == 0)
		return 0;
	if (report.n == 0)
		return fail("config", "%s", err.msg);
	for (size_t i = 0; i < report.n; i++)
		fail("config", "%s: %s", path, report.line[i]);
	if (report.more)
		fail("config", "%s: and %zu more errors", path, report.more);
	return 1;
}

/* -t: the file itself, and the issuers' key sets (a missing jwks_file is not ok). */
static int check_config(const char *path, struct dp_config *cfg)
{
	struct dp_trust *trust;
	struct dp_err err;

	trust = trust_new(cfg, &err);
	if (!trust) {
		config_free(cfg);
		return fail("trusted_issuers", "%s", err.msg);
	}
	/* resolved here only to warn: the running deputyd resolves again, and a name may come
	 * to resolve later */
	policy_check_hosts(cfg);
	printf("%s: ok (%zu routes, %zu trusted issuers)\n", path, cfg->n_routes, cfg->n_issuers);
	trust_free(trust);
	config_free(cfg);
	return 0;
}

static int start_httpd(struct deputyd *d, struct dp_httpd **out)
{
	char *meta = httpd_metadata_json(d->cfg->issuer, d->cfg->http_listen);
	struct dp_err err;

	*out = meta ? httpd_start(d->cfg->http_listen, d->jwks_json, meta, &err) : NULL;
	if (!*out)
		fail("http_listen", "%s", meta ? err.msg : "out of memory");
	free(meta);
	return *out ? 0 : -1;
}

/* Sessions a crashed deputyd left, and the outage the host log then notes. */
static void recover(struct deputyd *d, const char *down_since)
{
	session_recover(d);
	if (down_since[0])
		hostlog_write("deputyd_outage",
			      json_pack("{s:s, s:I}", "down_since", down_since, "sessions_resumed",
					(json_int_t)d->n_sessions));
	hostwatch_start(d);
}

/* Whatever was set up, in reverse; the host log sealed once the key is there to sign. */
static void teardown(struct deputyd *d, struct dp_httpd *httpd)
{
	if (d->key) {
		json_t *counts = hostwatch_counts(d);

		hostlog_seal(d->key, d->cfg->issuer, counts);
		json_decref(counts);
	}
	hostlog_close();
	revoke_free();
	close_export();
	httpd_stop(httpd);
	if (d->kernel)
		kernel_close(d->kernel);
	if (d->cg_parent[0] && rmdir(d->cg_parent) < 0 && errno != ENOENT && errno != EBUSY)
		pr_warn("cannot remove %s: %s", d->cg_parent, strerror(errno));
	trust_free(d->trust);
	dp_key_free(d->key);
	free(d->jwks_json);
	config_free(d->cfg);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
						 {"version", no_argument, NULL, 'V'},
						 {NULL, 0, NULL, 0}};
	const char *config_path = DP_DEFAULT_CONFIG;
	bool foreground = false, verbose = false, check_only = false;
	struct deputyd d = {
	    .listen_fd = -1, .epfd = -1, .signal_fd = -1, .timer_fd = -1, .wake_fd = -1};
	struct dp_httpd *httpd = NULL;
	char down_since[DP_TS_LEN];
	struct dp_err err;
	int opt, rc = 1, ready_fd = -1;

	/* The getopt loop every program has: alike in shape, each with its own options. */
	while ((opt = getopt_long(argc, argv, "c:fvth", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'f':
			foreground = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 't':
			check_only = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("deputyd %s\n", DEPUTY_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (getenv("DEPUTY_DEBUG") && strcmp(getenv("DEPUTY_DEBUG"), "1") == 0)
		verbose = true;
	dp_log_init("deputyd", verbose ? DP_LOG_DEBUG : DP_LOG_INFO);
	if (load_config(config_path, &d.cfg) != 0)
		return 1;
	if (check_only)
		return check_config(config_path, d.cfg);
	reload_remember(config_path);
	if (geteuid() != 0) {
		config_free(d.cfg);
		return fail("start",
			    "must run as root (it creates cgroups and loads eBPF programs)");
	}
	umask(022);
	raise_fd_limit();
	if (notify_init(&err) != 0)
		pr_warn("%s: the service manager will not hear from deputyd", err.msg);
	if (!foreground) {
		ready_fd = detach_begin();
		if (ready_fd < 0) {
			fail("start", "cannot detach: %s", strerror(-ready_fd));
			goto out;
		}
	}
	if (setup_dirs(&d) || setup_hostlog(&d, config_path, down_since) || setup_key(&d) ||
	    setup_export(&d))
		goto out;
	d.trust = trust_new(d.cfg, &err);
	if (!d.trust) {
		fail("trusted_issuers", "%s", err.msg);
		goto out;
	}
	if (setup_cgroups(&d) || setup_kernel(&d))
		goto out;
	if (d.cfg->http_listen && start_httpd(&d, &httpd) != 0)
		goto out;
	recover(&d, down_since);
	if (setup_socket(&d) != 0)
		goto out;
	if (ready_fd >= 0)
		detach_ready(ready_fd);
	pr_info("ready: socket %s, %zu routes, kernel layer %s, key %s", d.cfg->socket,
		d.cfg->n_routes, d.kernel ? "on" : "OFF", dp_key_kid(d.key));
	notify_send("READY=1\nSTATUS=serving");
	rc = server_run(&d) ? 1 : 0;
out:
	teardown(&d, httpd);
	return rc;
}
