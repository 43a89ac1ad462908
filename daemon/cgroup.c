// SPDX-License-Identifier: MIT
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cgroup_root(char out[PATH_MAX])
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int rc = -ENOENT;

	if (!f)
		return -errno;
	/* "36 35 0:30 / /sys/fs/cgroup rw,… - cgroup2 cgroup2 rw,…": the mount point is field
	 * 5, the file-system type the first field after " - ". */
	while (fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - ");
		char root[PATH_MAX], mnt[PATH_MAX], fstype[64];

		if (!sep || sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2") != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %4095s %4095s", root, mnt) != 2 || strcmp(root, "/"))
			continue;
		if (strlen(mnt) >= PATH_MAX)
			continue;
		strcpy(out, mnt);
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}

int cgroup_id(const char *path, uint64_t *id)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	*id = (uint64_t)st.st_ino;
	return 0;
}

int cgroup_create(const char *path)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int cgroup_write(const char *dir, const char *file, const char *val)
{
	char p[PATH_MAX];
	int fd, rc = 0;
	size_t n = strlen(val);

	if (snprintf(p, sizeof(p), "%s/%s", dir, file) >= (int)sizeof(p))
		return -ENAMETOOLONG;
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, n) != (ssize_t)n)
		rc = -errno;
	close(fd);
	return rc;
}

int cgroup_move(const char *path, pid_t pid)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%d", (int)pid);
	return cgroup_write(path, "cgroup.procs", buf);
}

int cgroup_populated(const char *path)
{
	char p[PATH_MAX], line[128];
	FILE *f;
	int rc = -ENODATA;

	if (snprintf(p, sizeof(p), "%s/cgroup.events", path) >= (int)sizeof(p))
		return -ENAMETOOLONG;
	f = fopen(p, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		int v;

		if (sscanf(line, "populated %d", &v) == 1) {
			rc = v ? 1 : 0;
			break;
		}
	}
	fclose(f);
	return rc;
}

int cgroup_kill(const char *path)
{
	char p[PATH_MAX], line[64];
	FILE *f;
	int rc = cgroup_write(path, "cgroup.kill", "1");

	if (rc != -ENOENT)
		return rc;
	/* Kernels before 5.14 have no cgroup.kill. */
	if (snprintf(p, sizeof(p), "%s/cgroup.procs", path) >= (int)sizeof(p))
		return -ENAMETOOLONG;
	f = fopen(p, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		kill((pid_t)atoi(line), SIGKILL);
	fclose(f);
	return 0;
}

int cgroup_remove(const char *path)
{
	return rmdir(path) < 0 && errno != ENOENT ? -errno : 0;
}

int cgroup_of_pid(pid_t pid, char *out, size_t outsz)
{
	char p[64], line[PATH_MAX + 8];
	FILE *f;
	int rc = -ENOENT;

	snprintf(p, sizeof(p), "/proc/%d/cgroup", (int)pid);
	f = fopen(p, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		size_t n;

		if (strncmp(line, "0::", 3) != 0)
			continue;
		n = strcspn(line + 3, "\n");
		if (n + 1 > outsz) {
			rc = -ENAMETOOLONG;
			break;
		}
		memcpy(out, line + 3, n);
		out[n] = '\0';
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}
