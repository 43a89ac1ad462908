// SPDX-License-Identifier: MIT
/*
 * shim: initialisation, real_* resolution, the re-entrancy guard, debug output and the
 * environment children are given back. The hooks themselves live in hooks_sock.c and
 * hooks_ssl.c; this file exports nothing.
 */
#include "shim.h"
#include "table.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread int shim_guard __attribute__((tls_model("initial-exec")));
struct shim_env shim_env;

int (*real_connect)(int, const struct sockaddr *, socklen_t);
int (*real_close)(int);
ssize_t (*real_write)(int, const void *, size_t);
ssize_t (*real_send)(int, const void *, size_t, int);
ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
ssize_t (*real_writev)(int, const struct iovec *, int);
ssize_t (*real_read)(int, void *, size_t);
ssize_t (*real_recv)(int, void *, size_t, int);
ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
ssize_t (*real_recvmsg)(int, struct msghdr *, int);
ssize_t (*real_readv)(int, const struct iovec *, int);
int (*real_execve)(const char *, char *const[], char *const[]);
int (*real_execvpe)(const char *, char *const[], char *const[]);
int (*real_posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			const posix_spawnattr_t *, char *const[], char *const[]);
int (*real_posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			 const posix_spawnattr_t *, char *const[], char *const[]);

/* The DEPUTY_* variables and LD_PRELOAD as this process started, for its children. */
#define SHIM_ENV_MAX 16
static char shim_env_saved[SHIM_ENV_MAX][1024];
static int shim_env_nsaved;
static char shim_preload_saved[4096];

static pthread_once_t shim_once = PTHREAD_ONCE_INIT;
static int shim_ready;

void shim_debug(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (!shim_env.debug)
		return;
	memcpy(line, "deputy: ", 8);
	va_start(ap, fmt);
	n = vsnprintf(line + 8, sizeof(line) - 9, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	n += 8;
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	line[n++] = '\n';
	/* A raw system call: never re-enters the write hook, whatever the guard says. */
	(void)syscall(SYS_write, 2, line, (size_t)n);
}

static ssize_t shim_enosys(void)
{
	errno = ENOSYS;
	return -1;
}

/* dlsym(RTLD_NEXT), refusing an answer that is the hook itself (another copy of the shim
 * loaded twice would otherwise call itself forever). */
static void *shim_next(const char *name)
{
	void *self = dlsym(RTLD_DEFAULT, name);
	void *p = dlsym(RTLD_NEXT, name);
	Dl_info a, b;

	if (p && self == p && dladdr(p, &a) && dladdr((void *)shim_init, &b) &&
	    a.dli_fbase == b.dli_fbase)
		p = NULL;
	if (!p) {
		shim_debug("cannot resolve %s: calls fail with ENOSYS", name);
		return (void *)shim_enosys;
	}
	return p;
}

struct shim_find {
	const char *want;
	char path[4096];
};

static int shim_find_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	struct shim_find *f = data;
	const char *base;

	if (!info->dlpi_name || !info->dlpi_name[0])
		return 0;
	base = strrchr(info->dlpi_name, '/');
	base = base ? base + 1 : info->dlpi_name;
	if (strncmp(base, f->want, strlen(f->want)) != 0)
		return 0;
	snprintf(f->path, sizeof(f->path), "%s", info->dlpi_name);
	return 1;
}

/* Python's _ssl loads libssl with RTLD_LOCAL: RTLD_NEXT cannot see it. Ask the loader for
 * the libssl already mapped instead (RTLD_NOLOAD never loads a second copy). */
