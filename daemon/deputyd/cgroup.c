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

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void cgroup_unescape(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

int cgroup_root(char *out, size_t outsz)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		/* id parent maj:min root mountpoint options [optional…] - fstype source super */
		char *sep = strstr(line, " - ");
		char *save = NULL, *mnt, *fstype;

		if (!sep)
			continue;
		fstype = strtok_r(sep + 3, " ", &save);
		if (!fstype || strcmp(fstype, "cgroup2") != 0)
			continue;
		*sep = '\0';
		save = NULL;
		if (!strtok_r(line, " ", &save) || !strtok_r(NULL, " ", &save) ||
		    !strtok_r(NULL, " ", &save) || !strtok_r(NULL, " ", &save))
			continue;
		mnt = strtok_r(NULL, " ", &save);
		if (!mnt)
			continue;
		cgroup_unescape(mnt);
		if (strlen(mnt) >= outsz) {
			ret = -ENAMETOOLONG;
			break;
		}
		strcpy(out, mnt);
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

uint64_t cgroup_id(const char *path)
{
	union {
		struct file_handle fh;
		char buf[sizeof(struct file_handle) + sizeof(uint64_t)];
	} h;
	struct stat st;
	uint64_t id;
	int mount_id;

	/* kernfs exports the cgroup id as its file handle; st_ino is the same on 64-bit. */
	h.fh.handle_bytes = sizeof(uint64_t);
	if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mount_id, 0) == 0 &&
	    h.fh.handle_bytes == sizeof(uint64_t)) {
		memcpy(&id, h.fh.f_handle, sizeof(id));
		return id;
	}
	if (stat(path, &st) != 0)
		return 0;
	return st.st_ino;
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
