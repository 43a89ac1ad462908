/* SPDX-License-Identifier: MIT */
/*
 * proc: what the kernel says about another process (alive, parent, start time, uids, name).
 * A pid alone may name a new process by the time it is read; each answer is only as good as
 * a pidfd of the process checked alive after the read (proc_alive).
 */
#ifndef DEPUTY_PROC_H
#define DEPUTY_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/* A pidfd of pid (PIDFD_OPEN, close-on-exec), or -errno. */
int proc_pidfd(pid_t pid);
/* Whether the process of pidfd is still running (a pidfd of -1 counts as alive). */
bool proc_alive(int pidfd);
/* Whether two pidfds pin the same process, also after it exited: 1 or 0; -EOPNOTSUPP where
 * pidfds do not name their process (before pidfs, Linux 6.9, they share one inode). */
int proc_same(int pidfd_a, int pidfd_b);
/* The parent pid and the start time (clock ticks after boot) from /proc/PID/stat. */
int proc_stat(pid_t pid, pid_t *ppid, uint64_t *start) DP_WUR;
/* The real and effective uids from /proc/PID/status. */
int proc_uids(pid_t pid, uid_t *ruid, uid_t *euid) DP_WUR;
/* The process's name (/proc/PID/comm); "" when it cannot be read. */
void proc_comm(pid_t pid, char *out, size_t outsz);

#endif
