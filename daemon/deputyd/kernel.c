// SPDX-License-Identifier: MIT
/*
 * kernel: the userspace half of deputy's kernel layer (see kernel.h for the contract and
 * bpf/deputy.bpf.c for what the programs decide): loading, attaching, pinning, the event
 * ring. The maps' contents are kernel_policy.c's, the audit log's words kernel_names.c's.
 *
 * Lifecycle and restart. Everything that must outlive deputyd is pinned in bpffs under
 * /sys/fs/bpf/deputy/<parent cgroup, '/' -> '_'>/:
 *   sessions, allow, events, lost, conns, udp_seen,  the maps (libbpf pin_path: reused on
 *   proxy_cfg, proxied, sk_states                     load when compatible)
 *   link_<program>                                    one bpf_link per program
 * Links are attached with bpf_link_create (multi-attach: other programs on the same cgroup
 * keep running, and ours cannot be replaced by a legacy attach). On kernel_open() an
 * existing link is taken over with bpf_link_update(), which swaps the program atomically,
 * so there is no moment without enforcement across a deputyd restart or upgrade. The raw
 * and syscall tracepoint links cannot be updated: the new one is attached before the old one
 * is dropped.
 * State pinned for a cgroup that no longer exists (the link reports another cgroup id), or
 * maps whose layout changed (upgrade), are thrown away and rebuilt: the next deputyd then
 * re-registers its live sessions with kernel_session_set().
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "cgroup.h"
#include "kernel_int.h"

#define KERNEL_BPFFS "/sys/fs/bpf"
#define KERNEL_PIN_ROOT KERNEL_BPFFS "/deputy"

static const char *const kernel_prog_names[KP_N_] = {
    [KP_CONNECT4] = "connect4",
    [KP_CONNECT6] = "connect6",
    [KP_SENDMSG4] = "sendmsg4",
    [KP_SENDMSG6] = "sendmsg6",
    [KP_SOCK_CREATE] = "sock_create",
    [KP_CONNECT_UNIX] = "connect_unix",
    [KP_SOCK_STATE] = "sock_state",
    [KP_SOCKET_ENTER] = "socket_enter",
    [KP_SETSOCKOPT] = "setsockopt",
    [KP_GETSOCKOPT] = "getsockopt",
    [KP_GETPEERNAME4] = "getpeername4",
    [KP_GETPEERNAME6] = "getpeername6",
    [KP_SOCKOPS] = "sockops",
    [KP_BIND4] = "bind4",
    [KP_BIND6] = "bind6",
};

static int kernel_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	enum dp_log_level l = level == LIBBPF_WARN   ? DP_LOG_WARN
			      : level == LIBBPF_INFO ? DP_LOG_INFO
						     : DP_LOG_DEBUG;

	dp_vlog(l, fmt, ap);
	return 0;
}

static struct bpf_program *kernel_prog(struct deputy_bpf *skel, enum kernel_prog p)
{
	switch (p) {
	case KP_CONNECT4:
		return skel->progs.deputy_connect4;
	case KP_CONNECT6:
		return skel->progs.deputy_connect6;
	case KP_SENDMSG4:
		return skel->progs.deputy_sendmsg4;
	case KP_SENDMSG6:
		return skel->progs.deputy_sendmsg6;
	case KP_SOCK_CREATE:
		return skel->progs.deputy_sock_create;
	case KP_CONNECT_UNIX:
		return skel->progs.deputy_connect_unix;
	case KP_SOCK_STATE:
		return skel->progs.deputy_sock_state;
	case KP_SOCKET_ENTER:
		return skel->progs.deputy_socket_enter;
	case KP_SETSOCKOPT:
		return skel->progs.deputy_setsockopt;
	case KP_GETSOCKOPT:
		return skel->progs.deputy_getsockopt;
	case KP_GETPEERNAME4:
		return skel->progs.deputy_getpeername4;
	case KP_GETPEERNAME6:
		return skel->progs.deputy_getpeername6;
	case KP_SOCKOPS:
		return skel->progs.deputy_sockops;
	case KP_BIND4:
		return skel->progs.deputy_bind4;
	case KP_BIND6:
		return skel->progs.deputy_bind6;
	case KP_N_:
		break;
	}
	return NULL;
}

/* Absolute path and the relative part below the cgroup2 root of a parent cgroup. */
static int kernel_parent_path(const char *parent, char *abs, size_t abssz, const char **rel,
			      struct dp_err *err)
{
	char root[PATH_MAX];
	size_t rl;
	int r;