void *shim_ssl_sym(const char *name, void *self)
{
	static const char *const sonames[] = {"libssl.so.3", "libssl.so"};
	void *p = dlsym(RTLD_NEXT, name);

	if (p && p != self)
		return p;
	p = NULL;
	for (size_t i = 0; i < sizeof(sonames) / sizeof(sonames[0]) && !p; i++) {
		void *h = dlopen(sonames[i], RTLD_LAZY | RTLD_NOLOAD);

		if (!h)
			continue;
		p = dlsym(h, name);
		dlclose(h);
	}
	if (!p) {
		struct shim_find f = {.want = "libssl.so"};

		if (dl_iterate_phdr(shim_find_cb, &f) == 1) {
			void *h = dlopen(f.path, RTLD_LAZY | RTLD_NOLOAD);

			if (h) {
				p = dlsym(h, name);
				dlclose(h);
			}
		}
	}
	if (p == self)
		p = NULL;
	if (!p)
		shim_debug("OpenSSL function %s not found in this process", name);
	return p;
}

bool shim_have_libssl(void)
{
	static bool seen; /* libssl is never unloaded once a program used it */
	struct shim_find f = {.want = "libssl.so"};

	if (__atomic_load_n(&seen, __ATOMIC_RELAXED))
		return true;
	if (dl_iterate_phdr(shim_find_cb, &f) != 1)
		return false;
	__atomic_store_n(&seen, true, __ATOMIC_RELAXED);
	return true;
}

static void shim_atfork_child(void)
{
	sock_atfork_child();
	ssl_atfork_child();
	dpc_atfork_child();
	tbl_atfork_child();
}

static void shim_save_env(void)
{
	extern char **environ;
	const char *v;

	for (char **e = environ; e && *e; e++) {
		if (strncmp(*e, "DEPUTY_", 7) != 0 || shim_env_nsaved == SHIM_ENV_MAX)
			continue;
		if (strlen(*e) >= sizeof(shim_env_saved[0]))
			continue;
		strcpy(shim_env_saved[shim_env_nsaved++], *e);
	}
	v = getenv("LD_PRELOAD");
	if (v && strlen(v) < sizeof(shim_preload_saved))
		strcpy(shim_preload_saved, v);
}

static void shim_do_init(void)
{
	const char *v;
	Dl_info self;

	shim_guard++;
	v = getenv("DEPUTY_DEBUG");
	shim_env.debug = v && strcmp(v, "1") == 0;

#define RESOLVE(name) real_##name = (__typeof__(real_##name))shim_next(#name)
	RESOLVE(connect);
	RESOLVE(close);
	RESOLVE(write);
	RESOLVE(send);
	RESOLVE(sendto);
	RESOLVE(sendmsg);
	RESOLVE(writev);
	RESOLVE(read);
	RESOLVE(recv);
	RESOLVE(recvfrom);
	RESOLVE(recvmsg);
	RESOLVE(readv);
	RESOLVE(execve);
	RESOLVE(execvpe);
	RESOLVE(posix_spawn);
	RESOLVE(posix_spawnp);
#undef RESOLVE

	v = getenv("DEPUTY_SESSION");
	if (v && *v && strlen(v) < sizeof(shim_env.session)) {
		strcpy(shim_env.session, v);
		shim_env.have_session = true;
	}
	v = getenv("DEPUTY_SOCKET");
	if (!v || !*v || strlen(v) >= sizeof(shim_env.socket))
		v = "/run/deputy/deputy.sock";
	strcpy(shim_env.socket, v);
	if (dladdr((void *)shim_init, &self) && self.dli_fname &&
	    strlen(self.dli_fname) < sizeof(shim_env.self_path))
		strcpy(shim_env.self_path, self.dli_fname);
	shim_save_env();
	/* Other sessions' agents may run as the same user: undumpable, this process cannot be
	 * ptraced, have its descriptors copied (pidfd_getfd) or its environment read by them.
	 * exec makes a process dumpable again; the shim in the new image does this again. */
	if (shim_env.have_session)
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	pthread_atfork(dpc_atfork_prepare, dpc_atfork_parent, shim_atfork_child);
	if (!shim_env.have_session)
		shim_debug("no DEPUTY_SESSION: every HTTP request will be refused");
	shim_debug("loaded (session %s, deputyd at %s)",
		   shim_env.have_session ? shim_env.session : "none", shim_env.socket);
	__atomic_store_n(&shim_ready, 1, __ATOMIC_RELEASE);
	shim_guard--;
}

