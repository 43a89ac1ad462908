// SPDX-License-Identifier: MIT
/*
 * audit_export: `"audit_export": {"syslog": PATH}`. Every audit record, as it is written, goes
 * to the Unix datagram socket PATH (default /dev/log) as one RFC 5424 message:
 *
 *   <PRI>1 TIMESTAMP HOSTNAME deputyd PROCID MSGID - MSG
 *
 * TIMESTAMP is the record's own ts, MSGID its type, no structured data, and MSG the record's
 * line exactly as in the session log (no BOM: the line is ASCII), so rsyslog, journald,
 * Fluent Bit or Vector can pass it to a SIEM unchanged and it still verifies against the
 * chain. Facility authpriv (the records name users); severity notice for refusals and
 * blocks, info for the rest.
 *
 * The export must never slow or stop the audit log itself: the socket is non-blocking and
 * unconnected (each send names PATH, so a restarted receiver is found again), and a message
 * the receiver cannot take now is dropped and counted, never retried or queued. The session
 * log stays the record of truth; the counts say what the SIEM misses.
 */
#include "audit_export.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define AUDIT_EXPORT_FACILITY 10 /* LOG_AUTHPRIV >> 3 */
#define AUDIT_EXPORT_NOTICE 5
#define AUDIT_EXPORT_INFO 6

static struct {
	int fd; /* -1: not exporting */
	struct sockaddr_un addr;
	socklen_t addr_len;
	char host[256]; /* RFC 5424 HOSTNAME: printable ASCII, no spaces, or "-" */
	uint64_t sent, dropped;
	int failing; /* the errno of the drop that began the current run of drops */
	pid_t pid;   /* RFC 5424 PROCID, read once: not a getpid per record */
} ax = {.fd = -1};

static void audit_export_hostname(void)
{
	if (gethostname(ax.host, sizeof(ax.host) - 1) != 0 || !ax.host[0])
		snprintf(ax.host, sizeof(ax.host), "-");
	for (char *p = ax.host; *p; p++)
		if (*p <= ' ' || *p > '~')
			*p = '_';
}

int audit_export_open(const char *path, struct dp_err *err)
{
	size_t n;

	audit_export_close();
	if (!path)
		return 0;
	n = strlen(path);
	if (path[0] != '/' || n >= sizeof(ax.addr.sun_path)) {
		dp_err_set(err,
			   "audit_export.syslog: must be an absolute path of at most %zu bytes",
			   sizeof(ax.addr.sun_path) - 1);
		return -EINVAL;
	}
	ax.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ax.fd < 0) {
		int e = errno;

		dp_err_set(err, "audit_export: socket: %s", strerror(e));
		return -e;
	}
	memset(&ax.addr, 0, sizeof(ax.addr));
	ax.addr.sun_family = AF_UNIX;
	memcpy(ax.addr.sun_path, path, n + 1);
	ax.addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	audit_export_hostname();
	ax.pid = getpid();
	ax.failing = 0;
	return 0;
}

/* A refusal or a block is what a SIEM alerts on; the writer's compact JSON cannot hold
 * "verdict":"block" inside a string (a quote there is always escaped). */
static int audit_export_severity(const char *type, const char *line, size_t len)
{
	static const char block[] = "\"verdict\":\"block\"";

	if (strcmp(type, "deny") == 0 ||
	    (strcmp(type, "connect") == 0 && memmem(line, len, block, sizeof(block) - 1)))
		return AUDIT_EXPORT_NOTICE;
	return AUDIT_EXPORT_INFO;
}

static void audit_export_dropped(int e)
{
	ax.dropped++;
	if (ax.failing)
		return;
	ax.failing = e;
	pr_warn("audit_export: %s does not take records (%s); dropping and counting them",
		ax.addr.sun_path, strerror(e));
}

void audit_export_record(const char *type, const char *ts, const char *line, size_t len)
{
	char head[512];
	struct iovec iov[2];
	struct msghdr mh = {.msg_name = &ax.addr, .msg_iov = iov, .msg_iovlen = 2};
	int n;

	if (ax.fd < 0)
		return;
	n = snprintf(head, sizeof(head), "<%d>1 %s %s deputyd %d %.32s - ",
		     AUDIT_EXPORT_FACILITY * 8 + audit_export_severity(type, line, len), ts,
		     ax.host, (int)ax.pid, type);
	if (n < 0 || (size_t)n >= sizeof(head)) {
		audit_export_dropped(EMSGSIZE);
		return;
	}
	iov[0] = (struct iovec){.iov_base = head, .iov_len = (size_t)n};
	iov[1] = (struct iovec){.iov_base = (void *)line, .iov_len = len};
	mh.msg_namelen = ax.addr_len;
	if (sendmsg(ax.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		audit_export_dropped(errno);
		return;
	}
	ax.sent++;
	if (ax.failing) {
		pr_info("audit_export: %s takes records again (%llu dropped so far)",
			ax.addr.sun_path, (unsigned long long)ax.dropped);
		ax.failing = 0;
	}
}

void audit_export_counts(uint64_t *sent, uint64_t *dropped)
{
	*sent = ax.sent;
	*dropped = ax.dropped;
}

void audit_export_close(void)
{
	if (ax.fd >= 0)
		close(ax.fd);
	ax.fd = -1;
}