	r = cgroup_root(root, sizeof(root));
	if (r < 0) {
		dp_err_set(err, "no cgroup2 mount in /proc/self/mountinfo");
		return r;
	}
	rl = strlen(root);
	while (rl > 1 && root[rl - 1] == '/')
		root[--rl] = '\0';
	if (parent[0] == '/') {
		if (strncmp(parent, root, rl) != 0 || (parent[rl] != '/' && parent[rl] != '\0')) {
			dp_err_set(err, "%s is not below the cgroup2 mount %s", parent, root);
			return -EINVAL;
		}
		r = snprintf(abs, abssz, "%s", parent);
	} else {
		r = snprintf(abs, abssz, "%s/%s", root, parent);
	}
	if (r < 0 || (size_t)r >= abssz) {
		dp_err_set(err, "cgroup path too long");
		return -ENAMETOOLONG;
	}
	for (size_t n = strlen(abs); n > rl + 1 && abs[n - 1] == '/'; n--)
		abs[n - 1] = '\0';
	*rel = abs + rl;
	while (**rel == '/')
		(*rel)++;
	if (strstr(*rel, "..")) {
		dp_err_set(err, "cgroup path %s must not contain ..", parent);
		return -EINVAL;
	}
	return 0;
}

/* Level of a cgroup below the root (root = 0), from its relative path. */
static unsigned int kernel_cgroup_level(const char *rel)
{
	unsigned int level = 0;

	for (const char *p = rel; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		level++;
		while (*p && *p != '/')
			p++;
	}
	return level;
}

/* ---- bpffs and pins ------------------------------------------------------------------ */

static int kernel_mount_bpffs(struct dp_err *err)
{
	struct statfs sf;

	if (statfs(KERNEL_BPFFS, &sf) == 0 && sf.f_type == BPF_FS_MAGIC)
		return 0;
	if (mount("bpf", KERNEL_BPFFS, "bpf", 0, "mode=0700") != 0) {
		int e = errno;

		dp_err_set(err, "mounting bpffs on %s: %s", KERNEL_BPFFS, strerror(e));
		return -e;
	}
	pr_info("mounted bpffs on %s", KERNEL_BPFFS);
	return 0;
}

static int kernel_pin_path(const struct dp_kernel *k, const char *name, char *out, size_t sz)
{
	int r = snprintf(out, sz, "%s/%s", k->pin_dir, name);

	return r < 0 || (size_t)r >= sz ? -ENAMETOOLONG : 0;
}

static int kernel_link_path(const struct dp_kernel *k, enum kernel_prog p, char *out, size_t sz)
{
	char name[64];

	snprintf(name, sizeof(name), "link_%s", kernel_prog_names[p]);
	return kernel_pin_path(k, name, out, sz);
}

/* Remove every pin in the directory (and the directory): forgets all pinned state. */
static void kernel_unpin_all(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) != 0)
			pr_warn("removing %s/%s: %s", dir, de->d_name, strerror(errno));
	}
	closedir(d);
	rmdir(dir);
	rmdir(KERNEL_PIN_ROOT); /* fails while other parents use it: fine */
}

/* Pinned state is adopted only if its links are attached to this very cgroup: a parent
 * cgroup removed and created again has a new id, and the old links are defunct. */
static bool kernel_pins_current(const struct dp_kernel *k)
{
	struct bpf_link_info info;
	uint32_t len = sizeof(info);
	char path[PATH_MAX];
	bool ok;
	int fd;

	if (kernel_link_path(k, KP_CONNECT4, path, sizeof(path)) < 0)
		return false;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return errno == ENOENT; /* nothing attached yet: maps alone may be reused */
	memset(&info, 0, sizeof(info));
	ok = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_CGROUP &&
	     info.cgroup.cgroup_id == k->parent_cgid;
	close(fd);
	return ok;
}

/* ---- load and attach ----------------------------------------------------------------- */

/* libbpf 1.1 predates BPF_CGROUP_UNIX_CONNECT (Linux 6.7): find its value in the kernel's
 * BTF, which also tells whether the kernel has it. -ENOENT if not. */
