// SPDX-License-Identifier: MIT
/*
 * hooks_sock: the libc hooks — connect (the claim, then tracking), the write
 * and read families on tracked sockets, close, fork, and exec/spawn (children get the
 * shim and the session back).
 *
 * Untracked fds take a path with no lock and no allocation: one atomic load of the fd
 * table, then the real function. That is what signal handlers and fork children reach.
 */
#include "hooks.h"
#include "shim.h"

#include "deputy/event.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define SOCK_FD_MAX 65536

static struct conn *sock_table[SOCK_FD_MAX];

static ssize_t sock_send(struct conn *c, const void *buf, size_t n, int flags)
{
	ssize_t r;

	shim_guard++;
	r = real_send(c->fd, buf, n, flags);
	shim_guard--;
	return r;
}

static bool sock_would_block(struct conn *c)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static const struct conn_ops sock_ops = {.send = sock_send, .would_block = sock_would_block};

struct conn *sock_conn(int fd)
{
	if (fd < 0 || fd >= SOCK_FD_MAX)
		return NULL;
	return __atomic_load_n(&sock_table[fd], __ATOMIC_ACQUIRE);
}

/* A conn whose fd no longer is its socket (closed without the close hook: fclose, dup2,
 * a raw system call) is dropped, so the file or socket now behind the fd is left alone. */
struct conn *sock_conn_checked(int fd)
{
	struct conn *c = sock_conn(fd);

	if (!c || conn_fd_is_ours(c))
		return c;
	shim_debug("fd %d is no longer the socket the shim saw connect: dropped", fd);
	if (__atomic_compare_exchange_n(&sock_table[fd], &c, NULL, false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE))
		conn_free(c);
	return NULL;
}

/* The conn to mediate a call with, or NULL to pass straight through. Opaque connections
 * pass through without the identity check (one system call saved per write). */
static struct conn *sock_hooked(int fd)
{
	struct conn *c;

	shim_init();
	if (shim_guard)
		return NULL;
	c = sock_conn(fd);
	if (!c || c->rq == RQ_OPAQUE)
		return c;
	return sock_conn_checked(fd);
}

static struct conn *sock_hooked_write(int fd)
{
	struct conn *c = sock_hooked(fd);

	if (c && ssl_handshaking) {
		c->tls_hooked = true;
		ssl_note_handshake_fd(fd);
	}
	return c;
}

void sock_atfork_child(void)
{
	for (int fd = 0; fd < SOCK_FD_MAX; fd++) {
		struct conn *c = sock_table[fd];

		if (c)
			conn_atfork_child(c);
	}
}

/* ---- connect ----------------------------------------------------------------------- */

/* The DP_RULE_* bits the kernel gave the socket's destination, or -1 when no kernel layer
 * answers (no session, "kernel": "off"). */
static long sock_dest_rule(int fd)
{
	uint32_t rule = 0;
	socklen_t len = sizeof(rule);

	if (getsockopt(fd, DP_SOL_DEPUTY, DP_SO_DEST, &rule, &len) != 0 || len != sizeof(rule))
		return -1;
	return (long)rule;
}

/* The claim (design: layer 4): the shim takes a socket only when it can mediate whatever
 * goes over it, i.e. the system's libssl is in the process (TLS through the SSL hooks,
 * plain HTTP through these). Otherwise the kernel sends a route's destination to the proxy
 * and the shim keeps out of it; elsewhere it still reads plain HTTP, as without a kernel
 * layer. */
SHIM_EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	int saved = errno, type = 0, rc, err;
	socklen_t tl = sizeof(type);
	uint64_t cookie = 0;
	socklen_t cl = sizeof(cookie);
	struct conn *c, *old;
	bool claimed = false;
	long rule;

	shim_init();
	if (shim_guard || !sa || fd < 0 || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return real_connect(fd, sa, len);
	shim_guard++;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) {
		shim_guard--;
		errno = saved;
		return real_connect(fd, sa, len);
	}
	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &cl) < 0)
		cookie = 0;
	old = sock_conn(fd);
	if ((old && old->cookie == cookie && cookie) || fd >= SOCK_FD_MAX) {
		/* connect() again on the same socket (a non-blocking connect being polled), or
		 * an fd beyond the table: not mediated */
		shim_guard--;
		errno = saved;
		return real_connect(fd, sa, len);
	}
	if (shim_have_libssl())
		claimed = setsockopt(fd, DP_SOL_DEPUTY, DP_SO_CLAIM, NULL, 0) == 0;
	errno = saved;
	rc = real_connect(fd, sa, len);
	err = errno;
	rule = sock_dest_rule(fd);
	if (!claimed && rule > 0 && (rule & DP_RULE_ROUTE)) {
		shim_debug("fd %d: left to deputy's proxy", fd);
		rule = -2; /* not ours */
	}
	c = rule == -2 ? NULL : conn_new(&sock_ops, fd, NULL);
	if (c) {
		c->cookie = cookie;
		c->dest_rule = rule > 0 ? (uint32_t)rule : 0;
		memcpy(&c->peer, sa, len < sizeof(c->peer) ? len : sizeof(c->peer));
		c->port = sa->sa_family == AF_INET
			      ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
			      : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	}
	old = __atomic_exchange_n(&sock_table[fd], c, __ATOMIC_ACQ_REL);
	conn_free(old);
	shim_guard--;
	errno = err;
	return rc;
}