void shim_init(void)
{
	if (__atomic_load_n(&shim_ready, __ATOMIC_ACQUIRE))
		return;
	pthread_once(&shim_once, shim_do_init);
}

__attribute__((constructor)) static void shim_constructor(void)
{
	shim_init();
}

/* ---- children's environment ------------------------------------------------------------ */

static bool shim_preload_has_self(const char *val)
{
	const char *base = strrchr(shim_env.self_path, '/');
	size_t bl;

	base = base ? base + 1 : "libdeputy.so";
	bl = strlen(base);
	/* LD_PRELOAD elements are separated by ':' or spaces. */
	for (const char *p = val; *p;) {
		size_t n = strcspn(p, ": \t");

		if (n) {
			const char *eb = p + n;
			const char *s = p;

			for (const char *q = p; q < eb; q++)
				if (*q == '/')
					s = q + 1;
			if ((size_t)(eb - s) == bl && memcmp(s, base, bl) == 0)
				return true;
		}
		p += n;
		while (*p == ':' || *p == ' ' || *p == '\t')
			p++;
	}
	return false;
}

static bool shim_env_has(char *const envp[], const char *entry)
{
	for (size_t i = 0; envp && envp[i]; i++)
		if (strcmp(envp[i], entry) == 0)
			return true;
	return false;
}

static bool shim_name_eq(const char *entry, const char *saved)
{
	size_t n = strcspn(saved, "=");

	return strncmp(entry, saved, n) == 0 && entry[n] == '=';
}

char *const *shim_child_env(char *const envp[], char **slots, size_t nslots, char *strbuf,
			    size_t strcap)
{
	const char *their_preload = NULL;
	bool need = false;
	size_t n = 0, o = 0;
	const char *self = shim_env.self_path[0] ? shim_env.self_path : shim_preload_saved;

	for (size_t i = 0; envp && envp[i]; i++)
		if (strncmp(envp[i], "LD_PRELOAD=", 11) == 0)
			their_preload = envp[i] + 11;
	if (!self[0])
		return envp;
	if (!their_preload || !shim_preload_has_self(their_preload))
		need = true;
	for (int k = 0; k < shim_env_nsaved && !need; k++)
		if (!shim_env_has(envp, shim_env_saved[k]))
			need = true;
	if (!need)
		return envp;

	for (size_t i = 0; envp && envp[i]; i++) {
		bool drop = strncmp(envp[i], "LD_PRELOAD=", 11) == 0;

		for (int k = 0; k < shim_env_nsaved && !drop; k++)
			drop = shim_name_eq(envp[i], shim_env_saved[k]);
		if (drop)
			continue;
		if (n + 1 >= nslots)
			return envp;
		slots[n++] = envp[i];
	}
	for (int k = 0; k < shim_env_nsaved; k++) {
		if (n + 1 >= nslots)
			return envp;
		slots[n++] = shim_env_saved[k];
	}
	{
		int w;

		if (their_preload && shim_preload_has_self(their_preload))
			w = snprintf(strbuf, strcap, "LD_PRELOAD=%s", their_preload);
		else if (their_preload && *their_preload)
			w = snprintf(strbuf, strcap, "LD_PRELOAD=%s:%s", self, their_preload);
		else
			w = snprintf(strbuf, strcap, "LD_PRELOAD=%s", self);
		if (w < 0 || (size_t)w >= strcap || n + 1 >= nslots)
			return envp;
		o = (size_t)w + 1;
		(void)o;
		slots[n++] = strbuf;
	}
	slots[n] = NULL;
	return slots;
}