static int kernel_unix_connect_type(void)
{
	struct btf *btf = btf__load_vmlinux_btf();
	const struct btf_type *t;
	const struct btf_enum *e;
	int id, ret = -ENOENT;

	if (!btf)
		return -ENOENT;
	id = btf__find_by_name_kind(btf, "bpf_attach_type", BTF_KIND_ENUM);
	t = id > 0 ? btf__type_by_id(btf, id) : NULL;
	if (t) {
		e = btf_enum(t);
		for (unsigned int i = 0; i < btf_vlen(t); i++) {
			const char *name = btf__name_by_offset(btf, e[i].name_off);

			if (name && strcmp(name, "BPF_CGROUP_UNIX_CONNECT") == 0) {
				ret = e[i].val;
				break;
			}
		}
	}
	btf__free(btf);
	return ret;
}

static int kernel_load(struct dp_kernel *k, unsigned int session_level, struct dp_err *err)
{
	struct bpf_map *maps[] = {
	    k->skel->maps.sessions,  k->skel->maps.allow,   k->skel->maps.events,
	    k->skel->maps.lost,	     k->skel->maps.conns,   k->skel->maps.udp_seen,
	    k->skel->maps.proxy_cfg, k->skel->maps.proxied, k->skel->maps.sk_states};
	char path[PATH_MAX];
	int r, unix_type;

	k->skel->rodata->session_level = session_level;
	k->skel->rodata->have_current_task =
	    libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_current_task,
				    NULL) == 1 &&
	    libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK, BPF_FUNC_get_current_task, NULL) ==
		1;
	if (!k->skel->rodata->have_current_task)
		pr_info("kernel: bpf_get_current_task unavailable: io_uring workers are named "
			"by their thread name");
	unix_type = kernel_unix_connect_type();
	if (unix_type < 0) {
		pr_info("kernel: no BPF_CGROUP_UNIX_CONNECT: Unix socket connects not logged");
		bpf_program__set_autoload(k->skel->progs.deputy_connect_unix, false);
	} else {
		bpf_program__set_expected_attach_type(k->skel->progs.deputy_connect_unix,
						      (enum bpf_attach_type)unix_type);
	}
	for (size_t i = 0; i < DP_ARRAY_SIZE(maps); i++) {
		r = kernel_pin_path(k, bpf_map__name(maps[i]), path, sizeof(path));
		if (r == 0)
			r = bpf_map__set_pin_path(maps[i], path);
		if (r < 0) {
			dp_err_set(err, "pin path for map %s: %s", bpf_map__name(maps[i]),
				   strerror(-r));
			return r;
		}
	}
	r = deputy_bpf__load(k->skel);
	if (r < 0)
		dp_err_set(err, "loading BPF programs: %s", strerror(-r));
	return r;
}

/* Links that are not on the cgroup: they can neither be updated in place nor detached. */
static bool kernel_on_cgroup(enum kernel_prog p)
{
	return p != KP_SOCK_STATE && p != KP_SOCKET_ENTER;
}

/* libbpf finds syscall tracepoints through tracefs, which may not be mounted. */
static void kernel_mount_tracefs(void)
{
	if (access("/sys/kernel/tracing/events", F_OK) == 0 ||
	    access("/sys/kernel/debug/tracing/events", F_OK) == 0)
		return;
	if (mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL) != 0)
		pr_warn("kernel: mounting tracefs on /sys/kernel/tracing: %s", strerror(errno));
}