/* ---- writes ------------------------------------------------------------------------ */

static ssize_t sock_mediated_write(struct conn *c, const void *buf, size_t n, int flags)
{
	int saved = errno;
	ssize_t r = conn_write(c, buf, n, flags, true);

	if (r >= 0)
		errno = saved;
	return r;
}

static ssize_t sock_write_iov(struct conn *c, const struct iovec *iov, int cnt, int flags)
{
	ssize_t total = 0;

	for (int i = 0; i < cnt; i++) {
		ssize_t r;

		if (iov[i].iov_len == 0)
			continue;
		r = sock_mediated_write(c, iov[i].iov_base, iov[i].iov_len, flags);
		if (r < 0)
			return total ? total : -1;
		total += r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	return total;
}

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	struct conn *c = sock_hooked_write(fd);

	if (!c || c->rq == RQ_OPAQUE || n == 0)
		return real_write(fd, buf, n);
	return sock_mediated_write(c, buf, n, 0);
}

SHIM_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	struct conn *c = sock_hooked_write(fd);

	if (!c || c->rq == RQ_OPAQUE || n == 0 || (flags & MSG_OOB))
		return real_send(fd, buf, n, flags);
	return sock_mediated_write(c, buf, n, flags);
}

SHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
			   socklen_t tolen)
{
	struct conn *c = sock_hooked_write(fd);

	if (!c || c->rq == RQ_OPAQUE || n == 0 || to || (flags & MSG_OOB))
		return real_sendto(fd, buf, n, flags, to, tolen);
	return sock_mediated_write(c, buf, n, flags);
}

SHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct conn *c = sock_hooked_write(fd);

	if (!c || c->rq == RQ_OPAQUE || !msg || msg->msg_name || msg->msg_controllen ||
	    (flags & MSG_OOB))
		return real_sendmsg(fd, msg, flags);
	return sock_write_iov(c, msg->msg_iov, (int)msg->msg_iovlen, flags);
}

SHIM_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	struct conn *c = sock_hooked_write(fd);

	if (!c || c->rq == RQ_OPAQUE || cnt <= 0)
		return real_writev(fd, iov, cnt);
	return sock_write_iov(c, iov, cnt, 0);
}

/* ---- reads ------------------------------------------------------------------------- */

/* Before a read: the 403 from memory when the socketpair could not be set up. Returns
 * >= 0 to answer with, -1 to go to the real function. */
static ssize_t sock_read_pre(struct conn *c, void *buf, size_t n, bool peek)
{
	if (!conn_serves_from_memory(c))
		return -1;
	return (ssize_t)conn_deny_read(c, buf, n, peek);
}

/* After a read: observe the bytes, serve a waiting refusal at end-of-stream. Returns true
 * when the caller should read again (the fd now holds the 403). */
static bool sock_read_post(struct conn *c, const struct iovec *iov, int cnt, ssize_t r, bool peek)
{
	if (peek)
		return false;
	if (r > 0) {
		size_t left = (size_t)r;

		for (int i = 0; i < cnt && left; i++) {
			size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;

			conn_after_read(c, iov[i].iov_base, k);
			left -= k;
		}
		return false;
	}
	if (r == 0) {
		bool was = c->deny_pending;

		conn_after_eof(c);
		return was && c->denied;
	}
	return false;
}

static ssize_t sock_recv_common(struct conn *c, int fd, void *buf, size_t n, int flags,
				struct sockaddr *from, socklen_t *fromlen, int how)
{
	struct iovec iov = {buf, n};
	bool peek = flags & MSG_PEEK;
	ssize_t r;

	for (int again = 0; again < 2; again++) {
		r = sock_read_pre(c, buf, n, peek);
		if (r >= 0)
			return r;
		if (how == 0)
			r = real_read(fd, buf, n);
		else if (how == 1)
			r = real_recv(fd, buf, n, flags);
		else
			r = real_recvfrom(fd, buf, n, flags, from, fromlen);
		if (!sock_read_post(c, &iov, 1, r, peek))
			break;
	}
	return r;
}

SHIM_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	struct conn *c = sock_hooked(fd);

	if (!c || !conn_is_http(c))
		return real_read(fd, buf, n);
	return sock_recv_common(c, fd, buf, n, 0, NULL, NULL, 0);
}

