// SPDX-License-Identifier: MIT
/*
 * proc: reads of /proc/PID for the peer and session checks, and the pidfd that makes them
 * trustworthy: a read is about the process the pidfd pins only if that process is still
 * alive after the read (a pid is reused only once its process is gone).
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#define PROC_PIDFS_MAGIC 0x50494446 /* linux/magic.h PID_FS_MAGIC, Linux 6.9 */

int proc_pidfd(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	return fd < 0 ? -errno : fd;
}

bool proc_alive(int pidfd)
{
	return pidfd < 0 || syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

/* On pidfs a process has one inode for its lifetime, whoever opens a pidfd of it. */
int proc_same(int pidfd_a, int pidfd_b)
{
	struct statfs fs;
	struct stat a, b;

	if (fstatfs(pidfd_a, &fs) < 0 || fs.f_type != PROC_PIDFS_MAGIC)
		return -EOPNOTSUPP;
	if (fstat(pidfd_a, &a) < 0 || fstat(pidfd_b, &b) < 0)
		return -errno;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int proc_stat(pid_t pid, pid_t *ppid, uint64_t *start)
{
	char path[64], buf[1024], *p;
	unsigned long long st = 0;
	int fd, parent = 0;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	/* comm (field 2) may hold spaces and parentheses: fields are counted from its last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1,
			 " %*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
			 "%*d %*d %llu",
			 &parent, &st) != 2)
		return -EIO;
	*ppid = (pid_t)parent;
	*start = st;
	return 0;
}

int proc_uids(pid_t pid, uid_t *ruid, uid_t *euid)
{
	char path[64], line[256];
	unsigned r, e;
	int rc = -EIO;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %u %u", &r, &e) == 2) {
			*ruid = r;
			*euid = e;
			rc = 0;
			break;
		}
	fclose(f);
	return rc;
}

void proc_comm(pid_t pid, char *out, size_t outsz)
{
	char path[64];
	FILE *f;

	out[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	if (!fgets(out, (int)outsz, f))
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	fclose(f);
}