/* A new link for program p: its fd, or -errno. */
static int kernel_link_new(struct dp_kernel *k, enum kernel_prog p, struct bpf_program *prog)
{
	struct bpf_link *l;
	int fd;

	switch (p) {
	case KP_SOCK_STATE:
		fd = bpf_raw_tracepoint_open("inet_sock_set_state", bpf_program__fd(prog));
		return fd < 0 ? -errno : fd;
	case KP_SOCKET_ENTER:
		kernel_mount_tracefs();
		l = bpf_program__attach_tracepoint(prog, "syscalls", "sys_enter_socket");
		if (!l)
			return -errno;
		/* Keep our own fd of the link; libbpf's handle goes without detaching it. */
		fd = fcntl(bpf_link__fd(l), F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			fd = -errno;
		bpf_link__disconnect(l);
		bpf_link__destroy(l);
		return fd;
	default:
		fd = bpf_link_create(bpf_program__fd(prog), k->cg_fd,
				     bpf_program__expected_attach_type(prog), NULL);
		return fd < 0 ? -errno : fd;
	}
}

static int kernel_attach_one(struct dp_kernel *k, enum kernel_prog p, struct dp_err *err)
{
	struct bpf_program *prog = kernel_prog(k->skel, p);
	int prog_fd = bpf_program__fd(prog);
	char path[PATH_MAX];
	int fd, old = -1, r;

	if (prog_fd < 0)
		return 0; /* not loaded (connect_unix where unsupported) */
	r = kernel_link_path(k, p, path, sizeof(path));
	if (r < 0)
		return r;
	old = bpf_obj_get(path);
	if (old >= 0 && kernel_on_cgroup(p)) {
		if (bpf_link_update(old, prog_fd, NULL) == 0) {
			k->link_fd[p] = old;
			pr_debug("kernel: %s: took over the pinned link", kernel_prog_names[p]);
			return 0;
		}
		pr_warn("kernel: %s: updating pinned link: %s; attaching anew",
			kernel_prog_names[p], strerror(errno));
	}
	fd = kernel_link_new(k, p, prog);
	if (fd < 0 && p == KP_SOCKET_ENTER) {
		/* Only the AF_PACKET guard is lost: still worth running without it. */
		pr_warn("kernel: syscalls/sys_enter_socket: %s: packet sockets not guarded",
			strerror(-fd));
		if (old >= 0)
			close(old);
		return 0;
	}
	if (fd < 0) {
		dp_err_set(err, "attaching %s: %s", kernel_prog_names[p], strerror(-fd));
		if (old >= 0)
			close(old);
		return fd;
	}
	/* The old link goes only now, so the hook was never missing. */
	if (old >= 0) {
		unlink(path);
		close(old);
	}
	k->link_fd[p] = fd;
	if (bpf_obj_pin(fd, path) != 0) {
		r = -errno;
		if (!kernel_on_cgroup(p)) {
			/* An old kernel's perf-event attachment: works, just not across restarts.
			 */
			pr_info("kernel: %s: cannot pin (%s)", kernel_prog_names[p], strerror(-r));
			return 0;
		}
		dp_err_set(err, "pinning %s: %s", path, strerror(-r));
		return r;
	}
	return 0;
}

static void kernel_free(struct dp_kernel *k, bool unpin)
{
	if (!k)
		return;
	ring_buffer__free(k->rb);
	for (int i = 0; i < KP_N_; i++) {
		if (k->link_fd[i] < 0)
			continue;
		/* The last close frees a link from a workqueue, i.e. a little later: detach
		 * now, so that enforcement has ended when kernel_close() returns. */
		if (unpin && kernel_on_cgroup(i) && bpf_link_detach(k->link_fd[i]) != 0)
			pr_warn("kernel: detaching %s: %s", kernel_prog_names[i], strerror(errno));
		close(k->link_fd[i]);
	}
	deputy_bpf__destroy(k->skel);
	if (unpin && k->pin_dir[0])
		kernel_unpin_all(k->pin_dir);
	if (k->cg_fd >= 0)
		close(k->cg_fd);
	free(k);
}

static int kernel_on_event(void *ctx, void *data, size_t size)
{
	struct dp_kernel *k = ctx;

	if (size >= sizeof(struct dp_event) && k->fn)
		k->fn(k->ctx, data);
	return 0;
}

int kernel_open(const char *parent_cgroup, dp_kernel_event_fn fn, void *ctx, struct dp_kernel **out,
		struct dp_err *err)
{
	char abs[PATH_MAX], name[NAME_MAX + 1];
	const char *rel;
	struct dp_kernel *k;
	int r;

	*out = NULL;
	libbpf_set_print(kernel_libbpf_print);
	k = calloc(1, sizeof(*k));
	if (!k) {
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	k->cg_fd = -1;
	for (int i = 0; i < KP_N_; i++)
		k->link_fd[i] = -1;
	k->fn = fn;
	k->ctx = ctx;

	r = kernel_parent_path(parent_cgroup, abs, sizeof(abs), &rel, err);
	if (r < 0)
		goto fail;
	k->cg_fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (k->cg_fd < 0) {
		r = -errno;
		dp_err_set(err, "opening cgroup %s: %s", abs, strerror(-r));
		goto fail;
	}
	k->parent_cgid = cgroup_id(abs);
	if (!k->parent_cgid) {
		r = -errno;
		dp_err_set(err, "cgroup id of %s: %s", abs, strerror(-r));
		goto fail;
	}

	r = kernel_mount_bpffs(err);
	if (r < 0)
		goto fail;
	if (!*rel)
		snprintf(name, sizeof(name), "root");
	else if (strlen(rel) >= sizeof(name)) {
		r = -ENAMETOOLONG;
		dp_err_set(err, "cgroup path %s too long", rel);
		goto fail;
	} else {
		snprintf(name, sizeof(name), "%s", rel);
		for (char *c = name; *c; c++)
			if (*c == '/')
				*c = '_';
	}
	snprintf(k->pin_dir, sizeof(k->pin_dir), "%s/%s", KERNEL_PIN_ROOT, name);
	if (!kernel_pins_current(k)) {
		pr_info("kernel: discarding stale pinned state in %s", k->pin_dir);
		kernel_unpin_all(k->pin_dir);
	}
	for (int attempt = 0;; attempt++) {
		r = dp_mkdir_p(k->pin_dir, 0700);
		if (r < 0) {
			dp_err_set(err, "creating %s: %s", k->pin_dir, strerror(-r));
			goto fail;
		}
		k->skel = deputy_bpf__open();
		if (!k->skel) {
			r = -errno;
			dp_err_set(err, "opening BPF object: %s", strerror(-r));
			goto fail;
		}
		r = kernel_load(k, kernel_cgroup_level(rel) + 1, err);
		if (r == 0)
			break;
		deputy_bpf__destroy(k->skel);
		k->skel = NULL;
		if (attempt > 0)
			goto fail;
		/* Most likely pinned maps of an older layout: start from scratch once. */
		pr_warn("kernel: %s; retrying without pinned state", err->msg);
		kernel_unpin_all(k->pin_dir);
	}

	for (int p = 0; p < KP_N_; p++) {
		r = kernel_attach_one(k, p, err);
		if (r < 0)
			goto fail;
	}
	k->rb = ring_buffer__new(bpf_map__fd(k->skel->maps.events), kernel_on_event, k, NULL);
	if (!k->rb) {
		r = -errno;
		dp_err_set(err, "ring buffer: %s", strerror(-r));
		goto fail;
	}
	pr_info("kernel: attached to %s (session level %u)", abs, kernel_cgroup_level(rel) + 1);
	*out = k;
	return 0;
fail:
	/* Pins are kept: if an older deputyd left them, its sessions stay enforced. */
	kernel_free(k, false);
	return r;
}

void kernel_close(struct dp_kernel *k)
{
	kernel_free(k, true);
}

void kernel_release(struct dp_kernel *k)
{
	kernel_free(k, false);
}

int kernel_fd(const struct dp_kernel *k)
{
	return ring_buffer__epoll_fd(k->rb);
}

int kernel_consume(struct dp_kernel *k)
{
	return ring_buffer__consume(k->rb);
}

int kernel_conn_lookup(const struct dp_kernel *k, uint64_t cookie, struct dp_conn *out)
{
	if (!cookie)
		return -ENOENT;
	if (bpf_map_lookup_elem(bpf_map__fd(k->skel->maps.conns), &cookie, out) != 0)
		return -errno;
	return 0;
}

uint64_t kernel_lost_events(const struct dp_kernel *k)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t total = 0, *vals;
	uint32_t zero = 0;

	if (ncpu <= 0)
		return 0;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return 0;
	if (bpf_map_lookup_elem(bpf_map__fd(k->skel->maps.lost), &zero, vals) == 0)
		for (int i = 0; i < ncpu; i++)
			total += vals[i];
	free(vals);
	return total;
}

/* ---- environment --------------------------------------------------------------------- */

int kernel_available(struct dp_err *err)
{
	char root[PATH_MAX];

	libbpf_set_print(kernel_libbpf_print);
	if (geteuid() != 0) {
		dp_err_set(err, "not running as root");
		return -EPERM;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
		dp_err_set(err, "the kernel has no BTF (/sys/kernel/btf/vmlinux)");
		return -ENOTSUP;
	}
	if (cgroup_root(root, sizeof(root)) < 0) {
		dp_err_set(err, "cgroup2 is not mounted");
		return -ENOENT;
	}
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, NULL) != 1 ||
	    libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK, NULL) != 1) {
		dp_err_set(err, "the kernel cannot run cgroup socket BPF programs");
		return -ENOTSUP;
	}
	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) != 1 ||
	    libbpf_probe_bpf_map_type(BPF_MAP_TYPE_LPM_TRIE, NULL) != 1) {
		dp_err_set(err, "the kernel lacks BPF ring buffers or LPM tries");
		return -ENOTSUP;
	}
	return 0;
}