SHIM_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	struct conn *c = sock_hooked(fd);

	if (!c || !conn_is_http(c))
		return real_recv(fd, buf, n, flags);
	return sock_recv_common(c, fd, buf, n, flags, NULL, NULL, 1);
}

SHIM_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *from,
			     socklen_t *fromlen)
{
	struct conn *c = sock_hooked(fd);

	if (!c || !conn_is_http(c))
		return real_recvfrom(fd, buf, n, flags, from, fromlen);
	return sock_recv_common(c, fd, buf, n, flags, from, fromlen, 2);
}

static ssize_t sock_iov_from_memory(struct conn *c, const struct iovec *iov, int cnt, bool peek)
{
	ssize_t total = 0;

	if (!conn_serves_from_memory(c))
		return -1;
	for (int i = 0; i < cnt; i++) {
		size_t k = conn_deny_read(c, iov[i].iov_base, iov[i].iov_len, peek);

		total += (ssize_t)k;
		if (k < iov[i].iov_len || peek)
			break;
	}
	return total;
}

SHIM_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct conn *c = sock_hooked(fd);
	bool peek = flags & MSG_PEEK;
	ssize_t r = -1;

	if (!c || !conn_is_http(c) || !msg)
		return real_recvmsg(fd, msg, flags);
	for (int again = 0; again < 2; again++) {
		r = sock_iov_from_memory(c, msg->msg_iov, (int)msg->msg_iovlen, peek);
		if (r >= 0) {
			msg->msg_controllen = 0;
			msg->msg_flags = 0;
			return r;
		}
		r = real_recvmsg(fd, msg, flags);
		if (!sock_read_post(c, msg->msg_iov, (int)msg->msg_iovlen, r, peek))
			break;
	}
	return r;
}

SHIM_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	struct conn *c = sock_hooked(fd);
	ssize_t r = -1;

	if (!c || !conn_is_http(c))
		return real_readv(fd, iov, cnt);
	for (int again = 0; again < 2; again++) {
		r = sock_iov_from_memory(c, iov, cnt, false);
		if (r >= 0)
			return r;
		r = real_readv(fd, iov, cnt);
		if (!sock_read_post(c, iov, cnt, r, false))
			break;
	}
	return r;
}

/* Fortified programs (-D_FORTIFY_SOURCE) call these instead of read/recv/recvfrom. */
SHIM_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		__builtin_trap();
	return read(fd, buf, n);
}

SHIM_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	if (n > buflen)
		__builtin_trap();
	return recv(fd, buf, n, flags);
}

SHIM_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
				   struct sockaddr *from, socklen_t *fromlen)
{
	if (n > buflen)
		__builtin_trap();
	return recvfrom(fd, buf, n, flags, from, fromlen);
}

/* ---- close ------------------------------------------------------------------------- */

SHIM_EXPORT int close(int fd)
{
	struct conn *c;
	int rc, saved;

	shim_init();
	if (fd < 0 || fd >= SOCK_FD_MAX || !__atomic_load_n(&sock_table[fd], __ATOMIC_RELAXED))
		return real_close(fd);
	c = __atomic_exchange_n(&sock_table[fd], NULL, __ATOMIC_ACQ_REL);
	rc = real_close(fd);
	saved = errno;
	conn_free(c);
	errno = saved;
	return rc;
}

/* ---- exec and spawn ---------------------------------------------------------------- */

/* The new environment lives on the stack: a vfork child may be the caller. That is also why
 * each hook below repeats its two buffers rather than sharing a helper that would return
 * them: they must live in the hook's own frame until the real call. */
#define SOCK_ENV_SLOTS 2048
#define SOCK_ENV_STR 8192

SHIM_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	char *slots[SOCK_ENV_SLOTS];
	char str[SOCK_ENV_STR];

	shim_init();
	return real_execve(path, argv,
			   shim_child_env(envp, slots, SOCK_ENV_SLOTS, str, sizeof(str)));
}

SHIM_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	char *slots[SOCK_ENV_SLOTS];
	char str[SOCK_ENV_STR];

	shim_init();
	return real_execvpe(file, argv,
			    shim_child_env(envp, slots, SOCK_ENV_SLOTS, str, sizeof(str)));
}

SHIM_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
			    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	char *slots[SOCK_ENV_SLOTS];
	char str[SOCK_ENV_STR];

	shim_init();
	return real_posix_spawn(pid, path, fa, attr, argv,
				shim_child_env(envp, slots, SOCK_ENV_SLOTS, str, sizeof(str)));
}

SHIM_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			     const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	char *slots[SOCK_ENV_SLOTS];
	char str[SOCK_ENV_STR];

	shim_init();
	return real_posix_spawnp(pid, file, fa, attr, argv,
				 shim_child_env(envp, slots, SOCK_ENV_SLOTS, str, sizeof(str)));
}
