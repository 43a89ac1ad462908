/* SPDX-License-Identifier: MIT */
/*
 * cgroup: the cgroup v2 side of sessions. deputy keeps one parent cgroup (config "cgroup",
 * default "deputy") under the cgroup2 root, and one child per session. The cgroup2 root is
 * found in /proc/self/mountinfo: it is /sys/fs/cgroup on unified hosts, elsewhere on hybrid
 * ones (e.g. /sys/fs/cgroup/unified).
 */
#ifndef DEPUTY_CGROUP_H
#define DEPUTY_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/* The cgroup2 mount point (from /proc/self/mountinfo). 0, -ENOENT or -ENAMETOOLONG. */
int cgroup_root(char *out, size_t outsz) DP_WUR;
/* The cgroup id the kernel reports (bpf_get_current_cgroup_id()) of a cgroup2 directory,
 * or 0 with errno set. */
uint64_t cgroup_id(const char *path);
/* mkdir if missing (mode 0755). */
int cgroup_create(const char *path) DP_WUR;
/* Move pid into the cgroup at path. */
int cgroup_move(const char *path, pid_t pid) DP_WUR;
/* 1 if any process is in the cgroup (or a descendant), 0 if none, -errno. */
int cgroup_populated(const char *path);
/* SIGKILL every process in the cgroup (cgroup.kill; falls back to cgroup.procs). */
int cgroup_kill(const char *path);
/* rmdir; -EBUSY while populated. */
int cgroup_remove(const char *path);
/* The cgroup path (relative to the cgroup2 root, starting with '/') of a process. */
int cgroup_of_pid(pid_t pid, char *out, size_t outsz) DP_WUR;

#endif
