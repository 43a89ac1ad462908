/* SPDX-License-Identifier: MIT */
/*
 * shim: what every part of libdeputy.so shares — initialisation (constructor + pthread_once),
 * the real libc functions behind the hooks (resolved in one place, never the hook itself),
 * OpenSSL's real functions (resolved lazily from the libssl actually loaded), the
 * thread-local re-entrancy guard, the session environment and debug output.
 */
#ifndef DEPUTY_SHIM_H
#define DEPUTY_SHIM_H

#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SHIM_EXPORT __attribute__((visibility("default")))

/* Nonzero while the shim itself is calling into libc or OpenSSL on this thread: hooks
 * reached from there pass straight through. initial-exec: no allocation on first use. */
extern __thread int shim_guard __attribute__((tls_model("initial-exec")));

struct shim_env {
	bool debug;
	bool have_session;
	char session[128];
	char socket[108];
	char self_path[4096]; /* this library, for LD_PRELOAD restoration */
};
extern struct shim_env shim_env;

/* Every hook calls this first: cheap once initialised, safe from any context after the
 * constructor ran. */
void shim_init(void);

/* "deputy: …" on stderr when DEPUTY_DEBUG=1; async-signal-safe enough (stack buffer, one
 * write(2) system call). */
void shim_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The real libc functions. Set by shim_init(); never NULL afterwards (init aborts the
 * lookup of a symbol libc lacks by leaving a stub that fails with ENOSYS). */
extern int (*real_connect)(int, const struct sockaddr *, socklen_t);
extern int (*real_close)(int);
extern ssize_t (*real_write)(int, const void *, size_t);
extern ssize_t (*real_send)(int, const void *, size_t, int);
extern ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
extern ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
extern ssize_t (*real_writev)(int, const struct iovec *, int);
extern ssize_t (*real_read)(int, void *, size_t);
extern ssize_t (*real_recv)(int, void *, size_t, int);
extern ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
extern ssize_t (*real_recvmsg)(int, struct msghdr *, int);
extern ssize_t (*real_readv)(int, const struct iovec *, int);
extern int (*real_execve)(const char *, char *const[], char *const[]);
extern int (*real_execvpe)(const char *, char *const[], char *const[]);
extern int (*real_posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			       const posix_spawnattr_t *, char *const[], char *const[]);
extern int (*real_posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
				const posix_spawnattr_t *, char *const[], char *const[]);

/* An OpenSSL function from the libssl loaded in this process, or NULL (said once under
 * DEPUTY_DEBUG). Callers cache a non-NULL result. `self` is the hook of the same name, so
 * a lookup that finds the shim again is refused. */
void *shim_ssl_sym(const char *name, void *self);

/* Is the system's libssl (a shared libssl.so, whose functions the SSL hooks reach) mapped
 * in this process? A TLS stack linked into the program (Node, Bun) does not count. */
bool shim_have_libssl(void);

/* Builds the environment a child gets: envp with LD_PRELOAD holding this library and the
 * DEPUTY_* variables of this process put back. No allocation and no locks (a vfork child
 * may run it): the array lives in `slots` (nslots entries), strings in `strbuf`. Returns
 * the new envp, or envp itself when nothing needs changing or it does not fit. */
char *const *shim_child_env(char *const envp[], char **slots, size_t nslots, char *strbuf,
			    size_t strcap);

/* fork: the child inherits locks other threads may hold; each module resets its own. */
void sock_atfork_child(void);
void ssl_atfork_child(void);
void dpc_atfork_child(void);
/* ...and the client flushes its reports and is held across fork (client.c). */
void dpc_atfork_prepare(void);
void dpc_atfork_parent(void);

#endif
