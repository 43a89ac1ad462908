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
 * unconnected (each send names PATH, so a restarted receiver is found again). deputyd writes
 * a loop turn's records together, so they come in bursts, and a Unix datagram receiver
 * takes only net.unix.max_dgram_qlen (often 10) messages ahead: a message the receiver's
 * queue is too full for (EAGAIN) waits in a bounded queue (AUDIT_EXPORT_QUEUE bytes), in
 * order, retried without blocking at each later turn (audit_export_drain); one that does
 * not fit there, or that no receiver takes (no socket, refused), is dropped and counted.
 * The session log stays the record of truth; the counts say what the SIEM misses.
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
#define AUDIT_EXPORT_QUEUE (256u << 10)

/* A message waiting for room in the receiver's queue: head and line, one allocation. */
struct audit_export_msg {
	struct audit_export_msg *next;
	size_t head_len, len;
	char data[];
};

static struct {
	int fd; /* -1: not exporting */
	struct sockaddr_un addr;
	socklen_t addr_len;
	char host[256]; /* RFC 5424 HOSTNAME: printable ASCII, no spaces, or "-" */
	uint64_t sent, dropped;
	int failing; /* the errno of the drop that began the current run of drops */
	struct audit_export_msg *q, **q_tail; /* waiting, oldest first */
	size_t q_bytes;
	pid_t pid; /* RFC 5424 PROCID, read once: not a getpid per record */
} ax = {.fd = -1, .q_tail = &ax.q};

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

/* One send: 0, or the errno (EAGAIN: the receiver's queue is full for now). */
static int audit_export_send(const char *head, size_t head_len, const char *line, size_t len)
{
	struct iovec iov[2] = {{.iov_base = (void *)head, .iov_len = head_len},
			       {.iov_base = (void *)line, .iov_len = len}};
	struct msghdr mh = {
	    .msg_name = &ax.addr, .msg_namelen = ax.addr_len, .msg_iov = iov, .msg_iovlen = 2};

	if (sendmsg(ax.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return errno == EWOULDBLOCK ? EAGAIN : errno;
	ax.sent++;
	if (ax.failing) {
		pr_info("audit_export: %s takes records again (%llu dropped so far)",
			ax.addr.sun_path, (unsigned long long)ax.dropped);
		ax.failing = 0;
	}
	return 0;
}

static void audit_export_enqueue(const char *head, size_t head_len, const char *line, size_t len)
{
	struct audit_export_msg *m;

	if (ax.q_bytes + head_len + len > AUDIT_EXPORT_QUEUE ||
	    !(m = malloc(sizeof(*m) + head_len + len))) {
		audit_export_dropped(EAGAIN);
		return;
	}
	m->next = NULL;
	m->head_len = head_len;
	m->len = len;
	memcpy(m->data, head, head_len);
	memcpy(m->data + head_len, line, len);
	*ax.q_tail = m;
	ax.q_tail = &m->next;
	ax.q_bytes += head_len + len;
}

void audit_export_drain(void)
{
	while (ax.q) {
		struct audit_export_msg *m = ax.q;
		int e = audit_export_send(m->data, m->head_len, m->data + m->head_len, m->len);

		if (e == EAGAIN)
			return;
		if (e)
			audit_export_dropped(e);
		ax.q = m->next;
		if (!ax.q)
			ax.q_tail = &ax.q;
		ax.q_bytes -= m->head_len + m->len;
		free(m);
	}
}

void audit_export_record(const char *type, const char *ts, const char *line, size_t len)
{
	char head[512];
	int n, e;

	if (ax.fd < 0)
		return;
	n = snprintf(head, sizeof(head), "<%d>1 %s %s deputyd %d %.32s - ",
		     AUDIT_EXPORT_FACILITY * 8 + audit_export_severity(type, line, len), ts,
		     ax.host, (int)ax.pid, type);
	if (n < 0 || (size_t)n >= sizeof(head)) {
		audit_export_dropped(EMSGSIZE);
		return;
	}
	/* behind queued messages: the receiver gets them in the logs' order */
	audit_export_drain();
	e = ax.q ? EAGAIN : audit_export_send(head, (size_t)n, line, len);
	if (e == EAGAIN)
		audit_export_enqueue(head, (size_t)n, line, len);
	else if (e)
		audit_export_dropped(e);
}

void audit_export_counts(uint64_t *sent, uint64_t *dropped)
{
	*sent = ax.sent;
	*dropped = ax.dropped;
}

void audit_export_close(void)
{
	/* at exit or a reload: the last records (sessions sealed) get up to 100 ms to go */
	for (int i = 0; i < 20 && ax.q && ax.fd >= 0; i++) {
		audit_export_drain();
		if (ax.q)
			usleep(5000);
	}
	while (ax.q) {
		struct audit_export_msg *m = ax.q;

		ax.q = m->next;
		free(m);
		ax.dropped++;
	}
	ax.q_tail = &ax.q;
	ax.q_bytes = 0;
	if (ax.fd >= 0)
		close(ax.fd);
	ax.fd = -1;
}
